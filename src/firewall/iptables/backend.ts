// iptables backend: reads both flavours, writes in the one where Docker's DOCKER-USER lives,
// applies each family in one iptables-restore --noflush transaction, then reads back.
import type { Family, FamilyRuleset, Ruleset } from "../../model.js";
import { VerificationError, type FirewallBackend, type SyncResult } from "../backend.js";
import { run, runChecked } from "../../util/exec.js";
import { DOCKER_USER } from "./layout.js";
import { planFamily, type FamilyTarget, type IptablesPlan } from "./plan.js";
import { parseFilterTable, type FilterTable } from "./save-format.js";

export type Flavour = "nft" | "legacy";
const FLAVOURS: readonly Flavour[] = ["nft", "legacy"];
const FAMILIES: readonly Family[] = [4, 6];

function tool(family: Family, flavour: Flavour, suffix: "" | "-save" | "-restore"): string {
  return `${family === 4 ? "iptables" : "ip6tables"}-${flavour}${suffix}`;
}

function location(family: Family, flavour: Flavour): string {
  return tool(family, flavour, "");
}

export async function readFilterTable(family: Family, flavour: Flavour): Promise<FilterTable> {
  // No `-t filter`: with legacy, naming a table loads it, and we only want to look.
  return parseFilterTable(await runChecked(tool(family, flavour, "-save"), []));
}

export class DockerChainMissingError extends Error {
  constructor() {
    super(
      `Docker's ${DOCKER_USER} chain exists in neither iptables-nft nor iptables-legacy: ` +
        `is dockerd running, with its iptables integration on?`,
    );
    this.name = "DockerChainMissingError";
  }
}

/** Docker's rules decide the flavour: ours must be evaluated by the same netfilter hooks. */
export function detectFlavour(ipv4: Record<Flavour, FilterTable>): Flavour {
  const withChain = FLAVOURS.filter((f) => ipv4[f].chains.has(DOCKER_USER));
  if (withChain.length === 0) throw new DockerChainMissingError();
  const jumped = withChain.filter((f) =>
    (ipv4[f].chains.get("FORWARD") ?? []).includes(`-A FORWARD -j ${DOCKER_USER}`),
  );
  return (jumped[0] ?? withChain[0])!;
}

async function applyPlan(family: Family, flavour: Flavour, plan: IptablesPlan): Promise<void> {
  for (const chain of plan.createChains) {
    const result = await run(tool(family, flavour, ""), ["-w", "-t", "filter", "-N", chain]);
    // Another instance may have created it a moment ago: that is fine.
    if (result.code !== 0 && !/exists/i.test(result.stderr)) {
      throw new Error(`${location(family, flavour)} -N ${chain}: ${result.stderr.trim()}`);
    }
  }
  if (plan.script) {
    await runChecked(tool(family, flavour, "-restore"), ["--noflush", "-w"], plan.script);
  }
}

export class IptablesBackend implements FirewallBackend {
  /** Flavour of the last successful sync, for logs that say when it changes. */
  lastFlavour: Flavour | null = null;

  sync(ruleset: Ruleset): Promise<SyncResult> {
    return this.converge(ruleset.instanceId, (family) => ruleset.families[family]);
  }

  clear(instanceId: string): Promise<SyncResult> {
    return this.converge(instanceId, () => null, null);
  }

  /**
   * `desired(family)` is written into `flavour`; every other flavour must hold nothing of this
   * instance (Docker may have moved between flavours). `flavour` undefined: detect it now.
   */
  private async converge(
    instanceId: string,
    desired: (family: Family) => FamilyRuleset | null,
    flavour?: Flavour | null,
  ): Promise<SyncResult> {
    const tables = new Map<string, FilterTable>();
    const key = (family: Family, f: Flavour) => `${family}/${f}`;
    await Promise.all(
      FAMILIES.flatMap((family) =>
        FLAVOURS.map(async (f) => tables.set(key(family, f), await readFilterTable(family, f))),
      ),
    );
    const table = (family: Family, f: Flavour) => tables.get(key(family, f))!;
    const chosen =
      flavour === undefined ? detectFlavour({ nft: table(4, "nft"), legacy: table(4, "legacy") }) : flavour;
    this.lastFlavour = chosen;

    const targetFor = (family: Family, f: Flavour): FamilyTarget => {
      // Docker 20.10 makes no IPv6 DOCKER-USER: there we hook FORWARD directly, first.
      const hasDockerUser = table(family, f).chains.has(DOCKER_USER);
      const anchor = family === 4 || hasDockerUser ? DOCKER_USER : "FORWARD";
      return {
        family,
        instanceId,
        rules: f === chosen ? desired(family) : null,
        forwardAnchor: anchor,
        staleForwardAnchors: family === 6 && anchor === DOCKER_USER ? ["FORWARD"] : [],
      };
    };

    const differences: string[] = [];
    const changed: Array<[Family, Flavour]> = [];
    for (const family of FAMILIES) {
      for (const f of FLAVOURS) {
        const plan = planFamily(table(family, f), targetFor(family, f));
        if (plan.script === null && plan.createChains.length === 0) continue;
        differences.push(...plan.differences.map((d) => `${location(family, f)}: ${d}`));
        await applyPlan(family, f, plan);
        changed.push([family, f]);
      }
    }

    // Read back what we changed: the kernel, not our intent, is the truth.
    for (const [family, f] of changed) {
      const after = planFamily(await readFilterTable(family, f), targetFor(family, f));
      if (after.differences.length > 0) throw new VerificationError(location(family, f), after.differences);
    }
    return {
      changed: changed.length > 0,
      differences,
      location: chosen ? `iptables-${chosen}` : "iptables (all flavours)",
    };
  }
}
