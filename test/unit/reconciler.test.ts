import { test } from "node:test";
import assert from "node:assert/strict";
import { pino } from "pino";
import { Reconciler } from "../../src/reconciler.js";
import type { FirewallBackend } from "../../src/firewall/backend.js";
import type { NetworkSnapshot, Ruleset } from "../../src/model.js";
import { SCENARIOS } from "./fixtures.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const silent = pino({ level: "silent" });

function harness(snapshots: Array<NetworkSnapshot | null | Error>) {
  const applied: Ruleset[] = [];
  const flowsDeleted: string[] = [];
  /** sync and flow deletions, in the order they happened */
  const calls: string[] = [];
  let active = 0;
  let maxActive = 0;
  let observed = 0;
  // A fake kernel: it remembers the last ruleset, and reports what a new one stops allowing.
  const backend: FirewallBackend = {
    async sync(ruleset) {
      active++;
      maxActive = Math.max(maxActive, active);
      await sleep(20);
      const before = applied.at(-1)?.families[4].allowedSources ?? [];
      const now = new Set(ruleset.families[4].allowedSources);
      applied.push(ruleset);
      calls.push("sync");
      active--;
      const revoked = before.filter((ip) => !now.has(ip)).map((ip) => [4, ip] as [4, string]);
      return { changed: true, differences: [], location: "fake", revoked };
    },
    async clear() {
      return { changed: false, differences: [], location: "fake", revoked: [] };
    },
    async check() {
      return { location: "fake", differences: [] };
    },
  };
  const reconciler = new Reconciler({
    instanceId: "web",
    networkRef: "web",
    allowHostTraffic: false,
    pollIntervalMs: 60_000,
    backend,
    log: silent,
    deleteFlowsFrom: async (_family, address) => {
      flowsDeleted.push(address);
      calls.push(`delete ${address}`);
      return 1;
    },
    observe: async () => {
      const next = snapshots[Math.min(observed++, snapshots.length - 1)];
      if (next instanceof Error) throw next;
      return next ?? null;
    },
  });
  return { reconciler, applied, flowsDeleted, calls, stats: () => ({ maxActive, observed }) };
}

const several = SCENARIOS.find((s) => s.name === "several-proxies")!.snapshot;
const one = SCENARIOS.find((s) => s.name === "one-proxy")!.snapshot;

test("a burst of events makes one pass, and passes never overlap", async () => {
  const h = harness([several]);
  assert.equal(await h.reconciler.runOnce("startup"), true);
  for (let i = 0; i < 50; i++) h.reconciler.request(`container:start`);
  await sleep(10);
  for (let i = 0; i < 50; i++) h.reconciler.request(`network:connect`);
  await sleep(100);
  await h.reconciler.stop();
  assert.equal(h.stats().maxActive, 1);
  // startup + the first burst + at most one more for events that arrived during it
  assert.ok(h.applied.length >= 2 && h.applied.length <= 3, `passes: ${h.applied.length}`);
});

test("a whitelisted address that loses its allowance has its flows deleted", async () => {
  const unbound = (s: NetworkSnapshot) => ({
    ...s,
    members: s.members.map((m) => ({ ...m, port: undefined })),
  });
  const h = harness([unbound(several), unbound(one)]);
  await h.reconciler.runOnce("startup");
  await h.reconciler.runOnce("network:disconnect");
  await h.reconciler.stop();
  assert.deepEqual(h.calls, ["sync", "sync", "delete 172.20.0.4"]);
});

test("a port-bound allowance that goes has its flows deleted before the commit and after", async () => {
  const h = harness([several, one]);
  await h.reconciler.runOnce("startup");
  await h.reconciler.runOnce("container:die");
  await h.reconciler.stop();
  assert.deepEqual(h.calls, ["sync", "delete 172.20.0.4", "sync", "delete 172.20.0.4"]);
});

test("a failed pass is retried without waiting for the resync timer", async () => {
  const h = harness([new Error("docker went away"), several]);
  assert.equal(await h.reconciler.runOnce("startup"), false);
  await sleep(600);
  await h.reconciler.stop();
  assert.equal(h.applied.length, 1);
  assert.equal(h.reconciler.lastOutcome?.ok, true);
});

test("nothing runs after stop", async () => {
  const h = harness([several]);
  await h.reconciler.stop();
  h.reconciler.request("container:start");
  await sleep(30);
  assert.equal(h.applied.length, 0);
});

test("stop does not wait for a Docker call that hangs, and that pass then applies nothing", async () => {
  let release: (v: NetworkSnapshot) => void = () => undefined;
  const hung = new Promise<NetworkSnapshot>((resolve) => (release = resolve));
  const reconciler = new Reconciler({
    instanceId: "web",
    networkRef: "web",
    allowHostTraffic: false,
    pollIntervalMs: 60_000,
    backend: {
      sync: async () => assert.fail("a stopped reconciler must not apply"),
      clear: async () => ({ changed: false, differences: [], location: "fake", revoked: [] }),
      check: async () => ({ location: "fake", differences: [] }),
    },
    log: silent,
    deleteFlowsFrom: async () => 0,
    observe: () => hung,
  });
  void reconciler.runOnce("startup");
  const started = Date.now();
  await reconciler.stop(50);
  assert.ok(Date.now() - started < 1000);
  release(several);
  await sleep(20);
});
