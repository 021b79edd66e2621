// Cuts the tracked flows the rules forbid, in the namespace the rules are in: conntrack there,
// the host's addresses there, and the pure verdict of flows.ts.
import type { Family, Member, Ruleset } from "../model.js";
import { flowScope, forbiddenPairs, sourcePrefixes, type ForbiddenPair } from "../flows.js";
import { Conntrack } from "./conntrack.js";
import type { Host } from "./host.js";
import { hostAddresses } from "./links.js";

export interface SweepResult {
  /** The (source, destination) pairs whose flows were deleted. */
  pairs: ForbiddenPair[];
  /** How many flows went. */
  flows: number;
}

/** What the reconciler asks of the kernel's flow table. */
export interface FlowCutter {
  /** Deletes every flow opened by `address` in the ruleset's namespace; how many went. */
  deleteFrom(ruleset: Ruleset, family: Family, address: string): Promise<number>;
  /** Deletes every flow the ruleset forbids (member → member, member → host). */
  sweep(ruleset: Ruleset, members: readonly Member[]): Promise<SweepResult>;
}

export class ConntrackFlowCutter implements FlowCutter {
  constructor(private readonly host: Host) {}

  private conntrack(ruleset: Ruleset): { conntrack: Conntrack; host: Host } {
    const host = this.host.in(ruleset.netns);
    return { conntrack: new Conntrack(host), host };
  }

  deleteFrom(ruleset: Ruleset, family: Family, address: string): Promise<number> {
    return this.conntrack(ruleset).conntrack.delete(family, address);
  }

  async sweep(ruleset: Ruleset, members: readonly Member[]): Promise<SweepResult> {
    const { conntrack, host } = this.conntrack(ruleset);
    const scope = flowScope(ruleset, members, await hostAddresses(host));
    const listed = await Promise.all(
      ([4, 6] as const).flatMap((family) =>
        sourcePrefixes(scope, family).map((prefix) => conntrack.list(family, prefix)),
      ),
    );
    const pairs = forbiddenPairs(listed.flat(), scope);
    let flows = 0;
    for (const pair of pairs)
      flows += await conntrack.delete(pair.family, pair.source, pair.destination);
    return { pairs, flows };
  }
}
