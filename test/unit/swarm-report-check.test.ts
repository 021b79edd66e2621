// What the Swarm daemon takes of a worker's report: a node speaks for its own endpoints only, and
// the managers' tasks outweigh what a node says. And the bounded rate of lines peers provoke.
import { test } from "node:test";
import assert from "node:assert/strict";
import { checkReport, type ReportContext } from "../../src/swarm/report-check.js";
import { LogRate } from "../../src/swarm/rate-limit.js";
import type { Report } from "../../src/swarm/protocol.js";

const node = (n: string) => `node${n}`.padEnd(25, "0");
const CTX: ReportContext = {
  view: [
    { name: "proxy.1.x", ipv4: "10.20.0.3", hostIp: "192.168.0.1" },
    { name: "backend.2.y", ipv4: "10.20.0.5", hostIp: "192.168.0.2" },
  ],
  tasks: [
    { node: node("a"), addresses: ["10.20.0.3"], labels: { role: "proxy" } },
    { node: node("a"), addresses: ["10.20.0.4"], labels: {} },
    { node: node("b"), addresses: ["10.20.0.5"], labels: {} },
  ],
  nodes: new Map([
    [node("a"), "192.168.0.1"],
    [node("b"), "192.168.0.2"],
  ]),
  whitelist: { key: "label", value: "role=proxy" },
};
const report = (
  whitelisted: string[],
  loadBalancer: string | null = null,
  hostIp = "192.168.0.1",
): Report => ({
  type: "report",
  node: node("a"),
  hostIp,
  networkId: "n".repeat(25),
  whitelisted: whitelisted.map((ipv4) => ({ name: `c@${ipv4}`, ipv4 })),
  loadBalancer,
  known: null,
});

test("a node's own whitelisted task is taken", () => {
  const checked = checkReport(report(["10.20.0.3"], "10.20.0.2"), CTX);
  assert.deepEqual(checked.rejected, []);
  assert.deepEqual(
    checked.report?.whitelisted.map((w) => w.ipv4),
    ["10.20.0.3"],
  );
  assert.equal(checked.report?.loadBalancer, "10.20.0.2");
});

test("another node's endpoint, a task the managers did not label so, a container's address as load balancer: not taken", () => {
  const checked = checkReport(report(["10.20.0.3", "10.20.0.5", "10.20.0.4"], "10.20.0.5"), CTX);
  assert.deepEqual(
    checked.report?.whitelisted.map((w) => w.ipv4),
    ["10.20.0.3"],
  );
  assert.equal(checked.report?.loadBalancer, null);
  assert.deepEqual(
    checked.rejected.map((r) => r.what),
    ["10.20.0.5", "10.20.0.4", "load-balancer 10.20.0.5"],
  );
  assert.match(checked.rejected[0]!.reason, /a task of node nodeb/);
  assert.match(checked.rejected[1]!.reason, /does not carry the label role=proxy/);
});

test("a report for a node of another address, or of no node of the swarm, is not taken at all", () => {
  assert.equal(checkReport(report(["10.20.0.3"], null, "192.168.0.2"), CTX).report, null);
  assert.equal(checkReport({ ...report([]), node: node("z") }, CTX).report, null);
});

test("lines a peer can provoke: at most N per window, then how many were held back", () => {
  const rate = new LogRate(2, 1000);
  assert.deepEqual(rate.take(0), { suppressed: 0 });
  assert.deepEqual(rate.take(1), { suppressed: 0 });
  for (let i = 0; i < 500; i++) assert.equal(rate.take(2 + i), null);
  assert.deepEqual(rate.take(1000), { suppressed: 500 });
});
