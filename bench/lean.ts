// The lean phase of `npm run bench`: the figures of issue "Lean, safe and easy to carry on"
// (section 4), each measured on the code now and on a baseline commit (bench/baseline.ts), in a
// lab of its own (netns tj-bl-XXXX), and printed side by side with the issue's targets. Only the
// tools of test/e2e/lab; figures, never pass/fail. See bench/README.md, "Lean figures".
//
//   BENCH_BASELINE=958cd15   commit to compare with (empty: the code now only)
//   BENCH_LEAN_STARTS=10     daemon starts for start → enforced
//   BENCH_LEAN_CALLS=20      CLI calls per round for the CPU of `healthcheck` and `--help`
//   BENCH_LEAN_ROUNDS=3      rounds of those calls (the median round is printed)
//   BENCH_LEAN_PARTS=start,cli,image,events  what to measure (image: the product images, their
//                            builds and 2 × 2.5 idle minutes; events: grows the network)
//   BENCH_LEAN_MEMBERS=300   plain containers on the network for the large event → enforced
//   BENCH_LEAN_RECREATE=10   proxy recreations measured per size, backend and variant
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { basename, join, relative } from "node:path";
import {
  TEST_IMAGE,
  randomId,
  runCli,
  sleep,
  startDaemon,
  startLab,
  type DaemonProcess,
  type Lab,
  type LogEntry,
} from "../test/e2e/lab/index.js";
import { runOk } from "../test/e2e/lab/exec.js";
import { DOCKER_BIN } from "../test/e2e/lab/docker-cli.js";
import { NODE_BASE_IMAGE, loadNodeBase, nodeBaseTarball } from "../test/e2e/lab/node-base.js";
import { startBuildProxy } from "../test/e2e/lab/build-proxy.js";
import { LOG_BASE } from "../test/e2e/lab/paths.js";
import { BENCH_TMP, baselineVariant, currentVariant, type Variant } from "./baseline.js";
import {
  cgroupCpu,
  envInt,
  hasReason,
  pct,
  readProc,
  readlinkSafe,
  stopDaemon,
  table,
} from "./figures.js";

export type Backend = "iptables" | "nftables";

const TITLE =
  "(e) lean: the figures of issue “Lean, safe and easy to carry on” (section 4), before and now";

// ---- configuration ----

const BASELINE = (process.env.BENCH_BASELINE ?? "958cd15").trim();
const STARTS = envInt("BENCH_LEAN_STARTS", 10, 1, 100);
const CALLS = envInt("BENCH_LEAN_CALLS", 20, 1, 500);
const ROUNDS = envInt("BENCH_LEAN_ROUNDS", 3, 1, 20);
const PARTS = envParts();
const MEMBERS = envInt("BENCH_LEAN_MEMBERS", 300, 4, 1000);
const RECREATE = envInt("BENCH_LEAN_RECREATE", 10, 1, 100);

type Part = "start" | "cli" | "image" | "events";

function envParts(): Set<Part> {
  const all: Part[] = ["start", "cli", "image", "events"];
  const raw = process.env.BENCH_LEAN_PARTS?.trim() || all.join(",");
  const list = raw.split(",").map((p) => p.trim());
  if (list.some((p) => !all.includes(p as Part)))
    throw new Error(`BENCH_LEAN_PARTS=${raw}: expected some of ${all.join(",")}, comma-separated`);
  return new Set(list as Part[]);
}

const NETWORK = "leannet";
const SUBNET = "10.89.0.0/16";
const PROXY = "bl-proxy";
const PROXY_IP = "10.89.200.2";
const WHITELIST_LABEL = "tj.role=proxy";
/** Plain containers on the network beside the proxy for the small figures. */
const SMALL = 3;
/** After startup, the daemon is left this long (3 resyncs at the default 5 s) before its RSS. */
const SETTLE_MS = 16_000;
const IMAGE_WARMUP_S = 30;
const IMAGE_WINDOW_S = 30;
const IMAGE_WINDOWS = 3;
const SETUP_PARALLEL = 8;
const WAIT_MS = 120_000;

const TARGET = {
  startMs: 300,
  rssMiB: 60,
  healthcheckMs: 80,
  imageIdleMsPer30s: 600,
  eventToEnforcedMs: 30,
};

// ---- small helpers ----

let say: (line: string) => void = (line) => console.log(line);

