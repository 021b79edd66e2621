// `trafficjam swarm-worker`: one per node (the daemon's global service). It is the single-host
// daemon acting in the overlay network's namespace on its node, with these additions:
// - it reports its node's whitelisted containers and load-balancer address to the daemon, and
//   takes the cluster's allowed set from it (signed by the daemon; allowed-set.ts merges it);
// - it binds the other nodes' allowed addresses to the VXLAN port in the overlay's namespace;
// - it keeps its node's guard (node-guard.ts) in the node's own namespace: the tunnel binds every
//   endpoint to its node, no container sends into the data path, members do not reach the node;
// - it watches Docker's netns folder, so a new overlay namespace is protected at once.
// The last set taken is kept on disk, so a worker keeps enforcing it while the daemon is away,
// across its own restarts too.
import {
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  watch,
  writeFileSync,
  type FSWatcher,
} from "node:fs";
import { dirname } from "node:path";
import { isIPv6 } from "node:net";
import type { KeyObject } from "node:crypto";
import { z } from "zod/v3";
import { ConfigError, type Config } from "../config.js";
import type { Log } from "../log.js";
import type { NetworkSnapshot, Ruleset } from "../model.js";
import { onceThenDebug, runDaemon } from "../daemon.js";
import { createBackend, type SelectingOptions } from "../firewall/index.js";
import type { FirewallBackend, SyncOptions, SyncResult } from "../firewall/backend.js";
import { localHost, runChecked, type Host } from "../host/host.js";
import { ensureBridgeNetfilterIn } from "../host/bridge-netfilter.js";
import { createEngineClient, type EngineClient } from "../observe/engine-api.js";
import type { BridgeLocation, NetworkInspect } from "../observe/network.js";
import { WorkerListener } from "./channel.js";
import { AllowedSet, savedSetSchema, type SavedSet } from "./allowed-set.js";
import { NodeGuardBackend } from "./node-guard-backend.js";
import type { NodeGuard } from "./node-guard.js";
import { NodeView, parseDaemonRef, type DaemonRef } from "./node-view.js";
import { LogRate } from "./rate-limit.js";
import { NftChangeMonitor } from "../host/nft-monitor.js";
import type { ChangeMonitor } from "../firewall/converger.js";
import { Conntrack } from "../host/conntrack.js";
import { publicKeyOf, verifyMessage } from "./signing.js";
import { SwarmApi, connectSwarm, type ClusterEndpoint } from "./swarm-api.js";
import {
  overlayMac,
  type AllowedEntry,
  type AllowedMessage,
  type NodeStatus,
  type Report,
} from "./protocol.js";
import { logGroupsOf } from "../drops.js";
import type { HealthState } from "../ops/health.js";
import { noAttempts } from "../ops/state.js";
import { VERSION } from "../version.js";

export interface WorkerSettings {
  channelPort: number;
  /** The channel's pre-shared key (a Swarm secret's file). */
  keyFile: string;
  /** Where the last allowed set is kept (a volume of the node). */
  stateFile: string;
  /** Docker's netns folder, mounted with rslave propagation. */
  netnsDir: string;
  /** The daemon's public key (base64 DER): only sets it signed are taken. */
  daemonKey: string;
  /** Where the daemon's container is (it alone may reach the channel port from a container). */
  daemon: DaemonRef | null;
  /** The swarm's data-path port as the daemon read it; the VXLAN link's own, once seen, wins. */
  dataPort: number | null;
}

/**
 * What the Swarm daemon passes a worker in its service's environment (see daemon.ts): its public
 * key, where its own container is, the swarm's data-path port. Errors name the variable.
 */
export function workerSettingsFromEnv(
  env: Record<string, string | undefined>,
): Pick<WorkerSettings, "daemonKey" | "daemon" | "dataPort"> {
  const problems: string[] = [];
  const daemonKey = env.TRAFFICJAM_DAEMON_KEY ?? "";
  try {
    publicKeyOf(daemonKey);
  } catch {
    problems.push(
      `TRAFFICJAM_DAEMON_KEY=${JSON.stringify(daemonKey)}: expected the Swarm daemon's Ed25519 public key (base64 DER), as the daemon sets it in the worker service`,
    );
  }
  let daemon: DaemonRef | null = null;
  try {
    daemon = parseDaemonRef(env.TRAFFICJAM_DAEMON);
  } catch (error) {
    problems.push((error as Error).message);
  }
  const rawPort = env.TRAFFICJAM_DATA_PATH_PORT ?? "";
  const dataPort = rawPort === "" ? null : Number(rawPort);
  if (dataPort !== null && !(Number.isInteger(dataPort) && dataPort >= 1 && dataPort <= 65535))
    problems.push(
      `TRAFFICJAM_DATA_PATH_PORT=${JSON.stringify(rawPort)}: expected a UDP port number, 1 to 65535`,
    );
  if (problems.length > 0) throw new ConfigError(problems);
  return { daemonKey, daemon, dataPort };
}

