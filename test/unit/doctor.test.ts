// `trafficjam doctor`'s checks, from made-up facts: each problem gives its line, level and fix.
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
