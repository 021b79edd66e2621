// TrafficJam benchmark: `npm run bench` (root). Reuses the end-to-end lab (a real dockerd in its
// own network namespace) and prints figures, never pass/fail: event → enforced latency, the time
// to apply one change as the network grows, and the idle cost. See bench/README.md.
//
//   BENCH_STARTS=30        whitelisted starts for the latency figures (≥ 1)
//   BENCH_SIZES=10,100,500 containers on the network for "one change"
//   BENCH_CHANGES=10       changes measured at each size
//   BENCH_IDLE=0           skip the idle measurements (3 minutes)
//   BENCH_BACKENDS=iptables,nftables  FIREWALL_BACKEND of the latency and one-change runs
//   BENCH_LEAN=1           the lean phase (bench/lean.ts, its own lab) after the others;
//                          0 skips it, "only" runs it alone (its own variables: bench/lean.ts)
import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import {
  TEST_IMAGE,
  randomId,
  sleep,
  startDaemon,
  startLab,
  type DaemonProcess,
  type Lab,
  type LogEntry,
} from "../test/e2e/lab/index.js";
import { LOG_BASE } from "../test/e2e/lab/paths.js";
import { envInt, hasReason, pct, readProc, stopDaemon, table } from "./figures.js";
import { leanPhase, leanTable, type LeanResults } from "./lean.js";

// ---- configuration ----

function envSizes(): number[] {
  const raw = process.env.BENCH_SIZES?.trim() || "10,100,500";
  const sizes = raw.split(",").map((s) => Number(s.trim()));
  // a Linux bridge takes at most 1024 ports
  if (sizes.some((n) => !Number.isInteger(n) || n < 1 || n > 1000))
    throw new Error(`BENCH_SIZES=${raw}: expected integers from 1 to 1000, comma-separated`);
  return [...new Set(sizes)].sort((a, b) => a - b);
}

const STARTS = envInt("BENCH_STARTS", 30, 1, 1000);
const SIZES = envSizes();
const CHANGES = envInt("BENCH_CHANGES", 10, 1, 1000);
const IDLE = envInt("BENCH_IDLE", 1, 0, 1) === 1;
const LEAN = envLean();
type Backend = "iptables" | "nftables";
const BACKENDS = envBackends();

function envLean(): "on" | "off" | "only" {
  const raw = process.env.BENCH_LEAN?.trim() || "1";
  if (raw === "1") return "on";
  if (raw === "0") return "off";
  if (raw === "only") return "only";
  throw new Error(`BENCH_LEAN=${raw}: expected 1, 0 or only`);
}

function envBackends(): Backend[] {
  const raw = process.env.BENCH_BACKENDS?.trim() || "iptables,nftables";
  const list = raw.split(",").map((b) => b.trim());
  if (list.length === 0 || list.some((b) => b !== "iptables" && b !== "nftables"))
    throw new Error(`BENCH_BACKENDS=${raw}: expected iptables and/or nftables, comma-separated`);
  return [...new Set(list)] as Backend[];
}

const NETWORK = "benchnet";
const SUBNET = "10.88.0.0/16"; // backends are allocated from 10.88.0.2 up, proxies from 10.88.200.2
const INSTANCE_ID = "bench";
const WHITELIST_LABEL = "tj.role=proxy";
const DAEMON_ENV = { NETWORK, WHITELIST_FILTER: `label=${WHITELIST_LABEL}`, INSTANCE_ID };
/** Backends on the network while the latency starts run (one of them serves the probe). */
const LATENCY_BACKENDS = 3;
/** Every PROBE_EVERY-th start runs the packet probe as its command. */
const PROBE_EVERY = 3;
/** tjprobe watch: one connect every 2 ms, each given 1 ms, so the attempts stay on their grid. */
const PROBE_INTERVAL_MS = 2;
const PROBE_TIMEOUT_MS = 1;
const PROBE_COUNT = 1000;
const SETUP_PARALLEL = 8;
const IDLE_WARMUP_S = 30;
const IDLE_WINDOW_S = 60;
const WAIT_MS = 60_000;

const NFT_UPDATE_SCRIPT = new URL("./nft-update.ts", import.meta.url).pathname;

const TARGET = { eventToEnforcedP50Ms: 50, changeAt500Ms: 100, idleCpuSPerMin: 0.05 };

// ---- small helpers ----

