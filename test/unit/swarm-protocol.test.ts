// The channel's messages: newline-delimited JSON, each line validated where it arrives.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  LineSplitter,
  MAX_LINE_BYTES,
  allowedSchema,
  daemonMessageSchema,
  overlayMac,
  parseLine,
  reportSchema,
  workerMessageSchema,
  type AllowedMessage,
  type NodeStatus,
  type Report,
} from "../../src/swarm/protocol.js";
import { hostOf } from "../../src/swarm/channel.js";

const NODE = "3b2mz8p0v1q9xk7w4e5r6t8y0";
const REPORT: Report = {
  type: "report",
  node: NODE,
  hostIp: "192.168.0.1",
  networkId: "n".repeat(25),
  whitelisted: [{ name: "proxy.1.abc", ipv4: "10.20.0.3" }],
  loadBalancer: "10.20.0.2",
  known: null,
};
const ALLOWED: AllowedMessage = {
  type: "allowed",
  instanceId: "web",
  networkId: "n".repeat(25),
  seq: 1_700_000_000_000,
  complete: true,
  vouched: [NODE],
  entries: [
    { node: NODE, hostIp: "192.168.0.1", ipv4: "10.20.0.2", name: "lb", kind: "load-balancer" },
    { node: NODE, hostIp: "192.168.0.1", ipv4: "10.20.0.3", name: "proxy", kind: "container" },
  ],
  signature: "c2lnbmF0dXJl",
};

/** The error of a line that must be refused. */
function refused<T>(schema: Parameters<typeof parseLine<T>>[0], line: string): string {
  const parsed = parseLine(schema, line);
  assert.equal(parsed.ok, false, line.slice(0, 200));
  return parsed.ok ? "" : parsed.error;
}

test("a valid report and a valid allowed message parse back to themselves", () => {
  assert.deepEqual(parseLine(reportSchema, JSON.stringify(REPORT)), { ok: true, message: REPORT });
  assert.deepEqual(parseLine(allowedSchema, JSON.stringify(ALLOWED)), {
    ok: true,
    message: ALLOWED,
  });
  // What each end reads is what the other sends.
  assert.deepEqual(parseLine(workerMessageSchema, JSON.stringify(REPORT)), {
    ok: true,
    message: REPORT,
  });
  assert.equal(daemonMessageSchema, allowedSchema);
  const noLb = { ...REPORT, loadBalancer: null, whitelisted: [], known: ALLOWED };
  assert.deepEqual(parseLine(reportSchema, JSON.stringify(noLb)), { ok: true, message: noLb });
  // A node without the network answers all the same, with nothing.
  const away = { ...REPORT, networkId: null, whitelisted: [], loadBalancer: null };
  assert.deepEqual(parseLine(reportSchema, JSON.stringify(away)), { ok: true, message: away });
});

test("a line that is not JSON is refused", () => {
  assert.equal(refused(reportSchema, '{"type":"report",'), "not JSON");
  assert.equal(refused(allowedSchema, "hello"), "not JSON");
});

test("an address that is not IPv4 is refused, naming where it is", () => {
  const bad = (ipv4: string) => ({ ...REPORT, whitelisted: [{ name: "p", ipv4 }] });
  for (const address of ["fd00::1", "10.20.0.256", "10.20.0", "10.20.0.3/24", ""]) {
    assert.match(
      refused(reportSchema, JSON.stringify(bad(address))),
      /^whitelisted\.0\.ipv4: expected an IPv4 address/,
      address,
    );
  }
  assert.match(
    refused(reportSchema, JSON.stringify({ ...REPORT, loadBalancer: "::1" })),
    /^loadBalancer: expected an IPv4 address/,
  );
  const entry = { ...ALLOWED.entries[0]!, ipv4: "fe80::1" };
  assert.match(
    refused(allowedSchema, JSON.stringify({ ...ALLOWED, entries: [entry] })),
    /^entries\.0\.ipv4: expected an IPv4 address/,
  );
});

test("a message of another type, or another end's, is refused", () => {
  assert.match(refused(reportSchema, JSON.stringify({ ...REPORT, type: "hello" })), /^type: /);
  // A worker never takes a report for an allowed set, nor the daemon an allowed set for a report.
  assert.match(refused(allowedSchema, JSON.stringify(REPORT)), /^(type|instanceId): /);
  assert.match(refused(reportSchema, JSON.stringify(ALLOWED)), /^type: /);
  const kind = { ...ALLOWED.entries[0]!, kind: "router" };
  assert.match(
    refused(allowedSchema, JSON.stringify({ ...ALLOWED, entries: [kind] })),
    /^entries\.0\.kind: /,
  );
  assert.match(refused(reportSchema, JSON.stringify({ ...REPORT, node: "Not-An-Id" })), /^node: /);
  assert.match(refused(reportSchema, "[]"), /^: /);
  assert.match(refused(reportSchema, "null"), /^: /);
});

