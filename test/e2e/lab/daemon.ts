// Running the TrafficJam CLI (dist/cli.js, built by `npm run build`) inside a lab netns, as a
// host command would run on a Docker host.
//
// `ip netns exec NS node cli.js`: ip exec()s node, so the pid we hold — and signal — is node's
// own (checked before any signal is sent). It also gives the process a sysfs of the netns, so
// /sys/class/net agrees with netlink as on a real host. The environment is built from scratch
// (PATH + DOCKER_HOST + the test's variables): nothing of the test runner leaks in, notably
// NODE_TEST_CONTEXT, which would turn the daemon into a test-runner child.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readlinkSync, realpathSync } from "node:fs";
import { join } from "node:path";
import type { Lab } from "./lab.js";
import { REPO_ROOT } from "./paths.js";
import { sleepSync, tail, withTimeout } from "./util.js";

export const CLI_PATH = join(REPO_ROOT, "dist", "cli.js");

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A parsed log line (JSON), or { msg: line } for a line that is not JSON. */
export type LogEntry = Record<string, unknown> & { msg?: unknown };
export type LogPredicate = RegExp | ((entry: LogEntry) => boolean);

export interface CliOptions {
  /** Script run instead of dist/cli.js (the lab's own smoke test uses a fake). */
  cliPath?: string;
}

function cliCommand(
  lab: Lab,
  env: Record<string, string>,
  args: readonly string[],
  cliPath = CLI_PATH,
) {
  if (!existsSync(cliPath)) throw new Error(`${cliPath} missing: run \`npm run build\` first`);
  return {
    cmd: "ip",
    args: ["netns", "exec", lab.netns, process.execPath, cliPath, ...args],
    env: {
      PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin",
      DOCKER_HOST: lab.dockerHost,
      ...env,
    },
  };
}

function parseLine(line: string): LogEntry | undefined {
  if (!line.startsWith("{")) return undefined;
  try {
    const v: unknown = JSON.parse(line);
    return v !== null && typeof v === "object" && !Array.isArray(v) ? (v as LogEntry) : undefined;
  } catch {
    return undefined;
  }
}

export class DaemonProcess {
  readonly pid: number;
  /** Every stdout and stderr line so far, in arrival order. */
  readonly lines: string[] = [];
  private readonly child: ChildProcess;
  private readonly exited: Promise<ExitStatus>;
  private exitStatus?: ExitStatus;
  private readonly waiters = new Set<() => void>();
  private readonly raw = { stdout: "", stderr: "" };
  private readonly nodeExe = realpathSync(process.execPath);

