// The core promise, proven with packets on a dual-stack network: only the proxy opens
// connections; backends reach neither each other, nor the proxy, nor the host. One suite, run
// once per firewall setup (see the isolation*.test.ts files), so every backend keeps the promise.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  iptablesRules,
  nftRuleset,
  runCli,
  startLab,
  type Container,
  type DaemonProcess,
  type Lab,
  type LogEntry,
  type StartLabOptions,
  type WatchResult,
} from "./lab/index.js";
import {
  PUBLISHED_PORT,
  buildTopology,
  eventually,
  expectAll,
  isApplied,
  isInForce,
  startTrafficJam,
  watchOutput,
  PROXY_LABEL,
  type Topology,
} from "./topology.js";
import { proxyLosesItsAllowance } from "./revocation.js";
import { run } from "./lab/exec.js";

export interface FirewallSetup {
  /** Test title suffix, e.g. "iptables-nft, auto". */
  title: string;
  /** Lab name: unique per test file. */
  labName: string;
  /** How the lab's dockerd runs (its iptables flavour, or none). */
  lab: StartLabOptions;
  /** Extra daemon environment, e.g. FIREWALL_BACKEND. */
  env: Record<string, string>;
  /** What the daemon must report: `firewall backend: KIND` and the `location` of its applies. */
  expectBackend: "iptables" | "nftables";
  expectLocation: string;
  /** Changes another tool might make that open the network; each must be repaired. */
  vandalism: (t: Topology) => string[][];
  /** After the repairs: the rules are back where they belong (beyond b2→b1 being dropped). */
  checkRepaired?: (lab: Lab) => Promise<void>;
}

/** Every trace of TrafficJam in the lab's firewall, whatever the backend or flavour. */
export async function firewallLeftovers(lab: Lab): Promise<string[]> {
  const found: string[] = [];
  for (const flavour of ["nft", "legacy"] as const) {
    for (const family of [4, 6] as const) {
      const lines = await iptablesRules(lab, family, undefined, { flavour });
      found.push(...lines.filter((l) => /trafficjam|TJF_|TJI_|TRAFFICJAM/i.test(l)));
    }
  }
  const nft = await nftRuleset(lab);
  found.push(...nft.split("\n").filter((l) => /trafficjam/i.test(l)));
  return found;
}

