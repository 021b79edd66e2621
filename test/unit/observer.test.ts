// The Observer: which Docker events call for a pass and which containers that pass reads, the
// tombstones of containers that died, the recheck after an event, and the bridge's own identity.
// Docker and the host are fakes (an Engine client, a Host answering `ip`), so nothing needs root.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Observer } from "../../src/observe/index.js";
import { effectOf, eventFilters } from "../../src/observe/filter-events.js";
import type { EngineClient, EngineEvent } from "../../src/observe/engine-api.js";
import type { Host, RunResult } from "../../src/host/host.js";
import type { WhitelistFilter } from "../../src/config.js";

const NET = "n".repeat(64);
const BRIDGE = `br-${NET.slice(0, 12)}`;
const mac = (n: number) => `02:42:ac:14:00:0${n}`;

/** A fake Engine: the network's members are `members`; `whitelisted` match the filter. */
function fakeEngine(members: number[], whitelisted: number[]) {
  const state = {
    members: new Set(members),
    running: new Set(members),
    whitelisted: new Set(whitelisted),
  };
  const calls: string[] = [];
  const endpoint = (n: number) => ({
    NetworkID: NET,
    EndpointID: `e${n}`,
    MacAddress: mac(n),
    IPAddress: `172.20.0.${n}`,
    GlobalIPv6Address: "",
  });
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
          [...state.members].map((n) => [
            `c${n}`,
            {
              Name: `m${n}`,
              EndpointID: `e${n}`,
              MacAddress: mac(n),
              IPv4Address: `172.20.0.${n}/16`,
            },
          ]),
        ),
      };
    },
    async listContainers(filters: Record<string, string[]>) {
      calls.push(`listContainers ${JSON.stringify(filters)}`);
      const ids = filters.id ?? [...state.running].map((n) => `c${n}`);
      const chosen = filters.id === undefined || Object.keys(filters).length > 1;
      return ids
        .map((id) => Number(id.slice(1)))
        .filter(
          (n) =>
            state.running.has(n) && state.members.has(n) && (!chosen || state.whitelisted.has(n)),
        )
        .map((n) => ({
          Id: `c${n}`,
          Names: [`/m${n}`],
          NetworkSettings: { Networks: { web: endpoint(n) } },
        }));
    },
    async inspectContainer(id: string) {
      const n = Number(id.slice(1));
      return state.running.has(n)
        ? {
            State: { Running: true, Pid: 0 },
            NetworkSettings: { SandboxKey: `/var/run/docker/netns/s${n}` },
          }
        : null;
    },
  };
  return { state, calls, client: client as unknown as EngineClient };
}

/** A host whose `ip` answers for the bridge (ports bound to no namespace: ports stay unknown). */
function fakeHost(): Host & { runs: string[] } {
  const runs: string[] = [];
  const ok = (stdout: string): RunResult => ({ stdout, stderr: "", code: 0 });
  const host: Host & { runs: string[] } = {
    runs,
    netns: "/fake/netns", // another namespace than ours: no sysfs read, everything through `ip`
    now: () => 0,
    in: () => host,
    async run(file, args) {
      runs.push([file, ...args].join(" "));
      if (args.join(" ") === `-j addr show dev ${BRIDGE}`)
        return ok(
          JSON.stringify([
            {
              ifname: BRIDGE,
              address: "02:42:5A:9D:C9:B7",
              addr_info: [{ local: "172.20.0.1" }, { local: "fe80::42:5aff:fe9d:c9b7" }],
            },
          ]),
        );
      return ok("[]");
    },
  };
  return host;
}

function observer(members: number[], whitelisted: number[], whitelist: WhitelistFilter) {
  const engine = fakeEngine(members, whitelisted);
  const host = fakeHost();
  const o = new Observer(engine.client, {
    host,
    network: "web",
    whitelist,
    onPortUnknown: () => undefined,
    bridgeOf: (n) => ({ name: `br-${n.Id.slice(0, 12)}`, netns: "/fake/netns" }),
  });
  return { ...engine, host, observer: o };
}

const event = (
  Type: string,
  Action: string,
  ID: string,
  Attributes: Record<string, string> = {},
): EngineEvent => ({
  Type,
  Action,
  Actor: { ID, Attributes },
});
const names = (s: Awaited<ReturnType<Observer["observe"]>>) =>
  s?.members.map((m) => `${m.name}${m.whitelisted ? "*" : ""}`).sort();

test("a container that dies leaves the snapshot at its event, before Docker stops listing it; its tombstone goes once Docker does", async () => {
  const f = observer([2, 3], [2], { key: "label", value: "role=proxy" });
  assert.deepEqual(names(await f.observer.observe(true)), ["m2*", "m3"]);
  assert.equal(f.observer.noteEvent(event("container", "die", "c2")).kind, "containers");
  // Docker still lists c2 as running and on the network (it has not disconnected it yet).
  assert.deepEqual(names(await f.observer.observe(false)), ["m3"]);
  assert.deepEqual(
    names(await f.observer.observe(true)),
    ["m3"],
    "a resync too: the tombstone holds",
  );
  // Docker catches up; later the same container starts again: a member once more.
  f.state.running.delete(2);
  assert.deepEqual(names(await f.observer.observe(true)), ["m3"]);
  f.state.running.add(2);
  f.observer.noteEvent(event("container", "start", "c2"));
  assert.deepEqual(names(await f.observer.observe(false)), ["m2*", "m3"]);
});

