// The host as the firewall code sees it: tools run in one network namespace, and a clock. One
// object per namespace, handed to whatever acts there (backends, the port finder, conntrack, the
// guards), so where a command runs is decided by who holds which object, never by a call made
// earlier; and a fake host makes any of them testable without root.
import { CommandError, spawnTied, spawnTool, type RunResult, type TiedProcess } from "./exec.js";

export type { RunResult, TiedProcess } from "./exec.js";

export interface Host {
  /** The network namespace the tools act in (a file such as /var/run/docker/netns/1-ab…), or null: ours. */
  readonly netns: string | null;
  /** Runs a program there, without a shell; rejects on spawn failure or timeout. */
  run(file: string, args: readonly string[], input?: string): Promise<RunResult>;
  /** Milliseconds since the epoch. */
  now(): number;
  /** The same host's tools in another network namespace (null: ours). */
  in(netns: string | null): Host;
  /**
   * Starts a long-running program there (a reader of the kernel's log), tied to our life: it ends
   * when we do, and when its stdin is closed. Absent on hosts that cannot (test fakes).
   */
  stream?(file: string, args: readonly string[]): TiedProcess;
}

/** Like host.run, but a non-zero exit is an error (CommandError, with what the tool printed). */
export async function runChecked(
  host: Host,
  file: string,
  args: readonly string[],
  input?: string,
): Promise<string> {
  const result = await host.run(file, args, input);
  if (result.code !== 0) {
    throw new CommandError(
      [file, ...args].join(" "),
      "exit",
      result.code,
      result.stderr || result.stdout,
    );
  }
  return result.stdout;
}

/** The real machine: tools spawned here, entered into `netns` with nsenter (Node cannot setns). */
export class ToolHost implements Host {
  constructor(
    readonly netns: string | null = null,
    readonly now: () => number = Date.now,
  ) {}

  run(file: string, args: readonly string[], input?: string): Promise<RunResult> {
    if (this.netns === null) return spawnTool(file, args, input);
    return spawnTool("nsenter", [`--net=${this.netns}`, "--", file, ...args], input);
  }

  in(netns: string | null): Host {
    return netns === this.netns ? this : new ToolHost(netns, this.now);
  }

  stream(file: string, args: readonly string[]): TiedProcess {
    if (this.netns === null) return spawnTied(file, args);
    return spawnTied("nsenter", [`--net=${this.netns}`, "--", file, ...args]);
  }
}

/** Our own network namespace, the real clock. */
export const localHost: Host = new ToolHost();
