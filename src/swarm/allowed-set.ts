// A worker's allowed set: what the Swarm daemon told it last, as it merges it. Pure (the caller
// checks the signature and saves it).
//
// - Only newer sets are taken (a higher `seq` under the same daemon key): a replayed older set,
//   which could allow again what was revoked since, changes nothing.
// - For the nodes the daemon vouches for, their part is replaced; for any other node (one the
//   daemon has not heard from since it started), what the worker had is kept and what is told is
//   added: a node's silence never revokes its allowances, and never freezes the others' (each
//   node's part is taken on its own).
// - A set for another network (the overlay recreated under its name) replaces everything.
// - `complete` is remembered: until a worker has held a complete set, it lets other nodes'
//   endpoints in as the cluster's view lists them (see worker.ts).
import { z } from "zod/v3";
import { byAddress } from "./ledger.js";
import {
  allowedEntrySchema,
  allowedSchema,
  type AllowedEntry,
  type AllowedMessage,
} from "./protocol.js";

export const savedSetSchema = z.object({
  networkId: z.string(),
  entries: z.array(allowedEntrySchema),
  /** A complete set was held for this network. */
  complete: z.boolean().default(false),
  /** The daemon's public key the last set was signed with, and its sequence number. */
  key: z.string().default(""),
  seq: z.number().default(0),
  /** The last set taken, as signed: reported back to a daemon that restarts. */
  last: allowedSchema.nullable().default(null),
});
export type SavedSet = z.output<typeof savedSetSchema>;

export type Taken = "changed" | "unchanged" | "stale";

export class AllowedSet {
  private state: SavedSet | null;

  constructor(
    saved: SavedSet | null,
    /** The daemon's public key (base64): a set saved under another key says nothing of its order. */
    private readonly key: string,
  ) {
    this.state = saved && saved.key !== key ? { ...saved, seq: 0, last: null, key } : saved;
  }

  get networkId(): string | null {
    return this.state?.networkId ?? null;
  }

  /** Whether a complete set was ever held for the network. */
  get complete(): boolean {
    return this.state?.complete ?? false;
  }

  /** The entries in force (for `networkId`; none for another network). */
  entries(networkId?: string): AllowedEntry[] {
    if (!this.state || (networkId !== undefined && this.state.networkId !== networkId)) return [];
    return this.state.entries;
  }

  /** The last set taken, as signed (for the daemon's hearsay), when it is for `networkId`. */
  last(networkId: string): AllowedMessage | null {
    return this.state?.networkId === networkId ? this.state.last : null;
  }

  saved(): SavedSet | null {
    return this.state;
  }

  /** Takes a set whose signature was checked; what it changed. */
  take(message: AllowedMessage): Taken {
    const state = this.state;
    const sameNetwork = state?.networkId === message.networkId;
    if (sameNetwork && message.seq <= state.seq) return "stale";
    const entries = sameNetwork
      ? merge(state.entries, message)
      : [...message.entries].sort(byAddress);
    const complete = (sameNetwork && state.complete) || message.complete;
    const changed =
      !sameNetwork ||
      complete !== state.complete ||
      JSON.stringify(entries) !== JSON.stringify(state.entries);
    this.state = {
      networkId: message.networkId,
      entries,
      complete,
      key: this.key,
      seq: message.seq,
      last: message,
    };
    return changed ? "changed" : "unchanged";
  }
}

/** Vouched nodes' parts from `message`; every other node's: what was held, plus what is told. */
export function merge(held: readonly AllowedEntry[], message: AllowedMessage): AllowedEntry[] {
  const vouched = new Set(message.vouched);
  const byKey = new Map<string, AllowedEntry>();
  for (const e of held) if (!vouched.has(e.node)) byKey.set(`${e.node}/${e.ipv4}`, e);
  for (const e of message.entries) byKey.set(`${e.node}/${e.ipv4}`, e);
  return [...byKey.values()].sort(byAddress);
}
