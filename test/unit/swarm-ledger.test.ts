// The Swarm daemon's ledger: the merge of the workers' reports, shrunk only by the cluster's own
// view of the overlay (its endpoints, and the swarm's nodes), never by a worker's silence.
import { test } from "node:test";
import assert from "node:assert/strict";
import { AllowedLedger, UNLISTED_GRACE_MS } from "../../src/swarm/ledger.js";
import type { ClusterEndpoint } from "../../src/swarm/swarm-api.js";
import type { AllowedEntry, AllowedMessage, Report } from "../../src/swarm/protocol.js";

const NETWORK = "n".repeat(25);
const T0 = 1_000_000;

/** Node "a" is at 192.168.0.1, "b" at 192.168.0.2, "c" at 192.168.0.3 (their underlay). */
const HOST: Record<string, string> = { a: "192.168.0.1", b: "192.168.0.2", c: "192.168.0.3" };
const node = (n: string) => `node${n}`.padEnd(25, "0");

function report(n: string, whitelisted: string[], loadBalancer: string | null = null): Report {
  return {
    type: "report",
    node: node(n),
    hostIp: HOST[n]!,
    networkId: NETWORK,
    whitelisted: whitelisted.map((ipv4) => ({ name: `proxy@${ipv4}`, ipv4 })),
    loadBalancer,
    known: null,
  };
}

/** A set this daemon signed before (its signature checked by the caller), vouching for `vouched`. */
const signed = (entries: AllowedEntry[], vouched: string[]): AllowedMessage => ({
  type: "allowed",
  instanceId: "web",
  networkId: NETWORK,
  seq: 1,
  entries,
  vouched: vouched.map(node),
  complete: false,
  signature: "",
});

const container = (n: string, ipv4: string): AllowedEntry => ({
  node: node(n),
  hostIp: HOST[n]!,
  ipv4,
  name: `proxy@${ipv4}`,
  kind: "container",
});
const lb = (n: string, ipv4: string): AllowedEntry => ({
  node: node(n),
  hostIp: HOST[n]!,
  ipv4,
  name: "load-balancer",
  kind: "load-balancer",
});
/** The cluster's view lists an endpoint with this address on node n (named as its container). */
const listed = (n: string, ipv4: string, name = `proxy@${ipv4}`): ClusterEndpoint => ({
  name,
  ipv4,
  hostIp: HOST[n]!,
});
const ALL = new Set(["a", "b", "c"].map(node));

test("a report adds the node's whitelisted containers and its load-balancer address", () => {
  const ledger = new AllowedLedger(NETWORK);
  assert.deepEqual(ledger.entries(), []);
  assert.equal(ledger.report(report("a", ["10.20.0.3", "10.20.0.4"], "10.20.0.2"), T0), true);
  assert.deepEqual(ledger.entries(), [
    lb("a", "10.20.0.2"),
    container("a", "10.20.0.3"),
    container("a", "10.20.0.4"),
  ]);
  // The same report again: nothing changed.
  assert.equal(ledger.report(report("a", ["10.20.0.3", "10.20.0.4"], "10.20.0.2"), T0 + 1), false);
});

test("a node's next report replaces its part: what it no longer has, and its load balancer, go", () => {
  const ledger = new AllowedLedger(NETWORK);
  ledger.report(report("a", ["10.20.0.3", "10.20.0.4"], "10.20.0.2"), T0);
  assert.equal(ledger.report(report("a", ["10.20.0.4", "10.20.0.5"], null), T0 + 1), true);
  assert.deepEqual(ledger.entries(), [container("a", "10.20.0.4"), container("a", "10.20.0.5")]);
  assert.equal(ledger.report(report("a", [], null), T0 + 2), true);
  assert.deepEqual(ledger.entries(), []);
});

