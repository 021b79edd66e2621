// What this configuration would install now, for `plan` and `explain`: Docker is asked about the
// network once (the daemon's own observation: members, whitelist, bridge ports, the gateway), the
// policy computes the ruleset as the daemon does (MODE, the log), and the backend FIREWALL_BACKEND
// chooses renders it. Reads; changes nothing.
import type { Config } from "../config.js";
import { createEngineClient } from "../observe/engine-api.js";
import { Observer } from "../observe/index.js";
import { computeRuleset } from "../policy.js";
import type { Family, NetworkSnapshot, Ruleset } from "../model.js";
import type { Host } from "../host/host.js";
import { createBackend, type BackendChoice } from "../firewall/index.js";
import { guardTableName } from "../firewall/iptables/backend.js";
import {
  forwardRules,
  inputRules,
  instanceChains,
  outputRules,
} from "../firewall/iptables/layout.js";
import { desiredTables } from "../firewall/nftables/backend.js";
import { guardTable } from "../firewall/nftables/guard.js";
import type { TableModel } from "../firewall/nftables/table.js";

export interface Desired {
  snapshot: NetworkSnapshot | null;
  ruleset: Ruleset;
  /** Members whose bridge port could not be found, and why. */
  unbound: Map<string, string>;
}

/** Observes the network once, as the daemon's first pass does, and computes its ruleset. */
export async function desiredNow(config: Config, host: Host): Promise<Desired> {
  const client = createEngineClient(process.env);
  const unbound = new Map<string, string>();
  try {
    await client.ping();
    const observer = new Observer(client, {
      host,
      network: config.network,
      whitelist: config.whitelistFilter,
      onPortUnknown: (member, reason) => unbound.set(member.name, reason),
    });
    const snapshot = await observer.observe(true);
    const ruleset = computeRuleset(snapshot, {
      instanceId: config.instanceId,
      allowHostTraffic: config.allowHostTraffic,
      mode: config.mode,
      log: true,
    });
    return { snapshot, ruleset, unbound };
  } finally {
    client.close();
  }
}

/** The rules of one backend as rendered: iptables chains per family, or nft tables. */
export type Rendered =
  | {
      kind: "iptables";
      /** Per family, per hook: the instance chain's name and its rules (`-A …` lines). */
      chains: Record<
        Family,
        Record<"forward" | "input" | "output", { name: string; lines: string[] }>
      >;
      guard: TableModel;
    }
  | { kind: "nftables"; inet: TableModel; guard: TableModel };

export function render(kind: BackendChoice["kind"], ruleset: Ruleset): Rendered {
  if (kind === "nftables") {
    const { inet, bridge } = desiredTables(ruleset);
    return { kind, inet, guard: bridge };
  }
  const names = instanceChains(ruleset.instanceId);
  const present = ruleset.bridge !== null;
  const family = (f: Family) => ({
    forward: { name: names.forward, lines: present ? forwardRules(names, f, ruleset) : [] },
    input: {
      name: names.input,
      lines: present && ruleset.protectHost ? inputRules(names, f, ruleset) : [],
    },
    output: {
      name: names.output,
      lines: present && ruleset.protectHost ? outputRules(names, f, ruleset) : [],
    },
  });
  return {
    kind,
    chains: { 4: family(4), 6: family(6) },
    guard: guardTable(ruleset, guardTableName(ruleset.instanceId)),
  };
}

/** Where the rules go here: FIREWALL_BACKEND, or under auto what the kernel says. */
export async function chooseBackend(config: Config, host: Host): Promise<BackendChoice> {
  return createBackend(config.firewallBackend, config.instanceId, { host }).choose(true);
}
