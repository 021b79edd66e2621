// Reading the lab host's firewall (always inside the lab netns, never the machine's own).
import { existsSync, mkdirSync, readlinkSync, renameSync, rmSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import type { Lab } from "./lab.js";
import { CACHE_BASE } from "./paths.js";

const IPTABLES_TOOLS = [
  "iptables",
  "iptables-save",
  "iptables-restore",
  "ip6tables",
  "ip6tables-save",
  "ip6tables-restore",
] as const;

/**
 * A folder whose iptables* point to the -legacy binaries: give it as startLab({ pathPrefix }) to
 * get a Docker host whose rules live in legacy iptables (update-alternatives is machine-wide and
 * must not be changed).
 */
export function iptablesLegacyShim(): string {
  const legacy = (t: string): string => `/usr/sbin/${t.replace(/^(ip6?tables)/, "$1-legacy")}`;
  const dir = join(CACHE_BASE, "iptables-legacy-shim");
  const ok = IPTABLES_TOOLS.every((t) => {
    try {
      return readlinkSync(join(dir, t)) === legacy(t);
    } catch {
      return false;
    }
  });
  if (ok) return dir;
  for (const t of IPTABLES_TOOLS) {
    if (!existsSync(legacy(t))) throw new Error(`${legacy(t)} missing`);
  }
  const tmp = `${dir}.${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  for (const t of IPTABLES_TOOLS) symlinkSync(legacy(t), join(tmp, t));
  rmSync(dir, { recursive: true, force: true });
  renameSync(tmp, dir);
  return dir;
}

export type Family = 4 | 6;
/** undefined = whatever `iptables` points to on this machine (the nft flavour on Debian 12). */
export type Flavour = "nft" | "legacy" | undefined;

function tool(base: "iptables" | "ip6tables", flavour: Flavour, suffix = ""): string {
  return `${base}${flavour ? `-${flavour}` : ""}${suffix}`;
}

/** `iptables-save` / `ip6tables-save` (optionally -nft / -legacy), whole output or one table. */
export function iptablesSave(
  lab: Lab,
  family: Family,
  flavour?: Flavour,
  table?: string,
): Promise<string> {
  const bin = tool(family === 4 ? "iptables" : "ip6tables", flavour, "-save");
  return lab.nsExec(table ? [bin, "-t", table] : [bin]);
}

/** `iptables -S [CHAIN]` lines of one table; [] when the chain does not exist. */
export async function iptablesRules(
  lab: Lab,
  family: Family,
  chain?: string,
  opts: { table?: string; flavour?: Flavour } = {},
): Promise<string[]> {
  const bin = tool(family === 4 ? "iptables" : "ip6tables", opts.flavour);
  const r = await lab.nsRun([
    bin,
    "-w",
    "-t",
    opts.table ?? "filter",
    "-S",
    ...(chain ? [chain] : []),
  ]);
  if (r.code !== 0) {
    if (/No chain|does not exist/i.test(r.stderr)) return [];
    throw new Error(`${bin} -S ${chain ?? ""} failed: ${r.stderr.trim()}`);
  }
  return r.stdout.split("\n").filter(Boolean);
}

/** `nft list ruleset` (or one table: `nft list table inet NAME`). */
export function nftRuleset(lab: Lab, table?: { family: string; name: string }): Promise<string> {
  return lab.nsExec(
    table ? ["nft", "list", "table", table.family, table.name] : ["nft", "list", "ruleset"],
  );
}

/** `nft -j list ruleset`, parsed. */
export async function nftRulesetJson(lab: Lab): Promise<unknown> {
  return JSON.parse(await lab.nsExec(["nft", "-j", "list", "ruleset"])) as unknown;
}

/** Connection-tracking entries of the lab host (bridged container traffic is tracked here). */
export async function conntrackList(lab: Lab, family: Family = 4): Promise<string[]> {
  const r = await lab.nsRun(["conntrack", "-L", "-f", family === 4 ? "ipv4" : "ipv6"]);
  if (r.code !== 0) throw new Error(`conntrack -L failed: ${r.stderr.trim()}`);
  return r.stdout.split("\n").filter(Boolean);
}
