// A packet walked through the rules TrafficJam renders, as the kernel walks them (kube-proxy's
// tracePacket habit): the bridge guard's chains (nft, bridge family), then the instance's IP
// chains (iptables lines, or the `inet` table's rules), rule by rule, each match evaluated on the
// packet, until a verdict. It evaluates the rendered text itself (the same text the kernel is
// given), not a second copy of the policy: a rule it cannot read is an error, never a guess.
// Pure.
import { isIPv6 } from "node:net";
import { canonicalIpv6, ipv6Hex } from "../addresses.js";
import { splitArgs } from "../firewall/iptables/save-format.js";
import type { ChainBlock, TableModel } from "../firewall/nftables/table.js";

/** A new connection's first packet (TCP SYN, a UDP datagram, an ICMP echo request). */
export interface TracePacket {
  family: 4 | 6;
  source: string;
  destination: string;
  /** tcp, udp, icmp, icmpv6. */
  protocol: string;
  port?: number;
  /** The sender's MAC, when it is a member (it enters through its bridge port). */
  sourceMac?: string;
  /** The bridge port it enters through (a member's), and the one it leaves through. */
  inPort?: string;
  outPort?: string;
  /**
   * The interfaces the IP hooks see: the bridge for a member's side (br_netfilter), another
   * interface's name for the rest of the world; undefined: the host itself (no in, or no out).
   */
  iif?: string;
  oif?: string;
}

export type Verdict = "accept" | "drop" | "continue";

export interface TraceStep {
  /** "bridge trafficjam_web prerouting", "iptables TJF_web", … */
  chain: string;
  /** 1-based position of the rule in its chain; 0: the chain's end (its policy, or a return). */
  index: number;
  rule: string;
  /** What the rule did: matched with this verdict, logged, went to a chain, or returned. */
  effect: string;
}

export interface TraceResult {
  /** accept: this layer lets it through (Docker's rules, or the next table, decide). */
  verdict: "accept" | "drop";
  /** The rule that decided; null: no rule matched (the chain's policy, or the end of ours). */
  decidedBy: TraceStep | null;
  steps: TraceStep[];
  /** Log statements the packet met (NFLOG groups), rate limits aside. */
  logged: number[];
}

export class TraceError extends Error {
  constructor(message: string) {
    super(`cannot evaluate: ${message}`);
    this.name = "TraceError";
  }
}

// ---- nftables rules ----

/** Splits an nft rule into words, keeping `{ … }` and `( … )` groups whole. */
function nftWords(text: string): string[] {
  const words: string[] = [];
  let depth = 0;
  let current = "";
  for (const ch of text) {
    if (ch === "{" || ch === "(") depth++;
    if (ch === "}" || ch === ")") depth--;
    if (ch === " " && depth === 0) {
      if (current) words.push(current);
      current = "";
    } else current += ch;
  }
  if (current) words.push(current);
  return words;
}

/** The fields our rules match, by their spelling (longest first). */
const NFT_FIELDS = [
  "arp saddr ether",
  "arp saddr ip",
  "ether saddr",
  "ether type",
  "ip saddr",
  "ip6 saddr",
  "meta l4proto",
  "meta nfproto",
  "icmpv6 type",
  "ct state",
  "iifname",
  "oifname",
  "@th,64,128",
] as const;
type NftField = (typeof NFT_FIELDS)[number] | "tcp flags";

const ICMPV6_TYPES: Record<number, string> = {
  128: "echo-request",
  129: "echo-reply",
  133: "nd-router-solicit",
  135: "nd-neighbor-solicit",
  136: "nd-neighbor-advert",
  131: "mld-listener-report",
  143: "mld2-listener-report",
};

/** The value of a field for a packet in a hook of a family; undefined: the packet has none
 * (its protocol is another one), so any match on it fails, negated or not. */
