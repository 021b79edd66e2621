// A Swarm node's guard (its own namespace): the tunnel binding every endpoint to its node, the
// data path closed to containers but the daemon's channel, members kept off their node. Golden
// file of the rendered tables; as root, checked by nft and loaded into a throwaway namespace,
// where the JSON listing must read back as the same tables (so the read-back compares what we wrote).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { nodeGuardTables, type NodeGuard } from "../../src/swarm/node-guard.js";
import { planTables } from "../../src/firewall/nftables/plan.js";
import { parseTableJson } from "../../src/firewall/nftables/table.js";

/** Node 1 (192.168.0.1) of three; its proxy 10.20.0.3, its load balancer 10.20.0.2. */
const GUARD: NodeGuard = {
  instanceId: "web",
  vni: 4097,
  dataPort: 4789,
  channelPort: 7390,
  remote: [
    { ipv4: "10.20.0.5", hostIp: "192.168.0.2" },
    { ipv4: "10.20.0.6", hostIp: "192.168.0.2" }, // node 2's load balancer, as the daemon told it
    { ipv4: "10.20.0.9", hostIp: "192.168.0.3" },
    { ipv4: "10.20.0.3", hostIp: "192.168.0.2" }, // a stale claim of a local address: never remote
  ],
  local: ["10.20.0.2", "10.20.0.3", "10.20.0.4"],
  bridges: ["docker0", "docker_gwbridge"],
  daemon: {
    bridge: "docker_gwbridge",
    port: "veth1d2a3e4",
    mac: "02:42:ac:12:00:05",
    ipv4: ["172.18.0.5"],
    ipv6: [],
  },
  members: [
    { port: "veth9a8b7c6", mac: "02:42:ac:12:00:03", ipv4: ["172.18.0.3"], ipv6: [] },
    { port: "veth9a8b7c7", mac: "02:42:ac:12:00:04", ipv4: ["172.18.0.4"], ipv6: [] },
  ],
  nodeAddresses: ["192.168.0.1", "172.18.0.1", "172.17.0.1", "127.0.0.1", "fe80::1"],
};

const render = (guard: NodeGuard) => {
  const { inet, bridge } = nodeGuardTables(guard);
  return planTables([
    { current: null, desired: inet },
    { current: null, desired: bridge },
  ]).script!;
};
const golden = new URL("./golden/swarm-node-guard.nft", import.meta.url);

test("golden: the node guard's tables", async () => {
  const actual = render(GUARD);
  if (process.env.UPDATE_GOLDEN === "1") await writeFile(golden, actual);
  assert.equal(actual, await readFile(golden, "utf8"));
});

test("every remote endpoint is bound to its node; a local one to none; addresses and MACs as raw values", () => {
  const { inet } = nodeGuardTables(GUARD);
  assert.deepEqual(inet.sets.get("tunnel4")!.elements, [
    "0xa140005 . 192.168.0.2",
    "0xa140006 . 192.168.0.2",
    "0xa140009 . 192.168.0.3",
  ]);
  // Every endpoint the tunnel may claim: the local ones too, which no element binds.
  assert.deepEqual(inet.sets.get("endpoints4")!.elements, [
    "0xa140002",
    "0xa140003",
    "0xa140004",
    "0xa140005",
    "0xa140006",
    "0xa140009",
  ]);
  assert.ok(inet.sets.get("tunnelmacs")!.elements.includes("0x2420a140005 . 192.168.0.2"));
});

test("ALLOW_HOST_TRAFFIC: members may reach their node; the tunnel and the data path stay guarded", () => {
  const { inet, bridge } = nodeGuardTables({ ...GUARD, members: null });
  assert.equal(inet.sets.has("members4"), false);
  const rules = [...inet.chains.values()].flatMap((c) => c.rules.map((r) => r.text));
  assert.ok(!rules.some((r) => r.includes("@members4")));
  assert.ok(rules.some((r) => r.includes("udp dport 4789 drop")));
  assert.deepEqual(bridge.sets.get("guarded4")!.elements, ["172.18.0.5"], "the daemon still bound");
});

const canRun = process.getuid?.() === 0 && spawnSync("nft", ["--version"]).status === 0;

describe(
  "the node guard in a throwaway network namespace",
  { skip: !canRun && "needs root and nft" },
  () => {
    const netns = `tj-unit-node-${process.pid}`;
    const nft = (args: string[], input?: string) =>
      execFileSync("ip", ["netns", "exec", netns, "nft", ...args], { input, encoding: "utf8" });
    before(() => execFileSync("ip", ["netns", "add", netns]));
    after(() => execFileSync("ip", ["netns", "delete", netns]));

    test("nft -c accepts it; the kernel's JSON listing reads back as the same tables", async () => {
      const script = await readFile(golden, "utf8");
      nft(["-c", "-f", "-"], script);
      nft(["-f", "-"], script);
      const want = nodeGuardTables(GUARD);
      const plan = planTables([
        {
          current: parseTableJson(
            nft(["-j", "list", "table", "inet", "trafficjam-node_web"]),
            "inet",
            "trafficjam-node_web",
          ),
          desired: want.inet,
        },
        {
          current: parseTableJson(
            nft(["-j", "list", "table", "bridge", "trafficjam-node_web"]),
            "bridge",
            "trafficjam-node_web",
          ),
          desired: want.bridge,
        },
      ]);
      assert.deepEqual(plan.differences, []);
    });
  },
);
