// iptables backend: writes in the flavour where Docker's DOCKER-USER lives, applies each family in
// one iptables-restore --noflush transaction, then reads it back. Legacy tables are only read when
// the kernel lists one (no process spawned otherwise), and event-driven passes plan against the
// last read-back instead of reading again: a stale plan fails or misverifies, and is redone fresh.
import { readFileSync } from "node:fs";
import type { Family, FamilyRuleset, Ruleset } from "../../model.js";
import {
  VerificationError,
  type CheckResult,
  type FirewallBackend,
  type SyncOptions,
  type SyncResult,
} from "../backend.js";
import { CommandError, run, runChecked } from "../../util/exec.js";
import { DOCKER_USER } from "./layout.js";
import { planFamily, type FamilyTarget, type IptablesPlan } from "./plan.js";
import { emptyFilterTable, parseFilterTable, type FilterTable } from "./save-format.js";
import type { NftChangeMonitor } from "../nft-monitor.js";

export type Flavour = "nft" | "legacy";
const FLAVOURS: readonly Flavour[] = ["nft", "legacy"];
const FAMILIES: readonly Family[] = [4, 6];

function tool(family: Family, flavour: Flavour, suffix: "" | "-save" | "-restore"): string {
  return `${family === 4 ? "iptables" : "ip6tables"}-${flavour}${suffix}`;
}

/** Whether the legacy (x_tables) filter table of a family exists, without loading it. */
function legacyFilterExists(family: Family): boolean {
  const names = family === 4 ? "/proc/net/ip_tables_names" : "/proc/net/ip6_tables_names";
  try {
    // A tiny procfs file: a synchronous read costs less than the promise machinery around it.
    return readFileSync(names, "utf8").split("\n").includes("filter");
  } catch {
    return false; // no x_tables in this kernel: nothing can live there
  }
}

export async function readFilterTable(family: Family, flavour: Flavour): Promise<FilterTable> {
  // Naming a legacy table loads it; only look at what exists.
  if (flavour === "legacy" && !legacyFilterExists(family)) return emptyFilterTable();
  try {
    const args = flavour === "nft" ? ["-t", "filter"] : [];
    return parseFilterTable(await runChecked(tool(family, flavour, "-save"), args));
  } catch (error) {
    // A host with one flavour installed has no rules in the other: nothing to read there.
    if (error instanceof CommandError && /ENOENT/.test(error.stderr)) return emptyFilterTable();
    throw error;
  }
}

export class DockerChainMissingError extends Error {
  constructor() {
    super(
      `Docker's ${DOCKER_USER} chain exists in neither iptables-nft nor iptables-legacy: ` +
        `is dockerd running, with its iptables integration on, and are iptables' tools installed? ` +
        `(FIREWALL_BACKEND=auto uses nftables on such hosts)`,
    );
    this.name = "DockerChainMissingError";
  }
}

/** Where Docker's DOCKER-USER lives (ours must sit in the same hooks), or null: nowhere. */
export function dockerFlavour(ipv4: Record<Flavour, FilterTable>): Flavour | null {
  const withChain = FLAVOURS.filter((f) => ipv4[f].chains.has(DOCKER_USER));
  const jumped = withChain.filter((f) =>
    (ipv4[f].chains.get("FORWARD") ?? []).includes(`-A FORWARD -j ${DOCKER_USER}`),
  );
  return jumped[0] ?? withChain[0] ?? null;
}

/** Docker's rules decide the flavour: ours must sit in the same hooks, before Docker's accepts. */
export function detectFlavour(ipv4: Record<Flavour, FilterTable>): Flavour {
  const flavour = dockerFlavour(ipv4);
  if (flavour === null) throw new DockerChainMissingError();
  return flavour;
}

async function applyPlan(family: Family, flavour: Flavour, plan: IptablesPlan): Promise<void> {
  for (const chain of plan.createChains) {
    const result = await run(tool(family, flavour, ""), ["-w", "5", "-t", "filter", "-N", chain]);
    // Another instance may have created it a moment ago: that is fine.
    if (result.code !== 0 && !/exists/i.test(result.stderr)) {
      throw new Error(`${tool(family, flavour, "")} -N ${chain}: ${result.stderr.trim()}`);
    }
  }
  if (plan.script) {
    // -w 5: wait for the xtables lock (legacy), but fail (and retry) rather than hang.
    await runChecked(tool(family, flavour, "-restore"), ["--noflush", "-w", "5"], plan.script);
  }
}

