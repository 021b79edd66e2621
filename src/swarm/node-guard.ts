// A Swarm node's own namespace, where the overlay's tunnel ends and where its tasks' way out
// (docker_gwbridge) leads: what no container may do there. Pure: a NodeGuard (plain data) →
// two nftables tables, converged like every other table (node-guard-backend.ts).
//
// - The tunnel binds every endpoint of the overlay to its node. A VXLAN datagram of this overlay
//   (its data-path port and VNI) whose inner IPv4 source, ARP sender or Ethernet source is an
//   endpoint of another node is dropped unless its outer source is that node's data-path
//   address; one claiming an endpoint of this node is dropped whatever its outer source (a
//   node's own endpoints never arrive through the tunnel). So no node, and no container of a
//   node (its datagrams are masqueraded to its node's address), can speak for another node's
//   endpoints: not the proxy, not a load-balancer address, not a backend replying in a flow.
// - No container sends into the data path: a datagram from a container bridge (Docker's
//   bridges: docker_gwbridge, docker0, br-<id>, custom names) to the data-path port is dropped, whether it is for this node (input) or another (forward, before
//   it is masqueraded); so is a connection to the workers' channel port, but from the Swarm
//   daemon's own container where it runs here (bound to its port).
// - Unless ALLOW_HOST_TRAFFIC, members of the overlay do not open connections to their node:
//   from their docker_gwbridge address (bound to their port there) to any address of the node,
//   published ports included (the original destination, before Docker's DNAT).
import { isIPv4 } from "node:net";
import type { PortIdentity } from "../model.js";
import { plainSet } from "../firewall/nftables/layout.js";
import {
  filterHook,
  rule,
  type ChainBlock,
  type SetBlock,
  type TableModel,
} from "../firewall/nftables/table.js";
import { overlayMac } from "./protocol.js";

/** What a worker knows of its node, for the guard. */
export interface NodeGuard {
  instanceId: string;
  /** The overlay's VXLAN network identifier and the data-path UDP port (Docker's --data-path-port). */
  vni: number;
  dataPort: number;
  /** The workers' channel port (TCP). */
  channelPort: number;
  /** Endpoints of other nodes (IPv4 on the overlay) with their node's data-path address. */
  remote: ReadonlyArray<{ ipv4: string; hostIp: string }>;
  /** Endpoints of this node on the overlay: never from the tunnel. */
  local: readonly string[];
  /**
   * Docker's bridges on the node (docker0, docker_gwbridge, br-<id>, custom names): where
   * containers' packets come from. By name, not by a `br-*` pattern, which a host's own bridge
   * carrying the underlay could match.
   */
  bridges: readonly string[];
  /**
   * The Swarm daemon's container on this node, if it runs here: its address on the bridge it
   * reaches the nodes through, bound to its port there. It alone may reach the channel port.
   */
  daemon: (PortIdentity & { bridge: string }) | null;
  /** The members' identities on docker_gwbridge, bound to their ports: null with ALLOW_HOST_TRAFFIC. */
  members: readonly PortIdentity[] | null;
  /** Every address of the node (its namespace): what members may not open connections to. */
  nodeAddresses: readonly string[];
}

export const nodeGuardName = (instanceId: string) => `trafficjam-node_${instanceId}`;
export const GATEWAY_BRIDGE = "docker_gwbridge";

const hex = (bytes: number[]) =>
  `0x${BigInt(`0x${bytes.map((b) => b.toString(16).padStart(2, "0")).join("")}`).toString(16)}`;
const ipv4Hex = (a: string) => hex(a.split(".").map(Number));
const macHex = (mac: string) => hex(mac.split(":").map((b) => parseInt(b, 16)));

// Offsets in bits from the UDP header: UDP 8 bytes, VXLAN 8 (its VNI at byte 4), then the
// inner Ethernet header (source at byte 6, type at byte 12), then the inner IPv4 header (source at
// byte 12) or ARP (sender protocol address at byte 14).
const VNI = "@th,96,24";
const INNER_SOURCE_MAC = "@th,176,48";
const INNER_TYPE = "@th,224,16";
const INNER_IP_SOURCE = "@th,336,32";
const INNER_ARP_SENDER = "@th,352,32";

const rawSet = (type: string, declaration: string, elements: string[]): SetBlock => ({
  declaration: `typeof ${declaration}`,
  type,
  flags: [],
  elements,
});
const sorted = (values: Iterable<string>) => [...new Set(values)].sort();