test("another node's report merges with the others', each entry naming its node", () => {
  const ledger = new AllowedLedger(NETWORK);
  ledger.report(report("a", ["10.20.0.3"], "10.20.0.2"), T0);
  assert.equal(ledger.report(report("b", ["10.20.0.7"], "10.20.0.6"), T0), true);
  assert.deepEqual(ledger.entries(), [
    lb("a", "10.20.0.2"),
    container("a", "10.20.0.3"),
    lb("b", "10.20.0.6"),
    container("b", "10.20.0.7"),
  ]);
  // b's next report leaves a's part alone.
  ledger.report(report("b", [], null), T0 + 1);
  assert.deepEqual(ledger.entries(), [lb("a", "10.20.0.2"), container("a", "10.20.0.3")]);
});

test("entries are sorted by node, then address, whatever the order of reports and lists", () => {
  const one = new AllowedLedger(NETWORK);
  one.report(report("b", ["10.20.0.8", "10.20.0.7"], "10.20.0.6"), T0);
  one.report(report("a", ["10.20.0.4", "10.20.0.3"], "10.20.0.5"), T0);
  const other = new AllowedLedger(NETWORK);
  other.report(report("a", ["10.20.0.3", "10.20.0.4"], "10.20.0.5"), T0);
  other.report(report("b", ["10.20.0.7", "10.20.0.8"], "10.20.0.6"), T0);
  const expected = [
    container("a", "10.20.0.3"),
    container("a", "10.20.0.4"),
    lb("a", "10.20.0.5"),
    lb("b", "10.20.0.6"),
    container("b", "10.20.0.7"),
    container("b", "10.20.0.8"),
  ];
  assert.deepEqual(one.entries(), expected);
  assert.deepEqual(other.entries(), expected);
});

test("prune keeps an address the cluster lists on its node", () => {
  const ledger = new AllowedLedger(NETWORK);
  ledger.report(report("a", ["10.20.0.3"], "10.20.0.2"), T0);
  const view = [listed("a", "10.20.0.3"), listed("b", "10.20.0.9")];
  assert.equal(ledger.prune(view, ALL, T0 + 1), false);
  // Still listed long after the grace period: still kept.
  assert.equal(ledger.prune(view, ALL, T0 + 10 * UNLISTED_GRACE_MS), false);
  assert.deepEqual(ledger.entries(), [lb("a", "10.20.0.2"), container("a", "10.20.0.3")]);
});

test("an address listed once and no longer (its endpoint left) is removed at once", () => {
  const ledger = new AllowedLedger(NETWORK);
  ledger.report(report("a", ["10.20.0.3", "10.20.0.4"]), T0);
  ledger.prune([listed("a", "10.20.0.3"), listed("a", "10.20.0.4")], ALL, T0 + 1);
  // Well within the grace period: being listed before is what counts.
  assert.equal(ledger.prune([listed("a", "10.20.0.4")], ALL, T0 + 2), true);
  assert.deepEqual(ledger.entries(), [container("a", "10.20.0.4")]);
});

test("an address never listed is kept for UNLISTED_GRACE_MS after its report, then dropped", () => {
  const ledger = new AllowedLedger(NETWORK);
  ledger.report(report("a", ["10.20.0.3"]), T0);
  assert.equal(ledger.prune([], ALL, T0 + 1), false);
  assert.equal(ledger.prune([], ALL, T0 + UNLISTED_GRACE_MS), false);
  assert.deepEqual(ledger.entries(), [container("a", "10.20.0.3")]);
  assert.equal(ledger.prune([], ALL, T0 + UNLISTED_GRACE_MS + 1), true);
  assert.deepEqual(ledger.entries(), []);
});

test("the grace period counts from the first report of a container, not from each report", () => {
  const ledger = new AllowedLedger(NETWORK);
  ledger.report(report("a", ["10.20.0.3"]), T0);
  // Reported again and again (heartbeats), never listed: still dropped once the grace is over.
  ledger.report(report("a", ["10.20.0.3"]), T0 + UNLISTED_GRACE_MS / 2);
  ledger.report(report("a", ["10.20.0.3"]), T0 + UNLISTED_GRACE_MS);
  assert.equal(ledger.prune([], ALL, T0 + UNLISTED_GRACE_MS + 1), true);
  assert.deepEqual(ledger.entries(), []);
});

