// Golden files: the exact iptables-restore input each scenario produces on a host where Docker
// has made DOCKER-USER (IPv4) and nothing for IPv6. UPDATE_GOLDEN=1 rewrites them after review.
// (The iptables backend's bridge guard table is the nftables one under another name: see
// nft-golden.test.ts.)
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { planFamily } from "../../src/firewall/iptables/plan.js";
import { parseFilterTable } from "../../src/firewall/iptables/save-format.js";
import { SCENARIOS, rulesetOf } from "./fixtures.js";

const DOCKER_HOST_V4 = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A DOCKER-USER -j RETURN
COMMIT
`;
const DOCKER_HOST_V6 = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
COMMIT
`;

function render(name: string): string {
  const scenario = SCENARIOS.find((s) => s.name === name)!;
  const ruleset = rulesetOf(scenario);
  const sections: string[] = [];
  for (const [family, dump, anchor] of [
    [4, DOCKER_HOST_V4, "DOCKER-USER"],
    [6, DOCKER_HOST_V6, "FORWARD"],
  ] as const) {
    const plan = planFamily(parseFilterTable(dump), {
      family,
      instanceId: "web",
      rules: ruleset,
      forwardAnchor: anchor,
      staleForwardAnchors: [],
    });
    const created = plan.createChains.map(
      (c) => `${family === 4 ? "iptables" : "ip6tables"} -N ${c}`,
    );
    sections.push(
      `# ${family === 4 ? "iptables" : "ip6tables"}-restore --noflush (IPv${family})`,
      ...created.map((c) => `# before: ${c}`),
      plan.script ?? "# nothing to apply\n",
    );
  }
  return sections.join("\n");
}

for (const scenario of SCENARIOS) {
  test(`golden: ${scenario.name}`, async () => {
    const file = new URL(`./golden/${scenario.name}.rules`, import.meta.url);
    const actual = render(scenario.name);
    if (process.env.UPDATE_GOLDEN === "1") await writeFile(file, actual);
    assert.equal(actual, await readFile(file, "utf8"));
  });
}
