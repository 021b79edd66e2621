// The daemon's operations side (src/ops/runtime.ts) with a fake host: what it publishes for
// `status` (whitelisted containers, their ports or why unbound, passes, repairs), and the
// switch of MODE it logs when the rules in force were written in the other mode.
import { test } from "node:test";
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { PassThrough } from "node:stream";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseConfig } from "../../src/config.js";
import type { Host, RunResult, TiedProcess } from "../../src/host/host.js";
import { ruleId } from "../../src/firewall/nftables/table.js";
import { HealthPublisher } from "../../src/ops/health.js";
import { Operations } from "../../src/ops/runtime.js";
import type { Member } from "../../src/model.js";
import { SCENARIOS, rulesetOf } from "./fixtures.js";

/** A host whose nft lists the iptables backend's guard table, written in `mode`. */
function hostWithGuard(mode: "enforce" | "audit" | null): Host {
  const table = "trafficjam-l2_web";
  const ok = (stdout: unknown): RunResult => ({
    stdout: JSON.stringify(stdout),
    stderr: "",
    code: 0,
  });
  const host: Host = {
    netns: null,
    now: Date.now,
    in: () => host,
    run: async (file, args) => {
      if (file !== "nft") throw new Error(`unexpected ${file}`);
      if (args.join(" ") === "-j list tables")
        return ok({ nftables: mode ? [{ table: { family: "bridge", name: table } }] : [] });
      const verdict = mode === "audit" ? "counter accept" : "counter drop";
      return ok({
        nftables: [
          { table: { family: "bridge", name: table } },
          { chain: { table, name: "forged" } },
          { rule: { table, chain: "forged", comment: ruleId(verdict) } },
        ],
      });
    },
  };
  return host;
}

function setup(mode: "enforce" | "audit", kernel: "enforce" | "audit" | null) {
  const dir = mkdtempSync(join(tmpdir(), "tj-ops-"));
  const lines: Array<{ event: string; fields: Record<string, unknown> }> = [];
  const emit = (event: string, _msg: string, fields: Record<string, unknown> = {}) =>
    lines.push({ event, fields });
  const log = { debug: emit, info: emit, warn: emit, error: emit };
  const config = parseConfig({
    NETWORK: "web",
    WHITELIST_FILTER: "name=proxy",
    INSTANCE_ID: "web",
    MODE: mode,
  });
  const health = new HealthPublisher(
    join(dir, "web.json"),
    { instanceId: "web", firewallBackend: "auto", pollIntervalMs: 5000 },
    () => undefined,
  );
  const ops = new Operations(config, log, hostWithGuard(kernel), health);
  return {
    ops,
    health,
    lines,
    done: () => (ops.stop(), health.close(), rmSync(dir, { recursive: true })),
  };
}

const scenario = SCENARIOS.find((s) => s.name === "port-unknown")!;

test("status: each whitelisted container with its port, or why it is unbound; passes and repairs", async () => {
  const { ops, health, done } = setup("enforce", null);
  try {
    await ops.beforeFirstPass();
    const unbound = scenario.snapshot.members.find((m: Member) => m.whitelisted && !m.port)!;
    ops.portUnknown(unbound, "/run/netns/abc is not visible here");
    ops.observed(scenario.snapshot);
    const ruleset = rulesetOf(scenario);
    ops.passed({ ok: true, at: 1, ruleset, location: "iptables-nft", changed: true });
    ops.passed({
      ok: true,
      at: 2,
      ruleset,
      location: "iptables-nft",
      changed: true,
      repaired: true,
    });
    ops.passed({ ok: false, at: 3, error: "boom" });
    const state = health.current.ops!;
    assert.deepEqual(state.passes, { ok: 2, failed: 1 });
    assert.equal(state.repairs, 1);
    assert.deepEqual(
      state.whitelisted.map((w) => [w.name, w.port ?? `unbound: ${w.unbound}`]),
      [
        ["proxy", "veth1a2b3c4"],
        ["proxy3", "unbound: /run/netns/abc is not visible here"],
      ],
    );
    assert.equal(state.attemptLog.groups.forged, ruleset.log!.groups.forged);
    assert.equal(state.metrics, null);
  } finally {
    done();
  }
});

