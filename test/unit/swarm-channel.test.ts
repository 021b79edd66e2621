// The channel between the Swarm daemon and its workers, over loopback: TLS with a pre-shared key,
// newline-delimited JSON. Every wait is bounded; every socket and timer is closed at the end.
import { afterEach, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createServer } from "node:net";
import { DaemonDialer, WorkerListener, hostOf } from "../../src/swarm/channel.js";
import type { AllowedMessage, NodeStatus, Report } from "../../src/swarm/protocol.js";

const HOST = "127.0.0.1";
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
const allowed = (...ipv4s: string[]): AllowedMessage => ({
  type: "allowed",
  instanceId: "web",
  networkId: "n".repeat(25),
  seq: 1,
  complete: true,
  vouched: [NODE],
  signature: "",
  entries: ipv4s.map((ipv4) => ({
    node: NODE,
    hostIp: "192.168.0.1",
    ipv4,
    name: "proxy.1.abc",
    kind: "container",
  })),
});

/** A port nobody listens on right now. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, HOST, () => {
      const address = probe.address();
      probe.close(() =>
        typeof address === "object" && address ? resolve(address.port) : reject(),
      );
    });
  });
}

async function until(what: string, check: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A worker's end on a fresh port, recording what it is told. */
async function startWorker(key: Buffer, port?: number) {
  const seen = {
    port: port ?? (await freePort()),
    allowed: [] as AllowedMessage[],
    refused: [] as string[],
    connected: 0,
  };
  const listener = new WorkerListener(key, {
    onAllowed: (m) => seen.allowed.push(m),
    onConnected: () => seen.connected++,
    onDisconnected: () => undefined,
    onRefused: (_peer, reason) => seen.refused.push(reason),
  });
  listener.send(REPORT);
  await listener.listen(HOST, seen.port);
  let closed = false;
  const close = async () => {
    if (!closed) await listener.close();
    closed = true;
  };
  cleanups.push(close);
  return { listener, seen, close };
}

/** The daemon's end dialling `port` on loopback as node NODE. */
function startDialer(key: Buffer, port: number) {
  const seen = {
    reports: [] as Report[],
    statuses: [] as NodeStatus[],
    lost: [] as string[],
    connected: 0,
    current: allowed("10.20.0.3"),
  };
  const dialer = new DaemonDialer(key, port, {
    onReport: (report) => seen.reports.push(report),
    onStatus: (status) => seen.statuses.push(status),
    current: () => seen.current,
    onConnected: () => seen.connected++,
    onLost: (_node, reason) => seen.lost.push(reason),
    onRefused: () => undefined,
  });
  dialer.setNodes(new Map([[NODE, HOST]]));
  cleanups.push(() => dialer.close());
  return { dialer, seen };
}

test("the daemon dials the worker: the worker's report arrives, and the set is told back", async () => {
  const key = randomBytes(32);
  const worker = await startWorker(key);
  const daemon = startDialer(key, worker.seen.port);
  await until("the report", () => daemon.seen.reports.length > 0);
  assert.deepEqual(daemon.seen.reports[0], REPORT);
  await until("the allowed set", () => worker.seen.allowed.length > 0);
  assert.deepEqual(worker.seen.allowed[0], allowed("10.20.0.3"));
  // A change of the worker's report reaches the daemon at once.
  worker.listener.send({ ...REPORT, loadBalancer: "10.20.0.9" });
  await until("the new report", () =>
    daemon.seen.reports.some((r) => r.loadBalancer === "10.20.0.9"),
  );
});

const STATUS: NodeStatus = {
  type: "status",
  node: NODE,
  version: "1.0.0",
  mode: "enforce",
  location: "nftables",
  netns: "/run/docker/netns/1-abcdef",
  lastPass: { ok: true, at: 1_700_000_000_000 },
  passes: { ok: 3, failed: 0 },
  repairs: 1,
  drops: { "member-to-member": 5, "member-to-host": 0, forged: 2 },
  attempts: {
    byKind: { "member-to-member": 1, "member-to-host": 0, forged: 1 },
    reported: 2,
    suppressed: 0,
    packets: 7,
  },
  attemptLog: { reading: true },
  at: 1_700_000_000_500,
};

test("a worker's status reaches the daemon apart from its report, and again on a new connection", async () => {
  const key = randomBytes(32);
  const worker = await startWorker(key);
  worker.listener.sendStatus(STATUS);
  const daemon = startDialer(key, worker.seen.port);
  await until("the status", () => daemon.seen.statuses.length > 0);
  assert.deepEqual(daemon.seen.statuses[0], STATUS);
  assert.ok(daemon.seen.reports.length > 0, "the report too");
  worker.listener.sendStatus({ ...STATUS, repairs: 2 });
  await until("the new status", () => daemon.seen.statuses.some((s) => s.repairs === 2));
  // Nothing of a status is taken as a report (it allows nothing).
  assert.ok(daemon.seen.reports.every((r) => r.type === "report"));
});

test("a daemon with another key is refused: nothing is told either way", async () => {
  const worker = await startWorker(randomBytes(32));
  const daemon = startDialer(randomBytes(32), worker.seen.port);
  await until("the refusal", () => worker.seen.refused.length > 0);
  await until("the daemon to give up this attempt", () => daemon.seen.lost.length > 0);
  assert.deepEqual(daemon.seen.reports, []);
  assert.deepEqual(worker.seen.allowed, []);
  assert.equal(worker.seen.connected, 0);
});

test("a broadcast reaches the worker, and a keepalive is answered with the report", async () => {
  const key = randomBytes(32);
  const worker = await startWorker(key);
  const daemon = startDialer(key, worker.seen.port);
  await until("the connection", () => daemon.dialer.connections === 1);
  daemon.dialer.broadcast(allowed("10.20.0.3", "10.20.0.4"));
  await until("the broadcast", () => worker.seen.allowed.some((m) => m.entries.length === 2));
  const before = daemon.seen.reports.length;
  daemon.dialer.keepalive();
  await until("the answer", () => daemon.seen.reports.length > before);
});

test("a worker that goes away is dialled again, and reports again when it is back", async () => {
  const key = randomBytes(32);
  const worker = await startWorker(key);
  const daemon = startDialer(key, worker.seen.port);
  await until("the first report", () => daemon.seen.reports.length >= 1);
  await worker.close();
  const before = daemon.seen.reports.length;
  await until("the loss", () => daemon.seen.lost.length > 0);
  await startWorker(key, worker.seen.port);
  await until("the report again", () => daemon.seen.reports.length > before, 8000);
});

test("an invalid message from the worker is refused and the connection dropped", async () => {
  const key = randomBytes(32);
  const worker = await startWorker(key);
  worker.listener.send({ ...REPORT, loadBalancer: "fd00::1" } as unknown as Report);
  const daemon = startDialer(key, worker.seen.port);
  await until("the drop", () => daemon.seen.lost.length > 0);
  assert.deepEqual(daemon.seen.reports, []);
});

test("hostOf takes the host part of an address with a port", () => {
  assert.equal(hostOf("10.0.0.1:2377"), "10.0.0.1");
  assert.equal(hostOf("[fd00::1]:2377"), "fd00::1");
});
