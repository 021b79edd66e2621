// Plain data passed along the flow: Docker state → snapshot → policy → ruleset → backend.

export type Family = 4 | 6;

/** What Docker says about the protected network at one moment. */
export interface NetworkSnapshot {
  id: string;
  name: string;
  /** Every IPAM subnet, IPv4 and IPv6, in CIDR notation. */
  subnets: string[];
  /** Running containers attached to the network and matched by WHITELIST_FILTER. */
  whitelisted: Member[];
}

export interface Member {
  id: string;
  name: string;
  ipv4?: string;
  ipv6?: string;
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
  /** Drop connections opened from the subnets to the host itself. */
  protectHost: boolean;
}
