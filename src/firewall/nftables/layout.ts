// The nftables layout: one `inet` table per instance, holding IPv4 and IPv6 together. Its base
// chains only ever drop: an accept in them ends this table's say and overrides nothing of
// Docker's, while a drop anywhere is final. The structure depends only on ALLOW_HOST_TRAFFIC;
// subnets and whitelisted addresses live in sets, so a whitelist change is a set change.
import type { Family, Ruleset } from "../../model.js";

export const FAMILY_TABLE = "inet";

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
  name: string;
  sets: Map<string, SetBlock>;
  chains: Map<string, ChainBlock>;
}

export const subnetsSet = (f: Family) => `subnets${f}`;
export const allowedSet = (f: Family) => `allowed${f}`;
const FAMILIES: readonly Family[] = [4, 6];

/** Desired table of a ruleset. Rules of a family whose sets are empty simply never match. */
export function desiredTable(ruleset: Ruleset): TableModel {
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
  return { name: tableName(ruleset.instanceId), sets, chains };
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
  return `table ${FAMILY_TABLE} ${table.name} {\n${blocks.join("\n\n")}\n}\n`;
}