test("MODE: audit said at start; a switch from the mode of the rules in force logged once", async () => {
  for (const [mode, kernel, expected] of [
    ["enforce", "audit", { from: "audit", to: "enforce" }],
    ["audit", "enforce", { from: "enforce", to: "audit" }],
    ["enforce", "enforce", null],
    ["audit", null, null], // no rules in force: nothing switched
  ] as const) {
    const { ops, lines, done } = setup(mode, kernel);
    try {
      await ops.beforeFirstPass();
      assert.equal(
        lines.some((l) => l.event === "mode.audit"),
        mode === "audit",
        `${mode}`,
      );
      const ruleset = rulesetOf({ ...scenario, policy: { log: true, mode } });
      ops.passed({ ok: true, at: 1, ruleset, location: "iptables-nft", changed: true });
      ops.passed({ ok: true, at: 2, ruleset, location: "iptables-nft", changed: false });
      const switched = lines.filter((l) => l.event === "mode.changed").map((l) => l.fields);
      assert.deepEqual(
        switched.map((f) => ({ from: f.from, to: f.to })),
        expected ? [expected] : [],
        `${kernel} → ${mode}`,
      );
    } finally {
      done();
    }
  }
});

test("the blocked-attempt log reads where the rules are: a Swarm overlay's namespace, anew when it is made anew", async () => {
  const started: Array<{ netns: string | null; ended: boolean }> = [];
  const hostIn = (netns: string | null): Host => ({
    netns,
    now: Date.now,
    in: (other) => hostIn(other),
    run: async () => ({ stdout: JSON.stringify({ nftables: [] }), stderr: "", code: 0 }),
    stream: () => {
      const entry = { netns, ended: false };
      started.push(entry);
      const child = Object.assign(new EventEmitter(), {
        stdout: new PassThrough(),
        stderr: new PassThrough(),
        stdin: new PassThrough(),
      });
      child.stdin.on("finish", () => (entry.ended = true));
      return child as unknown as TiedProcess;
    },
  });
  const dir = mkdtempSync(join(tmpdir(), "tj-ops-"));
  const silent = () => undefined;
  const log = { debug: silent, info: silent, warn: silent, error: silent };
  const config = parseConfig({
    NETWORK: "web",
    WHITELIST_FILTER: "name=proxy",
    INSTANCE_ID: "web",
  });
  const health = new HealthPublisher(
    join(dir, "web.json"),
    { instanceId: "web", firewallBackend: "auto", pollIntervalMs: 5000 },
    silent,
  );
  const ops = new Operations(config, log, hostIn(null), health);
  try {
    const base = rulesetOf(scenario);
    const inNs = (netns: string) => ({ ...base, netns });
    ops.passed({
      ok: true,
      at: 1,
      ruleset: inNs("/run/docker/netns/1-aaa"),
      location: "iptables-nft",
      changed: true,
    });
    await ops.started();
    assert.deepEqual(started, [{ netns: "/run/docker/netns/1-aaa", ended: false }]);
    ops.passed({
      ok: true,
      at: 2,
      ruleset: inNs("/run/docker/netns/1-aaa"),
      location: "iptables-nft",
      changed: false,
    });
    assert.equal(started.length, 1, "the same namespace: the same reader");
    ops.passed({
      ok: true,
      at: 3,
      ruleset: inNs("/run/docker/netns/1-bbb"),
      location: "iptables-nft",
      changed: true,
    });
    await new Promise((resolve) => setImmediate(resolve)); // the old reader's stdin ends
    assert.deepEqual(started, [
      { netns: "/run/docker/netns/1-aaa", ended: true },
      { netns: "/run/docker/netns/1-bbb", ended: false },
    ]);
  } finally {
    ops.stop();
    health.close();
    rmSync(dir, { recursive: true });
  }
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.ok(
    started.every((s) => s.ended),
    `stopped with the daemon: ${JSON.stringify(started)}`,
  );
});
