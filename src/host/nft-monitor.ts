// Watches netfilter for ruleset changes through `nft monitor`, so an idle resync can tell that
// nothing changed since its last read-back without spawning a reader every POLL_INTERVAL, and a
// change somebody else makes is repaired at once rather than at the next resync. Our own commits
// (own-tools.ts) are not changes. Covers everything nf_tables holds, iptables-nft's tables
// included; not legacy x_tables.
import { spawn, type ChildProcess } from "node:child_process";
import { isOwnCommit } from "./own-tools.js";

/** Changes printed before the subscription is surely in place could be missed: wait this long. */
const SUBSCRIBE_GRACE_MS = 500;
/** A burst of changes (a tool's several commits) is told once, this long after its last line. */
const SETTLE_MS = 100;
/** Changes printed without the line naming their commit's process (an older nft): anybody's. */
const UNNAMED_AFTER_MS = 500;
const GENERATION = /^# new generation \d+ by process (\d+) \((.*)\)$/;

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
  private listener: (() => void) | null = null;
  private tellTimer: NodeJS.Timeout | null = null;
  /** Changes printed, their commit not yet named. */
  private unnamedTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly onUnavailable: (reason: string) => void = () => undefined,
    /** The network namespace to watch (a file path, entered with nsenter); null: ours. */
    private readonly netns: string | null = null,
  ) {}

  start(): void {
    if (this.stopped) return;
    const [file, args] =
      this.netns === null
        ? ["sh", ["-c", WRAPPER]]
        : ["nsenter", [`--net=${this.netns}`, "--", "sh", "-c", WRAPPER]];
    const child = spawn(file, args, { stdio: ["pipe", "pipe", "ignore"] });
    this.child = child;
    this.startedAt = Date.now();
    let partial = "";
    child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
      const lines = (partial + chunk).split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) this.line(line);
    });
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

  /** Calls `listener` after each change somebody else made (a burst once). */
  onChange(listener: () => void): void {
    this.listener = listener;
  }

  private line(line: string): void {
    const kind = classifyMonitorLine(line);
    if (kind === "blank") return;
    if (kind === "content") {
      // What changed; the line naming who follows it.
      this.unnamedTimer ??= setTimeout(() => {
        this.unnamedTimer = null;
        this.changed();
      }, UNNAMED_AFTER_MS).unref();
      return;
    }
    if (this.unnamedTimer) clearTimeout(this.unnamedTimer);
    this.unnamedTimer = null;
    if (kind === "foreign") this.changed();
  }

  private changed(): void {
    this.lastChangeAt = Date.now();
    if (this.tellTimer) clearTimeout(this.tellTimer);
    this.tellTimer = setTimeout(() => {
      this.tellTimer = null;
      if (!this.stopped) this.listener?.();
    }, SETTLE_MS).unref();
  }

  stop(): void {
    this.stopped = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    if (this.tellTimer) clearTimeout(this.tellTimer);
    if (this.unnamedTimer) clearTimeout(this.unnamedTimer);
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

/**
 * One line of `nft monitor`: what changed ("content"), or the commit that made it, ours or
 * somebody else's ("own", "foreign").
 */
export function classifyMonitorLine(
  line: string,
  own: (pid: number, comm: string) => boolean = isOwnCommit,
): "blank" | "content" | "own" | "foreign" {
  if (line.trim() === "") return "blank";
  const generation = GENERATION.exec(line);
  if (!generation) return "content";
  return own(Number(generation[1]), generation[2]!) ? "own" : "foreign";
}
