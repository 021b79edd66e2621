// Running host commands. Every child is tracked so the process-exit safety net can kill the
// ones still running, and every run has a deadline (SIGKILL + error when it passes).
import { spawn, type ChildProcess } from "node:child_process";

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

/** Children started by run() that have not exited yet. */
export const liveChildren = new Set<ChildProcess>();

const DEFAULT_TIMEOUT_MS = 60_000;

/** Runs a command without a shell; never throws for a non-zero exit, only for spawn errors/timeouts. */
export function run(
  cmd: string,
  args: readonly string[],
  opts: RunOptions = {},
): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      env: opts.env ?? process.env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    liveChildren.add(child);
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(
        new Error(
          `${describe(cmd, args)} timed out after ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`,
        ),
      );
    }, timeoutMs);
    child.on("error", (e) => {
      clearTimeout(timer);
      liveChildren.delete(child);
      reject(new Error(`cannot run ${describe(cmd, args)}: ${e.message}`));
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      liveChildren.delete(child);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Like run() but throws (with stderr) unless the command exits 0; returns stdout. */
export async function runOk(
  cmd: string,
  args: readonly string[],
  opts: RunOptions = {},
): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    throw new Error(
      `${describe(cmd, args)} failed (exit ${r.code ?? r.signal}): ${r.stderr.trim() || r.stdout.trim()}`,
    );
  }
  return r.stdout;
}

export function describe(cmd: string, args: readonly string[]): string {
  const shown = args.map((a) => (a.length > 120 ? a.slice(0, 117) + "..." : a));
  return [cmd, ...shown].join(" ");
}
