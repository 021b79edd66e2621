// Which tracked flows the policy forbids. Pure. The rules let the replies of tracked flows pass,
// so a flow opened before the rules were in force (TrafficJam started on a live host, or after a
// --clear), or opened by an address whose allowance has since been withdrawn, would live on: it
// is cut by deleting it. A flow's original direction says who opened it:
// - member → member, unless the member that opened it is an allowed source (the proxy);
// - member → the host (any of its addresses in the rules' namespace), unless ALLOW_HOST_TRAFFIC.
// Membership here is by address (conntrack records no interface): the network's subnets and
// the members' link-local addresses. Host → member flows are never touched.
import { BlockList, isIPv4 } from "node:net";
import type { Family, Member, Ruleset } from "./model.js";
import type { TrackedFlow } from "./host/conntrack.js";
import { canonicalIpv6, linkLocalOf } from "./addresses.js";

export interface FlowScope {
  /** The network's subnets (CIDR), both families. */
  subnets: readonly string[];
  /** Addresses of members outside the subnets: their IPv6 link-local addresses. */
  memberAddresses: readonly string[];
  /** Sources that may open connections to members (the ruleset's allowed sources). */
  allowedSources: readonly string[];
  /** Every address of the host in the rules' namespace. */
  hostAddresses: readonly string[];
  protectHost: boolean;
}

/** The scope of a ruleset, with the members it was computed from and the host's addresses. */
export function flowScope(
  ruleset: Ruleset,
  members: readonly Member[],
  hostAddresses: readonly string[],
): FlowScope {
  return {
    subnets: [...ruleset.families[4].subnets, ...ruleset.families[6].subnets],
    memberAddresses: members.flatMap((m) => (m.mac ? [linkLocalOf(m.mac)] : [])),
    allowedSources: [...ruleset.families[4].allowedSources, ...ruleset.families[6].allowedSources],
    hostAddresses,
    protectHost: ruleset.protectHost,
  };
}

/**
 * Where to look for flows a member opened: the subnets, and the link-local range once for all the
 * members' link-local addresses (forbiddenPairs keeps only theirs).
 */
export function sourcePrefixes(scope: FlowScope, family: Family): string[] {
  const ofFamily = (a: string) => isIPv4(a.split("/")[0] ?? "") === (family === 4);
  const linkLocal = family === 6 && scope.memberAddresses.length > 0 ? ["fe80::/10"] : [];
  return [...new Set([...scope.subnets.filter(ofFamily), ...linkLocal])].sort();
}

export interface ForbiddenPair {
  family: Family;
  source: string;
  destination: string;
  why: "member-to-member" | "member-to-host";
}

/** One spelling per address, so addresses from Docker, iproute2 and conntrack compare. */
const canonical = (address: string) => (isIPv4(address) ? address : canonicalIpv6(address));

function addressList(cidrsOrAddresses: readonly string[]): BlockList {
  const list = new BlockList();
  for (const entry of cidrsOrAddresses) {
    const [address = "", length] = entry.split("/");
    const type = isIPv4(address) ? "ipv4" : "ipv6";
    if (length === undefined) list.addAddress(address, type);
    else list.addSubnet(address, Number(length), type);
  }
  return list;
}

/** The (source, destination) pairs of `flows` that the policy forbids, once each, sorted. */
export function forbiddenPairs(flows: readonly TrackedFlow[], scope: FlowScope): ForbiddenPair[] {
  const members = addressList([...scope.subnets, ...scope.memberAddresses]);
  const host = new Set(scope.hostAddresses.map(canonical));
  const allowed = new Set(scope.allowedSources.map(canonical));
  const pairs = new Map<string, ForbiddenPair>();
  for (const tracked of flows) {
    const flow = {
      ...tracked,
      source: canonical(tracked.source),
      destination: canonical(tracked.destination),
    };
    const type = flow.family === 4 ? "ipv4" : "ipv6";
    // The gateway is in the subnet but is the host: host-opened flows are not ours to judge.
    if (host.has(flow.source) || !members.check(flow.source, type)) continue;
    let why: ForbiddenPair["why"] | null = null;
    if (host.has(flow.destination)) why = scope.protectHost ? "member-to-host" : null;
    else if (members.check(flow.destination, type) && !allowed.has(flow.source))
      why = "member-to-member";
    if (why === null) continue;
    const key = `${flow.source} ${flow.destination}`;
    if (!pairs.has(key))
      pairs.set(key, {
        family: flow.family,
        source: flow.source,
        destination: flow.destination,
        why,
      });
  }
  return [...pairs.values()].sort((a, b) =>
    a.source === b.source ? (a.destination < b.destination ? -1 : 1) : a.source < b.source ? -1 : 1,
  );
}
