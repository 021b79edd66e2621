// The seed-compatible chain layout: Docker's chains jump to shared entry chains, which hold one
// jump per instance to the instance's own chains. Every rule we own carries the instance comment.
import type { Family, FamilyRuleset } from "../../model.js";

export const ENTRY_FORWARD = "TRAFFICJAM";
export const ENTRY_INPUT = "TRAFFICJAM_INPUT";
export const DOCKER_USER = "DOCKER-USER";

export interface InstanceChains {
  forward: string;
  input: string;
  comment: string;
}

/** Chain names stay within iptables' 28-character limit for a 24-character INSTANCE_ID. */
export function instanceChains(instanceId: string): InstanceChains {
  return {
    forward: `TJF_${instanceId}`,
    input: `TJI_${instanceId}`,
    comment: `trafficjam:${instanceId}`,
  };
}

function hostPrefix(address: string, family: Family): string {
  return `${address}/${family === 4 ? 32 : 128}`;
}

/** Neighbour discovery must cross the bridge and reach the host, or IPv6 breaks entirely. */
const NEIGHBOUR_DISCOVERY = ["neighbour-solicitation", "neighbour-advertisement"] as const;
const ICMPV6_TYPE_NUMBER: Record<(typeof NEIGHBOUR_DISCOVERY)[number], number> = {
  "neighbour-solicitation": 135,
  "neighbour-advertisement": 136,
};

/**
 * Drops of packets carrying a bound address that did not come in through its bridge port
 * (br_netfilter records the port; `physdev` matches it for bridged and routed packets alike).
 * They come first, before even the replies: a forged packet must not slip into a tracked flow.
 */
function spoofGuards(
  chain: string,
  family: Family,
  rules: FamilyRuleset,
  comment: string,
  destinations: ReadonlyArray<string | null>,
): string[] {
  return rules.portBindings.flatMap(({ address, port }) =>
    destinations.map((dst) => {
      const to = dst === null ? "" : ` -d ${dst}`;
      return `-A ${chain} -s ${hostPrefix(address, family)}${to} -m physdev ! --physdev-in ${port} ${comment} -j DROP`;
    }),
  );
}

/**
 * Rule lines of the instance's forward chain, in iptables-save's canonical spelling so that the
 * read-back compares as plain strings. Order matters: forged sources, replies, allowances (each
 * bound to its bridge port when known), then the drop.
 */
export function forwardRules(
  chains: InstanceChains,
  family: Family,
  rules: FamilyRuleset,
): string[] {
  const c = `-m comment --comment "${chains.comment}"`;
  const lines = spoofGuards(chains.forward, family, rules, c, rules.subnets);
  const pairs = rules.subnets.flatMap((src) => rules.subnets.map((dst) => [src, dst] as const));
  for (const [src, dst] of pairs) {
    lines.push(
      `-A ${chains.forward} -s ${src} -d ${dst} -m conntrack --ctstate RELATED,ESTABLISHED ${c} -j RETURN`,
    );
  }
  if (family === 6) {
    for (const [src, dst] of pairs) {
      for (const type of NEIGHBOUR_DISCOVERY) {
        lines.push(
          `-A ${chains.forward} -s ${src} -d ${dst} -p ipv6-icmp -m icmp6 --icmpv6-type ${ICMPV6_TYPE_NUMBER[type]} ${c} -j RETURN`,
        );
      }
    }
  }
  const portOf = new Map(rules.portBindings.map((b) => [b.address, b.port]));
  for (const source of rules.allowedSources) {
    const port = portOf.get(source);
    const bound = port ? ` -m physdev --physdev-in ${port}` : "";
    for (const dst of rules.subnets) {
      lines.push(
        `-A ${chains.forward} -s ${hostPrefix(source, family)} -d ${dst}${bound} ${c} -j RETURN`,
      );
    }
  }
  for (const [src, dst] of pairs) {
    lines.push(`-A ${chains.forward} -s ${src} -d ${dst} ${c} -j DROP`);
  }
  return lines;
}

/** Rule lines of the instance's input chain: the network may answer the host, not call it. */
export function inputRules(chains: InstanceChains, family: Family, rules: FamilyRuleset): string[] {
  const c = `-m comment --comment "${chains.comment}"`;
  const lines = spoofGuards(chains.input, family, rules, c, [null]);
  for (const src of rules.subnets) {
    lines.push(
      `-A ${chains.input} -s ${src} -m conntrack --ctstate RELATED,ESTABLISHED ${c} -j RETURN`,
    );
  }
  if (family === 6) {
    for (const src of rules.subnets) {
      for (const type of NEIGHBOUR_DISCOVERY) {
        lines.push(
          `-A ${chains.input} -s ${src} -p ipv6-icmp -m icmp6 --icmpv6-type ${ICMPV6_TYPE_NUMBER[type]} ${c} -j RETURN`,
        );
      }
    }
  }
  for (const src of rules.subnets) {
    lines.push(`-A ${chains.input} -s ${src} ${c} -j DROP`);
  }
  return lines;
}

/** The jump an entry chain holds for one instance. */
export function instanceJump(entry: string, target: string, chains: InstanceChains): string {
  return `-A ${entry} -m comment --comment "${chains.comment}" -j ${target}`;
}

/** The shared jump from Docker's chain (or INPUT/FORWARD) into an entry chain. */
export function anchorJump(anchor: string, entry: string): string {
  return `-A ${anchor} -j ${entry}`;
}

/**
 * Sources an instance chain currently allows, read from its rules (normalized iptables-save
 * lines): what the kernel enforced before this pass, even across a restart of the daemon.
 */
export function allowedSourcesIn(lines: readonly string[], chains: InstanceChains): string[] {
  const pattern = new RegExp(
    `^-A ${chains.forward} -s (\\S+)/(?:32|128) -d \\S+ (?:-m physdev --physdev-in \\S+ )?-m comment --comment ${chains.comment} -j RETURN$`,
  );
  return [...new Set(lines.flatMap((line) => pattern.exec(line)?.[1] ?? []))];
}
