// Finds the bridge port (host-side veth) each member is attached through, so that port can be
// bound to the member's own MAC and addresses (and a whitelisted member's allowances to it).
// Two ways, tried in this order:
//
// 1. By namespace id, without entering anything. The host lists the ports of the network's
//    bridge with the id of the namespace each veth's peer lives in (`link_netnsid`), and
//    `ip netns list` gives the id of every namespace file under /run/netns. In the image, Docker's
//    netns folder is mounted there read-only: this needs no capability beyond NET_ADMIN.
// 2. By entering the container's namespace (setns, CAP_SYS_ADMIN: the host command as root):
//    through its SandboxKey or its process (/proc/PID/ns/net, seen from the host's PID
//    namespace), where the interface with the endpoint's MAC names its host peer by ifindex.
//
// Both end on a port of the network's own bridge, read from the host's kernel, so a container
// cannot make itself look like another one.
import { basename } from "node:path";
import type { Member } from "../model.js";

/** What the Engine says about a container, for reaching its network namespace. */
export interface SandboxInfo {
  running: boolean;
  pid: number;
  sandboxKey: string;
}

/** The parts of `ip -j link show` used here. */
export interface IpLink {
  ifindex: number;
  ifname: string;
  address?: string;
  /** For a veth: its peer's ifindex, in the peer's namespace. */
  link_index?: number;
  /** For a veth whose peer is in another namespace: that namespace's id, as seen here. */
  link_netnsid?: number;
}

/** Where iproute2 looks for named network namespaces (the image mounts Docker's folder there). */
export const NAMED_NETNS_DIR = "/run/netns";

export interface BridgePortDeps {
  /** null when the container no longer exists. */
  inspect(containerId: string): Promise<SandboxInfo | null>;
  /**
   * The ports of a bridge, read in our (the host's) network namespace. What was read of a port
   * before may be reused; `revalidate`: not without checking it is still the same interface.
   */
  bridgePorts(bridge: string, revalidate?: boolean): Promise<IpLink[]>;
  /** Whether the interface named as `link` is still the one listed (same ifindex). */
  portIsCurrent?(link: IpLink): boolean;
  /** Namespace files under NAMED_NETNS_DIR that have an id here: name → nsid. */
  namedNamespaceIds(): Promise<Map<string, number>>;
  /** `ip -j link show` inside the network namespace at `nsPath` (needs CAP_SYS_ADMIN). */
  linksIn(nsPath: string): Promise<IpLink[]>;
  /** Inode of a network namespace file, or null when it cannot be reached. */
  namespaceInode(path: string): Promise<number | null>;
}

/** A listing of a bridge's ports started early in a pass (see BridgePortFinder.prefetch). */
export interface EarlyPorts {
  bridge: string;
  ports: Promise<IpLink[]>;
}

type Lookup = { port: string } | { error: string } | { gone: true };
/** A member whose lookup runs beside the pass: unbound until the pass that follows it. */
const PENDING: Lookup = { error: "being looked up" };

/** A port whose peer is settled in its namespace: what it says will not change for its life. */
export const settled = (link: IpLink): boolean =>
  link.link_index !== undefined && link.link_netnsid !== undefined;

/** Pure: the bridge ports whose veth peer is in the namespace with id `nsid` (one, normally). */
export function portsOfNamespace(ports: readonly IpLink[], nsid: number): string[] {
  return ports.filter((p) => p.link_netnsid === nsid).map((p) => p.ifname);
}

/**
 * Pure: the bridge port paired with the container's interface that carries `mac` (each names the
 * other's ifindex), or null.
 */
export function portOfLinks(
  ports: readonly IpLink[],
  containerLinks: readonly IpLink[],
  mac: string | undefined,
): string | null {
  const own = containerLinks.filter(
    (l) => mac === undefined || l.address?.toLowerCase() === mac.toLowerCase(),
  );
  for (const link of own) {
    const port = ports.find((p) => p.ifindex === link.link_index && p.link_index === link.ifindex);
    if (port) return port.ifname;
  }
  return null;
}

