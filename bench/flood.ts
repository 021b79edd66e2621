// The blocked-attempt log under a flood: `npm run bench:flood` (root). Backends of a lab network
// (a real dockerd in its own network namespace) send 10 000 UDP datagrams a second for 30 s to
// another backend, which TrafficJam's rules drop: what the kernel drops and hands to the log,
// what the daemon reads and writes, and what it costs (CPU of the daemon and of its tcpdump,
// memory, log lines and bytes), against a quiet window of the same length just before it (the
// daemon's own resyncs go on meanwhile). Prints figures, never pass/fail. See docs/benchmarks.md.
//
//   BENCH_FLOOD_RATE=10000      datagrams a second, all flooding backends together
//   BENCH_FLOOD_SECONDS=30
//   BENCH_FLOOD_SOURCES=1,20    how many backends flood (each sends RATE / N a second)
//   BENCH_BACKENDS=iptables,nftables
import { execFileSync } from "node:child_process";
import { readdirSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import {
  randomId,
  runCli,
  sleep,
  startDaemon,
  startLab,
  type Container,
  type DaemonProcess,
  type Lab,
} from "../test/e2e/lab/index.js";
import { envInt, readProc, table } from "./figures.js";

const RATE = envInt("BENCH_FLOOD_RATE", 10_000, 1, 200_000);
const SECONDS = envInt("BENCH_FLOOD_SECONDS", 30, 1, 600);
const SOURCES = (process.env.BENCH_FLOOD_SOURCES?.trim() || "1,20").split(",").map((s) => {
  const n = Number(s.trim());
  if (!Number.isInteger(n) || n < 1 || n > 50)
    throw new Error(`BENCH_FLOOD_SOURCES=${s}: expected integers from 1 to 50, comma-separated`);
  return n;
});
const BACKENDS = (process.env.BENCH_BACKENDS?.trim() || "iptables,nftables").split(",").map((b) => {
  if (b !== "iptables" && b !== "nftables")
    throw new Error(`BENCH_BACKENDS=${b}: expected iptables and/or nftables`);
  return b;
});

const NETWORK = "floodnet";
const INSTANCE_ID = "flood";
const log = (line = ""): void => console.log(line);

const CLK_TCK = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

interface Proc {
  pid: number;
  ppid: number;
  comm: string;
  /** utime + stime, seconds. */
  cpuS: number;
  rssKiB: number;
}

function proc(pid: number): Proc | undefined {
  const stat = readProc(`/proc/${pid}/stat`);
  if (!stat) return undefined;
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const field = (n: number) => Number(f[n - 3] ?? 0);
  return {
    pid,
    ppid: field(4),
    comm: readProc(`/proc/${pid}/comm`).trim(),
    cpuS: (field(14) + field(15)) / CLK_TCK,
    rssKiB: Number(/^VmRSS:\s+(\d+) kB/m.exec(readProc(`/proc/${pid}/status`))?.[1] ?? 0),
  };
}

/** The daemon (node) and every process below it, by pid. */
function tree(root: number): Proc[] {
  const all = readdirSync("/proc")
    .filter((e) => /^\d+$/.test(e))
    .flatMap((e) => proc(Number(e)) ?? []);
  const found = all.filter((p) => p.pid === root);
  for (let i = 0; i < found.length; i++)
    for (const p of all) if (p.ppid === found[i]!.pid && !found.includes(p)) found.push(p);
  return found;
}

interface Sample {
  at: number;
  node: number;
  tcpdump: number;
  others: number;
  nodeRssKiB: number;
  tcpdumpRssKiB: number;
}

function sample(daemon: DaemonProcess): Sample {
  const procs = tree(daemon.pid);
  const sum = (pred: (p: Proc) => boolean) => procs.filter(pred).reduce((s, p) => s + p.cpuS, 0);
  return {
    at: performance.now(),
    node: sum((p) => p.pid === daemon.pid),
    tcpdump: sum((p) => p.comm === "tcpdump"),
    others: sum((p) => p.pid !== daemon.pid && p.comm !== "tcpdump"),
    nodeRssKiB: procs.find((p) => p.pid === daemon.pid)?.rssKiB ?? 0,
    tcpdumpRssKiB: procs.find((p) => p.comm === "tcpdump")?.rssKiB ?? 0,
  };
}

interface Counters {
  dropped: number;
  packetsRead: number;
  attempts: number;
}

async function counters(lab: Lab, env: Record<string, string>): Promise<Counters> {
  const r = await runCli(lab, env, ["status", "--json"]);
  const [s] = JSON.parse(r.stdout) as Array<{
    drops: Record<string, number>;
    attempts: { packets: number; byKind: Record<string, number> };
  }>;
  if (!s?.drops || !s.attempts) throw new Error(`status: ${r.stdout}${r.stderr}`);
  return {
    dropped: s.drops["member-to-member"] ?? 0,
    packetsRead: s.attempts.packets,
    attempts: s.attempts.byKind["member-to-member"] ?? 0,
  };
}

interface Run {
  backend: string;
  sources: number;
  wallS: number;
  sent: number;
  dropped: number;
  packetsRead: number;
  attempts: number;
  lines: number;
  attemptLines: number;
  bytes: number;
  cpu: { node: number; tcpdump: number; others: number };
  /** The same, over as long a quiet window just before the flood. */
  quiet: { node: number; tcpdump: number; others: number; wallS: number };
  rss: { node: [number, number]; tcpdump: number };
}

async function flood(
  lab: Lab,
  daemon: DaemonProcess,
  env: Record<string, string>,
  backend: string,
  sources: Container[],
  target: Container,
): Promise<Run> {
  const q0 = sample(daemon);
  await sleep(SECONDS * 1000);
  const q1 = sample(daemon);
  const before = await counters(lab, env);
  const firstLine = daemon.lines.length;
  const s0 = sample(daemon);
  const each = Math.floor(RATE / sources.length);
  const results = await Promise.all(
    sources.map((c) =>
      lab.exec(
        c,
        ["tjprobe", "flood", target.ipv4, "9999", String(each), String(SECONDS)],
        (SECONDS + 60) * 1000,
      ),
    ),
  );
  const s1 = sample(daemon);
  await sleep(1500); // the last logged packets through tcpdump, the state file written
  const after = await counters(lab, env);
  const sent = results.reduce((sum, r) => {
    const n = /^sent (\d+)$/m.exec(r.stdout)?.[1];
    if (r.code !== 0 || n === undefined) throw new Error(`flood: ${r.stdout}${r.stderr}`);
    return sum + Number(n);
  }, 0);
  const lines = daemon.lines.slice(firstLine);
  const wallS = (s1.at - s0.at) / 1000;
  return {
    backend,
    sources: sources.length,
    wallS,
    sent,
    dropped: after.dropped - before.dropped,
    packetsRead: after.packetsRead - before.packetsRead,
    attempts: after.attempts - before.attempts,
    lines: lines.length,
    attemptLines: lines.filter((l) => /"event":"attempts?\./.test(l)).length,
    bytes: lines.reduce((sum, l) => sum + Buffer.byteLength(l) + 1, 0),
    cpu: {
      node: s1.node - s0.node,
      tcpdump: s1.tcpdump - s0.tcpdump,
      others: s1.others - s0.others,
    },
    quiet: {
      node: q1.node - q0.node,
      tcpdump: q1.tcpdump - q0.tcpdump,
      others: q1.others - q0.others,
      wallS: (q1.at - q0.at) / 1000,
    },
    rss: { node: [s0.nodeRssKiB, s1.nodeRssKiB], tcpdump: s1.tcpdumpRssKiB },
  };
}

const pct = (cpuS: number, wallS: number) => `${((cpuS / wallS) * 100).toFixed(1)} %`;
const n = (x: number) => x.toLocaleString("en-US");

function report(runs: readonly Run[]): string {
  const rows: Array<[string, ...string[]]> = [
    ["datagrams sent (all sources)", ...runs.map((r) => n(r.sent))],
    ["  a second", ...runs.map((r) => n(Math.round(r.sent / r.wallS)))],
    ["dropped by the rules (kernel counters)", ...runs.map((r) => n(r.dropped))],
    [
      "read by the daemon from the log (after the kernel's limits)",
      ...runs.map((r) => n(r.packetsRead)),
    ],
    ["  a second", ...runs.map((r) => (r.packetsRead / r.wallS).toFixed(1))],
    ["new attempts (distinct)", ...runs.map((r) => n(r.attempts))],
    [
      "log lines written (of them attempt.* / attempts.*)",
      ...runs.map((r) => `${r.lines} (${r.attemptLines})`),
    ],
    ["log bytes written", ...runs.map((r) => n(r.bytes))],
    [
      "daemon CPU (node) during the flood, of one core",
      ...runs.map((r) => `${r.cpu.node.toFixed(2)} s = ${pct(r.cpu.node, r.wallS)}`),
    ],
    [
      "  the same time just before, no flood",
      ...runs.map((r) => `${r.quiet.node.toFixed(2)} s = ${pct(r.quiet.node, r.quiet.wallS)}`),
    ],
    [
      "  the flood's own share",
      ...runs.map((r) => pct(r.cpu.node / r.wallS - r.quiet.node / r.quiet.wallS, 1)),
    ],
    [
      "tcpdump CPU during the flood (before)",
      ...runs.map((r) => `${pct(r.cpu.tcpdump, r.wallS)} (${pct(r.quiet.tcpdump, r.quiet.wallS)})`),
    ],
    [
      "the tools the daemon runs (before)",
      ...runs.map((r) => `${r.cpu.others.toFixed(2)} s (${r.quiet.others.toFixed(2)} s)`),
    ],
    [
      "daemon RSS before → after",
      ...runs.map(
        (r) => `${(r.rss.node[0] / 1024).toFixed(1)} → ${(r.rss.node[1] / 1024).toFixed(1)} MiB`,
      ),
    ],
    ["tcpdump RSS", ...runs.map((r) => `${(r.rss.tcpdump / 1024).toFixed(1)} MiB`)],
  ];
  return table(
    ["", ...runs.map((r) => `${r.backend}, ${r.sources} source${r.sources > 1 ? "s" : ""}`)],
    rows,
  );
}

async function main(): Promise<number> {
  if (process.getuid?.() !== 0) {
    console.error("npm run bench:flood needs root (network namespaces, netfilter)");
    return 1;
  }
  log(`TrafficJam flood benchmark: ${n(RATE)} blocked datagrams a second for ${SECONDS} s`);
  log(
    `machine: ${os.cpus().length} × ${os.cpus()[0]?.model.trim() ?? "?"}, kernel ${os.release()}, node ${process.version}, load ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}`,
  );
  const lab = await startLab({ name: `flood-${randomId(2)}` });
  const runs: Run[] = [];
  let failed = false;
  try {
    await lab.createNetwork(NETWORK, { subnets: ["10.89.0.0/16"] });
    const most = Math.max(...SOURCES);
    await lab.run({
      name: "proxy",
      network: NETWORK,
      ip: "10.89.0.2",
      labels: { "tj.role": "proxy" },
    });
    const target = await lab.run({ name: "target", network: NETWORK, ip: "10.89.0.3" });
    const backends: Container[] = [];
    for (let i = 0; i < most; i += 8)
      backends.push(
        ...(await Promise.all(
          Array.from({ length: Math.min(8, most - i) }, (_, j) =>
            lab.run({ name: `b${i + j}`, network: NETWORK, ip: `10.89.1.${i + j + 2}` }),
          ),
        )),
      );
    log(
      `lab ${lab.netns}: dockerd ${await lab.docker("version", "--format", "{{.Server.Version}}")}, ${most + 2} containers on ${NETWORK}`,
    );
    for (const backend of BACKENDS) {
      const env = {
        NETWORK,
        WHITELIST_FILTER: "label=tj.role=proxy",
        INSTANCE_ID,
        FIREWALL_BACKEND: backend,
        TRAFFICJAM_STATE_DIR: join(lab.paths.base, "state"),
      };
      const daemon = startDaemon(lab, env);
      await daemon.waitForLog((e) => e.event === "attempts.reading", 60_000);
      await daemon.waitForLog(
        (e) => e.event === "rules.applied" || e.event === "rules.verified",
        60_000,
      );
      await sleep(3000); // every member bound (ports looked up beside the first pass)
      for (const count of SOURCES) {
        log(`  ${backend}: ${SECONDS} s quiet, then ${count} source(s) flooding…`);
        runs.push(await flood(lab, daemon, env, backend, backends.slice(0, count), target));
      }
      daemon.signal("SIGUSR1");
      await daemon.waitExit(30_000);
    }
  } catch (error) {
    failed = true;
    console.error(`flood benchmark failed: ${(error as Error).stack ?? String(error)}`);
  } finally {
    await lab.stop();
  }
  if (runs.length > 0) log(`\n${report(runs)}`);
  return failed ? 1 : 0;
}

process.exitCode = await main();