test("an address listed only on another node does not keep a node's entry listed before", () => {
  const ledger = new AllowedLedger(NETWORK);
  ledger.report(report("a", ["10.20.0.5"]), T0);
  ledger.prune([listed("a", "10.20.0.5")], ALL, T0 + 1);
  // The container on a left; the address now belongs to a container on b (its Host IP differs).
  assert.equal(ledger.prune([listed("b", "10.20.0.5")], ALL, T0 + 2), true);
  assert.deepEqual(ledger.entries(), []);
});

test("a node missing from the swarm's node list loses its containers and load balancer", () => {
  const ledger = new AllowedLedger(NETWORK);
  ledger.report(report("a", ["10.20.0.3"], "10.20.0.2"), T0);
  ledger.report(report("b", ["10.20.0.7"], "10.20.0.6"), T0);
  const view = [listed("a", "10.20.0.3"), listed("b", "10.20.0.7")];
  assert.equal(ledger.prune(view, new Set([node("a")]), T0 + 1), true);
  assert.deepEqual(ledger.entries(), [lb("a", "10.20.0.2"), container("a", "10.20.0.3")]);
  // Gone for good: the next prune, even with b back, adds nothing (only b's report would).
  assert.equal(ledger.prune(view, ALL, T0 + 2), false);
  assert.deepEqual(ledger.entries(), [lb("a", "10.20.0.2"), container("a", "10.20.0.3")]);
});

test("prune with no node list (unknown) keeps every node, still pruning by endpoints", () => {
  const ledger = new AllowedLedger(NETWORK);
  ledger.report(report("a", ["10.20.0.3"], "10.20.0.2"), T0);
  ledger.report(report("b", ["10.20.0.7", "10.20.0.8"], "10.20.0.6"), T0);
  ledger.prune(
    [listed("a", "10.20.0.3"), listed("b", "10.20.0.7"), listed("b", "10.20.0.8")],
    null,
    T0 + 1,
  );
  assert.equal(
    ledger.prune([listed("a", "10.20.0.3"), listed("b", "10.20.0.7")], null, T0 + 2),
    true,
  );
  assert.deepEqual(ledger.entries(), [
    lb("a", "10.20.0.2"),
    container("a", "10.20.0.3"),
    lb("b", "10.20.0.6"),
    container("b", "10.20.0.7"),
  ]);
});

test("silence never shrinks the set: no report and no prune keep every entry, however long", () => {
  const ledger = new AllowedLedger(NETWORK);
  ledger.report(report("a", ["10.20.0.3"], "10.20.0.2"), T0);
  ledger.report(report("b", ["10.20.0.7"], null), T0);
  const before = ledger.entries();
  // Time passes (the ledger only learns it from report/prune), and another node reports.
  ledger.report(report("c", ["10.20.0.11"], null), T0 + 100 * UNLISTED_GRACE_MS);
  assert.deepEqual(
    ledger.entries().filter((e) => e.node !== node("c")),
    before,
  );
  // A listed entry whose node stays silent is kept by every later prune that still lists it.
  ledger.prune([listed("a", "10.20.0.3"), listed("b", "10.20.0.7")], ALL, T0 + 1);
  ledger.prune(
    [listed("a", "10.20.0.3"), listed("b", "10.20.0.7")],
    ALL,
    T0 + 1000 * UNLISTED_GRACE_MS,
  );
  assert.deepEqual(
    ledger.entries().filter((e) => e.node !== node("c")),
    before,
  );
});