function nftField(
  field: NftField,
  p: TracePacket,
  family: "bridge" | "inet",
  hook: string,
): string | undefined {
  const ip = p.family === 4 ? "ip" : "ip6";
  switch (field) {
    case "iifname":
      return family === "bridge" ? p.inPort : p.iif;
    case "oifname":
      if (family === "bridge") return hook === "forward" ? p.outPort : undefined;
      return p.oif;
    case "ether saddr":
      return p.sourceMac;
    case "ether type":
      return ip;
    case "arp saddr ether":
    case "arp saddr ip":
      return undefined; // an IP packet: not ARP
    case "ip saddr":
      return p.family === 4 ? p.source : undefined;
    case "ip6 saddr":
      return p.family === 6 ? canonicalIpv6(p.source) : undefined;
    case "meta l4proto":
      return p.protocol === "icmpv6" ? "ipv6-icmp" : p.protocol;
    case "meta nfproto":
      return p.family === 4 ? "ipv4" : "ipv6";
    case "icmpv6 type":
      return p.protocol === "icmpv6" ? ICMPV6_TYPES[128] : undefined;
    case "ct state":
      return "new";
    case "tcp flags":
      return p.protocol === "tcp" ? "syn" : undefined;
    case "@th,64,128":
      return undefined; // only read with neighbour-discovery types, which a connection is not
  }
}

function nftValues(word: string, sets: TableModel["sets"]): string[] {
  if (word.startsWith("@")) {
    const set = sets.get(word.slice(1));
    if (!set) throw new TraceError(`set ${word} is not in the table`);
    return set.elements;
  }
  if (word.startsWith("{"))
    return word
      .slice(1, -1)
      .split(",")
      .map((v) => v.trim());
  return word.split(",");
}

const norm = (v: string) => (isIPv6(v) ? canonicalIpv6(v) : v.replace(/^"(.*)"$/, "$1"));

interface NftRuleEffect {
  matched: boolean;
  verdict: Verdict;
  goto?: string;
  logs: number[];
}

/** One nft rule of ours, evaluated. */
export function evalNftRule(
  text: string,
  p: TracePacket,
  table: TableModel,
  hook: string,
): NftRuleEffect {
  const family = table.family;
  const words = nftWords(text);
  const logs: number[] = [];
  let i = 0;
  const effect = (matched: boolean, verdict: Verdict, goto?: string): NftRuleEffect => ({
    matched,
    verdict,
    logs: matched ? logs : [],
    ...(goto ? { goto } : {}),
  });
  while (i < words.length) {
    const word = words[i]!;
    // statements
    if (word === "accept" || word === "drop") return effect(true, word);
    if (word === "goto" || word === "jump") return effect(true, "continue", words[i + 1]);
    if (word === "counter") {
      i++;
      continue;
    }
    if (word === "add" && words[i + 1]?.startsWith("@")) {
      i += 3; // add @set { key limit … }: a per-key limit, passed (rate limits aside)
      continue;
    }
    if (word === "limit") {
      // limit rate N/unit [burst N packets]
      i += 3;
      if (words[i] === "burst") i += 3;
      continue;
    }
    if (word === "log") {
      i++;
      while (i < words.length && ["group", "snaplen", "queue-threshold"].includes(words[i]!)) {
        if (words[i] === "group") logs.push(Number(words[i + 1]));
        i += 2;
      }
      continue;
    }
    // matches: field [. field]* [!=] value
    if (word === "tcp" && words[i + 1] === "flags") {
      // tcp flags & (fin | syn | rst | ack) != syn: true for a segment that is not a bare SYN
      const negated = words[i + 4] === "!=";
      const want = words[negated ? i + 5 : i + 4];
      const have = nftField("tcp flags", p, family, hook);
      if (have === undefined || (have === want) === negated) return effect(false, "continue");
      i += negated ? 6 : 5;
      continue;
    }
    const fields: NftField[] = [];
    for (;;) {
      const rest = words.slice(i).join(" ");
      const field = NFT_FIELDS.find((f) => rest === f || rest.startsWith(`${f} `));
      if (!field) throw new TraceError(`nft rule "${text}" at "${words.slice(i).join(" ")}"`);
      fields.push(field);
      i += field.split(" ").length;
      if (words[i] !== ".") break;
      i++;
    }
    const negated = words[i] === "!=";
    if (negated) i++;
    const valueWord = words[i++];
    if (valueWord === undefined) throw new TraceError(`nft rule "${text}": a match without value`);
    const parts = fields.map((f) => nftField(f, p, family, hook));
    if (parts.some((v) => v === undefined)) return effect(false, "continue");
    const key = parts.map((v) => norm(v!)).join(" . ");
    const values = nftValues(valueWord, table.sets).map((v) =>
      v
        .split(" . ")
        .map((x) => norm(x.trim()))
        .join(" . "),
    );
    const within = values.includes(key);
    if (within === negated) return effect(false, "continue");
  }
  return effect(true, "continue");
}

