// The seed-compatible chain layout: Docker's chains jump to shared entry chains, which hold one
// jump per instance to the instance's own chains. Every rule we own carries the instance comment.
//
// The read-back must not depend on how a given iptables version spells a rule (`-p ipv6-icmp` or
// `-p icmpv6`, the order of matches, quoting): each rule of the instance chains carries, after
// the instance comment and a space, a hash of the rule as we render it, and a rule is compared
// by that hash (as Calico Felix does), with its verdict and interfaces, never by its text.
import { createHash } from "node:crypto";
import { LOG_LIMITS, limitTableName, type DropKind } from "../../drops.js";
import type { Family, Ruleset } from "../../model.js";
import { splitArgs } from "./save-format.js";

export const ENTRY_FORWARD = "TRAFFICJAM";
export const ENTRY_INPUT = "TRAFFICJAM_INPUT";
export const ENTRY_OUTPUT = "TRAFFICJAM_OUTPUT";
export const DOCKER_USER = "DOCKER-USER";

export interface InstanceChains {
  forward: string;
  input: string;
  output: string;
  /** `trafficjam:<ID>`: bare on the jumps, followed by a space and a hash on the chains' rules. */
  comment: string;
}

/** Chain names stay within iptables' 28-character limit for a 24-character INSTANCE_ID. */
export function instanceChains(instanceId: string): InstanceChains {
  return {
    forward: `TJF_${instanceId}`,
    input: `TJI_${instanceId}`,
    output: `TJO_${instanceId}`,
    comment: `trafficjam:${instanceId}`,
  };
}

function hostPrefix(address: string, family: Family): string {
  return `${address}/${family === 4 ? 32 : 128}`;
}

/** The hash a rule's comment carries: of the rule as we render it, without the comment. */
function ruleHash(rule: string): string {
  return createHash("sha256").update(rule).digest("hex").slice(0, 12);
}

/**
 * One rule of an instance chain, `-A <chain> <matches> -j <verdict>`, with the instance comment
 * and the hash of exactly that text. The comment goes last before the verdict, where
 * iptables-save prints it, so that the written and the printed rule read alike.
 */
function commentedRule(
  chains: InstanceChains,
  chain: string,
  matches: string,
  verdict: string,
): string {
  const hash = ruleHash(`-A ${chain} ${matches} -j ${verdict}`);
  return `-A ${chain} ${matches} -m comment --comment "${chains.comment} ${hash}" -j ${verdict}`;
}

/** Neighbour discovery must cross the bridge and reach the host, or IPv6 breaks entirely. */
const NEIGHBOUR_DISCOVERY = [135, 136] as const; // solicitation, advertisement

/** What a rule that drops does: DROP, or in audit mode RETURN (to Docker's rules). */
export const dropVerdict = (rules: Pick<Ruleset, "mode">) =>
  rules.mode === "audit" ? "RETURN" : "DROP";

/**
 * A drop of `kind`: the rule that drops (RETURN in audit mode), and before it, when the ruleset
 * logs, the same matches with the kernel-side limits (per source address: hashlimit; per rule:
 * limit) sending the packet to its kind's NFLOG group. The drop rule's counter counts them all.
 */
function drop(
  chains: InstanceChains,
  chain: string,
  matches: string,
  kind: DropKind,
  rules: Ruleset,
): string[] {
  const dropping = commentedRule(chains, chain, matches, dropVerdict(rules));
  if (!rules.log) return [dropping];
  const L = LOG_LIMITS;
  const limits =
    `-m hashlimit --hashlimit-upto ${L.perSource}/sec --hashlimit-burst ${L.perSourceBurst} ` +
    `--hashlimit-mode srcip --hashlimit-name ${limitTableName(rules.instanceId, kind)} ` +
    `--hashlimit-htable-max ${L.sources} --hashlimit-htable-expire ${L.sourceTtlS * 1000} ` +
    `-m limit --limit ${L.perRule}/sec --limit-burst ${L.perRuleBurst}`;
  const target =
    `NFLOG --nflog-group ${rules.log.groups[kind]} --nflog-size ${L.snaplen} ` +
    `--nflog-threshold ${L.queueThreshold}`;
  return [commentedRule(chains, chain, `${matches} ${limits}`, target), dropping];
}