/** Nearest-rank percentile: always one of the measured values. */
const median = (values: readonly number[]): number => pct(values, 50);
const fmt = (v: number | undefined, digits = 0): string =>
  v === undefined || Number.isNaN(v) ? "–" : v.toFixed(digits);
const secondsSince = (t: number): string => `${((performance.now() - t) / 1000).toFixed(0)} s`;

const CLK_TCK = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** Fields of a /proc/PID/stat line, numbered as in proc(5) (1: pid, 2: comm, …). */
function statField(stat: string, n: number): number {
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" "); // rest[0] is field 3
  return Number(rest[n - 3] ?? NaN);
}

const rssKiB = (pid: number): number =>
  Number(/^VmRSS:\s+(\d+) kB/m.exec(readProc(`/proc/${pid}/status`))?.[1] ?? NaN);

// ---- the daemon's log, old and new ----
// The old code has no `event` field: its lines are matched by message.

const isApplied = (e: LogEntry): boolean =>
  e.event === "rules.applied" ||
  e.event === "rules.repaired" ||
  e.msg === "rules applied" ||
  String(e.msg ?? "").startsWith("rules repaired");
const isPassEnd = (e: LogEntry): boolean =>
  isApplied(e) || e.event === "rules.verified" || e.msg === "rules verified";
const allows = (e: LogEntry, ip: string): boolean =>
  Array.isArray(e.allowed) && e.allowed.includes(ip);

// ---- running the two variants in the lab ----

interface Ctx {
  lab: Lab;
  /** The daemons' environment: the state file goes to a folder of the run, removed at the end. */
  env: Record<string, string>;
  variants: Variant[];
  daemons: Array<{ name: string; daemon: DaemonProcess }>;
}

/** Removes the rules of every variant (each --clear knows its own layout). */
async function clearRules(ctx: Ctx): Promise<void> {
  for (const v of ctx.variants) {
    const r = await runCli(ctx.lab, ctx.env, ["--clear"], 60_000, { cliPath: v.cli });
    if (r.code !== 0) throw new Error(`${v.label} --clear: exit ${r.code}\n${r.stderr}`);
  }
}

function spawnDaemon(ctx: Ctx, v: Variant, name: string, env: Record<string, string> = {}) {
  const daemon = startDaemon(ctx.lab, { ...ctx.env, ...env }, [], { cliPath: v.cli });
  ctx.daemons.push({ name: `${name}-${v.key}`, daemon });
  return daemon;
}

/** RSS of the daemon's Node process (the spawned pid is node's own once `ip netns exec` exec()s). */
function daemonRssMiB(daemon: DaemonProcess): number {
  const exe = readlinkSafe(`/proc/${daemon.pid}/exe`);
  if (!basename(exe).startsWith("node")) throw new Error(`pid ${daemon.pid} is ${exe}, not node`);
  return rssKiB(daemon.pid) / 1024;
}

// ---- start → enforced, RSS ----

interface StartRun {
  /** Spawn → the rules.applied line read from the daemon's stdout (performance.now()). */
  readMs: number;
  /** Spawn (Date.now()) → the `time` field of that line (ms resolution). */
  loggedMs: number;
  /**
   * Spawn → the commit of the pass's transaction: the line's time, less the pass's duration
   * (`ms`), plus the moment of its commit within it (`enforcedMs`). The code before it had no
   * `enforcedMs`: undefined.
   */
  committedMs?: number;
}

async function startToEnforced(ctx: Ctx, v: Variant, i: number): Promise<StartRun> {
  await clearRules(ctx);
  const wallAtSpawn = Date.now();
  const t0 = performance.now();
  const daemon = spawnDaemon(ctx, v, `start-${i}`);
  const line = await daemon.waitForLog((e) => isApplied(e) && hasReason(e, "startup"), WAIT_MS);
  const readMs = performance.now() - t0;
  const loggedMs = Date.parse(String(line.time)) - wallAtSpawn;
  await stopDaemon(daemon);
  const committedMs =
    typeof line.enforcedMs === "number" && typeof line.ms === "number"
      ? loggedMs - line.ms + line.enforcedMs
      : undefined;
  return { readMs, loggedMs, committedMs };
}

// ---- CPU of one CLI call ----

/**
 * `sh` runs the command `calls` times, then prints its own /proc/self/stat: cutime + cstime
 * (fields 16, 17) are the CPU of every child it waited for (node, and what node waited for).
 */