type Tables = Map<string, FilterTable>;
const key = (family: Family, flavour: Flavour) => `${family}/${flavour}`;

interface FamilyWork {
  family: Family;
  f: Flavour;
  plan: IptablesPlan;
}

export interface Located {
  /** Where Docker's DOCKER-USER lives, or null when no flavour has it. */
  flavour: Flavour | null;
  tables: Tables;
  /** True when this is the last read-back rather than a read made now. */
  cached: boolean;
}

export class IptablesBackend implements FirewallBackend {
  /** Filter tables as last read back from the kernel, and when the oldest of those reads began. */
  private cache: Tables | null = null;
  private cacheReadAt = 0;
  private legacySeen = "";

  /** With a monitor, a resync whose kernel did not change since the last read skips the read. */
  constructor(private readonly monitor: NftChangeMonitor | null = null) {}

  /**
   * Finds Docker's flavour. fresh: re-detect, which is a procfs read plus, unless `nft monitor`
   * saw nothing change since the last read, a read of every table; otherwise the last read-back.
   */
  async locate(fresh: boolean): Promise<Located> {
    const legacy = FAMILIES.map(legacyFilterExists).join(",");
    const unchanged =
      !fresh || (legacy === "false,false" && (this.monitor?.quietSince(this.cacheReadAt) ?? false));
    if (this.cache && legacy === this.legacySeen && unchanged) {
      return { flavour: flavourOf(this.cache), tables: this.cache, cached: true };
    }
    const readAt = Date.now();
    const tables = await this.readAll();
    this.cache = tables;
    this.legacySeen = legacy;
    this.cacheReadAt = readAt;
    return { flavour: flavourOf(tables), tables, cached: false };
  }

  /** `located`: a view the caller has just obtained from locate(), so it is not read twice. */
  async sync(
    ruleset: Ruleset,
    options: SyncOptions = { fresh: true },
    located?: Located,
  ): Promise<SyncResult> {
    const desired = (family: Family) => ruleset.families[family];
    located ??= await this.locate(options.fresh);
    if (located.cached) {
      try {
        if (located.flavour === null) throw new DockerChainMissingError();
        return await this.converge(
          ruleset.instanceId,
          desired,
          located.tables,
          located.flavour,
          options,
        );
      } catch {
        // The kernel moved under our cached view: redo the pass from a fresh read.
        this.cache = null;
      }
    }
    const fresh = located.cached ? await this.locate(true) : located;
    if (fresh.flavour === null) throw new DockerChainMissingError();
    return this.converge(ruleset.instanceId, desired, fresh.tables, fresh.flavour, options);
  }

  /** Compares a read made now (or `located`, one the caller has just made) with `ruleset`. */
  async check(ruleset: Ruleset, located?: Located): Promise<CheckResult> {
    const tables = located?.tables ?? (await this.readAll());
    const flavour = located ? located.flavour : flavourOf(tables);
    if (flavour === null) throw new DockerChainMissingError();
    const work = this.plan(ruleset.instanceId, (f) => ruleset.families[f], tables, flavour);
    return { location: `iptables-${flavour}`, differences: describe(work, true) };
  }

  /** Whether anything of the instance is installed, in any flavour (used after a switch). */
  async holdsInstance(instanceId: string, fresh = true, located?: Located): Promise<boolean> {
    const { tables } = located ?? (await this.locate(fresh));
    return this.plan(instanceId, () => null, tables, null).length > 0;
  }

  async clear(instanceId: string): Promise<SyncResult> {
    this.cache = null;
    // Two instances clearing at once each see the other's jump and leave the shared entry
    // chains, or trip over each other's commit: look again until nothing of ours, or unused, is
    // left. A pass that changes nothing ends it.
    const removed: string[] = [];
    for (let attempt = 1; ; attempt++) {
      try {
        const pass = await this.converge(instanceId, () => null, await this.readAll(), null, {
          fresh: true,
        });
        removed.push(...pass.differences);
        if (!pass.changed) return { ...pass, changed: removed.length > 0, differences: removed };
      } catch (error) {
        if (attempt >= 5) throw error;
      }
      await new Promise((resolve) => setTimeout(resolve, 20 + Math.random() * 80));
    }
  }

