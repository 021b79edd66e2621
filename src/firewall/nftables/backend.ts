// nftables backend: the instance's `inet` table, converged in one `nft -f` transaction and read
// back. Event-driven passes plan against the last read-back; a resync reads the kernel again
// unless `nft monitor` saw no change since that read.
import type { Ruleset } from "../../model.js";
import {
  VerificationError,
  type CheckResult,
  type FirewallBackend,
  type SyncOptions,
  type SyncResult,
} from "../backend.js";
import type { NftChangeMonitor } from "../nft-monitor.js";
import { CommandError, run, runChecked } from "../../util/exec.js";
import { FAMILY_TABLE, desiredTable, renderTable, tableName, type TableModel } from "./layout.js";
import { parseTable, planTable } from "./plan.js";

const LOCATION = "nftables";

export class NftMissingError extends Error {
  constructor() {
    super("the nft tool is not installed: install nftables to use the nftables backend");
    this.name = "NftMissingError";
  }
}

/** The instance's table as listed by the kernel, or null when there is none. */
export async function readTable(instanceId: string): Promise<TableModel | null> {
  const args = ["list", "table", FAMILY_TABLE, tableName(instanceId)];
  let result;
  try {
    result = await run("nft", args);
  } catch (error) {
    if (error instanceof CommandError && /ENOENT/.test(error.stderr)) throw new NftMissingError();
    throw error;
  }
  if (result.code === 0) return parseTable(result.stdout);
  if (/No such file or directory/.test(result.stderr)) return null;
  throw new CommandError(["nft", ...args].join(" "), result.code, result.stderr);
}

export interface NftablesOptions {
  monitor?: NftChangeMonitor | null;
  /** Replace the whole table even when only set elements differ (benchmark contrast). */
  replaceAlways?: boolean;
}

export class NftablesBackend implements FirewallBackend {
  private cache: { instanceId: string; table: TableModel | null; readAt: number } | null = null;

  constructor(private readonly options: NftablesOptions = {}) {}

  /** The kernel's table: the last read-back when it is known to be current, else a new read. */
  private async current(
    instanceId: string,
    fresh: boolean,
  ): Promise<{ table: TableModel | null; cached: boolean }> {
    const cache = this.cache;
    if (
      cache?.instanceId === instanceId &&
      (!fresh || (this.options.monitor?.quietSince(cache.readAt) ?? false))
    ) {
      return { table: cache.table, cached: true };
    }
    const readAt = Date.now();
    const table = await readTable(instanceId);
    this.cache = { instanceId, table, readAt };
    return { table, cached: false };
  }

  /** Whether the instance has a table (used to clean up after a backend switch). */
  async holds(instanceId: string, fresh = true): Promise<boolean> {
    try {
      return (await this.current(instanceId, fresh)).table !== null;
    } catch (error) {
      if (!(error instanceof NftMissingError)) throw error;
      // No nft, no table of ours: remembered, so event passes do not try to spawn it again.
      this.cache = { instanceId, table: null, readAt: Date.now() };
      return false;
    }
  }

  async sync(ruleset: Ruleset, options: SyncOptions = { fresh: true }): Promise<SyncResult> {
    const desired = desiredTable(ruleset);
    const current = await this.current(ruleset.instanceId, options.fresh);
    if (current.cached) {
      try {
        return await this.converge(ruleset.instanceId, current.table, desired, options);
      } catch {
        // The kernel moved under our cached view: redo the pass from a fresh read.
      }
    }
    const table = current.cached
      ? (await this.current(ruleset.instanceId, true)).table
      : current.table;
    return this.converge(ruleset.instanceId, table, desired, options);
  }

  async check(ruleset: Ruleset): Promise<CheckResult> {
    const plan = planTable(await readTable(ruleset.instanceId), desiredTable(ruleset), renderTable);
    return { location: LOCATION, differences: plan.differences };
  }

  async clear(instanceId: string): Promise<SyncResult> {
    let table: TableModel | null;
    try {
      table = await readTable(instanceId);
    } catch (error) {
      if (error instanceof NftMissingError) table = null;
      else throw error;
    }
    return this.converge(instanceId, table, null, { fresh: true });
  }

  private async converge(
    instanceId: string,
    current: TableModel | null,
    desired: TableModel | null,
    options: SyncOptions,
  ): Promise<SyncResult> {
    const previous = this.cache;
    this.cache = null; // until this pass has read back what it changed
    const plan = planTable(current, desired, renderTable, this.options.replaceAlways);
    if (plan.script !== null) {
      await runChecked("nft", ["-f", "-"], plan.script);
      options.onEnforced?.();
      // Read back what we changed: the kernel, not our intent, is the truth.
      const readAt = Date.now();
      const after = await readTable(instanceId);
      const failed = planTable(after, desired, renderTable).differences;
      if (failed.length > 0) throw new VerificationError(LOCATION, failed);
      this.cache = { instanceId, table: after, readAt };
    } else {
      this.cache = previous; // still the kernel's state as of that read
    }
    return {
      changed: plan.script !== null,
      differences: plan.differences,
      location: LOCATION,
      revoked: plan.revoked,
    };
  }
}
