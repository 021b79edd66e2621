// TrafficJam's own lifecycle, proven with packets: stopped (SIGTERM) or killed (SIGKILL) and
// restarted while backends probe each other, containers changed while it was stopped, dockerd
// restarted under it, and the conntrack entries of a revoked proxy deleted.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  conntrackList,
  iptablesRules,
  sleep,
  startDaemon,
  startLab,
  waitFor,
  type Container,
  type DaemonProcess,
  type Lab,
  type LogEntry,
} from "./lab/index.js";
import {
  PROXY_LABEL,
  WHITELIST_FILTER,
  buildTopology,
  eventually,
  expectAll,
  listening,
  startTrafficJam,
  type Topology,
} from "./topology.js";
import { flowsFrom, proxyLosesItsAllowance } from "./revocation.js";

const POLL_INTERVAL_S = 1;
/** Allowed time from Docker's return to the proxy reaching a backend again. */
const DOCKER_RECOVERY_BUDGET_MS = POLL_INTERVAL_S * 1000 + 1500;
const ENV = { DEBUG: "true" }; // "rules verified" is a debug line: it shows an unchanged startup

const hasEvent = (event: string) => (e: LogEntry) => e.event === event;
const isStartupPass = (e: LogEntry) =>
  String(e.reason ?? "")
    .split(",")
    .includes("startup") &&
  (e.event === "rules.applied" || e.event === "rules.verified");

/** This instance's lines of `iptables -S` (entry chains, jumps and its own chains). */
async function instanceRules(lab: Lab): Promise<string[]> {
  return (await iptablesRules(lab, 4)).filter((l) => /TRAFFICJAM|TJ[FI]_web\b/.test(l));
}

/** A `tjprobe watch` left running in a container (one TCP connect to port 80 every 100 ms). */
interface Probe {
  lab: Lab;
  from: Container;
  what: string;
  file: string;
}

async function startProbe(lab: Lab, from: Container, host: string, what: string): Promise<Probe> {
  const file = `/tmp/watch-${host}`;
  const cmd = `echo $$ > ${file}.pid; exec tjprobe watch ${host} 80 100 1000000 100 > ${file}`;
  await lab.docker("exec", "-d", from.name, "sh", "-c", cmd);
  return { lab, from, what, file };
}

/** "ok" / "fail <why>" lines so far. */
async function attemptsOf(p: Probe): Promise<string[]> {
  const r = await p.lab.exec(p.from, ["cat", p.file]);
  if (r.code !== 0 && /No such file/.test(r.stderr)) return [];
  assert.equal(r.code, 0, `reading ${p.file} in ${p.from.name}: ${r.stderr}`);
  return r.stdout.split("\n").filter((l) => /^(ok|fail)/.test(l));
}

/** Waits until each probe made at least atLeast[i] attempts; returns the counts. */
function attemptCounts(probes: Probe[], atLeast: number[], what: string): Promise<number[]> {
  return waitFor(
    async () => {
      const n = await Promise.all(probes.map(async (p) => (await attemptsOf(p)).length));
      return n.every((v, i) => v >= (atLeast[i] ?? 0)) ? n : false;
    },
    { timeoutMs: 10_000, intervalMs: 100, what },
  );
}

async function stopProbe(p: Probe): Promise<void> {
  await p.lab.exec(p.from, ["sh", "-c", `kill $(cat ${p.file}.pid)`]);
}

/** Parsed JSON log lines from line `mark` on (DaemonProcess.entries() has no offset). */
function entriesSince(d: DaemonProcess, mark: number): LogEntry[] {
  return d.lines.slice(mark).flatMap((l): LogEntry[] => {
    try {
      const v: unknown = JSON.parse(l);
      return v !== null && typeof v === "object" ? [v as LogEntry] : [];
    } catch {
      return [];
    }
  });
}

