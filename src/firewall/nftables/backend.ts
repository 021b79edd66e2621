// nftables backend: the instance's tables (`inet` filter, `bridge` guard), converged together in
// one `nft -f` transaction and read back, through the shared converger.
import type { Ruleset } from "../../model.js";
import type {
  CheckResult,
  Fitness,
  SelectableBackend,
  SyncOptions,
  SyncResult,
} from "../backend.js";
import { Converger, type ChangeMonitor, type Kernel, type KernelPlan } from "../converger.js";
import { filterTable, tableName } from "./layout.js";
import { guardTable } from "./guard.js";
import { planTables } from "./plan.js";
import type { TableModel } from "./table.js";
import { NftMissingError, applyScript, readTables } from "./tool.js";
import { localHost, type Host } from "../../host/host.js";

const LOCATION = "nftables";
const NEED = "FIREWALL_BACKEND=nftables, or auto on a host without Docker's DOCKER-USER chain";

interface NftState {
  inet: TableModel | null;
  bridge: TableModel | null;
  /** No nft here: none of our tables can be read, written, or have been written by us. */
  toolMissing: boolean;
}

interface NftKernelPlan extends KernelPlan {
  script: string | null;
}

/** Both tables of a ruleset: the filter and its guard, named alike in their own families. */
export function desiredTables(ruleset: Ruleset): { inet: TableModel; bridge: TableModel } {
  return {
    inet: filterTable(ruleset),
    bridge: guardTable(ruleset, tableName(ruleset.instanceId)),
  };
}

export interface NftablesOptions {
  /** Where the tools run (a Swarm worker: the overlay's namespace); default: here. */
  host?: Host;
  monitor?: ChangeMonitor | null;
  /** Replace the whole table even when only set elements differ (benchmark contrast). */
  replaceAlways?: boolean;
  onStaleView?: (error: unknown) => void;
}

export class NftablesBackend implements SelectableBackend {
  readonly kind = "nftables";
  private readonly engine: Converger<NftState, NftKernelPlan>;

  constructor(instanceId: string, options: NftablesOptions = {}) {
    const name = tableName(instanceId);
    const host = options.host ?? localHost;
    const kernel: Kernel<NftState, NftKernelPlan> = {
      async read() {
        try {
          const [inet, bridge] = await readTables(
            host,
            [
              { family: "inet", name },
              { family: "bridge", name },
            ],
            NEED,
          );
          return { inet: inet ?? null, bridge: bridge ?? null, toolMissing: false };
        } catch (error) {
          if (error instanceof NftMissingError)
            return { inet: null, bridge: null, toolMissing: true };
          throw error;
        }
      },
      plan(state, desired) {
        const want = desired ? desiredTables(desired) : { inet: null, bridge: null };
        const plan = planTables(
          [
            { current: state.inet, desired: want.inet },
            { current: state.bridge, desired: want.bridge },
          ],
          options.replaceAlways ?? false,
        );
        return {
          ...plan,
          changed: plan.script !== null,
          outstanding: plan.differences,
          location: LOCATION,
        };
      },
      apply: (plan) => applyScript(host, plan.script ?? "", NEED),
    };
    this.engine = new Converger(kernel, options.monitor ?? null, options.onStaleView, () =>
      host.now(),
    );
  }

  /** nftables works whatever iptables Docker uses: under auto, the fallback. */
  async fitness(): Promise<Fitness> {
    // Decided without looking at the kernel: its view is as old as it was.
    return {
      fits: true,
      viewed: false,
      reason: "nftables works beside any iptables flavour, or none",
    };
  }

  /** Whether the instance has a table (used to clean up after a backend switch). */
  async holds(fresh: boolean): Promise<boolean> {
    const { state } = await this.engine.view(fresh);
    return state.inet !== null || state.bridge !== null;
  }

  async sync(ruleset: Ruleset, options: SyncOptions = { fresh: true }): Promise<SyncResult> {
    return this.engine.converge(ruleset, options);
  }

  warm(fresh: boolean): void {
    this.engine.warm(fresh);
  }

  async check(ruleset: Ruleset): Promise<CheckResult> {
    const plan = await this.engine.check(ruleset);
    return { location: LOCATION, differences: plan.outstanding };
  }

  async clear(): Promise<SyncResult> {
    return this.engine.converge(null, { fresh: true });
  }
}