test("a load-balancer address the cluster lists as a container endpoint is dropped", () => {
  // The view never lists load-balancer endpoints: listed, the address now is a container's.
  const ledger = new AllowedLedger(NETWORK);
  ledger.report(report("a", ["10.20.0.3"], "10.20.0.2"), T0);
  ledger.report(report("b", [], "10.20.0.6"), T0);
  // a's load balancer left (no report from a yet); a backend task on b got its address.
  assert.equal(
    ledger.prune([listed("a", "10.20.0.3"), listed("b", "10.20.0.2")], ALL, T0 + 1),
    true,
  );
  assert.deepEqual(ledger.entries(), [container("a", "10.20.0.3"), lb("b", "10.20.0.6")]);
  // Listed on its own node (a container took the address there): dropped as well.
  ledger.prune([listed("a", "10.20.0.3"), listed("b", "10.20.0.6")], ALL, T0 + 2);
  assert.deepEqual(ledger.entries(), [container("a", "10.20.0.3")]);
});

test("a load-balancer address not listed stays, however long (it leaves with a report)", () => {
  const ledger = new AllowedLedger(NETWORK);
  ledger.report(report("a", [], "10.20.0.2"), T0);
  assert.equal(ledger.prune([], ALL, T0 + 100 * UNLISTED_GRACE_MS), false);
  assert.deepEqual(ledger.entries(), [lb("a", "10.20.0.2")]);
});

test("a report's known set adds the parts of nodes not heard from directly (hearsay)", () => {
  // A daemon that just started: a's worker still enforces what it was told of b.
  const ledger = new AllowedLedger(NETWORK);
  const known = signed(
    [
      container("a", "10.20.0.99"), // the reporter's own part in `known`: its report says better
      container("b", "10.20.0.7"),
      lb("b", "10.20.0.6"),
      container("c", "10.20.0.11"), // c was not vouched for then: not hearsay now
    ],
    ["a", "b"],
  );
  assert.equal(ledger.report(report("a", ["10.20.0.3"]), T0, known), true);
  assert.deepEqual(ledger.entries(), [
    container("a", "10.20.0.3"),
    lb("b", "10.20.0.6"),
    container("b", "10.20.0.7"),
  ]);
  // b reports itself: its report replaces the hearsay, and later hearsay about b is ignored.
  assert.equal(ledger.report(report("b", ["10.20.0.8"], null), T0 + 1), true);
  ledger.report(report("a", ["10.20.0.3"]), T0 + 2, known);
  assert.deepEqual(ledger.entries(), [container("a", "10.20.0.3"), container("b", "10.20.0.8")]);
  assert.deepEqual(ledger.vouched(), [node("a"), node("b")]);
});

test("hearsay is pruned like a report: never listed, it goes after the grace period", () => {
  const ledger = new AllowedLedger(NETWORK);
  ledger.report(
    report("a", []),
    T0,
    signed([container("b", "10.20.0.7"), container("c", "10.20.0.11")], ["b", "c"]),
  );
  ledger.prune([listed("b", "10.20.0.7")], ALL, T0 + 1);
  assert.equal(ledger.prune([listed("b", "10.20.0.7")], ALL, T0 + UNLISTED_GRACE_MS + 1), true);
  assert.deepEqual(ledger.entries(), [container("b", "10.20.0.7")]);
  // Listed once, then no longer: gone at once.
  assert.equal(ledger.prune([], ALL, T0 + UNLISTED_GRACE_MS + 2), true);
  assert.deepEqual(ledger.entries(), []);
});

test("the same address on the same node under another name is another container: the entry goes", () => {
  const ledger = new AllowedLedger(NETWORK);
  ledger.report(report("a", ["10.20.0.3"], null), T0);
  ledger.prune([listed("a", "10.20.0.3")], ALL, T0 + 1000);
  assert.equal(ledger.prune([listed("a", "10.20.0.3", "backend.1.xyz")], ALL, T0 + 2000), true);
  assert.deepEqual(ledger.entries(), []);
});
