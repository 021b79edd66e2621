// What the reconciler needs from a firewall backend, whatever it renders to.
import type { Ruleset } from "../model.js";

export interface SyncResult {
  /** True when the kernel had to be changed. */
  changed: boolean;
  /** Differences found between the kernel and the desired state before the change. */
  differences: string[];
  /** Short description of where the rules live, e.g. "iptables-nft". */
  location: string;
}

export interface FirewallBackend {
  /** Reads the kernel, applies only what differs in one transaction per family, verifies. */
  sync(ruleset: Ruleset): Promise<SyncResult>;
  /** Removes every rule, chain and jump of the instance, and nothing else. */
  clear(instanceId: string): Promise<SyncResult>;
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
