// Bridged container traffic only reaches iptables/nftables when br_netfilter says so. Set (where
// allowed) at start; read again at every resync, since someone may switch it off later, and then
// the bridge bypasses every rule.
import { readFile, writeFile } from "node:fs/promises";
import { runChecked, type Host } from "./host.js";

const SYSCTLS = ["bridge-nf-call-iptables", "bridge-nf-call-ip6tables"] as const;
export const BRIDGE_SYSCTL_DIR = "/proc/sys/net/bridge";

async function readSysctl(path: string): Promise<string | null> {
  try {
    return (await readFile(path, "utf8")).trim();
  } catch {
    return null;
  }
}

const fixOf = (off: readonly string[]) =>
  `modprobe br_netfilter && sysctl -w ${off.map((n) => `net.bridge.${n}=1`).join(" ")} ` +
  `(and persist it in /etc/sysctl.d/ and /etc/modules-load.d/)`;

export class BridgeNetfilterError extends Error {
  constructor(readonly off: string[]) {
    super(
      `bridged traffic bypasses the firewall: ${off.join(", ")} not 1. Fix on the host: ${fixOf(off)}`,
    );
    this.name = "BridgeNetfilterError";
  }
}

/** Makes sure both sysctls are 1, setting them if we may; throws with the fix otherwise. */
export async function ensureBridgeNetfilter(
  dir = BRIDGE_SYSCTL_DIR,
): Promise<{ changed: string[] }> {
  const changed: string[] = [];
  const off: string[] = [];
  for (const name of SYSCTLS) {
    const path = `${dir}/${name}`;
    if ((await readSysctl(path)) === "1") continue;
    try {
      await writeFile(path, "1");
    } catch {
      // read-only /proc/sys or no br_netfilter: reported below
    }
    if ((await readSysctl(path)) === "1") changed.push(name);
    else off.push(name);
  }
  if (off.length > 0) throw new BridgeNetfilterError(off);
  return { changed };
}

/**
 * The sysctls that are not 1, read (never set: that is the host's setting to change, and the
 * message says how) in the namespace the host's tools act in: ours from procfs, another one by a
 * shell entered there.
 */
export async function bridgeNetfilterOff(host: Host, dir = BRIDGE_SYSCTL_DIR): Promise<string[]> {
  if (host.netns === null) {
    const values = await Promise.all(SYSCTLS.map((name) => readSysctl(`${dir}/${name}`)));
    return SYSCTLS.filter((_, i) => values[i] !== "1");
  }
  const script = SYSCTLS.map((name) => `echo "${name} $(cat ${dir}/${name} 2>/dev/null)"`).join(
    "\n",
  );
  const out = await runChecked(host, "sh", ["-c", script]);
  return SYSCTLS.filter((name) => !new RegExp(`^${name} 1$`, "m").test(out));
}

/** What to tell the operator when `off` is not empty. */
export function bridgeNetfilterFix(off: readonly string[]): string {
  return fixOf(off);
}

/**
 * The same inside another network namespace (a Swarm worker's overlay namespace), where the
 * sysctls are the namespace's own: read and set by a shell entered there. A container's
 * /proc/sys is read-only: where the write fails, it is made on a proc mounted anew in a mount
 * namespace of the shell's own (CAP_SYS_ADMIN), which leaves the container's alone.
 */
export async function ensureBridgeNetfilterIn(host: Host): Promise<{ changed: string[] }> {
  const script = SYSCTLS.map(
    (name) =>
      `f=${BRIDGE_SYSCTL_DIR}/${name}; v=$(cat $f 2>/dev/null); ` +
      `if [ "$v" != 1 ]; then ` +
      `echo 1 2>/dev/null > $f || unshare -m sh -c "mount -t proc proc /proc && echo 1 > $f" 2>/dev/null; ` +
      `echo "${name} $(cat $f 2>/dev/null)"; fi`,
  ).join("\n");
  const out = await runChecked(host, "sh", ["-c", script]);
  const changed: string[] = [];
  const off: string[] = [];
  for (const line of out.split("\n").filter(Boolean)) {
    const [name, value] = line.split(" ");
    (value === "1" ? changed : off).push(name ?? line);
  }
  if (off.length > 0) throw new BridgeNetfilterError(off);
  return { changed };
}
