// What of TrafficJam the kernel holds here, whoever wrote it: every instance's chains and tables
// (ours: TJF_<ID>, `inet trafficjam_<ID>`, `bridge trafficjam[-l2]_<ID>`), read with the tools
// the backends use. For `status` (instances whose daemon is not running) and `doctor` (a removed
// instance's leftovers, another instance on the same NFLOG groups).
import type { Host } from "../host/host.js";
import { readFilterTable, type Flavour } from "../firewall/iptables/backend.js";
import type { FilterTable } from "../firewall/iptables/save-format.js";
import { listingSchema, validated } from "../firewall/nftables/table.js";

export interface KernelInstance {
  id: string;
  /** Where its rules are: "iptables-nft", "iptables-legacy", "nftables", "bridge guard". */
  where: string[];
}

export interface KernelView {
  /** The IPv4 filter table of each iptables flavour ([] chains where absent). */
  iptables: Record<Flavour, FilterTable>;
  /** nft tables as "family name". */
  nftTables: string[];
}

/** Reads the filter tables of both flavours and the nft table list (nothing is changed). */
export async function readKernelView(host: Host): Promise<KernelView> {
  const [nft, legacy, tables] = await Promise.all([
    readFilterTable(host, 4, "nft"),
    readFilterTable(host, 4, "legacy"),
    host.run("nft", ["-j", "list", "tables"]).catch(() => null),
  ]);
  const nftTables: string[] = [];
  if (tables && tables.code === 0) {
    const listing = validated(listingSchema, JSON.parse(tables.stdout), "list tables");
    for (const entry of listing.nftables) {
      const t = entry.table as { family?: unknown; name?: unknown } | undefined;
      if (typeof t?.family === "string" && typeof t.name === "string")
        nftTables.push(`${t.family} ${t.name}`);
    }
  }
  return { iptables: { nft, legacy }, nftTables };
}

/** Every instance whose rules the kernel holds, by INSTANCE_ID. Pure. */
export function instancesIn(view: KernelView): KernelInstance[] {
  const found = new Map<string, Set<string>>();
  const add = (id: string, where: string) => {
    if (!found.has(id)) found.set(id, new Set());
    found.get(id)!.add(where);
  };
  for (const flavour of ["nft", "legacy"] as const)
    for (const chain of view.iptables[flavour].chains.keys()) {
      const id = /^TJ[FIO]_([A-Za-z0-9_]{1,24})$/.exec(chain)?.[1];
      if (id) add(id, `iptables-${flavour}`);
    }
  for (const table of view.nftTables) {
    const [family, name] = table.split(" ");
    const nft = /^trafficjam_([A-Za-z0-9_]{1,24})$/.exec(name ?? "")?.[1];
    const guard = /^trafficjam-l2_([A-Za-z0-9_]{1,24})$/.exec(name ?? "")?.[1];
    if (nft && family === "inet") add(nft, "nftables");
    else if (nft && family === "bridge") add(nft, "nftables (bridge guard)");
    else if (guard && family === "bridge") add(guard, "bridge guard of iptables");
  }
  return [...found]
    .map(([id, where]) => ({ id, where: [...where].sort() }))
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}
