// Kernel tables (as read back) + desired tables → one `nft -f` transaction and the differences.
// Pure. The same comparison, run on the tables read back after applying, is the verification.
import type { Family } from "../../model.js";
import { allowedSet } from "./layout.js";
import {
  ref,
  renderElements,
  renderTable,
  type ChainBlock,
  type SetBlock,
  type TableModel,
} from "./table.js";

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
  const structural: string[] = [];
  if (current.type !== desired.type) structural.push(`set ${name} has type ${current.type}`);
  if (!sameList(current.flags, [...desired.flags].sort()))
    structural.push(`set ${name} has flags "${current.flags.join(", ")}"`);
  // The rules fill a dynamic set themselves: whatever it holds is theirs.
  if (desired.dynamic) return { structural, missing: [], unexpected: [] };
  const have = new Set(current.elements);
  const want = new Set(desired.elements);
  return {
    structural,
    missing: [...want].filter((e) => !have.has(e)),
    unexpected: [...have].filter((e) => !want.has(e)),
  };
}

function chainDifferences(name: string, current: ChainBlock | undefined, desired: ChainBlock) {
  if (!current) return [`chain ${name} missing`];
  const out: string[] = [];
  const have = current.hook;
  const want = desired.hook;
  if (!have && want) out.push(`chain ${name} is not a base chain`);
  else if (have && !want) out.push(`chain ${name} is hooked (${have.hook})`);
  else if (
    have &&
    want &&
    (have.type !== want.type ||
      have.hook !== want.hook ||
      have.priority !== want.priority ||
      have.policy !== want.policy)
  )
    out.push(
      `chain ${name} hooked as "${have.type} ${have.hook} priority ${have.priority} policy ${have.policy}"`,
    );
  const haveIds = current.rules.map((r) => r.id);
  const wantIds = desired.rules.map((r) => r.id);
  if (!sameList(haveIds, wantIds)) {
    const have = new Set(haveIds);
    const wanted = new Set(wantIds);
    for (const r of desired.rules)
      if (!have.has(r.id)) out.push(`chain ${name}: rule missing: ${r.text}`);
    const unexpected = haveIds.filter((id) => !wanted.has(id)).length;
    if (unexpected > 0) out.push(`chain ${name}: ${unexpected} rule(s) not ours`);
    if (out.length === 0) out.push(`chain ${name}: rules out of order or duplicated`);
  }
  return out;
}

/** Removes the table whether or not it exists, in the same transaction (`add` is a no-op if so). */
export function deleteTableScript(table: Pick<TableModel, "family" | "name">): string {
  return `add table ${ref(table)}\ndelete table ${ref(table)}\n`;
}

/**
 * Plans converging `current` (null: no such table) to `desired` (null: the table must not
 * exist). A difference confined to set elements becomes element updates; anything else replaces
 * the whole table in one transaction. `replaceAlways` forces the latter (for the benchmark).
 */
export function planTable(
  current: TableModel | null,
  desired: TableModel | null,
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
      script: renderTable(desired),
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
      elementScript.push(
        `delete element ${ref(desired)} ${name} ${renderElements(want, d.unexpected)}`,
      );
    }
    if (d.missing.length > 0) {
      elementChanges.push(`set ${name}: ${d.missing.join(", ")} missing`);
      elementScript.push(`add element ${ref(desired)} ${name} ${renderElements(want, d.missing)}`);
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
  return { script: deleteTableScript(desired) + renderTable(desired), differences, revoked };
}

/** A table as it is in the kernel and as it must be (null: absent). */
export interface TablePair {
  current: TableModel | null;
  desired: TableModel | null;
}

/**
 * Plans several tables as one transaction, so they never disagree in the kernel, not even for
 * a moment (the filter and its guard).
 */
export function planTables(pairs: readonly TablePair[], replaceAlways = false): NftPlan {
  const plans = pairs.map((p) => planTable(p.current, p.desired, replaceAlways));
  const scripts = plans.flatMap((p) => (p.script === null ? [] : [p.script]));
  return {
    script: scripts.length > 0 ? scripts.join("") : null,
    differences: plans.flatMap((p) => p.differences),
    revoked: plans.flatMap((p) => p.revoked),
  };
}
