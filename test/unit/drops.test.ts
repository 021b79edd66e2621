// The drops of both backends: each one logged (rate-limited, to its kind's NFLOG group) and
// counted when the ruleset logs, and in audit mode every rule that would drop accepts instead.
import { test } from "node:test";
import assert from "node:assert/strict";
import { DROP_KINDS, kindOfGroup, limitTableName, logGroupsOf } from "../../src/drops.js";
import {
  allowedSourcesIn,
  forwardRules,
  inputRules,
  instanceChains,
  outputRules,
} from "../../src/firewall/iptables/layout.js";
import { desiredTables } from "../../src/firewall/nftables/backend.js";
import { renderTable } from "../../src/firewall/nftables/table.js";
import { OVERLAY_WORKER, SCENARIOS, rulesetOf } from "./fixtures.js";

const scenario = (name: string) => SCENARIOS.find((s) => s.name === name)!;

test("each instance has three NFLOG groups of its own, in the upper half, one per kind", () => {
  const web = logGroupsOf("web");
  assert.deepEqual(web, logGroupsOf("web"), "the same groups at every start");
  const groups = DROP_KINDS.map((k) => web[k]);
  assert.equal(new Set(groups).size, 3);
  for (const g of groups) assert.ok(g >= 32768 && g <= 65535, `${g}`);
  for (const kind of DROP_KINDS) assert.equal(kindOfGroup(web, web[kind]), kind);
  assert.equal(kindOfGroup(web, 1), null);
  assert.notDeepEqual(logGroupsOf("web2"), web);
  // hashlimit's table names fit its 15 characters, for the longest INSTANCE_ID
  assert.ok(limitTableName("x".repeat(24), "forged").length <= 15);
});

/** Every iptables line an instance renders for one family. */
function iptablesLines(name: string, family: 4 | 6 = 4): string[] {
  const ruleset = rulesetOf(scenario(name));
  const chains = instanceChains("web");
  return [
    ...forwardRules(chains, family, ruleset),
    ...inputRules(chains, family, ruleset),
    ...outputRules(chains, family, ruleset),
  ];
}

test("iptables: every DROP follows its rate-limited NFLOG rule, to the group of its kind", () => {
  const groups = logGroupsOf("web");
  const lines = iptablesLines("one-proxy");
  const drops = lines
    .map((line, i) => [line, i] as const)
    .filter(([line]) => line.endsWith("-j DROP") && !line.startsWith("-A TJO_"));
  assert.equal(drops.length, 4, "a forgery guard and the final drop, in TJF_ and TJI_");
  for (const [line, i] of drops) {
    const log = lines[i - 1]!;
    const kind = line.includes("! --physdev-in")
      ? "forged"
      : line.startsWith("-A TJF_")
        ? "member-to-member"
        : "member-to-host";
    assert.match(
      log,
      new RegExp(`-j NFLOG --nflog-group ${groups[kind]} --nflog-size 128 --nflog-threshold 1$`),
    );
    assert.match(log, /-m hashlimit --hashlimit-upto 5\/sec .*--hashlimit-mode srcip/);
    assert.match(log, /-m limit --limit 100\/sec --limit-burst 100/);
    // the same matches as the drop it precedes
    const matches = (l: string) => l.slice(0, l.indexOf(" -m comment")).split(" -m hashlimit")[0];
    assert.equal(matches(log), matches(line));
  }
});

test("audit mode: the same rules, but none drops: RETURN (iptables), accept (nftables)", () => {
  const enforce = iptablesLines("one-proxy");
  const audit = iptablesLines("audit");
  assert.equal(audit.length, enforce.length);
  assert.deepEqual(
    audit.filter((l) => / -j DROP$/.test(l)),
    [],
  );
  const strip = (l: string) => l.replace(/ -m comment --comment "[^"]*"/, "");
  assert.deepEqual(
    audit.map(strip),
    enforce.map((l) => strip(l).replace(/ -j DROP$/, " -j RETURN")),
  );
  const tables = desiredTables(rulesetOf(scenario("audit")));
  const text = renderTable(tables.inet) + renderTable(tables.bridge);
  assert.doesNotMatch(text, /\bdrop\b/);
  const enforced = desiredTables(rulesetOf(scenario("one-proxy")));
  assert.equal(
    text.replace(/ comment "tj:[0-9a-f]+"/g, ""),
    (renderTable(enforced.inet) + renderTable(enforced.bridge))
      .replace(/ comment "tj:[0-9a-f]+"/g, "")
      .replace(/\bdrop\b/g, "accept"),
  );
});

test("audit mode's forgery guards (RETURN from one address) are not read as allowances", () => {
  const lines = iptablesLines("audit").filter((l) => l.startsWith("-A TJF_"));
  assert.ok(lines.some((l) => l.includes("! --physdev-in") && l.endsWith("-j RETURN")));
  assert.deepEqual(allowedSourcesIn(lines, instanceChains("web")), ["172.20.0.2"]);
});

test("nftables: the guard's drops go to one chain per kind, which logs per port and counts", () => {
  const { inet, bridge } = desiredTables(rulesetOf(scenario("one-proxy")));
  const groups = logGroupsOf("web");
  assert.deepEqual(
    [...bridge.chains.keys()],
    ["prerouting", "forward", "input", "forged", "member", "host"],
  );
  for (const [chain, kind] of [
    ["forged", "forged"],
    ["member", "member-to-member"],
    ["host", "member-to-host"],
  ] as const) {
    const rules = bridge.chains.get(chain)!.rules.map((r) => r.text);
    assert.equal(bridge.chains.get(chain)!.hook, undefined, "a regular chain");
    assert.match(
      rules[0]!,
      new RegExp(
        `^add @logport \\{ iifname limit rate 5/second .* log group ${groups[kind]} snaplen 128 queue-threshold 1$`,
      ),
    );
    assert.equal(rules[1], "counter drop");
  }
  for (const rule of bridge.chains.get("prerouting")!.rules)
    assert.match(rule.text, / goto forged$/);
  const forward = inet.chains.get("forward")!.rules.map((r) => r.text);
  assert.equal(forward.at(-1), "iifname @bridges oifname @bridges drop");
  assert.match(forward.at(-3)!, /meta nfproto ipv4 counter add @logsrc4 \{ ip saddr limit rate/);
  assert.match(forward.at(-2)!, /meta nfproto ipv6 counter add @logsrc6 \{ ip6 saddr limit rate/);
  assert.deepEqual(inet.sets.get("logsrc4")!.dynamic, { size: 4096, timeoutS: 60 });
});

test("without the log (a Swarm worker), the rules are as before: no log rule, no counter", () => {
  const ruleset = rulesetOf(OVERLAY_WORKER);
  assert.equal(ruleset.log, null);
  const { inet, bridge } = desiredTables(ruleset);
  const text = renderTable(inet) + renderTable(bridge);
  assert.doesNotMatch(text, /log group|counter|goto|logsrc|logport/);
});