const CPU_LOOP =
  'n=$1; shift; i=0; while [ "$i" -lt "$n" ]; do "$@" >/dev/null 2>&1; i=$((i+1)); done; cat /proc/$$/stat';

interface CliCpu {
  /** (cutime + cstime) / calls, per round. */
  cpuMs: number[];
  wallMs: number[];
  /** What one call printed before the rounds (the healthcheck's verdict), and its exit code. */
  firstLine: string;
  code: number | null;
}

async function cliCpu(ctx: Ctx, v: Variant, args: string[]): Promise<CliCpu> {
  const one = await runCli(ctx.lab, ctx.env, args, 60_000, { cliPath: v.cli });
  const result: CliCpu = {
    cpuMs: [],
    wallMs: [],
    firstLine: (one.stdout + one.stderr).split("\n")[0] ?? "",
    code: one.code,
  };
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = performance.now();
    const stat = await runOk(
      "ip",
      ["netns", "exec", ctx.lab.netns, "sh", "-c", CPU_LOOP, "sh", String(CALLS)].concat(
        process.execPath,
        v.cli,
        args,
      ),
      { env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...ctx.env }, timeoutMs: 600_000 },
    );
    result.wallMs.push((performance.now() - t0) / CALLS);
    const ticks = statField(stat, 16) + statField(stat, 17);
    result.cpuMs.push(((ticks / CLK_TCK) * 1000) / CALLS);
  }
  return result;
}

// ---- the product image, idle ----

/** The files the Dockerfile copies (see .dockerignore), the Dockerfile and the Node base. */
function imageKey(root: string, base: string): string {
  const hash = createHash("sha256").update(basename(base));
  const files = ["Dockerfile", "package.json", "package-lock.json", "tsconfig.json"];
  // (the baseline's Dockerfile also copies tsconfig.build.json, which it has)
  if (existsSync(join(root, "tsconfig.build.json"))) files.push("tsconfig.build.json");
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir).sort()) {
      const path = join(dir, entry);
      if (statSync(path).isDirectory()) walk(path);
      else files.push(relative(root, path));
    }
  };
  walk(join(root, "src"));
  for (const f of files) hash.update(`${f}\0`).update(readFileSync(join(root, f)));
  return hash.digest("hex").slice(0, 16);
}

/**
 * The variant's image, built from its Dockerfile like test/e2e/lab/product-image.ts does (Node
 * base made here, package downloads through the build proxy), then kept as a `docker save`
 * tarball in the bench's temp folder, keyed by its inputs, and loaded from there next time.
 */
async function productImage(ctx: Ctx, v: Variant): Promise<string> {
  const tag = `tj-bench:${v.key}`;
  const base = await nodeBaseTarball();
  const prefix = `image-${v.key}-`;
  const cached = join(BENCH_TMP, `${prefix}${imageKey(v.root, base)}.tar`);
  const host = ctx.lab.dockerHost;
  if (existsSync(cached)) {
    await runOk(DOCKER_BIN, ["-H", host, "load", "-i", cached], { timeoutMs: 300_000 });
    say(`    ${v.label}: image loaded from ${cached}`);
    return tag;
  }
  const started = performance.now();
  await loadNodeBase(host);
  const proxy = await startBuildProxy(ctx.lab);
  try {
    await runOk(
      DOCKER_BIN,
      [
        ...["-H", host, "build", "--pull=false", "-t", tag],
        ...["--build-arg", `BASE=${NODE_BASE_IMAGE}`],
        ...["--build-arg", `http_proxy=${proxy.url}`, "--build-arg", `https_proxy=${proxy.url}`],
        v.root,
      ],
      {
        timeoutMs: 900_000,
        env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: "/root", DOCKER_BUILDKIT: "0" },
      },
    );
  } finally {
    await proxy.close();
  }
  say(`    ${v.label}: image built in ${secondsSince(started)}`);
  for (const entry of readdirSync(BENCH_TMP))
    if (entry.startsWith(prefix)) rmSync(join(BENCH_TMP, entry), { force: true });
  const tmp = `${cached}.${process.pid}.tmp`;
  await runOk(DOCKER_BIN, ["-H", host, "save", "-o", tmp, tag], { timeoutMs: 300_000 });
  renameSync(tmp, cached);
  return tag;
}

interface ImageIdle {
  /** CPU of the container's cgroup in each window, in ms. */
  windowsMs: number[];
  where: string;
  /** VmRSS of the daemon's Node process in the container (tini's child), MiB. */
  rssMiB: number;
  healthy: string;
}

