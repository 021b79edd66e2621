// `trafficjam doctor`'s checks, from made-up facts: each problem gives its line, level and fix.
import type { NodeStatus } from "../../src/swarm/protocol.js";
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseConfig } from "../../src/config.js";
import { logGroupsOf } from "../../src/drops.js";
import { checks, parseMountinfo, renderChecks, type Facts } from "../../src/ops/doctor.js";
import { parseFilterTable } from "../../src/firewall/iptables/save-format.js";

const DOCKER_NFT = parseFilterTable(`*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:DOCKER-USER - [0:0]
:TRAFFICJAM - [0:0]
:TJF_web - [0:0]
-A FORWARD -j DOCKER-USER
-A DOCKER-USER -j TRAFFICJAM
-A DOCKER-USER -j RETURN
-A TRAFFICJAM -m comment --comment "trafficjam:web" -j TJF_web
COMMIT
`);
const EMPTY = parseFilterTable("");
// A host: / shared (systemd); the image: Docker's netns folder at /run/netns, slave.
const HOST_MOUNTS =
  "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n26 22 0:23 / /run rw shared:5 - tmpfs tmpfs rw\n";
const IMAGE_MOUNTS =
  "600 500 0:50 / / rw master:9 - overlay overlay rw\n" +
  "610 600 0:23 /docker/netns /run/netns ro,relatime master:5 - tmpfs tmpfs rw\n";

function facts(overrides: Partial<Facts> = {}): Facts {
  return {
    instanceId: "web",
    config: parseConfig({ NETWORK: "web", WHITELIST_FILTER: "name=proxy", INSTANCE_ID: "web" }),
    configProblems: [],
    bridgeNetfilterOff: [],
    capabilities: (1n << 12n) | (1n << 21n),
    tools: Object.fromEntries(
      [
        "nft",
        "iptables-nft",
        "iptables-legacy",
        "ip6tables-nft",
        "conntrack",
        "ip",
        "nsenter",
        "tcpdump",
      ].map((t) => [t, true]),
    ),
    docker: {
      ok: true,
      version: "20.10.24",
      api: "1.41",
      endpoint: "unix:///var/run/docker.sock",
      firewall: null,
    },
    network: {
      name: "web",
      found: true,
      bridge: "br-0123456789ab",
      subnets: ["172.20.0.0/16"],
      driver: "bridge",
    },
    kernel: {
      iptables: { nft: DOCKER_NFT, legacy: EMPTY },
      nftTables: ["bridge trafficjam-l2_web"],
    },
    ip6tables: { nft: EMPTY, legacy: EMPTY },
    ipv6Kernel: true,
    mountinfo: HOST_MOUNTS,
    inContainer: false,
    processes: ["systemd", "dockerd", "node"],
    boundGroups: [],
    liveInstances: ["web"],
    swarm: null,
    swarmWorkerHere: false,
    now: 1_700_000_100_000,
    ...overrides,
  };
}

const levelOf = (f: Facts, name: string) =>
  checks(f)
    .filter((l) => l.check === name)
    .map((l) => l.level);

test("a healthy host: no check fails", () => {
  const lines = checks(facts());
  assert.deepEqual(
    lines.filter((l) => l.level === "fail" || l.level === "warn"),
    [],
  );
  assert.match(renderChecks(lines), /^pass {2}br_netfilter: /m);
});

test("br_netfilter switched off: fail, with the fix", () => {
  const lines = checks(facts({ bridgeNetfilterOff: ["bridge-nf-call-iptables"] }));
  const line = lines.find((l) => l.check === "br_netfilter")!;
  assert.equal(line.level, "fail");
  assert.match(line.message, /bridge-nf-call-iptables not 1/);
  assert.match(line.fix!, /sysctl -w net\.bridge\.bridge-nf-call-iptables=1/);
  assert.match(renderChecks(lines), /^FAIL {2}br_netfilter: .* — fix: /m);
  assert.deepEqual(levelOf(facts({ bridgeNetfilterOff: null }), "br_netfilter"), ["fail"]);
});

test("the original's leftovers: its comment format in any chain, its old chains: fail", () => {
  const original = parseFilterTable(`*filter
:DOCKER-USER - [0:0]
:TRAFFICJAM - [0:0]
:TRAEFIKJAM - [0:0]
-A FORWARD -j DOCKER-USER
-A DOCKER-USER -j TRAFFICJAM
-A TRAFFICJAM -s 172.20.0.0/16 -d 172.20.0.0/16 -m comment --comment "trafficjam_DEFAULT 2024-05-01 10:00:00" -j DROP
COMMIT
`);
  const line = checks(
    facts({ kernel: { iptables: { nft: original, legacy: EMPTY }, nftTables: [] } }),
  ).find((l) => l.check === "original trafficjam")!;
  assert.equal(line.level, "fail");
  assert.match(line.message, /chain TRAEFIKJAM/);
  assert.match(line.message, /1 rule\(s\) of the original in TRAFFICJAM/);
  assert.match(line.fix!, /docs\/operations\.md/);
  // TrafficJam's own comments (trafficjam:<ID>) are not the original's
  assert.deepEqual(levelOf(facts(), "original trafficjam"), ["pass"]);
});

