// Running the firewall tools. Errors carry the command and what it printed, up to the caller.
import { spawn } from "node:child_process";

export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly code: number | null,
    readonly stderr: string,
  ) {
    super(`${command} failed (exit ${code ?? "signal"}): ${stderr.trim() || "no output"}`);
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

/** Runs a program without a shell; rejects on spawn failure or timeout, else gives the exit code. */
export function run(file: string, args: string[], input?: string): Promise<RunResult> {
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
    child.on("error", (error) =>
      reject(new CommandError([file, ...args].join(" "), null, error.message)),
    );
    child.on("close", (code, signal) => {
      if (signal === "SIGKILL") {
        reject(new CommandError([file, ...args].join(" "), null, `killed after ${TIMEOUT_MS} ms`));
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
    throw new CommandError([file, ...args].join(" "), result.code, result.stderr || result.stdout);
  }
  return result.stdout;
}
