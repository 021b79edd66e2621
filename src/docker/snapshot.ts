// Docker state → NetworkSnapshot: the network's subnets, its members and the whitelisted ones.
import type { Docker } from "./client.js";
import { isNotFound } from "./client.js";
import type { Member, NetworkSnapshot } from "../model.js";
import type { WhitelistFilter } from "../config.js";

interface NetworkInspect {
  Id: string;
  Name: string;
  IPAM?: { Config?: Array<{ Subnet?: string }> | null };
  Containers?: Record<string, { Name?: string; IPv4Address?: string; IPv6Address?: string }> | null;
}

const withoutPrefix = (cidr: string | undefined) =>
  (cidr ? cidr.split("/")[0] : undefined) || undefined;

/** Network inspect → snapshot fields; pure, so it is tested with recorded Engine answers. */
export function membersOf(network: NetworkInspect): Member[] {
  return Object.entries(network.Containers ?? {}).map(([id, endpoint]) => ({
    id,
    name: endpoint.Name ?? id.slice(0, 12),
    ipv4: withoutPrefix(endpoint.IPv4Address),
    ipv6: withoutPrefix(endpoint.IPv6Address),
  }));
}

export function subnetsOf(network: NetworkInspect): string[] {
  return (network.IPAM?.Config ?? []).flatMap((c) => (c.Subnet ? [c.Subnet] : []));
}

/**
 * Reads the network (by name or ID) and the containers matching the whitelist filter.
 * Returns null when the network does not exist. The filter is evaluated by the Engine itself
 * and then restricted to the network's members, so a `network=` filter cannot widen it.
 */
export async function observeNetwork(
  docker: Docker,
  networkRef: string,
  whitelist: WhitelistFilter,
): Promise<NetworkSnapshot | null> {
  let network: NetworkInspect;
  try {
    network = (await docker.getNetwork(networkRef).inspect()) as NetworkInspect;
  } catch (error) {
    if (isNotFound(error)) return null;
    throw error;
  }
  const matching = await docker.listContainers({
    filters: { [whitelist.key]: [whitelist.value] },
  });
  const members = membersOf(network);
  const memberIds = new Set(members.map((m) => m.id));
  return {
    id: network.Id,
    name: network.Name,
    subnets: subnetsOf(network),
    members,
    whitelistedIds: matching.map((c) => c.Id).filter((id) => memberIds.has(id)),
  };
}