test("events name the containers an event pass reads; our network's own events read it whole", async () => {
  const f = observer([2, 3], [2], { key: "label", value: "role=proxy" });
  await f.observer.observe(true);
  f.calls.length = 0;
  f.observer.noteEvent(event("network", "disconnect", NET, { container: "c3", name: "web" }));
  f.state.members.delete(3);
  assert.deepEqual(names(await f.observer.observe(false)), ["m2*"]);
  assert.deepEqual(f.calls, [
    'listContainers {"id":["c3"],"label":["role=proxy"]}',
    'listContainers {"id":["c3"]}',
  ]);
  f.calls.length = 0;
  assert.equal(
    f.observer.noteEvent(event("network", "destroy", NET, { name: "web" })).kind,
    "network",
  );
  await f.observer.observe(false);
  assert.ok(f.calls.includes("inspectNetwork web"), f.calls.join("\n"));
});

test("another network's connect and disconnect matter only to a network= whitelist", async () => {
  const other = event("network", "disconnect", "o".repeat(64), {
    container: "c2",
    name: "proxies",
  });
  const byLabel = observer([2, 3], [2], { key: "label", value: "role=proxy" });
  await byLabel.observer.observe(true);
  assert.equal(byLabel.observer.noteEvent(other).kind, "none");

  const byNetwork = observer([2, 3], [2], { key: "network", value: "proxies" });
  await byNetwork.observer.observe(true);
  assert.deepEqual(byNetwork.observer.noteEvent(other), { kind: "containers", ids: ["c2"] });
  byNetwork.state.whitelisted.delete(2); // c2 left "proxies": it no longer matches
  byNetwork.calls.length = 0;
  assert.deepEqual(names(await byNetwork.observer.observe(false)), ["m2", "m3"]);
  assert.deepEqual(byNetwork.calls[0], 'listContainers {"id":["c2"],"network":["proxies"]}');
});

test("health, pause and image events matter only to the keys they can change", () => {
  const health = event("container", "health_status: unhealthy", "c2");
  const pause = event("container", "pause", "c2");
  const tag = event("image", "tag", "sha256:abc", { name: "traefik:v3" });
  const effect = (e: EngineEvent, key: string) => effectOf(e, "web", NET, key).kind;
  assert.equal(effect(health, "health"), "containers");
  assert.equal(effect(health, "label"), "none");
  assert.equal(effect(pause, "status"), "containers");
  assert.equal(effect(pause, "name"), "none");
  assert.equal(effect(tag, "ancestor"), "whitelist");
  assert.equal(effect(tag, "label"), "none");
  // Subscribed only where needed.
  assert.equal(eventFilters("health").event?.includes("health_status"), true);
  assert.equal(eventFilters("label").event?.includes("health_status"), false);
  assert.deepEqual(eventFilters("ancestor").type, ["container", "image", "network"]);
  assert.deepEqual(eventFilters("label").type, ["container", "network"]);
});

test("a recheck makes the next pass read the containers again, though no event came", async () => {
  const f = observer([2, 3], [2], { key: "status", value: "running" });
  await f.observer.observe(true);
  f.observer.noteEvent(event("container", "pause", "c2"));
  // The Engine logged the pause before its list shows it: the first read still matches.
  assert.deepEqual(names(await f.observer.observe(false)), ["m2*", "m3"]);
  f.state.whitelisted.delete(2);
  f.calls.length = 0;
  assert.deepEqual(
    names(await f.observer.observe(false)),
    ["m2*", "m3"],
    "nothing named: nothing read",
  );
  assert.deepEqual(f.calls, []);
  f.observer.recheck(["c2"]);
  assert.deepEqual(names(await f.observer.observe(false)), ["m2", "m3"]);
});

test("the bridge's own MAC and addresses are read once per bridge, in its namespace, and again after a network event", async () => {
  const f = observer([2], [], { key: "label", value: "role=proxy" });
  const first = await f.observer.observe(true);
  assert.deepEqual(first?.gateway, {
    mac: "02:42:5a:9d:c9:b7",
    ipv4: ["172.20.0.1"],
    ipv6: ["fe80::42:5aff:fe9d:c9b7"],
  });
  const reads = () => f.host.runs.filter((r) => r.includes("addr show dev")).length;
  assert.equal(reads(), 1);
  await f.observer.observe(true);
  await f.observer.observe(false);
  assert.equal(reads(), 1, "not read again while nothing says it changed");
  f.observer.noteEvent(event("network", "create", NET, { name: "web" }));
  await f.observer.observe(false);
  assert.equal(reads(), 2);
});
