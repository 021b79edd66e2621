// Watches netfilter for ruleset changes through `nft monitor`, so an idle resync can tell that
// nothing changed since its last read-back without spawning a reader every POLL_INTERVAL.
// Covers everything nf_tables holds, iptables-nft's tables included; not legacy x_tables.
import { spawn, type ChildProcess } from "node:child_process";

/** Changes printed before the subscription is surely in place could be missed: wait this long. */
const SUBSCRIBE_GRACE_MS = 500;

export class NftChangeMonitor {
  private child: ChildProcess | null = null;
  private startedAt = 0;
  private lastChangeAt = 0;
  private stopped = false;
  private restartTimer: NodeJS.Timeout | null = null;

  constructor(private readonly onUnavailable: (reason: string) => void = () => undefined) {}

  start(): void {
    if (this.stopped) return;
    const child = spawn("nft", ["monitor"], { stdio: ["ignore", "pipe", "ignore"] });
    this.child = child;
    this.startedAt = Date.now();
    child.stdout?.on("data", () => (this.lastChangeAt = Date.now()));
    const lost = (reason: string) => {
      if (this.child !== child) return;
      this.child = null;
      if (this.stopped) return;
      this.onUnavailable(reason);
      this.restartTimer = setTimeout(() => this.start(), 5000);
      this.restartTimer.unref();
    };
    child.on("error", (error) => lost(error.message));
    child.on("exit", (code, signal) => lost(`nft monitor exited (${signal ?? code})`));
  }

  stop(): void {
    this.stopped = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.child?.kill();
    this.child = null;
  }

  /** True when the monitor has been watching since before `since` and saw no change after it. */
  quietSince(since: number): boolean {
    return (
      this.child !== null &&
      this.startedAt + SUBSCRIBE_GRACE_MS <= since &&
      this.lastChangeAt < since
    );
  }
}
