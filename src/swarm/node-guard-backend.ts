// The node guard's tables (node-guard.ts) in the node's own namespace, through the shared
// converger like every other table: read back, planned, applied in one `nft -f`, read back again.
import type { Host } from "../host/host.js";
import {
  Converger,
  type ChangeMonitor,
  type Kernel,
  type KernelPlan,
} from "../firewall/converger.js";
import type { SyncResult } from "../firewall/backend.js";
import { planTables } from "../firewall/nftables/plan.js";
import type { TableModel } from "../firewall/nftables/table.js";
import { applyScript, readTables } from "../firewall/nftables/tool.js";
import { nodeGuardName, nodeGuardTables, type NodeGuard } from "./node-guard.js";

const NEED = "a Swarm worker keeps its node's guard in nftables tables";

interface State {
  inet: TableModel | null;
  bridge: TableModel | null;
}

interface Plan extends KernelPlan {
  script: string | null;
}

export class NodeGuardBackend {
  private readonly converger: Converger<State, Plan, NodeGuard>;

  constructor(
    instanceId: string,
    host: Host,
    /** Tells whether netfilter changed since a moment (nft monitor of the node's namespace). */
    monitor: ChangeMonitor | null = null,
  ) {
    const name = nodeGuardName(instanceId);
    const kernel: Kernel<State, Plan, NodeGuard> = {
      async read() {
        const [inet, bridge] = await readTables(
          host,
          [
            { family: "inet", name },
            { family: "bridge", name },
          ],
          NEED,
        );
        return { inet: inet ?? null, bridge: bridge ?? null };
      },
      plan: (state, guard) => {
        const tables = guard === null ? null : nodeGuardTables(guard);
        const plan = planTables([
          { current: state.inet, desired: tables?.inet ?? null },
          { current: state.bridge, desired: tables?.bridge ?? null },
        ]);
        return {
          ...plan,
          revoked: [],
          changed: plan.script !== null,
          outstanding: plan.differences,
          location: "the node's namespace",
        };
      },
      apply: (plan) => applyScript(host, plan.script ?? "", NEED),
    };
    this.converger = new Converger(kernel, monitor, undefined, () => host.now());
  }

  /** Puts `guard` in force (null: no table), reading the kernel first when `fresh`. */
  sync(guard: NodeGuard | null, fresh: boolean): Promise<SyncResult> {
    return this.converger.converge(guard, { fresh });
  }

  /** What differs in the kernel from `guard`, read now, changing nothing. */
  async check(guard: NodeGuard | null): Promise<string[]> {
    return (await this.converger.check(guard)).outstanding;
  }

  clear(): Promise<SyncResult> {
    return this.sync(null, true);
  }
}
