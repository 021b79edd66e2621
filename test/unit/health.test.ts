import { spawnSync } from "node:child_process";
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, existsSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  HealthPublisher,
  assessHealth,
  parseState,
  processStartTime,
  stateDir,
  statePath,
  writerAlive,
  type HealthState,
} from "../../src/ops/health.js";
import { computeRuleset } from "../../src/policy.js";
import { SCENARIOS } from "./fixtures.js";
import { silentLog } from "../../src/log.js";
import { Reconciler, type PassOutcome } from "../../src/reconciler.js";

const ruleset = computeRuleset(SCENARIOS[0]!.snapshot, {
  instanceId: "web",
  allowHostTraffic: false,
});
const NOW = 1_000_000;

function state(overrides: Partial<HealthState> = {}): HealthState {
  return {
    version: 3,
    pid: 42,
    pidStartTime: "1",
    instanceId: "web",
    firewallBackend: "auto",
    pollIntervalMs: 5000,
    lastPass: { ok: true, at: NOW - 1000 },
    lastSuccessAt: NOW - 1000,
    location: "iptables-nft",
    ruleset,
    problems: [],
    ...overrides,
  };
}

test("healthy: alive, the last pass verified the rules, recently (nothing read from the kernel)", () => {
  const v = assessHealth(state(), NOW, true);
  assert.equal(v.healthy, true, v.reason);
  assert.equal(
    v.reason,
    "rules in force in iptables-nft (verified by the daemon), last reconcile 1.0 s ago, mode enforce",
  );
});

test("a deep check that finds the kernel matching says so; one that finds differences names them", () => {
  const v = assessHealth(state(), NOW, true, []);
  assert.equal(v.healthy, true, v.reason);
  assert.match(v.reason, /\(read back now\)/);
});

test("unhealthy when the last pass failed, even with a recent success before it", () => {
  const v = assessHealth(
    state({
      lastPass: { ok: false, at: NOW, error: "rules in iptables-nft still differ after applying" },
    }),
    NOW,
    true,
  );
  assert.equal(v.healthy, false);
  assert.match(
    v.reason,
    /the last reconcile failed \(last success 1\.0 s ago\): rules in iptables-nft still differ/,
  );
});

test("a network that does not exist yet is nothing to protect; one that is not a bridge network is unhealthy", () => {
  const missing = computeRuleset(null, { instanceId: "web", allowHostTraffic: false });
  const waiting = assessHealth(state({ ruleset: missing }), NOW, true);
  assert.equal(waiting.healthy, true, waiting.reason);
  assert.match(waiting.reason, /does not exist yet: nothing to protect/);
  const bridgeless = computeRuleset(SCENARIOS.find((s) => s.name === "no-bridge")!.snapshot, {
    instanceId: "web",
    allowHostTraffic: false,
  });
  const v = assessHealth(state({ ruleset: bridgeless }), NOW, true);
  assert.equal(v.healthy, false);
  assert.match(v.reason, /network web has no Linux bridge/);
});

test("unhealthy when the daemon is gone", () => {
  const v = assessHealth(state(), NOW, false, []);
  assert.equal(v.healthy, false);
  assert.match(v.reason, /pid 42.*not running/);
});

test("unhealthy before the first successful pass, with the last error", () => {
  const v = assessHealth(
    state({ lastSuccessAt: null, ruleset: null, lastPass: { ok: false, at: NOW, error: "boom" } }),
    NOW,
    true,
    [],
  );
  assert.equal(v.healthy, false);
  assert.match(v.reason, /no successful reconcile yet: boom/);
});

test("the limit is 3 × POLL_INTERVAL, inclusive", () => {
  assert.equal(assessHealth(state({ lastSuccessAt: NOW - 15_000 }), NOW, true, []).healthy, true);
  const v = assessHealth(
    state({ lastSuccessAt: NOW - 15_001, lastPass: { ok: false, at: NOW, error: "docker down" } }),
    NOW,
    true,
    [],
  );
  assert.equal(v.healthy, false);
  assert.match(v.reason, /15\.0 s ago \(limit 15 s = 3 × POLL_INTERVAL\); last error: docker down/);
});

test("unhealthy when the kernel differs, naming the differences", () => {
  const v = assessHealth(state(), NOW, true, ["IPv4 TJF_web: rule missing"]);
  assert.equal(v.healthy, false);
  assert.match(v.reason, /differ.*TJF_web: rule missing/);
});

test("state location: default /run/trafficjam, override, keyed by instance and netns", () => {
  assert.equal(stateDir({}), "/run/trafficjam");
  assert.equal(stateDir({ TRAFFICJAM_STATE_DIR: " " }), "/run/trafficjam");
  assert.equal(stateDir({ TRAFFICJAM_STATE_DIR: "/x" }), "/x");
  assert.equal(statePath("/x", "web", "net4026531840"), "/x/web.net4026531840.json");
  assert.match(statePath("/x", "web"), /^\/x\/web\.net\d+\.json$/);
});