/** The overlay's Linux bridge inside its namespace (Docker 20.10 and later). */
export const OVERLAY_BRIDGE = "br0";

/**
 * The overlay's namespace on this node: `<n>-<first 10 of the network id>` in Docker's netns
 * folder, n counting how often Docker made it while the network stayed here (1 at first); the
 * newest one. Null while the network has no namespace here.
 */
export function overlayNamespace(netnsDir: string, networkId: string): string | null {
  const key = networkId.slice(0, 10);
  let newest: { n: number; name: string } | null = null;
  try {
    for (const name of readdirSync(netnsDir)) {
      const m = /^(\d+)-(.+)$/.exec(name);
      if (m && m[2] === key && (newest === null || Number(m[1]) > newest.n))
        newest = { n: Number(m[1]), name };
    }
  } catch {
    return null; // no netns folder: no namespace
  }
  return newest && `${netnsDir}/${newest.name}`;
}
const loadBalancerNamespace = (netnsDir: string, networkId: string) =>
  `${netnsDir}/lb_${networkId.slice(0, 9)}`;

/**
 * How long a worker that has never held a complete set lets every other node's endpoint in (see
 * `settled` below) before it enforces whatever it was told.
 */
const SETTLE_LIMIT_MS = 30_000;

/** How often, at most, a worker reads the cluster's view at its full passes. */
const VIEW_TTL_MS = 10_000;
/** How often, at most, it checks the overlay namespace's br_netfilter sysctls. */
const SYSCTLS_TTL_MS = 60_000;
/** A worker tells the daemon how its node enforces this often (its drop counters read then)… */
const STATUS_EVERY_MS = 60_000;
/** …and when a daemon connects, unless the last status is younger than this… */
const STATUS_FRESH_MS = 10_000;
/** …and within this long of new blocked attempts (looked for in memory, no kernel read). */
const STATUS_NEWS_MS = 5_000;
/** The drop counters are read again at least this often, logged packets or not. */
const DROPS_REREAD_MS = 600_000;

/** What changes when the blocked-attempt log takes a new attempt (reported or held back). */
const attemptsKey = (state: HealthState) => {
  const attempts = state.ops?.attempts;
  return attempts ? `${attempts.reported}/${attempts.suppressed}` : "";
};

function loadSaved(path: string, log: Log): SavedSet | null {
  try {
    return savedSetSchema.parse(JSON.parse(readFileSync(path, "utf8")));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT")
      log.warn("swarm.state.unreadable", "cannot read the saved allowed set: starting empty", {
        path,
        err: error,
      });
    return null;
  }
}

function save(path: string, state: SavedSet): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(`${path}.tmp`, JSON.stringify(state));
  renameSync(`${path}.tmp`, path);
}

/**
 * The firewall in the overlay's namespace on this node: a backend per namespace (a recreated
 * network is a new namespace, with nothing cached of the old one), and none while the network has
 * no namespace here, so nothing is ever written to the node's own namespace by it.
 */
class OverlayBackend implements FirewallBackend {
  private current: { netns: string; backend: FirewallBackend; monitor: NftChangeMonitor } | null =
    null;

  constructor(
    private readonly make: (host: Host, monitor: ChangeMonitor) => FirewallBackend,
    private readonly onMonitorLost: (reason: string) => void,
    /** Somebody else changed the rules in the overlay namespace. */
    private readonly onChange: () => void,
  ) {}

  /** Stops watching the namespace's rules (the worker stops). */
  close(): void {
    this.current?.monitor.stop();
  }

  /** The backend of `netns` (undefined: the last one's, for clear). */
  private backend(netns?: string | null): { backend: FirewallBackend; renewed: boolean } | null {
    if (netns === undefined)
      return this.current ? { backend: this.current.backend, renewed: false } : null;
    if (netns === null) return null;
    if (this.current?.netns === netns) return { backend: this.current.backend, renewed: false };
    // A watch of the namespace's own rules (nft monitor there): a quiet resync reads nothing.
    this.current?.monitor.stop();
    const monitor = new NftChangeMonitor(this.onMonitorLost, netns);
    monitor.onChange(this.onChange);
    monitor.start();
    this.current = { netns, backend: this.make(localHost.in(netns), monitor), monitor };
    return { backend: this.current.backend, renewed: true };
  }

