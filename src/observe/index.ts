// Everything read from Docker and the host about the protected network, in one place: the
// Engine's view (network, members, whitelist), containers that died since, and each member's
// bridge port. Returns a finished snapshot for the policy.
import type { WhitelistFilter } from "../config.js";
import type { Identity, Member, NetworkSnapshot } from "../model.js";
import { readFileSync } from "node:fs";
import { bridgeIdentity, hostBridgePortDeps } from "../host/links.js";
import { BridgePortFinder, type SandboxInfo } from "./bridge-ports.js";
import type { EngineClient } from "./engine-api.js";
import type { DockerEvent } from "./events.js";
import { effectOf, type EventEffect } from "./filter-events.js";
import {
  NetworkObserver,
  localBridgeOf,
  type BridgeLocation,
  type NetworkInspect,
} from "./network.js";
import { localHost, type Host } from "../host/host.js";

export interface ObserverOptions {
  network: string;
  whitelist: WhitelistFilter;
  /** Told when a member's bridge port cannot be found (its port then stays unbound). */
  onPortUnknown(member: Member, reason: string): void;
  /** Told when a lookup fails and is to be tried again: a pass must run in `retryInMs`. */
  onPortRetry?(member: Member, reason: string, retryInMs: number): void;
  /** Told when ports looked up beside a pass are known: a pass must run to bind them. */
  onPortsLearned?(): void;
  /** Told when the bridge's own identity (the gateway's) cannot be read: it stays unguarded. */
  onGatewayUnknown?(bridge: string, reason: string): void;
  /** The network's bridge here; default: a bridge network's own (none for other drivers). */
  bridgeOf?(network: NetworkInspect): BridgeLocation | undefined;
  /** Where tools run; the bridge's namespace is entered from it. Default: here. */
  host?: Host;
  /** Where a member that is not a container lives (a Swarm load-balancer endpoint), if known. */
  sandboxOf?(memberId: string): SandboxInfo | null;
}

export class Observer {
  private readonly network: NetworkObserver;
  /** The port finder of the bridge's namespace (a new namespace: a new finder, nothing cached). */
  private ports: { netns: string | null; finder: BridgePortFinder } | null = null;
  private readonly inspect: (id: string) => Promise<SandboxInfo | null>;
  // Containers that died lose their allowance and their port's binding now, not when Docker
  // gets round to disconnecting them: their address may be handed out again right after.
  private readonly dead = new Set<string>();
  /** Containers the events since the last read name: a pass reads those alone. */
  private readonly changed = new Set<string>();
  /** An event about the network itself: the next pass reads it whole. */
  private networkChanged = false;
  /** The bridge's own identity, read once per bridge (and again after a network event). */
  private gateway: { key: string; identity: Identity } | null = null;

  constructor(
    client: EngineClient,
    private readonly options: ObserverOptions,
  ) {
    this.network = new NetworkObserver(
      client,
      options.network,
      options.whitelist,
      options.bridgeOf ?? localBridgeOf,
    );
    this.inspect = async (id: string) => {
      const special = options.sandboxOf?.(id);
      if (special) return special;
      const c = await client.inspectContainer(id);
      if (c === null) return null;
      return {
        running: c.State.Running,
        pid: c.State.Pid,
        sandboxKey: c.NetworkSettings.SandboxKey ?? "",
      };
    };
  }

  private finder(netns: string | null): BridgePortFinder {
    if (this.ports?.netns === netns) return this.ports.finder;
    const { options } = this;
    const host = (options.host ?? localHost).in(netns);
    const finder = new BridgePortFinder(
      hostBridgePortDeps(this.inspect, host),
      options.onPortUnknown,
      options.onPortRetry,
      options.onPortsLearned,
    );
    this.ports = { netns, finder };
    return finder;
  }

