// Backend switches on a running host, with a backend probing another without pause throughout:
// no connection may get through at any moment, and no rule of the old backend may be left.
//   1. auto, Docker without iptables → nftables; dockerd restarted with iptables on → auto moves
//      to iptables by itself (new rules in force before the old table goes);
//   2. the daemon restarted with FIREWALL_BACKEND=nftables takes over from its iptables rules;
//   3. Docker's chains removed by hand → auto follows to nftables.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  iptablesRules,
  nftRuleset,
  type Container,
  type DaemonProcess,
  type Lab,
  type LogEntry,
  startLab,
} from "./lab/index.js";
import {
  buildTopology,
  eventually,
  expectAll,
  startTrafficJam,
  type Topology,
} from "./topology.js";
import { firewallLeftovers } from "./isolation-suite.js";

/** The backend chosen, as logged (event backend.chosen). */
const chose = (kind: string) => (e: LogEntry) => e.event === "backend.chosen" && e.kind === kind;

describe("backend switch on a running host", () => {
  let lab: Lab;
  let t: Topology;
  let daemon: DaemonProcess;
  let watcher: Container;

  /** Attempts and successes of the watcher (b2 → b1:80 every 20 ms) so far. */
  async function watcherCounts(): Promise<{ attempts: number; ok: number }> {
    const lines = (await lab.docker("logs", watcher.name)).split("\n");
    return {
      attempts: lines.filter((l) => /^(ok|fail)/.test(l)).length,
      ok: lines.filter((l) => l.startsWith("ok")).length,
    };
  }

  async function ourIptablesRules(): Promise<string[]> {
    const lines = [
      ...(await iptablesRules(lab, 4, undefined, { flavour: "nft" })),
      ...(await iptablesRules(lab, 6, undefined, { flavour: "nft" })),
    ];
    return lines.filter((l) => /TRAFFICJAM|TJF_|TJI_/.test(l));
  }

  const hasNftTable = async () => /trafficjam_web/.test(await nftRuleset(lab));

  async function assertIsolated(when: string): Promise<void> {
    const [b1, b2, b3] = t.backends;
    await expectAll([[`proxy→b1 ${when}`, () => lab.tcp(t.proxy, b1.ipv4, 80)]], true);
    await expectAll(
      [
        [`b3→b1 ${when}`, () => lab.tcp(b3, b1.ipv4, 80, 500)],
        [`b1→b2 ${when}`, () => lab.tcp(b1, b2.ipv4, 80, 500)],
      ],
      false,
    );
  }

  before(async () => {
    lab = await startLab({ name: "switch", daemonJson: { iptables: false } });
    t = await buildTopology(lab);
    daemon = await startTrafficJam(lab, t.net);
    watcher = await lab.run({
      name: "web-watcher",
      network: t.net,
      ip: "172.28.0.40",
      // Restarted by Docker with dockerd, its log spans both runs; SIGKILL so it stops at once.
      restart: "always",
      args: ["--stop-signal", "SIGKILL"],
      cmd: ["tjprobe", "watch", t.backends[0].ipv4, "80", "20", "100000", "100"],
    });
  });
  after(async () => {
    daemon?.kill();
    await lab?.stop();
  });

  it("auto starts on nftables where Docker has no iptables rules", async () => {
    await daemon.waitForLog(chose("nftables"), 1000);
    assert.ok(await hasNftTable());
    await assertIsolated("on nftables");
  });

  it("dockerd restarted with iptables on: auto moves to iptables, nothing leaks, nothing is left", async (tc) => {
    const mark = daemon.mark();
    const before = await watcherCounts();
    await lab.restartDockerd({ iptables: true });
    // The topology has no restart policy: start it again, at the same addresses.
    await lab.docker("start", t.proxy.name, ...t.backends.map((b) => b.name));
    const moved = await daemon.waitForLog(chose("iptables"), 10_000, mark);
    const applied = await daemon.waitForLog(
      (e) => e.event === "rules.applied" && e.location === "iptables-nft",
      5000,
      mark,
    );
    assert.ok(
      (applied.differences as string[]).some((d) =>
        /nftables: table inet trafficjam_web removed/.test(d),
      ),
      daemon.output(20),
    );
    assert.equal(await hasNftTable(), false, "the nftables table must be gone");
    assert.notDeepEqual(await ourIptablesRules(), []);
    await assertIsolated("on iptables");
    // The watcher is down while dockerd restarts: let it probe a while on the new backend too.
    await eventually(
      "the watcher to have probed 20 more times",
      async () => (await watcherCounts()).attempts - before.attempts > 20,
      true,
      10_000,
    );
    const after = await watcherCounts();
    tc.diagnostic(
      `switch logged: ${String(moved.reason)}; watcher attempts during it: ${after.attempts - before.attempts}, successes: ${after.ok}`,
    );
    assert.equal(after.ok, 0);
  });

  it("restarted with FIREWALL_BACKEND=nftables, the daemon takes over from its iptables rules", async (tc) => {
    daemon.signal("SIGTERM");
    assert.deepEqual(await daemon.waitExit(10_000), { code: 0, signal: null });
    const before = await watcherCounts();
    daemon = await startTrafficJam(lab, t.net, { FIREWALL_BACKEND: "nftables" });
    await daemon.waitForLog(chose("nftables"), 1000);
    assert.ok(await hasNftTable());
    assert.deepEqual(await ourIptablesRules(), []);
    await assertIsolated("after the takeover");
    const after = await watcherCounts();
    tc.diagnostic(
      `watcher attempts during it: ${after.attempts - before.attempts}, successes: ${after.ok}`,
    );
    assert.equal(after.ok, 0);
  });

  it("back on auto it returns to iptables; with Docker's chains removed by hand it follows to nftables", async () => {
    daemon.signal("SIGTERM");
    assert.deepEqual(await daemon.waitExit(10_000), { code: 0, signal: null });
    daemon = await startTrafficJam(lab, t.net);
    await daemon.waitForLog(chose("iptables"), 1000);
    assert.equal(await hasNftTable(), false);
    assert.notDeepEqual(await ourIptablesRules(), []);
    await assertIsolated("back on iptables");

    // As if Docker had moved to its nftables firewall: no DOCKER-USER anywhere any more.
    const mark = daemon.mark();
    await lab.nsExec(["iptables", "-F", "FORWARD"]);
    await lab.nsExec(["iptables", "-F", "DOCKER-USER"]);
    await lab.nsExec(["iptables", "-X", "DOCKER-USER"]);
    await daemon.waitForLog(chose("nftables"), 5000, mark);
    await daemon.waitForLog(
      (e) => e.event === "rules.applied" && e.location === "nftables",
      5000,
      mark,
    );
    assert.ok(await hasNftTable());
    assert.deepEqual(await ourIptablesRules(), []);
    await assertIsolated("after Docker's chains went");
  });

  it("SIGUSR1 leaves nothing in any backend", async () => {
    daemon.signal("SIGUSR1");
    assert.deepEqual(await daemon.waitExit(10_000), { code: 0, signal: null });
    assert.deepEqual(await firewallLeftovers(lab), []);
  });
});
