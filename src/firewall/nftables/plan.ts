// Kernel table (as listed) + desired table → one `nft -f` transaction and the differences. Pure.
// The same comparison, run on the table read back after applying, is the verification.
import type { Family } from "../../model.js";
import {
  TABLE_FAMILIES,
  allowedSet,
  type ChainBlock,
  type SetBlock,
  type TableFamily,
  type TableModel,
  type Tables,
} from "./layout.js";

/**
 * Parses `nft list table` output (or our own rendering) into a TableModel. Whitespace and the
 * wrapping of long element lists do not matter; set elements are compared as sets.
 */
export function parseTable(text: string): TableModel | null {
  const lines = text
    .split("\n")
    .map((l) => l.replace(/\s+#\s*handle \d+$/, "").trim())
    .filter((l) => l !== "");
  const header = /^table (inet|bridge) (\S+) \{$/.exec(lines[0] ?? "");
  if (!header) return null;
  const table: TableModel = {
    family: header[1] as TableFamily,
    name: header[2]!,
    sets: new Map(),
    chains: new Map(),
  };
  let block: { kind: "set"; value: SetBlock } | { kind: "chain"; value: ChainBlock } | null = null;
  for (let i = 1; i < lines.length; i++) {
    let line = lines[i]!;
    const opening = /^(set|chain) (\S+) \{$/.exec(line);
    if (opening && block === null) {
      if (opening[1] === "set") {
        const value: SetBlock = { declaration: [], elements: [] };
        table.sets.set(opening[2]!, value);
        block = { kind: "set", value };
      } else {
        const value: ChainBlock = { hook: "", rules: [] };
        table.chains.set(opening[2]!, value);
        block = { kind: "chain", value };
      }
      continue;
    }
    if (line === "}") {
      block = null;
      continue;
    }
    if (block?.kind === "set") {
      if (line.startsWith("elements = {")) {
        // A long element list wraps over several lines; it ends at the closing brace.
        while (!line.endsWith("}") && i + 1 < lines.length) line += ` ${lines[++i]}`;
        const inner = line.slice("elements = {".length, -1);
        block.value.elements = inner
          .split(",")
          .map((e) => e.trim())
          .filter(Boolean);
      } else {
        block.value.declaration.push(line);
      }
    } else if (block?.kind === "chain") {
      if (block.value.hook === "" && line.startsWith("type ")) block.value.hook = line;
      else block.value.rules.push(line);
    }
  }
  return table;
}

export interface NftPlan {
  /** `nft -f` input, or null when the kernel already matches. */
  script: string | null;
  /** Human-readable differences, for logs ("set allowed4: 172.20.0.2 missing", …). */
  differences: string[];
  /** Addresses the kernel allowed and the target no longer does: their flows must be dropped. */
  revoked: Array<[Family, string]>;
}

const FAMILIES: readonly Family[] = [4, 6];
const sameList = (a: readonly string[], b: readonly string[]) =>
  a.length === b.length && a.every((x, i) => x === b[i]);

function setDifferences(name: string, current: SetBlock | undefined, desired: SetBlock) {
  if (!current) return { structural: [`set ${name} missing`], missing: [], unexpected: [] };
  const structural = sameList(current.declaration, desired.declaration)
    ? []
    : [`set ${name} declared as "${current.declaration.join("; ")}"`];
  const have = new Set(current.elements);
  const want = new Set(desired.elements);
  return {
    structural,
    missing: desired.elements.filter((e) => !have.has(e)),
    unexpected: current.elements.filter((e) => !want.has(e)),
  };
}

function chainDifferences(name: string, current: ChainBlock | undefined, desired: ChainBlock) {
  if (!current) return [`chain ${name} missing`];
  const out: string[] = [];
  if (current.hook !== desired.hook) out.push(`chain ${name} hooked as "${current.hook}"`);
  if (!sameList(current.rules, desired.rules)) {
    const have = new Set(current.rules);
    const want = new Set(desired.rules);
    for (const r of desired.rules) if (!have.has(r)) out.push(`chain ${name}: rule missing: ${r}`);
    for (const r of current.rules)
      if (!want.has(r)) out.push(`chain ${name}: rule unexpected: ${r}`);
    if (out.length === 0) out.push(`chain ${name}: rules out of order or duplicated`);
  }
  return out;
}

const ref = (table: TableModel) => `${table.family} ${table.name}`;

/** Removes the table whether or not it exists, in the same transaction (`add` is a no-op if so). */
export function deleteTableScript(table: TableModel): string {
  return `add table ${ref(table)}\ndelete table ${ref(table)}\n`;
}

/**
 * Plans converging `current` (null: no such table) to `desired` (null: the instance must have no
 * table). A difference confined to set elements becomes element updates; anything else replaces
 * the whole table in one transaction. `replaceAlways` forces the latter (for the benchmark).
 */
export function planTable(
  current: TableModel | null,
  desired: TableModel | null,
  render: (table: TableModel) => string,
  replaceAlways = false,
): NftPlan {
  const allowedIn = (t: TableModel | null, f: Family) => t?.sets.get(allowedSet(f))?.elements ?? [];
  const revoked = FAMILIES.flatMap((f) => {
    const keep = new Set(allowedIn(desired, f));
    return allowedIn(current, f)
      .filter((a) => !keep.has(a))
      .map((a): [Family, string] => [f, a]);
  });
  if (desired === null) {
    return current === null
      ? { script: null, differences: [], revoked: [] }
      : {
          script: deleteTableScript(current),
          differences: [`table ${ref(current)} removed`],
          revoked,
        };
  }
  if (current === null) {
    return {
      script: render(desired),
      differences: [`table ${ref(desired)} missing`],
      revoked,
    };
  }

  const structural: string[] = [];
  const elementChanges: string[] = [];
  const elementScript: string[] = [];
  for (const [name, want] of desired.sets) {
    const d = setDifferences(name, current.sets.get(name), want);
    structural.push(...d.structural);
    if (d.unexpected.length > 0) {
      elementChanges.push(`set ${name}: ${d.unexpected.join(", ")} unexpected`);
      elementScript.push(`delete element ${ref(desired)} ${name} { ${d.unexpected.join(", ")} }`);
    }
    if (d.missing.length > 0) {
      elementChanges.push(`set ${name}: ${d.missing.join(", ")} missing`);
      elementScript.push(`add element ${ref(desired)} ${name} { ${d.missing.join(", ")} }`);
    }
  }
  for (const name of current.sets.keys())
    if (!desired.sets.has(name)) structural.push(`set ${name} unexpected`);
  for (const [name, want] of desired.chains)
    structural.push(...chainDifferences(name, current.chains.get(name), want));
  for (const name of current.chains.keys())
    if (!desired.chains.has(name)) structural.push(`chain ${name} unexpected`);

  const differences = [...structural, ...elementChanges].map((d) => `${ref(desired)}: ${d}`);
  if (differences.length === 0) return { script: null, differences, revoked };
  if (structural.length === 0 && !replaceAlways)
    return { script: `${elementScript.join("\n")}\n`, differences, revoked };
  // `add table` first makes the delete valid even if the table vanished since it was read.
  return { script: deleteTableScript(desired) + render(desired), differences, revoked };
}

/**
 * Plans all of the instance's tables (desired null: it must have none) as one transaction, so
 * the filter and the guard never disagree in the kernel, not even for a moment.
 */
export function planTables(
  current: Tables,
  desired: Tables | null,
  render: (table: TableModel) => string,
  replaceAlways = false,
): NftPlan {
  const plans = TABLE_FAMILIES.map((family) =>
    planTable(current[family], desired?.[family] ?? null, render, replaceAlways),
  );
  const scripts = plans.flatMap((p) => (p.script === null ? [] : [p.script]));
  return {
    script: scripts.length > 0 ? scripts.join("") : null,
    differences: plans.flatMap((p) => p.differences),
    revoked: plans.flatMap((p) => p.revoked),
  };
}
