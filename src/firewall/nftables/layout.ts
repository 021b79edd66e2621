// The nftables layout: two tables per instance, both named trafficjam_<INSTANCE_ID>.
// - `inet` (the filter): IPv4 and IPv6 together, the same decisions as the iptables chains.
// - `bridge` (the guard): drops packets carrying a whitelisted address that enter through any
//   bridge port but the container's own. Only the bridge family sees the port (an inet chain sees
//   the bridge device), and its prerouting hook runs before conntrack and NAT, so a forged packet
//   is gone before it can match a tracked flow or reach a published port.
// Base chains only ever drop: an accept in them ends this table's say and overrides nothing of
// Docker's, while a drop anywhere is final. The structure depends only on ALLOW_HOST_TRAFFIC;
// subnets, addresses and ports live in sets, so a whitelist change is a set change.
import type { Family, Ruleset } from "../../model.js";

export type TableFamily = "inet" | "bridge";
export const TABLE_FAMILIES: readonly TableFamily[] = ["inet", "bridge"];

export function tableName(instanceId: string): string {
  return `trafficjam_${instanceId}`;
}

const ADDRESS_TYPE: Record<Family, string> = { 4: "ipv4_addr", 6: "ipv6_addr" };
const MATCH: Record<Family, string> = { 4: "ip", 6: "ip6" };

/** A set as `nft list` prints it: its declaration lines and its elements. */
export interface SetBlock {
  declaration: string[];
  elements: string[];
}

/** A chain as `nft list` prints it: the base-chain line, then one line per rule. */
export interface ChainBlock {
  hook: string;
  rules: string[];
}

/** A table as plain data: what the renderer writes and what the listing parser reads. */
export interface TableModel {
  family: TableFamily;
  name: string;
  sets: Map<string, SetBlock>;
  chains: Map<string, ChainBlock>;
}

/** The instance's tables, by family; null where it has none. */
export type Tables = Record<TableFamily, TableModel | null>;

export const subnetsSet = (f: Family) => `subnets${f}`;
export const allowedSet = (f: Family) => `allowed${f}`;
export const guardedSet = (f: Family) => `guarded${f}`;
export const boundSet = (f: Family) => `bound${f}`;
const FAMILIES: readonly Family[] = [4, 6];

/** Both tables of a ruleset. */
export function desiredTables(ruleset: Ruleset): Tables {
  return { inet: filterTable(ruleset), bridge: guardTable(ruleset) };
}

/** The filter table. Rules of a family whose sets are empty simply never match. */
export function filterTable(ruleset: Ruleset): TableModel {
  const sets = new Map<string, SetBlock>();
  for (const f of FAMILIES) {
    const family = ruleset.families[f];
    sets.set(subnetsSet(f), {
      declaration: [`type ${ADDRESS_TYPE[f]}`, "flags interval"],
      elements: [...family.subnets],
    });
    sets.set(allowedSet(f), {
      declaration: [`type ${ADDRESS_TYPE[f]}`],
      elements: family.subnets.length > 0 ? [...family.allowedSources] : [],
    });
  }
  const within = (f: Family) =>
    `${MATCH[f]} saddr @${subnetsSet(f)} ${MATCH[f]} daddr @${subnetsSet(f)}`;
  const fromSubnets = (f: Family) => `${MATCH[f]} saddr @${subnetsSet(f)}`;
  // Neighbour discovery must cross the bridge and reach the host, or IPv6 breaks entirely.
  const neighbourDiscovery = "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept";

  const forward = [
    ...FAMILIES.map((f) => `${within(f)} ct state established,related accept`),
    `${within(6)} ${neighbourDiscovery}`,
    ...FAMILIES.map(
      (f) => `${MATCH[f]} saddr @${allowedSet(f)} ${MATCH[f]} daddr @${subnetsSet(f)} accept`,
    ),
    ...FAMILIES.map((f) => `${within(f)} drop`),
  ];
  const chains = new Map<string, ChainBlock>([
    [
      "forward",
      { hook: "type filter hook forward priority filter; policy accept;", rules: forward },
    ],
  ]);
  const protectHost = FAMILIES.some((f) => ruleset.families[f].protectHost);
  if (protectHost) {
    chains.set("input", {
      hook: "type filter hook input priority filter; policy accept;",
      rules: [
        ...FAMILIES.map((f) => `${fromSubnets(f)} ct state established,related accept`),
        `${fromSubnets(6)} ${neighbourDiscovery}`,
        ...FAMILIES.map((f) => `${fromSubnets(f)} drop`),
      ],
    });
  }
  return { family: "inet", name: tableName(ruleset.instanceId), sets, chains };
}

/**
 * The guard table: `guarded` holds the addresses bound to a port, `bound` the address . port
 * pairs. A packet from a guarded address whose pair is not bound came through the wrong port.
 * ARP is not IP, and neighbour discovery from the proxy's own port matches its pair: both pass.
 */
export function guardTable(ruleset: Ruleset): TableModel {
  const sets = new Map<string, SetBlock>();
  for (const f of FAMILIES) {
    const bindings = ruleset.families[f].portBindings; // empty without subnets (policy)
    sets.set(guardedSet(f), {
      declaration: [`type ${ADDRESS_TYPE[f]}`],
      elements: [...new Set(bindings.map((b) => b.address))],
    });
    sets.set(boundSet(f), {
      declaration: [`type ${ADDRESS_TYPE[f]} . ifname`],
      elements: bindings.map((b) => `${b.address} . "${b.port}"`),
    });
  }
  const prerouting = FAMILIES.map(
    (f) =>
      `${MATCH[f]} saddr @${guardedSet(f)} ${MATCH[f]} saddr . iifname != @${boundSet(f)} drop`,
  );
  const chains = new Map<string, ChainBlock>([
    [
      "prerouting",
      { hook: "type filter hook prerouting priority filter; policy accept;", rules: prerouting },
    ],
  ]);
  return { family: "bridge", name: tableName(ruleset.instanceId), sets, chains };
}

/** The table in `nft -f` syntax, laid out as `nft list table` prints it. */
export function renderTable(table: TableModel): string {
  const blocks: string[] = [];
  for (const [name, set] of table.sets) {
    const lines = set.declaration.map((l) => `\t\t${l}`);
    if (set.elements.length > 0) lines.push(`\t\telements = { ${set.elements.join(", ")} }`);
    blocks.push(`\tset ${name} {\n${lines.join("\n")}\n\t}`);
  }
  for (const [name, chain] of table.chains) {
    const lines = [chain.hook, ...chain.rules].map((l) => `\t\t${l}`);
    blocks.push(`\tchain ${name} {\n${lines.join("\n")}\n\t}`);
  }
  return `table ${table.family} ${table.name} {\n${blocks.join("\n\n")}\n}\n`;
}