/**
 * After the n-th failed lookup of an endpoint, how long before it is tried again: soon at first
 * (a container caught while Docker still sets up its interface: it joins the network before its
 * interface is in its namespace with its own MAC), then rarely (a host where no way works: every
 * member fails alike). A failure is reported once the quick retries are spent.
 */
export const RETRY_DELAYS_MS = [100, 300, 1_000];
const RETRY_FAILED_MS = 30_000;
// A host with hundreds of containers must not send hundreds of inspects, or fork hundreds of
// processes (way 2 enters a namespace per member), in one go at startup.
const LOOKUP_CONCURRENCY = 16;
const ENTER_CONCURRENCY = 8;

/** Runs at most `n` of the given tasks at a time. */
function limiter(n: number): <T>(task: () => Promise<T>) => Promise<T> {
  let active = 0;
  const waiting: Array<() => void> = [];
  return async (task) => {
    if (active < n) active++;
    else await new Promise<void>((resolve) => waiting.push(resolve)); // handed a slot
    try {
      return await task();
    } finally {
      const next = waiting.shift();
      if (next) next();
      else active--;
    }
  };
}

const errorText = (error: unknown) => (error instanceof Error ? error.message : String(error));

/** What one pass learnt from the host, read at most once per pass and only when needed. */
class HostView {
  private ports?: Promise<IpLink[]>;
  private named?: Promise<Map<string, number>>;

  constructor(
    private readonly deps: BridgePortDeps,
    readonly bridge: string,
    /** A listing started with the pass, before the Engine said which containers run. */
    private readonly early?: Promise<IpLink[]>,
  ) {}

  bridgePorts(): Promise<IpLink[]> {
    const read = () => this.deps.bridgePorts(this.bridge);
    // The early listing stands if every port in it had its peer settled; a port listed while
    // Docker still moved its peer is read again now that its container is reported running.
    return (this.ports ??= this.early
      ? this.early.then((ports) => (ports.every(settled) ? ports : read()), read)
      : read());
  }

  /** Reads the ports again, checking each one kept from an earlier read. */
  relist(): Promise<IpLink[]> {
    return (this.ports = this.deps.bridgePorts(this.bridge, true));
  }

  /** Read after the ports: listing a veth gives its peer's namespace an id if it had none. */
  async namedIds(): Promise<Map<string, number>> {
    await this.bridgePorts().catch(() => undefined);
    return (this.named ??= this.deps.namedNamespaceIds().catch(() => new Map()));
  }
}

export class BridgePortFinder {
  /**
   * Per container: what was looked up (its endpoint on which bridge) and what was found. A restart
   * makes a new endpoint.
   */
  private readonly cache = new Map<
    string,
    { key: string; lookup: Lookup; at: number; failures: number }
  >();
  private lastWorked: "byId" | "entering" | null = null;
  private readonly looking = limiter(LOOKUP_CONCURRENCY);
  /** Whether a first attach() ran: from then on, new members are looked up beside the pass. */
  private started = false;
  /** Lookups running beside the passes, by container. */
  private readonly inFlight = new Map<string, Promise<unknown>>();
  private readonly entering = limiter(ENTER_CONCURRENCY);

  constructor(
    private readonly deps: BridgePortDeps,
    /** Told once per failed endpoint why its port stays unbound. */
    private readonly onFallback: (member: Member, reason: string) => void,
    /** Told when a lookup fails and will be tried again in `retryInMs` (by the next pass then). */
    private readonly onRetry: (member: Member, reason: string, retryInMs: number) => void = () =>
      undefined,
    /** Told when lookups made beside a pass are done: a pass binds what they found. */
    private readonly onLearned: () => void = () => undefined,
  ) {}

  /**
   * Starts reading the bridge's ports, to be handed to the attach() that follows: the host is
   * read while the Engine answers, instead of after.
   */
  prefetch(bridge: string): EarlyPorts {
    const ports = this.deps.bridgePorts(bridge);
    ports.catch(() => undefined); // met again, and reported, by the lookup that uses it
    return { bridge, ports };
  }

