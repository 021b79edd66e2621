// Drop counters per kind, read from the kernel: the packets the instance's rules dropped (or, in
// audit mode, would have dropped) since they were written. Which rule counts which kind comes
// from the rules themselves: in iptables, a DROP (RETURN in audit) counts the kind of the NFLOG
// rule just before it; in nftables, a log rule's `counter` counts the kind of its `log group`,
// and the bridge guard's chains `forged`, `member` and `host` count theirs.
import { DROP_KINDS, kindOfGroup, zeroCounts, type DropKind, type LogGroups } from "../drops.js";
import type { Family } from "../model.js";
import type { Host } from "../host/host.js";
import { runChecked } from "../host/host.js";
import { guardTableName } from "../firewall/iptables/backend.js";
import { instanceChains } from "../firewall/iptables/layout.js";
import { splitArgs } from "../firewall/iptables/save-format.js";
import { GUARD_KIND_CHAINS } from "../firewall/nftables/guard.js";
import { tableName } from "../firewall/nftables/layout.js";
import { listingSchema, validated } from "../firewall/nftables/table.js";

export type DropCounts = Record<DropKind, number>;

export function addCounts(a: DropCounts, b: DropCounts): DropCounts {
  return Object.fromEntries(DROP_KINDS.map((k) => [k, a[k] + b[k]])) as DropCounts;
}

const value = (args: readonly string[], option: string) => {
  const i = args.indexOf(option);
  return i >= 0 ? args[i + 1] : undefined;
};

/**
 * `iptables-save -c` output → packets dropped per kind by the instance's chains: each rule that
 * follows one of our NFLOG rules (in the same chain) counts that rule's kind.
 */
export function countsFromSave(dump: string, instanceId: string, groups: LogGroups): DropCounts {
  const chains = instanceChains(instanceId);
  const ours = new Set([chains.forward, chains.input]);
  const counts = zeroCounts();
  let pending: { chain: string; kind: DropKind } | null = null;
  let inFilter = false;
  for (const raw of dump.split("\n")) {
    const line = raw.trim();
    if (line.startsWith("*")) inFilter = line === "*filter";
    const match = /^\[(\d+):\d+\] (-A (\S+) .*)$/.exec(line);
    if (!inFilter || !match) continue;
    const [, packets, rule, chain] = match;
    if (!ours.has(chain!)) continue;
    const args = splitArgs(rule!);
    if (value(args, "-j") === "NFLOG") {
      const kind = kindOfGroup(groups, Number(value(args, "--nflog-group")));
      pending = kind ? { chain: chain!, kind } : null;
      continue;
    }
    if (pending && pending.chain === chain) counts[pending.kind] += Number(packets);
    pending = null;
  }
  return counts;
}

const KIND_OF_CHAIN = new Map<string, DropKind>(
  (Object.entries(GUARD_KIND_CHAINS) as Array<[DropKind, string]>).map(([kind, chain]) => [
    chain,
    kind,
  ]),
);

/**
 * `nft -j list table` output of one of our tables → packets counted per kind: a rule with a
 * `counter` and a `log group` counts the group's kind; in the guard, a counter in a kind's chain
 * counts that kind.
 */
export function countsFromNftJson(json: string, groups: LogGroups, guard: boolean): DropCounts {
  const listing = validated(listingSchema, JSON.parse(json), "counters");
  const counts = zeroCounts();
  for (const entry of listing.nftables) {
    const rule = entry.rule as { chain?: unknown; expr?: unknown } | undefined;
    if (!rule || !Array.isArray(rule.expr)) continue;
    let packets: number | null = null;
    let kind: DropKind | null = null;
    for (const statement of rule.expr as Array<Record<string, unknown>>) {
      const counter = statement?.counter as { packets?: unknown } | undefined;
      if (counter && typeof counter.packets === "number") packets = counter.packets;
      const log = statement?.log as { group?: unknown } | undefined;
      if (log && typeof log.group === "number") kind = kindOfGroup(groups, log.group);
    }
    if (kind === null && guard && typeof rule.chain === "string")
      kind = KIND_OF_CHAIN.get(rule.chain) ?? null;
    if (packets !== null && kind !== null) counts[kind] += packets;
  }
  return counts;
}

async function nftTable(host: Host, family: string, name: string): Promise<string | null> {
  const result = await host.run("nft", ["-j", "list", "table", family, name]);
  if (result.code === 0) return result.stdout;
  if (/No such file|does not exist/i.test(result.stderr)) return null;
  throw new Error(`nft -j list table ${family} ${name} failed: ${result.stderr.trim()}`);
}

/**
 * The instance's drop counters where its rules are (`location`, as the state file says:
 * iptables-nft, iptables-legacy or nftables), read now. null: the rules do not log (no groups).
 */
export async function readDropCounts(
  host: Host,
  instanceId: string,
  location: string,
  groups: LogGroups,
): Promise<DropCounts> {
  let counts = zeroCounts();
  const flavour = /^iptables-(nft|legacy)$/.exec(location)?.[1];
  if (flavour) {
    for (const family of [4, 6] as Family[]) {
      const tool = `${family === 4 ? "iptables" : "ip6tables"}-${flavour}-save`;
      const dump = await runChecked(host, tool, ["-c", "-t", "filter"]).catch((error: unknown) => {
        if (family === 6) return ""; // no IPv6 in this kernel: nothing counted there
        throw error;
      });
      counts = addCounts(counts, countsFromSave(dump, instanceId, groups));
    }
  } else {
    const inet = await nftTable(host, "inet", tableName(instanceId));
    if (inet) counts = addCounts(counts, countsFromNftJson(inet, groups, false));
  }
  const guardName = flavour ? guardTableName(instanceId) : tableName(instanceId);
  const guard = await nftTable(host, "bridge", guardName);
  if (guard) counts = addCounts(counts, countsFromNftJson(guard, groups, true));
  return counts;
}
