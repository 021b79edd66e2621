// Plain data passed along the flow: Docker state → snapshot → policy → ruleset → backend.
import type { LogGroups, Mode } from "./drops.js";

export type Family = 4 | 6;

/** What Docker says about the protected network at one moment. */
export interface NetworkSnapshot {
  id: string;
  name: string;
  /** Every IPAM subnet, IPv4 and IPv6, in CIDR notation. */
  subnets: string[];
  /**
   * The network's Linux bridge on this host (bridge driver only). The network *is* this L2
   * domain: its ports are the members, whatever addresses their packets carry.
   */
  bridge?: string;
  /**
   * The network namespace the bridge is in, where the rules go (a file path): absent for ours.
   * A Swarm worker's is the overlay network's namespace on its node.
   */
  netns?: string;
  /**
   * The bridge's own identity (the network's gateway: the host, as members see it), when known.
   * Only the bridge itself may carry it; no port may claim it.
   */
  gateway?: Identity;
  /** Running containers attached to the network on this host; the whitelisted ones flagged. */
  members: Member[];
  /** A Swarm overlay: what other nodes' endpoints may send in through the VXLAN port. */
  tunnel?: Tunnel;
}

/**
 * The VXLAN port of a Swarm overlay's bridge on this node, and the addresses of other nodes
 * that may open connections (their whitelisted containers and load-balancer endpoints). Each is
 * bound to this port: it can only come from another node, never from a local container.
 */
export interface Tunnel {
  port: string;
  allowed: RemoteEndpoint[];
}

export interface RemoteEndpoint {
  ipv4: string;
  /** Docker's overlay MAC of the endpoint (02:42 and its IPv4 address). */
  mac: string;
}

export interface Member {
  id: string;
  name: string;
  /** Matched by WHITELIST_FILTER: may open connections to the other members. */
  whitelisted: boolean;
  ipv4?: string;
  ipv6?: string;
  /** The container's endpoint on the network: what finds its bridge port. */
  endpointId?: string;
  /** The endpoint's MAC address (lower case), also the source of its IPv6 link-local address. */
  mac?: string;
  /**
   * Host-side bridge port (veth) the container is attached through. Absent when it could not
   * be found: the member's packets are then bound to nothing (see PortIdentity).
   */
  port?: string;
}

/** Backend-neutral desired state of one instance. */
export interface Ruleset {
  instanceId: string;
  /** Why this ruleset looks the way it does, for logs. */
  networkName: string | null;
  /**
   * The bridge whose ports are the network's members. null: nothing to enforce (the network
   * does not exist, or has no Linux bridge on this host).
   */
  bridge: string | null;
  /** The network namespace the bridge is in (see NetworkSnapshot.netns); null: ours. */
  netns: string | null;
  /** Drop connections opened from the network to the host itself. */
  protectHost: boolean;
  families: Record<Family, FamilyRuleset>;
  /**
   * Every member whose port is known, with the only identity its port may carry. Sorted by
   * port. A member's MAC and addresses are refused from every other port.
   */
  ports: PortIdentity[];
  /**
   * Identities bound to a port that also carries others' frames (a Swarm overlay's VXLAN port,
   * whose remote senders each node guards at their own veth): refused from every other port,
   * while that port's other frames are not restricted here. Sorted by address.
   */
  tunnelIdentities: PortIdentity[];
  /** The gateway's identity (the bridge's own), which no port may claim; null: unknown. */
  gateway: Identity | null;
  /** `audit`: every rule that would drop accepts instead (after logging it). */
  mode: Mode;
  /**
   * The blocked-attempt log and the drop counters: each drop is preceded by a rate-limited log
   * rule to its kind's NFLOG group, and counted. null: neither (a Swarm worker, for now).
   */
  log: DropLog | null;
}

export interface DropLog {
  groups: LogGroups;
}

export interface FamilyRuleset {
  /** Subnets of this family (CIDR): for logs only; the rules name the bridge, not addresses. */
  subnets: string[];
  /** Addresses of whitelisted members (no prefix length): they may open connections. */
  allowedSources: string[];
  /**
   * Allowed sources bound to the bridge port they must arrive through (whitelisted members
   * whose port is known). Sorted by address.
   */
  portBindings: PortBinding[];
}

export interface PortBinding {
  address: string;
  /** Host-side interface name of the bridge port, e.g. "veth1a2b3c4". */
  port: string;
}

/** A MAC and the addresses that go with it. */
export interface Identity {
  mac: string;
  ipv4: string[];
  /** Link-local addresses included. */
  ipv6: string[];
}

/** What one bridge port may send: its member's MAC and addresses, nothing else. */
export interface PortIdentity {
  port: string;
  mac: string;
  ipv4: string[];
  /** The member's IPv6 addresses on the network, its link-local address included. */
  ipv6: string[];
}
