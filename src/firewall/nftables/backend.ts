// nftables backend: the instance's tables (`inet` filter, `bridge` guard), converged together in
// one `nft -f` transaction and read back. Event-driven passes plan against the last read-back; a
// resync reads the kernel again unless `nft monitor` saw no change since that read.
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
import {
  TABLE_FAMILIES,
  desiredTables,
  renderTable,
  tableName,
  type TableFamily,
  type TableModel,
  type Tables,
} from "./layout.js";
import { parseTable, planTables } from "./plan.js";

const LOCATION = "nftables";

export class NftMissingError extends Error {
  constructor() {
    super("the nft tool is not installed: install nftables to use the nftables backend");
    this.name = "NftMissingError";
  }
}

/** The instance's tables as listed by the kernel (both lists run side by side). */
export async function readTables(instanceId: string): Promise<Tables> {
  const [inet, bridge] = await Promise.all([
    readTable("inet", instanceId),
    readTable("bridge", instanceId),
  ]);
  return { inet, bridge };
}

const noTables = (): Tables => ({ inet: null, bridge: null });
const holdsAny = (tables: Tables) => TABLE_FAMILIES.some((f) => tables[f] !== null);

/** One table as listed by the kernel, or null when there is none. */
async function readTable(family: TableFamily, instanceId: string): Promise<TableModel | null> {
  const args = ["list", "table", family, tableName(instanceId)];
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
  private cache: { instanceId: string; tables: Tables; readAt: number } | null = null;

  constructor(private readonly options: NftablesOptions = {}) {}

  /** The kernel's tables: the last read-back when known to be current, else a new read. */
  private async current(
    instanceId: string,
    fresh: boolean,
  ): Promise<{ tables: Tables; cached: boolean }> {
    const cache = this.cache;
    if (
      cache?.instanceId === instanceId &&
      (!fresh || (this.options.monitor?.quietSince(cache.readAt) ?? false))
    ) {
      return { tables: cache.tables, cached: true };
    }
    const readAt = Date.now();
    const tables = await readTables(instanceId);
    this.cache = { instanceId, tables, readAt };
    return { tables, cached: false };
  }

  /** Whether the instance has a table (used to clean up after a backend switch). */
  async holds(instanceId: string, fresh = true): Promise<boolean> {
    try {
      return holdsAny((await this.current(instanceId, fresh)).tables);
    } catch (error) {
      if (!(error instanceof NftMissingError)) throw error;
      // No nft, no table of ours: remembered, so event passes do not try to spawn it again.
      this.cache = { instanceId, tables: noTables(), readAt: Date.now() };
      return false;
    }
  }

  async sync(ruleset: Ruleset, options: SyncOptions = { fresh: true }): Promise<SyncResult> {
    const desired = desiredTables(ruleset);
    const current = await this.current(ruleset.instanceId, options.fresh);
    if (current.cached) {
      try {
        return await this.converge(ruleset.instanceId, current.tables, desired, options);
      } catch {
        // The kernel moved under our cached view: redo the pass from a fresh read.
      }
    }
    const tables = current.cached
      ? (await this.current(ruleset.instanceId, true)).tables
      : current.tables;
    return this.converge(ruleset.instanceId, tables, desired, options);
  }

  async check(ruleset: Ruleset): Promise<CheckResult> {
    const current = await readTables(ruleset.instanceId);
    const plan = planTables(current, desiredTables(ruleset), renderTable);
    return { location: LOCATION, differences: plan.differences };
  }

  async clear(instanceId: string): Promise<SyncResult> {
    let tables: Tables;
    try {
      tables = await readTables(instanceId);
    } catch (error) {
      if (error instanceof NftMissingError) tables = noTables();
      else throw error;
    }
    return this.converge(instanceId, tables, null, { fresh: true });
  }

  private async converge(
    instanceId: string,
    current: Tables,
    desired: Tables | null,
    options: SyncOptions,
  ): Promise<SyncResult> {
    const previous = this.cache;
    this.cache = null; // until this pass has read back what it changed
    const plan = planTables(current, desired, renderTable, this.options.replaceAlways);
    if (plan.script !== null) {
      await runChecked("nft", ["-f", "-"], plan.script);
      options.onEnforced?.();
      // Read back what we changed: the kernel, not our intent, is the truth.
      const readAt = Date.now();
      const after = await readTables(instanceId);
      const failed = planTables(after, desired, renderTable).differences;
      if (failed.length > 0) throw new VerificationError(LOCATION, failed);
      this.cache = { instanceId, tables: after, readAt };
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