describe("TrafficJam lifecycle: restarts, kills, Docker restarts, conntrack", () => {
  let lab: Lab;
  let t: Topology;
  let daemon: DaemonProcess | undefined;
  /** Other TrafficJam instances (killed in after). */
  const others: DaemonProcess[] = [];
  /** Containers added along the way that later tests use (new proxy, new backend). */
  const extra: Container[] = [];

  /** Starts TrafficJam again (state already in the kernel) and waits for its startup pass. */
  async function restartTrafficJam(): Promise<{ daemon: DaemonProcess; startup: LogEntry }> {
    const d = startDaemon(lab, {
      NETWORK: t.net,
      WHITELIST_FILTER,
      INSTANCE_ID: "web",
      POLL_INTERVAL: String(POLL_INTERVAL_S),
      ...ENV,
    });
    daemon = d;
    return { daemon: d, startup: await d.waitForLog(isStartupPass, 15_000) };
  }

  /**
   * Stops TrafficJam (SIGTERM or SIGKILL), keeps it stopped for a while, restarts it, all while
   * two backends probe (b1→b2, b3→proxy) without pause: no attempt may ever succeed.
   */
  async function stopAndRestartUnderProbes(
    how: "SIGTERM" | "SIGKILL",
    diag: (msg: string) => void,
  ): Promise<void> {
    const [b1, b2, b3] = t.backends;
    const running = daemon;
    assert.ok(running?.running, "TrafficJam must be running at the start of this test");
    const before = await instanceRules(lab);
    assert.ok(
      before.some((l) => /^-A TJF_web -i (br-\w+) -o \1 .*-j DROP$/.test(l)),
      `the drop rule must be in force before the stop:\n${before.join("\n")}`,
    );
    const probes = [
      await startProbe(lab, b1, b2.ipv4, "b1→b2"),
      await startProbe(lab, b3, t.proxy.ipv4, "b3→proxy"),
    ];
    let phases: Record<string, number[]>;
    try {
      const atStop = await attemptCounts(probes, [5, 5], "the probes' first attempts");

      const mark = running.mark();
      const stoppedAt = Date.now();
      if (how === "SIGTERM") {
        running.signal("SIGTERM");
        assert.deepEqual(await running.waitExit(5_000), { code: 0, signal: null });
        await running.waitForLog(hasEvent("daemon.stopping"), 1_000, mark);
      } else {
        assert.deepEqual(await running.kill(), { code: null, signal: "SIGKILL" });
      }
      daemon = undefined;
      assert.deepEqual(await instanceRules(lab), before, `rules changed by ${how}`);
      await sleep(1000); // nobody enforces anything now: only the kernel's rules stand
      assert.deepEqual(await instanceRules(lab), before, `rules changed while stopped (${how})`);

      const atRestart = await attemptCounts(probes, [0, 0], "attempt counts");
      const restartedAt = Date.now();
      const { startup } = await restartTrafficJam();
      const convergedAt = Date.now();
      diag(
        `${how}: stopped ${restartedAt - stoppedAt} ms, restart→startup pass ${convergedAt - restartedAt} ms (${String(startup.event)})`,
      );
      // Nothing changed meanwhile: the restart finds its rules exactly as it left them.
      assert.equal(startup.event, "rules.verified", JSON.stringify(startup));
      assert.deepEqual(await instanceRules(lab), before, "rules changed by the restart");
      const atConverged = await attemptCounts(probes, [0, 0], "attempt counts");
      const atEnd = await attemptCounts(
        probes,
        atConverged.map((n) => n + 10),
        "10 more attempts after the restart",
      );
      phases = { atStop, atRestart, atConverged, atEnd };
    } finally {
      for (const p of probes) await stopProbe(p);
    }
    const attempts = await Promise.all(probes.map(attemptsOf));
    const ok = attempts.map((a) => a.filter((l) => l === "ok").length);
    diag(
      `${how}: attempts (${probes.map((p) => p.what).join(", ")}) by the stop ${phases.atStop}, by the restart ${phases.atRestart}, by convergence ${phases.atConverged}, in all ${attempts.map((a) => a.length)}; successes ${ok}`,
    );
    for (const [i, n] of phases.atRestart!.entries())
      assert.ok(n - phases.atStop![i]! >= 5, `${probes[i]!.what}: too few attempts while stopped`);
    assert.deepEqual(ok, [0, 0], "a backend connected during the stop/restart window");
    await expectAll(
      t.backends.map((b) => [`proxy→${b.name}`, () => lab.tcp(t.proxy, b.ipv4, 80)]),
      true,
    );
  }

  before(async () => {
    lab = await startLab({ name: "life", ipv6: false });
    t = await buildTopology(lab);
    // so that they come back after the dockerd restart (the outsider is not needed there)
    for (const c of [t.proxy, ...t.backends])
      await lab.docker("update", "--restart", "always", c.name);
    daemon = await startTrafficJam(lab, t.net, ENV);
  });
  after(async () => {
    for (const d of [daemon, ...others]) await d?.kill().catch(() => undefined);
    await lab?.stop();
  });

  it("SIGTERM exits 0, leaves the rules, and no backend connects before, during or after a restart", async (tc) => {
    await stopAndRestartUnderProbes("SIGTERM", (m) => tc.diagnostic(m));
  });

  it("SIGKILL leaves the rules; no backend connects; the restart converges", async (tc) => {
    await stopAndRestartUnderProbes("SIGKILL", (m) => tc.diagnostic(m));
  });

  it("containers changed while stopped: new proxy allowed, its old address and a new backend isolated", async (tc) => {
    const running = daemon;
    assert.ok(running?.running, "TrafficJam must be running at the start of this test");
    const [b1, b2, b3] = t.backends;
    const oldProxy = t.proxy;
    running.signal("SIGTERM");
    assert.deepEqual(await running.waitExit(5_000), { code: 0, signal: null });
    daemon = undefined;

    await lab.docker("rm", "-f", oldProxy.name);
    // the new proxy, a new backend, and a non-whitelisted container given the old proxy's address
    const [proxy2, b4, stranger] = await Promise.all([
      lab.run({
        name: "web-proxy2",
        network: t.net,
        ip: "172.28.0.11",
        labels: PROXY_LABEL,
        restart: "always",
      }),
      lab.run({ name: "web-b4", network: t.net, ip: "172.28.0.24", restart: "always" }),
      lab.run({ name: "web-stranger", network: t.net, ip: oldProxy.ipv4 }),
    ]);
    extra.push(proxy2, b4);
    // While stopped the kernel keeps the old rules (fail-closed): the new proxy is not allowed yet.
    tc.diagnostic(
      `while stopped: proxy2→b1 ${await lab.tcp(proxy2, b1.ipv4, 80, 300)}, stranger(old proxy address)→b1 ${await lab.tcp(stranger, b1.ipv4, 80, 300)}`,
    );

    const restartedAt = Date.now();
    daemon = await startTrafficJam(lab, t.net, ENV);
    tc.diagnostic(`restart→rules applied ${Date.now() - restartedAt} ms`);
    t.proxy = proxy2;

    const all = [b1, b2, b3, b4];
    await expectAll(
      all.map((b) => [`proxy2→${b.name}`, () => lab.tcp(proxy2, b.ipv4, 80)]),
      true,
    );
    await expectAll(
      [
        ...all.flatMap((b): Array<[string, () => Promise<boolean>]> => [
          [`stranger→${b.name} tcp`, () => lab.tcp(stranger, b.ipv4, 80, 500)],
          [`stranger→${b.name} udp`, () => lab.udp(stranger, b.ipv4, 9000, 500)],
        ]),
        ["b4→b1 tcp", () => lab.tcp(b4, b1.ipv4, 80, 500)],
        ["b4→b2 udp", () => lab.udp(b4, b2.ipv4, 9000, 500)],
        ["b4→b3 icmp", () => lab.ping(b4, b3.ipv4)],
        ["b1→b4 tcp", () => lab.tcp(b1, b4.ipv4, 80, 500)],
        ["b4→proxy2 tcp", () => lab.tcp(b4, proxy2.ipv4, 80, 500)],
        ["b4→stranger tcp", () => lab.tcp(b4, stranger.ipv4, 80, 500)],
      ],
      false,
    );
    const rules = (await instanceRules(lab)).join("\n");
    assert.match(rules, /-A TJF_web -s 172\.28\.0\.11\/32 -i (br-\w+) -o \1 /);
    assert.doesNotMatch(rules, new RegExp(`-s ${oldProxy.ipv4.replace(/\./g, "\\.")}/32 `));
  });

  it("dockerd restarted: isolation holds throughout and the proxy is back within POLL_INTERVAL", async (tc) => {
    const running = daemon;
    assert.ok(running?.running, "TrafficJam must be running at the start of this test");
    const [b1, b2, b3] = t.backends;
    const b4 = extra.find((c) => c.name === "web-b4");
    assert.ok(b4, "the previous test's new backend is needed");
    // A backend probing b2 without pause, restarted by Docker with everything else: its log spans
    // both runs. SIGKILL as stop signal so the dockerd shutdown does not wait for it.
    const watcher = await lab.run({
      name: "web-watcher",
      network: t.net,
      ip: "172.28.0.30",
      restart: "always",
      args: ["--stop-signal", "SIGKILL"],
      cmd: ["sh", "-c", `echo run; exec tjprobe watch ${b2.ipv4} 80 100 100000 100`],
    });
    const watcherLog = async () => (await lab.docker("logs", watcher.name)).split("\n");
    await waitFor(
      async () => (await watcherLog()).filter((l) => l.startsWith("fail")).length >= 5,
      {
        timeoutMs: 10_000,
        what: "the watcher to make its first attempts",
      },
    );

    const mark = running.mark();
    const restartStarted = Date.now();
    await lab.restartDockerd();
    const dockerBack = Date.now();
    // Docker restarts the containers one by one after it answers, slowly on a loaded machine:
    // TrafficJam's part is measured from when both ends run again (their State.StartedAt).
    try {
      await eventually(
        "the proxy to reach b1 after the dockerd restart",
        () => lab.tcp(t.proxy, b1.ipv4, 80, 300),
        true,
        30_000,
      );
    } catch (error) {
      const ps = await lab.docker("ps", "-a", "--format", "{{.Names}} {{.Status}}");
      throw new Error(
        `${(error as Error).message}\ncontainers:\n${ps}\nTrafficJam:\n${running.output(40)}`,
        { cause: error },
      );
    }
    const connectedAt = Date.now();
    const startedAt = await Promise.all(
      [t.proxy, b1].map(async (c) =>
        Date.parse((await lab.docker("inspect", "-f", "{{.State.StartedAt}}", c.name)).trim()),
      ),
    );
    const bothRunning = Math.max(dockerBack, ...startedAt);
    const recoveryMs = connectedAt - bothRunning;
    // TrafficJam's side of it: when it listed the proxy as whitelisted again
    const readmitted = entriesSince(running, mark).find(
      (e) =>
        e.event === "whitelist.changed" &&
        JSON.stringify(e.whitelisted).includes(`"${t.proxy.ipv4}"`) &&
        Date.parse(String(e.time)) >= restartStarted,
    );
    const readmittedMs = readmitted ? Date.parse(String(readmitted.time)) - dockerBack : NaN;
    tc.diagnostic(
      `dockerd restart took ${dockerBack - restartStarted} ms; after Docker answered: proxy whitelisted again at ${readmittedMs} ms (log), proxy and b1 running again at ${bothRunning - dockerBack} ms, proxy→b1 connected ${recoveryMs} ms after that (budget ${DOCKER_RECOVERY_BUDGET_MS} ms)`,
    );
    assert.ok(
      recoveryMs <= DOCKER_RECOVERY_BUDGET_MS,
      `proxy→b1 took ${recoveryMs} ms after both ran again\n${running.output(30)}`,
    );
    assert.ok(running.running, `TrafficJam died with dockerd:\n${running.output(30)}`);
    await running.waitForLog(hasEvent("docker.events.lost"), 1_000, mark);
    const reconnected = await running.waitForLog(
      hasEvent("docker.events.reconnected"),
      10_000,
      mark,
    );
    const during = entriesSince(running, mark);
    const summary = new Map<string, number>();
    for (const e of during) {
      const what = `${String(e.event)}${e.reason ? ` (${String(e.reason)})` : ""}`;
      summary.set(what, (summary.get(what) ?? 0) + 1);
    }
    tc.diagnostic(
      `event stream reconnected at ${String(reconnected.time)}; TrafficJam logged: ${[...summary].map(([m, n]) => `${m} ×${n}`).join("; ")}`,
    );

    await expectAll(
      [b1, b2, b3, b4].map((b) => [`proxy→${b.name}`, () => lab.tcp(t.proxy, b.ipv4, 80)]),
      true,
    );
    await expectAll(
      [
        ["b1→b2 tcp", () => lab.tcp(b1, b2.ipv4, 80, 500)],
        ["b2→b1 tcp", () => lab.tcp(b2, b1.ipv4, 80, 500)],
        ["b2→b3 udp", () => lab.udp(b2, b3.ipv4, 9000, 500)],
        ["b3→b1 icmp", () => lab.ping(b3, b1.ipv4)],
        ["b4→b1 tcp", () => lab.tcp(b4, b1.ipv4, 80, 500)],
        ["b1→proxy tcp", () => lab.tcp(b1, t.proxy.ipv4, 80, 500)],
      ],
      false,
    );

    // The watcher's second run (after Docker brought it back) must have made attempts too.
    const lines = await waitFor(
      async () => {
        const log = await watcherLog();
        const runs = log.filter((l) => l === "run").length;
        const afterRestart = log.slice(log.lastIndexOf("run")).filter((l) => /^(ok|fail)/.test(l));
        return runs >= 2 && afterRestart.length >= 20 ? log : false;
      },
      { timeoutMs: 10_000, what: "the watcher to run again after the dockerd restart" },
    );
    const attempts = lines.filter((l) => /^(ok|fail)/.test(l));
    const ok = attempts.filter((l) => l === "ok").length;
    tc.diagnostic(
      `watcher b→b2: ${lines.filter((l) => l === "run").length} runs, ${attempts.length} attempts, ok=${ok}`,
    );
    assert.equal(ok, 0, `a backend reached b2 across the dockerd restart:\n${lines.join("\n")}`);
    await lab.docker("rm", "-f", watcher.name);
  });

  it("a proxy losing its allowance has its tracked flows deleted, and only those: its open connection is cut", (tc) =>
    proxyLosesItsAllowance(lab, tc, {
      env: ENV,
      network: "ct",
      prefix: "172.27.0",
      pollIntervalS: POLL_INTERVAL_S,
      started: others,
    }));

  it("an allowance lost while TrafficJam was stopped has its flows deleted at restart", async (tc) => {
    await lab.createNetwork("ct2", { subnets: ["172.26.0.0/24"] });
    const [proxy, backend] = await Promise.all([
      lab.run({ name: "ct2-proxy", network: "ct2", ip: "172.26.0.10" }),
      lab.run({ name: "ct2-backend", network: "ct2", ip: "172.26.0.21" }),
    ]);
    const env = { WHITELIST_FILTER: "name=ct2-proxy", ...ENV };
    const first = await startTrafficJam(lab, "ct2", env);
    others.push(first);
    const loop = "i=0; while :; do i=$((i+1)); echo $i; sleep 0.1; done";
    await lab.docker("exec", "-d", backend.name, "sh", "-c", `${loop} | nc -l -p 7002`);
    await listening(lab, backend, 7002);
    await lab.docker(
      "exec",
      "-d",
      proxy.name,
      "sh",
      "-c",
      `sleep 120 | nc ${backend.ipv4} 7002 > /tmp/stream`,
    );
    const received = async () =>
      Number((await lab.exec(proxy.id, ["sh", "-c", "wc -l < /tmp/stream"])).stdout.trim());
    await waitFor(async () => (await received()) >= 3, {
      timeoutMs: 5_000,
      what: "the stream to flow",
    });

    first.signal("SIGTERM");
    assert.deepEqual(await first.waitExit(5_000), { code: 0, signal: null });
    await lab.docker("rename", proxy.name, "ct2-retired");
    assert.ok(flowsFrom(await conntrackList(lab, 4), proxy.ipv4).length > 0, "the flow is tracked");

    const second = startDaemon(lab, {
      NETWORK: "ct2",
      INSTANCE_ID: "ct2",
      POLL_INTERVAL: "1",
      ...env,
    });
    others.push(second);
    const revoked = await second.waitForLog(
      (e) => e.event === "allowance.revoked" && e.address === proxy.ipv4,
      10_000,
    );
    tc.diagnostic(`flows deleted at restart: ${String(revoked.flows)}`);
    assert.ok(Number(revoked.flows) >= 1, JSON.stringify(revoked));
    assert.deepEqual(flowsFrom(await conntrackList(lab, 4), proxy.ipv4), []);
    await sleep(300);
    const r1 = await received();
    await sleep(1_000);
    assert.equal((await received()) - r1, 0, "the revoked proxy's connection still carries data");
  });
});
