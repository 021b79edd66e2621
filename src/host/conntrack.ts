// Flows opened by an address that lost its allowance must not live on as "ESTABLISHED".
import type { Family } from "../model.js";
import { run } from "./exec.js";

/** Deletes the conntrack entries whose original source is `address`; returns how many. */
export async function deleteFlowsFrom(family: Family, address: string): Promise<number> {
  const result = await run("conntrack", [
    "-D",
    "-f",
    family === 4 ? "ipv4" : "ipv6",
    "-s",
    address,
  ]);
  const deleted = /(\d+) flow entries have been deleted/.exec(result.stderr);
  // conntrack exits 1 when nothing matched; that is success for us. So is a flow that expired
  // (or another deletion took) between conntrack's listing and its delete.
  if (deleted) return Number(deleted[1]);
  if (result.code === 0 || /such conntrack doesn't exist/.test(result.stderr)) return 0;
  throw new Error(
    `conntrack -D -s ${address} failed: ${result.stderr.trim() || `exit ${result.code}`}`,
  );
}
