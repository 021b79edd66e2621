// No fail-open corners on one host: what TrafficJam must hold when it adopts a live host, and
// where its decisions depend on Docker's state changing. Run once per backend (adoption*.test.ts):
// - connections opened before TrafficJam started (and after a --clear) stop carrying data;
// - a container claiming the gateway's identity from its first instant poisons nobody;
// - `network=`, `health=` and `status=` whitelists are revoked at the event, not at the resync;
// - flow deletions that fail are retried until they succeed, and health says so meanwhile;
// - br_netfilter switched off is noticed at the next resync.
// Every check has its control: the same traffic or attack without TrafficJam (or before the
// change) must get through, or the check proves nothing.
import { after, before, describe, it, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync, chmodSync } from "node:fs";
import { join } from "node:path";
import {
  runCli,
  sleep,
  startDaemon,
  startLab,
  waitFor,
  type Container,
  type DaemonProcess,
  type Lab,
  type LogEntry,
  type Origin,
  type Outside,
} from "./lab/index.js";
import { BUSYBOX, TEST_IMAGE } from "./lab/image.js";
import { buildTopology, isInForce, listening, type Topology } from "./topology.js";

export interface AdoptionSetup {
  title: string;
  /** Unique per test file. */
  labName: string;
  /** FIREWALL_BACKEND, … */
  env: Record<string, string>;
  /** Changes another tool might make to instance `web`'s rules that open the network. */
  vandalism: string[][];
}

/** ARP ignores a different answer for an entry updated less than locktime (1 s) ago. */
const ARP_LOCKTIME_MS = 1000;

/** A line every 100 ms from a server to the client that opened the connection. */
interface Stream {
  what: string;
  client: Container;
  file: string;
}