  /**
   * Members with their bridge port set where it was found. `bridge` is the network's Linux
   * bridge (null: the network has none, e.g. another driver). A member whose container is gone
   * is left out: it cannot be the one sending, so nothing may be allowed in its name.
   */
  async attach(
    members: readonly Member[],
    bridge: string | null,
    early?: EarlyPorts,
  ): Promise<Member[]> {
    const ids = new Set(members.map((m) => m.id));
    for (const id of this.cache.keys()) if (!ids.has(id)) this.cache.delete(id);
    const host =
      bridge === null
        ? null
        : new HostView(this.deps, bridge, early?.bridge === bridge ? early.ports : undefined);
    const due = members.filter((m) => this.due(m, host) && !this.inFlight.has(m.id));
    // A whitelisted member's port is looked up now: its allowance must be bound to it. Other
    // members are isolated whatever their port, so a new one's is looked up beside the pass,
    // which does not wait (an inspect of a container still starting waits for its start,
    // ~0.5 s), and a pass follows to bind it. Not on the first pass: the kernel may hold their
    // bindings already (a restart), and a pass without them would take them away for a while.
    const later = this.started ? due.filter((m) => !m.whitelisted) : [];
    this.started = true;
    if (later.length > 0) {
      const done = Promise.all(later.map((m) => this.lookup(m, host)));
      for (const m of later) this.inFlight.set(m.id, done);
      void done.finally(() => {
        for (const m of later) this.inFlight.delete(m.id);
        this.onLearned();
      });
    }
    const looked = await Promise.all(
      members.map(async (m) => {
        if (m.whitelisted) await this.inFlight.get(m.id); // already being looked up
        const now = m.whitelisted || !this.inFlight.has(m.id);
        return [m, now ? await this.lookup(m, host) : PENDING] as const;
      }),
    );
    return looked.flatMap(([member, lookup]): Member[] => {
      if ("gone" in lookup) return [];
      return [{ ...member, port: "port" in lookup ? lookup.port : undefined }];
    });
  }

  /** The cache key of a member's lookup: its endpoint on which bridge (a restart makes a new one). */
  private key(member: Member, host: HostView | null): string {
    return `${member.endpointId ?? ""}@${host?.bridge ?? ""}`;
  }

  /** Whether a member's lookup is to be made (again) now, rather than taken from the cache. */
  private due(member: Member, host: HostView | null): boolean {
    const cached = this.cache.get(member.id);
    if (cached?.key !== this.key(member, host)) return true;
    const failures = "error" in cached.lookup ? cached.failures : 0;
    const retryAfter = RETRY_DELAYS_MS[failures - 1] ?? RETRY_FAILED_MS;
    return failures > 0 && Date.now() - cached.at >= retryAfter;
  }

  private async lookup(member: Member, host: HostView | null): Promise<Lookup> {
    const key = this.key(member, host);
    const cached = this.cache.get(member.id);
    if (cached && !this.due(member, host)) return cached.lookup;
    const failures = cached?.key === key && "error" in cached.lookup ? cached.failures : 0;
    const lookup = host
      ? await this.looking(() => this.find(member, host))
      : { error: "the network has no Linux bridge (not a bridge network)" };
    if ("gone" in lookup) return lookup; // not cached: nothing to remember about a gone container
    this.cache.set(member.id, {
      key,
      lookup,
      at: Date.now(),
      failures: "error" in lookup ? failures + 1 : 0,
    });
    if (!("error" in lookup)) return lookup;
    const quick = RETRY_DELAYS_MS[failures];
    if (quick === undefined) this.onFallback(member, lookup.error);
    else this.onRetry(member, lookup.error, quick);
    return lookup;
  }

  private async find(member: Member, host: HostView): Promise<Lookup> {
    // The Engine first, the host after: a port listed before the Engine reports the container
    // running may not show its peer yet (measured: the first lookup then failed every time).
    let info: SandboxInfo | null;
    try {
      info = await this.deps.inspect(member.id);
    } catch (error) {
      return { error: `inspecting the container failed: ${errorText(error)}` };
    }
    if (info === null || !info.running) return { gone: true };
    let ports: IpLink[];
    try {
      ports = await host.bridgePorts();
    } catch (error) {
      return { error: `listing the ports of ${host.bridge} failed: ${errorText(error)}` };
    }
    const found = await this.match(member, info, ports, host);
    // The port matched may be kept from an earlier read under a name since taken by a new
    // interface: the match stands only if the name still has its index, else all are re-read.
    if (!("port" in found)) return found;
    const link = ports.find((p) => p.ifname === found.port);
    if (!link || (this.deps.portIsCurrent?.(link) ?? true)) return found;
    try {
      ports = await host.relist();
    } catch (error) {
      return { error: `listing the ports of ${host.bridge} failed: ${errorText(error)}` };
    }
    return this.match(member, info, ports, host);
  }

