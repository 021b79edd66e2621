// Connectivity probes (tjprobe, busybox ping), run inside a container or on the lab host.
//
// A probe answers true/false only when it really ran: a failed `docker exec` (container gone,
// bad address...) throws instead of reading as "blocked", so a firewall test can never pass
// because its probe did not run.
import type { RunResult } from "./exec.js";

/** Runs a probe command ("tjprobe ..." / "ping ...") somewhere: docker exec, or the lab host. */
export type Runner = (cmd: readonly string[], timeoutMs?: number) => Promise<RunResult>;

/** docker exec overhead on top of the probe's own timeout */
const EXEC_MARGIN_MS = 15_000;

function outcome(r: RunResult, what: string): boolean {
  if (r.code === 0) return true;
  if (r.code === 1 && r.stderr.includes("tjprobe:")) return false;
  throw new Error(
    `${what}: probe did not run properly (exit ${r.code ?? r.signal}): ${r.stderr.trim()}`,
  );
}

export async function tcpProbe(run: Runner, host: string, port: number, timeoutMs = 1000) {
  const r = await run(
    ["tjprobe", "tcp", host, String(port), String(timeoutMs)],
    timeoutMs + EXEC_MARGIN_MS,
  );
  return outcome(r, `tcp ${host}:${port}`);
}

export async function udpProbe(
  run: Runner,
  host: string,
  port: number,
  timeoutMs = 1000,
  payload?: string,
): Promise<boolean> {
  const cmd = ["tjprobe", "udp", host, String(port), String(timeoutMs)];
  if (payload) cmd.push(payload);
  return outcome(await run(cmd, timeoutMs + EXEC_MARGIN_MS), `udp ${host}:${port}`);
}

/** busybox ping -c1 -W1 (IPv4 or IPv6 literal). */
export async function pingProbe(run: Runner, host: string): Promise<boolean> {
  const r = await run(["ping", "-c1", "-W1", host], 1000 + EXEC_MARGIN_MS);
  if (r.code === 0) return true;
  const out = r.stdout + r.stderr;
  const ran = /PING |ping: /.test(out) && !/Error response from daemon|OCI runtime/.test(r.stderr);
  if (r.code === 1 && ran) return false;
  throw new Error(
    `ping ${host}: probe did not run properly (exit ${r.code ?? r.signal}): ${out.trim()}`,
  );
}

export interface WatchResult {
  ok: number;
  fail: number;
  /** One entry per attempt: "ok" or "fail <reason>". */
  attempts: string[];
}

/** COUNT TCP connects, one every intervalMs (each bounded by timeoutMs, default intervalMs). */
export async function watchProbe(
  run: Runner,
  host: string,
  port: number,
  intervalMs: number,
  count: number,
  timeoutMs = intervalMs,
): Promise<WatchResult> {
  const cmd = ["tjprobe", "watch", host, String(port), String(intervalMs), String(count)];
  cmd.push(String(timeoutMs));
  const r = await run(cmd, count * (intervalMs + timeoutMs) + EXEC_MARGIN_MS);
  const lines = r.stdout.trimEnd().split("\n");
  const summary = /^summary ok=(\d+) fail=(\d+)$/.exec(lines.at(-1) ?? "");
  if (!summary || (r.code !== 0 && r.code !== 1)) {
    throw new Error(
      `watch ${host}:${port}: probe did not run properly (exit ${r.code}): ${r.stderr.trim()}`,
    );
  }
  return { ok: Number(summary[1]), fail: Number(summary[2]), attempts: lines.slice(0, -1) };
}

/** Sends one UDP datagram with a forged source address (needs the default NET_RAW capability). */
export async function spoofUdp(
  run: Runner,
  src: string,
  dst: string,
  port: number,
  payload?: string,
): Promise<void> {
  const cmd = ["tjprobe", "spoofudp", src, dst, String(port)];
  if (payload) cmd.push(payload);
  const r = await run(cmd);
  if (r.code !== 0) throw new Error(`spoofudp ${src} -> ${dst}:${port} failed: ${r.stderr.trim()}`);
}

/** Parses the "<src ip> <payload>" lines `tjprobe serve` appends to udp.log. */
export function parseUdpLog(text: string): string[] {
  return text.split("\n").filter(Boolean);
}