test("writerAlive: this process is alive; a wrong start time or a dead pid is not", () => {
  const start = processStartTime(process.pid);
  assert.ok(start);
  assert.equal(writerAlive({ pid: process.pid, pidStartTime: start }), true);
  assert.equal(writerAlive({ pid: process.pid, pidStartTime: "0" }), false);
  assert.equal(writerAlive({ pid: 2 ** 22 + 1, pidStartTime: null }), false);
});

test("HealthPublisher writes atomically, keeps the last success across a failure, removes on close", () => {
  const dir = mkdtempSync(join(tmpdir(), "tj-health-"));
  try {
    const path = join(dir, "sub", "web.net1.json");
    const errors: Error[] = [];
    const pub = new HealthPublisher(
      path,
      { instanceId: "web", firewallBackend: "iptables", pollIntervalMs: 1000 },
      (e) => errors.push(e),
    );
    pub.record({ ok: true, at: 10, ruleset, location: "nftables" });
    pub.record({ ok: false, at: 20, error: "docker down" });
    const s = parseState(readFileSync(path, "utf8"));
    assert.equal(s.pid, process.pid);
    assert.equal(s.lastSuccessAt, 10);
    assert.equal(s.location, "nftables");
    assert.deepEqual(s.lastPass, { ok: false, at: 20, error: "docker down" });
    assert.deepEqual(s.ruleset, ruleset);
    // The state and the image's verdict; no temp file left.
    assert.deepEqual(readdirSync(join(dir, "sub")).sort(), ["web.net1.json", "web.net1.verdict"]);
    pub.close();
    pub.record({ ok: true, at: 30, ruleset });
    assert.equal(existsSync(path), false);
    assert.equal(existsSync(join(dir, "sub", "web.net1.verdict")), false);
    assert.deepEqual(errors, []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("parseState rejects other files", () => {
  assert.throws(() => parseState("{}"), /not a TrafficJam state file/);
  assert.throws(() => parseState("nope"));
});

test("the reconciler reports every pass to onPass: the ruleset on success, the error on failure", async () => {
  const outcomes: PassOutcome[] = [];
  let calls = 0;
  const reconciler = new Reconciler({
    instanceId: "web",
    networkRef: "web",
    allowHostTraffic: false,
    pollIntervalMs: 60_000,
    log: silentLog,
    flows: { deleteFrom: async () => 0, sweep: async () => ({ pairs: [], flows: 0 }) },
    backend: {
      sync: async () => ({ changed: false, differences: [], location: "fake", revoked: [] }),
      clear: async () => ({ changed: false, differences: [], location: "fake", revoked: [] }),
      check: async () => ({ location: "fake", differences: [] }),
    },
    observe: async () => {
      if (calls++ === 1) throw new Error("docker down");
      return SCENARIOS[0]!.snapshot;
    },
    onPass: (o) => outcomes.push(o),
  });
  assert.equal(await reconciler.runOnce("startup"), true);
  assert.equal(await reconciler.runOnce("resync"), false);
  await reconciler.stop();
  assert.equal(outcomes.length, 2);
  assert.equal(outcomes[0]!.ok, true);
  assert.deepEqual(outcomes[0]!.ruleset, ruleset);
  assert.equal(outcomes[1]!.ok, false);
  assert.equal(outcomes[1]!.error, "docker down");
});

test("the image's shell check (image/healthcheck.sh) says what the daemon's verdict says, and that it is stale", () => {
  const dir = mkdtempSync(join(tmpdir(), "tj-health-sh-"));
  const script = new URL("../../image/healthcheck.sh", import.meta.url).pathname;
  const check = () =>
    spawnSync("sh", [script], {
      env: { PATH: process.env.PATH, INSTANCE_ID: "web", TRAFFICJAM_STATE_DIR: dir },
      encoding: "utf8",
    });
  try {
    const missing = check();
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /^unhealthy: state file .*web\.net\d+\.json: missing/);
    const pub = new HealthPublisher(
      statePath(dir, "web"),
      { instanceId: "web", firewallBackend: "auto", pollIntervalMs: 60_000 },
      () => undefined,
    );
    pub.record({ ok: true, at: Date.now(), ruleset, location: "iptables-nft" });
    const ok = check();
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(
      ok.stdout,
      /^healthy: rules in force in iptables-nft.*last reconcile at \d{4}-\d\d-\d\dT/,
    );
    pub.record({ ok: false, at: Date.now(), error: "docker down" });
    const failed = check();
    assert.equal(failed.status, 1);
    assert.match(failed.stderr, /^unhealthy: the last reconcile failed .*docker down/);
    // A success older than 3 × POLL_INTERVAL: the verdict went stale, whatever it said.
    pub.record({ ok: true, at: Date.now() - 200_000, ruleset, location: "iptables-nft" });
    const stale = check();
    assert.equal(stale.status, 1);
    assert.match(stale.stderr, /^unhealthy: no successful reconcile within 3 × POLL_INTERVAL/);
    pub.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
