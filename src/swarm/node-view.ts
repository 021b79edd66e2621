// What a Swarm worker reads of its node for the node guard (node-guard.ts): Docker's bridges,
// the node's addresses, the Swarm daemon's container if it runs here, and the overlay members'
// way out (their docker_gwbridge endpoints), each bound to its bridge port. The Engine and the
// node's own namespace are read here; what changes only with the node's setup is read at full
// passes.
import { networkInterfaces } from "node:os";
import type { Member, PortIdentity } from "../model.js";
import type { EngineClient, EngineNetworkMember } from "../observe/engine-api.js";
import { BridgePortFinder } from "../observe/bridge-ports.js";
import type { Host } from "../host/host.js";
import { hostAddresses, hostBridgePortDeps } from "../host/links.js";
import type { SwarmApi } from "./swarm-api.js";
import { GATEWAY_BRIDGE } from "./node-guard.js";

/** Where the Swarm daemon's container is (TRAFFICJAM_DAEMON), for its channel exemption. */
export type DaemonRef = { kind: "service"; name: string } | { kind: "container"; id: string };

/** "service:<name>" or "container:<id>" → a DaemonRef; "" → none; anything else: an error. */
export function parseDaemonRef(raw: string | undefined): DaemonRef | null {
  if (!raw) return null;
  const m = /^(service|container):([A-Za-z0-9_.-]{1,128})$/.exec(raw);
  if (!m)
    throw new Error(
      `TRAFFICJAM_DAEMON=${JSON.stringify(raw)}: expected service:<name> or container:<id>`,
    );
  return m[1] === "service" ? { kind: "service", name: m[2]! } : { kind: "container", id: m[2]! };
}

const SERVICE_LABEL = "com.docker.swarm.service.name";
const bare = (cidr: string | undefined) => cidr?.split("/")[0] || undefined;

export interface NodeFacts {
  /** Docker's bridges on the node. */
  bridges: string[];
  nodeAddresses: string[];
  daemon: (PortIdentity & { bridge: string }) | null;
  /** Members' identities on docker_gwbridge with their ports (those found). */
  members: PortIdentity[];
}

/** How long what changes only with the node's setup is kept between full passes. */
const SETUP_TTL_MS = 60_000;
/** How long the members' and the daemon's endpoints are kept when no event says they changed. */
const ENDPOINTS_TTL_MS = 30_000;

export class NodeView {
  private bridges: {
    at: number;
    list: Array<{ id: string; name: string; bridge: string }>;
  } | null = null;
  private addresses: { at: number; list: string[] } | null = null;
  /** The endpoints bound last, for which members (a change of members reads them again). */
  private endpoints: {
    key: string;
    at: number;
    daemon: (PortIdentity & { bridge: string }) | null;
    members: PortIdentity[];
  } | null = null;
  /** A port finder per bridge of the node (its cache: what a port says is fixed for its life). */
  private readonly finders = new Map<string, BridgePortFinder>();

  constructor(
    private readonly client: EngineClient,
    private readonly api: SwarmApi,
    /** The node's own namespace. */
    private readonly host: Host,
    private readonly daemon: DaemonRef | null,
    private readonly onPortUnknown: (member: Member, reason: string) => void,
  ) {}

  /** A network was created or removed on the node: its bridges are read at the next call. */
  bridgesChanged(): void {
    this.bridges = null;
  }

  /**
   * The node's facts. `members`: the overlay's members on this node (container IDs) whose way out
   * is guarded (none with ALLOW_HOST_TRAFFIC). What changes only with the node's setup is read
   * again at a full pass (`fresh`) once a minute; the endpoints when the members change, or at a
   * full pass every 30 s: an idle resync reads next to nothing.
   */
  async facts(fresh: boolean, members: readonly string[]): Promise<NodeFacts> {
    const now = Date.now();
    const due = (at: number, ttl: number) => fresh && now - at >= ttl;
    if (this.bridges === null || due(this.bridges.at, SETUP_TTL_MS))
      this.bridges = { at: now, list: await this.api.bridgeNetworks() };
    const addresses = await this.nodeAddresses(fresh, now);
    const key = [...members].sort().join(",");
    if (this.endpoints?.key !== key || due(this.endpoints.at, ENDPOINTS_TTL_MS)) {
      const gateway = await this.client.inspectNetwork(GATEWAY_BRIDGE);
      const onGateway = gateway?.Containers ?? {};
      const [daemon, bound] = await Promise.all([
        this.daemonIdentity(onGateway),
        this.bind(
          "members",
          GATEWAY_BRIDGE,
          members.flatMap((id) => (onGateway[id] ? [toMember(id, onGateway[id])] : [])),
        ),
      ]);
      this.endpoints = { key, at: now, daemon, members: bound };
    }
    return {
      bridges: [...new Set(this.bridges.list.map((b) => b.bridge))],
      nodeAddresses: addresses,
      daemon: this.endpoints.daemon,
      members: this.endpoints.members,
    };
  }

