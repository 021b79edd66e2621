// Blocked attempts: a logged packet → who tried to reach whom (containers named by their bridge
// port, which the sender cannot choose), and which of them to report. Each new attempt (kind,
// source, destination, protocol, port) is reported once; the same attempt again is not, until it
// has been quiet for a while. Reports are rate-limited per source and overall, and every table is
// bounded, so a flood costs a bounded number of log lines and of bytes of memory. Pure: the clock
// is given.
import { zeroCounts, type DropKind } from "../drops.js";
import type { Member } from "../model.js";
import type { NflogPacket, PacketHeaders } from "./nflog.js";

/** One end of an attempt: a container of the network, the host, or an address. */
export interface Party {
  /** The container's name, when the end is a member. */
  container?: string;
  /** Its address in the packet (the claimed one, for a forgery's source: see `claimed`). */
  address?: string;
  /** The bridge port the packet came in (or would have gone out) through. */
  port?: string;
  /** The Docker host itself (a member → host attempt). */
  host?: boolean;
}

export interface Attempt {
  kind: DropKind;
  source: Party;
  destination: Party;
  /** tcp, udp, icmp, icmpv6, arp, sctp, ip-proto-N, ethertype-0xNNNN. */
  protocol: string;
  /** The destination port (TCP, UDP, SCTP). */
  port?: number;
  /** The ICMP type. */
  icmpType?: number;
  /** A forgery: the identity claimed (an address, or a MAC) that the port may not carry. */
  claimed?: string;
}

/** What the attribution knows of the network: its members, and the host's addresses on it. */
export interface NetworkView {
  members: readonly Member[];
  /** The name of the interface with this index (a bridge port), if known. */
  interfaceName(ifindex: number): string | undefined;
}

const nameOf = (m: Member): string => m.name || m.id.slice(0, 12);

function byPort(view: NetworkView, ifindex: number | undefined): Party | null {
  if (ifindex === undefined) return null;
  const port = view.interfaceName(ifindex);
  if (port === undefined) return null;
  const member = view.members.find((m) => m.port === port);
  return member ? { container: nameOf(member), port } : { port };
}

function byAddress(view: NetworkView, address: string | undefined): Member | undefined {
  if (address === undefined) return undefined;
  return view.members.find((m) => m.ipv4 === address || m.ipv6 === address);
}

/**
 * Who sent a logged packet to whom. The source is the member whose bridge port the packet came
 * in through (with br_netfilter the physical in-device; in the bridge family the in-device), else
 * the member with its source MAC, else with its source address; the destination likewise by the
 * port it would have left through, else by address, else the host (member → host) or the address.
 */
export function attemptOf(
  packet: Pick<NflogPacket, "indev" | "outdev" | "physindev" | "physoutdev" | "hwaddr">,
  headers: PacketHeaders,
  kind: DropKind,
  view: NetworkView,
): Attempt {
  const inPort = byPort(view, packet.physindev ?? packet.indev);
  const claimedAddress = headers.arp?.senderIp ?? headers.source;
  let source: Party;
  if (inPort?.container) source = { ...inPort, address: headers.source };
  else if (kind === "forged") source = { ...(inPort ?? {}), address: claimedAddress };
  else {
    const member =
      (packet.hwaddr && view.members.find((m) => m.mac === packet.hwaddr)) ||
      byAddress(view, headers.source);
    source = {
      ...(member ? { container: nameOf(member) } : {}),
      ...(inPort?.port ? { port: inPort.port } : {}),
      address: headers.source,
    };
  }
  const outPort = byPort(view, packet.physoutdev ?? packet.outdev);
  const target = byAddress(view, headers.destination);
  const destination: Party = outPort?.container
    ? { ...outPort, address: headers.destination }
    : target
      ? { container: nameOf(target), address: headers.destination }
      : kind === "member-to-host"
        ? { host: true, address: headers.destination }
        : { address: headers.destination };
  const attempt: Attempt = { kind, source, destination, protocol: headers.protocol };
  if (headers.destinationPort !== undefined) attempt.port = headers.destinationPort;
  if (headers.icmpType !== undefined) attempt.icmpType = headers.icmpType;
  if (kind === "forged") {
    const claimed = claimedAddress ?? packet.hwaddr;
    if (claimed !== undefined) attempt.claimed = claimed;
  }
  return attempt;
}

/**
 * What every container's kernel sends unasked, which the rules drop like the rest but which is
 * no attempt of anybody's: IPv6 multicast listener reports and router solicitations to the
 * link's multicast groups. Counted by the kernel, not reported.
 */
