// The bridge guard table: what only the bridge family can see, for both backends. Pure.
//
// iptables and the inet family see a bridged packet with the bridge as its interface; the bridge
// family sees the port it came in through, every ethertype (ARP included), and runs its
// prerouting hook before br_netfilter hands the packet to conntrack, NAT and the IP filters. So:
// - every known member port may carry only its member's identity: its MAC as Ethernet source;
//   in ARP, its MAC and IPv4 as sender; its IPv4 and IPv6 addresses (link-local included, the
//   unspecified address only for duplicate address detection) as IP source; its own addresses as
//   the target of a neighbour advertisement or of duplicate address detection;
// - a member's identity is refused from every other port (a port not known yet: a container
//   whose start TrafficJam has not processed), so nobody can claim it;
// - the gateway's identity (the bridge's own MAC and addresses: the host, as members see it) is
//   bound to no port at all, so no port, known or not yet, can claim it: the bridge sends its own
//   frames through the bridge's output, never in through a port;
// - between member ports only IPv4, IPv6 and ARP are bridged (iptables never sees the rest), and
//   with ALLOW_HOST_TRAFFIC off, only those reach the host.
// This kernel-independent form needs no `meta ibrname` (absent where nft_meta_bridge is not
// built): the known ports themselves say which frames are the network's.
import { ipv6Hex } from "../../addresses.js";
import { LOG_LIMITS, type DropKind } from "../../drops.js";
import type { PortIdentity, Ruleset } from "../../model.js";
import { dropVerdict, logStatements, plainSet } from "./layout.js";
import {
  dynamicSet,
  filterHook,
  rule,
  type ChainBlock,
  type SetBlock,
  type TableModel,
} from "./table.js";

/**
 * With the log, the guard's drops go to one regular chain per kind, which logs (rate-limited per
 * port: the set `logport`) and counts them, then drops (accepts in audit mode).
 */
export const GUARD_KIND_CHAINS: Record<DropKind, string> = {
  forged: "forged",
  "member-to-member": "member",
  "member-to-host": "host",
};
export const LOG_PORT_SET = "logport";

/** The target address of a neighbour solicitation/advertisement: bytes 8–23 of the ICMPv6 header. */
const ND_TARGET = "@th,64,128"; // nft < 1.0.7 has no `icmpv6 taddr`
const GUARD_PRIORITY = -200; // the bridge family's "filter" priority: before br_netfilter (0)

const rawSet = (type: string, declaration: string, elements: string[]): SetBlock => ({
  declaration: `typeof ${declaration}`,
  type,
  flags: [],
  elements,
});

const each = <P>(ports: readonly P[], f: (p: P) => string[]) => ports.flatMap(f);

// A pass plans twice on one ruleset (before applying, and on the read-back), and the guard grows
// with the members: each ruleset's guard is rendered once, for either backend.
const rendered = new WeakMap<Ruleset, Map<string, TableModel>>();

export function guardTable(ruleset: Ruleset, name: string): TableModel {
  let byName = rendered.get(ruleset);
  if (!byName) rendered.set(ruleset, (byName = new Map()));
  let table = byName.get(name);
  if (!table) byName.set(name, (table = renderGuard(ruleset, name)));
  return table;
}

