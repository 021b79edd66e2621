// Everything read from Docker and the host about the protected network, in one place: the
// Engine's view (network, members, whitelist), containers that died since, and each member's
// bridge port. Returns a finished snapshot for the policy.
import type { WhitelistFilter } from "../config.js";
import type { Member, NetworkSnapshot } from "../model.js";
import { hostBridgePortDeps } from "../host/links.js";
import { BridgePortFinder, type SandboxInfo } from "./bridge-ports.js";
import type { EngineClient } from "./engine-api.js";
import type { DockerEvent } from "./events.js";
import { NetworkObserver, bridgeOf, type NetworkInspect } from "./network.js";

export interface ObserverOptions {
  network: string;
  whitelist: WhitelistFilter;
  /** Told when a member's bridge port cannot be found (its port then stays unbound). */
  onPortUnknown(member: Member, reason: string): void;
  /** Told when a lookup fails and is to be tried again: a pass must run in `retryInMs`. */
  onPortRetry?(member: Member, reason: string, retryInMs: number): void;
  /** Told when ports looked up beside a pass are known: a pass must run to bind them. */
  onPortsLearned?(): void;
  /** The network's bridge here; default: a bridge network's own (none for other drivers). */
  bridgeOf?(network: NetworkInspect): string | undefined;
  /** Where a member that is not a container lives (a Swarm load-balancer endpoint), if known. */
  sandboxOf?(memberId: string): SandboxInfo | null;
}

export class Observer {
  private readonly network: NetworkObserver;
  private readonly ports: BridgePortFinder;
  // Containers that died lose their allowance and their port's binding now, not when Docker
  // gets round to disconnecting them: their address may be handed out again right after.
  private readonly dead = new Set<string>();
  /** Containers the events since the last read name: a pass reads those alone. */
  private readonly changed = new Set<string>();
  /** An event about the network itself: the next pass reads it whole. */
  private networkChanged = false;

  constructor(
    client: EngineClient,
    private readonly options: ObserverOptions,
  ) {
    this.network = new NetworkObserver(
      client,
      options.network,
      options.whitelist,
      options.bridgeOf ?? bridgeOf,
    );
    const inspect = async (id: string) => {
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
    this.ports = new BridgePortFinder(
      hostBridgePortDeps(inspect),
      options.onPortUnknown,
      options.onPortRetry,
      options.onPortsLearned,
    );
  }

  /**
   * Takes note of an event; true when it may change the network's members, whitelist or
   * existence (and so calls for a pass).
   */
  noteEvent(event: DockerEvent): boolean {
    if (event.Type === "container") {
      if (event.Action === "die") this.dead.add(event.Actor.ID);
      if (event.Action === "start" || event.Action === "destroy") this.dead.delete(event.Actor.ID);
      this.changed.add(event.Actor.ID);
      return true;
    }
    const id = event.Actor.ID;
    const ref = this.options.network;
    const ours =
      id === this.network.networkId || event.Actor.Attributes.name === ref || id.startsWith(ref);
    if (!ours) return false;
    const container = event.Actor.Attributes.container;
    if ((event.Action === "connect" || event.Action === "disconnect") && container)
      this.changed.add(container);
    else this.networkChanged = true; // created, destroyed: read it whole
    return true;
  }

  /**
   * fresh (startup, resync): read the network whole; otherwise only the containers the events
   * since the last read named, unless one was about the network itself.
   */
  async observe(fresh: boolean): Promise<NetworkSnapshot | null> {
    const whole = fresh || this.networkChanged;
    const changed = new Set(this.changed);
    this.changed.clear();
    this.networkChanged = false;
    // An event pass's new member is looked up after the Engine's answer; its port is read now.
    const bridge = this.network.bridge;
    const early = !whole && changed.size > 0 && bridge ? this.ports.prefetch(bridge) : undefined;
    const snapshot = await this.network.observe(whole ? undefined : changed);
    if (!snapshot) return null;
    // Once Docker no longer lists a dead container as a member, it needs no tombstone.
    const listed = new Set(snapshot.members.map((m) => m.id));
    for (const id of this.dead) if (!listed.has(id)) this.dead.delete(id);
    const alive = snapshot.members.filter((m) => !this.dead.has(m.id));
    return { ...snapshot, members: await this.ports.attach(alive, snapshot.bridge ?? null, early) };
  }
}