async function imageIdle(ctx: Ctx, v: Variant, image: string): Promise<ImageIdle> {
  const { lab } = ctx;
  const name = `bl-tj-${v.key}`;
  await clearRules(ctx);
  // As our README runs it (see test/e2e/image.test.ts), defaults for everything else.
  await lab.docker(
    ...["run", "-d", "--name", name, "--cap-add", "NET_ADMIN", "--network", "host"],
    ...["-v", "/var/run/docker/netns:/run/netns:ro,rslave"],
    ...["-v", "/var/run/docker.sock:/var/run/docker.sock"],
    ...["--env", `NETWORK=${NETWORK}`, "--env", `WHITELIST_FILTER=label=${WHITELIST_LABEL}`],
    image,
  );
  try {
    const started = performance.now();
    const health = () => lab.docker("inspect", "--format", "{{.State.Health.Status}}", name);
    let status = await health();
    while (status !== "healthy" && performance.now() - started < 120_000) {
      await sleep(500);
      status = await health();
    }
    if (status !== "healthy")
      say(`    ${v.label}: the image is ${status} after 120 s (measured all the same)`);
    await sleep(IMAGE_WARMUP_S * 1000);
    const pid = Number(await lab.docker("inspect", "--format", "{{.State.Pid}}", name));
    const cpu = cgroupCpu(pid);
    const windowsMs: number[] = [];
    let before = cpu.usec();
    let at = performance.now();
    for (let w = 0; w < IMAGE_WINDOWS; w++) {
      const until = at + IMAGE_WINDOW_S * 1000;
      await sleep(until - performance.now());
      const now = cpu.usec();
      const elapsed = performance.now() - at;
      windowsMs.push(((now - before) / 1000) * ((IMAGE_WINDOW_S * 1000) / elapsed));
      before = now;
      at = performance.now();
    }
    const children = readProc(`/proc/${pid}/task/${pid}/children`).trim().split(/\s+/);
    const node = children.map(Number).find((c) => readProc(`/proc/${c}/comm`).trim() === "node");
    return {
      windowsMs,
      where: cpu.where,
      rssMiB: node === undefined ? NaN : rssKiB(node) / 1024,
      healthy: await health(),
    };
  } finally {
    await lab.docker("rm", "--force", name);
  }
}

// ---- event → enforced: the proxy removed and recreated ----

let plainSeq = 0;

/** Plain containers (not whitelisted) on the network, SETUP_PARALLEL `docker run`s at a time. */
async function addPlain(lab: Lab, count: number): Promise<void> {
  const started = performance.now();
  let done = 0;
  let next = 0;
  const worker = async () => {
    while (next < count) {
      next++;
      await lab.docker(
        ...["run", "--detach", "--name", `bl-plain-${plainSeq++}`, "--network", NETWORK],
        ...["--label", "tj.bench=plain", TEST_IMAGE, "sleep", "86400"],
      );
      done++;
      if (done % 50 === 0 || done === count)
        say(`      ${done}/${count} plain containers started (${secondsSince(started)})`);
    }
  };
  await Promise.all(Array.from({ length: Math.min(SETUP_PARALLEL, count) }, worker));
}

async function runProxy(lab: Lab): Promise<void> {
  await lab.docker(
    ...["run", "--detach", "--name", PROXY, "--network", NETWORK, "--ip", PROXY_IP],
    ...["--label", WHITELIST_LABEL, TEST_IMAGE, "sleep", "86400"],
  );
}

interface Recreations {
  /** eventToEnforcedMs of the passes that allowed the new proxy. */
  eventToEnforcedMs: number[];
  /** The same passes' `ms` field (the whole pass). */
  passMs: number[];
  /** Passes that allowed the proxy without an event time (a resync came first). */
  withoutEvent: number;
  rssMiB: number;
}