  async sync(ruleset: Ruleset, options: SyncOptions = { fresh: true }): Promise<SyncResult> {
    const found = this.backend(ruleset.netns);
    if (found === null || ruleset.bridge === null)
      return {
        changed: false,
        differences: [],
        location: "nowhere: the network is not on this node",
        revoked: [],
      };
    return found.backend.sync(ruleset, { ...options, fresh: options.fresh || found.renewed });
  }

  async clear(): Promise<SyncResult> {
    const found = this.backend();
    if (found === null)
      return { changed: false, differences: [], location: "nowhere", revoked: [] };
    return found.backend.clear();
  }

  async check(ruleset: Ruleset) {
    const found = this.backend(ruleset.netns);
    if (found === null) return { location: "nowhere", differences: [] };
    return found.backend.check(ruleset);
  }

  warm(fresh: boolean): void {
    this.current?.backend.warm?.(fresh);
  }
}

/** The overlay on this node, as of the last full read. */
interface OverlayHere {
  id: string;
  name: string;
  netns: string;
}

class SwarmWorker {
  private readonly set: AllowedSet;
  private readonly publicKey: KeyObject;
  private readonly channel: WorkerListener;
  private readonly guard: NodeGuardBackend;
  /** The watch of the node's own rules (the daemon's, started after its first pass). */
  private ownMonitor: ChangeMonitor | null = null;
  private overlay: OverlayBackend | null = null;
  private readonly nodeView: NodeView;
  private readonly refusals = new LogRate();
  private network: OverlayHere | null = null;
  private vxlan: { netns: string; port: string; vni: number; dataPort: number } | null = null;
  private sysctlsSetIn: string | null = null;
  /** This node's data-path address, as the cluster's view names it (learnt from a local endpoint). */
  private hostIp: string | null = null;
  /** The cluster's view of the overlay, read at full passes. */
  private view: { networkId: string; endpoints: ClusterEndpoint[]; at: number } | null = null;
  /** When the overlay namespace's br_netfilter sysctls were last checked, and what was wrong. */
  private sysctlsCheckedAt = 0;
  private sysctlsProblems: string[] = [];
  /** Until a complete set is held, other nodes' endpoints are let in as the view lists them. */
  private settled: boolean;
  private settleTimer: NodeJS.Timeout | null = null;
  /** Asks the daemon for a pass; until it runs, the reasons wait here (a set taken at start). */
  private requestPass: ((reason: string) => void) | null = null;
  private readonly waiting = new Set<string>();
  private lastReport = "";
  private lastNetworkId: string | null;
  private netnsWatch: FSWatcher | null = null;
  /** Members' docker_gwbridge addresses whose flows to the node were cut (once each). */
  private readonly swept = new Set<string>();
  /** What the daemon side publishes for `status`: the node's part of the Swarm daemon's. */
  private readState: (() => HealthState) | null = null;
  private statusTimer: NodeJS.Timeout | null = null;
  private statusMadeAt = 0;
  private lastOk: boolean | null = null;
  private statusAttempts = "";
  /** The drop counters as last read, and what they were read for. */
  private drops: { key: string; counts: NonNullable<NodeStatus["drops"]>; at: number } | null =
    null;

  constructor(
    private readonly config: Config,
    private readonly settings: WorkerSettings,
    private readonly log: Log,
    private readonly client: EngineClient,
    private readonly api: SwarmApi,
    private readonly node: { id: string; addr: string },
    pskKey: Buffer,
  ) {
    this.publicKey = publicKeyOf(settings.daemonKey);
    this.guard = new NodeGuardBackend(config.instanceId, localHost, {
      quietSince: (since) => this.ownMonitor?.quietSince(since) ?? false,
    });
    this.set = new AllowedSet(loadSaved(settings.stateFile, log), settings.daemonKey);
    this.settled = this.set.complete;
    this.lastNetworkId = this.set.networkId;
    if (this.set.networkId !== null)
      log.info("swarm.state.loaded", "enforcing the allowed set saved before this start", {
        entries: this.set.entries().length,
      });
    this.nodeView = new NodeView(client, api, localHost, settings.daemon, (member, reason) =>
      log.debug("port.unbound", "cannot find the port of a container on its node's bridge", {
        container: member.name,
        reason,
      }),
    );
    this.channel = new WorkerListener(pskKey, {
      onConnected: (peer) => {
        log.info("swarm.channel.connected", "the Swarm daemon connected", { peer });
        // It got the kept status at once; a fresh one follows if that one is old.
        if (Date.now() - this.statusMadeAt > STATUS_FRESH_MS) void this.sendStatus();
      },
      onDisconnected: (peer) =>
        log.info("swarm.channel.lost", "the Swarm daemon hung up: enforcing the last set", {
          peer,
        }),
      onRefused: (peer, reason) =>
        this.refused("swarm.channel.refused", "refused a connection to the channel", {
          peer,
          reason,
        }),
      onAllowed: (message) => this.take(message),
    });
  }

