// Bridged container traffic only reaches iptables/nftables when br_netfilter says so.
import { readFile, writeFile } from "node:fs/promises";
import { runChecked } from "./exec.js";

const SYSCTLS = ["bridge-nf-call-iptables", "bridge-nf-call-ip6tables"] as const;
export const BRIDGE_SYSCTL_DIR = "/proc/sys/net/bridge";

async function readSysctl(path: string): Promise<string | null> {
  try {
    return (await readFile(path, "utf8")).trim();
  } catch {
    return null;
  }
}

export class BridgeNetfilterError extends Error {
  constructor(readonly off: string[]) {
    super(
      `bridged traffic bypasses the firewall: ${off.join(", ")} not 1. Fix on the host: ` +
        `modprobe br_netfilter && sysctl -w ${off.map((n) => `net.bridge.${n}=1`).join(" ")} ` +
        `(and persist it in /etc/sysctl.d/ and /etc/modules-load.d/)`,
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
 * The same inside the network namespace the tools act in (exec.ts: a Swarm worker's overlay
 * namespace), where the sysctls are the namespace's own: read and set by a shell entered there.
 * A container's /proc/sys is read-only: where the write fails, it is made on a proc mounted
 * anew in a mount namespace of the shell's own (CAP_SYS_ADMIN), which leaves the container's alone.
 */
export async function ensureBridgeNetfilterInTarget(): Promise<{ changed: string[] }> {
  const script = SYSCTLS.map(
    (name) =>
      `f=${BRIDGE_SYSCTL_DIR}/${name}; v=$(cat $f 2>/dev/null); ` +
      `if [ "$v" != 1 ]; then ` +
      `echo 1 2>/dev/null > $f || unshare -m sh -c "mount -t proc proc /proc && echo 1 > $f" 2>/dev/null; ` +
      `echo "${name} $(cat $f 2>/dev/null)"; fi`,
  ).join("\n");
  const out = await runChecked("sh", ["-c", script]);
  const changed: string[] = [];
  const off: string[] = [];
  for (const line of out.split("\n").filter(Boolean)) {
    const [name, value] = line.split(" ");
    (value === "1" ? changed : off).push(name ?? line);
  }
  if (off.length > 0) throw new BridgeNetfilterError(off);
  return { changed };
}
