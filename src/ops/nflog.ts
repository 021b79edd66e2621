// The kernel's NFLOG messages as `tcpdump -i nflog:<groups> -w -` writes them: a pcap stream of
// link type NFLOG (239), each record the NFLOG header (family, version, group) and the netlink
// attributes of the message (their length and type in host byte order, values in network byte
// order: libpcap's DLT_NFLOG). Decoded into what the blocked-attempt log needs: the group, the
// ports the packet came in (and would have gone out) through, its source MAC, and the headers of
// the packet. Pure, and it trusts nothing: another program's output is checked as it is read.

/** One logged packet. */
export interface NflogPacket {
  /** The NFLOG group: the kind of drop (see drops.ts). */
  group: number;
  /** NFPROTO_* of the hook that logged it: 2 IPv4, 10 IPv6, 7 bridge. */
  family: number;
  /** The packet's ethertype (NFULA_PACKET_HDR), e.g. 0x0800. */
  ethertype: number;
  /** Interfaces by index: in/out device (the bridge, or in the bridge family the port), and
   * with br_netfilter the bridge ports themselves (physical in/out). */
  indev?: number;
  outdev?: number;
  physindev?: number;
  physoutdev?: number;
  /** The source MAC address, when the packet had a link-layer header. */
  hwaddr?: string;
  /** The packet from its network header on (at most the log rules' snaplen). */
  payload: Uint8Array;
  /** Capture time, ms since the epoch. */
  timeMs: number;
}

const LINKTYPE_NFLOG = 239;
const MAX_RECORD = 65_536;

/** The NFULA_* attributes read. */
const Attr = {
  PacketHdr: 1,
  IndDev: 4,
  OutDev: 5,
  PhysInDev: 6,
  PhysOutDev: 7,
  HwAddr: 8,
  Payload: 9,
} as const;

export class PcapError extends Error {
  constructor(message: string) {
    super(`unexpected tcpdump output: ${message}`);
    this.name = "PcapError";
  }
}

/**
 * Reads a pcap stream chunk by chunk: push() returns the packets completed by each chunk. Keeps
 * at most one partial record (bounded by MAX_RECORD): memory does not grow with the stream.
 */
export class PcapReader {
  private buffer: Uint8Array = new Uint8Array(0);
  private little: boolean | null = null;
  private nanos = false;

  push(chunk: Uint8Array): NflogPacket[] {
    this.buffer = this.buffer.length === 0 ? chunk : concat(this.buffer, chunk);
    const out: NflogPacket[] = [];
    let at = 0;
    if (this.little === null) {
      if (this.buffer.length < 24) return out;
      this.header(view(this.buffer));
      at = 24;
    }
    const data = view(this.buffer);
    const le = this.little!;
    while (this.buffer.length - at >= 16) {
      const seconds = data.getUint32(at, le);
      const fraction = data.getUint32(at + 4, le);
      const length = data.getUint32(at + 8, le);
      if (length > MAX_RECORD) throw new PcapError(`a record of ${length} bytes`);
      if (this.buffer.length - at - 16 < length) break;
      const record = this.buffer.subarray(at + 16, at + 16 + length);
      const timeMs = seconds * 1000 + (this.nanos ? fraction / 1e6 : fraction / 1e3);
      const packet = decodeNflog(record, timeMs);
      if (packet) out.push(packet);
      at += 16 + length;
    }
    this.buffer = this.buffer.subarray(at);
    return out;
  }

  private header(data: DataView): void {
    const magic = data.getUint32(0, true);
    if (magic === 0xa1b2c3d4 || magic === 0xa1b23c4d) this.little = true;
    else if (magic === 0xd4c3b2a1 || magic === 0x4d3cb2a1) this.little = false;
    else throw new PcapError(`not a pcap stream (magic 0x${magic.toString(16)})`);
    this.nanos = magic === 0xa1b23c4d || magic === 0x4d3cb2a1;
    const linktype = data.getUint32(20, this.little) & 0x0fffffff;
    if (linktype !== LINKTYPE_NFLOG) throw new PcapError(`link type ${linktype}, not NFLOG`);
  }
}

const view = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

const mac = (bytes: Uint8Array) => [...bytes].map((b) => b.toString(16).padStart(2, "0")).join(":");

/**
 * One DLT_NFLOG record → the packet, or null when it is not one (a version we do not know, no
 * payload). Attributes: length and type in host byte order (little-endian here: x86 and arm64),
 * padded to 4 bytes.
 */
