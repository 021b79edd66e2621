// The nftables planner: what it does for each kind of difference between kernel and desire, and
// the JSON listing parser it reads the kernel with.
import { test } from "node:test";
import assert from "node:assert/strict";
import { computeRuleset } from "../../src/policy.js";
import { desiredTables } from "../../src/firewall/nftables/backend.js";
import { planTable, planTables } from "../../src/firewall/nftables/plan.js";
import { parseTableJson, type TableModel } from "../../src/firewall/nftables/table.js";
import type { Member, NetworkSnapshot } from "../../src/model.js";

/** Members as "address" (port unknown) or "address@port"; a leading "*" marks a proxy. */
const snapshot = (members: string[]): NetworkSnapshot => ({
  id: "n",
  name: "web",
  subnets: ["172.20.0.0/16"],
  bridge: "br-0123456789ab",
  members: members.map((spec, i): Member => {
    const [ipv4, port] = spec.replace(/^\*/, "").split("@");
    const n = ipv4!.split(".").at(-1)!.padStart(2, "0");
    return {
      id: `c${i}`,
      name: `m${i}`,
      whitelisted: spec.startsWith("*"),
      ipv4,
      mac: `02:42:ac:14:00:${n}`,
      port,
    };
  }),
});
const tables = (members: string[], allowHostTraffic = false) =>
  desiredTables(computeRuleset(snapshot(members), { instanceId: "web", allowHostTraffic }));
const filter = (members: string[], allowHostTraffic = false) =>
  tables(members, allowHostTraffic).inet;

/** What `nft -j list table` prints for a table as we render it. */
function listingOf(table: TableModel): string {
  const element = (e: string) => {
    const parts = e.split(" . ");
    const value = (p: string) => {
      const prefix = /^(.*)\/(\d+)$/.exec(p);
      return prefix ? { prefix: { addr: prefix[1], len: Number(prefix[2]) } } : p;
    };
    return parts.length > 1 ? { concat: parts.map(value) } : value(e);
  };
  const base = { family: table.family, table: table.name };
  return JSON.stringify({
    nftables: [
      { metainfo: { version: "1.0.6", json_schema_version: 1 } },
      { table: { family: table.family, name: table.name, handle: 1 } },
      ...[...table.sets].map(([name, s]) => ({
        set: {
          ...base,
          name,
          type: s.type.includes(" . ") ? s.type.split(" . ") : s.type,
          handle: 2,
          ...(s.flags.length ? { flags: s.flags } : {}),
          ...(s.elements.length ? { elem: s.elements.map(element) } : {}),
        },
      })),
      ...[...table.chains].map(([name, c]) => ({
        chain: { ...base, name, handle: 3, ...(c.hook && { ...c.hook, prio: c.hook.priority }) },
      })),
      ...[...table.chains].flatMap(([chain, c]) =>
        c.rules.map((r) => ({ rule: { ...base, chain, handle: 9, comment: r.id, expr: [] } })),
      ),
    ],
  });
}
const kernel = (table: TableModel) => parseTableJson(listingOf(table), table.family, table.name);

test("nothing to do when the kernel matches, whatever the element order", () => {
  const listed = kernel(filter(["*172.20.0.3@v3", "*172.20.0.2@v2"]));
  const plan = planTable(listed, filter(["*172.20.0.2@v2", "*172.20.0.3@v3"]));
  assert.equal(plan.script, null);
  assert.deepEqual(plan.differences, []);
});

test("a whitelist change is a set-element update in one transaction, and revokes the old address", () => {
  const plan = planTable(kernel(filter(["*172.20.0.2"])), filter(["*172.20.0.9"]));
  assert.equal(
    plan.script,
    "delete element inet trafficjam_web allowed4 { 172.20.0.2 }\n" +
      "add element inet trafficjam_web allowed4 { 172.20.0.9 }\n",
  );
  assert.deepEqual(plan.revoked, [[4, "172.20.0.2"]]);
  assert.deepEqual(plan.differences, [
    "inet trafficjam_web: set allowed4: 172.20.0.2 unexpected",
    "inet trafficjam_web: set allowed4: 172.20.0.9 missing",
  ]);
});

test("replaceAlways turns the same change into a whole-table replace", () => {
  const plan = planTable(kernel(filter(["*172.20.0.2"])), filter(["*172.20.0.9"]), true);
  assert.match(
    plan.script!,
    /^add table inet trafficjam_web\ndelete table inet trafficjam_web\ntable inet/,
  );
});

