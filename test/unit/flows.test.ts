// Which tracked flows the rules forbid (cut at the first enforcement and at revocations), and
// the conntrack listing they are read from. Pure.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseFlows } from "../../src/host/conntrack.js";
import { flowScope, forbiddenPairs, sourcePrefixes, type FlowScope } from "../../src/flows.js";
import { computeRuleset } from "../../src/policy.js";
import { SCENARIOS } from "./fixtures.js";

// What conntrack 1.4.7 prints (-L, the default format).
const LISTING4 = `tcp      6 431995 ESTABLISHED src=172.20.0.3 dst=172.20.0.4 sport=40000 dport=7000 src=172.20.0.4 dst=172.20.0.3 sport=7000 dport=40000 [ASSURED] mark=0 use=1
tcp      6 431995 ESTABLISHED src=172.20.0.2 dst=172.20.0.4 sport=40001 dport=80 src=172.20.0.4 dst=172.20.0.2 sport=80 dport=40001 [ASSURED] mark=0 use=1
udp      17 29 src=172.20.0.3 dst=172.20.0.1 sport=5353 dport=53 [UNREPLIED] src=172.20.0.1 dst=172.20.0.3 sport=53 dport=5353 mark=0 use=1
tcp      6 100 ESTABLISHED src=172.20.0.3 dst=93.184.216.34 sport=40002 dport=443 src=93.184.216.34 dst=10.0.0.5 sport=443 dport=40002 [ASSURED] mark=0 use=1
icmp     1 29 src=172.20.0.1 dst=172.20.0.3 type=8 code=0 id=7 src=172.20.0.3 dst=172.20.0.1 type=0 code=0 id=7 mark=0 use=1
tcp      6 431995 ESTABLISHED src=172.20.0.2 dst=10.0.0.5 sport=40003 dport=22 src=10.0.0.5 dst=172.20.0.2 sport=22 dport=40003 [ASSURED] mark=0 use=1
conntrack v1.4.7 (conntrack-tools): 6 flow entries have been shown.`;

const LISTING6 = `tcp      6 431995 ESTABLISHED src=fe80::42:acff:fe14:3 dst=fe80::42:acff:fe14:4 sport=40000 dport=80 src=fe80::42:acff:fe14:4 dst=fe80::42:acff:fe14:3 sport=80 dport=40000 [ASSURED] mark=0 use=1
tcp      6 431995 ESTABLISHED src=fe80::1:2:3:4 dst=fe80::42:acff:fe14:4 sport=40000 dport=80 src=fe80::42:acff:fe14:4 dst=fe80::1:2:3:4 sport=80 dport=40000 [ASSURED] mark=0 use=1`;

const scope = (overrides: Partial<FlowScope> = {}): FlowScope => ({
  subnets: ["172.20.0.0/16", "fd00:20::/64"],
  memberAddresses: ["fe80::42:acff:fe14:3", "fe80::42:acff:fe14:4"],
  allowedSources: ["172.20.0.2"],
  hostAddresses: ["172.20.0.1", "10.0.0.5", "fe80::1"],
  protectHost: true,
  ...overrides,
});

test("conntrack's listing: the original direction of each flow, odd lines skipped", () => {
  const flows = parseFlows(LISTING4, 4);
  assert.equal(flows.length, 6);
  assert.deepEqual(flows[0], {
    family: 4,
    protocol: "tcp",
    source: "172.20.0.3",
    destination: "172.20.0.4",
    port: 7000,
  });
  assert.deepEqual(parseFlows(LISTING6, 4), [], "another family's lines are not taken");
});

test("forbidden: member → member (not from an allowed source), member → host; never host → member, member → world", () => {
  const flows = [...parseFlows(LISTING4, 4), ...parseFlows(LISTING6, 6)];
  assert.deepEqual(
    forbiddenPairs(flows, scope()).map((p) => `${p.source} → ${p.destination} ${p.why}`),
    [
      "172.20.0.2 → 10.0.0.5 member-to-host", // the proxy is a member: the host is protected from it too
      "172.20.0.3 → 172.20.0.1 member-to-host",
      "172.20.0.3 → 172.20.0.4 member-to-member",
      "fe80::42:acff:fe14:3 → fe80::42:acff:fe14:4 member-to-member",
    ],
  );
  // fe80::1:2:3:4 is no member's link-local address: not ours to judge.
  assert.deepEqual(
    forbiddenPairs(flows, scope({ protectHost: false })).map((p) => p.why),
    ["member-to-member", "member-to-member"],
    "ALLOW_HOST_TRAFFIC: flows to the host stay",
  );
});

test("a ruleset's scope: subnets, link-local addresses of members, allowed sources; where to list", () => {
  const dual = SCENARIOS.find((s) => s.name === "dual-stack")!;
  const ruleset = computeRuleset(dual.snapshot, { instanceId: "web", allowHostTraffic: false });
  const s = flowScope(ruleset, dual.snapshot.members, ["172.20.0.1"]);
  assert.deepEqual(s.subnets, ["172.20.0.0/16", "fd00:20::/64"]);
  assert.deepEqual(s.memberAddresses, ["fe80::42:acff:fe14:2", "fe80::42:acff:fe14:3"]);
  assert.deepEqual(sourcePrefixes(s, 4), ["172.20.0.0/16"]);
  assert.deepEqual(sourcePrefixes(s, 6), ["fd00:20::/64", "fe80::/10"]);
});
