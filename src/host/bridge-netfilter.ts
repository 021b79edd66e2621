// Bridged container traffic only reaches iptables/nftables when br_netfilter says so.
import { readFile, writeFile } from "node:fs/promises";

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
