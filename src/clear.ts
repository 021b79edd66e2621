// `trafficjam --clear`: removes every rule, chain, jump and table of this INSTANCE_ID from every
// backend, and its boot guard (table and saved ruleset), and nothing else. Loads the firewall
// code, not the daemon's.
import { createBackend } from "./firewall/index.js";
import type { Log } from "./log.js";
import { bootGuardDir, clearBootGuard } from "./ops/boot-guard.js";

export async function runClear(instanceId: string, log: Log): Promise<number> {
  const guardDir = bootGuardDir(process.env);
  const result = await createBackend("auto", instanceId).clear();
  const guard = await clearBootGuard(instanceId, guardDir);
  log.info(
    "rules.cleared",
    result.changed || guard.length > 0
      ? "rules of this instance removed"
      : "nothing of this instance was installed",
    { removed: [...result.differences, ...guard] },
  );
  return 0;
}