/** Walks a base chain of an nft table (and the chains it goes to). */
export function traceNftChain(table: TableModel, chainName: string, p: TracePacket): TraceResult {
  const steps: TraceStep[] = [];
  const logged: number[] = [];
  const label = (c: string) => `${table.family} ${table.name} ${c}`;
  let chainName2 = chainName;
  const hook = table.chains.get(chainName)?.hook?.hook ?? chainName;
  for (let hops = 0; hops < 8; hops++) {
    const chain: ChainBlock | undefined = table.chains.get(chainName2);
    if (!chain) {
      if (hops === 0) return { verdict: "accept", decidedBy: null, steps, logged }; // no such hook here
      throw new TraceError(`chain ${chainName2} is not in ${table.family} ${table.name}`);
    }
    let next: string | undefined;
    for (const [index, rule] of chain.rules.entries()) {
      const e = evalNftRule(rule.text, p, table, hook);
      if (!e.matched) continue;
      logged.push(...e.logs);
      const step = { chain: label(chainName2), index: index + 1, rule: rule.text, effect: "" };
      if (e.verdict === "accept" || e.verdict === "drop") {
        step.effect = e.verdict;
        steps.push(step);
        return { verdict: e.verdict, decidedBy: step, steps, logged };
      }
      if (e.goto) {
        step.effect = `goto ${e.goto}`;
        steps.push(step);
        next = e.goto;
        break;
      }
      step.effect = e.logs.length ? `logged (NFLOG group ${e.logs.join(", ")})` : "matched";
      steps.push(step);
    }
    if (next === undefined) {
      const policy = table.chains.get(chainName)?.hook?.policy ?? "accept";
      steps.push({ chain: label(chainName2), index: 0, rule: "", effect: `end: policy ${policy}` });
      return { verdict: policy === "drop" ? "drop" : "accept", decidedBy: null, steps, logged };
    }
    chainName2 = next;
  }
  throw new TraceError(`too many gotos from ${label(chainName)}`);
}

// ---- iptables rules ----

function inPrefix(address: string, cidr: string): boolean {
  const [base = "", lengthText] = cidr.split("/");
  const v6 = isIPv6(base);
  if (v6 !== isIPv6(address)) return false;
  const bits = v6 ? 128 : 32;
  const length = lengthText === undefined ? bits : Number(lengthText);
  const toBig = (a: string): bigint => {
    if (!v6) return a.split(".").reduce((n, o) => (n << 8n) | BigInt(Number(o)), 0n);
    return BigInt(ipv6Hex(a));
  };
  const shift = BigInt(bits - length);
  return toBig(address) >> shift === toBig(base) >> shift;
}

interface IptRuleEffect {
  matched: boolean;
  /** The target: DROP, RETURN, ACCEPT, NFLOG, a chain (jump), or goto:<chain>. */
  target?: string;
  group?: number;
}

