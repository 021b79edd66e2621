// Scenarios shared by the golden-file tests: snapshots as the Docker adapter would build them.
import type { Member, NetworkSnapshot } from "../../src/model.js";

/** A whitelisted container; its bridge port is known unless `port` is false. */
const member = (n: number, ipv6 = false, port = true): Member => ({
  id: `c${n}`.padEnd(64, "0"),
  name: n === 1 ? "proxy" : `backend${n}`,
  ipv4: `172.20.0.${n + 1}`,
  ipv6: ipv6 ? `fd00:20::${n + 1}` : undefined,
  port: port ? `veth${n}a2b3c4` : undefined,
});

function network(overrides: Partial<NetworkSnapshot>): NetworkSnapshot {
  return {
    id: "f".repeat(64),
    name: "web",
    subnets: ["172.20.0.0/16"],
    whitelisted: [member(1)],
    ...overrides,
  };
}

export interface Scenario {
  name: string;
  snapshot: NetworkSnapshot;
  allowHostTraffic: boolean;
}

export const SCENARIOS: Scenario[] = [
  { name: "no-whitelisted", snapshot: network({ whitelisted: [] }), allowHostTraffic: false },
  { name: "one-proxy", snapshot: network({}), allowHostTraffic: false },
  {
    name: "several-proxies",
    snapshot: network({ whitelisted: [member(1), member(3)] }),
    allowHostTraffic: false,
  },
  {
    name: "dual-stack",
    snapshot: network({
      subnets: ["172.20.0.0/16", "fd00:20::/64"],
      whitelisted: [member(1, true)],
    }),
    allowHostTraffic: false,
  },
  {
    name: "two-ipv4-subnets",
    snapshot: network({
      subnets: ["172.20.0.0/16", "172.21.0.0/16"],
      whitelisted: [member(1), { ...member(3), ipv4: "172.21.0.4" }],
    }),
    allowHostTraffic: false,
  },
  { name: "allow-host-traffic", snapshot: network({}), allowHostTraffic: true },
  {
    // The bridge port of one proxy could not be found: it is allowed by address only.
    name: "port-unknown",
    snapshot: network({
      subnets: ["172.20.0.0/16", "fd00:20::/64"],
      whitelisted: [member(1, true), member(3, true, false)],
    }),
    allowHostTraffic: false,
  },
];
