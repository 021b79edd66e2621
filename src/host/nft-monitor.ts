// Watches netfilter for ruleset changes through `nft monitor`, so an idle resync can tell that
// nothing changed since its last read-back without spawning a reader every POLL_INTERVAL.
// Covers everything nf_tables holds, iptables-nft's tables included; not legacy x_tables.
import { spawn, type ChildProcess } from "node:child_process";

/** Changes printed before the subscription is surely in place could be missed: wait this long. */
const SUBSCRIBE_GRACE_MS = 500;

// `nft monitor` outlives a parent killed with SIGKILL. This wrapper ends it when our end of its
// stdin closes (any exit of ours), and exits with nft's status if nft ends first, so we notice.
const WRAPPER = `exec 3<&0
nft monitor & pid=$!
(read -r _ <&3; kill "$pid" 2>/dev/null) &
wait "$pid"`;

export class NftChangeMonitor {
  private child: ChildProcess | null = null;
  private startedAt = 0;
  private lastChangeAt = 0;
  private stopped = false;
  private restartTimer: NodeJS.Timeout | null = null;
  /** Grows while nft keeps failing fast (not installed, say), so retrying costs next to nothing. */
  private restartDelayMs = 5000;

  constructor(private readonly onUnavailable: (reason: string) => void = () => undefined) {}

  start(): void {
    if (this.stopped) return;
    const child = spawn("sh", ["-c", WRAPPER], { stdio: ["pipe", "pipe", "ignore"] });
    this.child = child;
    this.startedAt = Date.now();
    child.stdout?.on("data", () => (this.lastChangeAt = Date.now()));
    const lost = (reason: string) => {
      if (this.child !== child) return;
      this.child = null;
      if (this.stopped) return;
      this.onUnavailable(reason);
      const livedMs = Date.now() - this.startedAt;
      this.restartDelayMs = livedMs < 10_000 ? Math.min(this.restartDelayMs * 2, 300_000) : 5000;
      this.restartTimer = setTimeout(() => this.start(), this.restartDelayMs);
      this.restartTimer.unref();
    };
    child.on("error", (error) => lost(error.message));
    child.on("exit", (code, signal) => lost(`nft monitor exited (${signal ?? code})`));
  }

  stop(): void {
    this.stopped = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.child?.stdin?.end(); // the wrapper ends nft, then itself
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