async function recreations(ctx: Ctx, v: Variant, backend: Backend, size: number) {
  const daemon = spawnDaemon(ctx, v, `recreate-${size}-${backend}`, {
    DEBUG: "true", // its "rules verified" lines tell when each pass has ended
    FIREWALL_BACKEND: backend,
  });
  await daemon.waitForLog((e) => isPassEnd(e) && hasReason(e, "startup"), WAIT_MS);
  const r: Recreations = { eventToEnforcedMs: [], passMs: [], withoutEvent: 0, rssMiB: NaN };
  for (let i = 0; i < RECREATE; i++) {
    let from = daemon.mark();
    await ctx.lab.docker("rm", "--force", PROXY);
    await daemon.waitForLog(
      (e) => isPassEnd(e) && hasReason(e, "container:destroy"),
      WAIT_MS,
      from,
    );
    from = daemon.mark();
    await runProxy(ctx.lab);
    const line = await daemon.waitForLog((e) => isApplied(e) && allows(e, PROXY_IP), WAIT_MS, from);
    await daemon.waitForLog((e) => isPassEnd(e) && hasReason(e, "container:start"), WAIT_MS, from);
    if (typeof line.eventToEnforcedMs === "number")
      r.eventToEnforcedMs.push(line.eventToEnforcedMs);
    else r.withoutEvent++;
    r.passMs.push(Number(line.ms));
  }
  r.rssMiB = daemonRssMiB(daemon);
  await stopDaemon(daemon);
  return r;
}

// ---- the phase ----

export interface LeanResults {
  variants: Variant[];
  starts: Map<Variant, StartRun[]>;
  rssMiB: Map<Variant, number>;
  healthcheck: Map<Variant, CliCpu>;
  help: Map<Variant, CliCpu>;
  image: Map<Variant, ImageIdle>;
  /** "size/backend" → per variant. */
  events: Map<string, Map<Variant, Recreations>>;
  backends: Backend[];
  durationS: number;
  /** Set when the phase stopped early. */
  error?: string;
}

const eventKey = (size: number, backend: Backend) => `${size}/${backend}`;

export async function leanPhase(
  backends: Backend[],
  log: (line: string) => void = say,
): Promise<LeanResults> {
  say = log;
  const began = performance.now();
  mkdirSync(BENCH_TMP, { recursive: true });
  const results: LeanResults = {
    variants: [],
    starts: new Map(),
    rssMiB: new Map(),
    healthcheck: new Map(),
    help: new Map(),
    image: new Map(),
    events: new Map(),
    backends,
    durationS: 0,
  };
  say(`\n${TITLE}`);
  const stateDir = join(BENCH_TMP, `state-${process.pid}`);
  let lab: Lab | undefined;
  const ctx = { daemons: [] } as unknown as Ctx;
  try {
    if (BASELINE) results.variants.push(await baselineVariant(BASELINE, say));
    results.variants.push(currentVariant());
    lab = await startLab({ name: `bl-${randomId(3)}` });
    Object.assign(ctx, {
      lab,
      env: {
        NETWORK,
        WHITELIST_FILTER: `label=${WHITELIST_LABEL}`,
        TRAFFICJAM_STATE_DIR: stateDir,
      },
      variants: results.variants,
    });
    const dockerd = await lab.docker("version", "--format", "{{.Server.Version}}");
    say(`  lab: netns ${lab.netns}, dockerd ${dockerd}, network ${NETWORK} ${SUBNET}`);
    await lab.createNetwork(NETWORK, { subnets: [SUBNET] });
    await addPlain(lab, SMALL);
    await runProxy(lab);
    await measure(ctx, results);
  } catch (e) {
    results.error = (e as Error).stack ?? String(e);
    say(`\n  lean phase failed: ${results.error}`);
  } finally {
    if (lab) {
      saveLogs(lab, ctx.daemons);
      say("  removing the lean lab…");
      try {
        await lab.stop();
      } catch (e) {
        results.error ??= `lab teardown: ${(e as Error).message}`;
      }
    }
    rmSync(stateDir, { recursive: true, force: true });
    results.durationS = (performance.now() - began) / 1000;
  }
  return results;
}

async function measure(ctx: Ctx, results: LeanResults): Promise<void> {
  if (PARTS.has("start")) await starts(ctx, results);
  if (PARTS.has("cli")) await settled(ctx, results);
  if (PARTS.has("image")) await images(ctx, results);
  if (PARTS.has("events")) await events(ctx, results);
}

async function starts(ctx: Ctx, results: LeanResults): Promise<void> {
  const { variants } = results;
  const t = performance.now();
  say(
    `  start → enforced: ${STARTS} starts per variant, alternating (${SMALL} containers + proxy)`,
  );
  for (const v of variants) results.starts.set(v, []);
  for (let i = 0; i < STARTS; i++)
    for (const v of variants) {
      const s = await startToEnforced(ctx, v, i);
      results.starts.get(v)!.push(s);
      say(`    ${v.label} #${i + 1}: line read ${fmt(s.readMs)} ms, logged ${s.loggedMs} ms`);
    }
  say(`    (${secondsSince(t)})`);
}