const log = (line = ""): void => console.log(line);

/** Nearest-rank percentile: always one of the measured values. */

const fmt = (v: number | undefined, digits = 1): string =>
  v === undefined || Number.isNaN(v) ? "–" : v.toFixed(digits);
const mark = (ok: boolean | undefined): string => (ok === undefined ? "–" : ok ? "✓" : "✗");

async function sleepUntil(atMs: number): Promise<void> {
  const left = atMs - performance.now();
  if (left > 0) await sleep(left);
}

/** Docker's RFC 3339 timestamps with nanoseconds → ms since the epoch, sub-ms kept. */
function rfc3339Ms(s: string): number {
  const m = /^(.+T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$/.exec(s.trim());
  if (!m) throw new Error(`not an RFC 3339 time: ${s}`);
  return Date.parse(`${m[1]}${m[3]}`) + (m[2] ? Number(`0.${m[2]}`) * 1000 : 0);
}

// ---- the daemon's log ----

const PASS_END = new Set(["rules.applied", "rules.verified", "rules.repaired"]);
const isPassEnd = (e: LogEntry): boolean => PASS_END.has(String(e.event));
/** Logged at the end of a pass's observation, in every log level, the first time. */
const FIRST_PASS = new Set(["whitelist.changed"]);

const daemons: Array<{ phase: string; daemon: DaemonProcess }> = [];

/** A daemon with DEBUG=true ("rules verified" lines mark the passes that changed nothing). */
async function startDebugDaemon(lab: Lab, phase: string, backend: Backend): Promise<DaemonProcess> {
  const daemon = startDaemon(lab, { ...DAEMON_ENV, DEBUG: "true", FIREWALL_BACKEND: backend });
  daemons.push({ phase, daemon });
  await daemon.waitForLog((e) => isPassEnd(e) && hasReason(e, "startup"), WAIT_MS);
  await waitQuiet(daemon, 500);
  return daemon;
}

/** Waits until the daemon has logged nothing for quietMs (bounded). */
async function waitQuiet(daemon: DaemonProcess, quietMs: number, maxMs = 120_000): Promise<void> {
  const end = performance.now() + maxMs;
  for (;;) {
    const seen = daemon.lines.length;
    await sleep(quietMs);
    if (!daemon.running) throw new Error(`TrafficJam exited:\n${daemon.output(30)}`);
    if (daemon.lines.length === seen || performance.now() > end) return;
  }
}

function saveDaemonLogs(lab: Lab): void {
  try {
    mkdirSync(LOG_BASE, { recursive: true });
    for (const [i, { phase, daemon }] of daemons.entries()) {
      const path = join(LOG_BASE, `${lab.name}-bench-${i + 1}-${phase}.log`);
      writeFileSync(path, daemon.lines.join("\n") + "\n");
      log(`  daemon log (${phase}): ${path}`);
    }
  } catch (e) {
    log(`  could not save the daemon logs: ${(e as Error).message}`);
  }
}

// ---- one change: a whitelisted container starts on the network ----

interface ProbeResult {
  attempts: number;
  /** Index of the first attempt that connected; undefined when none did. */
  firstOk?: number;
  /** firstOk × interval: from the probe's own start to its first successful attempt (grid time). */
  fromProcessMs?: number;
  /** Docker's timestamp of the first "ok" line − the start event's time (both dockerd's clock). */
  fromEventMs?: number;
}

interface Change {
  ip: string;
  /** Reasons of the pass that applied the change (e.g. container:start, network:connect). */
  reason: string;
  passMs: number;
  /** Absent when a resync, not an event, happened to apply the change first. */
  eventToEnforcedMs?: number;
  dockerStartMs: number;
  probe?: ProbeResult;
}

let proxySeq = 0;

async function whitelistedStart(
  lab: Lab,
  daemon: DaemonProcess,
  probeTarget?: string,
): Promise<Change> {
  const n = proxySeq++;
  const name = `tjb-proxy-${n}`;
  const ip = `10.88.${200 + Math.floor(n / 250)}.${(n % 250) + 2}`;
  const cmd = probeTarget
    ? ["tjprobe", "watch", probeTarget, "80"].concat(
        [PROBE_INTERVAL_MS, PROBE_COUNT, PROBE_TIMEOUT_MS].map(String),
      )
    : ["sleep", "86400"];
  // created apart, and the daemon idle again, so the start is the only thing measured
  let from = daemon.mark();
  const id = await lab.docker(
    ...["create", "--name", name, "--network", NETWORK, "--ip", ip],
    ...["--label", WHITELIST_LABEL, TEST_IMAGE, ...cmd],
  );
  await daemon.waitForLog((e) => isPassEnd(e) && hasReason(e, "container:create"), WAIT_MS, from);

  from = daemon.mark();
  const wallBefore = Date.now();
  const t0 = performance.now();
  await lab.docker("start", name);
  const dockerStartMs = performance.now() - t0;
  const applied = await daemon.waitForLog(
    (e) =>
      (e.event === "rules.applied" || e.event === "rules.repaired") &&
      Array.isArray(e.allowed) &&
      e.allowed.includes(ip),
    WAIT_MS,
    from,
  );
  await daemon.waitForLog((e) => isPassEnd(e) && hasReason(e, "container:start"), WAIT_MS, from);
  const change: Change = {
    ip,
    reason: String(applied.reason),
    passMs: Number(applied.ms),
    eventToEnforcedMs:
      typeof applied.eventToEnforcedMs === "number" ? applied.eventToEnforcedMs : undefined,
    dockerStartMs,
  };

  if (probeTarget) {
    await lab.docker("wait", name); // PROBE_COUNT × PROBE_INTERVAL_MS
    // "<RFC 3339 time dockerd read the line> ok" / "... fail <why>", one line per attempt
    const attempts = (await lab.docker("logs", "--timestamps", name))
      .split("\n")
      .map((l) => [l.slice(0, l.indexOf(" ")), l.slice(l.indexOf(" ") + 1)] as const)
      .filter(([, text]) => text === "ok" || text.startsWith("fail"));
    const index = attempts.findIndex(([, text]) => text === "ok");
    const probe: ProbeResult = { attempts: attempts.length };
    if (index >= 0) {
      probe.firstOk = index;
      probe.fromProcessMs = index * PROBE_INTERVAL_MS;
      const event = await startEventMs(lab, id, wallBefore - 2000, Date.now() + 1000);
      if (event !== undefined) probe.fromEventMs = rfc3339Ms(attempts[index]![0]) - event;
    }
    change.probe = probe;
  }

  from = daemon.mark();
  await lab.docker("rm", "--force", name);
  await daemon.waitForLog((e) => isPassEnd(e) && hasReason(e, "container:destroy"), WAIT_MS, from);
  return change;
}

/** Time of a container's start event, from Docker's own event log (ms since the epoch). */
async function startEventMs(
  lab: Lab,
  id: string,
  sinceMs: number,
  untilMs: number,
): Promise<number | undefined> {
  const seconds = (ms: number) => (ms / 1000).toFixed(3);
  const out = await lab.docker(
    ...["events", "--since", seconds(sinceMs), "--until", seconds(untilMs)],
    ...["--filter", `container=${id}`, "--filter", "event=start", "--format", "{{.TimeNano}}"],
  );
  const first = out
    .split("\n")
    .map((l) => l.trim())
    .find((l) => /^\d+$/.test(l));
  return first === undefined ? undefined : Number(BigInt(first) / 1000n) / 1000;
}

// ---- the network's other members ----

let backendSeq = 0;

async function addBackends(lab: Lab, count: number, target: number): Promise<void> {
  if (count <= 0) return;
  const started = performance.now();
  let done = 0;
  let next = 0;
  const worker = async () => {
    while (next < count) {
      next++;
      const name = `tjb-backend-${backendSeq++}`;
      await lab.docker(
        ...["run", "--detach", "--name", name, "--network", NETWORK],
        ...["--label", "tj.bench=backend", TEST_IMAGE, "sleep", "86400"],
      );
      done++;
      if (done % 50 === 0 || done === count) {
        const s = (performance.now() - started) / 1000;
        log(`    ${target - count + done}/${target} containers on the network (${s.toFixed(0)} s)`);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(SETUP_PARALLEL, count) }, worker));
}

async function memberCount(lab: Lab): Promise<number> {
  return Number(await lab.docker("network", "inspect", "--format", "{{len .Containers}}", NETWORK));
}

// ---- process accounting ----

const CLK_TCK = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

interface ProcSample {
  at: number;
  /** utime+stime+cutime+cstime of the process and of every live descendant, in seconds. */
  cpuS: number;
  /** utime+stime of the daemon's own process (Node), in seconds. */
  selfS: number;
  rssKiB: number;
  childRssKiB: number;
  children: string[];
}

function statOf(pid: number): { ppid: number; ticks: number; self: number } | undefined {
  const stat = readProc(`/proc/${pid}/stat`);
  if (!stat) return undefined;
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" "); // f[0] is field 3 (state)
  const field = (n: number) => Number(f[n - 3] ?? 0);
  const self = field(14) + field(15);
  return { ppid: field(4), self, ticks: self + field(16) + field(17) };
}

