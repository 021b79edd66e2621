// What the daemon publishes for `trafficjam status`, beside its health (ops/health.ts writes both
// into the one state file). Plain data; the daemon's side fills it in ops/runtime.ts.
import { zeroCounts, type DropKind, type LogGroups } from "../drops.js";
import type { NodeStatus } from "../swarm/protocol.js";

export interface WhitelistedState {
  name: string;
  id: string;
  ipv4?: string;
  ipv6?: string;
  /** The bridge port its allowance is bound to; absent: unbound (see `unbound`). */
  port?: string;
  /** Why its port is unbound (what the lookup tried and why it failed). */
  unbound?: string;
}

export interface OpsState {
  /** When this daemon started (ms since the epoch). */
  startedAt: number;
  /** NETWORK and WHITELIST_FILTER as configured. */
  network: string;
  whitelist: string;
  passes: { ok: number; failed: number };
  /** Passes that put back what another tool changed (rules.repaired), since the start. */
  repairs: number;
  whitelisted: WhitelistedState[];
  /** The blocked-attempt log: its NFLOG groups, and whether it is being read (else why not). */
  attemptLog: { groups: LogGroups; reading: boolean; reason?: string };
  /**
   * New blocked attempts since the start, by kind; how many were reported and suppressed; and
   * the packets read from the kernel's log (what its limits let through) they came from.
   */
  attempts: {
    byKind: Record<DropKind, number>;
    reported: number;
    suppressed: number;
    packets: number;
  };
  /** METRICS_ADDRESS where the metrics are served, or null. */
  metrics: string | null;
}

/** No blocked attempt yet. */
export const noAttempts = (): OpsState["attempts"] => ({
  byKind: zeroCounts(),
  reported: 0,
  suppressed: 0,
  packets: 0,
});

/** The Swarm daemon's view of one node, from its worker's status over the channel. */
export interface SwarmNodeState {
  node: string;
  hostname: string;
  /** The node's underlay address, where its worker is dialled. */
  address: string;
  /** A worker task runs (or starts) there; connected: the daemon's channel to it is up. */
  worker: "connected" | "not connected" | "no worker task";
  /** When the daemon last received its status (its own clock), or null. */
  heardAt: number | null;
  status: NodeStatus | null;
}

/** What the Swarm daemon publishes for `status` and `doctor`. */
export interface SwarmState {
  /** NETWORK: the overlay the workers protect. */
  network: string;
  channelPort: number;
  nodes: SwarmNodeState[];
}
