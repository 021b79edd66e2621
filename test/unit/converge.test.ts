// The converger both backends run on, against a fake kernel: what it reads, when it trusts
// its last read-back, and how it reacts when the kernel does not do what it was told.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Converger, type Kernel, type KernelPlan } from "../../src/firewall/converger.js";
import { VerificationError } from "../../src/firewall/backend.js";
import { computeRuleset } from "../../src/policy.js";
import type { Ruleset } from "../../src/model.js";

/** The desired state of the fake: the allowed IPv4 addresses. */
const ruleset = (allowed: string[]): Ruleset =>
  computeRuleset(
    {
      id: "n",
      name: "web",
      subnets: ["172.20.0.0/16"],
      bridge: "br-web",
      members: allowed.map((ipv4, i) => ({ id: `c${i}`, name: `p${i}`, whitelisted: true, ipv4 })),
    },
    { instanceId: "web", allowHostTraffic: false },
  );

interface FakePlan extends KernelPlan {
  add: string[];
  remove: string[];
}

/** A kernel holding a set of addresses; each hook can be made to misbehave. */
function fakeKernel() {
  const kernel = {
    held: new Set<string>(),
    log: [] as string[],
    /** The next apply throws this. */
    failApply: null as Error | null,
    /** Applied changes do not stick (another tool undoes them at once). */
    dropWrites: false,
    monitored: true,
  };
  const impl: Kernel<Set<string>, FakePlan> = {
    async read() {
      kernel.log.push("read");
      return new Set(kernel.held);
    },
    plan(state, desired) {
      const want = new Set(desired?.families[4].allowedSources ?? []);
      const add = [...want].filter((a) => !state.has(a));
      const remove = [...state].filter((a) => !want.has(a));
      const differences = [
        ...add.map((a) => `${a} missing`),
        ...remove.map((a) => `${a} unexpected`),
      ];
      return {
        add,
        remove,
        changed: differences.length > 0,
        differences,
        outstanding: differences,
        revoked: remove.map((a): [4, string] => [4, a]),
        location: "fake",
      };
    },
    async apply(plan) {
      kernel.log.push(`apply +${plan.add.join(",")} -${plan.remove.join(",")}`);
      if (kernel.failApply) {
        const error = kernel.failApply;
        kernel.failApply = null;
        throw error;
      }
      if (kernel.dropWrites) return;
      for (const a of plan.add) kernel.held.add(a);
      for (const a of plan.remove) kernel.held.delete(a);
    },
    monitored: () => kernel.monitored,
  };
  return { kernel, impl };
}

/** A monitor that says whether anything changed since a moment. */
function fakeMonitor() {
  const monitor = { changedAt: -1, quietSince: (since: number) => monitor.changedAt < since };
  return monitor;
}

function clock() {
  let t = 1000;
  return () => ++t;
}

test("a change is applied, said enforced, read back and verified; the same state again changes nothing", async () => {
  const { kernel, impl } = fakeKernel();
  const engine = new Converger(impl, null, undefined, clock());
  const said: string[] = [];
  const first = await engine.converge(ruleset(["172.20.0.2"]), {
    fresh: true,
    onEnforced: () => said.push(`enforced after ${kernel.log.at(-1)}`),
  });
  assert.equal(first.changed, true);
  assert.deepEqual(first.differences, ["172.20.0.2 missing"]);
  assert.deepEqual(kernel.log, ["read", "apply +172.20.0.2 -", "read"]);
  assert.deepEqual(said, ["enforced after apply +172.20.0.2 -"]);
  kernel.log.length = 0;
  const again = await engine.converge(ruleset(["172.20.0.2"]), { fresh: false });
  assert.equal(again.changed, false);
  assert.deepEqual(kernel.log, [], "an event pass plans on the read-back: no read, no apply");
});