const rssOf = (pid: number): number =>
  Number(/^VmRSS:\s+(\d+) kB/m.exec(readProc(`/proc/${pid}/status`))?.[1] ?? 0);

function sampleTree(root: number): ProcSample {
  const at = performance.now();
  const stats = new Map<number, { ppid: number; ticks: number; self: number }>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const s = statOf(Number(entry));
    if (s) stats.set(Number(entry), s);
  }
  const tree = [root];
  for (let i = 0; i < tree.length; i++)
    for (const [pid, s] of stats) if (s.ppid === tree[i] && !tree.includes(pid)) tree.push(pid);
  const descendants = tree.slice(1);
  return {
    at,
    cpuS: tree.reduce((sum, pid) => sum + (stats.get(pid)?.ticks ?? 0), 0) / CLK_TCK,
    selfS: (stats.get(root)?.self ?? 0) / CLK_TCK,
    rssKiB: rssOf(root),
    childRssKiB: descendants.reduce((sum, pid) => sum + rssOf(pid), 0),
    children: descendants.map((pid) => readProc(`/proc/${pid}/comm`).trim()),
  };
}

const perMinute = (a: ProcSample, b: ProcSample, what: "cpuS" | "selfS" = "cpuS"): number =>
  (b[what] - a[what]) / ((b.at - a.at) / 60_000);

