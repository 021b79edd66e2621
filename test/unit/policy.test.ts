import { test } from "node:test";
import assert from "node:assert/strict";
import { computeRuleset } from "../../src/policy.js";
import { canonicalIpv6, ipv6Hex, linkLocalOf } from "../../src/addresses.js";
import {
  bridgeOf,
  membersOf,
  membersOn,
  subnetsOf,
  type ContainerSummary,
} from "../../src/observe/network.js";
import { formatTimestamp } from "../../src/log.js";
import { SCENARIOS } from "./fixtures.js";

const options = { instanceId: "web", allowHostTraffic: false };

test("a missing network, or one without a Linux bridge, enforces nothing", () => {
  const ruleset = computeRuleset(null, options);
  assert.equal(ruleset.bridge, null);
  assert.deepEqual(ruleset.families[4].subnets, []);
  assert.deepEqual(ruleset.ports, []);
  const bridgeless = computeRuleset(
    SCENARIOS.find((s) => s.name === "no-bridge")!.snapshot,
    options,
  );
  assert.equal(bridgeless.bridge, null);
  assert.deepEqual(bridgeless.families[4].allowedSources, []);
  assert.deepEqual(bridgeless.ports, []);
});

test("every member whose port is known is bound to its MAC, addresses and link-local address", () => {
  const dual = SCENARIOS.find((s) => s.name === "port-unknown")!.snapshot;
  const ruleset = computeRuleset(dual, options);
  assert.equal(ruleset.bridge, "br-ffffffffffff");
  assert.deepEqual(ruleset.ports, [
    {
      port: "veth1a2b3c4",
      mac: "02:42:ac:14:00:02",
      ipv4: ["172.20.0.2"],
      ipv6: ["fd00:20::2", "fe80::42:acff:fe14:2"],
    },
    {
      port: "veth2a2b3c4",
      mac: "02:42:ac:14:00:03",
      ipv4: ["172.20.0.3"],
      ipv6: ["fd00:20::3", "fe80::42:acff:fe14:3"],
    },
  ]);
});

test("link-local addresses are the kernel's modified EUI-64 of the MAC, spelt as nft prints them", () => {
  assert.equal(linkLocalOf("02:42:ac:1c:00:15"), "fe80::42:acff:fe1c:15");
  assert.equal(linkLocalOf("00:00:5e:00:53:01"), "fe80::200:5eff:fe00:5301");
  assert.throws(() => linkLocalOf("02:42:ac"), /not a MAC address/);
  assert.equal(canonicalIpv6("FD00:0028:0:0:0:0:0:0021"), "fd00:28::21");
  assert.equal(ipv6Hex("fe80::42:acff:fe1c:15"), "0xfe800000000000000042acfffe1c0015");
  assert.equal(ipv6Hex("::1"), "0x1");
});

test("whitelisted members are allowed per family, others are not", () => {
  const dual = SCENARIOS.find((s) => s.name === "dual-stack")!.snapshot;
  const ruleset = computeRuleset(dual, options);
  assert.deepEqual(ruleset.families[4].allowedSources, ["172.20.0.2"]);
  // With IPv6 on the network, the proxy's link-local address is its own too.
  assert.deepEqual(ruleset.families[6].allowedSources, ["fd00:20::2", "fe80::42:acff:fe14:2"]);
  assert.deepEqual(ruleset.families[6].subnets, ["fd00:20::/64"]);
});

test("each allowed address is bound to its container's bridge port, when that port is known", () => {
  const mixed = SCENARIOS.find((s) => s.name === "port-unknown")!.snapshot;
  const ruleset = computeRuleset(mixed, options);
  assert.deepEqual(ruleset.families[4].allowedSources, ["172.20.0.2", "172.20.0.4"]);
  assert.deepEqual(ruleset.families[4].portBindings, [
    { address: "172.20.0.2", port: "veth1a2b3c4" },
  ]);
  assert.deepEqual(ruleset.families[6].portBindings, [
    { address: "fd00:20::2", port: "veth1a2b3c4" },
    { address: "fe80::42:acff:fe14:2", port: "veth1a2b3c4" },
  ]);
});

test("a whitelisted container without an address of a family adds nothing there", () => {
  const one = SCENARIOS.find((s) => s.name === "one-proxy")!.snapshot;
  const ruleset = computeRuleset({ ...one, subnets: [...one.subnets, "fd00::/64"] }, options);
  assert.deepEqual(ruleset.families[6].allowedSources, []);
});

