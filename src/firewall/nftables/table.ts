// An nftables table as plain data: what the layouts build, what the renderer writes for `nft -f`
// and what the kernel's JSON listing (`nft -j list table`) reads back as. Pure.
//
// The read-back must not depend on how a given nft version spells a rule: each rule we write
// carries a comment with a hash of its text, and a rule is compared by that comment alone (as
// Calico Felix does). Sets are compared by type, flags and elements, which nft's JSON gives as
// plain values; elements are normalised so spelling never differs.
import { createHash } from "node:crypto";
import { z } from "zod/v3";

export type TableFamily = "inet" | "bridge";

export interface SetBlock {
  /** How the set is declared in `nft -f` input, e.g. "type ipv4_addr . ifname". */
  declaration: string;
  /** Its key type as the JSON listing gives it, components joined by " . ". */
  type: string;
  flags: string[];
  /** Normalised elements (see normaliseElement); concatenations joined by " . ". */
  elements: string[];
  /**
   * A set the rules fill themselves (`add @set { … }`), its elements expiring: only its type and
   * flags are ours to compare, never its elements.
   */
  dynamic?: { size: number; timeoutS: number };
}

export interface ChainHook {
  type: string;
  hook: string;
  priority: number;
  policy: string;
}

export interface Rule {
  /** The rule as written in `nft -f` input, without its comment. */
  text: string;
  /** Its comment: "tj:" + a hash of the text. The read-back compares this alone. */
  id: string;
}

export interface ChainBlock {
  /** Absent: a regular chain, entered by `goto` or `jump` from a base chain of the table. */
  hook?: ChainHook;
  rules: Rule[];
}

export interface TableModel {
  family: TableFamily;
  name: string;
  sets: Map<string, SetBlock>;
  chains: Map<string, ChainBlock>;
}

export const ruleId = (text: string) =>
  `tj:${createHash("sha256").update(text).digest("hex").slice(0, 12)}`;

export const rule = (text: string): Rule => ({ text, id: ruleId(text) });

/**
 * A set the rules add their packets' keys to, each element expiring after `timeoutS`: a table of
 * per-source limits (see LOG_LIMITS in ../../drops.ts). Its flags as the JSON listing gives them.
 */
export const dynamicSet = (type: string, size: number, timeoutS: number): SetBlock => ({
  declaration: `type ${type}`,
  type,
  flags: ["timeout"],
  elements: [],
  dynamic: { size, timeoutS },
});

/** A base filter chain on `hook` that accepts what it does not drop (it only ever takes away). */
export const filterHook = (hook: string, priority: number): ChainHook => ({
  type: "filter",
  hook,
  priority,
  policy: "accept",
});

/** One spelling per element value, whoever printed it. */
export function normaliseElement(value: string): string {
  return value
    .split(" . ")
    .map((part) => {
      const p = part.trim().replace(/^"(.*)"$/, "$1");
      if (/^0x[0-9a-f]+$/i.test(p)) return `0x${BigInt(p).toString(16)}`;
      if (/^[0-9a-f:]+(\/\d+)?$/i.test(p) && p.includes(":")) return p.toLowerCase();
      return p;
    })
    .join(" . ");
}

/** The set's key components, from its declared type. */
const components = (set: SetBlock) => set.type.split(" . ");

function renderElement(set: SetBlock, element: string): string {
  const kinds = components(set);
  return element
    .split(" . ")
    .map((part, i) => (kinds[i] === "ifname" ? `"${part}"` : part))
    .join(" . ");
}

export const ref = (table: Pick<TableModel, "family" | "name">) => `${table.family} ${table.name}`;

export function renderElements(set: SetBlock, elements: readonly string[]): string {
  return `{ ${elements.map((e) => renderElement(set, e)).join(", ")} }`;
}

/** The table in `nft -f` syntax. */
export function renderTable(table: TableModel): string {
  const blocks: string[] = [];
  for (const [name, set] of table.sets) {
    const lines = [set.declaration];
    if (set.dynamic) {
      lines.push(`size ${set.dynamic.size}`, "flags dynamic,timeout");
      lines.push(`timeout ${set.dynamic.timeoutS}s`);
    } else if (set.flags.length > 0) lines.push(`flags ${set.flags.join(", ")}`);
    if (set.elements.length > 0) lines.push(`elements = ${renderElements(set, set.elements)}`);
    blocks.push(`\tset ${name} {\n${lines.map((l) => `\t\t${l}`).join("\n")}\n\t}`);
  }
  for (const [name, chain] of table.chains) {
    const rules = chain.rules.map((r) => `${r.text} comment "${r.id}"`);
    const lines = chain.hook
      ? [
          `type ${chain.hook.type} hook ${chain.hook.hook} priority ${chain.hook.priority}; policy ${chain.hook.policy};`,
          ...rules,
        ]
      : rules;
    blocks.push(`\tchain ${name} {\n${lines.map((l) => `\t\t${l}`).join("\n")}\n\t}`);
  }
  return `table ${table.family} ${table.name} {\n${blocks.join("\n\n")}\n}\n`;
}