interface IdleResult {
  members: number;
  startupCpuPerMin: number;
  steadyCpuPerMin: number;
  /** The part of steadyCpuPerMin spent in Node itself (the rest: the tools it ran, nft monitor). */
  steadySelfPerMin: number;
  steadyCpuS: number;
  rssKiB: number;
  childRssKiB: number;
  children: string[];
  linesInWindow: number;
}

/** A daemon as deployed (no DEBUG, POLL_INTERVAL left at its default) left alone on the network. */
async function idleCost(lab: Lab, phase: string): Promise<IdleResult> {
  const members = await memberCount(lab);
  const t0 = performance.now();
  const daemon = startDaemon(lab, DAEMON_ENV);
  daemons.push({ phase, daemon });
  const atStart = sampleTree(daemon.pid);
  await daemon.waitForLog((e) => FIRST_PASS.has(String(e.event)), WAIT_MS);
  log(
    `    started; sampling at +${IDLE_WARMUP_S} s, +60 s and +${IDLE_WARMUP_S + IDLE_WINDOW_S} s`,
  );
  await sleepUntil(t0 + IDLE_WARMUP_S * 1000);
  const windowStart = sampleTree(daemon.pid);
  const linesBefore = daemon.lines.length;
  await sleepUntil(t0 + 60_000);
  const atMinute = sampleTree(daemon.pid);
  await sleepUntil(t0 + (IDLE_WARMUP_S + IDLE_WINDOW_S) * 1000);
  const windowEnd = sampleTree(daemon.pid);
  if (!daemon.running) throw new Error(`TrafficJam exited while idle:\n${daemon.output(30)}`);
  const linesInWindow = daemon.lines.length - linesBefore;
  await stopDaemon(daemon);
  return {
    members,
    startupCpuPerMin: perMinute(atStart, atMinute),
    steadyCpuPerMin: perMinute(windowStart, windowEnd),
    steadySelfPerMin: perMinute(windowStart, windowEnd, "selfS"),
    steadyCpuS: windowEnd.cpuS - windowStart.cpuS,
    rssKiB: windowEnd.rssKiB,
    childRssKiB: windowEnd.childRssKiB,
    children: windowEnd.children,
    linesInWindow,
  };
}

// ---- the run ----

interface BackendResults {
  backend: Backend;
  latency: Change[];
  sizes: Array<{ size: number; members: number; changes: Change[] }>;
}

