// Golden files of the nftables renderer: the exact `nft -f` input each scenario produces for an
// empty kernel (the inet filter table, then the bridge guard table). UPDATE_GOLDEN=1 rewrites
// them after review. Then each golden file is checked by nft itself (`nft -c`) and loaded into a
// throwaway network namespace: the kernel's JSON listing must read back as the same tables, so
// the read-back compares exactly what we wrote.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { desiredTables } from "../../src/firewall/nftables/backend.js";
import { planTables } from "../../src/firewall/nftables/plan.js";
import { parseTableJson } from "../../src/firewall/nftables/table.js";
import { SCENARIOS, rulesetOf } from "./fixtures.js";

function desired(name: string) {
  const scenario = SCENARIOS.find((s) => s.name === name)!;
  return desiredTables(rulesetOf(scenario));
}

function render(name: string): string {
  const { inet, bridge } = desired(name);
  return planTables([
    { current: null, desired: inet },
    { current: null, desired: bridge },
  ]).script!;
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
      test(`${name}: nft -c accepts it; the kernel's JSON listing reads back the same tables`, async () => {
        const script = await readFile(golden(name), "utf8");
        nft(["-c", "-f", "-"], script);
        nft(["-f", "-"], script);
        try {
          const listed = (family: "inet" | "bridge") =>
            parseTableJson(
              nft(["-j", "list", "table", family, "trafficjam_web"]),
              family,
              "trafficjam_web",
            );
          const want = desired(name);
          const plan = planTables([
            { current: listed("inet"), desired: want.inet },
            { current: listed("bridge"), desired: want.bridge },
          ]);
          assert.deepEqual(plan.differences, []);
          assert.equal(plan.script, null);
        } finally {
          for (const family of ["inet", "bridge"])
            nft(["delete", "table", family, "trafficjam_web"]);
        }
      });
    }
  },
);
