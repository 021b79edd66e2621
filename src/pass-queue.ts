// Triggers → passes, one at a time: requests arriving together (within a couple of
// milliseconds) make one pass, requests during a pass make the next one, and nothing runs once
// halted. The reconciler (the rules) and the Swarm daemon (its service and allowed set) each
// drive their passes through one.

/** Requests within this window share one pass. */
const COALESCE_MS = 2;

/** One pass, for the reasons given; `since`: the earliest event time among them (ms), if any. */
export type Pass = (reasons: string[], since: number | null) => Promise<void>;

export class PassQueue {
  private pending = new Set<string>();
  private pendingSince: number | null = null;
  private running: Promise<void> | null = null;
  private scheduled: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(private readonly pass: Pass) {}

  get halted(): boolean {
    return this.stopped;
  }

  /** Asks for a pass; many requests before it starts make one pass. */
  request(reason: string, eventTimeMs?: number): void {
    if (this.stopped) return;
    this.pending.add(reason);
    if (eventTimeMs !== undefined)
      this.pendingSince = Math.min(this.pendingSince ?? eventTimeMs, eventTimeMs);
    if (this.running || this.scheduled) return;
    this.scheduled = setTimeout(() => {
      this.scheduled = null;
      void this.startDrain();
    }, COALESCE_MS);
  }

  /** Runs a pass now (after the one in flight), with whatever else is pending. */
  async runNow(reason: string): Promise<void> {
    while (this.running) await this.running;
    // A pass already scheduled is this one: its reasons are pending and drained with ours.
    if (this.scheduled) clearTimeout(this.scheduled);
    this.scheduled = null;
    this.pending.add(reason);
    await this.startDrain();
  }

  /** No pass starts from now on; the one in flight, if any, goes on (see idle). */
  halt(): void {
    this.stopped = true;
    if (this.scheduled) clearTimeout(this.scheduled);
    this.scheduled = null;
  }

  /** Resolves once no pass is in flight. */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  /** The pass in flight, if any. */
  get inFlight(): Promise<void> | null {
    return this.running;
  }

  /** The one way a drain starts: never beside another. */
  private startDrain(): Promise<void> {
    if (this.running) return this.running;
    const run = this.drain().finally(() => {
      this.running = null;
      // A request made while the drain was ending (it saw `running` and left) is not lost.
      if (this.pending.size > 0 && !this.stopped && !this.scheduled) this.request("pending");
    });
    this.running = run;
    return run;
  }

  private async drain(): Promise<void> {
    while (this.pending.size > 0 && !this.stopped) {
      const reasons = [...this.pending];
      const since = this.pendingSince;
      this.pending.clear();
      this.pendingSince = null;
      await this.pass(reasons, since);
    }
  }
}