test("an oversized array is refused", () => {
  const many = (n: number) =>
    Array.from({ length: n }, (_, i) => ({
      name: `p${i}`,
      ipv4: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
    }));
  const fits = parseLine(reportSchema, JSON.stringify({ ...REPORT, whitelisted: many(4096) }));
  assert.equal(fits.ok, true);
  assert.match(
    refused(reportSchema, JSON.stringify({ ...REPORT, whitelisted: many(4097) })),
    /^whitelisted: /,
  );
  const entries = many(65537).map((e) => ({
    ...e,
    node: NODE,
    hostIp: "192.168.0.1",
    kind: "container",
  }));
  assert.match(refused(allowedSchema, JSON.stringify({ ...ALLOWED, entries })), /^entries: /);
});

test("lines are split across chunks; blank lines are skipped; a partial line waits", () => {
  const splitter = new LineSplitter();
  const line = JSON.stringify(REPORT);
  assert.deepEqual(splitter.push(line.slice(0, 10)), []);
  assert.deepEqual(splitter.push(line.slice(10, 30)), []);
  assert.deepEqual(splitter.push(`${line.slice(30)}\n\n  \n{"a"`), [line]);
  assert.deepEqual(splitter.push(':1}\n{"b":2}\n{"c"'), ['{"a":1}', '{"b":2}']);
  assert.deepEqual(splitter.push(":3}\n"), ['{"c":3}']);
  assert.deepEqual(splitter.push(""), []);
});

test("a line longer than MAX_LINE_BYTES is an error, even when it comes in pieces", () => {
  const splitter = new LineSplitter();
  const piece = "x".repeat(1024 * 1024);
  for (let sent = 0; sent + piece.length <= MAX_LINE_BYTES; sent += piece.length)
    assert.deepEqual(splitter.push(piece), []);
  assert.throws(() => splitter.push("x"), /line too long/);
});

test("Docker's overlay MAC of an address: 02:42 and the address's four bytes", () => {
  assert.equal(overlayMac("10.20.0.7"), "02:42:0a:14:00:07");
  assert.equal(overlayMac("10.0.255.254"), "02:42:0a:00:ff:fe");
  assert.equal(overlayMac("192.168.1.100"), "02:42:c0:a8:01:64");
});

test("hostOf: the host part of a manager's address, IPv4 or bracketed IPv6", () => {
  assert.equal(hostOf("10.0.0.1:2377"), "10.0.0.1");
  assert.equal(hostOf("[fd00::1]:2377"), "fd00::1");
  assert.equal(hostOf("manager1:2377"), "manager1");
  // No port: the address as is (an unbracketed IPv6 address is not split at its last colon).
  assert.equal(hostOf("10.0.0.1"), "10.0.0.1");
  assert.equal(hostOf("fd00::1"), "fd00::1");
});

test("a worker's status: counts are whole and bounded, kinds exact, and it names its node", () => {
  const status: NodeStatus = {
    type: "status",
    node: NODE,
    version: "1.0.0",
    mode: "audit",
    location: "iptables-nft",
    netns: "/run/docker/netns/1-abc",
    lastPass: { ok: false, at: 1_700_000_000_000, error: "nft: no such table" },
    passes: { ok: 1, failed: 1 },
    repairs: 0,
    drops: { error: "nft -j list table failed" },
    attempts: {
      byKind: { "member-to-member": 0, "member-to-host": 0, forged: 2 },
      reported: 2,
      suppressed: 0,
      packets: 2,
    },
    attemptLog: { reading: false, reason: "tcpdump exited (1)" },
    at: 1_700_000_000_100,
  };
  assert.deepEqual(parseLine(workerMessageSchema, JSON.stringify(status)), {
    ok: true,
    message: status,
  });
  const bad = (change: Record<string, unknown>) =>
    refused(workerMessageSchema, JSON.stringify({ ...status, ...change }));
  assert.match(bad({ repairs: -1 }), /^repairs: /);
  assert.match(bad({ passes: { ok: 1.5, failed: 0 } }), /^passes\.ok: /);
  assert.match(bad({ mode: "off" }), /^mode: /);
  assert.match(bad({ node: "../etc" }), /^node: /);
  assert.match(bad({ drops: { "member-to-member": 1 } }), /^drops/);
  assert.match(bad({ location: "x".repeat(3000) }), /^location: /);
  assert.match(bad({ type: "hello" }), /^type: /);
});
