// `trafficjam status` of the Swarm daemon: every node, from its worker's last status.
import { test } from "node:test";
import assert from "node:assert/strict";
import { renderStatus, type InstanceStatus } from "../../src/ops/status.js";
import type { NodeStatus } from "../../src/swarm/protocol.js";

const AT = 1_700_000_000_000;
const told: NodeStatus = {
  type: "status",
  node: "n1",
  version: "1.0.0",
  mode: "enforce",
  location: "nftables",
  netns: "/run/docker/netns/1-abc",
  lastPass: { ok: true, at: AT - 2_000 },
  passes: { ok: 12, failed: 1 },
  repairs: 2,
  drops: { "member-to-member": 40, "member-to-host": 0, forged: 3 },
  attempts: {
    byKind: { "member-to-member": 2, "member-to-host": 0, forged: 1 },
    reported: 3,
    suppressed: 0,
    packets: 9,
  },
  attemptLog: { reading: true },
  at: AT,
};

test("the Swarm daemon's status lists every node: its worker, rules, counters and attempts", () => {
  const status: InstanceStatus = {
    instanceId: "DEFAULT",
    daemon: { running: true, pid: 7 },
    rulesIn: [],
    swarm: {
      channelPort: 7946,
      nodes: [
        {
          node: "n1",
          hostname: "node1",
          address: "10.9.0.1",
          worker: "connected",
          heardAt: AT,
          heardAgo: "3.0 s ago",
          status: told,
        },
        {
          node: "n2",
          hostname: "node2",
          address: "10.9.0.2",
          worker: "not connected",
          heardAt: null,
          heardAgo: null,
          status: null,
        },
      ],
    },
  };
  const text = renderStatus([status]);
  assert.match(text, /^ {2}swarm +2 nodes, 1 workers connected \(channel port 7946\)$/m);
  assert.match(
    text,
    /^ {2}node node1 n1 +worker connected at 10\.9\.0\.1, its status from 3\.0 s ago$/m,
  );
  assert.match(
    text,
    /enforce, rules in nftables in \/run\/docker\/netns\/1-abc; last pass ok 2\.0 s ago before its status; passes 12 ok, 1 failed, repairs 2$/m,
  );
  assert.match(
    text,
    /drops member → member 40, member → host 0, forged identity at a port 3; attempts member → member 2, member → host 0, forged identity at a port 1; attempt log reading$/m,
  );
  assert.match(
    text,
    /^ {2}node node2 n2 +worker NOT CONNECTED at 10\.9\.0\.2 \(its rules stay in force\); no status from it yet$/m,
  );
});
