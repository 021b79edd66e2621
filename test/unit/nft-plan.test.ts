// The nftables planner: what it does for each kind of difference between kernel and desire.
import { test } from "node:test";
import assert from "node:assert/strict";
import { computeRuleset } from "../../src/policy.js";
import { desiredTables, renderTable, type Tables } from "../../src/firewall/nftables/layout.js";
import { parseTable, planTable, planTables } from "../../src/firewall/nftables/plan.js";
import type { NetworkSnapshot } from "../../src/model.js";

/** Proxies as "address" (port unknown) or "address@port". */
const snapshot = (proxies: string[], subnets = ["172.20.0.0/16"]): NetworkSnapshot => ({
  id: "n",
  name: "web",
  subnets,
  whitelisted: proxies.map((p, i) => {
    const [ipv4, port] = p.split("@");
    return { id: `c${i}`, name: `p${i}`, ipv4, port };
  }),
});
const tables = (proxies: string[], allowHostTraffic = false, subnets?: string[]): Tables =>
  desiredTables(
    computeRuleset(snapshot(proxies, subnets), { instanceId: "web", allowHostTraffic }),
  );
/** The filter table alone. */
const table = (proxies: string[], allowHostTraffic = false, subnets?: string[]) =>
  tables(proxies, allowHostTraffic, subnets).inet!;
/** What the kernel would list: our rendering, parsed back. */
const listedTables = (proxies: string[]): Tables => {
  const t = tables(proxies);
  return { inet: parseTable(renderTable(t.inet!)), bridge: parseTable(renderTable(t.bridge!)) };
};
/** What the kernel would list for a table: our rendering, parsed back. */
const kernel = (proxies: string[], allowHostTraffic = false) =>
  parseTable(renderTable(table(proxies, allowHostTraffic)));

test("nothing to do when the kernel matches, whatever the element order", () => {
  const listed = kernel(["172.20.0.3", "172.20.0.2"]);
  const plan = planTable(listed, table(["172.20.0.2", "172.20.0.3"]), renderTable);
  assert.equal(plan.script, null);
  assert.deepEqual(plan.differences, []);
});

test("a whitelist change is a set-element update in one transaction, and revokes the old address", () => {
  const plan = planTable(kernel(["172.20.0.2"]), table(["172.20.0.9"]), renderTable);
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
  const plan = planTable(kernel(["172.20.0.2"]), table(["172.20.0.9"]), renderTable, true);
  assert.match(
    plan.script!,
    /^add table inet trafficjam_web\ndelete table inet trafficjam_web\ntable inet/,
  );
});

test("a rule removed or added by someone else replaces the whole table atomically", () => {
  const listed = kernel(["172.20.0.2"])!;
  listed.chains.get("forward")!.rules.splice(5, 1); // the IPv4 drop
  listed.chains.get("input")!.rules.unshift("accept");
  const plan = planTable(listed, table(["172.20.0.2"]), renderTable);
  assert.match(plan.script!, /^add table inet trafficjam_web\ndelete table inet trafficjam_web\n/);
  assert.deepEqual(plan.differences, [
    "inet trafficjam_web: chain forward: rule missing: ip saddr @subnets4 ip daddr @subnets4 drop",
    "inet trafficjam_web: chain input: rule unexpected: accept",
  ]);
  assert.deepEqual(plan.revoked, []);
});

test("a flipped policy or a missing chain is found", () => {
  const listed = kernel([])!;
  listed.chains.get("forward")!.hook = "type filter hook forward priority filter; policy drop;";
  listed.chains.delete("input");
  const plan = planTable(listed, table([]), renderTable);
  assert.deepEqual(plan.differences, [
    'inet trafficjam_web: chain forward hooked as "type filter hook forward priority filter; policy drop;"',
    "inet trafficjam_web: chain input missing",
  ]);
});

