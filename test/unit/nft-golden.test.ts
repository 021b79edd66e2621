// Golden files of the nftables renderer: the exact `nft -f` input each scenario produces for an
// empty kernel (the inet filter table, then the bridge guard table). UPDATE_GOLDEN=1 rewrites
// them after review. Then each golden file is checked by nft itself (`nft -c`) and loaded into a
// throwaway network namespace: the kernel's listing must parse back to the same tables, so the
// read-back compares exactly what we wrote.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { computeRuleset } from "../../src/policy.js";
import {
  TABLE_FAMILIES,
  desiredTables,
  renderTable,
  type Tables,
} from "../../src/firewall/nftables/layout.js";
import { parseTable, planTables } from "../../src/firewall/nftables/plan.js";
import { SCENARIOS } from "./fixtures.js";

function render(name: string): string {
  const scenario = SCENARIOS.find((s) => s.name === name)!;
  const ruleset = computeRuleset(scenario.snapshot, {
    instanceId: "web",
    allowHostTraffic: scenario.allowHostTraffic,
  });
  return planTables({ inet: null, bridge: null }, desiredTables(ruleset), renderTable).script!;
}

const golden = (name: string) => new URL(`./golden/${name}.nft`, import.meta.url);

for (const scenario of SCENARIOS) {
  test(`nft golden: ${scenario.name}`, async () => {
    const actual = render(scenario.name);
    if (process.env.UPDATE_GOLDEN === "1") await writeFile(golden(scenario.name), actual);
    assert.equal(actual, await readFile(golden(scenario.name), "utf8"));
  });
}

const canRun = process.getuid?.() === 0 && spawnSync("nft", ["--version"]).status === 0;

describe(
  "nft golden files in a throwaway network namespace",
  { skip: !canRun && "needs root and nft" },
  () => {
    const netns = `tj-unit-${process.pid}`;
    const nft = (args: string[], input?: string) =>
      execFileSync("ip", ["netns", "exec", netns, "nft", ...args], { input, encoding: "utf8" });
    before(() => execFileSync("ip", ["netns", "add", netns]));
    after(() => execFileSync("ip", ["netns", "delete", netns]));

    for (const scenario of SCENARIOS) {
      const name = scenario.name;
      test(`${name}: nft -c accepts it; the kernel lists back the same tables`, async () => {
        const script = await readFile(golden(name), "utf8");
        nft(["-c", "-f", "-"], script);
        nft(["-f", "-"], script);
        try {
          const listed = (family: string) =>
            parseTable(nft(["list", "table", family, "trafficjam_web"]));
          const kernel: Tables = { inet: listed("inet"), bridge: listed("bridge") };
          const scenario = SCENARIOS.find((s) => s.name === name)!;
          const desired = desiredTables(
            computeRuleset(scenario.snapshot, {
              instanceId: "web",
              allowHostTraffic: scenario.allowHostTraffic,
            }),
          );
          assert.deepEqual(planTables(kernel, desired, renderTable).differences, []);
        } finally {
          for (const family of TABLE_FAMILIES) nft(["delete", "table", family, "trafficjam_web"]);
        }
      });
    }
  },
);