export function adoptionSuite(setup: AdoptionSetup): void {
  describe(`adopting a live host, no fail-open corners (${setup.title})`, () => {
    let lab: Lab;
    let t: Topology;
    let stateDir: string;
    let outside: Outside;
    let port = 7000;
    const hostServers: ChildProcess[] = [];

    before(async () => {
      lab = await startLab({ name: setup.labName, ipv6: true });
      t = await buildTopology(lab, { v6: "fd00:38", v4: "172.38.0", otherV4: "172.39.0" });
      outside = await lab.startOutside({ prefix4: "10.252.0", prefix6: "fd00:252" });
      stateDir = join(lab.paths.base, "state");
      mkdirSync(stateDir, { recursive: true });
    });
    after(async () => {
      for (const s of hostServers) s.kill("SIGKILL");
      await lab?.stop();
    });

    const env = (extra: Record<string, string>) => ({
      TRAFFICJAM_STATE_DIR: stateDir,
      ...setup.env,
      ...extra,
    });

    function start(extra: Record<string, string>): Promise<DaemonProcess> {
      const d = startDaemon(lab, env(extra));
      return d.waitForLog(isInForce, 15_000).then(() => d);
    }

    /** SIGTERM (the rules stay), then --clear: nothing of the instance is left. */
    async function stopAndClear(d: DaemonProcess, instanceId: string): Promise<void> {
      if (d.running) {
        d.signal("SIGTERM");
        await d.waitExit(5_000);
      }
      const r = await runCli(lab, env({ INSTANCE_ID: instanceId }), ["--clear"]);
      assert.equal(r.code, 0, r.stderr);
    }

    async function health(instanceId: string): Promise<{ healthy: boolean; line: string }> {
      const r = await runCli(lab, env({ INSTANCE_ID: instanceId }), ["healthcheck"]);
      return { healthy: r.code === 0, line: `${r.stdout}${r.stderr}`.trim() };
    }

    const LOOP = "i=0; while :; do i=$((i+1)); echo $i; sleep 0.1; done";

    /** `client` connects to `server` (at `serverIp`), which streams lines to it. */
    async function containerStream(
      what: string,
      server: Container,
      client: Container,
      serverIp: string,
    ): Promise<Stream> {
      const p = port++;
      await lab.docker("exec", "-d", server.name, "sh", "-c", `${LOOP} | nc -l -p ${p}`);
      await listening(lab, server, p);
      const file = `/tmp/stream-${p}`;
      await lab.docker(
        "exec",
        "-d",
        client.name,
        "sh",
        "-c",
        `sleep 600 | nc ${serverIp} ${p} > ${file}`,
      );
      return { what, client, file };
    }

    /** `client` connects to a service of the lab host (on every address), which streams to it. */
    async function hostStream(what: string, client: Container, hostIp: string): Promise<Stream> {
      const p = port++;
      const server = spawn(
        "ip",
        ["netns", "exec", lab.netns, "sh", "-c", `${LOOP} | ${BUSYBOX} nc -l -p ${p}`],
        { stdio: "ignore", detached: true },
      );
      hostServers.push(server);
      await waitFor(
        async () => new RegExp(`:${p}\\s`).test(await lab.nsExec([BUSYBOX, "netstat", "-ltn"])),
        { timeoutMs: 5_000, intervalMs: 50, what: `the lab host to listen on ${p}` },
      );
      const file = `/tmp/stream-${p}`;
      await lab.docker(
        "exec",
        "-d",
        client.name,
        "sh",
        "-c",
        `sleep 600 | nc ${hostIp} ${p} > ${file}`,
      );
      return { what, client, file };
    }

    async function received(s: Stream): Promise<number> {
      const r = await lab.exec(s.client.id, ["sh", "-c", `wc -l < ${s.file}`]); // renamed, maybe
      assert.equal(r.code, 0, r.stderr);
      return Number(r.stdout.trim());
    }

    /** Lines each stream received in one second from now. */
    async function linesPerSecond(streams: Stream[]): Promise<number[]> {
      const before = await Promise.all(streams.map(received));
      await sleep(1_000);
      const after = await Promise.all(streams.map(received));
      return after.map((n, i) => n - before[i]!);
    }

    async function expectFlowing(tc: TestContext, streams: Stream[], phase: string): Promise<void> {
      const rates = await linesPerSecond(streams);
      tc.diagnostic(
        `${phase}: ${streams.map((s, i) => `${s.what} ${rates[i]} lines/s`).join(", ")}`,
      );
      for (const [i, s] of streams.entries())
        assert.ok(rates[i]! >= 5, `${phase}: ${s.what} must flow (${rates[i]} lines in 1 s)`);
    }

    it("connections opened before TrafficJam stop carrying data within a second of enforcement, also after --clear and a new start", async (tc) => {
      const [b1, b2, b3] = t.backends;
      let d: DaemonProcess | undefined;
      const round = async (phase: string) => {
        const forbidden = [
          await containerStream("b1→b2 (backend → backend)", b2, b1, b2.ipv4),
          await hostStream("b3→host (member → host)", b3, t.gateway4),
          await containerStream("b1→b3 over IPv6 (backend → backend)", b3, b1, b3.ipv6),
        ];
        const allowed = [await containerStream("proxy→b2 (allowed)", b2, t.proxy, b2.ipv4)];
        // Control: without TrafficJam every stream flows, so a stop below is TrafficJam's doing.
        await expectFlowing(tc, [...forbidden, ...allowed], `${phase}, before TrafficJam`);
        d = startDaemon(
          lab,
          env({ NETWORK: t.net, WHITELIST_FILTER: "label=tj.role=proxy", INSTANCE_ID: "web" }),
        );
        const inForce = await d.waitForLog(isInForce, 15_000);
        const cut = await d.waitForLog((e) => e.event === "flows.cut", 2_000);
        tc.diagnostic(
          `${phase}: flows.cut ${JSON.stringify(cut.pairs)} (${String(cut.flows)} flows)`,
        );
        assert.ok(inForce);
        const pairs = (cut.pairs as string[]).join("\n");
        for (const [from, to] of [
          [b1.ipv4, b2.ipv4],
          [b3.ipv4, t.gateway4],
          [b1.ipv6, b3.ipv6],
        ])
          assert.match(pairs, new RegExp(`^${from} → ${to} `, "m"), `pair ${from} → ${to} cut`);
        await sleep(1_000); // within a second of enforcement
        const rates = await linesPerSecond([...forbidden, ...allowed]);
        tc.diagnostic(
          `${phase}, from 1 s after enforcement: ${[...forbidden, ...allowed].map((s, i) => `${s.what} ${rates[i]} lines/s`).join(", ")}`,
        );
        for (const [i, s] of forbidden.entries())
          assert.equal(rates[i], 0, `${phase}: ${s.what} still carries data`);
        assert.ok(rates.at(-1)! >= 5, `${phase}: the proxy's stream stalled (${rates.at(-1)})`);
      };
      try {
        await round("first start");
        await stopAndClear(d!, "web");
        await round("after --clear and a new start");
      } finally {
        if (d) await stopAndClear(d, "web");
      }
    });

    it("a new container claiming the gateway (ARP, neighbour advertisements) from its first instant poisons nobody, also while TrafficJam is stopped", async (tc) => {
      const proxy = t.proxy;
      const net = await lab.inspectNetwork(t.net);
      const bridgeMac = await lab.hostMacOf(net.bridge);
      const bridgeLl = await lab.hostLinkLocalOf(net.bridge);
      const entries: Array<[Origin, string]> = [
        [proxy, t.gateway4],
        [proxy, t.gateway6!],
        [proxy, bridgeLl],
      ];
      const proxyMac = await lab.macOf(proxy);
      let n = 0;

      /** Starts an attacker whose first command claims the gateway; true per entry poisoned. */
      async function attack(phase: string): Promise<boolean[]> {
        await lab.flushNeighbours(proxy);
        // The proxy resolves the gateway (ARP, neighbour discovery) whether or not the echo
        // itself may reach the host: the proxy is a member, and the host protected.
        await lab.ping(proxy, t.gateway4);
        await lab.ping(proxy, t.gateway6!);
        await lab.ping(proxy, `${bridgeLl}%eth0`);
        for (const [who, ip] of entries) {
          const e = await lab.neighbour(who, ip);
          assert.equal(
            e?.mac,
            bridgeMac,
            `${phase}: the proxy's entry for ${ip} before: ${e?.line}`,
          );
        }
        await sleep(ARP_LOCKTIME_MS + 300);
        const name = `gwclaim${++n}`;
        const claims = [
          `tjprobe arpspoof eth0 ${t.gateway4} ${proxy.ipv4} ${proxyMac} 60`,
          `tjprobe naspoof eth0 ${t.gateway6} ${proxy.ipv6} 60`,
          `tjprobe naspoof eth0 ${bridgeLl} ff02::1 60`,
        ];
        await lab.docker(
          ...["run", "-d", "--name", name, "--network", t.net],
          ...[TEST_IMAGE, "sh", "-c", `${claims.map((c) => `${c} &`).join(" ")} wait`],
        );
        const poisoned = entries.map(() => false);
        const seen = entries.map(() => [] as string[]);
        try {
          for (let i = 0; i < 35; i++) {
            for (const [k, [who, ip]] of entries.entries()) {
              const e = await lab.neighbour(who, ip);
              const state = e
                ? `${e.mac === bridgeMac ? "bridge" : (e.mac ?? "none")} ${e.state}`
                : "no entry";
              if (seen[k]!.at(-1) !== state) seen[k]!.push(state);
              // Any other MAC than the bridge's is the attacker's (its MAC is Docker's to choose).
              if (e?.mac !== undefined && e.mac !== bridgeMac) poisoned[k] = true;
            }
            await sleep(100);
          }
        } finally {
          await lab.docker("rm", "-f", name);
        }
        for (const [k, [, ip]] of entries.entries())
          tc.diagnostic(
            `${phase}: the proxy's entry for ${ip}: ${poisoned[k] ? "POISONED" : "kept"} (${seen[k]!.join(" → ")})`,
          );
        return poisoned;
      }

      assert.deepEqual(
        await attack("without TrafficJam"),
        [true, true, true],
        "control: every claim poisons without TrafficJam",
      );
      const d = await start({
        NETWORK: t.net,
        WHITELIST_FILTER: "label=tj.role=proxy",
        INSTANCE_ID: "web",
      });
      try {
        assert.deepEqual(await attack("with TrafficJam"), [false, false, false]);
        d.signal("SIGTERM");
        await d.waitExit(5_000);
        assert.deepEqual(await attack("TrafficJam stopped, its rules in force"), [
          false,
          false,
          false,
        ]);
        // The gateway still works for the proxy: its way out to the world.
        assert.equal(await lab.tcp(proxy, outside.ipv4, 80), true, "proxy → outside v4");
        assert.equal(await lab.tcp(proxy, outside.ipv6, 80), true, "proxy → outside v6");
      } finally {
        await stopAndClear(d, "web");
      }
    });

    it("network=, health= and status= whitelists: the proxy loses its allowance within a second of the change, at POLL_INTERVAL=60", async (tc) => {
      await lab.createNetwork("fnet", { subnets: ["172.40.0.0/24"] });
      await lab.createNetwork("fproxies", { subnets: ["172.41.0.0/24"] });
      const proxy = await lab.run({
        name: "fproxy",
        network: ["fnet", "fproxies"],
        args: [
          "--health-cmd",
          "test -f /tmp/ok",
          "--health-interval",
          "1s",
          "--health-retries",
          "1",
        ],
      });
      const backend = await lab.run({ name: "fbackend", network: "fnet" });
      const target = backend.ipOn("fnet");
      const reaches = () => lab.tcp(proxy, target, 80, 500);
      const revokedWithin = async (d: DaemonProcess, mark: number, since: number, what: string) => {
        const e = await d.waitForLog(
          (x: LogEntry) => x.event === "allowance.revoked" && x.address === proxy.ipOn("fnet"),
          5_000,
          mark,
        );
        const ms = Date.now() - since;
        assert.ok(e);
        const blocked = !(await reaches());
        tc.diagnostic(
          `${what}: allowance revoked ${ms} ms after the change; the proxy's next probe ${blocked ? "blocked" : "CONNECTED"}`,
        );
        assert.ok(ms <= 1_000, `${what}: revoked only after ${ms} ms`);
        assert.ok(blocked, `${what}: the proxy still reaches the backend`);
      };
      const base = { NETWORK: "fnet", POLL_INTERVAL: "60" };

      // network=: leaving the other network is an event of that network.
      let d = await start({ ...base, WHITELIST_FILTER: "network=fproxies", INSTANCE_ID: "f_net" });
      try {
        assert.equal(await reaches(), true, "control: the proxy on fproxies reaches the backend");
        const mark = d.mark();
        const at = Date.now();
        await lab.docker("network", "disconnect", "fproxies", proxy.name);
        await revokedWithin(d, mark, at, "network=fproxies, proxy disconnected from fproxies");
      } finally {
        await stopAndClear(d, "f_net");
      }

      // health=: the health status changes with a health_status event.
      await lab.exec(proxy, ["touch", "/tmp/ok"]);
      const healthOf = async () =>
        (await lab.docker("inspect", "--format", "{{.State.Health.Status}}", proxy.name)).trim();
      await waitFor(async () => (await healthOf()) === "healthy", {
        timeoutMs: 10_000,
        intervalMs: 100,
        what: "the proxy to be healthy",
      });
      d = await start({ ...base, WHITELIST_FILTER: "health=healthy", INSTANCE_ID: "f_health" });
      try {
        assert.equal(await reaches(), true, "control: the healthy proxy reaches the backend");
        const mark = d.mark();
        await lab.exec(proxy, ["rm", "/tmp/ok"]);
        const unhealthyAt = await waitFor(
          async () => ((await healthOf()) === "unhealthy" ? Date.now() : false),
          { timeoutMs: 10_000, intervalMs: 20, what: "the proxy to turn unhealthy" },
        );
        await revokedWithin(d, mark, unhealthyAt, "health=healthy, proxy unhealthy");
      } finally {
        await stopAndClear(d, "f_health");
      }

      // status=running: a paused container is not running.
      d = await start({
        ...base,
        WHITELIST_FILTER: "status=running",
        INSTANCE_ID: "f_status",
        DEBUG: "true",
      });
      try {
        assert.equal(await reaches(), true, "control: the running proxy reaches the backend");
        const mark = d.mark();
        const at = Date.now();
        await lab.docker("pause", proxy.name);
        const e = await d.waitForLog(
          (x: LogEntry) => x.event === "allowance.revoked" && x.address === proxy.ipOn("fnet"),
          1_000,
          mark,
        );
        tc.diagnostic(
          `status=running, proxy paused: allowance revoked ${Date.now() - at} ms after docker pause returned`,
        );
        assert.ok(e);
        await lab.docker("unpause", proxy.name);
        await d.waitForLog(
          (x: LogEntry) =>
            x.event === "whitelist.changed" && JSON.stringify(x.whitelisted).includes("fproxy"),
          2_000,
          mark,
        );
      } finally {
        await stopAndClear(d, "f_status");
      }
    });

    it("conntrack failing, then working again: the revoked proxy's flow is cut once it works, unhealthy meanwhile", async (tc) => {
      await lab.createNetwork("cnet", { subnets: ["172.42.0.0/24"] });
      const proxy = await lab.run({ name: "cnet-proxy-a", network: "cnet" });
      const backend = await lab.run({ name: "cnet-backend", network: "cnet" });
      // A conntrack that fails while the flag file exists, first on PATH.
      const shim = join(lab.paths.base, "conntrack-shim");
      const flag = join(shim, "failing");
      mkdirSync(shim, { recursive: true });
      writeFileSync(
        join(shim, "conntrack"),
        `#!/bin/sh\nif [ -e ${flag} ]; then echo "conntrack: simulated failure" >&2; exit 1; fi\nexec /usr/sbin/conntrack "$@"\n`,
      );
      chmodSync(join(shim, "conntrack"), 0o755);
      const d = await start({
        NETWORK: "cnet",
        WHITELIST_FILTER: "name=cnet-proxy",
        INSTANCE_ID: "cnet",
        POLL_INTERVAL: "60",
        PATH: `${shim}:${process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin"}`,
      });
      try {
        const stream = await containerStream(
          "backend→proxy (allowed, then revoked)",
          backend,
          proxy,
          backend.ipv4,
        );
        await expectFlowing(tc, [stream], "allowed");
        writeFileSync(flag, "");
        const mark = d.mark();
        await lab.docker("rename", proxy.name, "cnet-retired");
        const failed = await d.waitForLog((e) => e.event === "flows.delete.failed", 3_000, mark);
        tc.diagnostic(`deletion failed: ${JSON.stringify(failed.err)}`);
        const h = await waitFor(
          async () => {
            const v = await health("cnet");
            return v.healthy ? false : v;
          },
          { timeoutMs: 3_000, intervalMs: 100, what: "the daemon to say it is unhealthy" },
        );
        tc.diagnostic(`health while conntrack fails: ${h.line}`);
        assert.match(h.line, /tracked flows of revoked addresses not deleted yet: 172\.42\.0\.2/);
        // The flow the rules no longer allow still carries data: the deletion really failed.
        await expectFlowing(tc, [stream], "conntrack failing");
        rmSync(flag);
        const revoked = await d.waitForLog(
          (e) => e.event === "allowance.revoked" && e.address === proxy.ipv4,
          20_000,
          mark,
        );
        tc.diagnostic(`conntrack working again: ${JSON.stringify(revoked)}`);
        assert.ok(Number(revoked.flows) >= 1);
        await sleep(300);
        assert.deepEqual(
          await linesPerSecond([stream]),
          [0],
          "the revoked flow still carries data",
        );
        await waitFor(async () => (await health("cnet")).healthy, {
          timeoutMs: 3_000,
          intervalMs: 100,
          what: "healthy again",
        });
      } finally {
        rmSync(flag, { force: true });
        await stopAndClear(d, "cnet");
      }
    });

    it("a change another tool makes is repaired at once, not at the next resync (POLL_INTERVAL=60); our own commits start no pass", async (tc) => {
      const [b1, b2] = t.backends;
      const d = await start({
        NETWORK: t.net,
        WHITELIST_FILTER: "label=tj.role=proxy",
        INSTANCE_ID: "web",
        POLL_INTERVAL: "60",
        DEBUG: "true",
      });
      const extra = `late-${Date.now()}`;
      try {
        // A change of ours first: a new backend, its rules committed by the daemon itself.
        const first = d.mark();
        await lab.run({ name: extra, network: t.net });
        await d.waitForLog((e) => e.event === "rules.applied", 5_000, first);
        const from = d.mark();
        for (const vandalism of setup.vandalism) {
          const mark = d.mark();
          const at = Date.now();
          await lab.nsExec(vandalism);
          const e = await d.waitForLog((x) => x.event === "rules.repaired", 5_000, mark);
          tc.diagnostic(
            `${vandalism.join(" ")}: repaired ${Date.now() - at} ms later (reason ${String(e.reason)})`,
          );
          // nft monitor's news, not the resync timer (60 s away).
          assert.match(String(e.reason), /\brules:changed\b/);
          assert.equal(await lab.tcp(b2, b1.ipv4, 80, 500), false, "b2 → b1 after the repair");
        }
        // A harmless commit of somebody else's: one pass, which finds nothing to do. The daemon's
        // own commits (each repair) started none: that pass is the only other one told of changes.
        const barrier = d.mark();
        await lab.nsExec(["nft", "add", "table", "inet", "tj_barrier"]);
        await d.waitForLog(
          (x) => x.event === "rules.verified" && /rules:changed/.test(String(x.reason)),
          5_000,
          barrier,
        );
        await lab.nsExec(["nft", "delete", "table", "inet", "tj_barrier"]);
        const told = d.entriesFrom(from).filter((x) => /rules:changed/.test(String(x.reason)));
        tc.diagnostic(`passes told of changes: ${told.map((x) => String(x.event)).join(", ")}`);
        assert.deepEqual(
          told.map((x) => x.event),
          [...setup.vandalism.map(() => "rules.repaired"), "rules.verified"],
        );
      } finally {
        await lab.docker("rm", "-f", extra);
        await stopAndClear(d, "web");
      }
    });

    it("br_netfilter switched off under a running daemon: logged and unhealthy within one resync, healthy once back", async (tc) => {
      const sysctl = "net.bridge.bridge-nf-call-iptables";
      const d = await start({
        NETWORK: t.net,
        WHITELIST_FILTER: "label=tj.role=proxy",
        INSTANCE_ID: "web",
        POLL_INTERVAL: "1",
      });
      try {
        assert.equal((await health("web")).healthy, true);
        const mark = d.mark();
        const at = Date.now();
        await lab.nsExec(["sysctl", "-w", `${sysctl}=0`]);
        const off = await d.waitForLog((e) => e.event === "host.bridge-netfilter.off", 2_500, mark);
        tc.diagnostic(
          `logged ${Date.now() - at} ms after the switch: ${JSON.stringify(off.problems)}`,
        );
        const h = await health("web");
        tc.diagnostic(`health: ${h.line}`);
        assert.equal(h.healthy, false);
        assert.match(h.line, /bridge-nf-call-iptables/);
        // Not switched back on behind the operator's back: the host's setting is left as it is.
        assert.equal((await lab.nsExec(["sysctl", "-n", sysctl])).trim(), "0");
        await lab.nsExec(["sysctl", "-w", `${sysctl}=1`]);
        await d.waitForLog((e) => e.event === "host.bridge-netfilter.on", 2_500, mark);
        await waitFor(async () => (await health("web")).healthy, {
          timeoutMs: 3_000,
          intervalMs: 100,
          what: "healthy again",
        });
      } finally {
        await lab.nsExec(["sysctl", "-w", `${sysctl}=1`]);
        await stopAndClear(d, "web");
      }
    });
  });
}