async function settled(ctx: Ctx, results: LeanResults): Promise<void> {
  const { variants } = results;
  const t = performance.now();
  say(`  RSS after ${SETTLE_MS / 1000} s, then CPU of ${ROUNDS} × ${CALLS} CLI calls`);
  for (const v of variants) {
    const daemon = spawnDaemon(ctx, v, "settled");
    await daemon.waitForLog((e) => isPassEnd(e) && hasReason(e, "startup"), WAIT_MS);
    await sleep(SETTLE_MS);
    results.rssMiB.set(v, daemonRssMiB(daemon));
    // the healthcheck beside its running, healthy daemon, as in the image
    results.healthcheck.set(v, await cliCpu(ctx, v, ["healthcheck"]));
    results.help.set(v, await cliCpu(ctx, v, ["--help"]));
    await stopDaemon(daemon);
    const h = results.healthcheck.get(v)!;
    say(
      `    ${v.label}: RSS ${fmt(results.rssMiB.get(v), 1)} MiB; healthcheck ` +
        `${h.cpuMs.map((c) => fmt(c)).join(", ")} ms CPU per call (${h.code}: ${h.firstLine}); ` +
        `--help ${results.help
          .get(v)!
          .cpuMs.map((c) => fmt(c))
          .join(", ")} ms`,
    );
  }
  say(`    (${secondsSince(t)})`);
}

async function images(ctx: Ctx, results: LeanResults): Promise<void> {
  const t = performance.now();
  say(
    `  product images idle: ${IMAGE_WARMUP_S} s warm-up after healthy, ${IMAGE_WINDOWS} × ${IMAGE_WINDOW_S} s`,
  );
  for (const v of results.variants) {
    const image = await productImage(ctx, v);
    const idle = await imageIdle(ctx, v, image);
    results.image.set(v, idle);
    say(
      `    ${v.label}: ${idle.windowsMs.map((w) => fmt(w)).join(", ")} ms CPU per ${IMAGE_WINDOW_S} s ` +
        `(${idle.where}), daemon RSS ${fmt(idle.rssMiB, 1)} MiB, ${idle.healthy}`,
    );
  }
  say(`    (${secondsSince(t)})`);
}

async function events(ctx: Ctx, results: LeanResults): Promise<void> {
  const { variants } = results;
  for (const size of [SMALL, MEMBERS]) {
    let t = performance.now();
    const have = Number(
      await ctx.lab.docker("network", "inspect", "--format", "{{len .Containers}}", NETWORK),
    );
    if (have - 1 < size) {
      say(`  growing the network to ${size} plain containers (${SETUP_PARALLEL} at a time)`);
      await addPlain(ctx.lab, size - (have - 1));
      say(`    (${secondsSince(t)})`);
      t = performance.now();
    }
    say(`  event → enforced, ${size} plain containers: ${RECREATE} proxy recreations each`);
    for (const backend of results.backends) {
      const byVariant = new Map<Variant, Recreations>();
      results.events.set(eventKey(size, backend), byVariant);
      for (const v of variants) {
        const r = await recreations(ctx, v, backend, size);
        byVariant.set(v, r);
        say(
          `    [${backend}] ${v.label}: eventToEnforcedMs ${r.eventToEnforcedMs.join(", ")}` +
            ` (pass ms p50 ${fmt(median(r.passMs), 1)}${r.withoutEvent ? `, ${r.withoutEvent} by a resync` : ""}), RSS ${fmt(r.rssMiB, 1)} MiB`,
        );
      }
    }
    say(`    (${secondsSince(t)})`);
  }
}

function saveLogs(lab: Lab, daemons: Ctx["daemons"]): void {
  try {
    mkdirSync(LOG_BASE, { recursive: true });
    const path = join(LOG_BASE, `${lab.name}-lean.log`);
    const text = daemons.map(({ name, daemon }) => `== ${name}\n${daemon.lines.join("\n")}\n`);
    writeFileSync(path, text.join(""));
    say(`  daemon logs: ${path}`);
  } catch (e) {
    say(`  could not save the daemon logs: ${(e as Error).message}`);
  }
}

// ---- the table ----

