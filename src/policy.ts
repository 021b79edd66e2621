// Snapshot + configuration → desired ruleset. Pure: no I/O, no time, deterministic order,
// so the same Docker state always renders the same rules (and golden files stay stable).
//
// The network is its bridge and the bridge's ports, not its addresses (addresses are the
// attacker's to choose): the rules drop what enters the bridge from a port and would leave
// through another port or reach the host, unless it is a reply, neighbour discovery, or a new
// connection from a whitelisted member's own port; and every known port may carry only its own
// member's MAC and addresses.
import { familyOf, linkLocalOf } from "./addresses.js";
import { logGroupsOf, type Mode } from "./drops.js";
import type {
  Family,
  FamilyRuleset,
  Member,
  NetworkSnapshot,
  PortBinding,
  PortIdentity,
  Ruleset,
} from "./model.js";

export interface PolicyOptions {
  instanceId: string;
  allowHostTraffic: boolean;
  /** MODE; default enforce. */
  mode?: Mode;
  /** Log and count the drops (the blocked-attempt log); default off. */
  log?: boolean;
}

const byText = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

function uniqueSorted(values: Iterable<string>): string[] {
  return [...new Set(values)].sort(byText);
}

/**
 * The addresses a member sends from, in a family: its address on the network and, where it has
 * IPv6 there, its link-local address (it is on its own port, so it is its own as well).
 */
function addressesOf(member: Member, family: Family): string[] {
  if (family === 4) return member.ipv4 ? [member.ipv4] : [];
  if (!member.ipv6) return [];
  return member.mac ? [member.ipv6, linkLocalOf(member.mac)] : [member.ipv6];
}

/** The identity a member's port may carry; null when its port or MAC is unknown. */
function identityOf(member: Member): PortIdentity | null {
  if (!member.port || !member.mac) return null;
  return {
    port: member.port,
    mac: member.mac,
    ipv4: member.ipv4 ? [member.ipv4] : [],
    // The link-local address even where the network has no IPv6: a container may still have it.
    ipv6: uniqueSorted([...(member.ipv6 ? [member.ipv6] : []), linkLocalOf(member.mac)]),
  };
}

/**
 * Builds the instance's desired rules. With no snapshot (the network does not exist) or no
 * bridge (another driver) the instance enforces nothing: there is no L2 domain here to guard.
 */
export function computeRuleset(snapshot: NetworkSnapshot | null, options: PolicyOptions): Ruleset {
  const bridge = snapshot?.bridge ?? null;
  const members = bridge === null ? [] : (snapshot?.members ?? []);
  const whitelisted = members.filter((m) => m.whitelisted);
  // Another node's endpoint never has an address of a container here (a stale report would).
  const local = new Set(members.flatMap((m) => [m.ipv4, m.ipv6].filter((a) => a !== undefined)));
  const tunnel = bridge === null ? undefined : snapshot?.tunnel;
  const remote = (tunnel?.allowed ?? []).filter((r) => !local.has(r.ipv4));
  const tunnelIdentities = uniqueBy(
    remote.map((r): PortIdentity => ({ port: tunnel!.port, mac: r.mac, ipv4: [r.ipv4], ipv6: [] })),
    (p) => p.ipv4[0]!,
  );
  const family = (f: Family): FamilyRuleset => {
    const sourced = [
      ...whitelisted.flatMap((m) =>
        addressesOf(m, f).map((address) => ({ address, port: m.port })),
      ),
      ...(f === 4 ? tunnelIdentities.map((t) => ({ address: t.ipv4[0]!, port: t.port })) : []),
    ];
    const portBindings = sourced
      .flatMap(({ address, port }): PortBinding[] => (port ? [{ address, port }] : []))
      .sort((a, b) => byText(a.address, b.address));
    return {
      subnets: uniqueSorted((snapshot?.subnets ?? []).filter((s) => familyOf(s) === f)),
      allowedSources: uniqueSorted(sourced.map(({ address }) => address)),
      portBindings,
    };
  };
  return {
    instanceId: options.instanceId,
    networkName: snapshot?.name ?? null,
    bridge,
    netns: bridge === null ? null : (snapshot?.netns ?? null),
    protectHost: !options.allowHostTraffic,
    families: { 4: family(4), 6: family(6) },
    ports: members.flatMap((m) => identityOf(m) ?? []).sort((a, b) => byText(a.port, b.port)),
    tunnelIdentities,
    gateway: bridge === null ? null : (snapshot?.gateway ?? null),
    mode: options.mode ?? "enforce",
    log: options.log ? { groups: logGroupsOf(options.instanceId) } : null,
  };
}

/** One per key, the first; sorted by key. */
function uniqueBy<T>(items: readonly T[], key: (item: T) => string): T[] {
  const byKey = new Map<string, T>();
  for (const item of items) if (!byKey.has(key(item))) byKey.set(key(item), item);
  return [...byKey.entries()].sort(([a], [b]) => byText(a, b)).map(([, item]) => item);
}
