// Current filter table + desired instance rules → the commands that converge them. Pure.
// The same comparison, run on the table read back after applying, is the verification. The
// instance chains are compared by their rules' hashes (see layout.ts), whatever spelling the
// iptables version prints; the jumps, simple enough to be spelt alike by all, as text.
import type { Family, Ruleset } from "../../model.js";
import { normalizeRule, type FilterTable } from "./save-format.js";
import {
  allowedSourcesIn,
  ENTRY_FORWARD,
  ENTRY_INPUT,
  ENTRY_OUTPUT,
  anchorJump,
  forwardRules,
  inputRules,
  instanceChains,
  outputRules,
  instanceJump,
  ruleIdentity,
  type InstanceChains,
} from "./layout.js";

export interface IptablesPlan {
  /** Entry chains to create (`-N`) before the transaction; never declared in it, see below. */
  createChains: string[];
  /** `iptables-restore --noflush` input, or null when the kernel already matches. */
  script: string | null;
  /** Human-readable differences found, for logs ("jump from DOCKER-USER missing", …). */
  differences: string[];
  /** Sources the kernel allowed and the target no longer does: their flows must be dropped. */
  revokedSources: string[];
}

export interface FamilyTarget {
  family: Family;
  instanceId: string;
  /** null: this instance must have nothing in this family (cleared, or no IPv6 on the host). */
  rules: Ruleset | null;
  /** Chain that jumps into TRAFFICJAM: DOCKER-USER, or FORWARD where there is none. */
  forwardAnchor: string;
  /** Chains that must not jump into TRAFFICJAM (a former anchor). */
  staleForwardAnchors: string[];
}

interface Part {
  entry: string;
  anchor: string;
  staleAnchors: string[];
  chain: string;
  lines: string[] | null;
}

function rulesOf(table: FilterTable, chain: string): string[] {
  return table.chains.get(chain) ?? [];
}

/**
 * Whether an instance chain holds the desired rules, in order, each one ours: a rule without
 * our comment, a missing, reordered or duplicated one is a difference; a respelt one is not.
 */
function sameRules(
  current: readonly string[],
  desired: readonly string[],
  chains: InstanceChains,
): boolean {
  const identity = (line: string) => ruleIdentity(line, chains);
  return (
    current.length === desired.length &&
    current.every((line, i) => {
      const have = identity(line);
      return have !== null && have === identity(desired[i] ?? "");
    })
  );
}

/**
 * Plans one family. Entry chains are shared by every instance, so they are created with `-N`
 * outside the transaction: declaring them in it would flush the other instances' jumps.
 */
