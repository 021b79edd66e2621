// What the reconciler needs from a firewall backend, whatever it renders to.
import type { Family, Ruleset } from "../model.js";

export interface SyncResult {
  /** True when the kernel had to be changed. */
  changed: boolean;
  /** Differences found between the kernel and the desired state before the change. */
  differences: string[];
  /** Short description of where the rules live, e.g. "iptables-nft". */
  location: string;
  /** Source addresses the kernel allowed before this change and no longer does. */
  revoked: Array<[Family, string]>;
}

export interface SyncOptions {
  /** Read the kernel first (resync, startup, retry); otherwise plan against the last read-back. */
  fresh: boolean;
  /** Called when a transaction has committed, before its read-back: the rules are in force. */
  onEnforced?: () => void;
}

export interface CheckResult {
  location: string;
  /** Differences between the kernel and the desired state; empty when it is in force. */
  differences: string[];
}

export interface FirewallBackend {
  /** Applies only what differs, one transaction per family, then reads back and verifies. */
  sync(ruleset: Ruleset, options?: SyncOptions): Promise<SyncResult>;
  /** Removes every rule, chain, jump and table of the instance, and nothing else. */
  clear(): Promise<SyncResult>;
  /** Reads the kernel and compares it with the desired state, changing nothing. */
  check(ruleset: Ruleset): Promise<CheckResult>;
  /**
   * Starts reading the kernel the next sync will plan on (a fresh one: unless `nft monitor` saw
   * nothing change), so the read runs while Docker is asked about the network.
   */
  warm?(fresh: boolean): void;
}

/** Whether the kernel says the rules belong in a backend under FIREWALL_BACKEND=auto, and why. */
export interface Fitness {
  fits: boolean;
  reason: string;
  /** True when deciding read the kernel view this backend plans on (so a sync need not). */
  viewed: boolean;
}

/** A backend the selector can choose between (both are). */
export interface SelectableBackend extends FirewallBackend {
  readonly kind: "iptables" | "nftables";
  /**
   * Whether this is where the rules belong, from the kernel: a read, or unless `fresh` the last
   * read-back. Right after it, a sync with `fresh: false` plans on that same view.
   */
  fitness(fresh: boolean): Promise<Fitness>;
  /** Whether anything of the instance is installed here (leftovers after a switch). */
  holds(fresh: boolean): Promise<boolean>;
}

export class VerificationError extends Error {
  constructor(
    readonly location: string,
    readonly differences: string[],
  ) {
    super(`rules in ${location} still differ after applying: ${differences.join("; ")}`);
    this.name = "VerificationError";
  }
}