export function decodeNflog(record: Uint8Array, timeMs = 0): NflogPacket | null {
  if (record.length < 4) return null;
  const data = view(record);
  const family = data.getUint8(0);
  if (data.getUint8(1) !== 0) return null; // NFULNL_VERSION
  const group = data.getUint16(2, false);
  const packet: Partial<NflogPacket> & { payload?: Uint8Array } = { group, family, timeMs };
  let at = 4;
  while (record.length - at >= 4) {
    const length = data.getUint16(at, true);
    const type = data.getUint16(at + 2, true) & 0x7fff;
    if (length < 4 || at + length > record.length) break;
    const value = record.subarray(at + 4, at + length);
    const value32 = () => (value.length >= 4 ? view(value).getUint32(0, false) : undefined);
    switch (type) {
      case Attr.PacketHdr:
        if (value.length >= 2) packet.ethertype = view(value).getUint16(0, false);
        break;
      case Attr.IndDev:
        packet.indev = value32();
        break;
      case Attr.OutDev:
        packet.outdev = value32();
        break;
      case Attr.PhysInDev:
        packet.physindev = value32();
        break;
      case Attr.PhysOutDev:
        packet.physoutdev = value32();
        break;
      case Attr.HwAddr: {
        const len = value.length >= 2 ? view(value).getUint16(0, false) : 0;
        if (len === 6 && value.length >= 10) packet.hwaddr = mac(value.subarray(4, 10));
        break;
      }
      case Attr.Payload:
        packet.payload = value;
        break;
    }
    at += (length + 3) & ~3;
  }
  if (!packet.payload) return null;
  return { ethertype: 0, ...packet } as NflogPacket;
}

/** What the headers of a logged packet say. */
export interface PacketHeaders {
  protocol: string;
  source?: string;
  destination?: string;
  sourcePort?: number;
  destinationPort?: number;
  /** ICMP/ICMPv6 type. */
  icmpType?: number;
  /** ARP: the MAC and address the sender claims, and the address it asks or answers about. */
  arp?: { op: number; senderMac: string; senderIp: string; targetIp: string };
}

const ETH_IPV4 = 0x0800;
const ETH_IPV6 = 0x86dd;
const ETH_ARP = 0x0806;
const PROTOCOLS: Record<number, string> = {
  1: "icmp",
  6: "tcp",
  17: "udp",
  58: "icmpv6",
  132: "sctp",
};
/** IPv6 extension headers walked to reach the transport header. */
const EXTENSIONS = new Set([0, 43, 60]);

function ipv6Text(bytes: Uint8Array): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  // The longest run of zero groups (two or more) becomes "::" (RFC 5952).
  let best = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && groups[j] === "0") j++;
    if (j - i > bestLength) [best, bestLength] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  if (best < 0) return groups.join(":");
  return `${groups.slice(0, best).join(":")}::${groups.slice(best + bestLength).join(":")}`;
}

const ipv4Text = (bytes: Uint8Array) => [...bytes].join(".");

function transport(headers: PacketHeaders, protocol: number, l4: Uint8Array): void {
  headers.protocol = PROTOCOLS[protocol] ?? `ip-proto-${protocol}`;
  if ((protocol === 6 || protocol === 17 || protocol === 132) && l4.length >= 4) {
    headers.sourcePort = view(l4).getUint16(0, false);
    headers.destinationPort = view(l4).getUint16(2, false);
  } else if ((protocol === 1 || protocol === 58) && l4.length >= 1) {
    headers.icmpType = l4[0];
  }
}

/** The headers of a logged packet (its payload starts at the network header). */
export function headersOf(
  packet: Pick<NflogPacket, "ethertype" | "family" | "payload">,
): PacketHeaders {
  const p = packet.payload;
  const ethertype =
    packet.ethertype || (packet.family === 2 ? ETH_IPV4 : packet.family === 10 ? ETH_IPV6 : 0);
  const headers: PacketHeaders = {
    protocol: `ethertype-0x${ethertype.toString(16).padStart(4, "0")}`,
  };
  if (ethertype === ETH_IPV4 && p.length >= 20 && p[0]! >> 4 === 4) {
    const ihl = (p[0]! & 0x0f) * 4;
    headers.source = ipv4Text(p.subarray(12, 16));
    headers.destination = ipv4Text(p.subarray(16, 20));
    const fragmentOffset = view(p).getUint16(6, false) & 0x1fff;
    if (fragmentOffset === 0) transport(headers, p[9]!, p.subarray(ihl));
    else headers.protocol = PROTOCOLS[p[9]!] ?? `ip-proto-${p[9]}`;
  } else if (ethertype === ETH_IPV6 && p.length >= 40 && p[0]! >> 4 === 6) {
    headers.source = ipv6Text(p.subarray(8, 24));
    headers.destination = ipv6Text(p.subarray(24, 40));
    let next = p[6]!;
    let at = 40;
    while (EXTENSIONS.has(next) && p.length >= at + 8) {
      const following = p[at]!;
      at += (p[at + 1]! + 1) * 8;
      next = following;
    }
    transport(headers, next, p.subarray(Math.min(at, p.length)));
  } else if (ethertype === ETH_ARP && p.length >= 28) {
    headers.protocol = "arp";
    headers.arp = {
      op: view(p).getUint16(6, false),
      senderMac: mac(p.subarray(8, 14)),
      senderIp: ipv4Text(p.subarray(14, 18)),
      targetIp: ipv4Text(p.subarray(24, 28)),
    };
    headers.source = headers.arp.senderIp;
    headers.destination = headers.arp.targetIp;
  }
  return headers;
}
