// The reboot window: `npm run bench:reboot` (root). After a reboot the kernel holds no rule until
// TrafficJam's first pass, while Docker already starts the backends. Measured in an end-to-end lab
// (its own dockerd in its own network namespace), the reboot simulated as test/e2e/lab/reboot.ts
// does it: dockerd stopped (live-restore off, so its containers stop), the lab kernel's rules,
// flows and bridges forgotten, dockerd started again. Prints figures, never pass/fail.
//
// Two ways TrafficJam comes back, as users run it:
//   container   the README's `docker run … --restart unless-stopped` of the product image: dockerd
//               starts it with the backends (the image is built first, as image.test.ts does)
//   host        the host command started once dockerd answers (a unit After=docker.service)
// and the container again with the boot guard (BOOT_GUARD=true, its ruleset loaded before dockerd).
//
// One backend (the watcher, restart always) tries a TCP connection to another every 20 ms from
// its start. Every time is read on the machine's one clock: the watcher's lines by their Docker log
// timestamps, TrafficJam's commit from its first `rules.applied` (its time − ms + enforcedMs).
//
//   BENCH_REBOOTS=5            reboots per way (median and max printed)
//   BENCH_REBOOT_WAYS=container,host,guard
import { mkdirSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { envInt, pct, table } from "./figures.js";
import {
  startDaemon,
  startLab,
  waitFor,
  type DaemonProcess,
  type Lab,
  type LogEntry,
} from "../test/e2e/lab/index.js";
import { PRODUCT_IMAGE, buildProductImage } from "../test/e2e/lab/product-image.js";
import { simulateReboot } from "../test/e2e/lab/reboot.js";
import { SYSCTL_COMMAND, loadCommand } from "../src/ops/boot-guard.js";

const NET = "rebootnet";
const FILTER = "label=tj.role=proxy";
const ROUNDS = envInt("BENCH_REBOOTS", 5, 1, 50);
type Way = "container" | "host" | "guard";
const WAYS = (process.env.BENCH_REBOOT_WAYS?.trim() || "container,host,guard")
  .split(",")
  .map((w) => w.trim()) as Way[];
if (WAYS.some((w) => !["container", "host", "guard"].includes(w)))
  throw new Error(`BENCH_REBOOT_WAYS=${WAYS.join(",")}: expected container, host and/or guard`);

/** RFC 3339 with nanoseconds (Docker's) or ISO with an offset (ours) → ms since the epoch. */
const at = (t: string) => Date.parse(t.replace(/(\.\d{3})\d*/, "$1"));

interface Round {
  way: Way;
  /** dockerd started → it answered. */
  dockerMs: number;
  /** dockerd started → the watcher's first attempt (a backend's first packet). */
  firstPacketMs: number;
  /** The watcher's first attempt → TrafficJam's commit: the window. */
  windowMs: number;
  /** Connections between the two backends that got through, and over how long. */
  leaked: number;
  leakedSpanMs: number;
  /** With the guard: dockerd started → boot.guard.opened, and the first packet → it (the outage). */
  openedMs?: number;
  outageMs?: number;
}

/** The watcher's attempts since its last start: [time, "ok" | "fail …"]. */
async function watcherLines(lab: Lab): Promise<Array<[number, string]>> {
  const raw = (await lab.docker("logs", "--timestamps", "reboot-watcher")).split("\n");
  const lines = raw.map((l) => [l.slice(0, l.indexOf(" ")), l.slice(l.indexOf(" ") + 1)]);
  const start = lines.map(([, text]) => text).lastIndexOf("boot");
  return lines
    .slice(start + 1)
    .filter(([, text]) => /^(ok|fail)/.test(text ?? ""))
    .map(([time, text]) => [at(time ?? ""), text ?? ""]);
}

const parse = (line: string): LogEntry | undefined => {
  try {
    return JSON.parse(line) as LogEntry;
  } catch {
    return undefined;
  }
};

/** TrafficJam's log lines since `since` (its container's, or the host daemon's). */
async function trafficJamLog(lab: Lab, host: DaemonProcess | null, since: number) {
  const lines = host
    ? host.lines
    : (await lab.docker("logs", "trafficjam")).split("\n").filter(Boolean);
  return lines.flatMap((l) => {
    const e = parse(l);
    return e && at(String(e.time)) >= since ? [e] : [];
  });
}

/** When the first pass after `since` committed its rules (ms since the epoch). */
async function firstCommit(lab: Lab, host: DaemonProcess | null, since: number) {
  return waitFor(
    async () => {
      const e = (await trafficJamLog(lab, host, since)).find(
        (x) => x.event === "rules.applied" || x.event === "rules.verified",
      );
      if (!e) return false;
      // rules.verified changed nothing: in force at the end of the pass already
      const end = at(String(e.time));
      const enforced = typeof e.enforcedMs === "number" ? e.enforcedMs : Number(e.ms);
      return end - Number(e.ms) + enforced;
    },
    { timeoutMs: 60_000, intervalMs: 100, what: "TrafficJam's first pass after the reboot" },
  );
}

async function round(lab: Lab, way: Way, guardDir: string, host: { d: DaemonProcess | null }) {
  if (host.d?.running) {
    host.d.signal("SIGTERM");
    await host.d.waitExit(10_000);
  }
  const times = await simulateReboot(lab, async () => {
    if (way !== "guard") return;
    await lab.nsExec(SYSCTL_COMMAND);
    await lab.nsExec(loadCommand(guardDir));
  });
  if (way === "host")
    host.d = startDaemon(lab, { NETWORK: NET, WHITELIST_FILTER: FILTER, INSTANCE_ID: "reboot" });
  const commit = await firstCommit(lab, way === "host" ? host.d : null, times.dockerStarting);
  let openedAt: number | undefined;
  if (way === "guard") {
    const opened = await waitFor(
      async () =>
        (await trafficJamLog(lab, null, times.dockerStarting)).find(
          (e) => e.event === "boot.guard.opened",
        ) ?? false,
      { timeoutMs: 30_000, intervalMs: 100, what: "boot.guard.opened" },
    );
    openedAt = at(String(opened.time));
  }
  await new Promise((r) => setTimeout(r, 1000)); // the watcher's attempts after the commit too
  const attempts = await watcherLines(lab);
  const first = attempts[0]?.[0];
  if (first === undefined) throw new Error("the watcher made no attempt after the reboot");
  const oks = attempts.filter(([, text]) => text === "ok").map(([t]) => t);
  const result: Round = {
    way,
    dockerMs: times.dockerReady - times.dockerStarting,
    firstPacketMs: first - times.dockerStarting,
    windowMs: Math.round(commit - first),
    leaked: oks.length,
    leakedSpanMs: oks.length ? oks[oks.length - 1]! - oks[0]! : 0,
    ...(openedAt === undefined
      ? {}
      : { openedMs: openedAt - times.dockerStarting, outageMs: openedAt - first }),
  };
  console.log(`  ${way} #${JSON.stringify(result)}`);
  return result;
}

async function main(): Promise<void> {
  const lab = await startLab({ name: "rebootb" });
  const dockerVersion = await lab.docker("version", "--format", "{{.Server.Version}}");
  console.log(
    `machine: ${os.cpus().length} CPUs, kernel ${os.release()}, Node ${process.version}, dockerd ${dockerVersion.trim()}, load ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}`,
  );
  const host: { d: DaemonProcess | null } = { d: null };
  try {
    const guardDir = join(lab.paths.base, "boot-guard");
    mkdirSync(guardDir);
    if (WAYS.some((w) => w !== "host")) {
      const t0 = Date.now();
      await buildProductImage(lab);
      console.log(`product image built in ${Math.round((Date.now() - t0) / 1000)} s`);
    }
    await lab.createNetwork(NET, { subnets: ["10.89.0.0/24"] });
    const always = { network: NET, restart: "always" };
    await lab.run({
      name: "reboot-proxy",
      ip: "10.89.0.10",
      labels: { "tj.role": "proxy" },
      ...always,
    });
    await lab.run({ name: "reboot-b1", ip: "10.89.0.11", ...always });
    await lab.run({
      name: "reboot-watcher",
      ip: "10.89.0.20",
      ...always,
      args: ["--stop-signal", "SIGKILL"],
      cmd: ["sh", "-c", "echo boot; exec tjprobe watch 10.89.0.11 80 20 1000000 200"],
    });
    const rounds: Round[] = [];
    for (const way of WAYS) {
      await lab.dockerResult(["rm", "-f", "trafficjam"]);
      if (way !== "host") {
        const env = {
          NETWORK: NET,
          WHITELIST_FILTER: FILTER,
          INSTANCE_ID: "reboot",
          ...(way === "guard" ? { BOOT_GUARD: "true" } : {}),
        };
        await lab.docker(
          ...["run", "-d", "--name", "trafficjam", "--restart", "unless-stopped"],
          ...["--cap-add", "NET_ADMIN", "--network", "host"],
          ...["-v", "/var/run/docker.sock:/var/run/docker.sock"],
          ...["-v", "/var/run/docker/netns:/run/netns:ro,rslave"],
          ...["-v", `${guardDir}:/var/lib/trafficjam/boot-guard`],
          ...Object.entries(env).flatMap(([k, v]) => ["-e", `${k}=${v}`]),
          PRODUCT_IMAGE,
        );
        const since = Date.now() - 60_000;
        await firstCommit(lab, null, since);
        if (way === "guard")
          await waitFor(
            async () =>
              (await trafficJamLog(lab, null, since)).some((e) => e.event === "boot.guard.saved"),
            { timeoutMs: 30_000, intervalMs: 100, what: "boot.guard.saved" },
          );
      }
      for (let i = 0; i < ROUNDS; i++) rounds.push(await round(lab, way, guardDir, host));
      if (host.d?.running) {
        host.d.signal("SIGTERM");
        await host.d.waitExit(10_000);
      }
    }
    const stat = (xs: number[]) => `${pct(xs, 50)} / ${Math.max(...xs)}`;
    const rows = WAYS.map((way) => {
      const rs = rounds.filter((r) => r.way === way);
      return [
        way,
        stat(rs.map((r) => r.dockerMs)),
        stat(rs.map((r) => r.firstPacketMs)),
        stat(rs.map((r) => r.windowMs)),
        `${rs.filter((r) => r.leaked > 0).length}/${rs.length}`,
        stat(rs.map((r) => r.leakedSpanMs)),
        way === "guard" ? stat(rs.map((r) => r.openedMs ?? NaN)) : "",
        way === "guard" ? stat(rs.map((r) => r.outageMs ?? NaN)) : "",
      ];
    });
    console.log(
      `\nreboot window, ${ROUNDS} reboots per way, milliseconds (median / max):\n` +
        table(
          [
            "way",
            "dockerd start→answers",
            "dockerd start→first backend packet",
            "first packet→rules in force",
            "reboots with a backend→backend connection",
            "first→last such connection",
            "dockerd start→guard opened",
            "first packet→guard opened",
          ],
          rows,
        ),
    );
  } finally {
    if (host.d?.running) await host.d.kill();
    await lab.stop();
  }
}

await main();
