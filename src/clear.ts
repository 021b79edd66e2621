// `trafficjam --clear`: removes every rule, chain, jump and table of this INSTANCE_ID from every
// backend, and nothing else. Loads the firewall code, not the daemon's.
import { createBackend } from "./firewall/index.js";
import type { Log } from "./log.js";

export async function runClear(instanceId: string, log: Log): Promise<number> {
  const result = await createBackend("auto", instanceId).clear();
  log.info(
    "rules.cleared",
    result.changed ? "rules of this instance removed" : "nothing of this instance was installed",
    { removed: result.differences },
  );
  return 0;
}
