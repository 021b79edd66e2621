// Scenarios shared by the golden-file tests: snapshots as the Docker adapter would build them.
import type { Member, NetworkSnapshot } from "../../src/model.js";

/** Container n on the network: the proxy (n = 1) and proxies are whitelisted, backends not. */
const member = (n: number, { whitelisted = n === 1, ipv6 = false, port = true } = {}): Member => ({
  id: `c${n}`.padEnd(64, "0"),
  name: whitelisted ? (n === 1 ? "proxy" : `proxy${n}`) : `backend${n}`,
  whitelisted,
  ipv4: `172.20.0.${n + 1}`,
  ipv6: ipv6 ? `fd00:20::${n + 1}` : undefined,
  mac: `02:42:ac:14:00:0${n + 1}`,
  port: port ? `veth${n}a2b3c4` : undefined,
});

function network(overrides: Partial<NetworkSnapshot>): NetworkSnapshot {
  return {
    id: "f".repeat(64),
    name: "web",
    subnets: ["172.20.0.0/16"],
    bridge: "br-ffffffffffff",
    members: [member(1), member(2)],
    ...overrides,
  };
}

export interface Scenario {
  name: string;
  snapshot: NetworkSnapshot;
  allowHostTraffic: boolean;
}

export const SCENARIOS: Scenario[] = [
  {
    name: "no-whitelisted",
    snapshot: network({ members: [member(2), member(3)] }),
    allowHostTraffic: false,
  },
  { name: "one-proxy", snapshot: network({}), allowHostTraffic: false },
  {
    name: "several-proxies",
    snapshot: network({ members: [member(1), member(2), member(3, { whitelisted: true })] }),
    allowHostTraffic: false,
  },
  {
    name: "dual-stack",
    snapshot: network({
      subnets: ["172.20.0.0/16", "fd00:20::/64"],
      members: [member(1, { ipv6: true }), member(2, { ipv6: true })],
    }),
    allowHostTraffic: false,
  },
  {
    name: "two-ipv4-subnets",
    snapshot: network({
      subnets: ["172.20.0.0/16", "172.21.0.0/16"],
      members: [member(1), { ...member(3, { whitelisted: true }), ipv4: "172.21.0.4" }],
    }),
    allowHostTraffic: false,
  },
  { name: "allow-host-traffic", snapshot: network({}), allowHostTraffic: true },
  {
    // The bridge port of one proxy could not be found: it is allowed by address only, and its
    // port is bound to nothing.
    name: "port-unknown",
    snapshot: network({
      subnets: ["172.20.0.0/16", "fd00:20::/64"],
      members: [
        member(1, { ipv6: true }),
        member(2, { ipv6: true }),
        member(3, { whitelisted: true, ipv6: true, port: false }),
      ],
    }),
    allowHostTraffic: false,
  },
  {
    // Not a bridge network (another driver): there is no L2 domain to guard, nothing is enforced.
    name: "no-bridge",
    snapshot: network({ bridge: undefined }),
    allowHostTraffic: false,
  },
];