test("the netns mount: the image's is a slave mount; a private host mount breaks the image's line", () => {
  assert.deepEqual(levelOf(facts({ mountinfo: IMAGE_MOUNTS, inContainer: true }), "netns mount"), [
    "pass",
  ]);
  const privateHost = "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n";
  const line = checks(facts({ mountinfo: privateHost })).find((l) => l.check === "netns mount")!;
  assert.equal(line.level, "warn");
  assert.match(line.message, /not a shared or slave mount/);
  assert.match(line.fix!, /mount --make-rshared \//);
  const bare = checks(
    facts({ mountinfo: "600 500 0:50 / / rw - overlay overlay rw\n", inContainer: true }),
  );
  assert.match(
    bare.find((l) => l.check === "netns mount")!.fix!,
    /-v \/var\/run\/docker\/netns:\/run\/netns:ro,rslave/,
  );
  assert.deepEqual(
    parseMountinfo(IMAGE_MOUNTS).map((m) => [m.point, m.root, m.propagation]),
    [
      ["/", "/", "slave"],
      ["/run/netns", "/docker/netns", "slave"],
    ],
  );
});

test("capabilities: no NET_ADMIN fails; neither SYS_ADMIN nor the netns folder warns", () => {
  assert.deepEqual(levelOf(facts({ capabilities: 0n }), "capabilities"), ["fail"]);
  assert.deepEqual(levelOf(facts({ capabilities: 1n << 12n }), "capabilities"), ["warn"]);
  assert.deepEqual(
    levelOf(facts({ capabilities: 1n << 12n, mountinfo: IMAGE_MOUNTS }), "capabilities"),
    ["pass"],
  );
});

test("Docker: unreachable fails; its chains in both flavours, or nowhere, warn", () => {
  assert.deepEqual(
    levelOf(facts({ docker: { ok: false, endpoint: "unix:///x", error: "ENOENT" } }), "docker"),
    ["fail"],
  );
  const both = { nft: DOCKER_NFT, legacy: DOCKER_NFT };
  assert.deepEqual(
    levelOf(facts({ kernel: { iptables: both, nftTables: [] } }), "docker firewall"),
    ["warn"],
  );
  const dockerNft = checks(
    facts({
      kernel: { iptables: { nft: EMPTY, legacy: EMPTY }, nftTables: ["ip docker-bridges"] },
    }),
  );
  const line = dockerNft.find((l) => l.check === "docker firewall")!;
  assert.equal(line.level, "pass");
  assert.match(line.message, /Docker.s own nftables firewall .*=auto uses nftables/);
});

test("another tool ahead of TrafficJam's jump, firewalld, ufw: a second firewall manager, warned", () => {
  const ahead = parseFilterTable(`*filter
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A DOCKER-USER -j ACCEPT
-A DOCKER-USER -j TRAFFICJAM
COMMIT
`);
  const lines = checks(
    facts({
      kernel: { iptables: { nft: ahead, legacy: EMPTY }, nftTables: [] },
      processes: ["firewalld"],
    }),
  );
  const managers = lines.filter((l) => l.check === "firewall managers");
  assert.deepEqual(
    managers.map((l) => l.level),
    ["warn", "warn"],
  );
  assert.match(managers[0]!.message, /1 rule\(s\) ahead of TrafficJam's jump in DOCKER-USER/);
  assert.match(managers[1]!.message, /firewalld/);
});

test("instances: a removed one's rules warned with its --clear; shared NFLOG groups fail", () => {
  const gone = parseFilterTable(`*filter
:DOCKER-USER - [0:0]
:TJF_old - [0:0]
-A FORWARD -j DOCKER-USER
COMMIT
`);
  const line = checks(
    facts({ kernel: { iptables: { nft: gone, legacy: EMPTY }, nftTables: [] } }),
  ).find((l) => l.check === "removed instances")!;
  assert.equal(line.level, "warn");
  assert.match(line.fix!, /INSTANCE_ID=old trafficjam --clear/);
  // our groups read by someone else while our daemon is not running here
  const taken = checks(facts({ liveInstances: [], boundGroups: [logGroupsOf("web").forged] }));
  assert.ok(taken.some((l) => l.check === "other instances" && l.level === "fail"));
});

test("MODE=audit warns; a configuration error fails; the network missing warns, not a bridge fails", () => {
  const audit = parseConfig({ NETWORK: "web", WHITELIST_FILTER: "name=proxy", MODE: "audit" });
  assert.deepEqual(levelOf(facts({ config: audit }), "configuration"), ["warn"]);
  assert.deepEqual(
    levelOf(facts({ config: null, configProblems: ['MODE="x": expected …'] }), "configuration"),
    ["fail"],
  );
  assert.deepEqual(levelOf(facts({ network: { name: "web", found: false } }), "network"), ["warn"]);
  assert.deepEqual(
    levelOf(
      facts({
        network: { name: "web", found: true, bridge: undefined, subnets: [], driver: "overlay" },
      }),
      "network",
    ),
    ["fail"],
  );
});

const NOW = 1_700_000_100_000;
const status = (over: Partial<NodeStatus> = {}): NodeStatus => ({
  type: "status",
  node: "n1",
  version: "1.0.0",
  mode: "enforce",
  location: "nftables",
  netns: "/run/docker/netns/1-abc",
  lastPass: { ok: true, at: NOW - 5_000 },
  passes: { ok: 9, failed: 0 },
  repairs: 0,
  drops: { "member-to-member": 3, "member-to-host": 0, forged: 0 },
  attempts: {
    byKind: { "member-to-member": 1, "member-to-host": 0, forged: 0 },
    reported: 1,
    suppressed: 0,
    packets: 3,
  },
  attemptLog: { reading: true },
  at: NOW - 4_000,
  ...over,
});
const swarmConfig = parseConfig({
  NETWORK: "web",
  WHITELIST_FILTER: "name=proxy",
  INSTANCE_ID: "web",
  SWARM_DAEMON: "true",
});

test("Swarm daemon: each node's worker is checked from what it last told; the host checks are the workers'", () => {
  const node = (
    id: string,
    worker: "connected" | "not connected" | "no worker task",
    st: NodeStatus | null,
    heardAt: number | null = NOW - 4_000,
  ) => ({ node: id, hostname: id, address: `10.9.0.${id.slice(1)}`, worker, heardAt, status: st });
  const lines = checks(
    facts({
      config: swarmConfig,
      network: { name: "web", found: true, bridge: undefined, subnets: [], driver: "overlay" },
      capabilities: 0n, // the daemon needs no capability: nothing of this host is checked
      swarm: {
        network: "web",
        channelPort: 7946,
        nodes: [
          node("n1", "connected", status()),
          node("n2", "not connected", null, null),
          node("n3", "no worker task", null, null),
          node(
            "n4",
            "connected",
            status({ node: "n4", lastPass: { ok: false, at: NOW, error: "nft: boom" } }),
          ),
          node(
            "n5",
            "connected",
            status({ node: "n5", attemptLog: { reading: false, reason: "tcpdump exited (1)" } }),
          ),
          node("n6", "connected", status({ node: "n6" }), NOW - 600_000),
        ],
      },
    }),
  );
  const of = (name: string) => lines.find((l) => l.check === name);
  assert.equal(of("node n1 n1")?.level, "pass");
  assert.match(
    of("node n1 n1")!.message,
    /worker connected at 10\.9\.0\.1, rules in force \(nftables\), enforce/,
  );
  assert.equal(of("node n2 n2")?.level, "fail");
  assert.match(of("node n2 n2")!.fix!, /TCP 7946 .* 10\.9\.0\.2/);
  assert.equal(of("node n3 n3")?.level, "fail");
  assert.equal(of("node n4 n4")?.level, "fail");
  assert.match(of("node n4 n4")!.message, /nft: boom/);
  assert.equal(of("node n5 n5")?.level, "warn");
  assert.equal(of("node n6 n6")?.level, "warn");
  assert.equal(of("swarm ports")?.level, "pass");
  assert.equal(of("this host")?.level, "skip");
  // Nothing of the daemon's own host is judged: no capability, network or netns-mount lines.
  for (const name of ["capabilities", "network", "netns mount", "br_netfilter"])
    assert.equal(of(name), undefined, name);
});

test("Swarm daemon: doctor run where no daemon of the instance runs says where to run it", () => {
  const lines = checks(facts({ config: swarmConfig, swarm: null }));
  const swarm = lines.find((l) => l.check === "swarm");
  assert.equal(swarm?.level, "fail");
  assert.match(swarm!.fix!, /docker exec/);
});

test("a Swarm worker's node: the overlay network passes where the instance's worker runs", () => {
  const overlay = {
    name: "web",
    found: true as const,
    bridge: undefined,
    subnets: ["10.0.1.0/24"],
    driver: "overlay",
  };
  assert.deepEqual(levelOf(facts({ network: overlay, swarmWorkerHere: true }), "network"), [
    "pass",
  ]);
  assert.deepEqual(levelOf(facts({ network: overlay }), "network"), ["fail"]);
});
