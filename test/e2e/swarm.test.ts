// Docker Swarm, end to end, on three engines of the test's own (a swarm lab): the Swarm daemon
// runs on the manager as a container of the product image, as a user runs it, and deploys its
// workers; real tasks and standalone containers on an attachable overlay send real packets.
// The steps build on each other, in order.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { useSwarmLab, type SwarmLab, type Container } from "./lab/index.js";
import {
  SwarmTrafficJam,
  deployBackendsAndProxy,
  loadBalancerOf,
  startSwarmDaemon,
  type LogLine,
} from "./lab/swarm-trafficjam.js";
import { waitFor } from "./lab/util.js";

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

    it("before TrafficJam, backends reach each other on one node and across nodes (the tests can fail)", async () => {
      assert.equal(await tcp(backend[1]!, 1, backend[2]!.ipv4), true, "node1 → node2");
      assert.equal(
        await tcp(backend[2]!, 2, standalone.ipv4),
        true,
        "task → plain container on node2",
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

    it("the proxy rescheduled to node2 regains access to every backend", async () => {
      const old = proxy.ipv4;
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
      for (const n of [1, 2]) await tj.waitWorker(n, allowedLacks(old), `${old} revoked`);
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
      const unguard1 = async () => {
        await swarm.overlayExec(1, netId, [
          "sh",
          "-c",
          "nft delete table bridge trafficjam-l2_sw1; iptables -D FORWARD -j TRAFFICJAM; true",
        ]);
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
          (
            await n3.nsRun(["nft", "list", "table", "inet", "trafficjam-vxlan_sw1"])
          ).stdout.includes(proxyHex),
        { timeoutMs: 20_000, intervalMs: 250, what: "node3's tunnel check to name the proxy" },
      );
      await unguard1();
      const forged = tag("forged-tunnel");
      await n1.spoofUdp(backend[1]!, proxy.ipv4, backend[3]!.ipv4, 9000, forged);
      assert.equal(
        await received(forged, 1500),
        false,
        "node3 dropped the proxy's address sent by node1",
      );
      // Control: without node3's check of the tunnel's sender, the same packet gets through (node1's
      // worker repairs its rules at its next resync: the control is tried again if it did).
      let through = false;
      for (let attempt = 0; attempt < 3 && !through; attempt++) {
        await unguard1();
        await n3.nsRun(["nft", "delete", "table", "inet", "trafficjam-vxlan_sw1"]); // gone already: fine
        const control = tag("control");
        await n1.spoofUdp(backend[1]!, proxy.ipv4, backend[3]!.ipv4, 9000, control);
        through = await received(control, 2000);
      }
      assert.equal(through, true, "the control got through: the test can fail");
      // Both repaired by the workers' next resync.
      await waitFor(
        async () => /trafficjam-vxlan_sw1/.test(await n3.nsExec(["nft", "list", "tables"])),
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
      await swarm.node(3).docker("rm", "-f", "proxy2");
      for (const n of [1, 2])
        await tj.waitWorker(n, allowedLacks(extra.ipv4), "its address revoked");
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
      assert.equal(log.filter((l) => l.event === "swarm.key.created").length, 1, "one key");
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

    it("two instances on two overlays stay independent; a recreated network is protected again", async () => {
      const other = await swarm.createOverlay(NET2, { subnet: "10.21.0.0/24" });
      const a = await swarm.node(1).run({ name: "o1", network: NET2 });
      const b = await swarm.node(2).run({ name: "o2", network: NET2 });
      const p = await swarm
        .node(3)
        .run({ name: "oproxy", network: NET2, labels: { role: "edge" } });
      // This one the way the original's README deploys it: a one-replica service on a manager,
      // the socket mounted, no host networking, no SWARM_IMAGE (its own image is deployed).
      await swarm.createService([
        ...["--name", "tj2", "--replicas", "1", "--constraint", "node.role==manager"],
        ...["--mount", "type=bind,source=/var/run/docker.sock,destination=/var/run/docker.sock"],
        ...["--env", `NETWORK=${NET2}`, "--env", "WHITELIST_FILTER=label=role=edge"],
        ...["--env", "SWARM_DAEMON=true", "--env", "INSTANCE_ID=sw2", "--env", "POLL_INTERVAL=5"],
        ...["--env", "SWARM_CHANNEL_PORT=7391", "--env", "FIREWALL_BACKEND=nftables"],
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
      }
      assert.equal(await tcp(backend[1]!, 1, backend[2]!.ipv4), true, "open again across nodes");
    });
  },
);
