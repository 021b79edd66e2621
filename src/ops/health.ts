// Health without a network port: after every pass the daemon publishes a small state file;
// `trafficjam healthcheck` reads it and checks that the daemon is alive, that its last pass
// succeeded and that the last success is recent. Each successful pass has read the rules back
// from the kernel (or known from `nft monitor` that nothing changed since), so the file says what
// the daemon last verified; reading it costs next to nothing, which matters for a check the image
// runs every few seconds. `healthcheck --deep` also reads the kernel back itself.
// This module loads nothing heavy: the firewall code only for --deep.
//
// Location: $TRAFFICJAM_STATE_DIR (default /run/trafficjam) / <INSTANCE_ID>.<netns>.json, where
// <netns> is the network namespace's inode ("net4026531840"). Keying by namespace lets daemons with
// the same INSTANCE_ID in different network namespaces share /run; the health check runs in the
// daemon's namespace (same container, or `ip netns exec`), so it finds the right file.
import {
  mkdirSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import type { Ruleset } from "../model.js";
import type { PassOutcome } from "../reconciler.js";
import type { OpsState, SwarmState } from "./state.js";

type BackendMode = "auto" | "iptables" | "nftables";

export const DEFAULT_STATE_DIR = "/run/trafficjam";
/** The Swarm daemon's `location`: it writes no rules of its own. */
export const SWARM_DAEMON_LOCATION = "swarm daemon";
/** A pass older than this many poll intervals means the daemon is stuck. */
export const STALE_AFTER_INTERVALS = 3;

const STATE_VERSION = 3;

export interface HealthState {
  version: typeof STATE_VERSION;
  pid: number;
  /** Start time of `pid` (/proc/PID/stat field 22), so a recycled pid is not mistaken for ours. */
  pidStartTime: string | null;
  instanceId: string;
  firewallBackend: BackendMode;
  pollIntervalMs: number;
  lastPass: { ok: boolean; at: number; error?: string } | null;
  lastSuccessAt: number | null;
  /** Where the last successful pass found or put the rules, e.g. "iptables-nft". */
  location: string | null;
  /** Desired ruleset of the last successful pass (what a deep check compares the kernel with). */
  ruleset: Ruleset | null;
  /** What the last pass found wrong although the rules are in force (see PassOutcome.problems). */
  problems: string[];
  /** What `trafficjam status` shows beyond health (see ops/state.ts); absent: not yet known. */
  ops?: OpsState;
  /** The Swarm daemon's: every node and its worker (see ops/state.ts). */
  swarm?: SwarmState;
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

/**
 * The verdict file beside the state file: one line, `<until> <healthy|unhealthy> <reason>`, where
 * `until` (ms since the epoch) is when it goes stale without a newer pass. The image's HEALTHCHECK
 * reads it with a shell script (healthcheck.sh), starting no Node process: the verdict itself is
 * the daemon's, computed by assessHealth below.
 */
export const verdictPath = (statePathname: string) => statePathname.replace(/\.json$/, ".verdict");

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
 * The verdict, pure. Healthy only if the writer lives, its last pass succeeded (and so verified
 * the rules in the kernel), and that success is within STALE_AFTER_INTERVALS × POLL_INTERVAL.
 * `kernel`: what a deep check found differing in the kernel (undefined: not checked).
 */
export function assessHealth(
  state: HealthState,
  now: number,
  alive: boolean,
  kernel?: string[],
  describeAge: (ageMs: number) => string = (ageMs) => `${(ageMs / 1000).toFixed(1)} s ago`,
): HealthVerdict {
  if (!alive) return { healthy: false, reason: `daemon (pid ${state.pid}) is not running` };
  const limit = STALE_AFTER_INTERVALS * state.pollIntervalMs;
  if (state.lastSuccessAt === null || state.ruleset === null) {
    const why = state.lastPass?.error ? `: ${state.lastPass.error}` : "";
    return { healthy: false, reason: `no successful reconcile yet${why}` };
  }
  const age = Math.max(0, now - state.lastSuccessAt); // a file written after `now` was taken
  const ago = describeAge(age);
  if (age > limit) {
    const why = state.lastPass && !state.lastPass.ok ? `; last error: ${state.lastPass.error}` : "";
    return {
      healthy: false,
      reason: `last successful reconcile ${ago} (limit ${limit / 1000} s = ${STALE_AFTER_INTERVALS} × POLL_INTERVAL)${why}`,
    };
  }
  if (state.lastPass && !state.lastPass.ok) {
    return {
      healthy: false,
      reason: `the last reconcile failed (last success ${ago}): ${state.lastPass.error ?? "unknown error"}`,
    };
  }
  if (state.problems.length > 0) {
    return { healthy: false, reason: `rules in force, but: ${state.problems.join("; ")}` };
  }
  if (kernel && kernel.length > 0) {
    return {
      healthy: false,
      reason: `kernel rules differ from the desired state: ${kernel.join("; ")}`,
    };
  }
  if (state.swarm || state.location === SWARM_DAEMON_LOCATION)
    return {
      healthy: true,
      reason: `the Swarm daemon: its workers enforce on the nodes (last reconcile ${ago})`,
    };
  if (state.ruleset.bridge === null) {
    // Nothing to enforce: the daemon is doing its job if the network does not exist yet, and
    // cannot if it is not a bridge network.
    return state.ruleset.networkName === null
      ? {
          healthy: true,
          reason: `the network does not exist yet: nothing to protect (last reconcile ${ago})`,
        }
      : {
          healthy: false,
          reason: `network ${state.ruleset.networkName} has no Linux bridge on this host (not a bridge network): nothing is enforced`,
        };
  }
  const checked = kernel ? "read back now" : "verified by the daemon";
  const where = state.location ? ` in ${state.location}` : "";
  const mode = state.ruleset.mode === "audit" ? "mode audit: nothing is dropped" : "mode enforce";
  return {
    healthy: true,
    reason: `rules in force${where} (${checked}), last reconcile ${ago}, ${mode}`,
  };
}

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/** Parses a state file's text; throws with a readable message when it is not one. */
export function parseState(text: string): HealthState {
  const value: unknown = JSON.parse(text);
  // Written by our own daemon, but read by another process: check what the verdict relies on.
  if (
    !isRecord(value) ||
    value.version !== STATE_VERSION ||
    typeof value.pid !== "number" ||
    typeof value.pollIntervalMs !== "number" ||
    !["auto", "iptables", "nftables"].includes(String(value.firewallBackend)) ||
    !(value.lastSuccessAt === null || typeof value.lastSuccessAt === "number") ||
    !(value.lastPass === null || isRecord(value.lastPass)) ||
    !Array.isArray(value.problems)
  )
    throw new Error(`not a TrafficJam state file (version ${STATE_VERSION})`);
  return value as unknown as HealthState;
}

/**
 * The state files of this network namespace's instances whose daemon still runs (a killed
 * daemon leaves its file behind: it says nothing).
 */
export function liveStates(dir: string): HealthState[] {
  const suffix = `.${netnsKey()}.json`;
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => n.endsWith(suffix));
  } catch {
    return []; // no state folder: no daemon here
  }
  return names.flatMap((name) => {
    try {
      const state = parseState(readFileSync(join(dir, name), "utf8"));
      return writerAlive(state) ? [state] : [];
    } catch {
      return []; // not a state file of ours
    }
  });
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
      version: STATE_VERSION,
      pid: process.pid,
      pidStartTime: processStartTime(process.pid),
      ...init,
      lastPass: null,
      lastSuccessAt: null,
      location: null,
      ruleset: null,
      problems: [],
    };
    this.remove(); // a previous run's file says nothing about this one
  }

  /** The state as last recorded (what the file says, or will once written). */
  get current(): HealthState {
    return this.state;
  }

  /** What `status` shows beyond health, written with the next write (or now: `write`). */
  setOps(ops: OpsState, write = false): void {
    this.state = { ...this.state, ops };
    if (write && !this.closed) this.write();
  }

  /** The Swarm daemon's nodes, written now. */
  setSwarm(swarm: SwarmState): void {
    this.state = { ...this.state, swarm };
    if (!this.closed) this.write();
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
        ? {
            lastSuccessAt: outcome.at,
            ruleset: outcome.ruleset,
            location: outcome.location ?? null,
            problems: outcome.problems ?? [],
          }
        : {}),
    };
    this.write();
  }

  /** The current state as the file, atomically (temporary file + rename). */
  private write(): void {
    const tmp = `${this.path}.${process.pid}.tmp`;
    try {
      mkdirSync(join(this.path, ".."), { recursive: true, mode: 0o755 });
      writeFileSync(tmp, JSON.stringify(this.state) + "\n", { mode: 0o644 });
      renameSync(tmp, this.path);
      // The file is read later: it names the time of the last success rather than an age.
      const success = this.state.lastSuccessAt;
      const at = success === null ? "" : `at ${new Date(success).toISOString()}`;
      const now = Date.now();
      const verdict = assessHealth(this.state, now, true, undefined, () => at);
      const limit = STALE_AFTER_INTERVALS * this.state.pollIntervalMs;
      const until = (success ?? now) + limit;
      const line = `${until} ${verdict.healthy ? "healthy" : "unhealthy"} ${verdict.reason}`;
      writeFileSync(tmp, `${line.replace(/\n/g, " ")}\n`, { mode: 0o644 });
      renameSync(tmp, verdictPath(this.path));
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
    rmSync(verdictPath(this.path), { force: true });
  }
}

/**
 * `trafficjam healthcheck [--deep]`: the verdict for this INSTANCE_ID in this network namespace.
 * deep: also read the kernel back through the same backend and compare it with the ruleset.
 */
export async function checkHealth(
  instanceId: string,
  env: Record<string, string | undefined>,
  options: { deep?: boolean; now?: () => number } = {},
): Promise<HealthVerdict> {
  const now = options.now ?? Date.now;
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
  const verdict = assessHealth(state, now(), alive);
  if (!options.deep || !verdict.healthy || state.ruleset === null) return verdict;
  let differences: string[];
  try {
    const { createBackend } = await import("../firewall/index.js");
    const { localHost } = await import("../host/host.js");
    // Where the daemon put them: a Swarm worker's are in the overlay's namespace.
    const netns = state.ruleset.netns ?? null;
    const backend = createBackend(state.firewallBackend, instanceId, {
      host: localHost.in(netns),
      overlay: netns !== null,
    });
    differences = (await backend.check(state.ruleset)).differences;
  } catch (error) {
    return {
      healthy: false,
      reason: `reading the kernel rules failed: ${(error as Error).message}`,
    };
  }
  return assessHealth(state, now(), alive, differences);
}
