// The backend FIREWALL_BACKEND asks for. `auto` follows Docker: iptables in the flavour where
// Docker's DOCKER-USER chain lives, nftables where no flavour has it (Docker's own nftables
// firewall, or "iptables": false). The choice is made again on every resync, and a switch takes
// this instance's rules out of the old backend right after the new one is in force. Only the
// shared interface is used here (backend.ts): each backend says whether it fits.
import type {
  CheckResult,
  FirewallBackend,
  SelectableBackend,
  SyncOptions,
  SyncResult,
} from "./backend.js";
import type { Ruleset } from "../model.js";
import type { ChangeMonitor } from "./converger.js";
import type { Host } from "../host/host.js";
import { IptablesBackend } from "./iptables/backend.js";
import { NftablesBackend } from "./nftables/backend.js";

export type BackendMode = "auto" | "iptables" | "nftables";
export type BackendKind = SelectableBackend["kind"];

export interface BackendChoice {
  kind: BackendKind;
  reason: string;
}

export interface SelectingOptions {
  /** Where the tools run (a Swarm worker: the overlay's namespace); default: here. */
  host?: Host;
  monitor?: ChangeMonitor | null;
  /** Told whenever the choice differs from the previous one (and at the first choice). */
  onChoice?: (choice: BackendChoice) => void;
  /** Told why a pass planned on the last read-back failed before it is redone from a read. */
  onStaleView?: (error: unknown) => void;
  /** Handed to the nftables backend (benchmark contrast). */
  nftReplaceAlways?: boolean;
  /** The rules go into a Swarm overlay network's namespace (see IptablesOptions.overlay). */
  overlay?: boolean;
}

export class SelectingBackend implements FirewallBackend {
  /** In auto's order of preference: the first that fits is chosen. */
  private readonly backends: readonly [SelectableBackend, SelectableBackend];
  private last: BackendChoice | null = null;

  constructor(
    private readonly mode: BackendMode,
    instanceId: string,
    private readonly options: SelectingOptions = {},
    backends?: { iptables: SelectableBackend; nftables: SelectableBackend },
  ) {
    const shared = {
      host: options.host,
      monitor: options.monitor ?? null,
      onStaleView: options.onStaleView,
    };
    this.backends = [
      backends?.iptables ??
        new IptablesBackend(instanceId, { ...shared, overlay: options.overlay }),
      backends?.nftables ??
        new NftablesBackend(instanceId, { ...shared, replaceAlways: options.nftReplaceAlways }),
    ];
  }

  private byKind(kind: BackendKind): SelectableBackend {
    return this.backends.find((b) => b.kind === kind)!;
  }

  /** Decides where the rules go. Only `auto` looks at the kernel. */
  async choose(fresh: boolean): Promise<BackendChoice> {
    return (await this.decide(fresh)).choice;
  }

  /** The choice, and the backends whose kernel view was just read for it (not read again). */
  private async decide(
    fresh: boolean,
  ): Promise<{ choice: BackendChoice; probed: Set<SelectableBackend> }> {
    const probed = new Set<SelectableBackend>();
    if (this.mode !== "auto")
      return { choice: { kind: this.mode, reason: `FIREWALL_BACKEND=${this.mode}` }, probed };
    let declined = "";
    for (const backend of this.backends) {
      const fitness = await backend.fitness(fresh);
      if (fitness.viewed) probed.add(backend);
      if (fitness.fits)
        return { choice: { kind: backend.kind, reason: declined || fitness.reason }, probed };
      declined = fitness.reason;
    }
    throw new Error("no firewall backend fits this host");
  }

  async sync(ruleset: Ruleset, options: SyncOptions = { fresh: true }): Promise<SyncResult> {
    const { choice, probed } = await this.decide(options.fresh);
    if (this.last?.kind !== choice.kind) this.options.onChoice?.(choice);
    const switched = this.last !== null && this.last.kind !== choice.kind;
    this.last = choice;
    const chosen = this.byKind(choice.kind);
    const other = this.backends.find((b) => b !== chosen)!;
    // A backend probed for this choice plans on the view it just read.
    const freshFor = (b: SelectableBackend) => options.fresh && !probed.has(b);
    const result = await chosen.sync(ruleset, { ...options, fresh: freshFor(chosen) });
    // Make before break: the old backend's rules go only once the new ones are in force. Both
    // only ever drop, so the moment when both hold rules is closed, never open.
    const leftover = switched || (await other.holds(freshFor(other)));
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

  warm(fresh: boolean): void {
    if (!fresh) return; // an event pass plans on the last read-back
    for (const backend of this.backends) backend.warm?.(fresh);
  }

  async check(ruleset: Ruleset): Promise<CheckResult> {
    return this.byKind((await this.decide(true)).choice.kind).check(ruleset);
  }

  /** Removes the instance from every backend: whichever one it used, nothing of it is left. */
  async clear(): Promise<SyncResult> {
    // Each backend is cleared even when the other one fails: what can be removed is.
    const settled = [];
    for (const backend of this.backends) settled.push(await backend.clear().then(ok, failed));
    const errors = settled.flatMap((s) => ("error" in s ? [s.error] : []));
    if (errors.length > 0) {
      const message = errors.map((e) => (e instanceof Error ? e.message : String(e))).join("; ");
      throw new Error(`clearing failed: ${message}`, { cause: errors[0] });
    }
    const results = settled.flatMap((s) => ("result" in s ? [s.result] : []));
    const changed = results.filter((r) => r.changed);
    return {
      changed: changed.length > 0,
      location: changed.map((r) => r.location).join(", ") || "iptables, nftables",
      revoked: results.flatMap((r) => r.revoked),
      differences: results.flatMap((r) => r.differences),
    };
  }
}

const ok = (result: SyncResult) => ({ result });
const failed = (error: unknown) => ({ error });

export function createBackend(
  mode: BackendMode,
  instanceId: string,
  options: SelectingOptions = {},
): SelectingBackend {
  return new SelectingBackend(mode, instanceId, options);
}