  /** A line a peer can provoke at will: at a bounded rate. */
  private refused(
    event: "swarm.channel.refused" | "swarm.allowed.rejected",
    msg: string,
    fields: Record<string, unknown>,
  ): void {
    const ok = this.refusals.take(Date.now());
    if (ok) this.log.warn(event, msg, { ...fields, suppressed: ok.suppressed });
  }

  private request(reason: string): void {
    if (this.requestPass) this.requestPass(reason);
    else this.waiting.add(reason); // the first pass has not run yet: asked for once it has
  }

  /** An allowed set from the channel: taken if the daemon signed it, newer, for this instance. */
  private take(message: AllowedMessage): void {
    if (!verifyMessage(message, this.publicKey))
      return this.refused(
        "swarm.allowed.rejected",
        "an allowed set not signed by the Swarm daemon: ignored",
        { reason: "bad signature" },
      );
    if (message.instanceId !== this.config.instanceId)
      return this.refused("swarm.allowed.rejected", "an allowed set of another instance: ignored", {
        reason: `instance ${message.instanceId}`,
      });
    if (this.network !== null && message.networkId !== this.network.id) return; // another network's
    const taken = this.set.take(message);
    if (taken === "stale")
      return this.refused(
        "swarm.allowed.rejected",
        "an allowed set older than the last one taken: ignored",
        { reason: "replayed or out of order", seq: message.seq },
      );
    const settling = !this.settled && message.complete;
    if (settling) this.settle("the daemon's set is complete");
    if (taken === "unchanged" && !settling) return;
    try {
      save(this.settings.stateFile, this.set.saved()!);
    } catch (error) {
      this.log.warn("swarm.state.unwritable", "cannot save the allowed set", { err: error });
    }
    this.log.info("swarm.allowed.received", "allowed set received from the Swarm daemon", {
      entries: this.set.entries().length,
      complete: message.complete,
      vouched: message.vouched.length,
    });
    this.request("swarm:allowed");
  }

  private settle(why: string): void {
    if (this.settled) return;
    this.settled = true;
    if (this.settleTimer) clearTimeout(this.settleTimer);
    this.log.info("swarm.allowed.settled", "enforcing the daemon's set alone from now on", { why });
    this.request("swarm:settled");
  }

  /** Where the overlay's bridge is on this node: br0 in its namespace, if it has one here. */
  private readonly bridgeOf = (found: NetworkInspect): BridgeLocation | undefined => {
    const netns =
      found.Driver === "overlay" ? overlayNamespace(this.settings.netnsDir, found.Id) : null;
    if (netns === null || !existsSync(netns)) {
      this.network = null;
      return undefined;
    }
    this.network = { id: found.Id, name: found.Name, netns };
    return { name: OVERLAY_BRIDGE, netns };
  };

  private readonly sandboxOf = (memberId: string) =>
    this.network !== null && memberId === `lb-${this.network.name}`
      ? {
          running: true,
          pid: 0,
          sandboxKey: loadBalancerNamespace(this.settings.netnsDir, this.network.id),
        }
      : null;

