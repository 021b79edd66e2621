// iptables backend: writes in the flavour where Docker's DOCKER-USER lives, each family in one
// iptables-restore --noflush transaction, plus the bridge guard table (what iptables cannot see:
// ports' MACs, ARP, non-IP frames) in one `nft -f`, through the shared converger. Legacy
// tables are only read when the kernel lists one (no process spawned otherwise).
import { existsSync, readFileSync } from "node:fs";
import type { Family, Ruleset } from "../../model.js";
import type {
  CheckResult,
  Fitness,
  SelectableBackend,
  SyncOptions,
  SyncResult,
} from "../backend.js";
import {
  Converger,
  type ChangeMonitor,
  type Kernel,
  type KernelPlan,
  type KernelView,
} from "../converger.js";
import { CommandError } from "../../host/exec.js";
import { localHost, runChecked, type Host } from "../../host/host.js";
import { DOCKER_USER } from "./layout.js";
import { planFamily, type FamilyTarget, type IptablesPlan } from "./plan.js";
import { emptyFilterTable, parseFilterTable, type FilterTable } from "./save-format.js";
import { guardTable } from "../nftables/guard.js";
import { planTable, type NftPlan } from "../nftables/plan.js";
import type { TableModel } from "../nftables/table.js";
import { NftMissingError, applyScript, readTables } from "../nftables/tool.js";

export type Flavour = "nft" | "legacy";
const FLAVOURS: readonly Flavour[] = ["nft", "legacy"];
const FAMILIES: readonly Family[] = [4, 6];
const NEED_NFT =
  "the iptables backend keeps its bridge guard (ARP, MAC and address binding of every port) in an nft bridge table";

function tool(family: Family, flavour: Flavour, suffix: "" | "-save" | "-restore"): string {
  return `${family === 4 ? "iptables" : "ip6tables"}-${flavour}${suffix}`;
}

