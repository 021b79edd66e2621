// Configuration errors exit 2 before touching anything, and a network that does not exist yet is
// waited for and protected the moment it is created.
import { after, before, describe, it, type TestContext } from "node:test";
import assert from "node:assert/strict";
import {
  iptablesSave,
  nftRuleset,
  runCli,
  startDaemon,
  startLab,
  type DaemonProcess,
  type Lab,
  type LogEntry,
} from "./lab/index.js";
import {
  PROXY_LABEL,
  WHITELIST_FILTER,
  eventually,
  expectAll,
  isApplied,
  watchOutput,
} from "./topology.js";

/** An existing network: a daemon that ignored a configuration error would install rules for it. */
const PRESENT = "present";
const VALID: Record<string, string> = {
  NETWORK: PRESENT,
  WHITELIST_FILTER,
  INSTANCE_ID: "cfg",
  POLL_INTERVAL: "1",
};
const CLI_TIMEOUT_MS = 10_000;

/** Every firewall view of the lab host, without comments and counters. */
async function firewallState(lab: Lab): Promise<string> {
  const dumps = await Promise.all([
    iptablesSave(lab, 4, "nft"),
    iptablesSave(lab, 6, "nft"),
    iptablesSave(lab, 4, "legacy"),
    iptablesSave(lab, 6, "legacy"),
    nftRuleset(lab),
  ]);
  return dumps
    .map((dump) =>
      dump
        .split("\n")
        .filter((line) => line.trim() !== "" && !line.trim().startsWith("#"))
        .map((line) =>
          line
            .replace(/\[\d+:\d+\]/g, "[0:0]")
            .replace(/packets \d+ bytes \d+/g, "packets 0 bytes 0"),
        )
        .join("\n"),
    )
    .join("\n----\n");
}

/** VALID with some variables replaced (string) or removed (null). */
function envWith(changes: Record<string, string | null>): Record<string, string> {
  const env: Record<string, string> = { ...VALID };
  for (const [k, v] of Object.entries(changes)) {
    if (v === null) delete env[k];
    else env[k] = v;
  }
  return env;
}

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
const problemLines = (stderr: string) =>
  stderr.split("\n").filter((l) => l.startsWith("trafficjam: configuration error: "));

interface BadCase {
  title: string;
  changes: Record<string, string | null>;
  args?: string[];
  /** The variables the stderr lines must name, in order. */
  named: string[];
}

const BAD: BadCase[] = [
  { title: "NETWORK missing", changes: { NETWORK: null }, named: ["NETWORK"] },
  { title: "NETWORK empty", changes: { NETWORK: "" }, named: ["NETWORK"] },
  {
    title: "WHITELIST_FILTER without key=",
    changes: { WHITELIST_FILTER: "traefik" },
    named: ["WHITELIST_FILTER"],
  },
  {
    title: "WHITELIST_FILTER with an unknown key",
    changes: { WHITELIST_FILTER: "colour=red" },
    named: ["WHITELIST_FILTER"],
  },
  { title: "INSTANCE_ID with a dash", changes: { INSTANCE_ID: "bad-id" }, named: ["INSTANCE_ID"] },
  {
    title: "INSTANCE_ID of 25 characters",
    changes: { INSTANCE_ID: "a".repeat(25) },
    named: ["INSTANCE_ID"],
  },
  { title: "POLL_INTERVAL 0", changes: { POLL_INTERVAL: "0" }, named: ["POLL_INTERVAL"] },
  { title: "POLL_INTERVAL abc", changes: { POLL_INTERVAL: "abc" }, named: ["POLL_INTERVAL"] },
  {
    title: "ALLOW_HOST_TRAFFIC maybe",
    changes: { ALLOW_HOST_TRAFFIC: "maybe" },
    named: ["ALLOW_HOST_TRAFFIC"],
  },
  { title: "DEBUG 2", changes: { DEBUG: "2" }, named: ["DEBUG"] },
  { title: "TZ Mars/Base", changes: { TZ: "Mars/Base" }, named: ["TZ"] },
  {
    title: "SWARM_DAEMON sometimes",
    changes: { SWARM_DAEMON: "sometimes" },
    named: ["SWARM_DAEMON"],
  },
  {
    title: "FIREWALL_BACKEND pf",
    changes: { FIREWALL_BACKEND: "pf" },
    named: ["FIREWALL_BACKEND"],
  },
  { title: "MODE dry-run", changes: { MODE: "dry-run" }, named: ["MODE"] },
  {
    title: "METRICS_ADDRESS without a port",
    changes: { METRICS_ADDRESS: "127.0.0.1" },
    named: ["METRICS_ADDRESS"],
  },
  {
    title: "plan with MODE dry-run",
    changes: { MODE: "dry-run" },
    args: ["plan"],
    named: ["MODE"],
  },
  {
    title: "two bad variables: one line each",
    changes: { POLL_INTERVAL: "abc", DEBUG: "2" },
    named: ["POLL_INTERVAL", "DEBUG"],
  },
  {
    title: "--clear with a bad INSTANCE_ID",
    changes: { INSTANCE_ID: "bad-id" },
    args: ["--clear"],
    named: ["INSTANCE_ID"],
  },
];

