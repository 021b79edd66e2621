// What a pass asks Docker: the network whole on a resync, only the containers events named
// otherwise, so that a pass costs the same whatever the number of members.
import { test } from "node:test";
import assert from "node:assert/strict";
import { NetworkObserver } from "../../src/observe/network.js";
import type { EngineClient } from "../../src/observe/engine-api.js";

const NET = "n".repeat(64);
const endpoint = (n: number) => ({
  NetworkID: NET,
  EndpointID: `e${n}`,
  MacAddress: `02:42:ac:14:00:0${n}`,
  IPAddress: `172.20.0.${n}`,
  GlobalIPv6Address: "",
});
const summary = (n: number) => ({
  Id: `c${n}`,
  Names: [`/m${n}`],
  NetworkSettings: { Networks: { web: endpoint(n) } },
});

/** A fake Engine: the network with members c2 and c3, c5 running too; c2 and c6 whitelisted. */
function fakeEngine() {
  const calls: string[] = [];
  const running = new Set(["c2", "c3", "c5"]);
  const whitelisted = new Set(["c2", "c6"]);
  const client = {
    async inspectNetwork(ref: string) {
      calls.push(`inspectNetwork ${ref}`);
      return {
        Id: NET,
        Name: "web",
        Driver: "bridge",
        Options: {},
        IPAM: { Config: [{ Subnet: "172.20.0.0/16" }] },
        Containers: Object.fromEntries(
          [2, 3].map((n) => [
            `c${n}`,
            {
              Name: `m${n}`,
              EndpointID: `e${n}`,
              MacAddress: endpoint(n).MacAddress,
              IPv4Address: `172.20.0.${n}/16`,
              IPv6Address: "",
            },
          ]),
        ),
      };
    },
    async listContainers(filters: Record<string, string[]>) {
      calls.push(`listContainers ${JSON.stringify(filters)}`);
      const ids = filters.id ?? [...running];
      const chosen = filters.id === undefined || Object.keys(filters).length > 1;
      return ids
        .filter((id) => running.has(id) && (!chosen || whitelisted.has(id)))
        .map((id) => summary(Number(id.slice(1))));
    },
  };
  return { calls, running, client: client as unknown as EngineClient };
}

const names = (s: Awaited<ReturnType<NetworkObserver["observe"]>>) =>
  s?.members.map((m) => `${m.name}${m.whitelisted ? "*" : ""}`).sort();

test("a resync reads the network whole; an event pass reads only the containers named", async () => {
  const { calls, running, client } = fakeEngine();
  const observer = new NetworkObserver(client, "web", { key: "label", value: "role=proxy" });
  assert.deepEqual(names(await observer.observe()), ["m2*", "m3"]);
  assert.deepEqual(calls, ["inspectNetwork web", 'listContainers {"label":["role=proxy"]}']);

  calls.length = 0;
  // c5 joined (its start event), c3 left (its die event): two containers read, not the network,
  // and whether they match the whitelist asked of them alone (a label cannot change).
  running.delete("c3");
  assert.deepEqual(names(await observer.observe(new Set(["c5", "c3"]))), ["m2*", "m5"]);
  assert.deepEqual(calls, [
    'listContainers {"id":["c5","c3"],"label":["role=proxy"]}',
    'listContainers {"id":["c5","c3"]}',
  ]);

  calls.length = 0;
  // A whitelisted container joins; the one whitelisted before keeps its flag unread.
  running.add("c6");
  assert.deepEqual(names(await observer.observe(new Set(["c6"]))), ["m2*", "m5", "m6*"]);
  assert.deepEqual(calls, [
    'listContainers {"id":["c6"],"label":["role=proxy"]}',
    'listContainers {"id":["c6"]}',
  ]);

  calls.length = 0;
  // It leaves: no longer a member, no longer whitelisted.
  running.delete("c6");
  assert.deepEqual(names(await observer.observe(new Set(["c6"]))), ["m2*", "m5"]);

  calls.length = 0;
  // A pass with nothing named (a port found beside a pass): nothing to ask.
  assert.deepEqual(names(await observer.observe(new Set())), ["m2*", "m5"]);
  assert.deepEqual(calls, []);
});

test("a filter whose match may change without an event is listed whole on every pass", async () => {
  const { calls, running, client } = fakeEngine();
  const observer = new NetworkObserver(client, "web", { key: "ancestor", value: "traefik:v3" });
  await observer.observe();
  calls.length = 0;
  running.add("c6");
  assert.deepEqual(names(await observer.observe(new Set(["c6"]))), ["m2*", "m3", "m6*"]);
  assert.deepEqual(calls, [
    'listContainers {"ancestor":["traefik:v3"]}',
    'listContainers {"id":["c6"]}',
  ]);
  calls.length = 0;
  await observer.observe(new Set());
  assert.deepEqual(calls, ['listContainers {"ancestor":["traefik:v3"]}']);
});

test("before the network is known, an event pass reads it whole", async () => {
  const { calls, client } = fakeEngine();
  const observer = new NetworkObserver(client, "web", { key: "label", value: "role=proxy" });
  await observer.observe(new Set(["c5"]));
  assert.ok(calls.includes("inspectNetwork web"));
});