interface Results {
  backends: BackendResults[];
  idle: Array<{ phase: string; r: IdleResult }>;
  /** The nftables update-strategy table (bench/nft-update.ts), when nftables is benchmarked. */
  nftUpdate?: string;
  /** The lean phase's before/after figures (bench/lean.ts). */
  lean?: LeanResults;
}

const withEventTime = (changes: readonly Change[]): number[] =>
  changes.flatMap((c) => (c.eventToEnforcedMs === undefined ? [] : [c.eventToEnforcedMs]));

function describeChange(c: Change): string {
  let s = `event→enforced ${fmt(c.eventToEnforcedMs)} ms, pass ${fmt(c.passMs)} ms (${c.reason})`;
  if (c.probe) {
    s +=
      c.probe.firstOk === undefined
        ? `; probe: no connection in ${c.probe.attempts} attempts`
        : `; probe: first ok at attempt ${c.probe.firstOk} (${c.probe.fromProcessMs} ms), ` +
          `logged ${fmt(c.probe.fromEventMs)} ms after the start event`;
  }
  return s;
}

const rss = (r: IdleResult): string =>
  `${(r.rssKiB / 1024).toFixed(1)} MiB` +
  (r.children.length
    ? ` (+ ${r.children.join(", ")} ${(r.childRssKiB / 1024).toFixed(1)} MiB)`
    : "");

function describeIdle(r: IdleResult): string {
  return (
    `steady ${r.steadyCpuPerMin.toFixed(3)} CPU-s/min (${r.steadyCpuS.toFixed(2)} s in ` +
    `${IDLE_WINDOW_S} s; Node itself ${r.steadySelfPerMin.toFixed(3)}), first 60 s ` +
    `${r.startupCpuPerMin.toFixed(3)}, RSS ${rss(r)}, ${r.linesInWindow} log lines in the window`
  );
}

function machine(): Array<[string, string]> {
  const cmd = (file: string, args: string[]) => {
    try {
      return execFileSync(file, args, { encoding: "utf8" }).trim().split("\n")[0] ?? "?";
    } catch {
      return "?";
    }
  };
  const cpus = os.cpus();
  return [
    ["CPUs (nproc)", `${cmd("nproc", [])} × ${cpus[0]?.model.trim() ?? "?"}`],
    ["memory", `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`],
    ["kernel", `${os.release()} (${os.arch()})`],
    ["node", process.version],
    ["iptables", cmd("iptables", ["--version"])],
    [
      "load average",
      os
        .loadavg()
        .map((l) => l.toFixed(2))
        .join(" "),
    ],
  ];
}

async function labVersions(lab: Lab): Promise<Array<[string, string]>> {
  return [
    ["dockerd (lab)", await lab.docker("version", "--format", "{{.Server.Version}}")],
    ["docker CLI", await lab.docker("version", "--format", "{{.Client.Version}}")],
  ];
}

/** (c): the idle cost with the containers the network has now. */
async function idlePhase(lab: Lab, results: Results, phase: string): Promise<void> {
  log(`\n(c) idle cost, ${await memberCount(lab)} containers on the network (POLL_INTERVAL 5 s)`);
  const r = await idleCost(lab, phase);
  results.idle.push({ phase, r });
  log(`    ${describeIdle(r)}`);
}

