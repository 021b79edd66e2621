// Snapshot + configuration → desired ruleset. Pure: no I/O, no time, deterministic order,
// so the same Docker state always renders the same rules (and golden files stay stable).
//
// The network is its bridge and the bridge's ports, not its addresses (addresses are the
// attacker's to choose): the rules drop what enters the bridge from a port and would leave
// through another port or reach the host, unless it is a reply, neighbour discovery, or a new
// connection from a whitelisted member's own port; and every known port may carry only its own
// member's MAC and addresses.
import { familyOf, linkLocalOf } from "./addresses.js";
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
  const family = (f: Family): FamilyRuleset => {
    const sourced = whitelisted.flatMap((m) =>
      addressesOf(m, f).map((address) => ({ m, address })),
    );
    const portBindings = sourced
      .flatMap(({ m, address }): PortBinding[] => (m.port ? [{ address, port: m.port }] : []))
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
    protectHost: !options.allowHostTraffic,
    families: { 4: family(4), 6: family(6) },
    ports: members.flatMap((m) => identityOf(m) ?? []).sort((a, b) => byText(a.port, b.port)),
  };
}