test("revocations come from the kernel's state, not from the last desired state", async () => {
  const { kernel, impl } = fakeKernel();
  kernel.held.add("172.20.0.7"); // left by an earlier run
  const engine = new Converger(impl, null, undefined, clock());
  const result = await engine.converge(ruleset(["172.20.0.2"]), { fresh: true });
  assert.deepEqual(result.revoked, [[4, "172.20.0.7"]]);
});

test("a read-back that still differs is a VerificationError naming what is left", async () => {
  const { kernel, impl } = fakeKernel();
  kernel.dropWrites = true;
  const engine = new Converger(impl, null, undefined, clock());
  await assert.rejects(
    engine.converge(ruleset(["172.20.0.2"]), { fresh: true }),
    (error: unknown) =>
      error instanceof VerificationError &&
      error.location === "fake" &&
      error.differences.join() === "172.20.0.2 missing",
  );
  // Nothing is trusted after a failed pass: the next one reads the kernel again.
  kernel.log.length = 0;
  kernel.dropWrites = false;
  await engine.converge(ruleset(["172.20.0.2"]), { fresh: false });
  assert.equal(kernel.log[0], "read");
});

test("a stale cached view: the failure is told, the pass is redone from a fresh read, and succeeds", async () => {
  const { kernel, impl } = fakeKernel();
  const stale: unknown[] = [];
  const engine = new Converger(impl, null, (e) => stale.push(e), clock());
  await engine.converge(ruleset(["172.20.0.2"]), { fresh: true });
  kernel.held.clear(); // someone flushed our rules behind the cache's back
  kernel.held.add("172.20.0.9");
  kernel.failApply = new Error("element does not exist");
  kernel.log.length = 0;
  const result = await engine.converge(ruleset(["172.20.0.3"]), { fresh: false });
  assert.equal(stale.length, 1);
  assert.match((stale[0] as Error).message, /element does not exist/);
  assert.deepEqual(kernel.log, [
    "apply +172.20.0.3 -172.20.0.2", // planned on the cache
    "read",
    "apply +172.20.0.3 -172.20.0.9", // redone on what the kernel really holds
    "read",
  ]);
  assert.deepEqual([...kernel.held], ["172.20.0.3"]);
  assert.deepEqual(result.revoked, [[4, "172.20.0.9"]]);
});

test("an apply that fails on a fresh read is not retried here: the error goes up", async () => {
  const { kernel, impl } = fakeKernel();
  const stale: unknown[] = [];
  const engine = new Converger(impl, null, (e) => stale.push(e), clock());
  kernel.failApply = new Error("iptables-restore: line 3 failed");
  await assert.rejects(engine.converge(ruleset(["172.20.0.2"]), { fresh: true }), /line 3 failed/);
  assert.deepEqual(stale, []);
  assert.deepEqual(kernel.log, ["read", "apply +172.20.0.2 -"]);
});

test("a resync trusts the last read-back while the monitor saw nothing change, and reads once it did", async () => {
  const { kernel, impl } = fakeKernel();
  const monitor = fakeMonitor();
  const now = clock();
  const engine = new Converger(impl, monitor, undefined, now);
  await engine.converge(ruleset(["172.20.0.2"]), { fresh: true });
  kernel.log.length = 0;
  assert.equal((await engine.view(true)).cached, true, "monitor silent: no read");
  assert.deepEqual(kernel.log, []);
  monitor.changedAt = now(); // e.g. another tool flushed a chain
  kernel.held.clear();
  const repaired = await engine.converge(ruleset(["172.20.0.2"]), { fresh: true });
  assert.equal(repaired.changed, true);
  assert.deepEqual(kernel.log, ["read", "apply +172.20.0.2 -", "read"]);
});

test("a change told while our own apply ran counts against the view the plan was made on", async () => {
  const { kernel, impl } = fakeKernel();
  const monitor = fakeMonitor();
  let t = 1000;
  const apply = impl.apply.bind(impl);
  // Somebody's commit, told while ours ran: after our read, before our read-back began.
  impl.apply = async (plan) => {
    t += 10;
    monitor.changedAt = t;
    await apply(plan);
    t += 10;
  };
  const engine = new Converger(impl, monitor, undefined, () => t);
  await engine.converge(ruleset(["172.20.0.2"]), { fresh: true });
  kernel.log.length = 0;
  // A read-back may read only what the plan touched: the resync reads the rest again.
  assert.equal((await engine.view(true)).cached, false);
  assert.deepEqual(kernel.log, ["read"]);
});