export function isAmbient(headers: PacketHeaders): boolean {
  return (
    headers.protocol === "icmpv6" &&
    (headers.destination ?? "").startsWith("ff02:") &&
    [130, 131, 132, 133, 143].includes(headers.icmpType ?? -1)
  );
}

/** How a party reads in a log line: the container's name, "host <address>", or the address. */
export function describeParty(party: Party): string {
  if (party.container) return party.container;
  if (party.host) return `host ${party.address ?? ""}`.trim();
  return party.address ?? (party.port ? `port ${party.port}` : "unknown");
}

/** What an attempt is to the reporter: the same key, the same attempt. */
export function attemptKey(a: Attempt): string {
  const end = (p: Party) => p.container ?? (p.host ? `host ${p.address}` : (p.address ?? p.port));
  return [
    a.kind,
    end(a.source),
    a.claimed ?? "",
    end(a.destination),
    a.protocol,
    a.port ?? a.icmpType ?? "",
  ].join("|");
}

export interface ReporterLimits {
  /** An attempt quiet for this long is new again. */
  quietMs: number;
  /** Attempts remembered (the oldest forgotten first). */
  maxAttempts: number;
  /** Reports per source per minute (a burst of as many), then it is counted, not reported. */
  perSourcePerMinute: number;
  /** Sources whose rate is remembered (the oldest forgotten first). */
  maxSources: number;
  /** Reports per minute, all sources together. */
  perMinute: number;
}

export const REPORTER_LIMITS: ReporterLimits = {
  quietMs: 10 * 60_000,
  maxAttempts: 4096,
  perSourcePerMinute: 10,
  maxSources: 1024,
  perMinute: 60,
};

interface Bucket {
  tokens: number;
  at: number;
}

export type Verdict = "report" | "known" | "suppressed";

export interface Suppressed {
  total: number;
  /** Per source (its description), at most 10 of them, the most suppressed first. */
  sources: Record<string, number>;
}

/**
 * Decides which attempts become log lines. Memory: at most maxAttempts keys, maxSources
 * buckets and maxSources suppression counters, whatever comes in.
 */
export class AttemptReporter {
  private readonly seen = new Map<string, number>();
  private readonly buckets = new Map<string, Bucket>();
  private readonly overall: Bucket;
  private suppressed = new Map<string, number>();
  /** New attempts by kind since the start (reported or suppressed). */
  readonly attempts: Record<DropKind, number> = zeroCounts();
  reported = 0;
  suppressedTotal = 0;

  constructor(
    private readonly limits: ReporterLimits = REPORTER_LIMITS,
    private readonly now: () => number = Date.now,
  ) {
    this.overall = { tokens: limits.perMinute, at: now() };
  }

  offer(attempt: Attempt): Verdict {
    const now = this.now();
    const key = attemptKey(attempt);
    const last = this.seen.get(key);
    this.seen.delete(key);
    this.seen.set(key, now); // the most recent last: the oldest is forgotten first
    bound(this.seen, this.limits.maxAttempts);
    if (last !== undefined && now - last < this.limits.quietMs) return "known";
    this.attempts[attempt.kind]++;
    const source = describeParty(attempt.source);
    let bucket = this.buckets.get(source);
    this.buckets.delete(source);
    bucket ??= { tokens: this.limits.perSourcePerMinute, at: now };
    this.buckets.set(source, bucket);
    bound(this.buckets, this.limits.maxSources);
    refill(bucket, now, this.limits.perSourcePerMinute);
    refill(this.overall, now, this.limits.perMinute);
    if (bucket.tokens < 1 || this.overall.tokens < 1) {
      this.suppressedTotal++;
      this.suppressed.set(source, (this.suppressed.get(source) ?? 0) + 1);
      bound(this.suppressed, this.limits.maxSources);
      return "suppressed";
    }
    bucket.tokens--;
    this.overall.tokens--;
    this.reported++;
    return "report";
  }

  /** The attempts suppressed since the last call, or null: none. */
  takeSuppressed(): Suppressed | null {
    if (this.suppressed.size === 0) return null;
    const entries = [...this.suppressed].sort((a, b) => b[1] - a[1]);
    this.suppressed = new Map();
    return {
      total: entries.reduce((sum, [, n]) => sum + n, 0),
      sources: Object.fromEntries(entries.slice(0, 10)),
    };
  }
}

function refill(bucket: Bucket, now: number, perMinute: number): void {
  bucket.tokens = Math.min(perMinute, bucket.tokens + ((now - bucket.at) * perMinute) / 60_000);
  bucket.at = now;
}

function bound<K, V>(map: Map<K, V>, max: number): void {
  while (map.size > max) map.delete(map.keys().next().value as K);
}
