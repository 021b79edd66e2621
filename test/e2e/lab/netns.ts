// The lab's network namespace: a fresh "host" whose firewall dockerd and TrafficJam may change
// freely, while the machine's own root namespace is never touched.
import { existsSync } from "node:fs";
import { run, runOk, type RunResult } from "./exec.js";

/**
 * Runs a command in the netns with `ip netns exec`, which also mounts a sysfs of the netns
 * (so /sys/class/net matches what netlink shows, as on a real host). It exec()s the command.
 */
export function nsRun(
  netns: string,
  cmd: readonly string[],
  timeoutMs = 30_000,
): Promise<RunResult> {
  return run("ip", ["netns", "exec", netns, ...cmd], { timeoutMs });
}

export function nsRunOk(
  netns: string,
  cmd: readonly string[],
  timeoutMs = 30_000,
): Promise<string> {
  return runOk("ip", ["netns", "exec", netns, ...cmd], { timeoutMs });
}

export async function createNetns(netns: string): Promise<void> {
  if (existsSync(`/run/netns/${netns}`)) throw new Error(`netns ${netns} already exists`);
  await runOk("ip", ["netns", "add", netns]);
  await nsRunOk(netns, ["ip", "link", "set", "lo", "up"]);
  // ip_forward=0 as on a fresh host, so dockerd turns it on and sets the FORWARD policy to DROP.
  // accept_dad=0: the bridge gateways' IPv6 addresses are usable at once instead of after ~2 s
  // of duplicate address detection (container addresses are NODAD already).
  await nsRunOk(netns, [
    "sysctl",
    "-q",
    "-w",
    "net.ipv4.ip_forward=0",
    "net.ipv6.conf.all.accept_dad=0",
    "net.ipv6.conf.default.accept_dad=0",
  ]);
  // Bridged traffic must traverse iptables (per-netns setting, 1 by default on this kernel).
  const r = await nsRun(netns, [
    "sysctl",
    "-q",
    "-w",
    "net.bridge.bridge-nf-call-iptables=1",
    "net.bridge.bridge-nf-call-ip6tables=1",
  ]);
  if (r.code !== 0) {
    throw new Error(
      `cannot enable bridge-nf-call-ip(6)tables in ${netns} (br_netfilter?): ${r.stderr}`,
    );
  }
}

/** Reads a sysctl inside the netns (procfs resolves net.* against the reader's netns). */
export async function nsSysctl(netns: string, key: string): Promise<string> {
  return (await nsRunOk(netns, ["sysctl", "-n", key])).trim();
}