/** The bridge guard's table: named apart from the nftables backend's, so a switch is make-before-break. */
export function guardTableName(instanceId: string): string {
  return `trafficjam-l2_${instanceId}`;
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

const legacyPresence = () => FAMILIES.map(legacyFilterExists).join(",");

export async function readFilterTable(
  host: Host,
  family: Family,
  flavour: Flavour,
): Promise<FilterTable> {
  // Naming a legacy table loads it; only look at what exists.
  if (flavour === "legacy" && !legacyFilterExists(family)) return emptyFilterTable();
  try {
    const args = flavour === "nft" ? ["-t", "filter"] : [];
    return parseFilterTable(await runChecked(host, tool(family, flavour, "-save"), args));
  } catch (error) {
    // A host with one flavour installed has no rules in the other: nothing to read there.
    if (error instanceof CommandError && error.failure === "not-installed")
      return emptyFilterTable();
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

async function applyFamily(
  host: Host,
  family: Family,
  flavour: Flavour,
  plan: IptablesPlan,
): Promise<void> {
  // Created side by side (legacy's xtables lock orders them anyway), before the transaction.
  await Promise.all(
    plan.createChains.map(async (chain) => {
      const result = await host.run(tool(family, flavour, ""), [
        "-w",
        "5",
        "-t",
        "filter",
        "-N",
        chain,
      ]);
      // Another instance may have created it a moment ago: that is fine.
      if (result.code !== 0 && !/exists/i.test(result.stderr)) {
        throw new CommandError(
          `${tool(family, flavour, "")} -N ${chain}`,
          "exit",
          result.code,
          result.stderr,
        );
      }
    }),
  );
  if (plan.script) {
    // -w 5: wait for the xtables lock (legacy), but fail (and retry) rather than hang.
    await runChecked(
      host,
      tool(family, flavour, "-restore"),
      ["--noflush", "-w", "5"],
      plan.script,
    );
  }
}

type Tables = Map<string, FilterTable>;
const key = (family: Family, flavour: Flavour) => `${family}/${flavour}`;

/** What the kernel holds that this backend reads: every filter table, and the guard table. */
export interface IptablesState {
  tables: Tables;
  guard: TableModel | null;
  /** Which legacy tables existed when read ("true,false": IPv4 only). */
  legacy: string;
}

interface FamilyWork {
  family: Family;
  f: Flavour;
  plan: IptablesPlan;
}

interface IptablesKernelPlan extends KernelPlan {
  work: FamilyWork[];
  guard: NftPlan;
}

export function flavourOf(state: IptablesState): Flavour | null {
  return dockerFlavour({
    nft: state.tables.get(key(4, "nft")) ?? emptyFilterTable(),
    legacy: state.tables.get(key(4, "legacy")) ?? emptyFilterTable(),
  });
}

export interface IptablesOptions {
  /** Where the tools run (a Swarm worker: the overlay's namespace); default: here. */
  host?: Host;
  monitor?: ChangeMonitor | null;
  onStaleView?: (error: unknown) => void;
  /** Whether the kernel has IPv6 (ip6tables fails without it); default: look at /proc. */
  ipv6?: boolean;
  /**
   * In a Swarm overlay network's namespace (a worker's): Docker keeps no chains there, so the
   * rules go into iptables-nft, jumped to from FORWARD in both families; legacy is not looked at.
   */
  overlay?: boolean;
}

export class IptablesBackend implements SelectableBackend {
  readonly kind = "iptables";
  private readonly engine: Converger<IptablesState, IptablesKernelPlan>;
  private readonly guardName: string;
  private readonly overlay: boolean;

  constructor(
    private readonly instanceId: string,
    options: IptablesOptions = {},
  ) {
    const host = options.host ?? localHost;
    const ipv6 = options.ipv6 ?? existsSync("/proc/sys/net/ipv6");
    const overlay = (this.overlay = options.overlay ?? false);
    const flavours: readonly Flavour[] = overlay ? ["nft"] : FLAVOURS;
    // Our procfs shows our own namespace's legacy tables, not the overlay namespace's.
    const legacyNow = overlay ? () => "false,false" : legacyPresence;
    const guardName = (this.guardName = guardTableName(instanceId));
    const readGuard = async (): Promise<TableModel | null> => {
      try {
        return (
          (await readTables(host, [{ family: "bridge", name: guardName }], NEED_NFT))[0] ?? null
        );
      } catch (error) {
        // Without nft no guard can exist; the iptables chains still go in, and applying the
        // guard then fails the pass loudly (NftMissingError), every pass, until nft is installed.
        if (error instanceof NftMissingError) return null;
        throw error;
      }
    };
    const readFamilies = (tables: Tables, which: ReadonlyArray<{ family: Family; f: Flavour }>) =>
      Promise.all(
        which.map(async ({ family, f }) =>
          tables.set(key(family, f), await readFilterTable(host, family, f)),
        ),
      );
    const kernel: Kernel<IptablesState, IptablesKernelPlan> = {
      async read() {
        const legacy = legacyNow();
        const tables: Tables = new Map();
        const guard = readGuard();
        await readFamilies(
          tables,
          FAMILIES.flatMap((family) => flavours.map((f) => ({ family, f }))),
        );
        return { tables, guard: await guard, legacy };
      },
      plan: (state, desired) => planAll(instanceId, guardName, state, desired, ipv6, overlay),
      async apply(plan) {
        // Families and the guard are independent transactions: apply them side by side. Either
        // order is safe: the iptables chains bind the whitelisted addresses to their ports too.
        // Each runs to its end before a failure is reported, so a retry never overlaps one.
        const outcomes = await Promise.allSettled([
          ...plan.work.map(({ family, f, plan: p }) => applyFamily(host, family, f, p)),
          plan.guard.script === null
            ? Promise.resolve()
            : applyScript(host, plan.guard.script, NEED_NFT),
        ]);
        const failed = outcomes.find((o): o is PromiseRejectedResult => o.status === "rejected");
        if (failed) throw failed.reason;
      },
      async readBack(before, plan) {
        const tables = new Map(before.tables);
        const guard = plan.guard.script === null ? before.guard : readGuard();
        await readFamilies(tables, plan.work);
        return { tables, guard: await guard, legacy: before.legacy };
      },
      // nft monitor sees iptables-nft and the guard, never legacy x_tables.
      monitored: (state) => state.legacy === "false,false" && legacyNow() === state.legacy,
    };
    this.engine = new Converger(kernel, options.monitor ?? null, options.onStaleView, () =>
      host.now(),
    );
  }

  /** The kernel's view (the last read-back, unless fresh and it may be stale). */
  private async view(fresh: boolean): Promise<KernelView<IptablesState>> {
    const view = await this.engine.view(fresh);
    // Legacy tables appearing or vanishing (Docker restarted in the other flavour) make any
    // cached view stale, even for an event pass: a procfs read tells.
    if (!view.cached || this.overlay || legacyPresence() === view.state.legacy) return view;
    this.engine.invalidate();
    return this.engine.view(true);
  }

  /** The rules belong where Docker's DOCKER-USER chain lives, in whichever flavour. */
  async fitness(fresh: boolean): Promise<Fitness> {
    if (this.overlay)
      return { fits: true, viewed: false, reason: "overlay namespace: iptables-nft from FORWARD" };
    const flavour = flavourOf((await this.view(fresh)).state);
    return flavour
      ? { fits: true, viewed: true, reason: `Docker's DOCKER-USER chain is in iptables-${flavour}` }
      : {
          fits: false,
          viewed: true,
          reason:
            "no iptables flavour has Docker's DOCKER-USER chain (Docker's nftables firewall, or \"iptables\": false)",
        };
  }

  async sync(ruleset: Ruleset, options: SyncOptions = { fresh: true }): Promise<SyncResult> {
    return this.engine.converge(ruleset, options, await this.view(options.fresh));
  }

  warm(fresh: boolean): void {
    this.engine.warm(fresh);
  }

  async check(ruleset: Ruleset): Promise<CheckResult> {
    const plan = await this.engine.check(ruleset);
    return { location: plan.location, differences: plan.outstanding };
  }

  /** Whether anything of the instance is installed, in any flavour (used after a switch). */
  async holds(fresh: boolean): Promise<boolean> {
    const { state } = await this.view(fresh);
    return planAll(this.instanceId, this.guardName, state, null, true, this.overlay).changed;
  }

  async clear(): Promise<SyncResult> {
    this.engine.invalidate();
    // Two instances clearing at once each see the other's jump and leave the shared entry
    // chains, or trip over each other's commit: look again until nothing of ours, or unused, is
    // left. A pass that changes nothing ends it.
    const removed: string[] = [];
    for (let attempt = 1; ; attempt++) {
      try {
        const pass = await this.engine.converge(null, { fresh: true });
        removed.push(...pass.differences);
        if (!pass.changed) return { ...pass, changed: removed.length > 0, differences: removed };
      } catch (error) {
        if (attempt >= 5) throw error;
      }
      this.engine.invalidate();
      await new Promise((resolve) => setTimeout(resolve, 20 + Math.random() * 80));
    }
  }
}

/**
 * Plans writing `desired` into Docker's flavour and removing this instance from every other
 * flavour (Docker may have moved between them); desired null: remove it everywhere (--clear).
 */
function planAll(
  instanceId: string,
  guardName: string,
  state: IptablesState,
  desired: Ruleset | null,
  ipv6: boolean,
  overlay: boolean,
): IptablesKernelPlan {
  const flavour = desired === null ? null : overlay ? "nft" : flavourOf(state);
  if (desired !== null && flavour === null) throw new DockerChainMissingError();
  const work = FAMILIES.flatMap((family) =>
    FLAVOURS.map((f) => {
      const table = state.tables.get(key(family, f)) ?? emptyFilterTable();
      const rules = f === flavour && (family === 4 || ipv6) ? desired : null;
      const goal = target(instanceId, family, table, rules, overlay);
      return { family, f, plan: planFamily(table, goal) };
    }),
  ).filter((w) => w.plan.script !== null || w.plan.createChains.length > 0);
  const guard = planTable(state.guard, desired === null ? null : guardTable(desired, guardName));
  const revoked = new Map<string, [Family, string]>();
  for (const { family, plan } of work) {
    for (const source of plan.revokedSources) revoked.set(`${family}/${source}`, [family, source]);
  }
  return {
    work,
    guard,
    changed: work.length > 0 || guard.script !== null,
    differences: [...describe(work, false), ...guard.differences],
    outstanding: [...describe(work, true), ...guard.differences],
    revoked: [...revoked.values()],
    location: flavour ? `iptables-${flavour}` : "iptables (all flavours)",
  };
}

function target(
  instanceId: string,
  family: Family,
  current: FilterTable,
  rules: Ruleset | null,
  overlay: boolean,
): FamilyTarget {
  // Docker 20.10 makes no IPv6 DOCKER-USER (nor any chain in an overlay namespace): there we
  // hook FORWARD directly, first.
  const anchor =
    !overlay && (family === 4 || current.chains.has(DOCKER_USER)) ? DOCKER_USER : "FORWARD";
  return {
    family,
    instanceId,
    rules,
    forwardAnchor: anchor,
    staleForwardAnchors: anchor === DOCKER_USER && family === 6 ? ["FORWARD"] : [],
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
