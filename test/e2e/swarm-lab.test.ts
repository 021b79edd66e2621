// Smoke test of the swarm lab itself, without TrafficJam: three lab nodes (node3 joins late), an
// attachable overlay, a global dnsrr service of the test image, traffic between tasks on different
// nodes and to a standalone container, the overlay namespaces entered from the test process, and a
// teardown that leaves the host as it found it; then a swarm lab carrying the product image.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, readdirSync, readlinkSync, statSync } from "node:fs";
import { before, describe, it } from "node:test";
import {
  TEST_IMAGE,
  UNDERLAY_PREFIX,
  isAlive,
  processStartTime,
  useSwarmLab,
  type Container,
  type OverlayNetwork,
} from "./lab/index.js";
import { RUN_BASE } from "./lab/paths.js";
import { PRODUCT_IMAGE } from "./lab/product-image.js";

const NET = "testnet";
const SUBNET = "10.20.0.0/24";
const SVC = "web";

interface HostState {
  netns: Set<string>;
  links: Set<string>;
  runDirs: Set<string>;
}

/** What a lab may add to the machine: namespaces, root-namespace links, /run/tj-e2e folders. */
function hostState(): HostState {
  const names = (out: string, re: RegExp) =>
    new Set(
      out
        .split("\n")
        .map((l) => re.exec(l)?.[1])
        .filter((n): n is string => n !== undefined),
    );
  let runDirs: string[] = [];
  try {
    runDirs = readdirSync(RUN_BASE);
  } catch {
    /* no lab running */
  }
  return {
    netns: names(execFileSync("ip", ["netns", "list"]).toString(), /^(\S+)/),
    links: names(execFileSync("ip", ["-o", "link", "show"]).toString(), /^\d+: ([^:@]+)/),
    runDirs: new Set(runDirs),
  };
}

/**
 * What exists now and did not before. Other labs and tests may run on the machine meanwhile and
 * add namespaces and lab folders of their own: of those, only the ones named after `ours` count
 * (every name a swarm lab gives contains its name). Links in the root namespace all count.
 */
function added(before: HostState, now: HostState, ours: string): string[] {
  const diff = (kind: string, b: Set<string>, n: Set<string>) =>
    [...n].filter((x) => !b.has(x)).map((x) => `${kind} ${x}`);
  return [
    ...diff("netns", before.netns, now.netns).filter((x) => x.includes(ours)),
    ...diff("root-namespace link", before.links, now.links),
    ...diff(`${RUN_BASE}/`, before.runDirs, now.runDirs).filter((x) => x.includes(ours)),
  ];
}

