// `trafficjam plan`: the rules this configuration would install now, and how the kernel differs
// from them, changing nothing. Exit 0: in sync; 3: a change is pending (what the daemon's next
// pass would apply); 2: configuration error; 1: anything else (Docker unreachable, a tool).
import type { Config } from "../config.js";
import { localHost, type Host } from "../host/host.js";
import { createBackend } from "../firewall/index.js";
import { renderTable } from "../firewall/nftables/table.js";
import type { Family } from "../model.js";
import { desiredNow, render, type Rendered } from "./desired.js";

export const PLAN_PENDING = 3;

export function renderRules(rendered: Rendered): string {
  if (rendered.kind === "nftables")
    return `${renderTable(rendered.inet)}\n${renderTable(rendered.guard)}`;
  const out: string[] = [];
  for (const family of [4, 6] as Family[]) {
    const chains = rendered.chains[family];
    out.push(`# ${family === 4 ? "iptables" : "ip6tables"}: the instance's chains`);
    for (const hook of ["forward", "input", "output"] as const) out.push(...chains[hook].lines);
    const entered = [
      ["DOCKER-USER (or FORWARD)", "TRAFFICJAM", chains.forward],
      ["INPUT", "TRAFFICJAM_INPUT", chains.input],
      ["OUTPUT", "TRAFFICJAM_OUTPUT", chains.output],
    ] as const;
    for (const [anchor, entry, chain] of entered)
      if (chain.lines.length > 0) out.push(`# jumps: ${anchor} → ${entry} → ${chain.name}`);
    out.push("");
  }
  out.push("# the bridge guard", renderTable(rendered.guard));
  return out.join("\n");
}

export interface PlanResult {
  location: string;
  reason: string;
  rules: string;
  differences: string[];
  unbound: Map<string, string>;
}

export async function plan(config: Config, host: Host = localHost): Promise<PlanResult> {
  const backend = createBackend(config.firewallBackend, config.instanceId, { host });
  const [desired, choice] = await Promise.all([desiredNow(config, host), backend.choose(true)]);
  const check = await backend.check(desired.ruleset);
  return {
    location: check.location,
    reason: choice.reason,
    rules: desired.ruleset.bridge === null ? "" : renderRules(render(choice.kind, desired.ruleset)),
    differences: check.differences,
    unbound: desired.unbound,
  };
}

export async function runPlan(config: Config): Promise<number> {
  const result = await plan(config);
  const w = (text: string) => process.stdout.write(text);
  w(
    `# TrafficJam plan: INSTANCE_ID=${config.instanceId}, NETWORK=${config.network}, MODE=${config.mode}\n` +
      `# backend: ${result.location} (${result.reason})\n`,
  );
  for (const [member, reason] of result.unbound)
    w(`# ${member}: bridge port not found, so not bound (${reason})\n`);
  w(
    result.rules === ""
      ? "# nothing to install: the network does not exist, or has no Linux bridge here\n"
      : `# the rules this configuration installs:\n${result.rules}`,
  );
  if (result.differences.length === 0) {
    w("# in sync: the kernel holds exactly these rules\n");
    return 0;
  }
  w(`# pending: the kernel differs (the daemon's next pass applies this):\n`);
  for (const difference of result.differences) w(`${difference}\n`);
  return PLAN_PENDING;
}