  /** Tries both ways on a listing of the bridge's ports. */
  private async match(
    member: Member,
    info: SandboxInfo,
    ports: IpLink[],
    host: HostView,
  ): Promise<{ port: string } | { error: string }> {
    const ways = {
      byId: () => this.byNamespaceId(info, ports, host),
      entering: () => this.byEntering(member, info, ports, host.bridge),
    };
    // The way that worked last time first: on a given host, it is the one that works.
    const order: (keyof typeof ways)[] =
      this.lastWorked === "entering" ? ["entering", "byId"] : ["byId", "entering"];
    const reasons: string[] = [];
    for (const way of order) {
      const found = await ways[way]();
      if ("port" in found) {
        this.lastWorked = way;
        return found;
      }
      reasons.push(...found.errors);
    }
    return { error: reasons.join("; ") };
  }

  /** Way 1: the sandbox's namespace file is listed under NAMED_NETNS_DIR with an id. */
  private async byNamespaceId(
    info: SandboxInfo,
    ports: IpLink[],
    host: HostView,
  ): Promise<{ port: string } | { errors: string[] }> {
    const name = basename(info.sandboxKey);
    const named = `${NAMED_NETNS_DIR}/${name}`;
    // A stat first: where the folder is not mounted, no namespace listing is spawned for nothing.
    const [listed, own] = await Promise.all([
      this.deps.namespaceInode(named),
      this.deps.namespaceInode(info.sandboxKey),
    ]);
    const nsid = name && listed !== null ? (await host.namedIds()).get(name) : undefined;
    if (nsid === undefined) return { errors: [`${named} is not visible here`] };
    // Where the SandboxKey itself is visible too, both must be the same namespace.
    if (own !== null && listed !== own) return { errors: [`${named} is another namespace`] };
    const found = portsOfNamespace(ports, nsid);
    if (found.length === 1) return { port: found[0]! };
    const count = found.length === 0 ? "no" : "more than one";
    return { errors: [`${count} port of ${host.bridge} leads to ${named}`] };
  }

  /** Way 2: enter the namespace and pair its interface with a port of the bridge. */
  private async byEntering(
    member: Member,
    info: SandboxInfo,
    ports: IpLink[],
    bridge: string,
  ): Promise<{ port: string } | { errors: string[] }> {
    const own = await this.deps.namespaceInode("/proc/self/ns/net");
    const candidates = [info.sandboxKey, info.pid > 0 ? `/proc/${info.pid}/ns/net` : ""];
    const errors: string[] = [];
    for (const path of candidates.filter(Boolean)) {
      const inode = await this.deps.namespaceInode(path);
      if (inode === null) {
        errors.push(`${path} is not visible here`);
        continue;
      }
      if (inode === own) continue; // our own namespace (another PID namespace's pid): not it
      let links: IpLink[];
      try {
        links = await this.entering(() => this.deps.linksIn(path));
      } catch (error) {
        errors.push(`entering ${path} failed: ${(error as Error).message}`);
        continue;
      }
      const port = portOfLinks(ports, links, member.mac);
      if (port !== null) return { port };
      // What was seen, to tell a race (a port without its peer yet) from a wrong host.
      const there = links.flatMap((l) => (l.link_index ? [`${l.ifname} → ${l.link_index}`] : []));
      const here = ports
        .slice(0, 8)
        .map((p) => `${p.ifname} (${p.ifindex}) → ${p.link_index ?? "?"}`)
        .concat(ports.length > 8 ? [`${ports.length - 8} more`] : []);
      errors.push(
        `no interface in ${path} is paired with a port of ${bridge} ` +
          `(there: ${there.join(", ") || "none"}; ports: ${here.join(", ") || "none"})`,
      );
    }
    return { errors };
  }
}
