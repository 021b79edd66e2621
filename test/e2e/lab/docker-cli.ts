// The docker CLI pointed at one lab engine. The v28 client negotiates down to dockerd 20.10's API.
import { run, runOk, type RunOptions, type RunResult } from "./exec.js";

export const DOCKER_BIN = process.env.TJ_E2E_DOCKER ?? "docker";

/** Environment for the CLI without anything that could redirect it to another engine. */
function cliEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const k of ["DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"])
    delete env[k];
  return env;
}

export function dockerRun(
  host: string,
  args: readonly string[],
  opts: RunOptions = {},
): Promise<RunResult> {
  return run(DOCKER_BIN, ["-H", host, ...args], { env: cliEnv(), ...opts });
}

/** stdout (trailing newline trimmed); throws with stderr on failure. */
export async function docker(
  host: string,
  args: readonly string[],
  opts: RunOptions = {},
): Promise<string> {
  return (await runOk(DOCKER_BIN, ["-H", host, ...args], { env: cliEnv(), ...opts })).trimEnd();
}
