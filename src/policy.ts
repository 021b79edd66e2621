// Snapshot + configuration → desired ruleset. Pure: no I/O, no time, deterministic order,
// so the same Docker state always renders the same rules (and golden files stay stable).
import { isIPv6 } from "node:net";
import type {
  Family,
  FamilyRuleset,
  Member,
  NetworkSnapshot,
  PortBinding,
  Ruleset,
} from "./model.js";

export interface PolicyOptions {
  instanceId: string;
  allowHostTraffic: boolean;
}

export function familyOfCidr(cidr: string): Family {
  return isIPv6(cidr.split("/")[0] ?? "") ? 6 : 4;
}

function uniqueSorted(values: Iterable<string>): string[] {
  return [...new Set(values)].sort();
}

function addressOf(member: Member, family: Family): string | undefined {
  return family === 4 ? member.ipv4 : member.ipv6;
}

/**
 * Builds the instance's desired rules. With no snapshot (the network does not exist) the
 * instance keeps its chains but enforces nothing: there is nothing on that network to protect.
 */
export function computeRuleset(snapshot: NetworkSnapshot | null, options: PolicyOptions): Ruleset {
  const proxies = snapshot?.whitelisted ?? [];
  const family = (f: Family): FamilyRuleset => {
    const subnets = [...new Set((snapshot?.subnets ?? []).filter((s) => familyOfCidr(s) === f))];
    const members = subnets.length === 0 ? [] : proxies.filter((m) => addressOf(m, f));
    const portBindings = members
      .flatMap((m): PortBinding[] => (m.port ? [{ address: addressOf(m, f)!, port: m.port }] : []))
      .sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0));
    return {
      subnets,
      allowedSources: uniqueSorted(members.map((m) => addressOf(m, f)!)),
      portBindings,
      protectHost: !options.allowHostTraffic,
    };
  };
  return {
    instanceId: options.instanceId,
    networkName: snapshot?.name ?? null,
    families: { 4: family(4), 6: family(6) },
  };
}
