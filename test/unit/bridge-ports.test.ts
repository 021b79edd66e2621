// Finding each member's bridge port, with the host's I/O replaced by fakes.
import { mock, test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import {
  BridgePortFinder,
  RETRY_DELAYS_MS,
  portOfLinks,
  portsOfNamespace,
  type BridgePortDeps,
  type IpLink,
  type SandboxInfo,
} from "../../src/observe/bridge-ports.js";
import type { Member } from "../../src/model.js";

const MAC = "02:42:ac:14:00:02";
/**
 * Attaches, then again after each quick retry delay (mocked time): a failure is reported only
 * when the quick retries fail too.
 */
async function attachUntilReported(
  t: TestContext,
  finder: BridgePortFinder,
  members: Member[],
  bridge: string | null,
) {
  mock.timers.enable({ apis: ["Date"], now: 1_000_000 });
  t.after(() => mock.timers.reset());
  let attached = await finder.attach(members, bridge);
  for (const delay of RETRY_DELAYS_MS) {
    mock.timers.tick(delay);
    attached = await finder.attach(members, bridge);
  }
  return attached;
}

const BRIDGE = "br-0123456789ab";
/** The bridge's ports, as the host lists them: the proxy's peer is ifindex 9 in namespace 4. */
const PORTS: IpLink[] = [
  { ifindex: 23, ifname: "veth1234567", link_index: 9, link_netnsid: 4 },
  { ifindex: 25, ifname: "veth7654321", link_index: 9, link_netnsid: 5 },
];
/** Inside the proxy's namespace. */
const CONTAINER_LINKS: IpLink[] = [
  { ifindex: 1, ifname: "lo", address: "00:00:00:00:00:00" },
  { ifindex: 9, ifname: "eth0", address: MAC, link_index: 23, link_netnsid: 0 },
];
const SANDBOX = "/var/run/docker/netns/abc";
const proxy: Member = {
  id: "c1",
  name: "proxy",
  whitelisted: true,
  ipv4: "172.20.0.2",
  endpointId: "e1",
  mac: MAC,
};

/** A host where only way 2 (entering) works unless `named` lists the sandbox. */
function fakeHost(overrides: Partial<BridgePortDeps> = {}) {
  const calls = { inspect: 0, ports: 0, linksIn: [] as string[] };
  const deps: BridgePortDeps = {
    inspect: async (): Promise<SandboxInfo> => {
      calls.inspect++;
      return { running: true, pid: 4242, sandboxKey: SANDBOX };
    },
    bridgePorts: async (bridge) => {
      calls.ports++;
      assert.equal(bridge, BRIDGE);
      return PORTS;
    },
    namedNamespaceIds: async () => new Map(),
    linksIn: async (path) => {
      calls.linksIn.push(path);
      return CONTAINER_LINKS;
    },
    namespaceInode: async (path) => (path === "/proc/self/ns/net" ? 1 : 2),
    ...overrides,
  };
  return { deps, calls };
}

test("pure matching: a port by its peer's namespace id, or paired with the container's interface", () => {
  assert.deepEqual(portsOfNamespace(PORTS, 4), ["veth1234567"]);
  assert.deepEqual(portsOfNamespace(PORTS, 7), []);
  assert.deepEqual(portsOfNamespace([...PORTS, { ...PORTS[0]!, ifname: "vethx" }], 4), [
    "veth1234567",
    "vethx",
  ]);
  assert.equal(portOfLinks(PORTS, CONTAINER_LINKS, MAC.toUpperCase()), "veth1234567");
  assert.equal(portOfLinks(PORTS, CONTAINER_LINKS, "02:42:ac:14:00:99"), null);
  // Same peer ifindex, but the port does not name the container's interface back: no pair.
  assert.equal(portOfLinks([{ ...PORTS[0]!, ifindex: 24 }], CONTAINER_LINKS, MAC), null);
});

test("way 1: Docker's netns folder listed with ids finds the port without entering anything", async () => {
  const { deps, calls } = fakeHost({
    namedNamespaceIds: async () => new Map([["abc", 4]]),
    // the image: SandboxKey's own path is not mounted, /run/netns/abc is
    namespaceInode: async (path) => (path === SANDBOX ? null : 7),
  });
  const finder = new BridgePortFinder(deps, () => assert.fail("no fallback expected"));
  assert.deepEqual(await finder.attach([proxy], BRIDGE), [{ ...proxy, port: "veth1234567" }]);
  assert.deepEqual(calls.linksIn, []);
});

test("way 1 refuses a listed name that is another namespace than the SandboxKey", async () => {
  const { deps, calls } = fakeHost({
    namedNamespaceIds: async () => new Map([["abc", 5]]),
    namespaceInode: async (path) =>
      path === "/proc/self/ns/net" ? 1 : path === "/run/netns/abc" ? 8 : 2,
  });
  const finder = new BridgePortFinder(deps, () => assert.fail("no fallback expected"));
  // way 2 finds the right port, not veth7654321 of namespace 5
  assert.equal((await finder.attach([proxy], BRIDGE))[0]!.port, "veth1234567");
  assert.deepEqual(calls.linksIn, [SANDBOX]);
});

test("way 2: the port is found through the SandboxKey, then cached per endpoint", async () => {
  const { deps, calls } = fakeHost();
  const finder = new BridgePortFinder(deps, () => assert.fail("no fallback expected"));
  assert.deepEqual(await finder.attach([proxy], BRIDGE), [{ ...proxy, port: "veth1234567" }]);
  await finder.attach([proxy], BRIDGE);
  assert.deepEqual([calls.inspect, calls.ports, calls.linksIn], [1, 1, [SANDBOX]]);
  // A restart gives the container a new endpoint (and veth): looked up again.
  await finder.attach([{ ...proxy, endpointId: "e2" }], BRIDGE);
  assert.equal(calls.inspect, 2);
});

test("the bridge's ports are read once per pass, whatever the number of new proxies", async () => {
  const { deps, calls } = fakeHost();
  const finder = new BridgePortFinder(deps, () => undefined);
  const others = [2, 3, 4].map((n) => ({ ...proxy, id: `c${n}`, endpointId: `e${n}` }));
  await finder.attach([proxy, ...others], BRIDGE);
  assert.equal(calls.ports, 1);
});

test("an invisible SandboxKey falls back to the container's process", async () => {
  const { deps, calls } = fakeHost({
    namespaceInode: async (path) =>
      path === "/proc/self/ns/net" ? 1 : path.startsWith("/proc/4242") ? 3 : null,
  });
  const finder = new BridgePortFinder(deps, () => assert.fail("no fallback expected"));
  assert.equal((await finder.attach([proxy], BRIDGE))[0]!.port, "veth1234567");
  assert.deepEqual(calls.linksIn, ["/proc/4242/ns/net"]);
});

test("our own namespace (a pid of another PID namespace) is never taken for the container's", async (t) => {
  const reasons: string[] = [];
  const { deps, calls } = fakeHost({
    namespaceInode: async (p) => (p.includes("docker") ? null : 1),
  });
  const finder = new BridgePortFinder(deps, (_m, reason) => reasons.push(reason));
  assert.deepEqual(await attachUntilReported(t, finder, [proxy], BRIDGE), [
    { ...proxy, port: undefined },
  ]);
  assert.deepEqual(calls.linksIn, []);
  assert.equal(reasons.length, 1);
});

test("an interface paired with no port of the network's bridge is no port", async (t) => {
  const reasons: string[] = [];
  const { deps } = fakeHost({ bridgePorts: async () => [PORTS[1]!] });
  const finder = new BridgePortFinder(deps, (_m, reason) => reasons.push(reason));
  assert.equal((await attachUntilReported(t, finder, [proxy], BRIDGE))[0]!.port, undefined);
  assert.match(reasons[0]!, /no interface in \/var\/run\/docker\/netns\/abc is paired with a port/);
});

test("without the privilege to enter, the member keeps an address-only allowance, reported once", async (t) => {
  const reasons: string[] = [];
  let entered = 0;
  const { deps } = fakeHost({
    linksIn: async () => {
      entered++;
      throw new Error("nsenter: reassociate to namespace 'ns/net' failed: Operation not permitted");
    },
  });
  const finder = new BridgePortFinder(deps, (m, reason) => reasons.push(`${m.name}: ${reason}`));
  mock.timers.enable({ apis: ["Date"], now: 1_000_000 });
  t.after(() => mock.timers.reset());
  assert.deepEqual(await finder.attach([proxy], BRIDGE), [{ ...proxy, port: undefined }]);
  assert.deepEqual(reasons, [], "a failure is tried again before it is reported");
  for (const delay of RETRY_DELAYS_MS) {
    await finder.attach([proxy], BRIDGE); // too early: the failure is remembered
    mock.timers.tick(delay);
    await finder.attach([proxy], BRIDGE); // tried again
  }
  assert.equal(reasons.length, 1);
  await finder.attach([proxy], BRIDGE); // cached: no further attempt, no second report
  assert.equal(reasons.length, 1);
  assert.match(
    reasons[0]!,
    /proxy: \/run\/netns\/abc is not visible here; entering \/var\/run\/docker\/netns\/abc failed: .*not permitted/,
  );
  assert.equal(entered, 2 * (1 + RETRY_DELAYS_MS.length)); // SandboxKey and /proc/PID, each try
});

test("a network without a bridge keeps address-only allowances, said once", async (t) => {
  const reasons: string[] = [];
  const { deps, calls } = fakeHost();
  const finder = new BridgePortFinder(deps, (_m, reason) => reasons.push(reason));
  assert.equal((await attachUntilReported(t, finder, [proxy], null))[0]!.port, undefined);
  await finder.attach([proxy], null);
  assert.deepEqual(reasons, ["the network has no Linux bridge (not a bridge network)"]);
  assert.equal(calls.inspect, 0);
});

test("a container gone since it was listed gets no allowance at all", async () => {
  const { deps } = fakeHost({ inspect: async () => null });
  const finder = new BridgePortFinder(deps, () => assert.fail("a gone container is no fallback"));
  assert.deepEqual(await finder.attach([proxy], BRIDGE), []);
  const stopped = fakeHost({ inspect: async () => ({ running: false, pid: 0, sandboxKey: "" }) });
  assert.deepEqual(await new BridgePortFinder(stopped.deps, () => {}).attach([proxy], BRIDGE), []);
});

test("a failure caught while the container was still joining is not reported when the retry finds the port", async (t) => {
  const reasons: string[] = [];
  let listings = 0;
  const { deps } = fakeHost({
    // The first listing predates the new veth; the next one has it.
    bridgePorts: async () => (++listings === 1 ? [PORTS[1]!] : PORTS),
  });
  const finder = new BridgePortFinder(deps, (_m, reason) => reasons.push(reason));
  assert.equal((await attachUntilReported(t, finder, [proxy], BRIDGE))[0]!.port, "veth1234567");
  assert.deepEqual(reasons, []);
});

test("the way that worked is tried first next time", async () => {
  let listings = 0;
  const { deps, calls } = fakeHost({
    namedNamespaceIds: async () => {
      listings++;
      return new Map();
    },
  });
  const finder = new BridgePortFinder(deps, () => assert.fail("no fallback expected"));
  await finder.attach([proxy], BRIDGE);
  await finder.attach([{ ...proxy, endpointId: "e2" }], BRIDGE);
  assert.deepEqual([listings, calls.linksIn.length], [1, 2]);
});

test("a new member that is not whitelisted is looked up beside the pass, which does not wait for it; a pass follows", async () => {
  let releaseInspect: () => void = () => undefined;
  const inspecting = new Promise<void>((resolve) => (releaseInspect = resolve));
  const { deps } = fakeHost({
    // The Engine answers an inspect of a starting container only once it has started.
    inspect: async () => {
      await inspecting;
      return { running: true, pid: 4242, sandboxKey: SANDBOX };
    },
  });
  let learned = 0;
  const finder = new BridgePortFinder(
    deps,
    () => assert.fail("no failure"),
    undefined,
    () => {
      learned++;
    },
  );
  const backend = { ...proxy, whitelisted: false };
  await finder.attach([], BRIDGE); // the first pass: it looks every member up before it ends
  assert.deepEqual(await finder.attach([backend], BRIDGE), [{ ...backend, port: undefined }]);
  assert.equal(learned, 0);
  // A pass meanwhile neither waits nor starts a second lookup.
  assert.deepEqual(await finder.attach([backend], BRIDGE), [{ ...backend, port: undefined }]);
  releaseInspect();
  await waitUntil(() => learned === 1);
  assert.deepEqual(await finder.attach([backend], BRIDGE), [{ ...backend, port: "veth1234567" }]);
});

/** Lets pending promise continuations run until `done` holds (bounded). */
async function waitUntil(done: () => boolean) {
  for (let i = 0; i < 100 && !done(); i++) await new Promise((resolve) => setImmediate(resolve));
  assert.ok(done());
}

test("on the first pass every member's port is looked up before it ends (a restart must keep their bindings)", async () => {
  const { deps, calls } = fakeHost();
  const finder = new BridgePortFinder(deps, () => assert.fail("no failure"));
  const backend = { ...proxy, whitelisted: false };
  assert.deepEqual(await finder.attach([backend], BRIDGE), [{ ...backend, port: "veth1234567" }]);
  assert.equal(calls.inspect, 1);
});

test("a port matched from an earlier read under a name now taken by another interface is read again", async () => {
  const listings: boolean[] = [];
  const renamed: IpLink = { ifindex: 31, ifname: "veth9999999", link_index: 9, link_netnsid: 4 };
  const { deps } = fakeHost({
    namedNamespaceIds: async () => new Map([["abc", 4]]),
    namespaceInode: async (path) => (path === SANDBOX ? null : 7),
    // The kept entry says veth1234567 leads to namespace 4, but that name has another index now.
    bridgePorts: async (_bridge, revalidate = false) => {
      listings.push(revalidate);
      return revalidate ? [renamed, PORTS[1]!] : PORTS;
    },
    portIsCurrent: (link) => link.ifindex !== 23,
  });
  const finder = new BridgePortFinder(deps, () => assert.fail("no fallback expected"));
  assert.equal((await finder.attach([proxy], BRIDGE))[0]!.port, "veth9999999");
  assert.deepEqual(listings, [false, true]);
});

test("a listing started early stands when every port in it is settled, else the ports are read again", async () => {
  let listings = 0;
  const unsettled: IpLink = { ifindex: 23, ifname: "veth1234567" }; // its peer not moved yet
  const { deps } = fakeHost({
    namedNamespaceIds: async () => new Map([["abc", 4]]),
    namespaceInode: async (path) => (path === SANDBOX ? null : 7),
    bridgePorts: async () => (++listings === 1 ? [unsettled, PORTS[1]!] : PORTS),
  });
  const finder = new BridgePortFinder(deps, () => assert.fail("no fallback expected"));
  const early = finder.prefetch(BRIDGE);
  assert.equal((await finder.attach([proxy], BRIDGE, early))[0]!.port, "veth1234567");
  assert.equal(listings, 2); // the early one, then one made after the container was inspected

  const other = { ...proxy, id: "c2", endpointId: "e2" };
  const settledEarly = finder.prefetch(BRIDGE);
  assert.equal((await finder.attach([proxy, other], BRIDGE, settledEarly))[1]!.port, "veth1234567");
  assert.equal(listings, 3); // the early listing served the new lookup
});