async function runPhases(lab: Lab, results: Results): Promise<void> {
  await lab.createNetwork(NETWORK, { subnets: [SUBNET] });
  const target = await lab.run({ name: "tjb-target", network: NETWORK }); // tjprobe serve
  await addBackends(lab, LATENCY_BACKENDS - 1, LATENCY_BACKENDS);
  for (const backend of BACKENDS) results.backends.push({ backend, latency: [], sizes: [] });

  for (const r of results.backends) {
    log(
      `\n(a) ${r.backend}: event → enforced, ${STARTS} whitelisted starts, ${LATENCY_BACKENDS} backends`,
    );
    const watch = [target.ipv4, 80, PROBE_INTERVAL_MS, PROBE_COUNT, PROBE_TIMEOUT_MS].join(" ");
    log(`    1 start in ${PROBE_EVERY} runs \`tjprobe watch ${watch}\` as the proxy's command`);
    const daemon = await startDebugDaemon(lab, `latency-${r.backend}`, r.backend);
    for (let i = 0; i < STARTS; i++) {
      const probe = i % PROBE_EVERY === PROBE_EVERY - 1 ? target.ipv4 : undefined;
      const c = await whitelistedStart(lab, daemon, probe);
      r.latency.push(c);
      log(`    start ${String(i + 1).padStart(2)}/${STARTS}: ${describeChange(c)}`);
    }
    await stopDaemon(daemon);
  }

  if (IDLE) await idlePhase(lab, results, "idle-small");

  log(`\n(b) one change with ${SIZES.join(", ")} containers on the network`);
  for (const size of SIZES) {
    const have = await memberCount(lab);
    if (have < size) {
      log(`  growing the network to ${size} containers (${SETUP_PARALLEL} in parallel)`);
      await addBackends(lab, size - have, size);
    }
    const members = await memberCount(lab);
    // One backend at a time: a daemon of the other backend would take the rules over.
    for (const r of results.backends) {
      const daemon = await startDebugDaemon(lab, `sizes-${size}-${r.backend}`, r.backend);
      const entry = { size, members, changes: [] as Change[] };
      r.sizes.push(entry);
      log(`  ${members} containers, ${r.backend}: ${CHANGES} whitelisted starts`);
      for (let i = 0; i < CHANGES; i++) {
        const c = await whitelistedStart(lab, daemon);
        entry.changes.push(c);
        log(`    change ${String(i + 1).padStart(2)}/${CHANGES}: ${describeChange(c)}`);
      }
      await stopDaemon(daemon);
    }
  }

  if (IDLE) await idlePhase(lab, results, "idle-large");

  if (BACKENDS.includes("nftables")) {
    log("\n(d) nftables: one whitelist change as set-element updates vs a whole-table replace");
    results.nftUpdate = execFileSync(
      "ip",
      ["netns", "exec", lab.netns, process.execPath, "--import", "tsx", NFT_UPDATE_SCRIPT],
      { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] },
    );
    log(results.nftUpdate);
  }
}

function summary(results: Results): string {
  const parts: string[] = [];
  if (LEAN !== "only") {
    const rows: string[][] = [];
    for (const r of results.backends) backendRows(r, rows);
    idleRows(results, rows);
    parts.push(table(["figure", "value", "target", ""], rows));
    if (results.nftUpdate) parts.push(results.nftUpdate);
  }
  if (results.lean) parts.push(leanTable(results.lean));
  return parts.join("\n\n");
}

function backendRows(results: BackendResults, rows: string[][]): void {
  const b = `[${results.backend}] `;
  const lat = withEventTime(results.latency);
  const n = results.latency.length;
  if (n > 0) {
    const p50 = pct(lat, 50);
    const noEvent = n - lat.length;
    const note = noEvent > 0 ? `, ${noEvent} applied by a resync first` : "";
    rows.push([
      `${b}event → enforced, p50 (daemon log, ${lat.length} of ${n} starts${note})`,
      `${fmt(p50)} ms`,
      `≤ ${TARGET.eventToEnforcedP50Ms} ms`,
      mark(lat.length > 0 ? p50 <= TARGET.eventToEnforcedP50Ms : undefined),
    ]);
    rows.push(["event → enforced, p95 / max", `${fmt(pct(lat, 95))} / ${fmt(pct(lat, 100))} ms`]);
    const passes = results.latency.map((c) => c.passMs);
    rows.push([
      "  pass duration (ms field), p50 / max",
      `${fmt(pct(passes, 50))} / ${fmt(pct(passes, 100))} ms`,
    ]);
    const starts = results.latency.map((c) => c.dockerStartMs);
    rows.push(["  `docker start` (CLI round trip), p50", `${fmt(pct(starts, 50))} ms`]);
    const probes = results.latency.flatMap((c) => (c.probe ? [c.probe] : []));
    const fromEvent = probes.flatMap((p) => (p.fromEventMs === undefined ? [] : [p.fromEventMs]));
    const fromProcess = probes.flatMap((p) =>
      p.fromProcessMs === undefined ? [] : [p.fromProcessMs],
    );
    if (probes.length > 0) {
      const missed = probes.length - fromProcess.length;
      const what = `packet probe (${probes.length} starts${missed ? `, ${missed} never connected` : ""})`;
      rows.push([
        `${what}: start event → first ok logged, p50 / max`,
        `≤ ${fmt(pct(fromEvent, 50))} / ${fmt(pct(fromEvent, 100))} ms`,
      ]);
      rows.push([
        `  first ok attempt × ${PROBE_INTERVAL_MS} ms from the probe's start, p50 / max`,
        `${fmt(pct(fromProcess, 50), 0)} / ${fmt(pct(fromProcess, 100), 0)} ms`,
      ]);
    }
  }
  for (const s of results.sizes) {
    if (s.changes.length === 0) continue;
    const passMs = pct(
      s.changes.map((c) => c.passMs),
      50,
    );
    const e2e = withEventTime(s.changes);
    const e2eMed = pct(e2e, 50);
    const is500 = s.size === 500;
    const what = `${b}one change, ${s.members} containers (median of ${s.changes.length})`;
    rows.push([
      `${what}: pass ms`,
      `${fmt(passMs)} ms`,
      is500 ? `≤ ${TARGET.changeAt500Ms} ms` : "",
      is500 ? mark(passMs <= TARGET.changeAt500Ms) : "",
    ]);
    rows.push([
      `${" ".repeat(what.length)}: event → enforced`,
      `${fmt(e2eMed)} ms`,
      is500 ? `≤ ${TARGET.changeAt500Ms} ms` : "",
      is500 ? mark(e2e.length > 0 ? e2eMed <= TARGET.changeAt500Ms : undefined) : "",
    ]);
  }
  if (!results.sizes.some((s) => s.size === 500 && s.changes.length > 0))
    rows.push([
      `${b}one change, 500 containers`,
      "not measured",
      `≤ ${TARGET.changeAt500Ms} ms`,
      "–",
    ]);
}

