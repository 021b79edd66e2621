// Health without a network port: after every pass the daemon publishes a small state file;
// `trafficjam healthcheck` reads it, checks the daemon is alive and recent, and reads the kernel
// back through the same backend to confirm the rules are in force.
//
// Location: $TRAFFICJAM_STATE_DIR (default /run/trafficjam) / <INSTANCE_ID>.<netns>.json, where
// <netns> is the network namespace's inode ("net4026531840"). Keying by namespace lets daemons with
// the same INSTANCE_ID in different network namespaces share /run; the health check runs in the
// daemon's namespace (same container, or `ip netns exec`), so it finds the right file.
import { readFileSync, readlinkSync, renameSync, rmSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Ruleset } from "./model.js";
import { createBackend, type BackendMode } from "./firewall/index.js";
import type { PassOutcome } from "./reconciler.js";

export const DEFAULT_STATE_DIR = "/run/trafficjam";
/** A pass older than this many poll intervals means the daemon is stuck. */
export const STALE_AFTER_INTERVALS = 3;

export interface HealthState {
  version: 1;
  pid: number;
  /** Start time of `pid` (/proc/PID/stat field 22), so a recycled pid is not mistaken for ours. */
  pidStartTime: string | null;
  instanceId: string;
  firewallBackend: BackendMode;
  pollIntervalMs: number;
  lastPass: { ok: boolean; at: number; error?: string } | null;
  lastSuccessAt: number | null;
  /** Desired ruleset of the last successful pass. */
  ruleset: Ruleset | null;
}

export interface HealthVerdict {
  healthy: boolean;
  /** One line: why. */
  reason: string;
}

export function stateDir(env: Record<string, string | undefined>): string {
  const dir = env.TRAFFICJAM_STATE_DIR?.trim();
  return dir ? dir : DEFAULT_STATE_DIR;
}

/** "net:[4026531840]" of the calling process → "net4026531840". */
export function netnsKey(): string {
  try {
    return readlinkSync("/proc/self/ns/net").replace(/[^a-z0-9]/g, "");
  } catch {
    return "net";
  }
}

export function statePath(dir: string, instanceId: string, netns = netnsKey()): string {
  return join(dir, `${instanceId}.${netns}.json`);
}

export function processStartTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19] ?? null;
  } catch {
    return null;
  }
}

/** Whether the process that wrote the state still runs (same pid, same start time). */
export function writerAlive(state: Pick<HealthState, "pid" | "pidStartTime">): boolean {
  const now = processStartTime(state.pid);
  if (now === null) return false;
  return state.pidStartTime === null || state.pidStartTime === now;
}

/**
 * The verdict, pure: `differences` is what the kernel check found (null: not checked, because an
 * earlier condition already failed). Healthy only if the writer lives, the last successful pass is
 * within STALE_AFTER_INTERVALS × POLL_INTERVAL, and the kernel matches the desired ruleset.
 */
export function assessHealth(
  state: HealthState,
  now: number,
  alive: boolean,
  differences: string[] | null,
): HealthVerdict {
  if (!alive) return { healthy: false, reason: `daemon (pid ${state.pid}) is not running` };
  const limit = STALE_AFTER_INTERVALS * state.pollIntervalMs;
  if (state.lastSuccessAt === null || state.ruleset === null) {
    const why = state.lastPass?.error ? `: ${state.lastPass.error}` : "";
    return { healthy: false, reason: `no successful reconcile yet${why}` };
  }
  const age = now - state.lastSuccessAt;
  if (age > limit) {
    const why = state.lastPass && !state.lastPass.ok ? `; last error: ${state.lastPass.error}` : "";
    return {
      healthy: false,
      reason: `last successful reconcile ${(age / 1000).toFixed(1)} s ago (limit ${limit / 1000} s = ${STALE_AFTER_INTERVALS} × POLL_INTERVAL)${why}`,
    };
  }
  if (differences === null) return { healthy: false, reason: "kernel rules not checked" };
  if (differences.length > 0) {
    return {
      healthy: false,
      reason: `kernel rules differ from the desired state: ${differences.join("; ")}`,
    };
  }
  const subnets = [...state.ruleset.families[4].subnets, ...state.ruleset.families[6].subnets];
  return {
    healthy: true,
    reason: `rules in force (${subnets.length} subnet${subnets.length === 1 ? "" : "s"}), last reconcile ${(age / 1000).toFixed(1)} s ago`,
  };
}

/** Parses a state file's text; throws with a readable message when it is not one. */
export function parseState(text: string): HealthState {
  const value = JSON.parse(text) as Partial<HealthState>;
  if (value.version !== 1 || typeof value.pid !== "number" || !value.firewallBackend)
    throw new Error("not a TrafficJam state file (version 1)");
  return value as HealthState;
}

/** Publishes the daemon's state after each pass; writes are atomic (temp file + rename). */
export class HealthPublisher {
  private state: HealthState;
  private warned = false;
  private closed = false;

  constructor(
    readonly path: string,
    init: Pick<HealthState, "instanceId" | "firewallBackend" | "pollIntervalMs">,
    private readonly onError: (error: Error) => void,
  ) {
    this.state = {
      version: 1,
      pid: process.pid,
      pidStartTime: processStartTime(process.pid),
      ...init,
      lastPass: null,
      lastSuccessAt: null,
      ruleset: null,
    };
    this.remove(); // a previous run's file says nothing about this one
  }

  record(outcome: PassOutcome): void {
    if (this.closed) return;
    this.state = {
      ...this.state,
      lastPass: {
        ok: outcome.ok,
        at: outcome.at,
        ...(outcome.error ? { error: outcome.error } : {}),
      },
      ...(outcome.ok && outcome.ruleset
        ? { lastSuccessAt: outcome.at, ruleset: outcome.ruleset }
        : {}),
    };
    const tmp = `${this.path}.${process.pid}.tmp`;
    try {
      mkdirSync(join(this.path, ".."), { recursive: true, mode: 0o755 });
      writeFileSync(tmp, JSON.stringify(this.state) + "\n", { mode: 0o644 });
      renameSync(tmp, this.path);
      this.warned = false;
    } catch (error) {
      if (!this.warned) this.onError(error as Error);
      this.warned = true;
    }
  }

  /** Removes the file; later passes (a late one during shutdown) publish nothing. */
  close(): void {
    this.closed = true;
    this.remove();
  }

  private remove(): void {
    rmSync(this.path, { force: true });
  }
}

/** `trafficjam healthcheck`: the verdict for this INSTANCE_ID in this network namespace. */
export async function checkHealth(
  instanceId: string,
  env: Record<string, string | undefined>,
  now = Date.now,
): Promise<HealthVerdict> {
  const path = statePath(stateDir(env), instanceId);
  let state: HealthState;
  try {
    state = parseState(readFileSync(path, "utf8"));
  } catch (error) {
    const e = error as NodeJS.ErrnoException;
    const why = e.code === "ENOENT" ? "missing (daemon not started, or stopped)" : e.message;
    return { healthy: false, reason: `state file ${path}: ${why}` };
  }
  const alive = writerAlive(state);
  const early = assessHealth(state, now(), alive, []);
  if (!early.healthy || state.ruleset === null) return early;
  let differences: string[];
  try {
    differences = (await createBackend(state.firewallBackend, instanceId).check(state.ruleset))
      .differences;
  } catch (error) {
    return {
      healthy: false,
      reason: `reading the kernel rules failed: ${(error as Error).message}`,
    };
  }
  return assessHealth(state, now(), alive, differences);
}
