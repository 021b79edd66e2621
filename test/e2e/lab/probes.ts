// Connectivity probes (tjprobe, busybox ping and nc), run inside a container or on the lab host.
//
// A probe answers true/false only when it really ran: a failed `docker exec` (container gone,
// bad address...) throws instead of reading as "blocked", so a firewall test can never pass
// because its probe did not run.
import { isIP } from "node:net";
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

/** busybox nc's words for a connection that did not open (refused, unreachable, timed out). */
const NC_NOT_CONNECTED = /^nc: (timed out|can't connect to remote host)/m;

/**
 * TCP connect with busybox nc alone (a busybox lab has no tjprobe): its timeout is whole seconds,
 * so timeoutMs is rounded up. nc exits 0 once connected and the server has closed (stdin is
 * /dev/null, so it sends nothing and shuts down its side at once); 1 with NC_NOT_CONNECTED
 * when it could not connect. Anything else (bad address, failed docker exec) throws.
 */
export async function ncTcpProbe(run: Runner, host: string, port: number, timeoutMs = 1000) {
  // as tjprobe, addresses only: nc would spend its timeout on a name lookup and say "timed out"
  if (!isIP(host)) throw new Error(`tcp ${host}:${port}: not an IP address`);
  const seconds = Math.max(1, Math.ceil(timeoutMs / 1000));
  const r = await run(
    ["nc", "-w", String(seconds), host, String(port)],
    seconds * 1000 + EXEC_MARGIN_MS,
  );
  if (r.code === 0) return true;
  if (r.code === 1 && NC_NOT_CONNECTED.test(r.stderr)) return false;
  throw new Error(
    `tcp ${host}:${port}: nc did not run properly (exit ${r.code ?? r.signal}): ${r.stderr.trim()}`,
  );
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

/**
 * Sends one UDP datagram with a forged source address (needs the default NET_RAW capability),
 * from source port `srcPort` (default: 40000 + pid % 20000). `dst` may be "fe80::X%eth0".
 */
export async function spoofUdp(
  run: Runner,
  src: string,
  dst: string,
  port: number,
  payload?: string,
  srcPort?: number,
): Promise<void> {
  const cmd = ["tjprobe", "spoofudp", src, dst, String(port)];
  if (payload || srcPort !== undefined) cmd.push(payload || "spoof");
  if (srcPort !== undefined) cmd.push(String(srcPort));
  const r = await run(cmd);
  if (r.code !== 0) throw new Error(`spoofudp ${src} -> ${dst}:${port} failed: ${r.stderr.trim()}`);
}

/**
 * COUNT VXLAN datagrams from an ordinary UDP socket to `host`:`port` (a node's data path), each
 * wrapping a frame to `dstMac`: "udp", an IPv4 datagram `innerSrc` → `innerDst`:9000 carrying
 * `payloadOrSenderMac`; "arp", an ARP reply claiming `innerSrc` is at `payloadOrSenderMac`.
 */
export async function vxlanSend(
  run: Runner,
  host: string,
  port: number,
  vni: number,
  kind: "udp" | "arp",
  innerSrc: string,
  innerDst: string,
  dstMac: string,
  count: number,
  payloadOrSenderMac: string,
): Promise<void> {
  const cmd = ["tjprobe", "vxlan", host, String(port), String(vni), kind, innerSrc, innerDst];
  await send(
    run,
    [...cmd, dstMac, String(count), payloadOrSenderMac],
    `vxlan ${kind} ${innerSrc} -> ${host}`,
    count * 50,
  );
}

/** Runs a sender that must exit 0 and print "sent..."; returns its stdout. */
async function send(run: Runner, cmd: string[], what: string, timeoutMs: number): Promise<string> {
  const r = await run(cmd, timeoutMs + EXEC_MARGIN_MS);
  if (r.code !== 0 || !r.stdout.startsWith("sent"))
    throw new Error(`${what} failed (exit ${r.code ?? r.signal}): ${r.stderr.trim()}`);
  return r.stdout;
}

/**
 * COUNT ARP replies (~50 ms apart) from `iface` to `dstMac`/`dstIp` saying `claimedIp` is at
 * `senderMac` (default: the interface's own MAC). Raw packet socket (NET_RAW).
 */
export async function arpSpoof(
  run: Runner,
  iface: string,
  claimedIp: string,
  dstIp: string,
  dstMac: string,
  count: number,
  senderMac?: string,
): Promise<void> {
  const cmd = ["tjprobe", "arpspoof", iface, claimedIp, dstIp, dstMac, String(count)];
  if (senderMac) cmd.push(senderMac);
  await send(run, cmd, `arpspoof ${claimedIp} -> ${dstIp}`, count * 50);
}

/**
 * COUNT unsolicited neighbour advertisements (override flag, hop limit 255, ~50 ms apart) from
 * `iface` claiming `target` is at `lladdr` (default: the interface's own MAC), sent to `dst`
 * (a unicast address, or ff02::1).
 */
export async function naSpoof(
  run: Runner,
  iface: string,
  target: string,
  dst: string,
  count: number,
  lladdr?: string,
): Promise<void> {
  const cmd = ["tjprobe", "naspoof", iface, target, dst, String(count)];
  if (lladdr) cmd.push(lladdr);
  await send(run, cmd, `naspoof ${target} -> ${dst}`, count * 50);
}

/** One UDP datagram from an ordinary socket (SO_BROADCAST set; `iface` picks the interface). */
export async function sendUdp(
  run: Runner,
  dst: string,
  port: number,
  payload: string,
  iface?: string,
): Promise<void> {
  const cmd = ["tjprobe", "sendudp", dst, String(port), payload];
  if (iface) cmd.push(iface);
  await send(run, cmd, `sendudp ${dst}:${port}`, 1000);
}

/** COUNT raw Ethernet frames (~10 ms apart) of `ethertype` from `iface` to `dstMac`. */
export async function ethSend(
  run: Runner,
  iface: string,
  dstMac: string,
  ethertype: number,
  count: number,
): Promise<void> {
  const cmd = ["tjprobe", "ethsend", iface, dstMac, ethertypeArg(ethertype), String(count)];
  await send(run, cmd, `ethsend ${ethertypeArg(ethertype)} -> ${dstMac}`, count * 10);
}

export const ethertypeArg = (ethertype: number): string =>
  `0x${ethertype.toString(16).padStart(4, "0")}`;

/** A listener started in a container: ready (joined, bound) when returned; `done` at its end. */
export interface Listener<T> {
  done: Promise<T>;
}

/**
 * Starts a tjprobe listener that runs `seconds` and creates `readyFile` once set up; resolves
 * once that file exists (throws if the listener ends first or is not ready within 10 s).
 */
async function listen<T>(
  run: Runner,
  cmd: string[],
  readyFile: string,
  seconds: number,
  parse: (r: RunResult) => T,
): Promise<Listener<T>> {
  const what = cmd.slice(1).join(" ");
  const rm = await run(["rm", "-f", readyFile]);
  if (rm.code !== 0) throw new Error(`${what}: cannot remove ${readyFile}: ${rm.stderr.trim()}`);
  let finished = false;
  const done = run(cmd, seconds * 1000 + EXEC_MARGIN_MS).then(parse);
  done.then(
    () => (finished = true),
    () => (finished = true),
  );
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (finished) {
      await done; // throws if it failed
      throw new Error(`${what}: ended before it was ready`);
    }
    if ((await run(["test", "-e", readyFile])).code === 0) return { done };
    if (Date.now() > deadline) throw new Error(`${what}: not ready within 10 s`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * Joins multicast `group` on `iface` and collects the "<src ip> <payload>" lines of datagrams
 * to group:port for `seconds`. Resolves once joined.
 */
export function multicastListen(
  run: Runner,
  group: string,
  port: number,
  iface: string,
  seconds: number,
): Promise<Listener<string[]>> {
  const cmd = ["tjprobe", "mlisten", group, String(port), iface, String(seconds)];
  return listen(run, cmd, `/tmp/mlisten-${group}-${port}.ready`, seconds, (r) => {
    if (r.code !== 0) {
      throw new Error(
        `mlisten ${group}:${port} did not run properly (exit ${r.code ?? r.signal}): ${r.stderr.trim()}`,
      );
    }
    return r.stdout.split("\n").filter(Boolean);
  });
}

/** Counts frames of `ethertype` arriving on `iface` for `seconds`. Resolves once listening. */
export function ethListen(
  run: Runner,
  iface: string,
  ethertype: number,
  seconds: number,
): Promise<Listener<number>> {
  const type = ethertypeArg(ethertype);
  const cmd = ["tjprobe", "ethlisten", iface, type, String(seconds)];
  return listen(run, cmd, `/tmp/ethlisten-${iface}-${type}.ready`, seconds, (r) => {
    const m = /^received (\d+)$/m.exec(r.stdout);
    if (r.code !== 0 || !m) {
      throw new Error(
        `ethlisten ${type} did not run properly (exit ${r.code ?? r.signal}): ${r.stderr.trim()}`,
      );
    }
    return Number(m[1]);
  });
}

/**
 * busybox ping for `seconds` (one echo a second) to `host`, e.g. "ff02::1%eth0": the distinct
 * addresses that answered ("64 bytes from ADDR: seq=..."; duplicates of a multicast echo included).
 */
export async function pingResponders(run: Runner, host: string, seconds = 2): Promise<string[]> {
  const r = await run(["ping", "-w", String(seconds), host], seconds * 1000 + EXEC_MARGIN_MS);
  const out = r.stdout + r.stderr;
  const ran = /PING /.test(out) && !/Error response from daemon|OCI runtime/.test(r.stderr);
  if ((r.code !== 0 && r.code !== 1) || !ran) {
    throw new Error(
      `ping ${host}: probe did not run properly (exit ${r.code ?? r.signal}): ${out.trim()}`,
    );
  }
  const from = [...r.stdout.matchAll(/bytes from (\S+?):? seq=/g)].map((m) => m[1] ?? "");
  return [...new Set(from)].sort();
}

/** Parses the "<src ip> <payload>" lines `tjprobe serve` appends to udp.log. */
export function parseUdpLog(text: string): string[] {
  return text.split("\n").filter(Boolean);
}