/**
 * Drops of packets carrying a whitelisted address that entered the bridge through any port but
 * the member's own (br_netfilter records the port; `physdev` matches it for bridged and routed
 * packets alike). They come first, before even the replies: a forged packet must not slip into
 * a tracked flow. The bridge guard table binds every member's port the same way; these keep
 * the allowances bound within iptables itself.
 */
function spoofGuards(
  chains: InstanceChains,
  chain: string,
  family: Family,
  rules: Ruleset,
): string[] {
  return rules.families[family].portBindings.flatMap(({ address, port }) =>
    drop(
      chains,
      chain,
      `-s ${hostPrefix(address, family)} -i ${rules.bridge} -m physdev ! --physdev-in ${port}`,
      "forged",
      rules,
    ),
  );
}

/** Neighbour solicitations and advertisements matching `matches` (IPv6 only) → RETURN. */
function neighbourDiscovery(
  chains: InstanceChains,
  chain: string,
  family: Family,
  matches: string,
): string[] {
  if (family !== 6) return [];
  return NEIGHBOUR_DISCOVERY.map((type) =>
    commentedRule(
      chains,
      chain,
      `${matches} -p ipv6-icmp -m icmp6 --icmpv6-type ${type}`,
      "RETURN",
    ),
  );
}

/**
 * Rule lines of the instance's forward chain. Everything is matched by the bridge (in and out:
 * between two of its ports, bridged or routed back), never by subnet: link-local, broadcast,
 * multicast and forged sources are members' traffic too. Order matters: forged whitelisted
 * sources, replies, neighbour discovery, allowances (each bound to its bridge port when known),
 * drop.
 */
export function forwardRules(chains: InstanceChains, family: Family, rules: Ruleset): string[] {
  const chain = chains.forward;
  const within = `-i ${rules.bridge} -o ${rules.bridge}`;
  const lines = spoofGuards(chains, chain, family, rules);
  lines.push(
    commentedRule(chains, chain, `${within} -m conntrack --ctstate RELATED,ESTABLISHED`, "RETURN"),
    ...neighbourDiscovery(chains, chain, family, within),
  );
  const { allowedSources, portBindings } = rules.families[family];
  const portOf = new Map(portBindings.map((b) => [b.address, b.port]));
  for (const source of allowedSources) {
    const port = portOf.get(source);
    const bound = port ? ` -m physdev --physdev-in ${port}` : "";
    lines.push(
      commentedRule(chains, chain, `-s ${hostPrefix(source, family)} ${within}${bound}`, "RETURN"),
    );
  }
  lines.push(...drop(chains, chain, within, "member-to-member", rules));
  return lines;
}

/** Rule lines of the instance's input chain: the network may answer the host, not call it. */
export function inputRules(chains: InstanceChains, family: Family, rules: Ruleset): string[] {
  const chain = chains.input;
  const from = `-i ${rules.bridge}`;
  return [
    ...spoofGuards(chains, chain, family, rules),
    commentedRule(chains, chain, `${from} -m conntrack --ctstate RELATED,ESTABLISHED`, "RETURN"),
    ...neighbourDiscovery(chains, chain, family, from),
    ...drop(chains, chain, from, "member-to-host", rules),
  ];
}

/**
 * Rule lines of the instance's output chain (with the input chain: the host is protected). A
 * member → host flow TrafficJam cut (conntrack) would be picked up again by the host's next
 * segment to the member (conntrack's loose pickup takes a mid-stream packet for a new flow, the
 * host's side of it), and the member's packets would then pass as its replies. So a TCP segment
 * from the host into the network that conntrack sees as new but that opens nothing (no SYN) is
 * dropped: a connection the host opens starts with a SYN, and one it keeps is tracked.
 */
