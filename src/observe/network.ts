// Docker state → NetworkSnapshot: the network's subnets, its members and which are whitelisted.
// A full read (startup, resync, a network event) inspects the network by NETWORK (the Engine
// resolves it as everywhere else: full ID, exact name, unique ID prefix; a network recreated under
// the same name is found at once). A pass for container events reads only those containers, so
// it costs the same whatever the number of members. Either way, the containers matching the
// whitelist are asked for beside it.
import type { EngineClient } from "./engine-api.js";
import type { Member, NetworkSnapshot } from "../model.js";
import type { WhitelistFilter } from "../config.js";

export interface NetworkInspect {
  Id: string;
  Name: string;
  Driver?: string;
  Options?: Record<string, string> | null;
  IPAM?: { Config?: Array<{ Subnet?: string }> | null };
  /** Endpoints of running containers on this host (network inspect only, not the list). */
  Containers?: Record<string, NetworkEndpoint | null> | null;
}

export interface NetworkEndpoint {
  Name?: string;
  EndpointID?: string;
  MacAddress?: string;
  /** CIDR, e.g. "172.28.0.21/24"; empty when none. */
  IPv4Address?: string;
  IPv6Address?: string;
}

/** The parts of GET /containers/json that matter here. */
export interface ContainerSummary {
  Id: string;
  Names?: string[];
  NetworkSettings?: {
    Networks?: Record<
      string,
      {
        NetworkID?: string;
        EndpointID?: string;
        MacAddress?: string;
        IPAddress?: string;
        GlobalIPv6Address?: string;
      } | null
    > | null;
  } | null;
}

/** The Linux bridge of a bridge-driver network, named as Docker names it. */
export function bridgeOf(network: NetworkInspect): string | undefined {
  if (network.Driver !== "bridge") return undefined;
  return network.Options?.["com.docker.network.bridge.name"] || `br-${network.Id.slice(0, 12)}`;
}

export function subnetsOf(network: NetworkInspect): string[] {
  return (network.IPAM?.Config ?? []).flatMap((c) => (c.Subnet ? [c.Subnet] : []));
}

const bare = (cidr: string | undefined) => cidr?.split("/")[0] || undefined;

/**
 * The network's members: every endpoint of the inspected network, flagged whitelisted when its
 * container is among `whitelisted` (which may also hold a member the inspect did not list yet).
 */
export function membersOf(network: NetworkInspect, whitelisted: readonly Member[]): Member[] {
  const chosen = new Map(whitelisted.map((m) => [m.id, m]));
  const members = Object.entries(network.Containers ?? {}).flatMap(([id, e]): Member[] => {
    if (!e || id.startsWith("ep-")) return []; // "ep-…": an endpoint without a container
    return [
      {
        id,
        name: e.Name || id.slice(0, 12),
        whitelisted: chosen.has(id),
        ipv4: bare(e.IPv4Address),
        ipv6: bare(e.IPv6Address),
        endpointId: e.EndpointID || undefined,
        mac: e.MacAddress?.toLowerCase() || undefined,
      },
    ];
  });
  const listed = new Set(members.map((m) => m.id));
  return [...members, ...whitelisted.filter((m) => !listed.has(m.id))];
}

