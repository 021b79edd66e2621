// The backend FIREWALL_BACKEND asks for. `auto` follows Docker: iptables in the flavour where
// Docker's DOCKER-USER chain lives, nftables where no flavour has it (Docker's own nftables
// firewall, or "iptables": false). The choice is made again on every resync, and a switch takes
// this instance's rules out of the old backend right after the new one is in force.
import type { CheckResult, FirewallBackend, SyncOptions, SyncResult } from "./backend.js";
import type { Ruleset } from "../model.js";
import type { ChangeMonitor } from "./engine.js";
import { IptablesBackend, type Located } from "./iptables/backend.js";
import { NftablesBackend } from "./nftables/backend.js";

export type BackendMode = "auto" | "iptables" | "nftables";
export type BackendKind = "iptables" | "nftables";

export interface BackendChoice {
  kind: BackendKind;
  reason: string;
}

export interface SelectingOptions {
  monitor?: ChangeMonitor | null;
  /** Told whenever the choice differs from the previous one (and at the first choice). */
  onChoice?: (choice: BackendChoice) => void;
  /** Told why a pass planned on the last read-back failed before it is redone from a read. */
  onStaleView?: (error: unknown) => void;
  /** Handed to the nftables backend (benchmark contrast). */
  nftReplaceAlways?: boolean;
}

/** What the choice needs of the iptables backend: where Docker's chains are, and our leftovers. */
export type IptablesSide = FirewallBackend &
  Pick<IptablesBackend, "locate" | "holds" | "sync" | "check">;
export type NftablesSide = FirewallBackend & Pick<NftablesBackend, "holds">;

export class SelectingBackend implements FirewallBackend {
  readonly iptables: IptablesSide;
  readonly nftables: NftablesSide;
  private last: BackendChoice | null = null;

  constructor(
    private readonly mode: BackendMode,
    instanceId: string,
    private readonly options: SelectingOptions = {},
    backends?: { iptables: IptablesSide; nftables: NftablesSide },
  ) {
    const shared = { monitor: options.monitor ?? null, onStaleView: options.onStaleView };
    this.iptables = backends?.iptables ?? new IptablesBackend(instanceId, shared);
    this.nftables =
      backends?.nftables ??
      new NftablesBackend(instanceId, { ...shared, replaceAlways: options.nftReplaceAlways });
  }

  /** Decides where the rules go. Only `auto` looks at the kernel (Docker's chains). */
  async choose(fresh: boolean): Promise<BackendChoice> {
    return (await this.decide(fresh)).choice;
  }

  /** The choice, and under `auto` the iptables view it was made from (reused, not read again). */
  private async decide(
    fresh: boolean,
  ): Promise<{ choice: BackendChoice; located: Located | undefined }> {
    if (this.mode !== "auto") {
      return {
        choice: { kind: this.mode, reason: `FIREWALL_BACKEND=${this.mode}` },
        located: undefined,
      };
    }
    const located = await this.iptables.locate(fresh);
    const choice: BackendChoice = located.flavour
      ? { kind: "iptables", reason: `Docker's DOCKER-USER chain is in iptables-${located.flavour}` }
      : {
          kind: "nftables",
          reason:
            "no iptables flavour has Docker's DOCKER-USER chain (Docker's nftables firewall, or \"iptables\": false)",
        };
    return { choice, located };
  }

  async sync(ruleset: Ruleset, options: SyncOptions = { fresh: true }): Promise<SyncResult> {
    const { choice, located } = await this.decide(options.fresh);
    if (this.last?.kind !== choice.kind) this.options.onChoice?.(choice);
    const switched = this.last !== null && this.last.kind !== choice.kind;
    this.last = choice;
    const other = choice.kind === "iptables" ? this.nftables : this.iptables;
    const result = await (choice.kind === "iptables"
      ? this.iptables.sync(ruleset, options, located)
      : this.nftables.sync(ruleset, options));
    // Make before break: the old backend's rules go only once the new ones are in force. Both
    // only ever drop, so the moment when both hold rules is closed, never open.
    const leftover =
      switched ||
      (choice.kind === "iptables"
        ? await this.nftables.holds(options.fresh)
        : await this.iptables.holds(options.fresh, located));
    if (!leftover) return result;
    const removed = await other.clear();
    if (!removed.changed) return result;
    // An address allowed by the old backend alone lost its allowance too.
    const keep = new Set(result.revoked.map(([f, a]) => `${f}/${a}`));
    const allowedNow = new Set(
      ([4, 6] as const).flatMap((f) => ruleset.families[f].allowedSources.map((a) => `${f}/${a}`)),
    );
    const revoked = [
      ...result.revoked,
      ...removed.revoked.filter(([f, a]) => !keep.has(`${f}/${a}`) && !allowedNow.has(`${f}/${a}`)),
    ];
    return {
      changed: true,
      location: result.location,
      revoked,
      differences: [
        ...result.differences,
        ...removed.differences.map((d) => `${removed.location}: ${d}`),
      ],
    };
  }

  async check(ruleset: Ruleset): Promise<CheckResult> {
    const { choice, located } = await this.decide(true);
    return choice.kind === "iptables"
      ? this.iptables.check(ruleset, located)
      : this.nftables.check(ruleset);
  }

  /** Removes the instance from every backend: whichever one it used, nothing of it is left. */
  async clear(): Promise<SyncResult> {
    const results = [await this.iptables.clear(), await this.nftables.clear()];
    const changed = results.filter((r) => r.changed);
    return {
      changed: changed.length > 0,
      location: changed.map((r) => r.location).join(", ") || "iptables, nftables",
      revoked: results.flatMap((r) => r.revoked),
      differences: results.flatMap((r) => r.differences),
    };
  }
}

export function createBackend(
  mode: BackendMode,
  instanceId: string,
  options: SelectingOptions = {},
): SelectingBackend {
  return new SelectingBackend(mode, instanceId, options);
}
