// Docker Swarm, end to end, on three engines of the test's own (a swarm lab): the Swarm daemon
// runs on the manager as a container of the product image, as a user runs it, and deploys its
// workers; real tasks and standalone containers on an attachable overlay send real packets.
// The steps build on each other, in order.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { join } from "node:path";
import { UNDERLAY_PREFIX, sleep, useSwarmLab, type Container, type SwarmLab } from "./lab/index.js";
import { overlayMac } from "../../src/swarm/protocol.js";
import {
  PAIR_SCRIPT,
  SwarmTrafficJam,
  deployBackendsAndProxy,
  loadBalancerOf,
  startSwarmDaemon,
  type LogLine,
} from "./lab/swarm-trafficjam.js";
import { waitFor } from "./lab/util.js";
import { REPO_ROOT } from "./lab/paths.js";

const NET = "appnet";
const NET2 = "othernet";
const PROXY_LABEL = "role=proxy";

const applied = (l: LogLine) => l.event === "rules.applied" || l.event === "rules.verified";
const allowedHas = (address: string) => (l: LogLine) =>
  l.event === "rules.applied" && Array.isArray(l.allowed) && l.allowed.includes(address);
const allowedLacks = (address: string) => (l: LogLine) =>
  l.event === "rules.applied" && Array.isArray(l.allowed) && !l.allowed.includes(address);

