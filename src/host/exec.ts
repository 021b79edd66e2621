// Running the firewall tools. Errors carry the command, what it printed and why, up to the caller.
// Where a tool runs (which network namespace) is the business of host.ts, not of this module.
import { spawn, type ChildProcessByStdio } from "node:child_process";
import type { Readable, Writable } from "node:stream";
import { noteToolRun } from "./own-tools.js";

/** Why a command failed: its program is not installed, it exited non-zero, or it hung. */
export type CommandFailure = "not-installed" | "exit" | "timeout" | "spawn";

export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly failure: CommandFailure,
    readonly exitCode: number | null,
    readonly stderr: string,
  ) {
    super(
      `${command} failed (${failure === "exit" ? `exit ${exitCode}` : failure}): ${stderr.trim() || "no output"}`,
    );
    this.name = "CommandError";
  }
}

export interface RunResult {
  stdout: string;
  stderr: string;
  code: number;
}

/** No firewall tool should take this long; a stuck one must not stall the daemon forever. */
const TIMEOUT_MS = 20_000;

/**
 * Runs a program without a shell, in our own network namespace; rejects on spawn failure or
 * timeout, else gives the exit code.
 */
export function spawnTool(
  file: string,
  args: readonly string[],
  input?: string,
): Promise<RunResult> {
  const command = [file, ...args].join(" ");
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      stdio: ["pipe", "pipe", "pipe"],
      timeout: TIMEOUT_MS,
      killSignal: "SIGKILL",
    });
    const ended = noteToolRun(child.pid, file, args);
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    child.on("error", (error: NodeJS.ErrnoException) => {
      ended();
      reject(
        new CommandError(
          command,
          error.code === "ENOENT" ? "not-installed" : "spawn",
          null,
          error.message,
        ),
      );
    });
    child.on("close", (code, signal) => {
      ended();
      if (signal === "SIGKILL") {
        reject(new CommandError(command, "timeout", null, `killed after ${TIMEOUT_MS} ms`));
      } else {
        resolve({ stdout, stderr, code: code ?? -1 });
      }
    });
    child.stdin.on("error", () => undefined); // the child may exit before reading its input
    child.stdin.end(input ?? "");
  });
}

/** A program that runs as long as we do: its standard output read as it comes. */
export type TiedProcess = ChildProcessByStdio<Writable, Readable, Readable>;

// A long-running tool must not outlive us (a SIGKILL leaves children behind). This wrapper starts
// it in the background and ends it when our end of its stdin closes (any exit of ours); it
// exits with the tool's status if the tool ends first, so that we notice. The tool's own stdin
// is /dev/null; its stdout and stderr are the wrapper's, our pipes.
const TIED = `exec 3<&0
"$@" </dev/null & pid=$!
(read -r _ <&3; kill "$pid" 2>/dev/null) &
wait "$pid"`;

/** Starts `file args` tied to our life (see TIED), in our own network namespace. */
export function spawnTied(file: string, args: readonly string[]): TiedProcess {
  return spawn("sh", ["-c", TIED, "tied", file, ...args], { stdio: ["pipe", "pipe", "pipe"] });
}