export function planFamily(table: FilterTable, target: FamilyTarget): IptablesPlan {
  const chains = instanceChains(target.instanceId);
  // Both families whenever there is a bridge: an IPv4-only network carries IPv6 link-local.
  const present = target.rules !== null && target.rules.bridge !== null;
  const parts: Part[] = [
    {
      entry: ENTRY_FORWARD,
      anchor: target.forwardAnchor,
      staleAnchors: target.staleForwardAnchors,
      chain: chains.forward,
      lines: present ? forwardRules(chains, target.family, target.rules!).map(normalizeRule) : null,
    },
    {
      entry: ENTRY_INPUT,
      anchor: "INPUT",
      staleAnchors: [],
      chain: chains.input,
      lines:
        present && target.rules!.protectHost
          ? inputRules(chains, target.family, target.rules!).map(normalizeRule)
          : null,
    },
    {
      entry: ENTRY_OUTPUT,
      anchor: "OUTPUT",
      staleAnchors: [],
      chain: chains.output,
      lines:
        present && target.rules!.protectHost
          ? outputRules(chains, target.family, target.rules!).map(normalizeRule)
          : null,
    },
  ];

  const createChains: string[] = [];
  const declare: string[] = [];
  const fill: string[] = [];
  const unlink: string[] = [];
  const link: string[] = [];
  const remove: string[] = [];
  const differences: string[] = [];
  const del = (line: string) => unlink.push(line.replace(/^-A /, "-D "));

  for (const part of parts) {
    const jump = normalizeRule(instanceJump(part.entry, part.chain, chains));
    const entryRules = rulesOf(table, part.entry);
    const ourJumps = entryRules.filter((line) => line === jump).length;
    const chainExists = table.chains.has(part.chain);

    if (part.lines) {
      const holdsDesired = chainExists && sameRules(rulesOf(table, part.chain), part.lines, chains);
      if (!chainExists) differences.push(`chain ${part.chain} missing`);
      else if (!holdsDesired)
        differences.push(`chain ${part.chain} differs from the desired rules`);
      if (!holdsDesired) {
        declare.push(`:${part.chain} - [0:0]`);
        fill.push(...part.lines);
      }
      if (!table.chains.has(part.entry)) {
        differences.push(`chain ${part.entry} missing`);
        createChains.push(part.entry);
      }
      if (ourJumps === 0) {
        differences.push(`jump ${part.entry} → ${part.chain} missing`);
        link.push(jump);
      }
      if (ourJumps > 1) differences.push(`jump ${part.entry} → ${part.chain} duplicated`);
      for (let extra = 1; extra < ourJumps; extra++) del(jump);

      // Exactly one jump, first. Two instances starting together may both insert it; deleting
      // by spec removes the first match, so all copies go and one comes back at the top, in the
      // same transaction.
      const anchorLine = anchorJump(part.anchor, part.entry);
      const anchorRules = rulesOf(table, part.anchor);
      const copies = anchorRules.filter((line) => line === anchorLine).length;
      if (anchorRules[0] !== anchorLine || copies > 1) {
        differences.push(
          copies === 0
            ? `jump ${part.anchor} → ${part.entry} missing`
            : anchorRules[0] !== anchorLine
              ? `jump ${part.anchor} → ${part.entry} is not first`
              : `jump ${part.anchor} → ${part.entry} duplicated`,
        );
        for (let i = 0; i < copies; i++) del(anchorLine);
        link.push(anchorLine.replace(/^-A (\S+)/, "-I $1 1"));
      }
      for (const stale of part.staleAnchors) {
        const staleLine = anchorJump(stale, part.entry);
        const count = rulesOf(table, stale).filter((line) => line === staleLine).length;
        if (count > 0) differences.push(`stale jump ${stale} → ${part.entry}`);
        for (let i = 0; i < count; i++) del(staleLine);
      }
    } else {
      // This part must be gone: our jump, our chain, and the entry chain once nobody uses it.
      if (ourJumps > 0) differences.push(`jump ${part.entry} → ${part.chain} present`);
      for (let i = 0; i < ourJumps; i++) del(jump);
      if (chainExists) {
        differences.push(`chain ${part.chain} present`);
        remove.push(`-F ${part.chain}`, `-X ${part.chain}`);
      }
      const othersLeft = entryRules.length - ourJumps;
      if (table.chains.has(part.entry) && othersLeft === 0) {
        for (const anchor of [part.anchor, ...part.staleAnchors]) {
          const anchorLine = anchorJump(anchor, part.entry);
          for (const line of rulesOf(table, anchor)) if (line === anchorLine) del(line);
        }
        remove.push(`-X ${part.entry}`);
        differences.push(`unused chain ${part.entry} present`);
      }
    }
  }

  const commands = [...declare, ...fill, ...unlink, ...link, ...remove];
  const stillAllowed = new Set(present ? target.rules!.families[target.family].allowedSources : []);
  return {
    createChains,
    script: commands.length === 0 ? null : ["*filter", ...commands, "COMMIT", ""].join("\n"),
    differences,
    revokedSources: allowedSourcesIn(rulesOf(table, chains.forward), chains).filter(
      (source) => !stillAllowed.has(source),
    ),
  };
}