  /** Every address of the node: ours are read in-process; another namespace's with `ip`. */
  private async nodeAddresses(fresh: boolean, now: number): Promise<string[]> {
    if (this.host.netns === null)
      return Object.values(networkInterfaces()).flatMap((list) =>
        (list ?? []).map((a) => a.address.split("%")[0]!),
      );
    if (this.addresses === null || (fresh && now - this.addresses.at >= SETUP_TTL_MS))
      this.addresses = { at: now, list: await hostAddresses(this.host) };
    return this.addresses.list;
  }

  /** The daemon's container here, if any: its endpoint on the bridge it reaches nodes through. */
  private async daemonIdentity(
    onGateway: Record<string, EngineNetworkMember>,
  ): Promise<(PortIdentity & { bridge: string }) | null> {
    const ref = this.daemon;
    if (ref === null) return null;
    const found =
      ref.kind === "service"
        ? await this.client.listContainers({ label: [`${SERVICE_LABEL}=${ref.name}`] })
        : await this.client.listContainers({ id: [ref.id] });
    const container = found[0];
    if (!container) return null;
    // A Swarm task reaches the nodes through docker_gwbridge; a plain container through its
    // bridge network (the first one, by Docker's order); host networking: no container bridge.
    const endpoint = onGateway[container.Id];
    if (endpoint) {
      const [bound] = await this.bind("daemon", GATEWAY_BRIDGE, [toMember(container.Id, endpoint)]);
      return bound ? { ...bound, bridge: GATEWAY_BRIDGE } : null;
    }
    const byId = new Map((this.bridges?.list ?? []).map((b) => [b.id, b.bridge]));
    for (const e of Object.values(container.NetworkSettings.Networks)) {
      const bridge = e.NetworkID ? byId.get(e.NetworkID) : undefined;
      if (!bridge || !e.IPAddress || !e.MacAddress) continue;
      const member: Member = {
        id: container.Id,
        name: "swarm daemon",
        whitelisted: true,
        ipv4: e.IPAddress,
        mac: e.MacAddress.toLowerCase(),
        endpointId: e.EndpointID || undefined,
      };
      const [bound] = await this.bind("daemon", bridge, [member]);
      if (bound) return { ...bound, bridge };
    }
    return null;
  }

  /**
   * The members' ports on `bridge`, as identities (MAC and IPv4); those not found are left out.
   * A finder per purpose and bridge: a finder forgets whoever its last call did not name.
   */
  private async bind(purpose: string, bridge: string, members: Member[]): Promise<PortIdentity[]> {
    if (members.length === 0) return [];
    const key = `${purpose}/${bridge}`;
    let finder = this.finders.get(key);
    if (!finder) {
      const inspect = async (id: string) => {
        const c = await this.client.inspectContainer(id);
        if (c === null) return null;
        return {
          running: c.State.Running,
          pid: c.State.Pid,
          sandboxKey: c.NetworkSettings.SandboxKey ?? "",
        };
      };
      finder = new BridgePortFinder(hostBridgePortDeps(inspect, this.host), this.onPortUnknown);
      this.finders.set(key, finder);
    }
    const found = await finder.attach(members, bridge);
    return found.flatMap((m) =>
      m.port && m.mac && m.ipv4 ? [{ port: m.port, mac: m.mac, ipv4: [m.ipv4], ipv6: [] }] : [],
    );
  }
}

function toMember(id: string, endpoint: EngineNetworkMember): Member {
  return {
    id,
    name: endpoint.Name || id.slice(0, 12),
    whitelisted: true, // looked up within the pass: the binding is due now
    ipv4: bare(endpoint.IPv4Address),
    mac: endpoint.MacAddress?.toLowerCase() || undefined,
    endpointId: endpoint.EndpointID || undefined,
  };
}