/** One `-A CHAIN …` line of ours, evaluated (the IP hooks' view of a bridged packet). */
export function evalIptablesRule(line: string, p: TracePacket): IptRuleEffect {
  const args = splitArgs(line).slice(2);
  const { iif, oif } = p;
  let negate = false;
  let target: string | undefined;
  let group: number | undefined;
  const fail = (): IptRuleEffect => ({ matched: false });
  const test = (ok: boolean) => ok !== negate;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const v = args[i + 1];
    if (a === "!") {
      negate = true;
      continue;
    }
    switch (a) {
      case "-s":
        if (!test(inPrefix(p.source, v!))) return fail();
        i++;
        break;
      case "-d":
        if (!test(inPrefix(p.destination, v!))) return fail();
        i++;
        break;
      case "-i":
        if (!test(iif === v)) return fail();
        i++;
        break;
      case "-o":
        if (!test(oif === v)) return fail();
        i++;
        break;
      case "-p": {
        const proto = p.protocol === "icmpv6" ? "ipv6-icmp" : p.protocol;
        if (!test(proto === v || (v === "icmpv6" && proto === "ipv6-icmp"))) return fail();
        i++;
        break;
      }
      case "-m":
        i++; // the module's options follow
        break;
      case "--physdev-in":
        // The bridge port the packet came in through; none for the host's own packets.
        if (!test(p.inPort !== undefined && p.inPort === v)) return fail();
        i++;
        break;
      case "--ctstate":
        if (!test(v!.split(",").includes("NEW"))) return fail();
        i++;
        break;
      case "--icmpv6-type":
        if (!test(p.protocol === "icmpv6" && v === "128")) return fail();
        i++;
        break;
      case "--tcp-flags": {
        // --tcp-flags MASK COMP: the packet's flags within MASK are exactly COMP (a SYN: SYN)
        const comp = args[i + 2];
        if (p.protocol !== "tcp") return fail();
        if (!test(comp === "SYN")) return fail();
        i += 2;
        break;
      }
      case "--comment":
        i++;
        break;
      case "--limit":
      case "--limit-burst":
        i++; // rate limits aside
        break;
      case "-j":
        target = v;
        i++;
        break;
      case "-g":
        target = `goto:${v}`;
        i++;
        break;
      case "--nflog-group":
        group = Number(v);
        i++;
        break;
      case "--nflog-size":
      case "--nflog-threshold":
        i++;
        break;
      default:
        if (a.startsWith("--hashlimit-")) {
          i++;
          break;
        }
        throw new TraceError(`iptables rule "${line}" at "${a}"`);
    }
    negate = false;
  }
  return {
    matched: true,
    ...(target ? { target } : {}),
    ...(group !== undefined ? { group } : {}),
  };
}

/** Walks one of our iptables chains (its rules as rendered, `-A CHAIN …`). */
export function traceIptablesChain(
  label: string,
  lines: readonly string[],
  p: TracePacket,
): TraceResult {
  const steps: TraceStep[] = [];
  const logged: number[] = [];
  for (const [index, line] of lines.entries()) {
    const e = evalIptablesRule(line, p);
    if (!e.matched) continue;
    const step = { chain: label, index: index + 1, rule: line, effect: "" };
    if (e.target === "NFLOG") {
      if (e.group !== undefined) logged.push(e.group);
      step.effect = `logged (NFLOG group ${e.group})`;
      steps.push(step);
      continue;
    }
    if (e.target === "DROP") {
      step.effect = "DROP";
      steps.push(step);
      return { verdict: "drop", decidedBy: step, steps, logged };
    }
    if (e.target === "RETURN" || e.target === "ACCEPT") {
      step.effect = `${e.target}: back to Docker's rules`;
      steps.push(step);
      return { verdict: "accept", decidedBy: step, steps, logged };
    }
    throw new TraceError(`iptables target ${e.target ?? "(none)"} in "${line}"`);
  }
  steps.push({ chain: label, index: 0, rule: "", effect: "end of chain: back to Docker's rules" });
  return { verdict: "accept", decidedBy: null, steps, logged };
}
