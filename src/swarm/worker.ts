// `trafficjam swarm-worker`: one per node (the daemon's global service). It is the single-host
// daemon acting in the overlay network's namespace on its node, with two additions: it reports
// its node's whitelisted containers and load-balancer address to the daemon, and binds the
// other nodes' (told by the daemon) to the VXLAN port. The last set told is kept on disk, so a
// worker keeps enforcing it while the daemon is away, across its own restarts too.
import {
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { dirname } from "node:path";
import { z } from "zod/v3";
import type { Config } from "../config.js";
import type { Log } from "../log.js";
import type { NetworkSnapshot } from "../model.js";
import { runDaemon } from "../daemon.js";
import { createBackend, type SelectingOptions } from "../firewall/index.js";
import type { FirewallBackend, SyncOptions, SyncResult } from "../firewall/backend.js";
import type { Ruleset } from "../model.js";
import { localHost, runChecked, type Host } from "../host/host.js";
import { ensureBridgeNetfilterIn } from "../host/bridge-netfilter.js";
import { createEngineClient } from "../observe/engine-api.js";
import type { BridgeLocation, NetworkInspect } from "../observe/network.js";
import { WorkerListener } from "./channel.js";
import { byAddress } from "./ledger.js";
import { VxlanGuard, renderVxlanGuard } from "./vxlan-guard.js";
import { connectSwarm, type ClusterEndpoint } from "./swarm-api.js";
import { allowedEntrySchema, overlayMac, type AllowedEntry, type Report } from "./protocol.js";

export interface WorkerSettings {
  channelPort: number;
  keyFile: string;
  /** Where the last allowed set is kept (a volume of the node). */
  stateFile: string;
  /** Docker's netns folder, mounted with rslave propagation. */
  netnsDir: string;
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

const savedSchema = z.object({
  networkId: z.string(),
  entries: z.array(allowedEntrySchema),
  complete: z.boolean().default(false),
});
type Saved = z.output<typeof savedSchema>;

/**
 * How long a worker that knows no complete set lets every other node's endpoint in (see
 * `settled` below) before it enforces whatever it was told.
 */
const SETTLE_LIMIT_MS = 30_000;

function loadSaved(path: string, log: Log): Saved | null {
  try {
    return savedSchema.parse(JSON.parse(readFileSync(path, "utf8")));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT")
      log.warn("swarm.state.unreadable", "cannot read the saved allowed set: starting empty", {
        path,
        err: error,
      });
    return null;
  }
}

function save(path: string, state: Saved): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(`${path}.tmp`, JSON.stringify(state));
  renameSync(`${path}.tmp`, path);
}

/**
 * The firewall in the overlay's namespace on this node: a backend per namespace (a recreated
 * network is a new namespace, with nothing cached of the old one), and none while the network has
 * no namespace here, so nothing is ever written to the host's own namespace.
 */
class OverlayBackend implements FirewallBackend {
  private current: { netns: string; backend: FirewallBackend } | null = null;

  constructor(private readonly make: (host: Host) => FirewallBackend) {}

  /** The backend of `netns` (undefined: the last one's, for clear and check). */
  private backend(netns?: string | null): { backend: FirewallBackend; renewed: boolean } | null {
    if (netns === undefined)
      return this.current ? { backend: this.current.backend, renewed: false } : null;
    if (netns === null) return null;
    if (this.current?.netns === netns) return { backend: this.current.backend, renewed: false };
    this.current = { netns, backend: this.make(localHost.in(netns)) };
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

export async function runSwarmWorker(
  config: Config,
  settings: WorkerSettings,
  log: Log,
): Promise<number> {
  let stopping = false;
  const { api } = await connectSwarm(log, () => stopping);
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
  const self = node;
  const key = Buffer.from(readFileSync(settings.keyFile, "utf8").trim(), "base64");
  if (key.length < 16) throw new Error(`${settings.keyFile}: the channel key is too short`);

  let allowed = loadSaved(settings.stateFile, log);
  if (allowed)
    log.info("swarm.state.loaded", "enforcing the allowed set saved before this start", {
      entries: allowed.entries.length,
    });

  // The namespace and VXLAN port of the overlay on this node, as of the last full read.
  let network: { id: string; name: string; netns: string } | null = null;
  let vxlan: { netns: string; port: string; vni: number } | null = null;
  const tunnelGuard = new VxlanGuard(config.instanceId, localHost);
  let sysctlsSetIn: string | null = null;
  const bridgeOf = (found: NetworkInspect): BridgeLocation | undefined => {
    const netns = found.Driver === "overlay" ? overlayNamespace(settings.netnsDir, found.Id) : null;
    if (netns === null || !existsSync(netns)) {
      network = null;
      return undefined;
    }
    network = { id: found.Id, name: found.Name, netns };
    return { name: OVERLAY_BRIDGE, netns };
  };
  const sandboxOf = (memberId: string) =>
    network !== null && memberId === `lb-${network.name}`
      ? { running: true, pid: 0, sandboxKey: loadBalancerNamespace(settings.netnsDir, network.id) }
      : null;

  // Until a complete set is known (a first deployment, a node that just joined, a saved set
  // lost), other nodes' endpoints as the cluster's view lists them are let in through the VXLAN
  // port, each bound to its node: a node whose proxy this one has not been told of yet must not
  // be cut off. It opens nothing between backends: every node with a worker drops its own
  // backends' new connections before they leave it (and a node without one protects nothing).
  let settled = allowed?.complete === true;
  const settle = (why: string) => {
    if (settled) return;
    settled = true;
    clearTimeout(settleTimer);
    log.info("swarm.allowed.settled", "enforcing the daemon's set alone from now on", { why });
    request("swarm:settled");
  };
  const settleTimer = setTimeout(() => {
    if (settled) return;
    log.warn(
      "swarm.allowed.incomplete",
      "no complete set from the Swarm daemon yet: enforcing what is known",
      {
        waitedMs: SETTLE_LIMIT_MS,
      },
    );
    settle("time limit");
  }, SETTLE_LIMIT_MS);
  settleTimer.unref();

  // This node as the cluster's view names it ("Host IP": the data-path address, which may differ
  // from the Swarm address), learnt from a local container's endpoint in that view.
  let hostIp: string | null = null;
  const learnHostIp = (view: readonly ClusterEndpoint[], local: ReadonlySet<string>) => {
    hostIp ??= view.find((e) => local.has(e.ipv4) && e.hostIp !== "")?.hostIp ?? null;
  };

  let lastReport = "";
  let lastNetworkId: string | null = allowed?.networkId ?? null;
  let request: (reason: string) => void = () => undefined;
  const channel = new WorkerListener(key, {
    onConnected: (peer) =>
      log.info("swarm.channel.connected", "the Swarm daemon connected", { peer }),
    onDisconnected: (peer) =>
      log.info("swarm.channel.lost", "the Swarm daemon hung up: enforcing the last set", { peer }),
    onRefused: (peer, reason) =>
      log.warn("swarm.channel.refused", "refused a connection to the channel", { peer, reason }),
    onAllowed: (message) => {
      if (network !== null && message.networkId !== network.id) return; // another network's
      const before = JSON.stringify([allowed?.entries ?? [], allowed?.complete]);
      // A set missing some node's part (a daemon that has just started) adds, never takes away
      // from, a complete one: nothing is revoked because a node has not been heard from yet.
      if (settled && !message.complete && allowed?.networkId === message.networkId)
        message = { ...message, entries: union(allowed.entries, message.entries), complete: true };
      allowed = {
        networkId: message.networkId,
        entries: message.entries,
        complete: message.complete,
      };
      const settling = !settled && message.complete;
      if (settling) settle("the daemon's set is complete");
      if (JSON.stringify([message.entries, message.complete]) === before && !settling) return;
      try {
        save(settings.stateFile, allowed);
      } catch (error) {
        log.warn("swarm.state.unwritable", "cannot save the allowed set", { err: error });
      }
      log.info("swarm.allowed.received", "allowed set received from the Swarm daemon", {
        entries: message.entries.length,
        complete: message.complete,
      });
      request("swarm:allowed");
    },
  });

  const refine = async (
    snapshot: NetworkSnapshot | null,
    fresh: boolean,
  ): Promise<NetworkSnapshot | null> => {
    const current = network;
    if (snapshot === null || current === null || !snapshot.bridge) {
      report(snapshot === null ? null : snapshot.id, [], null);
      await tunnelGuard.sync(null, false);
      return null;
    }
    if (sysctlsSetIn !== current.netns) {
      const { changed } = await ensureBridgeNetfilterIn(localHost.in(current.netns));
      if (changed.length > 0)
        log.info("host.sysctls.enabled", "enabled br_netfilter sysctls in the overlay namespace", {
          sysctls: changed,
          netns: current.netns,
        });
      sysctlsSetIn = current.netns;
    }
    if (vxlan?.netns !== current.netns)
      vxlan = { netns: current.netns, ...(await vxlanPort(localHost.in(current.netns))) };
    const lb = `lb-${current.name}`;
    const members = snapshot.members.map((m) => (m.id === lb ? { ...m, whitelisted: true } : m));
    const local = new Set(members.flatMap((m) => (m.id !== lb && m.ipv4 ? [m.ipv4] : [])));
    // The cluster's view, read once, and only while something needs it.
    const view =
      (hostIp === null && local.size > 0) || !settled
        ? ((await api.clusterEndpoints(snapshot.id))?.endpoints ?? [])
        : [];
    learnHostIp(view, local);
    report(
      snapshot.id,
      members
        .filter((m) => m.whitelisted && m.id !== lb && m.ipv4)
        .map((m) => ({ name: m.name, ipv4: m.ipv4! })),
      members.find((m) => m.id === lb)?.ipv4 ?? null,
    );
    const told =
      allowed?.networkId === snapshot.id ? allowed.entries.filter((e) => e.node !== self.id) : [];
    const remote = settled ? told : [...told, ...clusterElsewhere(view)];
    // Before the rules that allow them: other nodes' addresses only from their own node.
    await tunnelGuard.sync(renderVxlanGuard(config.instanceId, vxlan.vni, remote), fresh);
    return {
      ...snapshot,
      members,
      tunnel: {
        port: vxlan.port,
        allowed: remote.map((e) => ({ ipv4: e.ipv4, mac: overlayMac(e.ipv4) })),
      },
    };
  };

  /** Endpoints of the network on other nodes, as the cluster's view lists them. */
  const clusterElsewhere = (view: readonly ClusterEndpoint[]): AllowedEntry[] =>
    view
      .filter((e) => e.hostIp !== "" && e.hostIp !== (hostIp ?? self.addr))
      .map((e) => ({
        node: "unknown",
        hostIp: e.hostIp,
        ipv4: e.ipv4,
        name: e.name,
        kind: "container",
      }));

  const report = (
    networkId: string | null,
    whitelisted: Report["whitelisted"],
    lb: string | null,
  ) => {
    // Gone from this node (or never here): it has nothing there any more, which is news too.
    networkId ??= lastNetworkId;
    if (networkId === null) return;
    lastNetworkId = networkId;
    const message: Report = {
      type: "report",
      node: self.id,
      hostIp: hostIp ?? self.addr,
      networkId,
      whitelisted: [...whitelisted].sort((a, b) => (a.ipv4 < b.ipv4 ? -1 : 1)),
      loadBalancer: lb,
      known: allowed?.networkId === networkId && allowed.complete ? allowed.entries : [],
    };
    const text = JSON.stringify(message);
    if (text === lastReport && channel.connected) return;
    lastReport = text;
    channel.send(message);
  };

  await channel.listen(self.addr, settings.channelPort).catch((error: Error) => {
    throw new Error(
      `cannot listen on ${self.addr}:${settings.channelPort} (SWARM_CHANNEL_PORT): ${error.message}`,
    );
  });
  log.info("swarm.channel.listening", "listening for the Swarm daemon", {
    address: `${self.addr}:${settings.channelPort}`,
  });
  return runDaemon(config, log, {
    ownSysctls: false,
    monitor: false,
    backend: (options: SelectingOptions) =>
      new OverlayBackend((host) =>
        createBackend(config.firewallBackend, config.instanceId, {
          ...options,
          host,
          overlay: true,
        }),
      ),
    observer: { bridgeOf, sandboxOf },
    refine,
    started: (requestPass) => {
      request = requestPass;
    },
    stopping: () => void channel.close(),
    cleared: async () => void (await tunnelGuard.clear()),
    dockerReady: true,
  });
}

/** Both sets' entries, one per node and address, `b`'s where both have one. */
function union(a: readonly AllowedEntry[], b: readonly AllowedEntry[]): AllowedEntry[] {
  const byKey = new Map<string, AllowedEntry>();
  for (const e of [...a, ...b]) byKey.set(`${e.node}/${e.ipv4}`, e);
  return [...byKey.values()].sort(byAddress);
}

const vxlanLinks = z.array(
  z.object({
    ifname: z.string(),
    linkinfo: z.object({ info_data: z.object({ id: z.number().int().min(0) }) }),
  }),
);

/** The VXLAN port of the overlay's bridge and its VNI, in the overlay's namespace. */
async function vxlanPort(host: Host): Promise<{ port: string; vni: number }> {
  const args = ["-d", "-j", "link", "show", "master", OVERLAY_BRIDGE, "type", "vxlan"];
  const out = await runChecked(host, "ip", args);
  const links = vxlanLinks.parse(out.trim() === "" ? [] : JSON.parse(out));
  if (links.length !== 1)
    throw new Error(`expected one VXLAN port on ${OVERLAY_BRIDGE}, found ${links.length}`);
  return { port: links[0]!.ifname, vni: links[0]!.linkinfo.info_data.id };
}

/** `trafficjam swarm-worker --clear`: removes the instance's rules from the overlay's namespace here. */
export async function clearSwarmWorker(
  config: Config,
  settings: WorkerSettings,
  log: Log,
): Promise<number> {
  const client = createEngineClient(process.env);
  try {
    const found = await client.inspectNetwork(config.network);
    const netns = found ? overlayNamespace(settings.netnsDir, found.Id) : null;
    rmSync(settings.stateFile, { force: true }); // a later deployment starts from nothing
    await new VxlanGuard(config.instanceId, localHost).clear();
    if (netns === null || !existsSync(netns)) {
      log.info("rules.cleared", "nothing to clear: the network has no namespace on this node", {
        network: config.network,
      });
      return 0;
    }
    const result = await createBackend(config.firewallBackend, config.instanceId, {
      host: localHost.in(netns),
      overlay: true,
    }).clear();
    log.info("rules.cleared", "rules of this instance removed from the overlay namespace", {
      netns,
      removed: result.differences,
    });
    return 0;
  } finally {
    client.close();
  }
}