// ---- the kernel's JSON listing (validated: it is another program's output) ----

export const listingSchema = z.object({ nftables: z.array(z.record(z.string(), z.unknown())) });
const setSchema = z.object({
  table: z.string(),
  name: z.string(),
  type: z.union([z.string(), z.array(z.string())]),
  flags: z.array(z.string()).optional(),
  // Each element is checked by elementText: a union schema per element costs more than the
  // rest of a read-back with hundreds of them.
  elem: z.array(z.unknown()).optional(),
});
const chainSchema = z.object({
  table: z.string(),
  name: z.string(),
  type: z.string().optional(),
  hook: z.string().optional(),
  prio: z.number().optional(),
  policy: z.string().optional(),
});
const ruleSchema = z.object({
  table: z.string(),
  chain: z.string(),
  comment: z.string().optional(),
});

export function validated<T>(
  schema: z.ZodType<T, z.ZodTypeDef, unknown>,
  value: unknown,
  what: string,
): T {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  throw new Error(
    `unexpected nft -j output (${what}): ${issue?.path.join(".")}: ${issue?.message}`,
  );
}

/** A JSON element value → the normalised text form; throws on a shape nft does not print. */
function elementText(value: unknown): string {
  if (typeof value === "string") return normaliseElement(value);
  // Raw payload values (typeof @th,…): nft prints them as numbers; we write them in hex.
  if (typeof value === "number") return `0x${value.toString(16)}`;
  if (typeof value === "object" && value !== null) {
    const v = value as Record<string, unknown>;
    if (Array.isArray(v.concat)) return v.concat.map(elementText).join(" . ");
    if (Array.isArray(v.range)) return v.range.map(elementText).join("-");
    const prefix = v.prefix as Record<string, unknown> | undefined;
    if (prefix && typeof prefix.len === "number")
      return `${elementText(prefix.addr)}/${prefix.len}`;
    const elem = v.elem as Record<string, unknown> | undefined;
    if (elem && "val" in elem) return elementText(elem.val);
  }
  throw new Error(`unexpected set element in the nft listing: ${JSON.stringify(value)}`);
}

/**
 * Parses `nft -j list table FAMILY NAME` into a TableModel. A rule without our comment gets an
 * id no desired rule has ("foreign:N"), so it shows as unexpected.
 */
export function parseTableJson(text: string, family: TableFamily, name: string): TableModel {
  const listing = validated(listingSchema, JSON.parse(text), `table ${family} ${name}`);
  const table: TableModel = { family, name, sets: new Map(), chains: new Map() };
  const rules = new Map<string, Rule[]>();
  for (const [index, entry] of listing.nftables.entries()) {
    if ("set" in entry) {
      const s = validated(setSchema, entry.set, "set");
      if (s.table !== name) continue;
      const flags = [...(s.flags ?? [])].sort();
      // A set the rules fill (elements with timeouts and limits): its elements are not ours.
      const dynamic = flags.includes("timeout") || flags.includes("dynamic");
      table.sets.set(s.name, {
        declaration: "",
        type: Array.isArray(s.type) ? s.type.join(" . ") : s.type,
        flags,
        elements: dynamic ? [] : (s.elem ?? []).map(elementText),
      });
    } else if ("chain" in entry) {
      const c = validated(chainSchema, entry.chain, "chain");
      if (c.table !== name) continue;
      table.chains.set(c.name, {
        ...(c.hook === undefined
          ? {}
          : {
              hook: {
                type: c.type ?? "",
                hook: c.hook,
                priority: c.prio ?? 0,
                policy: c.policy ?? "",
              },
            }),
        rules: [],
      });
    } else if ("rule" in entry) {
      const r = validated(ruleSchema, entry.rule, "rule");
      if (r.table !== name) continue;
      const list = rules.get(r.chain) ?? [];
      list.push({ text: "", id: r.comment ?? `foreign:${index}` });
      rules.set(r.chain, list);
    }
  }
  for (const [chain, list] of rules) table.chains.get(chain)?.rules.push(...list);
  return table;
}