export function outputRules(chains: InstanceChains, _family: Family, rules: Ruleset): string[] {
  return [
    commentedRule(
      chains,
      chains.output,
      `-o ${rules.bridge} -p tcp -m conntrack --ctstate NEW -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN`,
      dropVerdict(rules),
    ),
  ];
}

/** The jump an entry chain holds for one instance: the bare instance comment, no hash. */
export function instanceJump(entry: string, target: string, chains: InstanceChains): string {
  return `-A ${entry} -m comment --comment "${chains.comment}" -j ${target}`;
}

/** The shared jump from Docker's chain (or INPUT/FORWARD) into an entry chain. */
export function anchorJump(anchor: string, entry: string): string {
  return `-A ${anchor} -j ${entry}`;
}

/** The values of every occurrence of `option` in a rule's arguments, "!" first when negated. */
function optionValues(args: readonly string[], option: string): string[] {
  return args.flatMap((arg, i) => {
    const value = args[i + 1];
    if (arg !== option || value === undefined) return [];
    return [args[i - 1] === "!" ? `! ${value}` : value];
  });
}

const commentOf = (args: readonly string[]) => optionValues(args, "--comment")[0] ?? "";

/**
 * The hash in our comment `trafficjam:<ID> <hash>`, or null: not ours, or written before the
 * hashes. The ID ends at the space, so `web` never takes `web2`'s rules.
 */
function ourHash(args: readonly string[], chains: InstanceChains): string | null {
  const comment = commentOf(args);
  const prefix = `${chains.comment} `;
  const hash = comment.startsWith(prefix) ? comment.slice(prefix.length) : "";
  return /^[0-9a-f]{12}$/.test(hash) ? hash : null;
}

/** Whether a rule is ours: with a hash, or as the versions before them wrote it (bare comment). */
function isOurs(args: readonly string[], chains: InstanceChains): boolean {
  return commentOf(args) === chains.comment || ourHash(args, chains) !== null;
}

/**
 * What the read-back knows a rule of an instance chain by, or null when it is not ours (or was
 * written before the hashes): its hash, and the fields iptables itself (not an extension)
 * prints verbatim in every version: interfaces and verdict. The other matches are not compared,
 * since their spelling varies: one changed under our comment goes unnoticed (as with Felix), but
 * not a changed verdict or interface.
 */
export function ruleIdentity(line: string, chains: InstanceChains): string | null {
  const args = splitArgs(line);
  const hash = ourHash(args, chains);
  if (hash === null) return null;
  const core = ["-i", "-o", "-j"].map(
    (option) => `${option} ${optionValues(args, option).join(",")}`,
  );
  return [hash, ...core].join(" ");
}

/**
 * Sources an instance chain currently allows, read from its rules (normalized iptables-save
 * lines): what the kernel enforced before this pass, even across a restart of the daemon. An
 * allowance is a RETURN of ours from a single address (`-s <addr>/32|128`), whatever else it
 * matches, so that the rules of versions before the hashes (matched by subnet or by bridge)
 * are read too, and an upgrade revokes what they allowed.
 */
export function allowedSourcesIn(lines: readonly string[], chains: InstanceChains): string[] {
  const sources = lines.flatMap((line) => {
    const args = splitArgs(line);
    const ours = args[0] === "-A" && args[1] === chains.forward && isOurs(args, chains);
    if (!ours || optionValues(args, "-j").join() !== "RETURN") return [];
    // A forgery guard (a packet with the address from another port), RETURN in audit mode.
    if (optionValues(args, "--physdev-in").some((v) => v.startsWith("! "))) return [];
    const [source, ...others] = optionValues(args, "-s");
    const address = others.length === 0 ? /^([^!\s]\S*)\/(?:32|128)$/.exec(source ?? "") : null;
    return address?.[1] ?? [];
  });
  return [...new Set(sources)];
}
