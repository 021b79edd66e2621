// The nftables backend's filter table, `inet trafficjam_<INSTANCE_ID>`: IPv4 and IPv6 together,
// the same decisions as the iptables chains. Pure.
// Base chains only ever drop: an accept in them ends this table's say and overrides nothing of
// Docker's, while a drop anywhere is final. Everything is matched by the network's bridge (in and
// out), never by subnet: link-local, broadcast, multicast and forged sources are members' traffic
// too. The inet family cannot see bridge ports; the allowances name the whitelisted addresses,
// which the bridge guard table (guard.ts) binds to their ports. The structure depends only on
// ALLOW_HOST_TRAFFIC; the bridge and addresses live in sets, so a change is a set change.
import { LOG_LIMITS, type DropKind } from "../../drops.js";
import type { Family, Ruleset } from "../../model.js";
import {
  dynamicSet,
  filterHook,
  rule,
  type ChainBlock,
  type SetBlock,
  type TableModel,
} from "./table.js";

export function tableName(instanceId: string): string {
  return `trafficjam_${instanceId}`;
}

const ADDRESS_TYPE: Record<Family, string> = { 4: "ipv4_addr", 6: "ipv6_addr" };
const MATCH: Record<Family, string> = { 4: "ip", 6: "ip6" };
const FAMILIES: readonly Family[] = [4, 6];

export const allowedSet = (f: Family) => `allowed${f}`;
export const BRIDGES_SET = "bridges";

export const plainSet = (type: string, elements: string[], flags: string[] = []): SetBlock => ({
  declaration: `type ${type}`,
  type,
  flags,
  elements,
});

/** Neighbour discovery must cross the bridge and reach the host, or IPv6 breaks entirely. */
const NEIGHBOUR_DISCOVERY = "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept";
const FILTER_PRIORITY = 0;

/** What a rule that drops does: drop, or in audit mode accept (this table's say ends there). */
export const dropVerdict = (ruleset: Pick<Ruleset, "mode">) =>
  ruleset.mode === "audit" ? "accept" : "drop";

/** The per-source tables of the log rules: sets the rules fill, keyed by source address. */
export const logSourceSet = (f: Family) => `logsrc${f}`;

/**
 * The log statements of a drop of `kind` keyed by `key` into the dynamic set `set`: a limit per
 * key (the set element's own), then one per rule, then the kind's NFLOG group. Pure text.
 */
export function logStatements(set: string, key: string, group: number): string {
  const L = LOG_LIMITS;
  return (
    `add @${set} { ${key} limit rate ${L.perSource}/second burst ${L.perSourceBurst} packets } ` +
    `limit rate ${L.perRule}/second burst ${L.perRuleBurst} packets ` +
    `log group ${group} snaplen ${L.snaplen} queue-threshold ${L.queueThreshold}`
  );
}

/**
 * The rules of a drop of `kind` matching `matches`: with the log, one counted and rate-limited
 * log rule per family (the counter, first, counts every packet they drop), then the drop (accept
 * in audit mode).
 */
function drop(ruleset: Ruleset, matches: string, kind: DropKind): string[] {
  const dropping = `${matches} ${dropVerdict(ruleset)}`;
  if (!ruleset.log) return [dropping];
  const group = ruleset.log.groups[kind];
  return [
    ...FAMILIES.map(
      (f) =>
        `${matches} meta nfproto ipv${f} counter ${logStatements(logSourceSet(f), `${MATCH[f]} saddr`, group)}`,
    ),
    dropping,
  ];
}

export function filterTable(ruleset: Ruleset): TableModel {
  const sets = new Map<string, SetBlock>([
    [BRIDGES_SET, plainSet("ifname", ruleset.bridge === null ? [] : [ruleset.bridge])],
  ]);
  for (const f of FAMILIES)
    sets.set(allowedSet(f), plainSet(ADDRESS_TYPE[f], [...ruleset.families[f].allowedSources]));
  if (ruleset.log)
    for (const f of FAMILIES)
      sets.set(
        logSourceSet(f),
        dynamicSet(ADDRESS_TYPE[f], LOG_LIMITS.sources, LOG_LIMITS.sourceTtlS),
      );

  const within = `iifname @${BRIDGES_SET} oifname @${BRIDGES_SET}`;
  const from = `iifname @${BRIDGES_SET}`;
  const hook = (name: string) => filterHook(name, FILTER_PRIORITY);
  const chains = new Map<string, ChainBlock>([
    [
      "forward",
      {
        hook: hook("forward"),
        rules: [
          `${within} ct state established,related accept`,
          `${within} ${NEIGHBOUR_DISCOVERY}`,
          ...FAMILIES.map((f) => `${within} ${MATCH[f]} saddr @${allowedSet(f)} accept`),
          ...drop(ruleset, within, "member-to-member"),
        ].map(rule),
      },
    ],
  ]);
  if (ruleset.protectHost) {
    chains.set("input", {
      hook: hook("input"),
      rules: [
        `${from} ct state established,related accept`,
        `${from} ${NEIGHBOUR_DISCOVERY}`,
        ...drop(ruleset, from, "member-to-host"),
      ].map(rule),
    });
    // A member → host flow TrafficJam cut must not be picked up again by the host's next
    // segment (see outputRules in ../iptables/layout.ts).
    chains.set("output", {
      hook: hook("output"),
      rules: [
        `oifname @${BRIDGES_SET} ct state new tcp flags & (fin | syn | rst | ack) != syn ${dropVerdict(ruleset)}`,
      ].map(rule),
    });
  }
  return { family: "inet", name: tableName(ruleset.instanceId), sets, chains };
}
