import { test } from "node:test";
import assert from "node:assert/strict";
import { ConfigError, parseClearConfig, parseConfig } from "../../src/config.js";

const BASE = { NETWORK: "web", WHITELIST_FILTER: "label=role=proxy" };

function problems(env: Record<string, string>): string[] {
  try {
    parseConfig({ ...BASE, ...env });
  } catch (error) {
    assert.ok(error instanceof ConfigError);
    return error.problems;
  }
  assert.fail("expected a configuration error");
}

test("defaults", () => {
  const config = parseConfig(BASE);
  assert.deepEqual(config, {
    network: "web",
    whitelistFilter: { key: "label", value: "role=proxy" },
    instanceId: "DEFAULT",
    pollIntervalMs: 5000,
    allowHostTraffic: false,
    debug: false,
    timeZone: "UTC",
    swarmDaemon: false,
    swarmImage: "",
    swarmChannelPort: 7390,
    firewallBackend: "auto",
    bootGuard: false,
    mode: "enforce",
    metricsAddress: null,
  });
});

test("MODE is enforce or audit, nothing else", () => {
  assert.equal(parseConfig({ ...BASE, MODE: "audit" }).mode, "audit");
  assert.equal(parseConfig({ ...BASE, MODE: " Enforce " }).mode, "enforce");
  assert.equal(parseConfig({ ...BASE, MODE: "" }).mode, "enforce");
  for (const word of ["audit-only", "dry-run", "off", "log"])
    assert.deepEqual(problems({ MODE: word }), [
      `MODE=${JSON.stringify(word)}: expected enforce, or audit (the rules log what they would drop, and drop nothing)`,
    ]);
});

test("METRICS_ADDRESS is an IP address and a port, or unset: nothing listens by default", () => {
  assert.equal(parseConfig(BASE).metricsAddress, null);
  assert.equal(parseConfig({ ...BASE, METRICS_ADDRESS: " " }).metricsAddress, null);
  assert.deepEqual(parseConfig({ ...BASE, METRICS_ADDRESS: "127.0.0.1:9469" }).metricsAddress, {
    host: "127.0.0.1",
    port: 9469,
  });
  assert.deepEqual(parseConfig({ ...BASE, METRICS_ADDRESS: "[::1]:9469" }).metricsAddress, {
    host: "::1",
    port: 9469,
  });
  for (const bad of [
    "9469",
    "localhost:9469",
    "127.0.0.1",
    "127.0.0.1:0",
    "127.0.0.1:70000",
    "::1:9469",
    "[127.0.0.1]:9469",
    "http://127.0.0.1:9469",
  ]) {
    const [problem] = problems({ METRICS_ADDRESS: bad });
    assert.match(
      problem ?? "",
      /^METRICS_ADDRESS=".*": expected an IP address and a TCP port/,
      bad,
    );
  }
});

test("booleans are strict: the original's ALLOW_HOST_TRAFFIC=false means off here", () => {
  for (const word of ["true", "TRUE", "1", "yes", "On"]) {
    assert.equal(parseConfig({ ...BASE, ALLOW_HOST_TRAFFIC: word }).allowHostTraffic, true, word);
  }
  for (const word of ["false", "False", "0", "no", "OFF", ""]) {
    assert.equal(parseConfig({ ...BASE, ALLOW_HOST_TRAFFIC: word }).allowHostTraffic, false, word);
  }
  assert.match(problems({ DEBUG: "maybe" })[0]!, /^DEBUG="maybe": expected a boolean/);
  assert.equal(parseConfig({ ...BASE, BOOT_GUARD: "yes" }).bootGuard, true);
  assert.match(
    problems({ BOOT_GUARD: "sometimes" })[0]!,
    /^BOOT_GUARD="sometimes": expected a boolean/,
  );
});