export function isolationSuite(setup: FirewallSetup): void {
  describe(`isolation on a dual-stack network (${setup.title})`, () => {
    let lab: Lab;
    let t: Topology;
    let daemon: DaemonProcess;
    const others: DaemonProcess[] = [];

    before(async () => {
      lab = await startLab({ name: setup.labName, ipv6: true, ...setup.lab });
      t = await buildTopology(lab, { v6: "fd00:28" });
      daemon = await startTrafficJam(lab, t.net, setup.env);
    });
    after(async () => {
      daemon?.kill();
      for (const d of others) d.kill();
      await lab?.stop();
    });

    it(`chooses ${setup.expectBackend} and says why`, async () => {
      const choice = await daemon.waitForLog(
        (e) => e.event === "backend.chosen" && e.kind === setup.expectBackend,
        1000,
      );
      assert.equal(typeof choice.reason, "string");
      const applied = await daemon.waitForLog(isApplied, 1000);
      assert.equal(applied.location, setup.expectLocation);
    });

    it("`trafficjam healthcheck` reads the rules back through this backend: healthy", async () => {
      const r = await runCli(lab, { INSTANCE_ID: "web" }, ["healthcheck"]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^healthy: rules in force/);
    });

    it("the proxy reaches every backend over TCP, IPv4 and IPv6", async () => {
      await expectAll(
        t.backends.flatMap((b) => [
          [`proxy→${b.name} v4`, () => lab.tcp(t.proxy, b.ipv4, 80)],
          [`proxy→${b.name} v6`, () => lab.tcp(t.proxy, b.ipv6!, 80)],
        ]),
        true,
      );
    });

    it("backends reach no other backend, both ways, over TCP, UDP and ICMP", async () => {
      const [b1, b2, b3] = t.backends;
      const pairs = [
        [b1, b2],
        [b2, b1],
        [b1, b3],
        [b3, b2],
      ] as const;
      await expectAll(
        pairs.flatMap(([from, to]) => [
          [`${from.name}→${to.name} tcp`, () => lab.tcp(from, to.ipv4, 80, 500)],
          [`${from.name}→${to.name} udp`, () => lab.udp(from, to.ipv4, 9000, 500)],
          [`${from.name}→${to.name} icmp`, () => lab.ping(from, to.ipv4)],
        ]),
        false,
      );
    });

    it("backends cannot open connections to the proxy", async () => {
      await expectAll(
        t.backends.flatMap((b) => [
          [`${b.name}→proxy tcp`, () => lab.tcp(b, t.proxy.ipv4, 80, 500)],
          [`${b.name}→proxy udp`, () => lab.udp(b, t.proxy.ipv4, 9000, 500)],
        ]),
        false,
      );
    });

    it("IPv6 between backends is dropped; neighbour discovery still works for the proxy", async () => {
      const [b1, b2] = t.backends;
      await expectAll(
        [
          ["b1→b2 tcp v6", () => lab.tcp(b1, b2.ipv6!, 80, 500)],
          ["b2→b1 udp v6", () => lab.udp(b2, b1.ipv6!, 9000, 500)],
          ["b1→b2 icmp v6", () => lab.ping(b1, b2.ipv6!)],
          ["b1→proxy tcp v6", () => lab.tcp(b1, t.proxy.ipv6!, 80, 500)],
        ],
        false,
      );
      // Neighbour caches emptied on both sides: ARP and neighbour discovery must run again, with
      // the port-bound rules in force, before the proxy's datagrams and b2's echoes can flow.
      // (The containers lack NET_ADMIN: the host's ip flushes them from inside their namespace.)
      for (const c of [t.proxy, b2]) {
        const pid = await lab.docker("inspect", "--format", "{{.State.Pid}}", c.name);
        for (const family of ["-4", "-6"]) {
          const flush = ["--net=/proc/" + pid + "/ns/net", "ip", family, "neigh", "flush", "all"];
          const r = await run("nsenter", flush);
          assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
        }
      }
      await expectAll(
        [
          ["proxy→b2 udp v6, caches flushed", () => lab.udp(t.proxy, b2.ipv6!, 9000)],
          ["proxy→b2 udp v4, caches flushed", () => lab.udp(t.proxy, b2.ipv4, 9000)],
        ],
        true,
      );
      const neighbours = (await lab.exec(b2, ["ip", "-6", "neigh", "show"])).stdout;
      assert.ok(neighbours.includes(t.proxy.ipv6!), `b2 resolved the proxy again:\n${neighbours}`);
    });

    it("a backend cannot reach another backend's published port through the host", async () => {
      const b2 = t.backends[1];
      await expectAll(
        [
          ["via gateway", () => lab.tcp(b2, t.gateway4, PUBLISHED_PORT, 500)],
          ["via another host address", () => lab.tcp(b2, t.otherHostAddress, PUBLISHED_PORT, 500)],
        ],
        false,
      );
    });

    it("other networks and the host itself are unaffected", async () => {
      await expectAll(
        [
          ["host→b1", () => lab.tcp(lab.host, t.backends[0].ipv4, 80)],
          ["host→b2 v6", () => lab.tcp(lab.host, t.backends[1].ipv6!, 80)],
          ["host→outsider", () => lab.tcp(lab.host, t.outsider.ipv4, 80)],
          [
            "outsider→published port",
            () => lab.tcp(t.outsider, t.otherHostAddress, PUBLISHED_PORT),
          ],
        ],
        true,
      );
    });

    it("a container started while TrafficJam runs is isolated from its first packet", async () => {
      // It probes a backend immediately at start: every attempt must fail.
      const c = await lab.run({
        name: "late",
        network: t.net,
        cmd: ["tjprobe", "watch", t.backends[0].ipv4, "80", "20", "50"],
      });
      const output = await watchOutput(lab, c, 10_000);
      assert.match(output, /summary ok=0 fail=50/, output);
    });

    it("every allowance is bound to the proxy's bridge port, in the kernel", async () => {
      const veth = await lab.hostVethOf(t.proxy);
      const { ipv4, ipv6 } = t.proxy;
      const bound = (e: LogEntry) => {
        const ports = e.boundTo as Record<string, string> | undefined;
        return isApplied(e) && ports?.[ipv4] === veth && ports?.[ipv6] === veth;
      };
      await daemon.waitForLog(bound, 1000, 0);
      if (setup.expectBackend === "nftables") {
        const ruleset = await nftRuleset(lab);
        for (const address of [ipv4, ipv6]) assert.ok(ruleset.includes(`${address} . "${veth}"`));
      } else {
        const rules = (await firewallLeftovers(lab)).join("\n");
        const { bridge } = await lab.inspectNetwork(t.net);
        for (const address of [`${ipv4}/32`, `${ipv6}/128`]) {
          const allowance = `-s ${address} -i ${bridge} -o ${bridge} -m physdev --physdev-in ${veth} `;
          assert.ok(rules.includes(allowance), `no allowance "${allowance}" in\n${rules}`);
          const guard = `-s ${address} -i ${bridge} -m physdev ! --physdev-in ${veth} `;
          assert.ok(rules.includes(guard), `no guard "${guard}" in\n${rules}`);
        }
      }
    });

    it("a backend forging the proxy's address reaches no other backend, IPv4 and IPv6", async () => {
      const [b1, b2, b3] = t.backends;
      const tag = `forged${Date.now()}`;
      // Forged from two backends, to two destinations each, in both families.
      for (const [from, to] of [
        [b1, b2],
        [b3, b2],
        [b2, b1],
      ] as const) {
        await lab.spoofUdp(from, t.proxy.ipv4, to.ipv4, 9000, `${tag}-${from.name}-v4`);
        await lab.spoofUdp(from, t.proxy.ipv6, to.ipv6, 9000, `${tag}-${from.name}-v6`);
      }
      // The proxy's own datagrams arrive: the receivers listen, and only forgeries are dropped.
      // The same raw-socket sender, run in the proxy itself, gets through from the proxy's port.
      await lab.spoofUdp(t.proxy, t.proxy.ipv4, b2.ipv4, 9000, `${tag}-real-raw-v4`);
      await lab.spoofUdp(t.proxy, t.proxy.ipv6, b2.ipv6, 9000, `${tag}-real-raw-v6`);
      await expectAll(
        [
          ["proxy→b2 udp v4", () => lab.udp(t.proxy, b2.ipv4, 9000, 1000, `${tag}-real`)],
          ["proxy→b2 udp v6", () => lab.udp(t.proxy, b2.ipv6, 9000, 1000, `${tag}-real`)],
        ],
        true,
      );
      // Markers sent after every forgery: each receiver's log holds what came before them.
      assert.equal(await lab.udp(t.proxy, b1.ipv4, 9000, 1000, `${tag}-real-b1`), true);
      const received = [
        ...(await lab.udpLogThrough(b2, `${tag}-real`)),
        ...(await lab.udpLogThrough(b1, `${tag}-real-b1`)),
      ];
      assert.deepEqual(
        received.filter((l) => l.includes(tag) && !l.includes("-real")),
        [],
        "forged datagrams got through",
      );
      for (const expected of [
        `${t.proxy.ipv4} ${tag}-real`,
        `${t.proxy.ipv6} ${tag}-real`,
        `${t.proxy.ipv4} ${tag}-real-raw-v4`,
        `${t.proxy.ipv6} ${tag}-real-raw-v6`,
      ])
        assert.ok(received.includes(expected), `${expected} missing from\n${received.join("\n")}`);
    });

    it("with TrafficJam frozen, a stranger at the removed proxy's addresses gets nothing; the proxy recreated there works at once", async (tc) => {
      const old = t.proxy;
      const b1 = t.backends[0];
      daemon.signal("SIGSTOP");
      let stranger: Container | undefined;
      let across: Promise<WatchResult[]> | undefined;
      try {
        await lab.docker("rm", "-f", old.name);
        stranger = await lab.run({
          name: "stranger-frozen",
          network: t.net,
          ip: old.ipv4,
          ip6: old.ipv6,
        });
        const from = stranger;
        const [v4, v6] = await Promise.all([
          lab.watch(from, b1.ipv4, 80, 20, 50),
          lab.watch(from, b1.ipv6, 80, 20, 50),
        ]);
        tc.diagnostic(
          `frozen: stranger→b1 v4 ok=${v4.ok} fail=${v4.fail}, v6 ok=${v6.ok} fail=${v6.fail}`,
        );
        assert.deepEqual([v4.ok, v6.ok], [0, 0]);
        await expectAll(
          [
            ["stranger→b1 udp v4", () => lab.udp(from, b1.ipv4, 9000, 500)],
            ["stranger→b1 udp v6", () => lab.udp(from, b1.ipv6, 9000, 500)],
            ["stranger→b1 icmp", () => lab.ping(from, b1.ipv4)],
          ],
          false,
        );
        // Probing on, every 20 ms for 3 s, through the resume and the daemon's reaction to it.
        across = Promise.all([
          lab.watch(from, b1.ipv4, 80, 20, 150),
          lab.watch(from, b1.ipv6, 80, 20, 150),
        ]);
        await new Promise((resolve) => setTimeout(resolve, 700));
      } finally {
        daemon.signal("SIGCONT");
      }
      const mark = daemon.mark();
      await daemon.waitForLog(isInForce, 5000, mark);
      const [a4, a6] = (await across) as [WatchResult, WatchResult];
      tc.diagnostic(
        `across SIGCONT: stranger→b1 v4 ok=${a4.ok} fail=${a4.fail}, v6 ok=${a6.ok} fail=${a6.fail}`,
      );
      assert.deepEqual([a4.ok, a6.ok], [0, 0]);
      const resumed = stranger!;
      await expectAll(
        [
          ["resumed: stranger→b1 v4", () => lab.tcp(resumed, b1.ipv4, 80, 500)],
          ["resumed: stranger→b1 v6", () => lab.tcp(resumed, b1.ipv6, 80, 500)],
        ],
        false,
      );
      await lab.docker("rm", "-f", resumed.name);
      // Recreated at the same addresses, the proxy probes b1 every 5 ms from its first moment.
      const started = daemon.mark();
      const proxy = await lab.run({
        name: old.name,
        network: t.net,
        ip: old.ipv4,
        ip6: old.ipv6,
        labels: PROXY_LABEL,
        cmd: ["sh", "-c", `tjprobe watch ${b1.ipv4} 80 5 200 >/tmp/watch.log; exec tjprobe serve`],
      });
      const enforced = await daemon.waitForLog(
        (e) => isApplied(e) && (e.boundTo as Record<string, string>)?.[old.ipv4] !== undefined,
        3000,
        started,
      );
      await eventually(
        "the recreated proxy's probe to finish",
        async () => /summary/.test((await lab.exec(proxy, ["cat", "/tmp/watch.log"])).stdout),
        true,
        10_000,
      );
      const attempts = (await lab.exec(proxy, ["cat", "/tmp/watch.log"])).stdout.split("\n");
      const firstOk = attempts.indexOf("ok");
      tc.diagnostic(
        `recreated proxy: first success at attempt ${firstOk + 1} of its 5 ms probe ` +
          `(≈${firstOk * 5} ms after its process started); start event → enforced ` +
          `${String(enforced.eventToEnforcedMs)} ms`,
      );
      assert.ok(firstOk >= 0, attempts.join(" "));
      assert.ok(
        attempts.slice(firstOk, -2).every((a) => a === "ok"),
        attempts.join(" "),
      );
      assert.equal(await lab.tcp(proxy, b1.ipv6, 80), true);
      t.proxy = proxy;
    });

    it("a proxy recreated with a new address regains access; a stranger at its old address gets nothing", async () => {
      const old = t.proxy;
      const b1 = t.backends[0];
      await lab.docker("rm", "-f", old.name);
      // The stranger takes the old address and probes without pause from its first moment.
      const stranger = await lab.run({
        name: "stranger",
        network: t.net,
        ip: old.ipv4,
        cmd: ["tjprobe", "watch", b1.ipv4, "80", "20", "100"],
      });
      const proxy = await lab.run({
        name: "proxy2",
        network: t.net,
        ip: "172.28.0.11",
        labels: PROXY_LABEL,
      });
      await eventually(
        "the new proxy to reach b1",
        () => lab.tcp(proxy, b1.ipv4, 80, 300),
        true,
        3000,
      );
      assert.match(await watchOutput(lab, stranger, 15_000), /summary ok=0 fail=100/);
      t.proxy = proxy;
    });

    it("allowed traffic is never dropped while the rules change", async (tc) => {
      const b1 = t.backends[0];
      // The proxy connects to b1 every 20 ms while other proxies come and go (each a change of
      // the rules): every attempt must succeed.
      const watching = lab.watch(t.proxy, b1.ipv4, 80, 20, 300);
      const mark = daemon.mark();
      for (let i = 0; i < 4; i++) {
        const extra = await lab.run({ name: `extra-${i}`, network: t.net, labels: PROXY_LABEL });
        await daemon.waitForLog(
          (e) => isApplied(e) && JSON.stringify(e.allowed).includes(`"${extra.ipv4}"`),
          3000,
          mark,
        );
        await lab.docker("rm", "-f", extra.name);
      }
      const w = await watching;
      const changes = daemon.lines.slice(mark).filter((l) => /"event":"rules.applied"/.test(l));
      tc.diagnostic(
        `${w.attempts.length} attempts across ${changes.length} rule changes: ok=${w.ok} fail=${w.fail}`,
      );
      assert.ok(changes.length >= 4, `only ${changes.length} rule changes during the watch`);
      assert.equal(w.fail, 0, w.attempts.join(" "));
    });

    it("a proxy losing its allowance has its tracked flows deleted, and only those", async (tc) => {
      await proxyLosesItsAllowance(lab, tc, {
        env: setup.env,
        network: "ct",
        prefix: "172.27.0",
        pollIntervalS: 1,
        started: others,
      });
      // That second instance clears its rules, so the last test can expect nothing at all left.
      for (const d of others.splice(0)) {
        d.signal("SIGUSR1");
        assert.deepEqual(await d.waitExit(10_000), { code: 0, signal: null });
      }
    });

    it("changes another tool makes are repaired within POLL_INTERVAL", async () => {
      const [b1, b2] = t.backends;
      for (const vandalism of setup.vandalism(t)) {
        const mark = daemon.mark();
        await lab.nsExec(vandalism);
        const entry = await daemon.waitForLog(isApplied, 2500, mark);
        assert.equal(entry.event, "rules.repaired");
        await expectAll(
          [[`b2→b1 after ${vandalism.join(" ")}`, () => lab.tcp(b2, b1.ipv4, 80, 500)]],
          false,
        );
      }
      await setup.checkRepaired?.(lab);
      // The port binding came back with the rest: a forged proxy address is dropped again.
      const tag = `forged-after-repair${Date.now()}`;
      await lab.spoofUdp(b1, t.proxy.ipv4, b2.ipv4, 9000, tag);
      await lab.spoofUdp(b1, t.proxy.ipv6!, b2.ipv6!, 9000, tag);
      assert.equal(await lab.udp(t.proxy, b2.ipv4, 9000, 1000, `${tag}-real`), true);
      const received = await lab.udpLogThrough(b2, `${tag}-real`);
      assert.deepEqual(
        received.filter((l) => l.endsWith(` ${tag}`)),
        [],
      );
    });

    it("SIGUSR1 removes everything of the instance and exits 0; backends talk again", async () => {
      const [b1, b2] = t.backends;
      daemon.signal("SIGUSR1");
      assert.deepEqual(await daemon.waitExit(10_000), { code: 0, signal: null });
      assert.deepEqual(await firewallLeftovers(lab), []);
      const health = await runCli(lab, { INSTANCE_ID: "web" }, ["healthcheck"]);
      assert.equal(health.code, 1, health.stdout);
      await expectAll(
        [
          ["b1→b2", () => lab.tcp(b1, b2.ipv4, 80)],
          ["b2→b1 v6", () => lab.tcp(b2, b1.ipv6!, 80)],
        ],
        true,
      );
    });
  });
}