test("a bridge network's Linux bridge: Docker's name option, else br-<12 first of the id>", () => {
  const id = "0123456789abcdef0123";
  assert.equal(bridgeOf({ Id: id, Name: "web", Driver: "bridge", Options: {} }), "br-0123456789ab");
  assert.equal(
    bridgeOf({
      Id: id,
      Name: "bridge",
      Driver: "bridge",
      Options: { "com.docker.network.bridge.name": "docker0" },
    }),
    "docker0",
  );
  assert.equal(bridgeOf({ Id: id, Name: "mv", Driver: "macvlan", Options: null }), undefined);
});

test("Engine answers → subnets, and whitelisted containers attached to the network", () => {
  const inspect = {
    Id: "n1",
    Name: "web",
    IPAM: { Config: [{ Subnet: "172.31.0.0/24" }, { Subnet: "fd00:31::/64" }] },
  };
  assert.deepEqual(subnetsOf(inspect), ["172.31.0.0/24", "fd00:31::/64"]);
  const listed: ContainerSummary[] = [
    {
      Id: "abc",
      Names: ["/proxy"],
      NetworkSettings: {
        Networks: {
          other: { NetworkID: "n2", IPAddress: "10.0.0.2", GlobalIPv6Address: "" },
          web: {
            NetworkID: "n1",
            EndpointID: "ep1",
            MacAddress: "02:42:ac:1f:00:02",
            IPAddress: "172.31.0.2",
            GlobalIPv6Address: "fd00:31::2",
          },
        },
      },
    },
    {
      Id: "def",
      Names: ["/elsewhere"],
      NetworkSettings: { Networks: { other: { NetworkID: "n2" } } },
    },
    {
      Id: "ghi",
      Names: ["/v4only"],
      NetworkSettings: { Networks: { web: { NetworkID: "n1", IPAddress: "172.31.0.3" } } },
    },
  ];
  assert.deepEqual(membersOn("n1", listed), [
    {
      id: "abc",
      name: "proxy",
      whitelisted: true,
      ipv4: "172.31.0.2",
      ipv6: "fd00:31::2",
      endpointId: "ep1",
      mac: "02:42:ac:1f:00:02",
    },
    {
      id: "ghi",
      name: "v4only",
      whitelisted: true,
      ipv4: "172.31.0.3",
      ipv6: undefined,
      endpointId: undefined,
      mac: undefined,
    },
  ]);
  assert.deepEqual(membersOn("n1", [{ Id: "x", NetworkSettings: null }]), []);
});

test("network inspect → every member, the whitelisted ones flagged", () => {
  const whitelisted = membersOn("n1", [
    {
      Id: "abc",
      Names: ["/proxy"],
      NetworkSettings: { Networks: { web: { NetworkID: "n1", IPAddress: "172.31.0.2" } } },
    },
    {
      Id: "new",
      Names: ["/late"],
      NetworkSettings: { Networks: { web: { NetworkID: "n1", IPAddress: "172.31.0.9" } } },
    },
  ]);
  const members = membersOf(
    {
      Id: "n1",
      Name: "web",
      Containers: {
        abc: {
          Name: "proxy",
          EndpointID: "ep1",
          MacAddress: "02:42:AC:1F:00:02",
          IPv4Address: "172.31.0.2/24",
          IPv6Address: "fd00:31::2/64",
        },
        def: {
          Name: "b1",
          EndpointID: "ep2",
          MacAddress: "02:42:ac:1f:00:03",
          IPv4Address: "172.31.0.3/24",
          IPv6Address: "",
        },
        "ep-123": { Name: "orphan", EndpointID: "ep3" },
      },
    },
    whitelisted,
  );
  assert.deepEqual(
    members.map((m) => [m.id, m.whitelisted, m.ipv4, m.ipv6, m.mac]),
    [
      ["abc", true, "172.31.0.2", "fd00:31::2", "02:42:ac:1f:00:02"],
      ["def", false, "172.31.0.3", undefined, "02:42:ac:1f:00:03"],
      // whitelisted, attached, not in the inspect yet: kept
      ["new", true, "172.31.0.9", undefined, undefined],
    ],
  );
  assert.deepEqual(membersOf({ Id: "n1", Name: "web", Containers: null }, []), []);
});

test("timestamps are written in TZ with its offset", () => {
  const date = new Date("2026-01-15T12:34:56.789Z");
  assert.equal(formatTimestamp(date, "UTC"), "2026-01-15T12:34:56.789+00:00");
  assert.equal(formatTimestamp(date, "America/Los_Angeles"), "2026-01-15T04:34:56.789-08:00");
  assert.equal(formatTimestamp(date, "Asia/Kolkata"), "2026-01-15T18:04:56.789+05:30");
});
