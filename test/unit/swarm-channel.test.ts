// The channel between the Swarm daemon and its workers, over loopback: TLS with a pre-shared key,
// newline-delimited JSON. Every wait is bounded; every socket and timer is closed at the end.
import { afterEach, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createServer } from "node:net";
import { ChannelClient, ChannelServer } from "../../src/swarm/channel.js";
import type { AllowedMessage, Report } from "../../src/swarm/protocol.js";

const HOST = "127.0.0.1";
const NODE = "3b2mz8p0v1q9xk7w4e5r6t8y0";
const REPORT: Report = {
  type: "report",
  node: NODE,
  hostIp: "192.168.0.1",
  networkId: "n".repeat(25),
  whitelisted: [{ name: "proxy.1.abc", ipv4: "10.20.0.3" }],
  loadBalancer: "10.20.0.2",
  known: [],
};
const allowed = (...ipv4s: string[]): AllowedMessage => ({
  type: "allowed",
  networkId: "n".repeat(25),
  complete: true,
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

/** A daemon's end on a fresh port, recording what it is told. */
async function startServer(key: Buffer, port?: number) {
  const seen = {
    port: port ?? (await freePort()),
    reports: [] as Report[],
    refused: [] as string[],
    disconnected: [] as Array<string | null>,
    current: allowed("10.20.0.3"),
  };
  const server = new ChannelServer(key, {
    onReport: (report) => seen.reports.push(report),
    current: () => seen.current,
    onRefused: (_peer, reason) => seen.refused.push(reason),
    onDisconnected: (_peer, node) => seen.disconnected.push(node),
  });
  await server.listen(HOST, seen.port);
  let closed = false;
  const close = async () => {
    if (!closed) await server.close();
    closed = true;
  };
  cleanups.push(close);
  return { server, seen, close };
}

/** A worker's end, recording what it is told. */
function startClient(key: Buffer, port: number, report: Report | null = REPORT) {
  const seen = {
    allowed: [] as AllowedMessage[],
    connected: [] as string[],
    lost: [] as Array<{ reason: string; retryInMs: number }>,
  };
  const client = new ChannelClient({
    key,
    port,
    managers: async () => [HOST],
    onAllowed: (message) => seen.allowed.push(message),
    onConnected: (address) => seen.connected.push(address),
    onLost: (reason, retryInMs) => seen.lost.push({ reason, retryInMs }),
  });
  cleanups.push(() => client.stop());
  if (report) client.send(report); // kept, and sent on connecting
  client.start();
  return { client, seen };
}

test("a worker with the key: its report reaches the daemon, which answers with the allowed set", async () => {
  const key = randomBytes(32);
  const daemon = await startServer(key);
  const worker = startClient(key, daemon.seen.port);
  // Told the set on connecting, and again in answer to its report.
  await until("the report and two allowed messages", () => {
    return daemon.seen.reports.length === 1 && worker.seen.allowed.length === 2;
  });
  assert.deepEqual(daemon.seen.reports, [REPORT]);
  assert.deepEqual(worker.seen.allowed, [allowed("10.20.0.3"), allowed("10.20.0.3")]);
  assert.deepEqual(worker.seen.connected, [HOST]);
  assert.equal(worker.client.connected, true);
  assert.equal(daemon.server.connections, 1);
  assert.deepEqual(daemon.seen.refused, []);
  // A later report is answered too.
  worker.client.send({ ...REPORT, whitelisted: [] });
  await until("the second report", () => daemon.seen.reports.length === 2);
  assert.deepEqual(daemon.seen.reports[1]!.whitelisted, []);
  await until("its answer", () => worker.seen.allowed.length === 3);
});

test("a worker with a wrong key is refused in the handshake: nothing is delivered either way", async () => {
  const daemon = await startServer(randomBytes(32));
  const worker = startClient(randomBytes(32), daemon.seen.port);
  await until("the refusal", () => daemon.seen.refused.length > 0);
  assert.match(daemon.seen.refused[0]!, /bad record mac|decrypt/i);
  await until("the worker to give up this attempt", () => worker.seen.lost.length > 0);
  worker.client.stop();
  assert.deepEqual(daemon.seen.reports, []);
  assert.deepEqual(worker.seen.allowed, []);
  assert.deepEqual(worker.seen.connected, []);
  assert.equal(worker.client.connected, false);
  assert.equal(daemon.server.connections, 0);
  assert.ok(worker.seen.lost[0]!.retryInMs > 0);
});

test("a broadcast reaches every connected worker", async () => {
  const key = randomBytes(32);
  const daemon = await startServer(key);
  const one = startClient(key, daemon.seen.port);
  const two = startClient(key, daemon.seen.port, { ...REPORT, node: "othernode" });
  await until("both reports answered", () => {
    return one.seen.allowed.length === 2 && two.seen.allowed.length === 2;
  });
  assert.equal(daemon.server.connections, 2);
  daemon.seen.current = allowed("10.20.0.3", "10.20.0.7");
  daemon.server.broadcast(daemon.seen.current);
  await until(
    "the broadcast",
    () => one.seen.allowed.length === 3 && two.seen.allowed.length === 3,
  );
  assert.deepEqual(one.seen.allowed[2], allowed("10.20.0.3", "10.20.0.7"));
  assert.deepEqual(two.seen.allowed[2], allowed("10.20.0.3", "10.20.0.7"));
});

test("the daemon going away makes the worker retry; a daemon back on the port gets its report again", async () => {
  const key = randomBytes(32);
  const first = await startServer(key);
  const worker = startClient(key, first.seen.port);
  await until("the report answered", () => worker.seen.allowed.length === 2);
  await first.close();
  await until("the worker to notice", () => worker.seen.lost.length > 0);
  assert.match(worker.seen.lost[0]!.reason, /closed/);
  assert.ok(worker.seen.lost[0]!.retryInMs > 0 && worker.seen.lost[0]!.retryInMs <= 5000);
  assert.equal(worker.client.connected, false);
  assert.deepEqual(first.seen.disconnected, [NODE]);
  // A daemon started again (a restart, or another manager's): the kept report is sent again.
  const second = await startServer(key, first.seen.port);
  await until("the report sent again", () => second.seen.reports.length === 1, 5000);
  assert.deepEqual(second.seen.reports, [REPORT]);
  assert.equal(worker.seen.connected.length, 2);
});

test("an invalid line from a worker is refused and its connection closed", async () => {
  const key = randomBytes(32);
  const daemon = await startServer(key);
  const worker = startClient(key, daemon.seen.port, null);
  await until("the connection", () => worker.client.connected);
  // Valid JSON, invalid report: a non-IPv4 address.
  worker.client.send({ ...REPORT, loadBalancer: "fd00::1" });
  await until("the refusal", () => daemon.seen.refused.length === 1);
  assert.match(daemon.seen.refused[0]!, /^invalid message: loadBalancer: /);
  assert.deepEqual(daemon.seen.reports, []);
  await until("the worker to notice", () => worker.seen.lost.length > 0);
});

test("a worker stopped while it connects ends with no connection", async () => {
  const key = randomBytes(32);
  const daemon = await startServer(key);
  const connected: string[] = [];
  const client: ChannelClient = new ChannelClient({
    key,
    port: daemon.seen.port,
    managers: async () => {
      // Stopped once the connection is under way, before its handshake completes.
      setImmediate(() => client.stop());
      return [HOST];
    },
    onAllowed: () => undefined,
    onConnected: (address) => connected.push(address),
    onLost: () => undefined,
  });
  cleanups.push(() => client.stop());
  client.send(REPORT);
  client.start();
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.deepEqual(connected, []);
  assert.equal(client.connected, false);
  assert.equal(daemon.server.connections, 0);
  assert.deepEqual(daemon.seen.reports, []);
});