test("a rule removed, or one not ours added, replaces the whole table atomically", () => {
  const listed = kernel(filter(["*172.20.0.2"]));
  listed.chains.get("forward")!.rules.splice(4, 1); // the drop
  listed.chains.get("input")!.rules.unshift({ text: "", id: "foreign:7" });
  const plan = planTable(listed, filter(["*172.20.0.2"]));
  assert.match(plan.script!, /^add table inet trafficjam_web\ndelete table inet trafficjam_web\n/);
  assert.deepEqual(plan.differences, [
    "inet trafficjam_web: chain forward: rule missing: iifname @bridges oifname @bridges drop",
    "inet trafficjam_web: chain input: 1 rule(s) not ours",
  ]);
  assert.deepEqual(plan.revoked, []);
});

test("rules are compared by their comment, not by how nft spells them", () => {
  const listed = kernel(filter([]));
  // A newer nft may print a rule differently; our comment is what the kernel keeps verbatim.
  for (const chain of listed.chains.values()) for (const r of chain.rules) r.text = "respelled";
  assert.equal(planTable(listed, filter([])).script, null);
});

test("a flipped policy, a moved priority or a missing chain is found", () => {
  const listed = kernel(filter([]));
  listed.chains.get("forward")!.hook!.policy = "drop";
  listed.chains.delete("input");
  assert.deepEqual(planTable(listed, filter([])).differences, [
    'inet trafficjam_web: chain forward hooked as "filter forward priority 0 policy drop"',
    "inet trafficjam_web: chain input missing",
  ]);
});

test("a set of another type is structural: the table is replaced, not patched", () => {
  const listed = kernel(filter([]));
  listed.sets.get("allowed4")!.type = "ipv6_addr";
  const plan = planTable(listed, filter([]));
  assert.match(plan.script!, /^add table inet trafficjam_web\ndelete table/);
});

test("ALLOW_HOST_TRAFFIC drops the input chain by replacing the table", () => {
  const plan = planTable(kernel(filter(["*172.20.0.2"])), filter(["*172.20.0.2"], true));
  assert.deepEqual(plan.differences, [
    "inet trafficjam_web: chain input unexpected",
    "inet trafficjam_web: chain output unexpected",
  ]);
  assert.doesNotMatch(plan.script!, /chain (input|output)/);
});

test("a missing table is created; clearing deletes it and revokes every allowance", () => {
  assert.deepEqual(planTable(null, filter(["*172.20.0.2"])).differences, [
    "table inet trafficjam_web missing",
  ]);
  const cleared = planTable(kernel(filter(["*172.20.0.2"])), null);
  assert.equal(cleared.script, "add table inet trafficjam_web\ndelete table inet trafficjam_web\n");
  assert.deepEqual(cleared.revoked, [[4, "172.20.0.2"]]);
  assert.equal(planTable(null, null).script, null);
});

test("the JSON parser: concatenations, prefixes, raw hex values and foreign rules", () => {
  const listed = parseTableJson(
    JSON.stringify({
      nftables: [
        { metainfo: { version: "1.0.9" } },
        { table: { family: "bridge", name: "t", handle: 1 } },
        {
          set: {
            family: "bridge",
            table: "t",
            name: "nd",
            type: ["integer", "ifname"],
            elem: [{ concat: ["0x00000000000000000000000000000001", "veth1"] }],
          },
        },
        {
          set: {
            family: "bridge",
            table: "t",
            name: "nets",
            type: "ipv4_addr",
            flags: ["interval"],
            elem: [
              { prefix: { addr: "10.0.0.0", len: 8 } },
              { elem: { val: "10.1.1.1", timeout: 5 } },
            ],
          },
        },
        {
          chain: {
            family: "bridge",
            table: "t",
            name: "c",
            type: "filter",
            hook: "input",
            prio: -200,
            policy: "accept",
          },
        },
        { rule: { family: "bridge", table: "t", chain: "c", comment: "tj:abc", expr: [] } },
        { rule: { family: "bridge", table: "t", chain: "c", expr: [] } },
      ],
    }),
    "bridge",
    "t",
  );
  assert.deepEqual(listed.sets.get("nd")!.elements, ["0x1 . veth1"]); // ::1, leading zeros dropped
  assert.equal(listed.sets.get("nd")!.type, "integer . ifname");
  assert.deepEqual(listed.sets.get("nets")!.elements, ["10.0.0.0/8", "10.1.1.1"]);
  assert.deepEqual(
    listed.chains.get("c")!.rules.map((r) => r.id),
    ["tj:abc", "foreign:6"],
  );
  assert.throws(
    () => parseTableJson('{"nftables": [{"set": {"name": 3}}]}', "bridge", "t"),
    /unexpected nft -j output \(set\)/,
  );
});

