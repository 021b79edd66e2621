// The receiving node's own check of what arrives through the overlay's VXLAN tunnel. Inside the
// overlay namespace, another node's allowed address can only be bound to the VXLAN port, which
// every node's frames share: if a node's worker is not enforcing (a node that just joined, a
// worker that crashed), a backend there could claim a proxy's address of a third node. The
// encapsulated packet still says which node sent it: its outer source. So in the node's own
// namespace, where the VXLAN socket receives, a packet of this overlay (its VNI) whose inner
// IPv4 or ARP sender is an allowed address of another node is dropped unless it comes from that
// node's underlay address. Rendering is pure; the table is replaced whole in one `nft -f`.
import type { Host } from "../host/host.js";

export const VXLAN_PORT = 4789;

export interface TunnelOrigin {
  /** An allowed address of another node, on the overlay. */
  ipv4: string;
  /** That node's underlay address: the only outer source it may arrive from. */
  hostIp: string;
}

export const vxlanGuardName = (instanceId: string) => `trafficjam-vxlan_${instanceId}`;

const hex32 = (ipv4: string) =>
  `0x${ipv4
    .split(".")
    .map((b) => Number(b).toString(16).padStart(2, "0"))
    .join("")}`;

// Offsets in bits from the UDP header: UDP 8 bytes, VXLAN 8 bytes (VNI at its 5th), then the
// inner Ethernet header (type at byte 12), then the inner IPv4 header (source at byte 12) or
// ARP (sender address at byte 14).
const VNI = "@th,96,24";
const INNER_TYPE = "@th,224,16";
const INNER_IP_SOURCE = "@th,336,32";
const INNER_ARP_SENDER = "@th,352,32";

/** The whole table, or null when there is nothing to check (no other node's address allowed). */
export function renderVxlanGuard(
  instanceId: string,
  vni: number,
  origins: readonly TunnelOrigin[],
): string | null {
  const name = vxlanGuardName(instanceId);
  const valid = origins.filter((o) => /^\d+\.\d+\.\d+\.\d+$/.test(o.hostIp));
  const ours = `udp dport ${VXLAN_PORT} ${VNI} ${vni}`;
  const rules = [...valid]
    .sort((a, b) => (a.ipv4 < b.ipv4 ? -1 : a.ipv4 > b.ipv4 ? 1 : 0))
    .flatMap((o) => [
      `${ours} ${INNER_TYPE} 0x0800 ${INNER_IP_SOURCE} ${hex32(o.ipv4)} ip saddr != ${o.hostIp} drop`,
      `${ours} ${INNER_TYPE} 0x0806 ${INNER_ARP_SENDER} ${hex32(o.ipv4)} ip saddr != ${o.hostIp} drop`,
    ]);
  if (rules.length === 0) return null;
  return [
    `table inet ${name} {`,
    `  chain input {`,
    `    type filter hook input priority -200; policy accept;`,
    ...rules.map((r) => `    ${r}`),
    `  }`,
    `}`,
  ].join("\n");
}

/** Keeps the table in the node's own namespace (where the worker runs: host networking). */
export class VxlanGuard {
  private applied: string | null | undefined = undefined;

  constructor(
    private readonly instanceId: string,
    /** The node's own namespace (the worker runs with host networking). */
    private readonly host: Host,
  ) {}

  /** Puts `script` in force (null: no table), unless it already is and `fresh` is false. */
  async sync(script: string | null, fresh: boolean): Promise<boolean> {
    if (!fresh && script === this.applied) return false;
    const name = `inet ${vxlanGuardName(this.instanceId)}`;
    // add + delete + define: replaced whole, in one transaction, whether it existed or not.
    const text = [`add table ${name}`, `delete table ${name}`, ...(script ? [script] : [])].join(
      "\n",
    );
    const result = await this.host.run("nft", ["-f", "-"], `${text}\n`);
    if (result.code !== 0) throw new Error(`nft -f (${name}) failed: ${result.stderr.trim()}`);
    this.applied = script;
    return true;
  }

  clear(): Promise<boolean> {
    return this.sync(null, true);
  }
}
