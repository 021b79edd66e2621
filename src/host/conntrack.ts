// The kernel's tracked flows (conntrack), read and deleted with the `conntrack` tool, in the
// namespace of the host object given. A flow the rules forbid must not live on as "ESTABLISHED":
// the rules let replies of tracked flows through.
import { isIP } from "node:net";
import type { Family } from "../model.js";
import type { Host } from "./host.js";

/** One tracked flow, by its original direction (who opened it). */
export interface TrackedFlow {
  family: Family;
  /** "tcp", "udp", "icmp", "icmpv6", … as conntrack names it. */
  protocol: string;
  source: string;
  destination: string;
  /** The destination port, where the protocol has one. */
  port?: number;
}

const familyArg = (family: Family) => (family === 4 ? "ipv4" : "ipv6");

/** Parses `conntrack -L` lines (the tool's own output: validated, odd lines skipped). Pure. */
export function parseFlows(text: string, family: Family): TrackedFlow[] {
  return text.split("\n").flatMap((line): TrackedFlow[] => {
    const protocol = /^(\S+)\s+\d+\s/.exec(line)?.[1];
    // The first src=/dst=/dport= are the original direction's, the second ones the reply's.
    const source = /\bsrc=(\S+)/.exec(line)?.[1];
    const destination = /\bdst=(\S+)/.exec(line)?.[1];
    const dport = /\bdport=(\d+)/.exec(line)?.[1];
    if (!protocol || !source || !destination) return [];
    if (isIP(source) !== family || isIP(destination) !== family) return [];
    return [{ family, protocol, source, destination, ...(dport ? { port: Number(dport) } : {}) }];
  });
}

export class ConntrackError extends Error {
  constructor(what: string, detail: string) {
    super(`conntrack ${what} failed: ${detail}`);
    this.name = "ConntrackError";
  }
}

export class Conntrack {
  constructor(private readonly host: Host) {}

  /** Flows opened from an address in `prefix` (CIDR, or a single address). */
  async list(family: Family, prefix: string): Promise<TrackedFlow[]> {
    const result = await this.host.run("conntrack", ["-L", "-f", familyArg(family), "-s", prefix]);
    if (result.code !== 0)
      throw new ConntrackError(`-L -s ${prefix}`, result.stderr.trim() || `exit ${result.code}`);
    return parseFlows(result.stdout, family);
  }

  /**
   * Deletes the flows opened by `source` (to `destination` only, if given); returns how many.
   * Every protocol: what the policy forbids depends on who opens, not on the protocol.
   */
  async delete(family: Family, source: string, destination?: string): Promise<number> {
    const args = ["-D", "-f", familyArg(family), "-s", source];
    if (destination !== undefined) args.push("-d", destination);
    const result = await this.host.run("conntrack", args);
    const deleted = /(\d+) flow entries have been deleted/.exec(result.stderr);
    // conntrack exits 1 when nothing matched (some versions); that is success for us. So is a
    // flow that expired (or another deletion took) between conntrack's listing and its delete.
    if (deleted) return Number(deleted[1]);
    if (result.code === 0 || /such conntrack doesn't exist/.test(result.stderr)) return 0;
    const what = `-D -s ${source}${destination ? ` -d ${destination}` : ""}`;
    throw new ConntrackError(what, result.stderr.trim() || `exit ${result.code}`);
  }
}