test("every member's port is bound to its MAC and addresses; a proxy's new port is an element update, not a revocation", () => {
  const before = tables(["*172.20.0.2@veth1111111", "172.20.0.3@veth3333333"]).bridge;
  assert.deepEqual(before.sets.get("guarded4")!.elements, ["172.20.0.2", "172.20.0.3"]);
  assert.deepEqual(before.sets.get("bound4")!.elements, [
    "172.20.0.2 . veth1111111",
    "172.20.0.3 . veth3333333",
  ]);
  assert.deepEqual(before.sets.get("boundmac")!.elements, [
    "02:42:ac:14:00:02 . veth1111111",
    "02:42:ac:14:00:03 . veth3333333",
  ]);
  assert.deepEqual(before.sets.get("bound6")!.elements, [
    "fe80::42:acff:fe14:2 . veth1111111",
    "fe80::42:acff:fe14:3 . veth3333333",
  ]);
  const after = tables(["*172.20.0.2@veth2222222", "172.20.0.3@veth3333333"]).bridge;
  const plan = planTables([{ current: kernel(before), desired: after }]);
  assert.deepEqual(plan.revoked, []);
  assert.match(plan.script!, /^delete element bridge trafficjam_web ports \{ "veth1111111" \}\n/);
  assert.match(
    plan.script!,
    /add element bridge trafficjam_web bound4 \{ 172\.20\.0\.2 \. "veth2222222" \}/,
  );
  assert.doesNotMatch(plan.script!, /table/);
});

test("a member whose port is unknown is bound to nothing and guards nothing; a proxy of it is allowed by address", () => {
  const t = tables(["*172.20.0.2"]);
  assert.deepEqual(t.inet.sets.get("allowed4")!.elements, ["172.20.0.2"]);
  assert.deepEqual(t.bridge.sets.get("ports")!.elements, []);
  assert.deepEqual(t.bridge.sets.get("guarded4")!.elements, []);
});

test("filter and guard change in one transaction; clearing deletes both tables", () => {
  const before = tables(["*172.20.0.2@veth1111111"]);
  const current = [kernel(before.inet), kernel(before.bridge)] as const;
  const next = tables([]);
  const plan = planTables([
    { current: current[0], desired: next.inet },
    { current: current[1], desired: next.bridge },
  ]);
  assert.match(plan.script!, /^delete element inet trafficjam_web allowed4 \{ 172\.20\.0\.2 \}\n/);
  assert.match(plan.script!, /delete element bridge trafficjam_web guarded4 \{ 172\.20\.0\.2 \}\n/);
  assert.deepEqual(plan.revoked, [[4, "172.20.0.2"]]);
  const cleared = planTables([
    { current: current[0], desired: null },
    { current: current[1], desired: null },
  ]);
  assert.equal(
    cleared.script,
    "add table inet trafficjam_web\ndelete table inet trafficjam_web\n" +
      "add table bridge trafficjam_web\ndelete table bridge trafficjam_web\n",
  );
});

test("what nft 1.0.6 printed for the port-unknown tables reads back with no difference, and so would a respelling", async () => {
  const { readFile } = await import("node:fs/promises");
  const { SCENARIOS, rulesetOf } = await import("./fixtures.js");
  const scenario = SCENARIOS.find((s) => s.name === "port-unknown")!;
  const want = desiredTables(rulesetOf(scenario));
  // Captured: the golden file loaded into a throwaway namespace, then `nft -j list table ...`.
  const fixture = (family: string) =>
    readFile(new URL(`./fixtures/nft-1.0.6-port-unknown-${family}.json`, import.meta.url), "utf8");
  const [inet, bridge] = [await fixture("inet"), await fixture("bridge")];
  const plan = (inetJson: string, bridgeJson: string) =>
    planTables([
      { current: parseTableJson(inetJson, "inet", "trafficjam_web"), desired: want.inet },
      { current: parseTableJson(bridgeJson, "bridge", "trafficjam_web"), desired: want.bridge },
    ]);
  assert.deepEqual(plan(inet, bridge).differences, []);
  // nft 1.0.7+ knows `icmpv6 taddr` and may print the raw payload we wrote that way; other
  // versions order anonymous sets differently. The expressions change, our comments do not.
  const respelled = bridge
    .replaceAll(
      '{"payload": {"base": "th", "offset": 64, "len": 128}}',
      '{"payload": {"protocol": "icmpv6", "field": "taddr"}}',
    )
    .replaceAll('"ip", "arp", "ip6"', '"arp", "ip", "ip6"');
  assert.notEqual(respelled, bridge, "the fixture holds what is respelled");
  assert.deepEqual(plan(inet, respelled).differences, []);
});