  private async readAll(): Promise<Tables> {
    const tables: Tables = new Map();
    await Promise.all(
      FAMILIES.flatMap((family) =>
        FLAVOURS.map(async (f) => tables.set(key(family, f), await readFilterTable(family, f))),
      ),
    );
    return tables;
  }

  /**
   * Plans writing `desired(family)` into `flavour` and removing this instance from every other
   * flavour (Docker may have moved between them). flavour null: remove it everywhere (--clear).
   */
  private plan(
    instanceId: string,
    desired: (family: Family) => FamilyRuleset | null,
    tables: Tables,
    flavour: Flavour | null,
  ): FamilyWork[] {
    return FAMILIES.flatMap((family) =>
      FLAVOURS.map((f) => {
        const table = tables.get(key(family, f)) ?? emptyFilterTable();
        return {
          family,
          f,
          plan: planFamily(
            table,
            target(instanceId, family, f, table, f === flavour ? desired(family) : null),
          ),
        };
      }),
    ).filter((w) => w.plan.script !== null || w.plan.createChains.length > 0);
  }

  private async converge(
    instanceId: string,
    desired: (family: Family) => FamilyRuleset | null,
    tables: Tables,
    flavour: Flavour | null,
    options: SyncOptions,
  ): Promise<SyncResult> {
    this.cache = null; // until this pass has read back what it changed
    const work = this.plan(instanceId, desired, tables, flavour);
    // Families are independent transactions: apply them side by side.
    await Promise.all(
      work.map(async ({ family, f, plan }) => {
        await applyPlan(family, f, plan);
        options.onEnforced?.();
      }),
    );
    // Read back what we changed: the kernel, not our intent, is the truth.
    const next: Tables = new Map(tables);
    await Promise.all(
      work.map(async ({ family, f }) => {
        const after = await readFilterTable(family, f);
        next.set(key(family, f), after);
        const rules = f === flavour ? desired(family) : null;
        const failed = describe(
          [{ family, f, plan: planFamily(after, target(instanceId, family, f, after, rules)) }],
          true,
        );
        if (failed.length > 0) throw new VerificationError(tool(family, f, ""), failed);
      }),
    );
    this.cache = next;
    const revoked = new Map<string, [Family, string]>();
    for (const { family, plan } of work) {
      for (const source of plan.revokedSources)
        revoked.set(`${family}/${source}`, [family, source]);
    }
    return {
      changed: work.length > 0,
      revoked: [...revoked.values()],
      differences: describe(work, false),
      location: flavour ? `iptables-${flavour}` : "iptables (all flavours)",
    };
  }
}

function flavourOf(tables: Tables): Flavour | null {
  return dockerFlavour({
    nft: tables.get(key(4, "nft")) ?? emptyFilterTable(),
    legacy: tables.get(key(4, "legacy")) ?? emptyFilterTable(),
  });
}

function target(
  instanceId: string,
  family: Family,
  f: Flavour,
  current: FilterTable,
  rules: FamilyRuleset | null,
): FamilyTarget {
  // Docker 20.10 makes no IPv6 DOCKER-USER: there we hook FORWARD directly, first.
  const anchor = family === 4 || current.chains.has(DOCKER_USER) ? DOCKER_USER : "FORWARD";
  return {
    family,
    instanceId,
    rules,
    forwardAnchor: anchor,
    staleForwardAnchors: family === 6 && anchor === DOCKER_USER ? ["FORWARD"] : [],
  };
}

/**
 * Differences of planned work, prefixed with the tool. harmfulOnly: leave out a shared jump
 * duplicated by another instance starting at the same moment, which is harmless and made single
 * by the next pass; anything else found on a read-back means our transaction did not hold.
 */
function describe(work: readonly FamilyWork[], harmfulOnly: boolean): string[] {
  return work.flatMap(({ family, f, plan }) =>
    plan.differences
      .filter((d) => !harmfulOnly || !d.endsWith(" duplicated"))
      .map((d) => `${tool(family, f, "")}: ${d}`),
  );
}