test("ALLOW_HOST_TRAFFIC drops the input chain by replacing the table", () => {
  const plan = planTable(kernel(["172.20.0.2"]), table(["172.20.0.2"], true), renderTable);
  assert.deepEqual(plan.differences, ["inet trafficjam_web: chain input unexpected"]);
  assert.doesNotMatch(plan.script!, /chain input/);
});

test("a missing table is created; clearing deletes it and revokes every allowance", () => {
  assert.deepEqual(planTable(null, table(["172.20.0.2"]), renderTable).differences, [
    "table inet trafficjam_web missing",
  ]);
  const cleared = planTable(kernel(["172.20.0.2"]), null, renderTable);
  assert.equal(cleared.script, "add table inet trafficjam_web\ndelete table inet trafficjam_web\n");
  assert.deepEqual(cleared.revoked, [[4, "172.20.0.2"]]);
  assert.equal(planTable(null, null, renderTable).script, null);
});

test("the listing parser joins wrapped element lists and ignores handles", () => {
  const listed = parseTable(`table inet trafficjam_web { # handle 7
	set allowed4 { # handle 3
		type ipv4_addr
		elements = { 10.1.1.1, 10.1.1.2,
			     10.1.1.3 }
	}

	chain forward { # handle 1
		type filter hook forward priority filter; policy accept;
		ip saddr @allowed4 accept # handle 9
	}
}
`)!;
  assert.equal(listed.name, "trafficjam_web");
  assert.deepEqual(listed.sets.get("allowed4")!.elements, ["10.1.1.1", "10.1.1.2", "10.1.1.3"]);
  assert.deepEqual(listed.chains.get("forward")!.rules, ["ip saddr @allowed4 accept"]);
});

test("the guard table binds each address to its port; a new port for the same address is an element update, not a revocation", () => {
  const before = listedTables(["172.20.0.2@veth1111111"]);
  assert.deepEqual(before.bridge!.sets.get("guarded4")!.elements, ["172.20.0.2"]);
  assert.deepEqual(before.bridge!.sets.get("bound4")!.elements, ['172.20.0.2 . "veth1111111"']);
  const plan = planTables(before, tables(["172.20.0.2@veth2222222"]), renderTable);
  assert.equal(
    plan.script,
    'delete element bridge trafficjam_web bound4 { 172.20.0.2 . "veth1111111" }\n' +
      'add element bridge trafficjam_web bound4 { 172.20.0.2 . "veth2222222" }\n',
  );
  assert.deepEqual(plan.revoked, []);
});

test("an address whose port is unknown is allowed but not guarded", () => {
  const t = tables(["172.20.0.2"]);
  assert.deepEqual(t.inet!.sets.get("allowed4")!.elements, ["172.20.0.2"]);
  assert.deepEqual(t.bridge!.sets.get("guarded4")!.elements, []);
  assert.deepEqual(t.bridge!.sets.get("bound4")!.elements, []);
});

test("filter and guard change in one transaction; clearing deletes both tables", () => {
  const plan = planTables(listedTables(["172.20.0.2@veth1111111"]), tables([]), renderTable);
  assert.equal(
    plan.script,
    "delete element inet trafficjam_web allowed4 { 172.20.0.2 }\n" +
      "delete element bridge trafficjam_web guarded4 { 172.20.0.2 }\n" +
      'delete element bridge trafficjam_web bound4 { 172.20.0.2 . "veth1111111" }\n',
  );
  assert.deepEqual(plan.revoked, [[4, "172.20.0.2"]]);
  const cleared = planTables(listedTables(["172.20.0.2@veth1111111"]), null, renderTable);
  assert.equal(
    cleared.script,
    "add table inet trafficjam_web\ndelete table inet trafficjam_web\n" +
      "add table bridge trafficjam_web\ndelete table bridge trafficjam_web\n",
  );
  const created = planTables({ inet: null, bridge: null }, tables([]), renderTable);
  assert.deepEqual(created.differences, [
    "table inet trafficjam_web missing",
    "table bridge trafficjam_web missing",
  ]);
});
