// Small timing helpers. Every wait in the lab is bounded and fails with a message saying what
// it was waiting for, so a hung test names its cause instead of hitting the runner's timeout.
import { randomBytes } from "node:crypto";

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Blocking sleep, only for the synchronous 'exit' safety net where promises never settle. */
export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

export interface WaitOptions {
  timeoutMs: number;
  intervalMs?: number;
  /** Human description used in the timeout error ("dockerd to answer"). */
  what: string;
  /** Extra diagnostics appended to the timeout error (e.g. a log tail). */
  details?: () => string | Promise<string>;
}

/** Thrown by a waitFor() probe to stop waiting at once (e.g. the awaited process died). */
export class StopWaiting extends Error {}

/** Polls `probe` until it returns a value other than undefined/false; throws after timeoutMs. */
export async function waitFor<T>(
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  opts: WaitOptions,
): Promise<T> {
  const start = Date.now();
  const interval = opts.intervalMs ?? 100;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v;
    } catch (e) {
      if (e instanceof StopWaiting) {
        const details = opts.details ? `\n${await opts.details()}` : "";
        throw new Error(`gave up waiting for ${opts.what}: ${e.message}${details}`, { cause: e });
      }
      lastError = e;
    }
    if (Date.now() - start >= opts.timeoutMs) break;
    await sleep(interval);
  }
  let msg = `timed out after ${opts.timeoutMs} ms waiting for ${opts.what}`;
  if (lastError) msg += `\nlast error: ${(lastError as Error).message ?? String(lastError)}`;
  if (opts.details) msg += `\n${await opts.details()}`;
  throw new Error(msg);
}

/** Races a promise against a deadline. */
export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([p, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

export const randomId = (bytes = 3): string => randomBytes(bytes).toString("hex");

/** Last `n` lines of a text, for error messages. */
export function tail(text: string, n = 30): string {
  const lines = text.trimEnd().split("\n");
  return lines.slice(-n).join("\n");
}
