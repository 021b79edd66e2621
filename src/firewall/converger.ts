// The one converge loop both backends share: read the kernel (or trust the last read-back),
// plan, apply, read back, plan again: the second plan must be empty, or the transaction did not
// hold (VerificationError). A backend only says how to read, plan and apply.
import type { Family, Ruleset } from "../model.js";
import { VerificationError, type SyncOptions, type SyncResult } from "./backend.js";

/** What a backend plans from a kernel state and a desired ruleset. */
export interface KernelPlan {
  /** True when the kernel must be changed. */
  changed: boolean;
  /** Every difference found, for logs. */
  differences: string[];
  /** Differences that must not remain after applying (some are harmless and left for later). */
  outstanding: string[];
  /** Addresses the kernel allowed and the desired state no longer does. */
  revoked: Array<[Family, string]>;
  /** Where the rules live, e.g. "iptables-nft". */
  location: string;
}

/**
 * A backend's access to the kernel. `read` and `apply` do I/O; `plan` is pure. D: what is desired
 * (a Ruleset for the backends; a Swarm node's guard for its tables).
 */
export interface Kernel<S, P extends KernelPlan, D = Ruleset> {
  read(): Promise<S>;
  /** desired null: nothing of the instance may be left. */
  plan(state: S, desired: D | null): P;
  apply(plan: P): Promise<void>;
  /** The state after `plan` was applied; by default a full read. */
  readBack?(before: S, plan: P): Promise<S>;
  /** Whether `nft monitor` sees every change to this state (legacy x_tables it cannot see). */
  monitored?(state: S): boolean;
}

/** Tells whether anything in netfilter changed since a moment (see nft-monitor.ts). */
export interface ChangeMonitor {
  quietSince(since: number): boolean;
}

export interface KernelView<S> {
  state: S;
  /** When the read that produced it began. */
  readAt: number;
  /** True when this is the last read-back rather than a read made now. */
  cached: boolean;
}

/** How long a view begun by warm() counts as fresh for the pass that began it. */
const WARM_FOR_MS = 2_000;
/** The longest a quiet `nft monitor` spares a resync its read of the kernel. */
const TRUST_QUIET_FOR_MS = 10 * 60_000;

export class Converger<S, P extends KernelPlan, D = Ruleset> {
  private cache: { state: S; readAt: number } | null = null;
  /** A read started by view(): another view() meanwhile shares it instead of reading twice. */
  private viewing: Promise<KernelView<S>> | null = null;
  /** The view warm() began for a pass: its next fresh view, which must not read again. */
  private warmed: { view: Promise<KernelView<S>>; at: number } | null = null;
  /**
   * The last pass that found (or left) the kernel as desired: on that same view, the same
   * desired state needs no plan again (an idle resync with nothing changed plans nothing).
   */
  private settled: { readAt: number; key: string; location: string } | null = null;

  constructor(
    private readonly kernel: Kernel<S, P, D>,
    private readonly monitor: ChangeMonitor | null = null,
    /** Told why a pass planned on the cached view failed, before it is redone from a read. */
    private readonly onStaleView: (error: unknown) => void = () => undefined,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * The kernel's state. fresh: read it, unless `nft monitor` has seen no change since the last
   * read-back; otherwise the last read-back (what an event pass plans against).
   */
  async view(fresh: boolean): Promise<KernelView<S>> {
    const warmed = this.warmed;
    this.warmed = null;
    if (fresh && warmed && this.now() - warmed.at <= WARM_FOR_MS) {
      const view = await warmed.view.catch(() => null); // a failed warm-up: read now
      if (view) return view;
    }
    if (this.viewing) return this.viewing;
    const cache = this.cache;
    if (cache && (!fresh || this.quietSince(cache))) return { ...cache, cached: true };
    const reading = (this.viewing = this.readNow());
    try {
      return await reading;
    } finally {
      if (this.viewing === reading) this.viewing = null;
    }
  }

  /**
   * Begins the view a pass is about to ask for (fresh: as view(true) would), so the kernel is
   * read while Docker answers. The pass's next fresh view takes it instead of reading again.
   */
  warm(fresh: boolean): void {
    const view = this.view(fresh);
    view.catch(() => undefined); // met again, and reported, by the view that takes it
    this.warmed = { view, at: this.now() };
  }

  /** Forget the last read-back: the next view reads the kernel. */
  invalidate(): void {
    this.cache = null;
    this.warmed = null;
    this.settled = null;
  }

  /**
   * Converges the kernel to `desired` (null: remove everything of the instance). A pass planned
   * on a cached view that fails, in its apply or its verification, is redone once from a read:
   * the kernel may have moved under the cache.
   */
  async converge(
    desired: D | null,
    options: SyncOptions,
    view?: KernelView<S>,
  ): Promise<SyncResult> {
    let current = view ?? (await this.view(options.fresh));
    const key = JSON.stringify(desired);
    const settled = this.settled;
    if (current.cached && settled?.readAt === current.readAt && settled.key === key)
      return { changed: false, differences: [], revoked: [], location: settled.location };
    if (current.cached) {
      try {
        return await this.pass(current, desired, key, options);
      } catch (error) {
        this.onStaleView(error);
      }
      current = await this.readNow();
    }
    return this.pass(current, desired, key, options);
  }

  /** Compares a read made now with `desired`, changing nothing. */
  async check(desired: D | null): Promise<P> {
    return this.kernel.plan((await this.readNow()).state, desired);
  }

  /** What converging `state` to `desired` would take (pure). */
  planOn(state: S, desired: D | null): P {
    return this.kernel.plan(state, desired);
  }

  private quietSince(cache: { state: S; readAt: number }): boolean {
    if (!this.monitor || !(this.kernel.monitored?.(cache.state) ?? true)) return false;
    // A backstop: however quiet the monitor, the kernel is read again now and then.
    if (this.now() - cache.readAt > TRUST_QUIET_FOR_MS) return false;
    return this.monitor.quietSince(cache.readAt);
  }

  private async readNow(): Promise<KernelView<S>> {
    this.cache = null;
    this.settled = null;
    const readAt = this.now();
    const state = await this.kernel.read();
    this.cache = { state, readAt };
    return { state, readAt, cached: false };
  }

  /** `key`: `desired` as JSON (what `settled` remembers it by). */
  private async pass(
    view: KernelView<S>,
    desired: D | null,
    key: string,
    options: SyncOptions,
  ): Promise<SyncResult> {
    const { state } = view;
    const plan = this.kernel.plan(state, desired);
    const result: SyncResult = {
      changed: plan.changed,
      differences: plan.differences,
      revoked: plan.revoked,
      location: plan.location,
    };
    if (!plan.changed) {
      const readAt = this.cache?.state === state ? this.cache.readAt : null;
      this.settled = readAt === null ? null : { readAt, key, location: plan.location };
      return result;
    }
    this.settled = null;
    this.cache = null; // until this pass has read back what it changed
    await this.kernel.apply(plan);
    options.onEnforced?.();
    // Read back what we changed: the kernel, not our intent, is the truth. A read-back may read
    // only what the plan touched: the rest is as old as the view the plan was made on.
    const readAt = view.readAt;
    const after = await (this.kernel.readBack?.(state, plan) ?? this.kernel.read());
    const left = this.kernel.plan(after, desired).outstanding;
    if (left.length > 0) throw new VerificationError(plan.location, left);
    this.cache = { state: after, readAt };
    this.settled = { readAt, key, location: plan.location };
    return result;
  }
}
