// Scenarios shared by the golden-file tests: snapshots as the Docker adapter would build them.
import type { Member, NetworkSnapshot, Ruleset } from "../../src/model.js";
import { computeRuleset, type PolicyOptions } from "../../src/policy.js";

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
  /** MODE and the blocked-attempt log; a daemon on one host logs (see ONE_HOST). */
  policy?: Pick<PolicyOptions, "mode" | "log">;
}

/** What the daemon on one host renders: the drops logged and counted, in enforce mode. */
const ONE_HOST = { log: true } as const;

/** The ruleset a scenario renders, for instance `web` as everywhere in the golden files. */
export function rulesetOf(scenario: Scenario, instanceId = "web"): Ruleset {
  return computeRuleset(scenario.snapshot, {
    instanceId,
    allowHostTraffic: scenario.allowHostTraffic,
    ...scenario.policy,
  });
}

const SINGLE_HOST: Scenario[] = [
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
    // With the gateway's identity (the bridge's own MAC and addresses), which no port may claim.
    name: "dual-stack",
    snapshot: {
      ...network({
        subnets: ["172.20.0.0/16", "fd00:20::/64"],
        members: [member(1, { ipv6: true }), member(2, { ipv6: true })],
      }),
      gateway: {
        mac: "02:42:5a:9d:c9:b7",
        ipv4: ["172.20.0.1"],
        ipv6: ["fd00:20::1", "fe80::42:5aff:fe9d:c9b7"],
      },
    },
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

export const SCENARIOS: Scenario[] = [
  ...SINGLE_HOST.map((s) => ({ ...s, policy: ONE_HOST })),
  {
    // MODE=audit: the same rules, but every rule that would drop logs and accepts.
    name: "audit",
    snapshot: network({}),
    allowHostTraffic: false,
    policy: { ...ONE_HOST, mode: "audit" },
  },
];

/**
 * A Swarm worker's view of an overlay on its node (its namespace's bridge is br0): a local
 * whitelisted proxy on veth0, the node's load-balancer endpoint (whitelisted by the worker) on
 * veth1, a local backend on veth2, and two other nodes' allowed addresses behind the VXLAN port.
 */
const overlayMember = (
  n: number,
  name: string,
  port: string,
  whitelisted: boolean,
  id = `o${n}`.padEnd(64, "0"),
): Member => ({
  id,
  name,
  whitelisted,
  ipv4: `10.20.0.${n}`,
  mac: `02:42:0a:14:00:${n.toString(16).padStart(2, "0")}`,
  port,
});

export const OVERLAY_WORKER: Scenario = {
  name: "swarm-overlay-worker",
  snapshot: {
    id: "k3v9q2m7x1w8e5r4t6y0u2i4o",
    name: "web",
    subnets: ["10.20.0.0/24"],
    bridge: "br0",
    members: [
      overlayMember(3, "proxy.1.p7d0s1l2c3k4", "veth0", true),
      overlayMember(2, "web-endpoint", "veth1", true, "lb-web"),
      overlayMember(5, "backend.1.b8x9z0q1w2e3", "veth2", false),
    ],
    tunnel: {
      port: "vxlan0",
      allowed: [
        { ipv4: "10.20.0.9", mac: "02:42:0a:14:00:09" },
        { ipv4: "10.20.0.7", mac: "02:42:0a:14:00:07" },
      ],
    },
  },
  allowHostTraffic: false,
};