  /** Completes a pass's snapshot: the tunnel, and the node's guard put in force first. */
  private readonly refine = async (
    snapshot: NetworkSnapshot | null,
    fresh: boolean,
    kernelFresh: boolean,
  ): Promise<NetworkSnapshot | null> => {
    const current = this.network;
    if (snapshot === null || current === null || !snapshot.bridge) {
      this.report(snapshot === null ? null : snapshot.id, [], null);
      await this.syncGuard(null, [], fresh, kernelFresh); // no container sends into the data path, overlay or not
      return null;
    }
    const overlayHost = localHost.in(current.netns);
    if (this.sysctlsSetIn !== current.netns) {
      const { changed } = await ensureBridgeNetfilterIn(overlayHost);
      if (changed.length > 0)
        this.log.info(
          "host.sysctls.enabled",
          "enabled br_netfilter sysctls in the overlay namespace",
          {
            sysctls: changed,
            netns: current.netns,
          },
        );
      this.sysctlsSetIn = current.netns;
      this.sysctlsCheckedAt = Date.now();
    }
    if (this.vxlan?.netns !== current.netns)
      this.vxlan = { netns: current.netns, ...(await vxlanLink(overlayHost)) };
    const lb = `lb-${current.name}`;
    const members = snapshot.members.map((m) => (m.id === lb ? { ...m, whitelisted: true } : m));
    const local = members.flatMap((m) => (m.ipv4 ? [m.ipv4] : []));
    // The cluster's view changes with other nodes, which send no event here: read at full
    // passes, at most every VIEW_TTL_MS (and always while settling, or for a new network).
    const viewAge = Date.now() - (this.view?.at ?? 0);
    if (
      this.view?.networkId !== snapshot.id ||
      !this.settled ||
      (fresh && viewAge >= VIEW_TTL_MS)
    ) {
      const read = await this.api.clusterEndpoints(snapshot.id);
      this.view = { networkId: snapshot.id, endpoints: read?.endpoints ?? [], at: Date.now() };
    }
    const view = this.view?.endpoints ?? [];
    const ownContainers = new Set(members.flatMap((m) => (m.id !== lb && m.ipv4 ? [m.ipv4] : [])));
    this.hostIp ??= view.find((e) => ownContainers.has(e.ipv4) && e.hostIp !== "")?.hostIp ?? null;
    const self = this.hostIp ?? this.node.addr;
    if (isIPv6(self))
      throw new Error(
        `this node's data-path address ${self} is IPv6: the tunnel's sender cannot be checked over an IPv6 underlay, so TrafficJam refuses to protect this overlay`,
      );
    this.report(
      snapshot.id,
      members
        .filter((m) => m.whitelisted && m.id !== lb && m.ipv4)
        .map((m) => ({ name: m.name, ipv4: m.ipv4! })),
      members.find((m) => m.id === lb)?.ipv4 ?? null,
    );
    const told = this.set.entries(snapshot.id).filter((e) => e.node !== this.node.id);
    const elsewhere = view.filter((e) => e.hostIp !== "" && e.hostIp !== self);
    const remoteAllowed: AllowedEntry[] = this.settled
      ? told
      : [
          ...told,
          ...elsewhere.map((e) => ({
            node: "unknown",
            hostIp: e.hostIp,
            ipv4: e.ipv4,
            name: e.name,
            kind: "container" as const,
          })),
        ];
    // Every endpoint of another node is bound to its node in the tunnel: the view's, and the
    // load-balancer addresses the daemon told (the view lists none).
    const remote = [
      ...elsewhere.map((e) => ({ ipv4: e.ipv4, hostIp: e.hostIp })),
      ...told.map((e) => ({ ipv4: e.ipv4, hostIp: e.hostIp })),
    ];
    await this.syncGuard(
      {
        vni: this.vxlan.vni,
        dataPort: this.vxlan.dataPort,
        remote,
        local: [...local, ...view.filter((e) => e.hostIp === self).map((e) => e.ipv4)],
      },
      this.config.allowHostTraffic ? [] : members.filter((m) => m.id !== lb).map((m) => m.id),
      fresh,
      kernelFresh,
    );
    return {
      ...snapshot,
      members,
      tunnel: {
        port: this.vxlan.port,
        allowed: remoteAllowed.map((e) => ({ ipv4: e.ipv4, mac: overlayMac(e.ipv4) })),
      },
    };
  };

  /**
   * The overlay namespace's br_netfilter sysctls, Docker's namespace that the worker set up: checked
   * every SYSCTLS_TTL_MS (a process entered there each time), switched back on where they were
   * turned off, a problem only where that fails. The node's own sysctls are not the worker's:
   * its node guard matches routed traffic, which needs none.
   */
  private async overlaySysctls(ruleset: Ruleset): Promise<string[]> {
    if (ruleset.netns === null) return [];
    if (Date.now() - this.sysctlsCheckedAt < SYSCTLS_TTL_MS) return this.sysctlsProblems;
    this.sysctlsCheckedAt = Date.now();
    this.sysctlsProblems = await this.ensureSysctls(ruleset.netns);
    return this.sysctlsProblems;
  }

  private async ensureSysctls(netns: string): Promise<string[]> {
    try {
      const { changed } = await ensureBridgeNetfilterIn(localHost.in(netns));
      if (changed.length > 0)
        this.log.warn(
          "host.sysctls.enabled",
          "br_netfilter sysctls were off in the overlay namespace: switched back on",
          {
            sysctls: changed,
            netns,
          },
        );
      return [];
    } catch (error) {
      return [(error as Error).message];
    }
  }

