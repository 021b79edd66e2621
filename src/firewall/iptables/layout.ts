// The seed-compatible chain layout: Docker's chains jump to shared entry chains, which hold one
// jump per instance to the instance's own chains. Every rule we own carries the instance comment.
import type { Family, Ruleset } from "../../model.js";

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
const NEIGHBOUR_DISCOVERY = [135, 136] as const; // solicitation, advertisement

/**
 * Drops of packets carrying a whitelisted address that entered the bridge through any port but
 * the member's own (br_netfilter records the port; `physdev` matches it for bridged and routed
 * packets alike). They come first, before even the replies: a forged packet must not slip into
 * a tracked flow. The bridge guard table binds every member's port the same way; these keep
 * the allowances bound within iptables itself.
 */
function spoofGuards(chain: string, family: Family, rules: Ruleset, comment: string): string[] {
  return rules.families[family].portBindings.map(
    ({ address, port }) =>
      `-A ${chain} -s ${hostPrefix(address, family)} -i ${rules.bridge} -m physdev ! --physdev-in ${port} ${comment} -j DROP`,
  );
}

/**
 * Rule lines of the instance's forward chain, in iptables-save's canonical spelling so that the
 * read-back compares as plain strings. Everything is matched by the bridge (in and out: between
 * two of its ports, bridged or routed back), never by subnet: link-local, broadcast, multicast
 * and forged sources are members' traffic too. Order matters: forged whitelisted sources,
 * replies, neighbour discovery, allowances (each bound to its bridge port when known), drop.
 */
export function forwardRules(chains: InstanceChains, family: Family, rules: Ruleset): string[] {
  const c = `-m comment --comment "${chains.comment}"`;
  const within = `-i ${rules.bridge} -o ${rules.bridge}`;
  const lines = spoofGuards(chains.forward, family, rules, c);
  lines.push(
    `-A ${chains.forward} ${within} -m conntrack --ctstate RELATED,ESTABLISHED ${c} -j RETURN`,
  );
  if (family === 6) {
    for (const type of NEIGHBOUR_DISCOVERY) {
      lines.push(
        `-A ${chains.forward} ${within} -p ipv6-icmp -m icmp6 --icmpv6-type ${type} ${c} -j RETURN`,
      );
    }
  }
  const { allowedSources, portBindings } = rules.families[family];
  const portOf = new Map(portBindings.map((b) => [b.address, b.port]));
  for (const source of allowedSources) {
    const port = portOf.get(source);
    const bound = port ? ` -m physdev --physdev-in ${port}` : "";
    lines.push(
      `-A ${chains.forward} -s ${hostPrefix(source, family)} ${within}${bound} ${c} -j RETURN`,
    );
  }
  lines.push(`-A ${chains.forward} ${within} ${c} -j DROP`);
  return lines;
}

/** Rule lines of the instance's input chain: the network may answer the host, not call it. */
export function inputRules(chains: InstanceChains, family: Family, rules: Ruleset): string[] {
  const c = `-m comment --comment "${chains.comment}"`;
  const from = `-i ${rules.bridge}`;
  const lines = spoofGuards(chains.input, family, rules, c);
  lines.push(
    `-A ${chains.input} ${from} -m conntrack --ctstate RELATED,ESTABLISHED ${c} -j RETURN`,
  );
  if (family === 6) {
    for (const type of NEIGHBOUR_DISCOVERY) {
      lines.push(
        `-A ${chains.input} ${from} -p ipv6-icmp -m icmp6 --icmpv6-type ${type} ${c} -j RETURN`,
      );
    }
  }
  lines.push(`-A ${chains.input} ${from} ${c} -j DROP`);
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
    `^-A ${chains.forward} -s (\\S+)/(?:32|128) (?:-d \\S+ |-i \\S+ -o \\S+ )(?:-m physdev --physdev-in \\S+ )?-m comment --comment ${chains.comment} -j RETURN$`,
  );
  return [...new Set(lines.flatMap((line) => pattern.exec(line)?.[1] ?? []))];
}