describe(
  "Docker Swarm: the daemon on the manager, a worker on every node",
  { timeout: 900_000 },
  () => {
    const lab = useSwarmLab({ nodes: 3, joined: 2, productImage: true });
    let swarm: SwarmLab;
    let tj: SwarmTrafficJam;
    let netId = "";
    const backend: Record<number, Container> = {};
    let proxy: Container;
    let proxyNode = 1;
    let standalone: Container;

    /** The last rules.applied line of a node's worker since `since` lines. */
    const lastApplied = async (node: number): Promise<LogLine | undefined> =>
      (await tj.workerLog(node)).filter((l) => l.event === "rules.applied").at(-1);

    /** Waits until node's worker applied rules allowing `address` (its last applied set). */
    const waitAllowedOn = (node: number, address: string, timeoutMs = 30_000) =>
      waitFor(
        async () => {
          const last = await lastApplied(node);
          return Array.isArray(last?.allowed) && last.allowed.includes(address);
        },
        {
          timeoutMs,
          intervalMs: 100,
          what: `node${node}'s worker to allow ${address}`,
          details: async () => JSON.stringify(await lastApplied(node)),
        },
      );

    const tcp = (from: Container, node: number, to: string) =>
      swarm.node(node).tcp(from, to, 80, 1000);
    const nodeAddr = (n: number) => `${UNDERLAY_PREFIX}.${n}`;
    /** The overlay's VNI and data-path port, as node1's VXLAN link says. */
    let vx = { vni: 0, port: 0 };
    const PUBLISHED = 18080;

    /**
     * Backend[1], on the proxy's node, wraps in VXLAN (an ordinary UDP socket) datagrams claiming
     * the proxy's address and node1's load-balancer address, to backend[2] on node2: which arrive
     * (read through a marker the real proxy sends after them).
     */
    async function vxlanForgeries(tag: string): Promise<string[]> {
      const n1 = swarm.node(1);
      const lb1 = await loadBalancerOf(swarm, 1, NET);
      const to = backend[2]!.ipv4;
      for (const [src, what] of [
        [proxy.ipv4, "proxy"],
        [lb1, "lb"],
      ] as const)
        await n1.vxlanSend(
          backend[1]!,
          nodeAddr(2),
          vx.port,
          vx.vni,
          "udp",
          src,
          to,
          overlayMac(to),
          3,
          `${tag}-${what}`,
        );
      await n1.spoofUdp(proxy, proxy.ipv4, to, 9000, `${tag}-marker`);
      const log = await swarm.node(2).udpLogThrough(backend[2]!, `${tag}-marker`);
      return ["proxy", "lb"].filter((what) => log.some((l) => l.endsWith(` ${tag}-${what}`)));
    }

    /**
     * Backend[1] claims, in a VXLAN-wrapped ARP reply to backend[2], that the proxy's address is
     * at its own MAC: whether backend[2]'s entry for the proxy ever pointed to it.
     */
    async function vxlanArpClaim(): Promise<{ poisoned: boolean; seen: string }> {
      const n2 = swarm.node(2);
      await n2.flushNeighbours(backend[2]!);
      await swarm.node(1).ping(proxy, backend[2]!.ipv4); // backend[2] learns the proxy's MAC
      const before = await n2.neighbour(backend[2]!, proxy.ipv4);
      assert.equal(
        before?.mac,
        overlayMac(proxy.ipv4),
        `backend[2]'s entry for the proxy: ${before?.line}`,
      );
      await sleep(1300); // ARP ignores a different answer for an entry updated < 1 s ago
      const attacker = overlayMac(backend[1]!.ipv4);
      const sent = swarm
        .node(1)
        .vxlanSend(
          backend[1]!,
          nodeAddr(2),
          vx.port,
          vx.vni,
          "arp",
          proxy.ipv4,
          backend[2]!.ipv4,
          overlayMac(backend[2]!.ipv4),
          30,
          attacker,
        );
      let poisoned = false;
      const states: string[] = [];
      for (let i = 0; i < 25; i++) {
        const e = await n2.neighbour(backend[2]!, proxy.ipv4);
        const state = e
          ? `${e.mac === attacker ? "attacker" : e.mac === overlayMac(proxy.ipv4) ? "proxy" : e.mac} ${e.state}`
          : "none";
        if (states.at(-1) !== state) states.push(state);
        if (e?.mac === attacker) poisoned = true;
        await sleep(100);
      }
      await sent;
      await n2.flushNeighbours(backend[2]!);
      return { poisoned, seen: states.join(" → ") };
    }

    /**
     * A "pair" service on othernet: two tasks on node2 that, from their first instant, look each
     * other up (tasks.pair) and connect, again and again for about 8 s; how many attempts each
     * made and how many connected. The service is removed after.
     */
    async function pairProbes(): Promise<{ tried: number; reached: number }> {
      const script = PAIR_SCRIPT;
      await swarm.createService([
        ...["--name", "pair", "--replicas", "2", "--network", NET2],
        ...["--constraint", `node.hostname==${swarm.node(2).hostname}`],
        ...["tj-test", "sh", "-c", script],
      ]);
      try {
        const tasks = await waitFor(
          async () => {
            const found = await swarm.taskContainers("pair", 2);
            return found.length === 2 ? found : false;
          },
          { timeoutMs: 30_000, intervalMs: 250, what: "the pair's two tasks on node2" },
        );
        await sleep(8_000);
        let tried = 0;
        let reached = 0;
        for (const t of tasks) {
          const count = async (file: string) => {
            const r = await swarm.node(2).exec(t, ["sh", "-c", `cat ${file} 2>/dev/null | wc -l`]);
            return Number(r.stdout.trim()) || 0;
          };
          tried += await count("/tmp/tried");
          reached += await count("/tmp/reached");
        }
        return { tried, reached };
      } finally {
        await swarm.removeService("pair");
      }
    }

    /** What backend[1] reaches of its node: an address, the gateway, a published port, the channel ports. */
    async function nodeReach(): Promise<Record<string, boolean>> {
      const n1 = swarm.node(1);
      const b = backend[1]!;
      return {
        "node1's address": await n1.tcp(b, nodeAddr(1), 80, 1000),
        "node1's docker_gwbridge address": await n1.tcp(b, "172.18.0.1", 80, 1000),
        "a port published on node1": await n1.tcp(b, nodeAddr(1), PUBLISHED, 1000),
        "node1's channel port": await n1.tcp(b, nodeAddr(1), 7390, 1000),
        "node2's channel port": await n1.tcp(b, nodeAddr(2), 7390, 1000),
      };
    }

    before(async () => {
      swarm = lab();
      netId = (
        await deployBackendsAndProxy(swarm, {
          network: NET,
          subnet: "10.20.0.0/24",
          proxyLabel: PROXY_LABEL,
          nodes: 2,
        })
      ).networkId;
      for (const n of [1, 2]) backend[n] = await swarm.taskContainer("backend", n);
      proxy = await swarm.taskContainer("proxy", 1);
      // A plain container on the attachable overlay, on node2 next to a task.
      standalone = await swarm.node(2).run({ name: "plain", network: NET });
    });

    after(async () => {
      // Rules and services go with the lab's engines; the daemon container too.
    });

    it("before TrafficJam, backends reach each other, their node, and forge through the tunnel (the tests can fail)", async (tc) => {
      assert.equal(await tcp(backend[1]!, 1, backend[2]!.ipv4), true, "node1 → node2");
      assert.equal(
        await tcp(backend[2]!, 2, standalone.ipv4),
        true,
        "task → plain container on node2",
      );
      const link = JSON.parse(
        await swarm.overlayExec(1, netId, ["ip", "-d", "-j", "link", "show", "type", "vxlan"]),
      ) as Array<{ linkinfo: { info_data: { id: number; port: number } } }>;
      vx = { vni: link[0]!.linkinfo.info_data.id, port: link[0]!.linkinfo.info_data.port };
      // From an ordinary UDP socket, VXLAN datagrams claiming the proxy or a load balancer arrive.
      const forged = await vxlanForgeries("vx-before");
      tc.diagnostic(
        `without TrafficJam: VXLAN-wrapped UDP delivered, claiming: ${forged.join(", ")}`,
      );
      assert.deepEqual(forged, ["proxy", "lb"]);
      const arp = await vxlanArpClaim();
      tc.diagnostic(`without TrafficJam: VXLAN-wrapped ARP claim of the proxy: ${arp.seen}`);
      assert.equal(arp.poisoned, true, `control: ${arp.seen}`);
      // The node's services, and another service's port published on it, are open to its tasks.
      await swarm.node(1).startHostServer();
      await swarm.createService([
        ...["--name", "pub", "--replicas", "1"],
        ...["--publish", `mode=host,target=80,published=${PUBLISHED}`],
        ...["--constraint", `node.hostname==${swarm.node(1).hostname}`],
        "tj-test",
      ]);
      await swarm.waitServiceRunning("pub", 1);
      const reach = await nodeReach();
      tc.diagnostic(`without TrafficJam, backend[1] reaches: ${JSON.stringify(reach)}`);
      assert.deepEqual(
        [
          reach["node1's address"],
          reach["node1's docker_gwbridge address"],
          reach["a port published on node1"],
        ],
        [true, true, true],
      );
    });

    it("the daemon deploys a worker on every node; each applies the rules in the overlay namespace", async () => {
      // br_netfilter off in node2's overlay namespace: the worker must switch it back on there.
      await swarm.overlayExec(2, netId, ["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0"]);
      tj = await startSwarmDaemon(swarm, {
        instanceId: "sw1",
        network: NET,
        whitelist: `label=${PROXY_LABEL}`,
        env: { SWARM_IMAGE: "trafficjam:e2e" },
      });
      await tj.waitDaemon((l) => l.event === "swarm.service.created", "the worker service created");
      for (const n of [1, 2]) {
        await tj.waitWorker(n, applied, "rules applied");
        await waitAllowedOn(n, proxy.ipv4);
      }
      // The jump from FORWARD and our chain, in the overlay namespace (not the host's).
      for (const n of [1, 2]) {
        const rules = await swarm.overlayExec(n, netId, ["iptables-save", "-t", "filter"]);
        assert.match(rules, /-A FORWARD -j TRAFFICJAM/, `node${n}'s overlay namespace`);
        assert.match(
          rules,
          new RegExp(
            `-s ${proxy.ipv4.replaceAll(".", "\\.")}/32 -i br0 -o br0 -m physdev --physdev-in (veth\\w+|vxlan0)`,
          ),
        );
      }
      await tj.waitWorker(2, (l) => l.event === "host.sysctls.enabled", "br_netfilter switched on");
      // The node guard, in each node's own namespace.
      for (const n of [1, 2])
        assert.match(
          await swarm.node(n).nsExec(["nft", "list", "tables"]),
          /table inet trafficjam-node_sw1/,
          `node${n}'s own namespace`,
        );
      // The deep health check reads the rules where the worker put them (the overlay namespace:
      // the node's own holds none of them, so a check there would find them all missing).
      for (const n of [1, 2]) {
        const worker = (await tj.workerContainer(n))!;
        const deep = await swarm
          .node(n)
          .dockerResult(["exec", worker, "trafficjam", "healthcheck", "--deep"]);
        assert.equal(deep.code, 0, `node${n}: ${deep.stdout}${deep.stderr}`);
        assert.match(deep.stdout, /^healthy: rules in force in iptables-nft/);
      }
      const sysctl = ["sysctl", "-n", "net.bridge.bridge-nf-call-iptables"];
      assert.equal((await swarm.overlayExec(2, netId, sysctl)).trim(), "1");
      const bound = await swarm.overlayExec(2, netId, ["iptables-save", "-t", "filter"]);
      assert.match(
        bound,
        new RegExp(
          `-s ${proxy.ipv4.replaceAll(".", "\\.")}/32 -i br0 -m physdev ! --physdev-in vxlan0`,
        ),
        "the remote proxy is bound to the VXLAN port on node2",
      );
    });

    it("the proxy on node1 reaches the backends on every node", async () => {
      assert.equal(await tcp(proxy, 1, backend[1]!.ipv4), true, "proxy → node1");
      assert.equal(await tcp(proxy, 1, backend[2]!.ipv4), true, "proxy → node2");
      assert.equal(await tcp(proxy, 1, standalone.ipv4), true, "proxy → plain container on node2");
      assert.equal(await swarm.node(1).udp(proxy, backend[2]!.ipv4), true, "UDP proxy → node2");
    });

    it("backends cannot reach each other, on one node or across nodes (TCP, UDP, ICMP)", async () => {
      const n1 = swarm.node(1);
      const n2 = swarm.node(2);
      assert.equal(await tcp(backend[1]!, 1, backend[2]!.ipv4), false, "TCP node1 → node2");
      assert.equal(await tcp(backend[2]!, 2, backend[1]!.ipv4), false, "TCP node2 → node1");
      assert.equal(await tcp(backend[2]!, 2, standalone.ipv4), false, "TCP task → plain, node2");
      assert.equal(await tcp(standalone, 2, backend[2]!.ipv4), false, "TCP plain → task, node2");
      assert.equal(await tcp(backend[2]!, 2, proxy.ipv4), false, "TCP backend → proxy");
      assert.equal(await n1.udp(backend[1]!, backend[2]!.ipv4), false, "UDP node1 → node2");
      assert.equal(await n2.udp(standalone, backend[2]!.ipv4), false, "UDP plain → task, node2");
      assert.equal(await n1.ping(backend[1]!, backend[2]!.ipv4), false, "ICMP node1 → node2");
      assert.equal(await n2.ping(backend[2]!, standalone.ipv4), false, "ICMP task → plain, node2");
    });

    it("each worker logs its node's blocked attempts within 1 s; status and doctor show every node, told over the channel", async (tc) => {
      const n2 = swarm.node(2);
      const from = (await tj.workerLog(2)).length;
      // A port not tried before (an attempt is reported once), stamped by the kernel's clock.
      const r = await n2.exec(backend[2]!, [
        "tjprobe",
        "stamp",
        "tcp",
        standalone.ipv4,
        "81",
        "300",
      ]);
      const stamp = Number(/^stamp (\d+)$/m.exec(r.stdout)?.[1]);
      assert.ok(stamp > 0, r.stdout + r.stderr);
      assert.equal(r.code, 1, `the connection must fail: ${r.stdout}${r.stderr}`);
      const line = await tj.waitWorker(
        2,
        (l) =>
          l.event === "attempt.blocked" &&
          l.sourceAddress === backend[2]!.ipv4 &&
          l.destinationAddress === standalone.ipv4 &&
          l.port === 81,
        "the blocked attempt logged",
        10_000,
        from,
      );
      const latency = Date.parse(String(line.time)) - stamp;
      tc.diagnostic(
        `node2's worker: ${JSON.stringify(line)}; logged ${latency} ms after it was sent`,
      );
      assert.ok(latency < 1000, `logged ${latency} ms after it was sent`);
      assert.deepEqual(
        [line.kind, line.protocol, line.source, line.destination],
        ["member-to-member", "tcp", backend[2]!.name, standalone.name],
      );

      // The worker's own status: its counters read in the overlay namespace.
      const worker2 = (await tj.workerContainer(2))!;
      const own = await n2.dockerResult(["exec", worker2, "trafficjam", "status", "--json"]);
      assert.equal(own.code, 0, own.stderr);
      const [mine] = JSON.parse(own.stdout) as Array<{
        drops: Record<string, number>;
        rulesIn: string[];
        attemptLog: { reading: boolean };
      }>;
      assert.ok(mine!.drops["member-to-member"]! > 0, JSON.stringify(mine));
      assert.ok(
        mine!.rulesIn.some((w) => w.includes(" in /")),
        JSON.stringify(mine!.rulesIn),
      );
      assert.equal(mine!.attemptLog.reading, true);

      // The daemon's status: every node, its worker connected, its counters and attempts.
      const ids = await Promise.all(
        [1, 2].map(async (n) =>
          (await swarm.node(n).docker("info", "--format", "{{.Swarm.NodeID}}")).trim(),
        ),
      );
      type NodeRow = {
        node: string;
        worker: string;
        status: {
          mode: string;
          lastPass: { ok: boolean } | null;
          drops: Record<string, number> | null;
          attempts: { byKind: Record<string, number> };
          attemptLog: { reading: boolean };
        } | null;
      };
      const daemonStatus = async () => {
        const out = await swarm
          .node(1)
          .dockerResult(["exec", tj.container, "trafficjam", "status", "--json"]);
        assert.equal(out.code, 0, out.stderr);
        return (JSON.parse(out.stdout) as Array<{ swarm?: { nodes: NodeRow[] } }>)[0]?.swarm;
      };
      // New attempts are told within 5 s (STATUS_NEWS_MS).
      const seen = await waitFor(
        async () => {
          const sw = await daemonStatus();
          const row = sw?.nodes.find((n) => n.node === ids[1]);
          return (row?.status?.attempts.byKind["member-to-member"] ?? 0) > 0 ? sw : false;
        },
        {
          timeoutMs: 20_000,
          intervalMs: 500,
          what: "node2's attempt in the daemon's status",
          details: async () => JSON.stringify(await daemonStatus()),
        },
      );
      for (const [i, id] of ids.entries()) {
        const row = seen.nodes.find((n) => n.node === id);
        assert.equal(row?.worker, "connected", `node${i + 1}: ${JSON.stringify(row)}`);
        assert.equal(row?.status?.lastPass?.ok, true, `node${i + 1}`);
        assert.equal(row?.status?.mode, "enforce");
        assert.equal(row?.status?.attemptLog.reading, true, `node${i + 1}`);
      }
      const node2 = seen.nodes.find((n) => n.node === ids[1])!;
      assert.ok(node2.status!.drops!["member-to-member"]! > 0, JSON.stringify(node2.status));
      const text = await swarm.node(1).docker("exec", tj.container, "trafficjam", "status");
      assert.match(text, /^ {2}swarm +\d+ nodes, \d+ workers connected/m);
      tc.diagnostic(`the daemon's status:\n${text}`);

      // doctor where the daemon runs: a line per node; in a worker, the overlay is its network.
      const doctor = await swarm
        .node(1)
        .dockerResult(["exec", tj.container, "trafficjam", "doctor"]);
      tc.diagnostic(`the daemon's doctor:\n${doctor.stdout}`);
      assert.equal(doctor.code, 0, doctor.stdout + doctor.stderr);
      for (const id of ids)
        assert.match(
          doctor.stdout,
          new RegExp(`^pass {2}node .*${id.slice(0, 12)}: worker connected at `, "m"),
        );
      const inWorker = await n2.dockerResult(["exec", worker2, "trafficjam", "doctor"]);
      assert.match(inWorker.stdout, new RegExp(`^pass {2}network: ${NET}: overlay`, "m"));
    });

    it("forged proxy addresses are dropped: from a local port, and arriving from another node", async () => {
      const n1 = swarm.node(1);
      const n2 = swarm.node(2);
      // Control: the real proxy's datagram arrives.
      await n1.spoofUdp(proxy, proxy.ipv4, standalone.ipv4, 9000, "real-proxy");
      // node2's backend claims the proxy's address toward its neighbour on node2 (the proxy's
      // address is bound to the VXLAN port there) and toward node1 (where it is bound to the proxy's veth).
      await n2.spoofUdp(backend[2]!, proxy.ipv4, standalone.ipv4, 9000, "forged-local");
      await n2.spoofUdp(backend[2]!, proxy.ipv4, backend[1]!.ipv4, 9000, "forged-remote");
      // node1's backend claims node2's load-balancer address (allowed, bound to vxlan0 on node1).
      const lb2 = await loadBalancerOf(swarm, 2, NET);
      await n1.spoofUdp(backend[1]!, lb2, standalone.ipv4, 9000, "forged-lb");
      // Markers from the real proxy, sent after every forgery: each log holds what came before.
      await n1.spoofUdp(proxy, proxy.ipv4, standalone.ipv4, 9000, "after-forgeries");
      await n1.spoofUdp(proxy, proxy.ipv4, backend[1]!.ipv4, 9000, "after-forgeries");
      const plainLog = await n2.udpLogThrough(standalone, "after-forgeries");
      const b1Log = await n1.udpLogThrough(backend[1]!, "after-forgeries");
      assert.ok(
        plainLog.some((l) => l.includes("real-proxy")),
        `control: ${plainLog.join(" | ")}`,
      );
      assert.ok(!plainLog.some((l) => l.includes("forged-local")), plainLog.join(" | "));
      assert.ok(!b1Log.some((l) => l.includes("forged-remote")), b1Log.join(" | "));
      assert.ok(!plainLog.some((l) => l.includes("forged-lb")), plainLog.join(" | "));
    });

    it("a chain flushed by hand in the overlay namespace is repaired at once (nft monitor there), and logged", async (tc) => {
      // The repair comes from the worker's watch of that namespace, not its resync timer
      // (POLL_INTERVAL 5 s): a resync that happens to fall within the watch's 100 ms wins that
      // race, so the flush is tried again (three times at most) until the watch's pass repairs it.
      let reason = "";
      for (let attempt = 0; attempt < 3 && !reason.includes("rules:changed"); attempt++) {
        const from = (await tj.workerLog(1)).length;
        await swarm.overlayExec(1, netId, ["iptables", "-F", "TRAFFICJAM"]);
        const repaired = await tj.waitWorker(
          1,
          (l) => l.event === "rules.repaired",
          "the flushed chain repaired",
          20_000,
          from,
        );
        reason = String(repaired.reason);
        tc.diagnostic(`attempt ${attempt + 1}: rules.repaired, reason ${reason}`);
      }
      assert.match(reason, /\brules:changed\b/);
      assert.match(
        await swarm.overlayExec(1, netId, ["iptables-save", "-t", "filter"]),
        /-A TRAFFICJAM /,
      );
      assert.equal(await tcp(backend[2]!, 2, backend[1]!.ipv4), false, "node2 → node1 again");
      assert.equal(await tcp(proxy, proxyNode, backend[1]!.ipv4), true, "the proxy still");
    });

    it("no container sends into the data path: VXLAN forgeries from the proxy's node arrive nowhere", async (tc) => {
      const forged = await vxlanForgeries("vx-after");
      tc.diagnostic(
        `with TrafficJam: VXLAN-wrapped UDP delivered, claiming: ${forged.join(", ") || "nothing"}`,
      );
      assert.deepEqual(forged, []);
      const arp = await vxlanArpClaim();
      tc.diagnostic(`with TrafficJam: VXLAN-wrapped ARP claim of the proxy: ${arp.seen}`);
      assert.equal(arp.poisoned, false, arp.seen);
    });

    it("members cannot reach their node (its addresses, a published port) nor any node's channel port", async (tc) => {
      const n1 = swarm.node(1);
      const reach = await nodeReach();
      tc.diagnostic(`with TrafficJam, backend[1] reaches: ${JSON.stringify(reach)}`);
      assert.deepEqual(Object.values(reach), [false, false, false, false, false]);
      // The channel listens: node1 itself connects to it.
      assert.equal(
        await n1.tcp(n1.host, nodeAddr(1), 7390, 1000),
        true,
        "node1 → its channel port",
      );
      // And it is the node guard that closes it: without it, the backend connects; the worker's
      // next resync puts the guard back.
      await n1.nsExec(["nft", "delete", "table", "inet", "trafficjam-node_sw1"]);
      assert.equal(
        await n1.tcp(backend[1]!, nodeAddr(1), 7390, 1000),
        true,
        "control: guard removed",
      );
      await waitFor(
        async () => /inet trafficjam-node_sw1/.test(await n1.nsExec(["nft", "list", "tables"])),
        { timeoutMs: 20_000, intervalMs: 250, what: "node1's worker to put its guard back" },
      );
      assert.equal(await n1.tcp(backend[1]!, nodeAddr(1), 7390, 1000), false, "closed again");
    });

    it("the proxy rescheduled to node2 regains access to every backend", async () => {
      const old = proxy.ipv4;
      const marks: Record<number, number> = {};
      for (const n of [1, 2]) marks[n] = (await tj.workerLog(n)).length;
      await swarm.manager.docker(
        ...["service", "update", "--detach", "--no-resolve-image"],
        ...["--constraint-rm", `node.hostname==${swarm.node(1).hostname}`],
        ...["--constraint-add", `node.hostname==${swarm.node(2).hostname}`],
        "proxy",
      );
      await swarm.waitServiceRunning("proxy", 1);
      proxy = await swarm.taskContainer("proxy", 2);
      proxyNode = 2;
      await waitAllowedOn(1, proxy.ipv4);
      assert.equal(await tcp(proxy, 2, backend[1]!.ipv4), true, "proxy (node2) → node1");
      assert.equal(await tcp(proxy, 2, backend[2]!.ipv4), true, "proxy (node2) → node2");
      // The old address is no longer allowed anywhere once its task is gone.
      for (const n of [1, 2])
        await tj.waitWorker(n, allowedLacks(old), `${old} revoked`, 30_000, marks[n]);
      assert.equal(await tcp(backend[1]!, 1, backend[2]!.ipv4), false, "backends still isolated");
      // No worker was restarted for these changes.
      for (const n of [1, 2])
        assert.equal((await tj.workerContainers(n)).length, 1, `node${n}: one worker container`);
    });

    it("a node that joins later is protected, and the proxy reaches its backend", async () => {
      await swarm.joinNode(3);
      await swarm.waitServiceRunning("backend", 3);
      backend[3] = await swarm.taskContainer("backend", 3);
      await tj.waitWorker(3, applied, "rules applied on the new node");
      await waitAllowedOn(3, proxy.ipv4);
      assert.equal(await tcp(proxy, proxyNode, backend[3]!.ipv4), true, "proxy → node3");
      assert.equal(await tcp(backend[3]!, 3, backend[1]!.ipv4), false, "node3 → node1");
      assert.equal(await tcp(backend[1]!, 1, backend[3]!.ipv4), false, "node1 → node3");
    });

    it("a node whose worker enforces nothing cannot claim a proxy of another node: the receiving node checks the tunnel's sender", async () => {
      // node1's worker is made to enforce nothing in its overlay namespace (as on a node that just
      // joined): its backend claims the proxy's address (the proxy runs on node2) toward node3.
      const n1 = swarm.node(1);
      const n3 = swarm.node(3);
      const tag = (t: string) => `${t}-${Date.now()}`;
      // (A node's root can do this: its own guard goes too, so nothing stops its packets at home.)
      const unguard1 = async () => {
        await swarm.overlayExec(1, netId, [
          "sh",
          "-c",
          "nft delete table bridge trafficjam-l2_sw1; iptables -D FORWARD -j TRAFFICJAM; true",
        ]);
        await swarm.node(1).nsRun(["nft", "delete", "table", "inet", "trafficjam-node_sw1"]);
      };
      /** Whether backend[3] logged `payload` within `ms` (polled). */
      const received = async (payload: string, ms: number) => {
        const deadline = Date.now() + ms;
        do {
          await new Promise((r) => setTimeout(r, 200));
          if ((await n3.udpLog(backend[3]!)).some((l) => l.includes(payload))) return true;
        } while (Date.now() < deadline);
        return false;
      };
      // node3's check names the proxy (on node2) before anything is forged.
      const proxyHex = `0x${proxy.ipv4
        .split(".")
        .map((b) => Number(b).toString(16).padStart(2, "0"))
        .join("")}`.replace(/^0x0+/, "0x");
      await waitFor(
        async () =>
          (await n3.nsRun(["nft", "list", "table", "inet", "trafficjam-node_sw1"])).stdout.includes(
            proxyHex,
          ),
        { timeoutMs: 20_000, intervalMs: 250, what: "node3's tunnel check to name the proxy" },
      );
      // The workers repair a foreign change at once (their nft monitor): node1's is held still
      // (docker pause) while its rules are gone, so what stops the forgery is node3's check.
      const worker1 = (await tj.workerContainer(1))!;
      const worker3 = (await tj.workerContainer(3))!;
      await n1.docker("pause", worker1);
      const paused = [() => n1.docker("unpause", worker1)];
      let through = false;
      try {
        await unguard1();
        const forged = tag("forged-tunnel");
        await n1.spoofUdp(backend[1]!, proxy.ipv4, backend[3]!.ipv4, 9000, forged);
        // The real proxy's datagram after it, through the tunnel too: the log holds what came before.
        const marker = tag("after-forged");
        await swarm.node(proxyNode).spoofUdp(proxy, proxy.ipv4, backend[3]!.ipv4, 9000, marker);
        const log = await n3.udpLogThrough(backend[3]!, marker);
        assert.ok(
          !log.some((l) => l.includes(forged)),
          `node3 dropped the proxy's address sent by node1: ${log.join(" | ")}`,
        );
        // Control: without node3's check of the tunnel's sender, the same packet gets through
        // (node3's worker held still too, or it would put its check back at once).
        await n3.docker("pause", worker3);
        paused.push(() => n3.docker("unpause", worker3));
        for (let attempt = 0; attempt < 3 && !through; attempt++) {
          await unguard1();
          await n3.nsRun(["nft", "delete", "table", "inet", "trafficjam-node_sw1"]); // gone already: fine
          const control = tag("control");
          await n1.spoofUdp(backend[1]!, proxy.ipv4, backend[3]!.ipv4, 9000, control);
          through = await received(control, 2000);
        }
      } finally {
        for (const unpause of paused) await unpause();
      }
      assert.equal(through, true, "the control got through: the test can fail");
      // Both repaired once their workers run again.
      await waitFor(
        async () => /trafficjam-node_sw1/.test(await n3.nsExec(["nft", "list", "tables"])),
        { timeoutMs: 20_000, intervalMs: 250, what: "node3's worker to put its tunnel check back" },
      );
      await waitFor(
        async () =>
          /-A FORWARD -j TRAFFICJAM/.test(
            await swarm.overlayExec(1, netId, ["iptables-save", "-t", "filter"]),
          ),
        { timeoutMs: 20_000, intervalMs: 250, what: "node1's worker to repair its rules" },
      );
    });

    it("a node's root, with its worker's channel key, cannot make another node allow anything", async (tc) => {
      const n2 = swarm.node(2);
      const worker2 = (await tj.workerContainer(2))!;
      const worker3 = (await tj.workerContainer(3))!;
      const savedOf = async (n: number, container: string) => {
        const r = await swarm
          .node(n)
          .dockerResult(["exec", container, "cat", "/var/lib/trafficjam/sw1.allowed.json"]);
        if (r.code !== 0) {
          const log = (await tj.workerLog(n)).slice(-40).map((l) => JSON.stringify(l));
          const ps = await swarm.node(n).docker("ps", "-a", "--format", "{{.Names}} {{.Status}}");
          assert.fail(`node${n}: ${r.stderr}\n${ps}\n${log.join("\n")}`);
        }
        return JSON.parse(r.stdout) as {
          seq: number;
          last: Record<string, unknown> & { seq: number; entries: unknown[] };
        };
      };
      // What node2's root has: the channel's key, and a set the daemon signed (node2 took it).
      const psk = (await n2.docker("exec", worker2, "cat", "/run/secrets/trafficjam_key")).trim();
      const old = (await savedOf(2, worker2)).last;
      // node3 took that set too (one broadcast), or a newer one since: the old one is no news.
      assert.ok((await savedOf(3, worker3)).seq >= old.seq);
      const peer = join(REPO_ROOT, "test", "e2e", "lab", "channel-peer.mjs");
      const send = async (message: unknown) => {
        const r = await n2.nsRun(
          [process.execPath, peer, psk, nodeAddr(3), "7390", JSON.stringify(message)],
          20_000,
        );
        return `${r.stdout}${r.stderr}`.trim();
      };
      const mark = (await tj.workerLog(3)).length;
      // 1. A set allowing node2's backend, signed with a key of its own: the channel takes it, the worker does not.
      const fake = {
        ...old,
        seq: old.seq + 1_000_000_000,
        entries: [
          ...old.entries,
          {
            node: n2.swarmNodeId,
            hostIp: nodeAddr(2),
            ipv4: backend[2]!.ipv4,
            name: "fake",
            kind: "container",
          },
        ],
        signature: Buffer.alloc(64, 7).toString("base64"),
      };
      const answer = await send(fake);
      tc.diagnostic(`node3's worker answered the stranger: ${answer.slice(0, 120)}`);
      assert.match(answer, /"type":"report"/, "the channel's key lets the stranger talk");
      // 2. A set the daemon did sign, but older than node3's last: replayed.
      await send(old);
      const rejected = await waitFor(
        async () => {
          const lines = (await tj.workerLog(3))
            .slice(mark)
            .filter((l) => l.event === "swarm.allowed.rejected");
          return lines.length >= 2 ? lines : false;
        },
        { timeoutMs: 10_000, intervalMs: 200, what: "node3's worker to reject both sets" },
      );
      tc.diagnostic(`node3's worker: ${rejected.map((l) => String(l.reason)).join("; ")}`);
      assert.deepEqual(
        rejected.map((l) => l.reason),
        ["bad signature", "replayed or out of order"],
      );
      const last = await lastApplied(3);
      assert.ok(
        !(Array.isArray(last?.allowed) && last.allowed.includes(backend[2]!.ipv4)),
        JSON.stringify(last),
      );
      assert.equal(
        await tcp(backend[2]!, 2, backend[3]!.ipv4),
        false,
        "node2's backend → node3: still blocked",
      );
    });

    it("a standalone whitelisted container on a worker node is allowed on every node", async () => {
      const extra = await swarm
        .node(3)
        .run({ name: "proxy2", network: NET, labels: { role: "proxy" } });
      for (const n of [1, 2, 3]) await waitAllowedOn(n, extra.ipv4);
      assert.equal(
        await tcp(extra, 3, backend[1]!.ipv4),
        true,
        "standalone proxy on node3 → node1",
      );
      const marks = await Promise.all([1, 2].map(async (n) => (await tj.workerLog(n)).length));
      await swarm.node(3).docker("rm", "-f", "proxy2");
      for (const n of [1, 2])
        await tj.waitWorker(
          n,
          allowedLacks(extra.ipv4),
          "its address revoked",
          30_000,
          marks[n - 1],
        );
    });

    it("one node's worker silent, the daemon restarted: a proxy removed elsewhere loses its allowance on the others", async (tc) => {
      const worker3 = (await tj.workerContainer(3))!;
      await swarm.node(3).docker("pause", worker3);
      try {
        const restartedAt = Date.now();
        await swarm.manager.docker("restart", tj.container);
        await tj.waitDaemon(
          (l) =>
            l.event === "swarm.allowed.changed" && Date.parse(String(l.time)) >= restartedAt - 1000,
          "a set after the restart",
        );
        const extra = await swarm
          .node(1)
          .run({ name: "proxy3", network: NET, labels: { role: "proxy" } });
        await waitAllowedOn(2, extra.ipv4);
        const from = (await tj.workerLog(2)).length;
        const removedAt = Date.now();
        await swarm.node(1).docker("rm", "-f", "proxy3");
        await tj.waitWorker(
          2,
          allowedLacks(extra.ipv4),
          "node2 to revoke proxy3 though node3 is silent",
          20_000,
          from,
        );
        tc.diagnostic(
          `proxy3 removed on node1 → revoked on node2 in ${Date.now() - removedAt} ms, node3's worker paused`,
        );
      } finally {
        await swarm.node(3).docker("unpause", worker3);
      }
    });

    it("the daemon stopped: the rules stay, and new containers are still isolated", async () => {
      await swarm.manager.docker("stop", tj.container);
      assert.equal(await tcp(backend[1]!, 1, backend[2]!.ipv4), false, "still isolated");
      assert.equal(await tcp(proxy, proxyNode, backend[1]!.ipv4), true, "the proxy still allowed");
      const seen = (await tj.workerLog(1)).length;
      const late = await swarm.node(1).run({ name: "late", network: NET });
      // From its first packet: nothing allows it, whether or not its port is bound yet.
      assert.equal(await tcp(late, 1, backend[2]!.ipv4), false, "at once: cannot reach node2");
      await waitFor(
        async () => (await tj.workerLog(1)).slice(seen).some((l) => l.event === "rules.applied"),
        { timeoutMs: 30_000, intervalMs: 200, what: "node1's worker to bind the new member" },
      );
      assert.equal(
        await tcp(late, 1, backend[2]!.ipv4),
        false,
        "the new container cannot reach node2",
      );
      assert.equal(
        await tcp(backend[1]!, 1, late.ipv4),
        false,
        "nor be reached from its neighbour",
      );
      assert.equal(await tcp(proxy, proxyNode, late.ipv4), true, "the proxy reaches it");
      await swarm.node(1).docker("rm", "-f", "late");
      const restartedAt = Date.now();
      await swarm.manager.docker("start", tj.container);
      await tj.waitDaemon(
        (l) =>
          l.event === "swarm.worker.connected" && Date.parse(String(l.time)) >= restartedAt - 1000,
        "connected to the workers again",
      );
      // Its key was kept: no new secret, no service update, so no worker restarted.
      const log = await tj.daemonLog();
      for (const key of ["channel", "signing"])
        assert.equal(
          log.filter((l) => l.event === "swarm.key.created" && l.key === key).length,
          1,
          `one ${key} key`,
        );
      assert.equal(log.filter((l) => l.event === "swarm.service.updated").length, 0);
    });

    it("the worker service removed by hand is deployed again; the rules stayed meanwhile", async () => {
      await swarm.manager.docker("service", "rm", tj.service);
      assert.equal(await tcp(backend[1]!, 1, backend[2]!.ipv4), false, "still isolated");
      await waitFor(
        async () =>
          (await tj.daemonLog()).filter((l) => l.event === "swarm.service.created").length === 2,
        { timeoutMs: 30_000, intervalMs: 250, what: "the daemon to deploy the workers again" },
      );
      for (const n of [1, 2, 3])
        await tj.waitWorker(n, (l) => l.event === "swarm.state.loaded", "its saved set loaded");
      assert.equal(await tcp(proxy, proxyNode, backend[3]!.ipv4), true, "the proxy still allowed");
      assert.equal(await tcp(backend[3]!, 3, backend[1]!.ipv4), false, "backends still isolated");
    });

    it("two instances on two overlays stay independent; a recreated network is protected again", async (tc) => {
      const other = await swarm.createOverlay(NET2, { subnet: "10.21.0.0/24" });
      const a = await swarm.node(1).run({ name: "o1", network: NET2 });
      const b = await swarm.node(2).run({ name: "o2", network: NET2 });
      const p = await swarm
        .node(3)
        .run({ name: "oproxy", network: NET2, labels: { role: "edge" } });
      // Control: two tasks on one node, probing each other from their first instant, connect on
      // an unprotected overlay.
      const before = await pairProbes();
      tc.diagnostic(`unprotected othernet, a pair of tasks on node2: ${JSON.stringify(before)}`);
      assert.ok(
        before.reached > 0,
        `control: the pair's tasks reached each other: ${JSON.stringify(before)}`,
      );
      // This one the way the original's README deploys it: a one-replica service on a manager,
      // the socket mounted, no host networking, no SWARM_IMAGE (its own image is deployed); its
      // members may reach their node (ALLOW_HOST_TRAFFIC), still not the data path.
      await swarm.createService([
        ...["--name", "tj2", "--replicas", "1", "--constraint", "node.role==manager"],
        ...["--mount", "type=bind,source=/var/run/docker.sock,destination=/var/run/docker.sock"],
        ...["--env", `NETWORK=${NET2}`, "--env", "WHITELIST_FILTER=label=role=edge"],
        ...["--env", "SWARM_DAEMON=true", "--env", "INSTANCE_ID=sw2", "--env", "POLL_INTERVAL=5"],
        ...["--env", "SWARM_CHANNEL_PORT=7391", "--env", "FIREWALL_BACKEND=nftables"],
        ...["--env", "ALLOW_HOST_TRAFFIC=true"],
        // exit 0 after SIGUSR1 is the end (a restart would deploy the workers again)
        ...["--restart-condition", "on-failure"],
        "trafficjam:e2e",
      ]);
      await swarm.waitServiceRunning("tj2", 1);
      const tj2 = new SwarmTrafficJam(swarm, "sw2", (await swarm.taskContainer("tj2", 1)).id);
      for (const n of [1, 2]) {
        await tj2.waitWorker(n, allowedHas(p.ipv4), "the edge proxy allowed");
      }
      assert.equal(await tcp(a, 1, b.ipv4), false, "othernet: node1 → node2");
      assert.equal(await tcp(p, 3, a.ipv4), true, "othernet: its proxy → node1");
      // ALLOW_HOST_TRAFFIC: its members reach their node and a port published on it; never a
      // channel port, nor the data path.
      const n1 = swarm.node(1);
      const open = {
        "node1's address": await n1.tcp(a, nodeAddr(1), 80, 1000),
        "a port published on node1": await n1.tcp(a, nodeAddr(1), PUBLISHED, 1000),
        "node1's channel port (sw2)": await n1.tcp(a, nodeAddr(1), 7391, 1000),
        "node2's channel port (sw1)": await n1.tcp(a, nodeAddr(2), 7390, 1000),
      };
      tc.diagnostic(
        `ALLOW_HOST_TRAFFIC, othernet's member on node1 reaches: ${JSON.stringify(open)}`,
      );
      assert.deepEqual(Object.values(open), [true, true, false, false]);
      // appnet's proxy is nobody on othernet, and othernet's rules are elsewhere.
      assert.equal(await tcp(proxy, proxyNode, backend[1]!.ipv4), true, "appnet unchanged");
      const nft = await swarm.overlayExec(1, other.id, ["nft", "list", "tables"]);
      assert.match(nft, /inet trafficjam_sw2/);
      assert.doesNotMatch(await swarm.overlayExec(1, netId, ["nft", "list", "tables"]), /sw2/);
      // othernet removed and created again under the same name: a new ID, new namespaces.
      for (const [name, n] of [
        ["o1", 1],
        ["o2", 2],
        ["oproxy", 3],
      ] as const)
        await swarm.node(n).docker("rm", "-f", name);
      await waitFor(
        async () => (await swarm.manager.dockerResult(["network", "rm", NET2])).code === 0,
        {
          timeoutMs: 30_000,
          intervalMs: 500,
          what: "othernet to be removed",
        },
      );
      const again = await swarm.createOverlay(NET2, { subnet: "10.21.0.0/24" });
      assert.notEqual(again.id, other.id);
      const a2 = await swarm.node(1).run({ name: "o1", network: NET2 });
      const b2 = await swarm.node(2).run({ name: "o2", network: NET2 });
      const p2 = await swarm
        .node(3)
        .run({ name: "oproxy", network: NET2, labels: { role: "edge" } });
      for (const n of [1, 2])
        await waitFor(
          async () =>
            /inet trafficjam_sw2/.test(
              await swarm.overlayExec(n, again.id, ["nft", "list", "tables"]),
            ),
          {
            timeoutMs: 30_000,
            intervalMs: 250,
            what: `node${n}'s worker to protect the new othernet`,
          },
        );
      assert.equal(await tcp(a2, 1, b2.ipv4), false, "new othernet: node1 → node2");
      // Two tasks started together on one node of the new network: isolated from their first probes.
      const after = await pairProbes();
      tc.diagnostic(`protected new othernet, a pair of tasks on node2: ${JSON.stringify(after)}`);
      assert.ok(after.tried > 0, `the pair's tasks probed each other: ${JSON.stringify(after)}`);
      assert.equal(after.reached, 0, JSON.stringify(after));
      await waitFor(async () => tcp(p2, 3, a2.ipv4), {
        timeoutMs: 30_000,
        intervalMs: 250,
        what: "the edge proxy to reach node1 on the new othernet",
      });
      // SIGUSR1 on the second one: its workers and rules go, the first instance's stay.
      await swarm.manager.docker("kill", "--signal", "USR1", tj2.container);
      await waitFor(async () => !(await tj2.daemonState()).running, {
        timeoutMs: 120_000,
        intervalMs: 250,
        what: "the second daemon to exit",
      });
      assert.equal((await tj2.daemonState()).exitCode, 0);
      assert.equal(await tcp(a2, 1, b2.ipv4), true, "othernet open again");
      assert.equal(await tcp(backend[1]!, 1, backend[2]!.ipv4), false, "appnet still isolated");
      for (const name of ["o1", "o2", "oproxy"]) {
        const n = name === "o1" ? 1 : name === "o2" ? 2 : 3;
        await swarm.node(n).docker("rm", "-f", name);
      }
    });

    it("SIGUSR1 removes the worker service and every node's rules", async () => {
      await swarm.manager.docker("kill", "--signal", "USR1", tj.container);
      await waitFor(async () => !(await tj.daemonState()).running, {
        timeoutMs: 120_000,
        intervalMs: 250,
        what: "the daemon to exit",
      });
      assert.equal(
        (await tj.daemonState()).exitCode,
        0,
        JSON.stringify((await tj.daemonLog()).slice(-5)),
      );
      assert.equal(
        (
          await swarm.manager.docker("service", "ls", "-q", "--filter", `name=${tj.service}`)
        ).trim(),
        "",
      );
      assert.equal(
        (await swarm.manager.docker("secret", "ls", "-q")).trim(),
        "",
        "the key secret removed",
      );
      for (const n of [1, 2, 3]) {
        const rules = await swarm.overlayExec(n, netId, ["iptables-save", "-t", "filter"]);
        assert.doesNotMatch(rules, /TRAFFICJAM|TJF_/, `node${n}: no chain left`);
        const tables = await swarm.overlayExec(n, netId, ["nft", "list", "tables"]);
        assert.doesNotMatch(tables, /trafficjam/, `node${n}: no table left`);
        const own = await swarm.node(n).nsExec(["nft", "list", "tables"]);
        assert.doesNotMatch(own, /trafficjam/, `node${n}: no node guard left`);
      }
      assert.equal(await tcp(backend[1]!, 1, backend[2]!.ipv4), true, "open again across nodes");
    });
  },
);