  /** The node's guard: its tunnel part from the overlay here (null: none here), always the rest. */
  private async syncGuard(
    overlay: Pick<NodeGuard, "vni" | "dataPort" | "remote" | "local"> | null,
    members: readonly string[],
    fresh: boolean,
    kernelFresh: boolean,
  ): Promise<void> {
    const dataPort = overlay?.dataPort ?? this.settings.dataPort;
    if (dataPort === null)
      throw new Error(
        "the swarm's data-path port is not known (TRAFFICJAM_DATA_PATH_PORT unset, no overlay namespace here)",
      );
    const facts = await this.nodeView.facts(fresh, members);
    const guard: NodeGuard = {
      instanceId: this.config.instanceId,
      vni: overlay?.vni ?? 0,
      dataPort,
      channelPort: this.settings.channelPort,
      remote: overlay?.remote ?? [],
      local: overlay?.local ?? [],
      bridges: facts.bridges,
      daemon: facts.daemon,
      members: this.config.allowHostTraffic ? null : facts.members,
      nodeAddresses: facts.nodeAddresses,
    };
    const result = await this.guard.sync(guard, kernelFresh);
    await this.cutMemberFlows(guard);
    if (result.changed)
      this.log.info("swarm.node.guarded", "the node's guard applied in its own namespace", {
        differences: result.differences,
        remote: guard.remote.length,
        members: guard.members?.length ?? null,
        daemon: guard.daemon ? `${guard.daemon.bridge} ${guard.daemon.ipv4.join(",")}` : null,
      });
  }

  /**
   * Once the guard keeps members off their node, the flows a member opened to it before (through
   * docker_gwbridge, tracked in the node's namespace) are cut, once per member: as on one host.
   */
  private async cutMemberFlows(guard: NodeGuard): Promise<void> {
    if (guard.members === null) return;
    const node = new Set(guard.nodeAddresses);
    const conntrack = new Conntrack(localHost);
    for (const address of guard.members.flatMap((m) => m.ipv4)) {
      if (this.swept.has(address)) continue;
      const flows = await conntrack.list(4, address);
      const targets = [
        ...new Set(flows.filter((f) => node.has(f.destination)).map((f) => f.destination)),
      ];
      let cut = 0;
      for (const destination of targets) cut += await conntrack.delete(4, address, destination);
      this.swept.add(address);
      if (cut > 0)
        this.log.warn(
          "flows.cut",
          "tracked flows of a member to its node, opened before the guard, cut",
          {
            network: this.network?.name ?? null,
            flows: cut,
            pairs: targets.map((d) => `${address} → ${d} (member-to-host)`),
          },
        );
    }
  }

  private report(
    networkId: string | null,
    whitelisted: Report["whitelisted"],
    lb: string | null,
  ): void {
    // Gone from this node (or never here): it has nothing there any more, which is news too.
    networkId ??= this.lastNetworkId;
    this.lastNetworkId = networkId;
    const message: Report = {
      type: "report",
      node: this.node.id,
      hostIp: this.hostIp ?? this.node.addr,
      networkId,
      whitelisted: [...whitelisted].sort((a, b) => (a.ipv4 < b.ipv4 ? -1 : 1)),
      loadBalancer: lb,
      known: networkId === null ? null : this.set.last(networkId),
    };
    const text = JSON.stringify(message);
    if (text === this.lastReport && this.channel.connected) return;
    this.lastReport = text;
    this.channel.send(message);
  }