  constructor(
    private readonly lab: Lab,
    env: Record<string, string>,
    args: readonly string[],
    opts: CliOptions = {},
  ) {
    const c = cliCommand(lab, env, args, opts.cliPath);
    this.child = spawn(c.cmd, c.args, {
      env: c.env,
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    this.exited = new Promise((resolve) => {
      const finish = (status: ExitStatus): void => {
        if (this.exitStatus) return;
        this.exitStatus = status;
        this.notify();
        resolve(status);
      };
      this.child.on("error", (e) => {
        this.push([`spawn error: ${e.message}`]);
        finish({ code: null, signal: null });
      });
      // 'close' comes once the output is fully read; a grandchild holding the pipes must not
      // delay the exit status for long, hence the fallback shortly after 'exit'
      this.child.on("exit", (code, signal) =>
        setTimeout(() => finish({ code, signal }), 500).unref(),
      );
      this.child.on("close", (code, signal) => finish({ code, signal }));
    });
    if (this.child.pid === undefined) throw new Error(`cannot start ${CLI_PATH}`);
    this.pid = this.child.pid;
    for (const [key, stream] of [
      ["stdout", this.child.stdout],
      ["stderr", this.child.stderr],
    ] as const) {
      let partial = "";
      stream?.setEncoding("utf8").on("data", (d: string) => {
        this.raw[key] += d;
        const parts = (partial + d).split("\n");
        partial = parts.pop() ?? "";
        this.push(parts);
      });
      stream?.on("end", () => {
        if (partial) this.push([partial]);
        partial = "";
      });
    }
    lab.own(this);
  }

  private push(lines: string[]): void {
    if (lines.length === 0) return;
    this.lines.push(...lines);
    this.notify();
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }

  get running(): boolean {
    return this.exitStatus === undefined;
  }

  stdoutText(): string {
    return this.raw.stdout;
  }

  stderrText(): string {
    return this.raw.stderr;
  }

  /** Parsed JSON lines so far. */
  entries(): LogEntry[] {
    return this.lines.flatMap((l): LogEntry[] => {
      const e = parseLine(l);
      return e ? [e] : [];
    });
  }

  /** Parsed JSON lines from line `fromLine` (a mark()) on. */
  entriesFrom(fromLine: number): LogEntry[] {
    return this.lines.slice(fromLine).flatMap((l): LogEntry[] => {
      const e = parseLine(l);
      return e ? [e] : [];
    });
  }

  /** Index to pass as `fromLine` to only consider lines logged after this point. */
  mark(): number {
    return this.lines.length;
  }

  /**
   * Resolves with the first entry (from line `fromLine` on) matching: a RegExp is tested on the raw
   * line, a function on parsed JSON lines. Rejects on timeout or if the daemon exits first.
   */
  waitForLog(pred: LogPredicate, timeoutMs: number, fromLine = 0): Promise<LogEntry> {
    let next = fromLine;
    const scan = (): LogEntry | undefined => {
      for (; next < this.lines.length; next++) {
        const line = this.lines[next] ?? "";
        const entry = parseLine(line);
        if (pred instanceof RegExp ? pred.test(line) : entry !== undefined && pred(entry)) {
          next++;
          return entry ?? { msg: line };
        }
      }
      return undefined;
    };
    return new Promise((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      const check = (): void => {
        const hit = scan();
        if (hit) {
          done();
          resolve(hit);
        } else if (this.exitStatus) {
          done();
          reject(
            new Error(
              `daemon exited (${JSON.stringify(this.exitStatus)}) before logging ${pred}\n${this.output(40)}`,
            ),
          );
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(
          new Error(`no log line matching ${pred} within ${timeoutMs} ms\n${this.output(40)}`),
        );
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  /** Last lines of output, for error messages. */
  output(lines = 40): string {
    return tail(this.lines.join("\n"), lines);
  }

  /** Waits until `ip netns exec` has exec()ed node, so signals reach the daemon itself. */
  private ensureNode(): void {
    for (let i = 0; i < 200 && this.running; i++) {
      let exe: string;
      try {
        exe = readlinkSync(`/proc/${this.pid}/exe`);
      } catch {
        return; // gone
      }
      if (exe === this.nodeExe) return;
      sleepSync(10);
    }
    if (this.running) throw new Error(`pid ${this.pid} did not become node within 2 s`);
  }

  signal(sig: NodeJS.Signals): void {
    if (!this.running)
      throw new Error(`daemon ${this.pid} already exited (${JSON.stringify(this.exitStatus)})`);
    this.ensureNode();
    process.kill(this.pid, sig);
  }

  waitExit(timeoutMs: number): Promise<ExitStatus> {
    return withTimeout(
      this.exited,
      timeoutMs,
      `TrafficJam ${this.pid} to exit\n${this.output(20)}`,
    );
  }

  async kill(): Promise<ExitStatus> {
    if (this.running) this.child.kill("SIGKILL");
    const status = await this.waitExit(5_000);
    this.lab.disown(this);
    return status;
  }

  killSync(): void {
    if (this.running) this.child.kill("SIGKILL");
  }
}

/** Starts the daemon in the lab netns with DOCKER_HOST=lab.dockerHost plus `env`. Killed by lab.stop(). */
export function startDaemon(
  lab: Lab,
  env: Record<string, string>,
  args: readonly string[] = [],
  opts: CliOptions = {},
): DaemonProcess {
  return new DaemonProcess(lab, env, args, opts);
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** One-shot CLI run (e.g. --clear, configuration errors); SIGKILL + rejection after timeoutMs. */
export async function runCli(
  lab: Lab,
  env: Record<string, string>,
  args: readonly string[],
  timeoutMs = 30_000,
  opts: CliOptions = {},
): Promise<CliResult> {
  const d = new DaemonProcess(lab, env, args, opts);
  let status: ExitStatus;
  try {
    status = await d.waitExit(timeoutMs);
  } catch (e) {
    await d.kill();
    throw e;
  }
  lab.disown(d);
  return { ...status, stdout: d.stdoutText(), stderr: d.stderrText() };
}
