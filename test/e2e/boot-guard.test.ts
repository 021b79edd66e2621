// The reboot window and the opt-in boot guard (docs/operations.md#the-boot-guard), with packets.
// A reboot is simulated in the lab (lab/reboot.ts: dockerd stopped with its containers, the
// kernel's rules, flows and bridges forgotten, dockerd started again, so containers with a
// restart policy start as at boot), with TrafficJam down from before the reboot until the test
// starts it again. A backend probes another one without pause all along (restart always: its log
// spans the boots).
// - control, without the guard: the pair connects before TrafficJam is back (the window exists,
//   so the guarded run proves something);
// - with the guard loaded as its unit loads it, before dockerd: the pair never connects, neither
//   before TrafficJam is back nor after; the proxy cannot reach a backend before TrafficJam's
//   first pass (the trade-off: an outage) and can after it;
// - `--clear` and SIGUSR1 remove the guard's table and its saved ruleset.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import {
  runCli,
  startDaemon,
  startLab,
  waitFor,
  type Container,
  type DaemonProcess,
  type Lab,
  type LogEntry,
} from "./lab/index.js";
import { simulateReboot } from "./lab/reboot.js";
import { PROXY_LABEL, WHITELIST_FILTER, eventually, isInForce } from "./topology.js";
import {
  SYSCTL_COMMAND,
  bootGuardFile,
  bootGuardTable,
  loadCommand,
} from "../../src/ops/boot-guard.js";

const NET = "bootnet";
const INSTANCE = "bootg";
/** How long the test keeps TrafficJam down after dockerd is back: the window it leaves open. */
const DOWN_AFTER_BOOT_MS = 3000;

const hasEvent = (event: string) => (e: LogEntry) => e.event === event;

