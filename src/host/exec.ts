// Running the firewall tools. Errors carry the command, what it printed and why, up to the caller.
import { spawn } from "node:child_process";

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
 * The network namespace the firewall tools act in: null, ours (the host's, on one host); a Swarm
 * worker sets its overlay network's namespace, entered per command with nsenter (Node cannot
 * setns). Set once per pass, before the first command, by the one process that owns it.
 */
let targetNetns: string | null = null;

export function setTargetNetns(path: string | null): void {
  targetNetns = path;
}

export function targetNetnsPath(): string | null {
  return targetNetns;
}

/** Runs a program without a shell; rejects on spawn failure or timeout, else gives the exit code. */
export function run(file: string, args: string[], input?: string): Promise<RunResult> {
  if (targetNetns === null) return runHere(file, args, input);
  return runHere("nsenter", [`--net=${targetNetns}`, "--", file, ...args], input);
}

/** Like run, always in our own network namespace (whatever the target namespace). */
export function runHere(file: string, args: string[], input?: string): Promise<RunResult> {
  const command = [file, ...args].join(" ");
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      stdio: ["pipe", "pipe", "pipe"],
      timeout: TIMEOUT_MS,
      killSignal: "SIGKILL",
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    child.on("error", (error: NodeJS.ErrnoException) =>
      reject(
        new CommandError(
          command,
          error.code === "ENOENT" ? "not-installed" : "spawn",
          null,
          error.message,
        ),
      ),
    );
    child.on("close", (code, signal) => {
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

/** Like run, but a non-zero exit is an error. */
export async function runChecked(file: string, args: string[], input?: string): Promise<string> {
  const result = await run(file, args, input);
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
