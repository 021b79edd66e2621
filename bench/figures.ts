// What bench/run.ts and bench/lean.ts share: environment numbers, percentiles, tables, /proc.
import { readFileSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import { sleep, type DaemonProcess, type LogEntry } from "../test/e2e/lab/index.js";

export function envInt(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name]?.trim();
  if (!raw) return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max)
    throw new Error(`${name}=${raw}: expected an integer from ${min} to ${max}`);
  return value;
}

export function pct(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length))) - 1]!;
}

export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join("  ")
      .trimEnd();
  return [line(header), widths.map((w) => "─".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

export function readProc(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

/** Stops a daemon with SIGTERM (its rules stay in force), killing it if it does not exit. */
export async function stopDaemon(daemon: DaemonProcess): Promise<void> {
  if (!daemon.running) return;
  // `ip netns exec` exec()s node: wait until it has, so the signal reaches the daemon
  for (let i = 0; i < 100 && !readlinkSafe(`/proc/${daemon.pid}/exe`).includes("node"); i++)
    await sleep(20);
  daemon.signal("SIGTERM"); // rules stay in force
  try {
    await daemon.waitExit(15_000);
  } catch {
    await daemon.kill();
  }
}

export function readlinkSafe(path: string): string {
  try {
    return readlinkSync(path);
  } catch {
    return "";
  }
}

/** Whether a pass's log line names `reason` among its comma-separated triggers. */
export const hasReason = (e: LogEntry, reason: string): boolean =>
  String(e.reason ?? "")
    .split(",")
    .includes(reason);

/** CPU time of a cgroup so far, in µs: cgroup v2 cpu.stat usage_usec, else v1 cpuacct.usage. */
export function cgroupCpu(pid: number): { where: string; usec: () => number } {
  const lines = readProc(`/proc/${pid}/cgroup`).split("\n");
  const v2 = lines.find((l) => l.startsWith("0::"))?.slice(3);
  if (v2)
    for (const root of ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]) {
      const file = join(root, v2, "cpu.stat");
      if (/^usage_usec /m.test(readProc(file)))
        return {
          where: file,
          usec: () => Number(/^usage_usec (\d+)/m.exec(readProc(file))?.[1] ?? NaN),
        };
    }
  const v1 = lines.map((l) => l.split(":")).find((f) => f[1]?.split(",").includes("cpuacct"));
  if (v1?.[2]) {
    const file = join("/sys/fs/cgroup", v1[1]!, v1[2], "cpuacct.usage");
    if (readProc(file) !== "")
      return { where: file, usec: () => Number(readProc(file).trim()) / 1000 };
  }
  throw new Error(`no CPU accounting found for the cgroup of pid ${pid}`);
}
