// `trafficjam explain <from> <to> [port/proto]`: whether TrafficJam lets a new connection from one
// end to the other through, and the rule that decides, found by walking the rules this
// configuration renders (the ones `plan` prints and the daemon installs) as the kernel walks them
// (ops/trace.ts): the bridge guard's chains, then the instance's IP chains. Ends are containers
// of the network (by name or ID), or addresses (the host's, or anybody's). Changes nothing.
import { isIP } from "node:net";
import type { Config } from "../config.js";
import { canonicalIpv6 } from "../addresses.js";
import { kindOfGroup, type DropKind } from "../drops.js";
import { localHost, type Host } from "../host/host.js";
import { hostAddresses } from "../host/links.js";
import type { Member } from "../model.js";
import { createBackend } from "../firewall/index.js";
import { desiredNow, render, type Rendered } from "./desired.js";
import {
  traceIptablesChain,
  traceNftChain,
  type TracePacket,
  type TraceResult,
  type TraceStep,
} from "./trace.js";

export class ExplainUsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ExplainUsageError";
  }
}

export interface Service {
  protocol: "tcp" | "udp" | "icmp";
  port?: number;
}

/** "80/tcp", "53/udp", "tcp", "udp", "icmp" (or "ping"); default: tcp, any port. */
export function parseService(text: string | undefined): Service {
  if (text === undefined || text === "") return { protocol: "tcp" };
  const t = text.toLowerCase();
  if (t === "icmp" || t === "ping" || t === "icmpv6") return { protocol: "icmp" };
  if (t === "tcp" || t === "udp") return { protocol: t };
  const m = /^(?:(\d{1,5})\/(tcp|udp)|(tcp|udp)\/(\d{1,5}))$/.exec(t);
  const port = Number(m?.[1] ?? m?.[4]);
  const protocol = (m?.[2] ?? m?.[3]) as "tcp" | "udp" | undefined;
  if (!protocol || !(port >= 1 && port <= 65535))
    throw new ExplainUsageError(`${text}: expected PORT/PROTO (80/tcp, 53/udp), tcp, udp or icmp`);
  return { protocol, port };
}

/** One end: a member of the network, the host (one of its addresses), or another address. */
export type End =
  | { kind: "member"; member: Member; address: string }
  | { kind: "host"; address: string }
  | { kind: "elsewhere"; address: string };