/** The node's tables: `inet` (tunnel, data path, the node) and `bridge` (bound identities). */
export function nodeGuardTables(guard: NodeGuard): { inet: TableModel; bridge: TableModel } {
  const name = nodeGuardName(guard.instanceId);
  const remote = guard.remote.filter((r) => isIPv4(r.hostIp) && !guard.local.includes(r.ipv4));
  const all = sorted([...remote.map((r) => r.ipv4), ...guard.local]);
  const bound = [...(guard.members ?? []), ...(guard.daemon ? [guard.daemon] : [])];
  const sets = new Map<string, SetBlock>([
    ["endpoints4", rawSet("integer", INNER_IP_SOURCE, all.map(ipv4Hex))],
    [
      "tunnel4",
      rawSet(
        "integer . ipv4_addr",
        `${INNER_IP_SOURCE} . ip saddr`,
        remote.map((r) => `${ipv4Hex(r.ipv4)} . ${r.hostIp}`),
      ),
    ],
    [
      "endpointmacs",
      rawSet(
        "integer",
        INNER_SOURCE_MAC,
        all.map((a) => macHex(overlayMac(a))),
      ),
    ],
    [
      "tunnelmacs",
      rawSet(
        "integer . ipv4_addr",
        `${INNER_SOURCE_MAC} . ip saddr`,
        remote.map((r) => `${macHex(overlayMac(r.ipv4))} . ${r.hostIp}`),
      ),
    ],
    ["bridges", plainSet("ifname", sorted(guard.bridges))],
    [
      "daemon",
      plainSet(
        "ifname . ipv4_addr",
        guard.daemon ? guard.daemon.ipv4.map((a) => `${guard.daemon!.bridge} . ${a}`) : [],
      ),
    ],
  ]);
  const tunnel = `udp dport ${guard.dataPort} ${VNI} ${guard.vni}`;
  const from = "iifname @bridges";
  const dataPath = [
    `${from} udp dport ${guard.dataPort} drop`,
    `${from} meta nfproto ipv6 tcp dport ${guard.channelPort} drop`,
    `${from} tcp dport ${guard.channelPort} iifname . ip saddr != @daemon drop`,
  ];
  const input = [
    `${tunnel} ${INNER_TYPE} 0x0800 ${INNER_IP_SOURCE} @endpoints4 ${INNER_IP_SOURCE} . ip saddr != @tunnel4 drop`,
    `${tunnel} ${INNER_TYPE} 0x0806 ${INNER_ARP_SENDER} @endpoints4 ${INNER_ARP_SENDER} . ip saddr != @tunnel4 drop`,
    `${tunnel} ${INNER_SOURCE_MAC} @endpointmacs ${INNER_SOURCE_MAC} . ip saddr != @tunnelmacs drop`,
    ...dataPath,
  ];
  const forward = [...dataPath];
  const output: string[] = [];
  if (guard.members !== null) {
    sets.set("members4", plainSet("ipv4_addr", sorted(guard.members.flatMap((m) => m.ipv4))));
    const node4 = guard.nodeAddresses.filter((a) => isIPv4(a));
    sets.set("node4", plainSet("ipv4_addr", sorted(node4)));
    const member = `iifname "${GATEWAY_BRIDGE}" ip saddr @members4 ct state new`;
    input.push(`${member} drop`);
    forward.push(`${member} ct original ip daddr @node4 drop`);
    // A member → node flow cut at the start must not be picked up again by the node's next
    // segment (as on one host: see TJO_<ID> in ../firewall/iptables/layout.ts).
    output.push(
      `oifname "${GATEWAY_BRIDGE}" ip daddr @members4 ct state new tcp flags & (fin | syn | rst | ack) != syn drop`,
    );
  }
  const hook = (h: string) => filterHook(h, -200);
  const inet: TableModel = {
    family: "inet",
    name,
    sets,
    chains: new Map<string, ChainBlock>([
      ["input", { hook: hook("input"), rules: input.map(rule) }],
      ["forward", { hook: hook("forward"), rules: forward.map(rule) }],
      ...(output.length > 0
        ? [["output", { hook: hook("output"), rules: output.map(rule) }] as const]
        : []),
    ]),
  };
  // The bound identities (members and the daemon on their bridges) are refused from every other
  // port: nobody else on docker_gwbridge speaks as a member, or as the daemon.
  const bridge: TableModel = {
    family: "bridge",
    name,
    sets: new Map<string, SetBlock>([
      [
        "boundmac",
        plainSet("ether_addr . ifname", sorted(bound.map((p) => `${p.mac} . ${p.port}`))),
      ],
      ["guardedmac", plainSet("ether_addr", sorted(bound.map((p) => p.mac)))],
      [
        "bound4",
        plainSet(
          "ipv4_addr . ifname",
          sorted(bound.flatMap((p) => p.ipv4.map((a) => `${a} . ${p.port}`))),
        ),
      ],
      ["guarded4", plainSet("ipv4_addr", sorted(bound.flatMap((p) => p.ipv4)))],
    ]),
    chains: new Map<string, ChainBlock>([
      [
        "prerouting",
        {
          hook: hook("prerouting"),
          rules: [
            "ether saddr @guardedmac ether saddr . iifname != @boundmac drop",
            "arp saddr ip @guarded4 arp saddr ip . iifname != @bound4 drop",
            "ip saddr @guarded4 ip saddr . iifname != @bound4 drop",
          ].map(rule),
        },
      ],
    ]),
  };
  return { inet, bridge };
}