export function leanTable(r: LeanResults): string {
  const [before, now] = r.variants.length === 2 ? r.variants : [undefined, r.variants[0]];
  const header = ["figure", before?.label ?? "before (skipped)", now?.label ?? "now", "target"];
  const rows: string[][] = [];
  const row = (figure: string, value: (v: Variant) => string | undefined, target = ""): void => {
    rows.push([figure, (before && value(before)) ?? "–", (now && value(now)) ?? "–", target]);
  };
  const startsOf = (v: Variant) => r.starts.get(v);
  row(
    `start → enforced, p50 of ${STARTS} (spawn → rules.applied line read)`,
    (v) => startsOf(v) && `${fmt(median(startsOf(v)!.map((s) => s.readMs)))} ms`,
    `≤ ${TARGET.startMs} ms`,
  );
  row("  same, spawn → commit of the startup transaction (log: time − ms + enforcedMs)", (v) => {
    const committed = startsOf(v)?.flatMap((s) => s.committedMs ?? []) ?? [];
    return committed.length > 0 ? `${fmt(median(committed))} ms` : "not logged";
  });
  row(
    "  same, to the line's own timestamp / max of the line read",
    (v) =>
      startsOf(v) &&
      `${fmt(median(startsOf(v)!.map((s) => s.loggedMs)))} / ${fmt(
        pct(
          startsOf(v)!.map((s) => s.readMs),
          100,
        ),
      )} ms`,
  );
  row(
    `daemon RSS (VmRSS ${SETTLE_MS / 1000} s after startup, ${SMALL} containers + proxy)`,
    (v) => (r.rssMiB.has(v) ? `${fmt(r.rssMiB.get(v), 1)} MiB` : undefined),
    `≤ ${TARGET.rssMiB} MB`,
  );
  const large = (b: Backend) => r.events.get(eventKey(MEMBERS, b));
  for (const b of r.backends)
    row(
      `  RSS after ${RECREATE} recreations, ${MEMBERS} containers [${b}]`,
      (v) => large(b)?.get(v) && `${fmt(large(b)!.get(v)!.rssMiB, 1)} MiB`,
    );
  const cpuRow = (what: string, m: Map<Variant, CliCpu>, target = "") =>
    row(
      `${what} CPU per call (median of ${ROUNDS} rounds of ${CALLS})`,
      (v) => m.get(v) && `${fmt(median(m.get(v)!.cpuMs))} ms`,
      target,
    );
  cpuRow("`healthcheck`", r.healthcheck, `≤ ${TARGET.healthcheckMs} ms`);
  row(
    "  its wall time per call; its verdict",
    (v) =>
      r.healthcheck.get(v) &&
      `${fmt(median(r.healthcheck.get(v)!.wallMs))} ms; ${r.healthcheck.get(v)!.firstLine.split(":")[0]}`,
  );
  cpuRow("`--help`", r.help);
  if (PARTS.has("image")) {
    row(
      `image idle, CPU per ${IMAGE_WINDOW_S} s incl. HEALTHCHECK (median of ${IMAGE_WINDOWS} windows)`,
      (v) => r.image.get(v) && `${fmt(median(r.image.get(v)!.windowsMs))} ms`,
      `≤ ${TARGET.imageIdleMsPer30s} ms`,
    );
    row(
      "  the image's daemon RSS",
      (v) => r.image.get(v) && `${fmt(r.image.get(v)!.rssMiB, 1)} MiB`,
    );
  } else row("image idle CPU per 30 s", () => "not measured (BENCH_LEAN_PARTS)");
  for (const size of [MEMBERS, SMALL])
    for (const b of r.backends) {
      const m = r.events.get(eventKey(size, b));
      row(
        `event → enforced, ${size} containers, p50 of ${RECREATE} [${b}]`,
        (v) => m?.get(v) && eventCell(m.get(v)!),
        size === MEMBERS ? `≤ ${TARGET.eventToEnforcedMs} ms` : "",
      );
    }
  const note =
    `lean phase: ${(r.durationS / 60).toFixed(1)} min` +
    (r.error ? ` (stopped early: ${r.error.split("\n")[0]})` : "");
  return `${TITLE}\n${table(header, rows)}\n${note}`;
}

function eventCell(r: Recreations): string {
  const resync = r.withoutEvent ? ` (${r.withoutEvent} by a resync)` : "";
  return `${fmt(median(r.eventToEnforcedMs), 1)} ms${resync}`;
}