function idleRows(results: Results, rows: string[][]): void {
  for (const { r } of results.idle) {
    rows.push([
      `[auto: iptables] idle, ${r.members} containers: CPU-s per minute, ${IDLE_WINDOW_S} s after ${IDLE_WARMUP_S} s warm-up`,
      `${r.steadyCpuPerMin.toFixed(3)} (Node itself ${r.steadySelfPerMin.toFixed(3)})`,
      `≤ ${TARGET.idleCpuSPerMin}`,
      mark(r.steadyCpuPerMin <= TARGET.idleCpuSPerMin),
    ]);
    rows.push(["  first 60 s after startup (contrast)", `${r.startupCpuPerMin.toFixed(3)}`]);
    rows.push(["  RSS at the end (VmRSS)", rss(r)]);
  }
  if (IDLE && results.idle.length === 0)
    rows.push(["idle CPU-s per minute", "not measured", `≤ ${TARGET.idleCpuSPerMin}`, "–"]);
  if (!IDLE)
    rows.push([
      "idle CPU-s per minute",
      "skipped (BENCH_IDLE=0)",
      `≤ ${TARGET.idleCpuSPerMin}`,
      "–",
    ]);
}

async function main(): Promise<number> {
  if (process.getuid?.() !== 0) {
    console.error("npm run bench needs root (network namespaces, netfilter)");
    return 1;
  }
  const results: Results = { backends: [], idle: [] };
  const began = performance.now();
  let lab: Lab | undefined;
  let failed = false;
  log("TrafficJam benchmark");
  log(table(["machine", ""], machine()));
  try {
    if (LEAN !== "only") {
      lab = await startLab({ name: `bench-${randomId(2)}` });
      log(table(["lab", ""], await labVersions(lab)));
      log(`lab: netns ${lab.netns}, network ${NETWORK} ${SUBNET}, TrafficJam ${INSTANCE_ID}`);
      await runPhases(lab, results);
    }
  } catch (e) {
    failed = true;
    console.error(`\nbenchmark failed: ${(e as Error).stack ?? String(e)}`);
  } finally {
    if (lab) {
      saveDaemonLogs(lab);
      log("\nremoving the lab…");
      try {
        await lab.stop();
      } catch (e) {
        failed = true;
        console.error(`lab teardown: ${(e as Error).message}`);
      }
    }
  }
  if (LEAN !== "off") {
    results.lean = await leanPhase(BACKENDS, log);
    if (results.lean.error) failed = true;
  }
  log(`\n== results${failed ? " (incomplete: the run failed)" : ""} ==`);
  log(
    `${((performance.now() - began) / 60_000).toFixed(1)} min; load average now ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}`,
  );
  log(summary(results));
  return failed ? 1 : 0;
}

process.exitCode = await main();
