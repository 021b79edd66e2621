// What this machine's iptables-save really prints for the rules we write, in both flavours:
// test/unit/fixtures/dual-stack.*-save, captured by test/unit/fixtures/capture.sh (the
// dual-stack golden transaction applied in a throwaway network namespace with
// iptables-{nft,legacy}-restore --noflush, then read back with the matching -save tool,
// iptables v1.8.9). Read back, it must need nothing: the verification of a pass that applied it.
// A change to the rendering changes the golden file: capture again (as root) after it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { planFamily } from "../../src/firewall/iptables/plan.js";
import { parseFilterTable } from "../../src/firewall/iptables/save-format.js";
import { SCENARIOS, rulesetOf } from "./fixtures.js";

const scenario = SCENARIOS.find((s) => s.name === "dual-stack")!;
const ruleset = rulesetOf(scenario);

for (const flavour of ["nft", "legacy"] as const) {
  for (const [family, tool, anchor] of [
    [4, "iptables", "DOCKER-USER"],
    [6, "ip6tables", "FORWARD"],
  ] as const) {
    test(`${tool}-${flavour}-save's listing of our rules is what we wrote`, async () => {
      const file = new URL(`./fixtures/dual-stack.${tool}-${flavour}-save`, import.meta.url);
      const table = parseFilterTable(await readFile(file, "utf8"));
      assert.ok((table.chains.get("TJF_web") ?? []).length > 0, "the capture holds TJF_web");
      const plan = planFamily(table, {
        family,
        instanceId: "web",
        rules: ruleset,
        forwardAnchor: anchor,
        staleForwardAnchors: [],
      });
      assert.deepEqual(plan.differences, []);
      assert.equal(plan.script, null);
      assert.deepEqual(plan.createChains, []);
      assert.deepEqual(plan.revokedSources, []);
    });
  }
}
