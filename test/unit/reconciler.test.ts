// The reconciler: triggers become passes, one at a time; clearing goes through the same queue.
// Time is mocked and every fake step is released by the test, so nothing waits on a guess.
import { test, mock, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { Reconciler } from "../../src/reconciler.js";
import type { FirewallBackend, SyncResult } from "../../src/firewall/backend.js";
import type { NetworkSnapshot, Ruleset } from "../../src/model.js";
import { silentLog } from "../../src/log.js";
import { SCENARIOS } from "./fixtures.js";

const several = SCENARIOS.find((s) => s.name === "several-proxies")!.snapshot;
const one = SCENARIOS.find((s) => s.name === "one-proxy")!.snapshot;

/** A promise released by the test. */
function gate() {
  let open: () => void = () => undefined;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { opened, open };
}

/** Lets every settled promise's continuations run (no timer involved). */
const settle = async () => {
  for (let i = 0; i < 20; i++) await Promise.resolve();
};

/**
 * A reconciler over a fake kernel that remembers the last ruleset and reports what a new one
 * stops allowing; `calls` records syncs, clears and flow deletions in order.
 */
function harness(
  snapshots: Array<NetworkSnapshot | null | Error>,
  options: {
    syncGate?: () => Promise<void>;
    /** Which flow deletions (sweeps and per address, in call order) fail: true fails. */
    flowFails?: boolean[];
    hostProblems?: () => Promise<string[]>;
    policy?: { mode?: "enforce" | "audit"; log?: boolean };
  } = {},
) {
  const applied: Ruleset[] = [];
  const calls: string[] = [];
  /** Sweeps of the flows opened before the rules (the bridge swept), in order. */
  const sweeps: string[] = [];
  const flowFails = [...(options.flowFails ?? [])];
  const flowStep = () => {
    if (flowFails.shift()) throw new Error("conntrack: operation failed");
  };
  let active = 0;
  let maxActive = 0;
  let observed = 0;
  const result = (revoked: SyncResult["revoked"]): SyncResult => ({
    changed: true,
    differences: [],
    location: "fake",
    revoked,
  });
  const backend: FirewallBackend = {
    async sync(ruleset) {
      active++;
      maxActive = Math.max(maxActive, active);
      calls.push("sync start");
      await options.syncGate?.();
      const before = applied.at(-1)?.families[4].allowedSources ?? [];
      const now = new Set(ruleset.families[4].allowedSources);
      applied.push(ruleset);
      calls.push("sync end");
      active--;
      return result(before.filter((ip) => !now.has(ip)).map((ip) => [4, ip] as [4, string]));
    },
    async clear() {
      calls.push("clear");
      return result([]);
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
    log: silentLog,
    flows: {
      deleteFrom: async (_ruleset, _family, address) => {
        flowStep();
        calls.push(`delete ${address}`);
        return 1;
      },
      sweep: async (ruleset) => {
        flowStep();
        sweeps.push(ruleset.bridge ?? "none");
        return { pairs: [], flows: 0 };
      },
    },
    hostProblems: options.hostProblems,
    policy: options.policy,
    observe: async () => {
      const next = snapshots[Math.min(observed++, snapshots.length - 1)];
      if (next instanceof Error) throw next;
      return next ?? null;
    },
  });
  return { reconciler, applied, calls, sweeps, stats: () => ({ maxActive, observed }) };
}

function mockTime(t: TestContext) {
  mock.timers.enable({ apis: ["setTimeout", "setInterval"] });
  t.after(() => mock.timers.reset());
}

test("a burst of events makes one pass, and passes never overlap", async (t) => {
  mockTime(t);
  let release = gate();
  const h = harness([several], { syncGate: () => release.opened });
  for (let i = 0; i < 50; i++) h.reconciler.request("container:start");
  mock.timers.tick(2); // the coalescing window
  await settle();
  assert.deepEqual(h.calls, ["sync start"], "one pass for the whole burst");
  // Events during the pass make one more pass, after it.
  for (let i = 0; i < 50; i++) h.reconciler.request("network:connect");
  const first = release;
  release = gate();
  first.open();
  await settle();
  assert.deepEqual(h.calls, ["sync start", "sync end", "sync start"]);
  release.open();
  await settle();
  assert.equal(h.applied.length, 2);
  assert.equal(h.stats().maxActive, 1);
});

test("a whitelisted address that loses its allowance has its flows deleted", async () => {
  const unbound = (s: NetworkSnapshot) => ({
    ...s,
    members: s.members.map((m) => ({ ...m, port: undefined })),
  });
  const h = harness([unbound(several), unbound(one)]);
  await h.reconciler.runOnce("startup");
  await h.reconciler.runOnce("network:disconnect");
  assert.deepEqual(h.calls, [
    "sync start",
    "sync end",
    "sync start",
    "sync end",
    "delete 172.20.0.4",
  ]);
});

test("a port-bound allowance that goes has its flows deleted before the commit and after", async () => {
  const h = harness([several, one]);
  await h.reconciler.runOnce("startup");
  await h.reconciler.runOnce("container:die");
  assert.deepEqual(h.calls, [
    "sync start",
    "sync end",
    "delete 172.20.0.4",
    "sync start",
    "sync end",
    "delete 172.20.0.4",
  ]);
});

test("a failed pass is retried without waiting for the resync timer", async (t) => {
  mockTime(t);
  const h = harness([new Error("docker went away"), several]);
  assert.equal(await h.reconciler.runOnce("startup"), false);
  assert.equal(h.reconciler.lastOutcome?.error, "docker went away");
  mock.timers.tick(500); // the first retry: 500 ms, well before POLL_INTERVAL (60 s)
  mock.timers.tick(2);
  await settle();
  assert.equal(h.applied.length, 1);
  assert.equal(h.reconciler.lastOutcome?.ok, true);
});

test("nothing runs after stop", async (t) => {
  mockTime(t);
  const h = harness([several]);
  h.reconciler.start();
  await h.reconciler.stop();
  h.reconciler.request("container:start");
  mock.timers.tick(120_000); // coalescing window and two resync periods
  await settle();
  assert.deepEqual(h.calls, []);
});

test("stop does not wait for a Docker call that hangs, and that pass then applies nothing", async (t) => {
  mockTime(t);
  let release: (v: NetworkSnapshot) => void = () => undefined;
  const hung = new Promise<NetworkSnapshot>((resolve) => (release = resolve));
  let synced = 0;
  const reconciler = new Reconciler({
    instanceId: "web",
    networkRef: "web",
    allowHostTraffic: false,
    pollIntervalMs: 60_000,
    backend: {
      sync: async () => {
        synced++; // observable: the reconciler catches what a fake throws
        return { changed: true, differences: [], location: "fake", revoked: [] };
      },
      clear: async () => ({ changed: false, differences: [], location: "fake", revoked: [] }),
      check: async () => ({ location: "fake", differences: [] }),
    },
    log: silentLog,
    flows: { deleteFrom: async () => 0, sweep: async () => ({ pairs: [], flows: 0 }) },
    observe: () => hung,
  });
  const pass = reconciler.runOnce("startup");
  const stopped = reconciler.stop(50);
  mock.timers.tick(50);
  await stopped; // returned after 50 ms although Docker never answered
  release(several);
  await pass;
  assert.equal(synced, 0);
});

test("a clear during a slow pass waits for it, then clears; no pass runs after the clear", async (t) => {
  mockTime(t);
  const release = gate();
  const h = harness([several], { syncGate: () => release.opened });
  h.reconciler.start();
  h.reconciler.request("container:start");
  mock.timers.tick(2);
  await settle();
  assert.deepEqual(h.calls, ["sync start"], "a pass is in its sync, slow");
  const cleared = h.reconciler.stopAndClear();
  // Triggers that arrive meanwhile are ignored: the instance is being removed.
  h.reconciler.request("container:die");
  mock.timers.tick(60_000); // a resync period
  await settle();
  assert.deepEqual(h.calls, ["sync start"], "the clear waits for the pass in flight");
  release.open();
  const result = await cleared;
  assert.equal(result.changed, true);
  mock.timers.tick(120_000);
  await settle();
  assert.deepEqual(h.calls, ["sync start", "sync end", "clear"]);
});

test("the first enforcement of a bridge cuts the flows opened before it, once; a new bridge again", async () => {
  const recreated = { ...several, id: "f".repeat(64), bridge: "br-recreated" };
  const h = harness([several, several, recreated]);
  await h.reconciler.runOnce("startup");
  await h.reconciler.runOnce("resync");
  await h.reconciler.runOnce("network:create");
  assert.deepEqual(h.sweeps, [several.bridge, "br-recreated"]);
});

test("audit mode cuts no flow and says none is left to cut; its rulesets carry the mode and the log", async () => {
  const h = harness([several], { policy: { mode: "audit", log: true } });
  await h.reconciler.runOnce("startup");
  await h.reconciler.runOnce("resync");
  assert.deepEqual(h.sweeps, []);
  assert.equal(h.reconciler.lastOutcome?.ok, true);
  assert.equal(h.reconciler.lastOutcome?.problems, undefined);
  assert.equal(h.applied.at(-1)?.mode, "audit");
  assert.notEqual(h.applied.at(-1)?.log, null);
  // an enforcing daemon's first pass on the same bridge cuts them
  const enforce = harness([several], { policy: { mode: "enforce", log: true } });
  await enforce.reconciler.runOnce("startup");
  assert.deepEqual(enforce.sweeps, [several.bridge]);
});

test("the outcome says whether a pass changed the kernel, and whether that was a repair", async () => {
  const h = harness([several, several]);
  await h.reconciler.runOnce("startup");
  assert.deepEqual(
    [h.reconciler.lastOutcome?.changed, h.reconciler.lastOutcome?.repaired],
    [true, false],
  );
  await h.reconciler.runOnce("resync"); // the fake kernel changes every time: a repair
  assert.deepEqual(
    [h.reconciler.lastOutcome?.changed, h.reconciler.lastOutcome?.repaired],
    [true, true],
  );
});

test("flow deletions that fail are tried again until they succeed; health says so meanwhile", async (t) => {
  mockTime(t);
  // The sweep fails twice, then the revoked address's deletion would succeed.
  const h = harness([several], { flowFails: [true, true] });
  assert.equal(await h.reconciler.runOnce("startup"), true, "the rules are in force all the same");
  assert.match(
    (h.reconciler.lastOutcome?.problems ?? []).join(),
    /flows opened before the rules were in force are not cut yet/,
  );
  assert.deepEqual(h.sweeps, []);
  mock.timers.tick(500); // the retry, long before POLL_INTERVAL
  mock.timers.tick(2);
  await settle();
  assert.deepEqual(h.sweeps, [], "second attempt failed too");
  assert.ok((h.reconciler.lastOutcome?.problems ?? []).length > 0);
  mock.timers.tick(1000);
  mock.timers.tick(2);
  await settle();
  assert.deepEqual(h.sweeps, [several.bridge]);
  assert.equal(h.reconciler.lastOutcome?.problems, undefined, "healthy again");
});

test("a revoked address whose flows could not be deleted is tried again on later passes", async (t) => {
  mockTime(t);
  const unbound = (s: NetworkSnapshot) => ({
    ...s,
    members: s.members.map((m) => ({ ...m, port: undefined })),
  });
  // The sweep works; the revoked address's first deletion fails.
  const h = harness([unbound(several), unbound(one)], { flowFails: [false, true] });
  await h.reconciler.runOnce("startup");
  await h.reconciler.runOnce("network:disconnect");
  assert.deepEqual(h.calls, ["sync start", "sync end", "sync start", "sync end"]);
  assert.match((h.reconciler.lastOutcome?.problems ?? []).join(), /172\.20\.0\.4/);
  mock.timers.tick(500);
  mock.timers.tick(2);
  await settle();
  assert.equal(h.calls.at(-1), "delete 172.20.0.4", "deleted on the retry pass");
  assert.equal(h.reconciler.lastOutcome?.problems, undefined);
});

test("a startup pass while a pass is scheduled runs once: no second drain beside it", async (t) => {
  mockTime(t);
  const release = gate();
  const h = harness([several], { syncGate: () => release.opened });
  h.reconciler.request("container:start"); // scheduled, not started
  const startup = h.reconciler.runOnce("startup");
  await settle(); // the startup pass is in its sync
  h.reconciler.request("container:die"); // pending, for the pass after it
  mock.timers.tick(2); // the timer scheduled before the startup pass fires now
  await settle();
  release.open();
  await startup;
  await settle();
  assert.equal(h.stats().maxActive, 1, "two passes ran at once");
  assert.equal(h.applied.length, 2, "the startup pass, then one for the event during it");
});

test("br_netfilter switched off: reported as a problem while it lasts, at full passes", async () => {
  let off = false;
  const h = harness([several], {
    hostProblems: async () => (off ? ["bridged traffic bypasses the firewall"] : []),
  });
  await h.reconciler.runOnce("startup");
  assert.equal(h.reconciler.lastOutcome?.problems, undefined);
  off = true;
  await h.reconciler.runOnce("resync");
  assert.deepEqual(h.reconciler.lastOutcome?.problems, ["bridged traffic bypasses the firewall"]);
  off = false;
  await h.reconciler.runOnce("container:start"); // still checked: a problem is pending
  assert.equal(h.reconciler.lastOutcome?.problems, undefined);
});
