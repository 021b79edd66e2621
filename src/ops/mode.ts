// Which MODE the rules in the kernel were written in, read from the instance's bridge guard table
// (both backends keep one): its `forged` chain ends in `counter drop` (enforce) or `counter
// accept` (audit). So a daemon started in another mode than the rules in force can say that it
// switched, and `status` and `plan` can say what the kernel holds.
import type { Mode } from "../drops.js";
import type { Host } from "../host/host.js";
import { guardTableName } from "../firewall/iptables/backend.js";
import { GUARD_KIND_CHAINS } from "../firewall/nftables/guard.js";
import { tableName } from "../firewall/nftables/layout.js";
import { ruleId, type TableModel } from "../firewall/nftables/table.js";
import { NftMissingError, readTables } from "../firewall/nftables/tool.js";

const ENFORCING = ruleId("counter drop");
const AUDITING = ruleId("counter accept");

/** The mode a guard table was written in; null: no such table, or not one of ours. */
export function modeOfGuard(table: TableModel | null): Mode | null {
  if (!table) return null;
  const forged = table.chains.get(GUARD_KIND_CHAINS.forged);
  // Versions before the log (and MODE) had no such chain, and only enforced.
  if (!forged) return "enforce";
  const last = forged.rules.at(-1)?.id;
  return last === AUDITING ? "audit" : last === ENFORCING ? "enforce" : null;
}

/** The mode of the instance's rules in force here (either backend's guard), or null: none. */
export async function modeInKernel(host: Host, instanceId: string): Promise<Mode | null> {
  try {
    const tables = await readTables(
      host,
      [
        { family: "bridge", name: tableName(instanceId) },
        { family: "bridge", name: guardTableName(instanceId) },
      ],
      "reading the mode of the rules in force",
    );
    for (const table of tables) {
      const mode = modeOfGuard(table);
      if (mode) return mode;
    }
    return null;
  } catch (error) {
    if (error instanceof NftMissingError) return null;
    throw error;
  }
}