  async run(): Promise<number> {
    this.report(null, [], null); // answered from the first connection, network here or not
    if (!this.settled) {
      this.settleTimer = setTimeout(() => {
        if (this.settled) return;
        this.log.warn(
          "swarm.allowed.incomplete",
          "no complete set from the Swarm daemon yet: enforcing what is known",
          {
            waitedMs: SETTLE_LIMIT_MS,
          },
        );
        this.settle("time limit");
      }, SETTLE_LIMIT_MS);
      this.settleTimer.unref();
    }
    await this.channel.listen(this.node.addr, this.settings.channelPort).catch((error: Error) => {
      throw new Error(
        `cannot listen on ${this.node.addr}:${this.settings.channelPort} (SWARM_CHANNEL_PORT): ${error.message}`,
      );
    });
    this.log.info("swarm.channel.listening", "listening for the Swarm daemon", {
      address: `${this.node.addr}:${this.settings.channelPort}`,
    });
    return runDaemon(this.config, this.log, {
      ownSysctls: false,
      backend: (options: SelectingOptions) => {
        this.ownMonitor = options.monitor ?? null;
        const warn = onceThenDebug(this.log, "warn");
        this.overlay = new OverlayBackend(
          (host, monitor) =>
            createBackend(this.config.firewallBackend, this.config.instanceId, {
              ...options,
              host,
              monitor,
              overlay: true,
            }),
          (reason) =>
            warn(
              "host.monitor.unavailable",
              "nft monitor unavailable in the overlay namespace: every resync re-reads the rules",
              { reason },
            ),
          () => this.request("rules:changed"),
        );
        return this.overlay;
      },
      observer: { bridgeOf: this.bridgeOf, sandboxOf: this.sandboxOf },
      refine: this.refine,
      hostProblems: (ruleset) => this.overlaySysctls(ruleset),
      // A bridge network created on the node: its bridge joins the guarded ones at once.
      event: (event) => {
        if (event.Type === "network" && (event.Action === "create" || event.Action === "destroy")) {
          this.nodeView.bridgesChanged();
          if (event.Action === "create") this.request("node:network");
        }
      },
      started: (requestPass) => {
        this.requestPass = requestPass;
        for (const reason of this.waiting) requestPass(reason);
        this.waiting.clear();
        this.watchNamespaces(requestPass);
      },
      stopping: () => {
        if (this.statusTimer) clearInterval(this.statusTimer);
        this.netnsWatch?.close();
        this.overlay?.close();
        void this.channel.close();
      },
      cleared: async () => {
        await this.guard.clear();
      },
      dockerReady: true,
      operations: true,
      // A pass that changes the outcome (the first, a failure, a recovery) is told at once.
      passed: (outcome) => {
        if (outcome.ok === this.lastOk) return;
        this.lastOk = outcome.ok;
        void this.sendStatus(); // runDaemon records the outcome in the state before this
      },
      state: (read) => {
        this.readState = read;
        // New blocked attempts are told within STATUS_NEWS_MS; otherwise every STATUS_EVERY_MS.
        this.statusTimer = setInterval(() => {
          const news = attemptsKey(read()) !== this.statusAttempts;
          if (news || Date.now() - this.statusMadeAt >= STATUS_EVERY_MS) void this.sendStatus();
        }, STATUS_NEWS_MS);
        this.statusTimer.unref();
      },
    });
  }

  /**
   * How this node enforces, for the daemon's `status` and `doctor`: the last pass, the mode, the
   * blocked attempts, and the drop counters of the overlay namespace (read again only when the
   * kernel's log shows drops since the last read, or after DROPS_REREAD_MS).
   */
  private async sendStatus(): Promise<void> {
    const state = this.readState?.();
    if (!state) return;
    this.statusMadeAt = Date.now();
    const ops = state.ops;
    this.statusAttempts = attemptsKey(state);
    const id = this.config.instanceId;
    const netns = state.ruleset?.netns ?? null;
    const error = (e: unknown) => String((e as Error).message ?? e).slice(0, 2000);
    let drops: NodeStatus["drops"] = null;
    if (state.location !== null && state.ruleset?.bridge) {
      // A drop is logged unless its source's log budget is spent, which it is not for long:
      // with no packet logged since the last read (and the log read), the counters are as read
      // (but for the few dropped past the budget right after it: read again every 10 minutes).
      const key = `${netns}|${state.location}|${ops?.attempts.packets}|${ops?.attemptLog.reading}`;
      const recent = this.drops !== null && Date.now() - this.drops.at < DROPS_REREAD_MS;
      if (recent && this.drops?.key === key && ops?.attemptLog.reading) drops = this.drops.counts;
      else {
        const { readDropCounts } = await import("../ops/counters.js");
        drops = await readDropCounts(
          localHost.in(netns),
          id,
          state.location,
          logGroupsOf(id),
        ).catch((e: unknown) => ({ error: error(e) }));
        this.drops = "error" in drops ? null : { key, counts: drops, at: Date.now() };
      }
    }
    const status: NodeStatus = {
      type: "status",
      node: this.node.id,
      version: VERSION.slice(0, 64),
      mode: this.config.mode,
      location: state.location?.slice(0, 2000) ?? null,
      netns: netns?.slice(0, 2000) ?? null,
      lastPass: state.lastPass
        ? {
            ok: state.lastPass.ok,
            at: state.lastPass.at,
            ...(state.lastPass.error ? { error: error(state.lastPass.error) } : {}),
          }
        : null,
      passes: ops?.passes ?? { ok: 0, failed: 0 },
      repairs: ops?.repairs ?? 0,
      drops,
      attempts: ops?.attempts ?? noAttempts(),
      attemptLog: {
        reading: ops?.attemptLog.reading ?? false,
        ...(ops?.attemptLog.reason ? { reason: error(ops.attemptLog.reason) } : {}),
      },
      at: Date.now(),
    };
    this.channel.sendStatus(status);
  }