describe("boot guard: a reboot, with and without the guard", () => {
  let lab: Lab;
  let guardDir: string;
  let proxy: Container;
  let b1: Container;
  let b2: Container;
  let daemon: DaemonProcess | undefined;

  const env = () => ({
    NETWORK: NET,
    WHITELIST_FILTER,
    INSTANCE_ID: INSTANCE,
    POLL_INTERVAL: "1",
    BOOT_GUARD: "true",
    TRAFFICJAM_BOOT_GUARD_DIR: guardDir,
  });
  const startTrafficJam = async (): Promise<DaemonProcess> => {
    daemon = startDaemon(lab, env());
    await daemon.waitForLog(isInForce, 20_000);
    return daemon;
  };
  const stopTrafficJam = async (): Promise<void> => {
    if (!daemon?.running) return;
    daemon.signal("SIGTERM");
    assert.deepEqual(await daemon.waitExit(10_000), { code: 0, signal: null });
  };
  /** The watcher's "ok"/"fail" lines since its last start (its log spans the boots). */
  const watcherThisBoot = async (): Promise<string[]> => {
    const lines = (await lab.docker("logs", "boot-watcher")).split("\n");
    const start = lines.lastIndexOf("boot");
    return lines.slice(start + 1).filter((l) => /^(ok|fail)/.test(l));
  };
  const guardTables = async () =>
    (await lab.nsExec(["nft", "list", "tables"]))
      .split("\n")
      .filter((l) => l.includes(bootGuardTable(INSTANCE)));

  before(async () => {
    lab = await startLab({ name: "bootg" });
    guardDir = join(lab.paths.base, "boot-guard"); // removed with the lab
    mkdirSync(guardDir);
    await lab.createNetwork(NET, { subnets: ["172.30.0.0/24"] });
    const always = { network: NET, restart: "always" };
    // fixed addresses: Docker hands addresses out again in its own order when it restarts them
    proxy = await lab.run({
      name: "boot-proxy",
      ip: "172.30.0.10",
      labels: PROXY_LABEL,
      ...always,
    });
    b1 = await lab.run({ name: "boot-b1", ip: "172.30.0.11", ...always });
    b2 = await lab.run({ name: "boot-b2", ip: "172.30.0.12", ...always });
    await lab.run({
      name: "boot-watcher",
      ip: "172.30.0.20",
      ...always,
      // SIGKILL: dockerd's shutdown does not wait for it
      args: ["--stop-signal", "SIGKILL"],
      cmd: ["sh", "-c", `echo boot; exec tjprobe watch ${b2.ipv4} 80 100 1000000 100`],
    });
  });
  after(async () => {
    await lab?.stop();
  });

  it("BOOT_GUARD=true saves the network's bridge for the next boot", async () => {
    const d = await startTrafficJam();
    const saved = await d.waitForLog(hasEvent("boot.guard.saved"), 10_000);
    const { bridge } = await lab.inspectNetwork(NET);
    assert.equal(saved.bridge, bridge);
    const text = readFileSync(bootGuardFile(guardDir, INSTANCE), "utf8");
    assert.match(text, new RegExp(`iifname "${bridge}" drop`));
    // no guard was loaded: nothing to open
    assert.equal(d.entries().filter(hasEvent("boot.guard.opened")).length, 0);
  });

  it("without the guard: after a reboot a backend pair connects before TrafficJam is back", async (tc) => {
    await stopTrafficJam();
    const times = await simulateReboot(lab);
    const exposed = await eventually(
      "the watcher to reach b2 while TrafficJam is down",
      async () => (await watcherThisBoot()).includes("ok"),
      true,
      15_000,
    );
    tc.diagnostic(
      `dockerd answered ${times.dockerReady - times.dockerStarting} ms after it started; the watcher reached b2 ${exposed} ms later`,
    );
    await startTrafficJam();
    await eventually("b1 to lose b2 again", () => lab.tcp(b1, b2.ipv4, 80, 300), false, 5_000);
  });

  it("with the guard: the pair never connects; the proxy gets through after TrafficJam's first pass only", async (tc) => {
    await stopTrafficJam();
    const { bridge } = await lab.inspectNetwork(NET);
    const times = await simulateReboot(lab, async () => {
      // what trafficjam-boot-guard.service runs (its ExecStartPre=-modprobe aside: a module
      // load is the host's business, not a test's), before dockerd
      await lab.nsExec(SYSCTL_COMMAND);
      await lab.nsExec(loadCommand(guardDir));
    });
    assert.equal((await lab.inspectNetwork(NET)).bridge, bridge, "same bridge after the reboot");
    assert.equal((await guardTables()).length, 1, "the guard is loaded");
    // TrafficJam down: the watcher makes its attempts, and the proxy reaches nobody (the outage)
    await waitFor(async () => (await watcherThisBoot()).length >= 20, {
      timeoutMs: 15_000,
      what: "20 attempts of the watcher after the reboot",
    });
    assert.equal(await lab.tcp(proxy, b1.ipv4, 80, 500), false, "closed: the proxy too");
    const rest = DOWN_AFTER_BOOT_MS - (Date.now() - times.dockerReady);
    if (rest > 0) await new Promise((r) => setTimeout(r, rest));
    const beforeTj = await watcherThisBoot();

    const d = await startTrafficJam();
    await d.waitForLog(hasEvent("boot.guard.opened"), 10_000);
    const entries = d.entries();
    const firstPass = entries.findIndex(isInForce);
    const openedAt = entries.findIndex(hasEvent("boot.guard.opened"));
    assert.ok(firstPass >= 0 && firstPass < openedAt, "opened after the first pass");
    const reachedMs = await eventually(
      "the proxy to reach b1 once the guard is open",
      () => lab.tcp(proxy, b1.ipv4, 80, 300),
      true,
      5_000,
    );
    assert.deepEqual(await guardTables(), []);
    // the pair, all along this boot: before TrafficJam, during its start, after it
    await new Promise((r) => setTimeout(r, 1000));
    const all = await watcherThisBoot();
    tc.diagnostic(
      `watcher this boot: ${beforeTj.length} attempts before TrafficJam started, ${all.length} in all, ${all.filter((l) => l === "ok").length} connected; proxy→b1 connected ${reachedMs} ms after boot.guard.opened was awaited`,
    );
    assert.equal(all.filter((l) => l === "ok").length, 0, all.join("\n"));
    assert.ok(all.length > beforeTj.length, "the watcher kept probing after TrafficJam started");
  });

  it("--clear removes the guard's table and its saved ruleset; SIGUSR1 too", async () => {
    // SIGUSR1: the running daemon (it saved the ruleset again at its first pass)
    const d = daemon;
    assert.ok(d?.running);
    const file = bootGuardFile(guardDir, INSTANCE);
    assert.ok(existsSync(file));
    await lab.nsExec(loadCommand(guardDir)); // as if booted again, for the clear to find it
    d.signal("SIGUSR1");
    assert.deepEqual(await d.waitExit(15_000), { code: 0, signal: null });
    const removed = d.entries().find(hasEvent("boot.guard.removed"));
    assert.deepEqual(removed?.removed, [`table inet ${bootGuardTable(INSTANCE)}`, file]);
    assert.deepEqual(await guardTables(), []);
    assert.equal(existsSync(file), false);

    // --clear: a guard loaded and a ruleset saved by a daemon that is gone
    await startTrafficJam();
    await daemon!.waitForLog(hasEvent("boot.guard.saved"), 10_000);
    await stopTrafficJam();
    await lab.nsExec(loadCommand(guardDir));
    const r = await runCli(lab, { INSTANCE_ID: INSTANCE, TRAFFICJAM_BOOT_GUARD_DIR: guardDir }, [
      "--clear",
    ]);
    assert.equal(r.code, 0, r.stderr);
    const cleared = JSON.parse(r.stdout.trim().split("\n").at(-1) ?? "{}") as LogEntry;
    assert.equal(cleared.event, "rules.cleared");
    assert.ok((cleared.removed as string[]).includes(`table inet ${bootGuardTable(INSTANCE)}`));
    assert.ok((cleared.removed as string[]).includes(file));
    assert.deepEqual(await guardTables(), []);
    assert.equal(existsSync(file), false);
    assert.doesNotMatch(await lab.nsExec(["nft", "list", "tables"]), /trafficjam/);
  });
});