/** A container by exact name, or by ID (a unique prefix); null: no member is. */
function memberOf(members: readonly Member[], ref: string): Member | null {
  const byName = members.find((m) => m.name === ref || m.name === ref.replace(/^\//, ""));
  if (byName) return byName;
  const byId = members.filter((m) => ref.length >= 4 && m.id.startsWith(ref));
  return byId.length === 1 ? byId[0]! : null;
}

const sameAddress = (a: string, b: string) =>
  a === b || (a.includes(":") && b.includes(":") && canonicalIpv6(a) === canonicalIpv6(b));

export function resolveEnd(
  ref: string,
  members: readonly Member[],
  hostAddresses: readonly string[],
  family: 4 | 6,
): End {
  if (isIP(ref)) {
    const member = members.find(
      (m) => (m.ipv4 && sameAddress(m.ipv4, ref)) || (m.ipv6 && sameAddress(m.ipv6, ref)),
    );
    if (member) return { kind: "member", member, address: ref };
    if (hostAddresses.some((a) => sameAddress(a, ref))) return { kind: "host", address: ref };
    return { kind: "elsewhere", address: ref };
  }
  const member = memberOf(members, ref);
  if (!member)
    throw new ExplainUsageError(
      `${ref}: no container of that name or ID on the network (give an address for anything else)`,
    );
  const address = family === 4 ? member.ipv4 : member.ipv6;
  if (!address) throw new ExplainUsageError(`${ref} has no IPv${family} address on the network`);
  return { kind: "member", member, address };
}

/** The packet of a new connection from one end to the other, as the hooks see it. */
export function packetOf(from: End, to: End, service: Service, bridge: string): TracePacket {
  const family = from.address.includes(":") || to.address.includes(":") ? 6 : 4;
  const protocol =
    service.protocol === "icmp" ? (family === 6 ? "icmpv6" : "icmp") : service.protocol;
  const elsewhere = "(another interface)";
  const p: TracePacket = {
    family,
    source: from.address,
    destination: to.address,
    protocol,
    ...(service.port !== undefined ? { port: service.port } : {}),
  };
  if (from.kind === "member") {
    if (from.member.port) p.inPort = from.member.port;
    if (from.member.mac) p.sourceMac = from.member.mac;
    p.iif = bridge;
  } else if (from.kind === "elsewhere") p.iif = elsewhere;
  if (to.kind === "member") {
    if (to.member.port) p.outPort = to.member.port;
    p.oif = bridge;
  } else if (to.kind === "elsewhere") p.oif = elsewhere;
  return p;
}

export interface Explanation {
  verdict: "allowed" | "dropped";
  /** Audit mode: allowed, but enforce mode would drop it. */
  wouldDrop: boolean;
  /** The kind of drop, from the log group of the rules it met. */
  kind: DropKind | null;
  decidedBy: TraceStep | null;
  layers: Array<{ layer: string; result: TraceResult }>;
  packet: TracePacket;
}

/** Walks the packet through the rendered rules, layer by layer, as the kernel does. */
export function explainPacket(
  packet: TracePacket,
  rendered: Rendered,
  location: string,
  groups: Parameters<typeof kindOfGroup>[0] | null,
): Explanation {
  const layers: Explanation["layers"] = [];
  // Which hooks: a member's packet is bridged (the guard's prerouting, then its forward or
  // input); the IP hooks: forward between two interfaces, input to the host, output from it.
  const ipHook = packet.iif && packet.oif ? "forward" : packet.iif ? "input" : "output";
  const bridged = packet.inPort !== undefined;
  const guardHooks = bridged
    ? [
        "prerouting",
        ...(ipHook === "forward" && packet.outPort
          ? ["forward"]
          : ipHook === "input"
            ? ["input"]
            : []),
      ]
    : [];
  const guardName = `bridge ${rendered.guard.name}`;
  for (const hook of guardHooks) {
    const result = traceNftChain(rendered.guard, hook, packet);
    layers.push({ layer: `${guardName} ${hook}`, result });
    if (result.verdict === "drop") break;
  }
  if (!layers.some((l) => l.result.verdict === "drop")) {
    if (rendered.kind === "iptables") {
      const chain = rendered.chains[packet.family][ipHook];
      const path =
        ipHook === "forward"
          ? "FORWARD → DOCKER-USER → TRAFFICJAM"
          : ipHook === "input"
            ? "INPUT → TRAFFICJAM_INPUT"
            : "OUTPUT → TRAFFICJAM_OUTPUT";
      layers.push({
        layer: `${location} ${path} → ${chain.name}`,
        result: traceIptablesChain(`${location} ${chain.name}`, chain.lines, packet),
      });
    } else {
      layers.push({
        layer: `inet ${rendered.inet.name} ${ipHook}`,
        result: traceNftChain(rendered.inet, ipHook, packet),
      });
    }
  }
  const dropped = layers.find((l) => l.result.verdict === "drop");
  const logged = layers.flatMap((l) => l.result.logged);
  const kind = groups && logged.length > 0 ? kindOfGroup(groups, logged[0]!) : null;
  const decidedBy =
    dropped?.result.decidedBy ??
    [...layers].reverse().find((l) => l.result.decidedBy)?.result.decidedBy ??
    null;
  return {
    verdict: dropped ? "dropped" : "allowed",
    wouldDrop: !dropped && logged.length > 0,
    kind,
    decidedBy,
    layers,
    packet,
  };
}

const endText = (end: End) =>
  end.kind === "member"
    ? `${end.member.name} (${end.address}${end.member.port ? `, bridge port ${end.member.port}` : ", bridge port unknown"})`
    : end.kind === "host"
      ? `the host (${end.address})`
      : `${end.address} (outside the network)`;

export async function runExplain(
  config: Config,
  args: readonly string[],
  json: boolean,
  host: Host = localHost,
): Promise<number> {
  const [fromRef, toRef, serviceText] = args;
  if (!fromRef || !toRef || args.length > 3)
    throw new ExplainUsageError("usage: trafficjam explain <from> <to> [port/proto] [--json]");
  const service = parseService(serviceText);
  const backend = createBackend(config.firewallBackend, config.instanceId, { host });
  const [desired, choice, local] = await Promise.all([
    desiredNow(config, host),
    backend.choose(true),
    hostAddresses(host),
  ]);
  const { ruleset, snapshot } = desired;
  if (ruleset.bridge === null)
    throw new Error(`network ${config.network} does not exist here, or has no Linux bridge`);
  const members = snapshot?.members ?? [];
  const family = [fromRef, toRef].some((r) => isIP(r) === 6) ? 6 : 4;
  const from = resolveEnd(fromRef, members, local, family);
  const to = resolveEnd(toRef, members, local, family);
  const packet = packetOf(from, to, service, ruleset.bridge);
  const check = await backend.check(ruleset);
  const rendered = render(choice.kind, ruleset);
  const explained = explainPacket(packet, rendered, check.location, ruleset.log?.groups ?? null);
  const what =
    service.protocol === "icmp"
      ? packet.protocol
      : `${service.protocol}${service.port ? `/${service.port}` : ""}`;
  const summary =
    explained.verdict === "dropped"
      ? `dropped${explained.kind ? ` (${explained.kind})` : ""}`
      : explained.wouldDrop
        ? `allowed, in audit mode only: enforcing would drop it${explained.kind ? ` (${explained.kind})` : ""}`
        : "allowed by TrafficJam (Docker's own rules decide the rest)";
  if (json) {
    process.stdout.write(
      `${JSON.stringify({ ...explained, from: endText(from), to: endText(to), service: what, location: check.location, mode: ruleset.mode, kernelDiffers: check.differences }, null, 2)}\n`,
    );
    return 0;
  }
  const w = (line: string) => process.stdout.write(`${line}\n`);
  w(`${summary}: ${endText(from)} → ${endText(to)} ${what}`);
  w(`  rules: ${check.location}, MODE=${ruleset.mode}, as this configuration renders them now`);
  if (check.differences.length > 0)
    w(`  note: the kernel differs from these rules now (trafficjam plan shows how)`);
  for (const { layer, result } of explained.layers) {
    w(`  ${layer}:`);
    for (const step of result.steps)
      w(`    ${step.index > 0 ? `rule ${step.index}: ${step.rule}\n      → ` : ""}${step.effect}`);
  }
  const by = explained.decidedBy;
  w(
    `  decided by: ${by ? `${by.chain} rule ${by.index}: ${by.rule}` : "no rule of TrafficJam matched"}`,
  );
  return 0;
}