describe("configuration", () => {
  let lab: Lab;
  const daemons: DaemonProcess[] = [];

  before(async () => {
    lab = await startLab({ name: "cfg" });
    await lab.createNetwork(PRESENT, { subnets: ["172.44.0.0/24"] });
  });
  after(async () => {
    for (const d of daemons) await d.kill().catch(() => undefined);
    await lab?.stop();
  });

  /** The firewall as it was after the previous refused run (taken fresh by the first one). */
  let baseline: string | undefined;

  /** Runs the CLI and asserts exit 2 with the firewall untouched; returns the result. */
  async function expectRefused(env: Record<string, string>, args: string[] = []) {
    const before = (baseline ??= await firewallState(lab));
    baseline = undefined; // taken afresh by the next case if this one throws
    const r = await runCli(lab, env, args, CLI_TIMEOUT_MS);
    baseline = await firewallState(lab);
    assert.deepEqual(
      { code: r.code, signal: r.signal },
      { code: 2, signal: null },
      `exit status\nstdout: ${r.stdout}\nstderr: ${r.stderr}`,
    );
    assert.equal(r.stdout, "", "nothing is logged before the configuration is valid");
    assert.equal(baseline, before, "the firewall changed");
    return r;
  }

  for (const c of BAD) {
    it(`${c.title} → exit 2, a line naming it, firewall unchanged`, async () => {
      const env = envWith(c.changes);
      const r = await expectRefused(env, c.args);
      const lines = problemLines(r.stderr);
      assert.equal(lines.length, c.named.length, `one line per bad variable:\n${r.stderr}`);
      c.named.forEach((variable, i) => {
        const value = env[variable];
        const shown = value === undefined ? "unset" : JSON.stringify(value);
        // A missing variable is "required"; a bad value says what is expected.
        const what = value === undefined || value === "" ? "(is required|expected)" : "expected";
        assert.match(
          lines[i] ?? "",
          new RegExp(
            `^trafficjam: configuration error: ${escapeRe(variable)}=${escapeRe(shown)}: ${what}\\b.*\\S`,
          ),
        );
      });
    });
  }

  it("an unknown command-line argument → exit 2, firewall unchanged", async () => {
    const r = await expectRefused(VALID, ["--bogus"]);
    assert.match(r.stderr, /unknown argument --bogus/);
  });

  it("SWARM_DAEMON=true on an engine that is no Swarm manager → exit 2, said, firewall unchanged", async () => {
    const before = (baseline ??= await firewallState(lab));
    baseline = undefined;
    const r = await runCli(lab, envWith({ SWARM_DAEMON: "true" }), [], CLI_TIMEOUT_MS);
    baseline = await firewallState(lab);
    assert.deepEqual({ code: r.code, signal: r.signal }, { code: 2, signal: null }, r.stderr);
    const events = r.stdout
      .split("\n")
      .filter(Boolean)
      .map((l) => (JSON.parse(l) as { event: string }).event);
    assert.ok(events.includes("swarm.not-manager"), r.stdout);
    assert.equal(baseline, before, "the firewall changed");
  });

  it("bridged traffic hidden from netfilter is switched back on at startup, and logged", async () => {
    const sysctl = "net.bridge.bridge-nf-call-iptables";
    await lab.nsExec(["sysctl", "-qw", `${sysctl}=0`]);
    try {
      const daemon = startDaemon(lab, { ...VALID, INSTANCE_ID: "brnf" });
      daemons.push(daemon);
      const entry = await daemon.waitForLog((e) => e.event === "host.sysctls.enabled", 10_000);
      assert.deepEqual(entry.sysctls, ["bridge-nf-call-iptables"]);
      assert.equal((await lab.nsExec(["sysctl", "-n", sysctl])).trim(), "1");
      await daemon.waitForLog(isApplied, 10_000);
      daemon.signal("SIGUSR1");
      assert.deepEqual(await daemon.waitExit(10_000), { code: 0, signal: null });
    } finally {
      await lab.nsExec(["sysctl", "-qw", `${sysctl}=1`]);
    }
  });

  it("a missing network is waited for and protected the moment it is created", async (t: TestContext) => {
    const NET = "late";
    const daemon = startDaemon(lab, {
      NETWORK: NET,
      WHITELIST_FILTER,
      INSTANCE_ID: "late",
      POLL_INTERVAL: "1",
      DEBUG: "true", // "rules.verified" of each resync is a debug line: counted below
    });
    daemons.push(daemon);
    const isWaiting = (e: LogEntry) => e.event === "network.missing";
    const waiting = await daemon.waitForLog(isWaiting, 15_000);
    assert.equal(waiting.network, NET, JSON.stringify(waiting));
    assert.equal(waiting.level, "warn", JSON.stringify(waiting));

    // Several resyncs later: still running, and it said so once, not at every resync.
    const resynced = (e: LogEntry) => e.event === "rules.verified" && e.reason === "resync";
    let from = daemon.mark();
    for (let i = 0; i < 2; i++) {
      await daemon.waitForLog(resynced, 5_000, from);
      from = daemon.mark();
    }
    assert.ok(daemon.running, `the daemon exited:\n${daemon.output()}`);
    assert.equal(daemon.entries().filter(isWaiting).length, 1, daemon.output());

    const mark = daemon.mark();
    const stamp = (p: Promise<LogEntry>) => {
      const stamped = p.then((entry) => ({ entry, at: Date.now() }));
      stamped.catch(() => undefined); // awaited below; no unhandled rejection if we fail first
      return stamped;
    };
    const appeared = stamp(daemon.waitForLog((e) => e.event === "network.appeared", 20_000, mark));
    const applied = stamp(
      daemon.waitForLog(
        (e) => isApplied(e) && Array.isArray(e.subnets) && e.subnets.includes("172.45.0.0/24"),
        20_000,
        mark,
      ),
    );
    const t0 = Date.now();
    await lab.createNetwork(NET, { subnets: ["172.45.0.0/24"] });
    const created = Date.now();
    const [proxy, b1, b2] = await Promise.all([
      lab.run({ name: "late-proxy", network: NET, ip: "172.45.0.10", labels: PROXY_LABEL }),
      lab.run({ name: "late-b1", network: NET, ip: "172.45.0.21" }),
      lab.run({ name: "late-b2", network: NET, ip: "172.45.0.22" }),
    ]);
    const started = Date.now();
    // A backend probing b1 from its very first packet: nothing may ever get through.
    const watcher = await lab.run({
      name: "late-w",
      network: NET,
      ip: "172.45.0.23",
      cmd: ["tjprobe", "watch", b1.ipv4, "80", "20", "50"],
    });
    await expectAll(
      [
        ["b1→b2 tcp", () => lab.tcp(b1, b2.ipv4, 80, 500)],
        ["b2→b1 tcp", () => lab.tcp(b2, b1.ipv4, 80, 500)],
        ["b2→b1 udp", () => lab.udp(b2, b1.ipv4, 9000, 500)],
        ["b1→proxy tcp", () => lab.tcp(b1, proxy.ipv4, 80, 500)],
      ],
      false,
    );
    const isolated = Date.now();
    const proxyMs = await eventually(
      "the proxy to reach both backends",
      async () =>
        (await lab.tcp(proxy, b1.ipv4, 80, 500)) && (await lab.tcp(proxy, b2.ipv4, 80, 500)),
      true,
      10_000,
    );
    assert.match(await watchOutput(lab, watcher, 10_000), /summary ok=0 fail=50/);

    const a = await appeared;
    const p = await applied;
    const figures = {
      createMs: created - t0,
      appearedFromCreateMs: a.at - t0,
      appliedFromCreateMs: p.at - t0,
      eventToEnforcedMs: p.entry.eventToEnforcedMs,
      appliedBy: `${String(p.entry.reason)}: ${String(p.entry.event)}`,
      containersStartMs: started - created,
      isolationVerifiedFromCreateMs: isolated - t0,
      proxyReachWaitMs: proxyMs,
    };
    t.diagnostic(`missing network timings: ${JSON.stringify(figures)}`);
    // Docker's create event drives it (a resync in flight may catch the network first): the
    // rules are in within a couple of resync periods of the network existing at worst (about
    // 100-300 ms on an idle machine), and before Docker has finished starting the containers,
    // which were isolated from their first probe (no waiting above) and the watcher's first packet.
    assert.ok(p.at - created < 3000, `rules applied ${p.at - created} ms after the network exists`);
    assert.ok(p.at <= started, "rules applied only after the containers had started");
    assert.ok(daemon.running);
  });
});