/** Containers listed by the Engine → those attached to `networkId`, with their addresses there. */
export function membersOn(networkId: string, containers: ContainerSummary[]): Member[] {
  return containers.flatMap((c) => {
    const endpoint = Object.values(c.NetworkSettings?.Networks ?? {}).find(
      (e) => e?.NetworkID === networkId,
    );
    if (!endpoint) return [];
    return [
      {
        id: c.Id,
        name: (c.Names?.[0] ?? c.Id.slice(0, 12)).replace(/^\//, ""),
        whitelisted: true,
        ipv4: endpoint.IPAddress || undefined,
        ipv6: endpoint.GlobalIPv6Address || undefined,
        endpointId: endpoint.EndpointID || undefined,
        mac: endpoint.MacAddress?.toLowerCase() || undefined,
      },
    ];
  });
}

type NetworkInfo = Omit<NetworkSnapshot, "members">;

/** Where a network's Linux bridge is: its name, in which network namespace (null: ours). */
export interface BridgeLocation {
  name: string;
  netns: string | null;
}

/** A bridge network's bridge, in our namespace; none for other drivers. */
export const localBridgeOf = (network: NetworkInspect): BridgeLocation | undefined => {
  const name = bridgeOf(network);
  return name === undefined ? undefined : { name, netns: null };
};

/**
 * Filter keys whose match can change only with an event naming the container (labels, mounts and
 * ports are fixed at creation; a rename, a connect or disconnect of any network, a health change,
 * a pause are events: see filter-events.ts): an event pass asks the Engine about the named
 * containers alone. A match on another key (ancestor, before/since…) may change with events that
 * name no container, and `id` cannot be combined with the containers' ids: the whole whitelist is
 * listed on every pass.
 */
const FIXED_MATCH_KEYS: ReadonlySet<string> = new Set([
  "label",
  "name",
  "network",
  "health",
  "status",
  "is-task",
  "isolation",
  "expose",
  "publish",
  "volume",
]);

export class NetworkObserver {
  private network: NetworkInfo | null = null;
  /** The members as of the last read (whitelisted or not: see `chosen`). */
  private members = new Map<string, Member>();
  /** The whitelisted containers on the network as of the last read. */
  private chosen = new Map<string, Member>();

  constructor(
    private readonly client: EngineClient,
    private readonly networkRef: string,
    private readonly whitelist: WhitelistFilter,
    /** The network's bridge here (a Swarm worker: the overlay's, in its namespace). */
    private readonly bridgeFor: (
      network: NetworkInspect,
    ) => BridgeLocation | undefined = localBridgeOf,
  ) {}

  /** The network's ID as last seen, or null. */
  get networkId(): string | null {
    return this.network?.id ?? null;
  }

  /** The network's Linux bridge as last seen, if any. */
  get bridge(): string | undefined {
    return this.network?.bridge;
  }

  /** The namespace of that bridge (null: ours). */
  get netns(): string | null {
    return this.network?.netns ?? null;
  }

  /**
   * Reads the network, its members and the whitelisted ones. Returns null when the network does
   * not exist. `changed`: only these containers may have joined or left since the last read (read
   * them alone); undefined: read the network whole. The filter is evaluated by the Engine itself,
   * then restricted to the network's members, so even a `network=` filter cannot widen it.
   */
  async observe(changed?: ReadonlySet<string>): Promise<NetworkSnapshot | null> {
    const { key, value } = this.whitelist;
    const network = this.network;
    if (changed === undefined || network === null) {
      const [found, matching] = await Promise.all([
        this.client.inspectNetwork(this.networkRef),
        this.client.listContainers({ [key]: [value] }),
      ]);
      const where = found ? this.bridgeFor(found) : undefined;
      this.network = found
        ? {
            id: found.Id,
            name: found.Name,
            subnets: subnetsOf(found),
            bridge: where?.name,
            ...(where?.netns ? { netns: where.netns } : {}),
          }
        : null;
      this.members = new Map(found ? membersOf(found, []).map((m) => [m.id, m]) : []);
      this.chosen = new Map(found ? membersOn(found.Id, matching).map((m) => [m.id, m]) : []);
      return this.network ? this.snapshot(this.network) : null;
    }
    // The containers themselves, from the list (running ones only, and without waiting for a
    // container's start the way its inspect does): one not listed, or not on the network, left.
    const ids = [...changed];
    const fixed = FIXED_MATCH_KEYS.has(key);
    const none = Promise.resolve([]);
    const [matching, listed] = await Promise.all([
      fixed
        ? ids.length > 0
          ? this.client.listContainers({ id: ids, [key]: [value] })
          : none
        : this.client.listContainers({ [key]: [value] }),
      ids.length > 0 ? this.client.listContainers({ id: ids }) : none,
    ]);
    const now = new Map(membersOn(network.id, listed).map((m) => [m.id, m]));
    for (const id of ids) {
      const member = now.get(id);
      if (member) this.members.set(id, { ...member, whitelisted: false });
      else this.members.delete(id);
    }
    const chosen = membersOn(network.id, matching);
    if (!fixed) this.chosen.clear();
    else for (const id of ids) this.chosen.delete(id);
    for (const m of chosen) this.chosen.set(m.id, m);
    return this.snapshot(network);
  }

  private snapshot(network: NetworkInfo): NetworkSnapshot {
    const members = [...this.members.values()].map((m) => ({
      ...m,
      whitelisted: this.chosen.has(m.id),
    }));
    const extra = [...this.chosen.values()].filter((m) => !this.members.has(m.id));
    return { ...network, members: [...members, ...extra] };
  }
}
