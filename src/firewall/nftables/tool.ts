// The nft tool: reading tables back as JSON, applying `nft -f` transactions.
import { z } from "zod/v3";
import { CommandError } from "../../host/exec.js";
import { runChecked, type Host } from "../../host/host.js";
import {
  listingSchema,
  parseTableJson,
  validated,
  type TableFamily,
  type TableModel,
} from "./table.js";

export class NftMissingError extends Error {
  constructor(readonly need: string) {
    super(`the nft tool is not installed: install nftables (${need})`);
    this.name = "NftMissingError";
  }
}

const tableSchema = z.object({ family: z.string(), name: z.string() });

async function nft(host: Host, args: string[], need: string, input?: string): Promise<string> {
  try {
    return await runChecked(host, "nft", args, input);
  } catch (error) {
    if (error instanceof CommandError && error.failure === "not-installed")
      throw new NftMissingError(need);
    throw error;
  }
}

/** Which of `wanted` ("family name") exist: one small listing, no error for absent tables. */
async function existingTables(
  host: Host,
  wanted: readonly string[],
  need: string,
): Promise<Set<string>> {
  const text = await nft(host, ["-j", "list", "tables"], need);
  const listing = validated(listingSchema, JSON.parse(text), "list tables");
  const present = new Set<string>();
  for (const entry of listing.nftables) {
    if (!("table" in entry)) continue;
    const table = validated(tableSchema, entry.table, "table");
    const key = `${table.family} ${table.name}`;
    if (wanted.includes(key)) present.add(key);
  }
  return present;
}

/** The named tables as the kernel has them (null where absent), read side by side. */
export async function readTables(
  host: Host,
  tables: ReadonlyArray<{ family: TableFamily; name: string }>,
  need: string,
): Promise<Array<TableModel | null>> {
  const present = await existingTables(
    host,
    tables.map((t) => `${t.family} ${t.name}`),
    need,
  );
  return Promise.all(
    tables.map(async ({ family, name }) =>
      present.has(`${family} ${name}`)
        ? parseTableJson(await nft(host, ["-j", "list", "table", family, name], need), family, name)
        : null,
    ),
  );
}

/** One `nft -f` transaction: all of it or nothing. */
export async function applyScript(host: Host, script: string, need: string): Promise<void> {
  await nft(host, ["-f", "-"], need, script);
}