function renderGuard(ruleset: Ruleset, name: string): TableModel {
  // Known ports carry only their identity; a tunnel identity may only come from its port; the
  // gateway's from none.
  const known = ruleset.ports;
  const ports = [...known, ...ruleset.tunnelIdentities];
  const gateway = ruleset.gateway ? [{ ...ruleset.gateway, port: "" }] : [];
  const claimed = [...ports, ...gateway];
  const nd = (p: Pick<PortIdentity, "ipv6">) => p.ipv6.map((a) => ipv6Hex(a));
  const sets = new Map<string, SetBlock>([
    [
      "ports",
      plainSet(
        "ifname",
        known.map((p) => p.port),
      ),
    ],
    [
      "boundmac",
      plainSet(
        "ether_addr . ifname",
        ports.map((p) => `${p.mac} . ${p.port}`),
      ),
    ],
    ["guardedmac", plainSet("ether_addr", [...new Set(claimed.map((p) => p.mac))])],
    [
      "bound4",
      plainSet(
        "ipv4_addr . ifname",
        each(ports, (p) => p.ipv4.map((a) => `${a} . ${p.port}`)),
      ),
    ],
    ["guarded4", plainSet("ipv4_addr", [...new Set(each(claimed, (p) => p.ipv4))])],
    [
      "bound6",
      plainSet(
        "ipv6_addr . ifname",
        each(ports, (p) => p.ipv6.map((a) => `${a} . ${p.port}`)),
      ),
    ],
    ["guarded6", plainSet("ipv6_addr", [...new Set(each(claimed, (p) => p.ipv6))])],
    [
      "boundnd",
      rawSet(
        "integer . ifname",
        `${ND_TARGET} . iifname`,
        each(ports, (p) => nd(p).map((h) => `${h} . ${p.port}`)),
      ),
    ],
    ["guardednd", rawSet("integer", ND_TARGET, [...new Set(each(claimed, nd))])],
  ]);

  if (ruleset.log)
    sets.set(LOG_PORT_SET, dynamicSet("ifname", LOG_LIMITS.sources, LOG_LIMITS.sourceTtlS));
  // What a drop of each kind says: drop (accept in audit mode), or with the log a goto to the
  // kind's chain.
  const log = ruleset.log;
  const dropAs = (kind: DropKind) =>
    log ? `goto ${GUARD_KIND_CHAINS[kind]}` : dropVerdict(ruleset);
  const forged = dropAs("forged");
  const fromKnown = "iifname @ports";
  const advert = "icmpv6 type nd-neighbor-advert";
  const dad = "ip6 saddr :: icmpv6 type nd-neighbor-solicit";
  const notOwnTarget = `${ND_TARGET} . iifname != @boundnd ${forged}`;
  const prerouting = [
    // Ethernet source: what the bridge learns its forwarding table from.
    `${fromKnown} ether saddr . iifname != @boundmac ${forged}`,
    `ether saddr @guardedmac ether saddr . iifname != @boundmac ${forged}`,
    // ARP sender: what neighbour caches are poisoned with.
    `${fromKnown} arp saddr ether . iifname != @boundmac ${forged}`,
    `arp saddr ether @guardedmac arp saddr ether . iifname != @boundmac ${forged}`,
    `${fromKnown} arp saddr ip . iifname != @bound4 ${forged}`,
    `arp saddr ip @guarded4 arp saddr ip . iifname != @bound4 ${forged}`,
    // IP source: forged sources, and injection into another member's tracked flows.
    `${fromKnown} ip saddr . iifname != @bound4 ${forged}`,
    `ip saddr @guarded4 ip saddr . iifname != @bound4 ${forged}`,
    `${fromKnown} ip6 saddr != :: ip6 saddr . iifname != @bound6 ${forged}`,
    `ip6 saddr @guarded6 ip6 saddr . iifname != @bound6 ${forged}`,
    // The unspecified source: duplicate address detection and its listener reports only.
    `${fromKnown} ip6 saddr :: meta l4proto != ipv6-icmp ${forged}`,
    `${fromKnown} ip6 saddr :: icmpv6 type != { nd-neighbor-solicit, mld-listener-report, mld2-listener-report } ${forged}`,
    // Neighbour discovery claims: only the port's own addresses.
    `${fromKnown} ${advert} ${notOwnTarget}`,
    `${fromKnown} ${dad} ${notOwnTarget}`,
    `${advert} ${ND_TARGET} @guardednd ${notOwnTarget}`,
    `${dad} ${ND_TARGET} @guardednd ${notOwnTarget}`,
  ];
  const onlyIp = (kind: DropKind) => `ether type != { ip, ip6, arp } ${dropAs(kind)}`;
  const hook = (name: string) => filterHook(name, GUARD_PRIORITY);
  const chains = new Map<string, ChainBlock>([
    ["prerouting", { hook: hook("prerouting"), rules: prerouting.map(rule) }],
    [
      "forward",
      {
        hook: hook("forward"),
        rules: [
          `${fromKnown} ${onlyIp("member-to-member")}`,
          `oifname @ports ${onlyIp("member-to-member")}`,
        ].map(rule),
      },
    ],
  ]);
  if (ruleset.protectHost)
    chains.set("input", {
      hook: hook("input"),
      rules: [rule(`${fromKnown} ${onlyIp("member-to-host")}`)],
    });
  if (log) {
    const kinds: DropKind[] = ruleset.protectHost
      ? ["forged", "member-to-member", "member-to-host"]
      : ["forged", "member-to-member"];
    for (const kind of kinds)
      chains.set(GUARD_KIND_CHAINS[kind], {
        rules: [
          `${logStatements(LOG_PORT_SET, "iifname", log.groups[kind])}`,
          `counter ${dropVerdict(ruleset)}`,
        ].map(rule),
      });
  }
  return { family: "bridge", name, sets, chains };
}