test("each invalid variable gives one line naming it, its value and what is expected", () => {
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ NETWORK: "" }, /^NETWORK="": is required/],
    [
      { WHITELIST_FILTER: "traefik" },
      /^WHITELIST_FILTER="traefik": expected one Docker container filter key=value/,
    ],
    [{ WHITELIST_FILTER: "colour=red" }, /^WHITELIST_FILTER="colour=red": expected/],
    [{ WHITELIST_FILTER: "name=" }, /^WHITELIST_FILTER="name=": expected/],
    [{ INSTANCE_ID: "a-b" }, /^INSTANCE_ID="a-b": expected 1 to 24 characters/],
    [{ INSTANCE_ID: "x".repeat(25) }, /^INSTANCE_ID="x{25}": expected 1 to 24/],
    [{ POLL_INTERVAL: "0" }, /^POLL_INTERVAL="0": expected a positive number/],
    [{ POLL_INTERVAL: "soon" }, /^POLL_INTERVAL="soon": expected a positive number/],
    [{ TZ: "Mars/Olympus" }, /^TZ="Mars\/Olympus": expected an IANA time zone/],
    [{ SWARM_DAEMON: "sometimes" }, /^SWARM_DAEMON="sometimes": expected a boolean/],
    [{ SWARM_IMAGE: "Bad Image" }, /^SWARM_IMAGE="Bad Image": expected a Docker image reference/],
    [
      { SWARM_CHANNEL_PORT: "0" },
      /^SWARM_CHANNEL_PORT="0": expected a TCP port number, 1 to 65535/,
    ],
    [
      { SWARM_CHANNEL_PORT: "70000" },
      /^SWARM_CHANNEL_PORT="70000": expected a TCP port number, 1 to 65535/,
    ],
    [{ SWARM_CHANNEL_PORT: "abc" }, /^SWARM_CHANNEL_PORT="abc": expected a TCP port number/],
    [{ SWARM_CHANNEL_PORT: "80.5" }, /^SWARM_CHANNEL_PORT="80.5": expected a TCP port number/],
    [{ FIREWALL_BACKEND: "pf" }, /^FIREWALL_BACKEND="pf": expected auto, iptables or nftables/],
    [
      { DOCKER_HOST: "localhost:2375" },
      /^DOCKER_HOST="localhost:2375": expected a Docker endpoint/,
    ],
  ];
  for (const [env, pattern] of cases) {
    const found = problems(env);
    assert.equal(found.length, 1, JSON.stringify(found));
    assert.match(found[0]!, pattern);
  }
});

test("missing required variables are all reported at once", () => {
  try {
    parseConfig({});
    assert.fail("expected an error");
  } catch (error) {
    assert.ok(error instanceof ConfigError);
    assert.equal(error.problems.length, 2);
    assert.match(error.problems[0]!, /^NETWORK=unset: is required/);
    assert.match(error.problems[1]!, /^WHITELIST_FILTER=unset: is required/);
  }
});

test("values that are valid", () => {
  const config = parseConfig({
    ...BASE,
    WHITELIST_FILTER: "ancestor=traefik:v3",
    INSTANCE_ID: "web_2",
    POLL_INTERVAL: "0.5",
    TZ: "America/Los_Angeles",
    SWARM_IMAGE: "kaysond/trafficjam:v1@sha256:" + "a".repeat(64),
    FIREWALL_BACKEND: "IPTABLES",
  });
  assert.deepEqual(config.whitelistFilter, { key: "ancestor", value: "traefik:v3" });
  assert.equal(config.pollIntervalMs, 500);
  assert.equal(config.firewallBackend, "iptables");
  assert.equal(config.swarmImage, "kaysond/trafficjam:v1@sha256:" + "a".repeat(64));
});

test("Swarm settings: the channel port, and the image (empty: the daemon's own)", () => {
  assert.equal(parseConfig(BASE).swarmChannelPort, 7390);
  assert.equal(parseConfig({ ...BASE, SWARM_CHANNEL_PORT: "" }).swarmChannelPort, 7390);
  assert.equal(parseConfig({ ...BASE, SWARM_CHANNEL_PORT: " 7400 " }).swarmChannelPort, 7400);
  assert.equal(parseConfig({ ...BASE, SWARM_CHANNEL_PORT: "1" }).swarmChannelPort, 1);
  assert.equal(parseConfig({ ...BASE, SWARM_CHANNEL_PORT: "65535" }).swarmChannelPort, 65535);
  assert.equal(parseConfig(BASE).swarmImage, "");
  assert.equal(parseConfig({ ...BASE, SWARM_IMAGE: "" }).swarmImage, "");
  assert.equal(parseConfig({ ...BASE, SWARM_IMAGE: "  " }).swarmImage, "");
  const pinned = "registry.example.com:5000/ops/trafficjam@sha256:" + "0123456789abcdef".repeat(4);
  assert.equal(parseConfig({ ...BASE, SWARM_IMAGE: pinned }).swarmImage, pinned);
  assert.equal(
    parseConfig({ ...BASE, SWARM_IMAGE: "kaysond/trafficjam:v2" }).swarmImage,
    "kaysond/trafficjam:v2",
  );
});

test("--clear needs only INSTANCE_ID", () => {
  assert.equal(parseClearConfig({}).instanceId, "DEFAULT");
  assert.equal(parseClearConfig({ INSTANCE_ID: "web2" }).instanceId, "web2");
  assert.throws(() => parseClearConfig({ INSTANCE_ID: "no way" }), ConfigError);
  // With SWARM_DAEMON, --clear clears every node (the Swarm daemon's clear).
  assert.equal(parseClearConfig({}).swarmDaemon, false);
  assert.equal(parseClearConfig({ SWARM_DAEMON: "true" }).swarmDaemon, true);
});