describe("swarm lab (no TrafficJam)", () => {
  let host: HostState;
  before(() => {
    host = hostState(); // registered first: runs before the swarm lab starts
  });
  const swarm = useSwarmLab({ nodes: 3, joined: 2 });
  let net: OverlayNetwork;
  const tasks: Container[] = []; // tasks[i]: the task on node i + 1

  it("starts three nodes, each a netns with its dockerd; two of them in the swarm", async () => {
    const s = swarm();
    console.log(`swarm lab ${s.name} started: ${JSON.stringify(s.timings)} (ms)`);
    assert.equal(s.nodes.length, 3);
    for (const n of s.nodes) {
      assert.equal(n.ip, `${UNDERLAY_PREFIX}.${n.index}`);
      assert.equal(readFileSync(`/proc/${n.dockerdPid}/comm`, "utf8").trim(), "dockerd");
      assert.equal(
        readlinkSync(`/proc/${n.dockerdPid}/ns/net`),
        `net:[${statSync(n.netnsPath).ino}]`,
      );
      assert.equal(await n.docker("info", "--format", "{{.Name}}"), n.hostname);
      assert.match(
        await n.nsExec(["ip", "-o", "-4", "addr", "show", "dev", "eth0"]),
        new RegExp(` ${n.ip}/24 `),
      );
    }
    assert.equal(
      await s.node(3).ping(s.node(3).host, s.node(1).ip),
      true,
      "underlay node3 -> node1",
    );
    const ls = await s.manager.docker("node", "ls", "--format", "{{.Hostname}} {{.Status}}");
    assert.deepEqual(ls.split("\n").sort(), [`${s.name}-n1 Ready`, `${s.name}-n2 Ready`]);
    assert.equal(
      await s.node(3).docker("info", "--format", "{{.Swarm.LocalNodeState}}"),
      "inactive",
    );
    // the switch is a namespace of its own, none of the underlay's veths is in the root namespace
    assert.ok(existsSync(`/run/netns/${s.switchNetns}`));
    assert.match(
      execFileSync("ip", ["-n", s.switchNetns, "-o", "link", "show", "master", "br0"]).toString(),
      /sw-n1@.*sw-n2@.*sw-n3@/s,
    );
  });

  it("node3 joins later", async () => {
    const s = swarm();
    const t0 = Date.now();
    await s.joinNode(3);
    console.log(`node3 joined and Ready in ${Date.now() - t0} ms`);
    const ls = await s.manager.docker("node", "ls", "--format", "{{.Hostname}} {{.Status}}");
    assert.equal(ls.split("\n").filter((l) => l.endsWith(" Ready")).length, 3);
    assert.ok(s.node(3).swarmNodeId);
  });

  it("runs a global dnsrr service of the test image on an attachable overlay: a task per node", async () => {
    const s = swarm();
    net = await s.createOverlay(NET, { subnet: SUBNET });
    const t0 = Date.now();
    await s.createService(["--name", SVC, "--mode", "global", "--network", NET, TEST_IMAGE]);
    const running = await s.waitServiceRunning(SVC, 3);
    console.log(`global service: 3 tasks running and serving in ${Date.now() - t0} ms`);
    assert.deepEqual(running.map((t) => t.node).sort(), [1, 2, 3]);
    assert.equal(
      await s.manager.docker("service", "inspect", SVC, "--format", "{{.Spec.EndpointSpec.Mode}}"),
      "dnsrr",
    );
    for (const i of [1, 2, 3]) {
      const c = await s.taskContainer(SVC, i);
      assert.equal(c.networks[NET]?.networkId, net.id);
      assert.match(c.ipOn(NET), /^10\.20\.0\.\d+$/);
      tasks[i - 1] = c;
    }
  });

  it("tasks reach each other across nodes (tcp, udp, ping) with the lab probes", async () => {
    const s = swarm();
    for (const a of [1, 2, 3]) {
      for (const b of [1, 2, 3]) {
        if (a === b) continue;
        const [from, to] = [tasks[a - 1]!, tasks[b - 1]!.ipOn(NET)];
        const got = await Promise.all([
          s.node(a).tcp(from, to, 80),
          s.node(a).udp(from, to, 9000, 1000, `from-n${a}`),
          s.node(a).ping(from, to),
        ]);
        assert.deepEqual(got, [true, true, true], `node${a} -> node${b}`);
      }
    }
    assert.equal(await s.node(1).tcp(tasks[0]!, tasks[1]!.ipOn(NET), 81, 300), false);
    assert.ok((await s.node(2).udpLog(tasks[1]!)).includes(`${tasks[0]!.ipOn(NET)} from-n1`));
  });

  it("a standalone container on node2, attached to the overlay, is reachable from node1's task", async () => {
    const s = swarm();
    const c = await s.node(2).run({ name: "standalone", network: NET });
    assert.match(c.ipOn(NET), /^10\.20\.0\.\d+$/);
    assert.equal(await s.node(1).tcp(tasks[0]!, c.ipOn(NET), 80), true);
    assert.equal(await s.node(1).udp(tasks[0]!, c.ipOn(NET), 9000), true);
    assert.equal(await s.node(2).tcp(c, tasks[2]!.ipOn(NET), 8080), true, "and it reaches node3's");
  });

  it("overlay namespaces: entered from the test process; br0, vxlan0, static neighbours", async () => {
    const s = swarm();
    // an endpoint's MAC is 02:42 + its IPv4 address
    const macOf = (ip: string) =>
      ["02", "42", ...ip.split(".").map((b) => Number(b).toString(16).padStart(2, "0"))].join(":");
    for (const i of [1, 2, 3]) {
      assert.equal(await s.node(i).macOf(tasks[i - 1]!), macOf(tasks[i - 1]!.ipOn(NET)));
      const path = s.overlayNetnsPath(i, net.id);
      assert.equal(
        path,
        `/proc/${s.node(i).dockerdPid}/root/run/docker/netns/1-${net.id.slice(0, 10)}`,
      );
      assert.ok(existsSync(path), path);
      const links = await s.overlayExec(i, net.id, ["ip", "-d", "-o", "link"]);
      assert.match(links, /^\d+: br0: /m);
      // made as vx-<vni>-<id> in the node's namespace, moved here as vxlan0 (its UDP socket stays
      // in the node's namespace: link-netns)
      assert.match(
        links,
        new RegExp(
          `^\\d+: vxlan0@\\S+ .* master br0 .*link-netns ${s.node(i).netns} .*vxlan id \\d+ `,
          "m",
        ),
      );
      // every remote endpoint is a static neighbour on vxlan0 and a static FDB entry to its node
      const neigh = await s.overlayExec(i, net.id, ["ip", "neigh", "show", "dev", "vxlan0"]);
      const fdb = await s.overlayExec(i, net.id, ["bridge", "fdb", "show", "dev", "vxlan0"]);
      for (const j of [1, 2, 3].filter((j) => j !== i)) {
        const ip = tasks[j - 1]!.ipOn(NET);
        assert.ok(neigh.includes(`${ip} lladdr ${macOf(ip)} PERMANENT`), neigh);
        assert.ok(fdb.includes(`${macOf(ip)} dst ${s.node(j).ip} `), fdb);
      }
      assert.ok(!neigh.includes(`${tasks[i - 1]!.ipOn(NET)} `), "no entry for a local endpoint");
    }
  });

  it("a worker's `docker network inspect --verbose` lists the endpoints of every node", async () => {
    const s = swarm();
    const [raw] = JSON.parse(
      await s.node(3).docker("network", "inspect", "--verbose", NET),
    ) as Array<{
      Services?: Record<
        string,
        { Tasks: Array<{ EndpointIP: string; Info: Record<string, string> }> }
      >;
    }>;
    const byService = raw?.Services ?? {};
    const ips = (svc: string) => (byService[svc]?.Tasks ?? []).map((t) => t.EndpointIP).sort();
    assert.deepEqual(ips(SVC), tasks.map((t) => t.ipOn(NET)).sort());
    const hosts = (byService[SVC]?.Tasks ?? []).map((t) => t.Info["Host IP"]).sort();
    assert.deepEqual(
      hosts,
      [1, 2, 3].map((i) => s.node(i).ip),
    );
    assert.deepEqual(ips(""), [(await s.node(2).inspect("standalone")).ipOn(NET)]);
  });

  it("removeService() removes the tasks on every node; a node leaves and joins again", async () => {
    const s = swarm();
    await s.removeService(SVC);
    for (const i of [1, 2, 3]) assert.deepEqual(await s.taskContainers(SVC, i), []);
    await s.leaveNode(3);
    assert.equal(
      await s.node(3).docker("info", "--format", "{{.Swarm.LocalNodeState}}"),
      "inactive",
    );
    assert.equal((await s.manager.docker("node", "ls", "-q")).split("\n").length, 2);
    await s.joinNode(3);
    assert.equal((await s.manager.docker("node", "ls", "-q")).split("\n").length, 3);
  });

  it("stop() leaves the host as it found it", async () => {
    const s = swarm();
    const pids = new Map(s.nodes.map((n) => [n.dockerdPid, processStartTime(n.dockerdPid)]));
    const t0 = Date.now();
    await s.stop();
    console.log(`swarm lab stopped in ${Date.now() - t0} ms`);
    await s.stop(); // idempotent
    assert.deepEqual(s.leftovers(), []);
    assert.deepEqual(added(host, hostState(), s.name), []);
    assert.deepEqual(
      [...pids].filter(([pid, start]) => isAlive(pid, start)),
      [],
      "dockerd alive",
    );
    for (const n of s.nodes) {
      for (const p of [n.netnsPath, n.paths.base, n.paths.runDir])
        assert.equal(existsSync(p), false, p);
    }
    assert.equal(existsSync(`/run/netns/${s.switchNetns}`), false);
  });
});

describe("swarm lab with the product image", () => {
  const swarm = useSwarmLab({ nodes: 3, productImage: true });

  it("has trafficjam:e2e on every node, the same image", async () => {
    const s = swarm();
    console.log(`swarm lab with the product image: ${JSON.stringify(s.timings)} (ms)`);
    const ids = await Promise.all(
      s.nodes.map((n) => n.docker("image", "inspect", "--format", "{{.Id}}", PRODUCT_IMAGE)),
    );
    assert.match(ids[0]!, /^sha256:/);
    assert.deepEqual(ids, [ids[0], ids[0], ids[0]]);
  });
});
