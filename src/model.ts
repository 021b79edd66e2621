// Plain data passed along the flow: Docker state → snapshot → policy → ruleset → backend.

export type Family = 4 | 6;

/** What Docker says about the protected network at one moment. */
export interface NetworkSnapshot {
  id: string;
  name: string;
  /** Every IPAM subnet, IPv4 and IPv6, in CIDR notation. */
  subnets: string[];
  /** The network's Linux bridge on this host (bridge driver only): its ports are the members'. */
  bridge?: string;
  /** Running containers attached to the network and matched by WHITELIST_FILTER. */
  whitelisted: Member[];
}

export interface Member {
  id: string;
  name: string;
  ipv4?: string;
  ipv6?: string;
  /** The container's endpoint on the network: what finds its bridge port. */
  endpointId?: string;
  mac?: string;
  /**
   * Host-side bridge port (veth) the container is attached through. Absent when it could not
   * be found: the container's allowances are then bound to its addresses only.
   */
  port?: string;
}

/** Backend-neutral desired state of one instance, per address family. */
export interface Ruleset {
  instanceId: string;
  /** Why this ruleset looks the way it does, for logs. */
  networkName: string | null;
  families: Record<Family, FamilyRuleset>;
}

export interface FamilyRuleset {
  /** Subnets of this family (CIDR). No subnets → the instance has nothing to enforce here. */
  subnets: string[];
  /** Source addresses (no prefix length) allowed to open connections into the subnets. */
  allowedSources: string[];
  /**
   * Allowed sources bound to the bridge port they must arrive through: a packet carrying one of
   * these addresses from any other port is forged (or from a container that took the address
   * over) and is dropped, whatever its connection state. Sorted by address.
   */
  portBindings: PortBinding[];
  /** Drop connections opened from the subnets to the host itself. */
  protectHost: boolean;
}

export interface PortBinding {
  address: string;
  /** Host-side interface name of the bridge port, e.g. "veth1a2b3c4". */
  port: string;
}