  /**
   * A new namespace in Docker's netns folder (the overlay created again, a node joining, dockerd
   * restarted) asks for a full pass at once, rather than at the next resync.
   */
  private watchNamespaces(requestPass: (reason: string) => void): void {
    try {
      this.netnsWatch = watch(this.settings.netnsDir, (_kind, name) => {
        if (typeof name === "string" && /^\d+-/.test(name)) requestPass("netns:changed");
      });
      this.netnsWatch.on("error", () => undefined); // the folder went away: resyncs still find it
    } catch (error) {
      this.log.warn(
        "swarm.netns.unwatched",
        "cannot watch Docker's netns folder: new overlay namespaces wait for the next resync",
        {
          dir: this.settings.netnsDir,
          err: error,
        },
      );
    }
  }
}

export async function runSwarmWorker(
  config: Config,
  settings: WorkerSettings,
  log: Log,
): Promise<number> {
  let stopping = false;
  const { client, api } = await connectSwarm(log, () => stopping);
  const onSignal = () => (stopping = true);
  process.once("SIGTERM", onSignal);
  let node: { id: string; addr: string } | null = null;
  for (let attempt = 0; node === null; attempt++) {
    const info = await api.info().catch(() => null);
    if (info?.LocalNodeState === "active" && info.NodeID)
      node = { id: info.NodeID, addr: info.NodeAddr };
    else {
      if (attempt === 0)
        log.warn(
          "swarm.node.inactive",
          "this Docker engine is not an active Swarm node yet: waiting",
        );
      await new Promise((r) => setTimeout(r, 1000));
      if (stopping) return 0;
    }
  }
  process.off("SIGTERM", onSignal);
  if (isIPv6(node.addr)) {
    log.error(
      "swarm.underlay.ipv6",
      "this node's Swarm address is IPv6: the tunnel's sender cannot be checked over an IPv6 underlay; refusing to run",
      {
        address: node.addr,
      },
    );
    return 1;
  }
  const key = Buffer.from(readFileSync(settings.keyFile, "utf8").trim(), "base64");
  if (key.length < 16) throw new Error(`${settings.keyFile}: the channel key is too short`);
  return new SwarmWorker(config, settings, log, client, api, node, key).run();
}

const vxlanLinks = z.array(
  z.object({
    ifname: z.string(),
    linkinfo: z.object({
      info_data: z.object({
        id: z.number().int().min(0),
        port: z.number().int().min(1).max(65535),
      }),
    }),
  }),
);

/** The VXLAN port of the overlay's bridge, its VNI and UDP port, in the overlay's namespace. */
async function vxlanLink(host: Host): Promise<{ port: string; vni: number; dataPort: number }> {
  const args = ["-d", "-j", "link", "show", "master", OVERLAY_BRIDGE, "type", "vxlan"];
  const out = await runChecked(host, "ip", args);
  const links = vxlanLinks.parse(out.trim() === "" ? [] : JSON.parse(out));
  if (links.length !== 1)
    throw new Error(`expected one VXLAN port on ${OVERLAY_BRIDGE}, found ${links.length}`);
  const { ifname, linkinfo } = links[0]!;
  return { port: ifname, vni: linkinfo.info_data.id, dataPort: linkinfo.info_data.port };
}

/** `trafficjam swarm-worker --clear`: removes the instance's rules from the overlay's namespace and the node's. */
export async function clearSwarmWorker(
  config: Config,
  settings: Pick<WorkerSettings, "stateFile" | "netnsDir">,
  log: Log,
): Promise<number> {
  const client = createEngineClient(process.env);
  try {
    const found = await client.inspectNetwork(config.network);
    const netns = found ? overlayNamespace(settings.netnsDir, found.Id) : null;
    rmSync(settings.stateFile, { force: true }); // a later deployment starts from nothing
    const guard = await new NodeGuardBackend(config.instanceId, localHost).clear();
    if (netns === null || !existsSync(netns)) {
      log.info(
        "rules.cleared",
        "nothing to clear in an overlay namespace: the network has none on this node",
        {
          network: config.network,
          removed: guard.differences,
        },
      );
      return 0;
    }
    const result = await createBackend(config.firewallBackend, config.instanceId, {
      host: localHost.in(netns),
      overlay: true,
    }).clear();
    log.info(
      "rules.cleared",
      "rules of this instance removed from the overlay namespace and the node",
      {
        netns,
        removed: [...result.differences, ...guard.differences],
      },
    );
    return 0;
  } finally {
    client.close();
  }
}