test("a quiet monitor spares a resync its read for ten minutes at most", async () => {
  const { kernel, impl } = fakeKernel();
  let t = 1000;
  const engine = new Converger(impl, fakeMonitor(), undefined, () => t);
  await engine.converge(ruleset(["172.20.0.2"]), { fresh: true });
  kernel.log.length = 0;
  t += 10 * 60_000;
  assert.equal((await engine.view(true)).cached, true, "ten minutes: still trusted");
  t += 1;
  assert.equal((await engine.view(true)).cached, false, "then read again");
  assert.deepEqual(kernel.log, ["read"]);
});

test("without a monitor, or on state it cannot see (legacy tables), every resync reads", async () => {
  for (const setup of ["no monitor", "unmonitored state"]) {
    const { kernel, impl } = fakeKernel();
    kernel.monitored = setup === "no monitor";
    const monitor = setup === "no monitor" ? null : fakeMonitor();
    const engine = new Converger(impl, monitor, undefined, clock());
    await engine.converge(ruleset([]), { fresh: true });
    kernel.log.length = 0;
    assert.equal((await engine.view(true)).cached, false, setup);
    assert.deepEqual(kernel.log, ["read"], setup);
  }
});

test("clearing (desired null) removes everything the kernel holds", async () => {
  const { kernel, impl } = fakeKernel();
  kernel.held.add("172.20.0.2");
  const engine = new Converger(impl, null, undefined, clock());
  const result = await engine.converge(null, { fresh: true });
  assert.deepEqual(result.revoked, [[4, "172.20.0.2"]]);
  assert.equal(kernel.held.size, 0);
});

test("views asked for while a read is under way share it: a warm-up and the sync read once", async () => {
  const { kernel, impl } = fakeKernel();
  const engine = new Converger(impl, null, undefined, clock());
  const [a, b] = await Promise.all([engine.view(true), engine.view(true)]);
  assert.equal(a, b);
  assert.deepEqual(kernel.log, ["read"]);
  await engine.view(true); // a later fresh view reads again
  assert.deepEqual(kernel.log, ["read", "read"]);
});

test("a warm-up's read is the pass's fresh view: taken once, and only while recent", async () => {
  const { kernel, impl } = fakeKernel();
  let t = 1000;
  const engine = new Converger(impl, null, undefined, () => t);
  engine.warm(true);
  await new Promise((resolve) => setImmediate(resolve)); // its read ends
  t += 100; // Docker answered meanwhile
  const view = await engine.view(true);
  assert.equal(view.cached, false);
  assert.deepEqual(kernel.log, ["read"], "the pass's fresh view did not read again");
  await engine.view(true);
  assert.deepEqual(kernel.log, ["read", "read"], "taken once: the next fresh view reads");

  kernel.log.length = 0;
  engine.warm(true);
  await new Promise((resolve) => setImmediate(resolve)); // its read ends
  t += 5_000; // a pass stuck on Docker: what was read is no longer this pass's
  await engine.view(true);
  assert.deepEqual(kernel.log, ["read", "read"]);
});

test("a warm-up whose read failed leaves the pass to read", async () => {
  const { kernel, impl } = fakeKernel();
  let reads = 0;
  const failing = {
    ...impl,
    read: () => (++reads === 1 ? Promise.reject(new Error("nft: busy")) : impl.read()),
  };
  const engine = new Converger(failing, null, undefined, clock());
  engine.warm(true);
  const view = await engine.view(true);
  assert.equal(view.cached, false);
  assert.equal(reads, 2);
  assert.deepEqual(kernel.log, ["read"]);
});