  /**
   * Takes note of an event; what it means for the next pass ("none": no pass). Containers it
   * names are to be read again a little later too (see recheck): the Engine logs some events
   * before its container list shows the change (a pause, a health status), and a pass that read
   * the list too early would keep an allowance until the next resync.
   */
  noteEvent(event: DockerEvent): EventEffect {
    const effect = effectOf(
      event,
      this.options.network,
      this.network.networkId,
      this.options.whitelist.key,
    );
    if (effect.kind === "none") return effect;
    if (effect.kind === "network") this.networkChanged = true;
    if (effect.kind === "containers") {
      for (const id of effect.ids) {
        if (event.Type === "container" && event.Action === "die") this.dead.add(id);
        if (event.Type === "container" && (event.Action === "start" || event.Action === "destroy"))
          this.dead.delete(id);
        this.changed.add(id);
      }
    }
    return effect; // "whitelist": a pass lists the whitelist whole (its key is not a fixed one)
  }

  /** The next pass reads these containers again (a recheck after their event). */
  recheck(ids: readonly string[]): void {
    for (const id of ids) this.changed.add(id);
  }

  /**
   * fresh (startup, resync): read the network whole; otherwise only the containers the events
   * since the last read named, unless one was about the network itself.
   */
  async observe(fresh: boolean): Promise<NetworkSnapshot | null> {
    const networkEvent = this.networkChanged;
    const whole = fresh || networkEvent;
    const changed = new Set(this.changed);
    this.changed.clear();
    this.networkChanged = false;
    // An event pass's new member is looked up after the Engine's answer; its port is read now.
    const bridge = this.network.bridge;
    const finder = this.finder(this.network.netns);
    const early = !whole && changed.size > 0 && bridge ? finder.prefetch(bridge) : undefined;
    const snapshot = await this.network.observe(whole ? undefined : changed);
    if (!snapshot) return null;
    // Once Docker no longer lists a dead container as a member, it needs no tombstone.
    const listed = new Set(snapshot.members.map((m) => m.id));
    for (const id of this.dead) if (!listed.has(id)) this.dead.delete(id);
    const alive = snapshot.members.filter((m) => !this.dead.has(m.id));
    // A full read may have found the bridge in another namespace (a Swarm overlay recreated).
    const ports = this.finder(snapshot.netns ?? null);
    const [members, gateway] = await Promise.all([
      ports.attach(alive, snapshot.bridge ?? null, early),
      this.gatewayOf(snapshot, networkEvent),
    ]);
    return { ...snapshot, members, ...(gateway ? { gateway } : {}) };
  }

  /**
   * The bridge's MAC and addresses. They change only when Docker makes the bridge anew (a new
   * network: a new name, or a new namespace), so they are read once per bridge, and again on a
   * network event or when the MAC sysfs shows (in our namespace) is not the one read.
   */
  private async gatewayOf(
    snapshot: NetworkSnapshot,
    networkEvent: boolean,
  ): Promise<Identity | null> {
    const bridge = snapshot.bridge;
    if (!bridge) return null;
    const key = `${snapshot.netns ?? ""}|${bridge}`;
    const known = this.gateway?.key === key ? this.gateway.identity : null;
    if (known && !networkEvent && !this.macChanged(known, bridge, snapshot.netns)) return known;
    const host = (this.options.host ?? localHost).in(snapshot.netns ?? null);
    try {
      const identity = await bridgeIdentity(host, bridge);
      if (identity === null) throw new Error(`${bridge} has no MAC address`);
      this.gateway = { key, identity };
      return identity;
    } catch (error) {
      this.options.onGatewayUnknown?.(bridge, (error as Error).message);
      return known;
    }
  }

  /** Whether sysfs (our namespace's only: in-process, no tool run) shows the bridge with another MAC. */
  private macChanged(known: Identity, bridge: string, netns: string | undefined): boolean {
    if (netns !== undefined) return false;
    try {
      return readFileSync(`/sys/class/net/${bridge}/address`, "utf8").trim() !== known.mac;
    } catch {
      return true;
    }
  }
}
