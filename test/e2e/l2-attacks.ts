// What a compromised backend (root in its container, Docker's default capabilities, NET_RAW
// included) can do on the network beside or below address-based rules: talk over IPv6
// link-local addresses, multicast and broadcast, forge sources from outside the subnet, inject
// replies into the proxy's flow with another backend, poison ARP and neighbour caches, send
// frames that are not IP at all. Membership of the network is its bridge and the bridge's ports,
// not addresses (SPEC.md, "Rules"), so every one of these must fail under TrafficJam.
//
// Every attack runs twice on one lab: first WITHOUT TrafficJam, where it must get through (so
// each assertion of the second run can fail: the attack really is an attack on this host), then
// WITH TrafficJam, where it must not, while legitimate traffic (the proxy's, the host's, the way
// out to the outside world, neighbour discovery) keeps flowing in both runs. Each observation is
// printed as a diagnostic line, e.g. "without TrafficJam: b1→b2 TCP to b2's link-local: got through".
import { after, before, describe, it, type TestContext } from "node:test";
import assert from "node:assert/strict";
import {
  sleep,
  startLab,
  waitFor,
  type Container,
  type DaemonProcess,
  type Lab,
  type Origin,
  type Outside,
} from "./lab/index.js";
import { firewallLeftovers, type FirewallSetup } from "./isolation-suite.js";
import { buildTopology, startTrafficJam, type Topology } from "./topology.js";

const NAMES = ["proxy", "b1", "b2", "b3"] as const;
type Name = (typeof NAMES)[number];
/** "b1" for the container web-b1. */
const short = (c: Container): string => c.name.replace(/^web-/, "");

/** Addresses the lab learns once its topology is up (link-local addresses, MACs, the bridge). */
interface Facts {
  mac: Record<Name, string>;
  ll: Record<Name, string>;
  bridge: string;
  bridgeMac: string;
  bridgeLl: string;
}

/** A local-experimental ethertype (IEEE 802): frames that are neither IP nor ARP. */
const ETHERTYPE = 0x88b5;
const MC4 = "239.28.0.1";
const MC6 = "ff12::7428"; // transient, link-local scope
const MC_PORT = 9100;
/** Sources outside every subnet of the lab (documentation ranges), plus the outside namespace's. */
const FOREIGN4 = ["192.0.2.1", "198.51.100.7"];
const FOREIGN6 = ["2001:db8::7"];
/** ARP ignores a different answer for an entry updated less than locktime (1 s) ago. */
const ARP_LOCKTIME_MS = 1000;

/**
 * Collects one `it`'s observations: an attack must get through without TrafficJam and be blocked
 * with it; a control (legitimate traffic) must work in both runs. Everything is printed; all
 * mismatches are reported at once by done().
 */
class Verdicts {
  private readonly wrong: string[] = [];
  constructor(
    private readonly tc: TestContext,
    private readonly tj: boolean,
  ) {}

  get phase(): string {
    return this.tj ? "with TrafficJam" : "without TrafficJam";
  }

  attack(what: string, gotThrough: boolean, detail?: string): void {
    const seen = gotThrough ? "got through" : "blocked";
    this.tc.diagnostic(`${this.phase}: ${what}: ${seen}${detail ? ` (${detail})` : ""}`);
    if (gotThrough === this.tj) this.wrong.push(`attack ${what}: ${seen}`);
  }

  control(what: string, ok: boolean, detail?: string): void {
    const seen = ok ? "works" : "FAILED";
    this.tc.diagnostic(`${this.phase}: control ${what}: ${seen}${detail ? ` (${detail})` : ""}`);
    if (!ok) this.wrong.push(`control ${what}: failed`);
  }

  done(): void {
    const want = this.tj
      ? "every attack blocked, every control working"
      : "every attack getting through (else the run with TrafficJam proves nothing), every control working";
    assert.deepEqual(
      this.wrong,
      [],
      `${this.phase}: expected ${want}; wrong:\n${this.wrong.join("\n")}`,
    );
  }
}

export function l2AttackSuite(setup: FirewallSetup): void {
  describe(`attacks below and beside the addresses, on a dual-stack network (${setup.title})`, () => {
    let lab: Lab;
    let t: Topology;
    let outside: Outside;
    let facts: Facts;
    let daemon: DaemonProcess | undefined;
    /** With ALLOW_HOST_TRAFFIC, members may reach the host's services: legitimate, not an attack. */
    const hostOpen = /^(1|true|yes|on)$/i.test(setup.env.ALLOW_HOST_TRAFFIC ?? "");
    const containers = (): Record<Name, Container> => ({
      proxy: t.proxy,
      b1: t.backends[0],
      b2: t.backends[1],
      b3: t.backends[2],
    });

    before(async () => {
      lab = await startLab({ name: setup.labName, ipv6: true, ...setup.lab });
      t = await buildTopology(lab, { v6: "fd00:28" });
      outside = await lab.startOutside({ prefix4: "10.251.0", prefix6: "fd00:251" });
      await lab.startHostServer(); // tjprobe serve on the lab host, on every address (::)
      const c = containers();
      const mac = {} as Record<Name, string>;
      const ll = {} as Record<Name, string>;
      for (const n of NAMES) {
        await lab.linkLocalReady(c[n]);
        mac[n] = await lab.macOf(c[n]);
        ll[n] = await lab.linkLocalOf(c[n]);
      }
      const bridge = (await lab.inspectNetwork(t.net)).bridge;
      facts = {
        mac,
        ll,
        bridge,
        bridgeMac: await lab.hostMacOf(bridge),
        bridgeLl: await lab.hostLinkLocalOf(bridge),
      };
    });
    after(async () => {
      await daemon?.kill().catch(() => undefined);
      await lab?.stop();
    });

    /** Who an address is, for the diagnostics. */
    const nameOf = (address: string): string => {
      const n = NAMES.find((k) => facts.ll[k] === address);
      return n ?? (address === facts.bridgeLl ? "host" : address);
    };

    /**
     * UDP logs of `receivers` once everything sent before this call has arrived: a datagram from
     * the lab host (host → container is allowed in both runs) serves as the barrier.
     */
    async function logsAfterBarrier(receivers: Container[]): Promise<Map<Container, string[]>> {
      const barrier = `barrier-${Date.now()}`;
      const logs = new Map<Container, string[]>();
      for (const r of receivers) {
        assert.equal(
          await lab.udp(lab.host, r.ipv4, 9000, 1000, barrier),
          true,
          `barrier to ${r.name}`,
        );
      }
      // Each echoed the barrier; its log holds it once written, and what arrived before it.
      for (const r of receivers)
        logs.set(
          r,
          await waitFor(
            async () => {
              const log = await lab.udpLog(r);
              return log.some((l) => l.endsWith(` ${barrier}`)) ? log : false;
            },
            { timeoutMs: 3_000, intervalMs: 50, what: `the barrier in ${r.name}'s log` },
          ),
        );
      return logs;
    }

    /** Asserts each of these neighbour entries exists and holds b2's MAC (before an attack). */
    async function expectEntries(entries: Array<[Origin, string]>): Promise<void> {
      for (const [who, ip] of entries) {
        const e = await lab.neighbour(who, ip);
        assert.equal(e?.mac, facts.mac.b2, `entry for ${ip} before the attack: ${e?.line}`);
      }
    }

    const macName = (mac: string | undefined): string =>
      NAMES.find((n) => facts.mac[n] === mac) ?? mac ?? "no lladdr";

    /**
     * Runs the spoofers (about a second of forged answers each) while reading the victims'
     * entries every 100 ms, and once more after: for each entry, whether it ever pointed to b1,
     * and the states it went through. One read at the end would race with legitimate traffic
     * repairing the entry: b2's own neighbour probes carry its real MAC and override the lie.
     */
    async function watchPoisoning(
      spoofers: Array<Promise<void>>,
      entries: Array<[Origin, string]>,
    ): Promise<Array<{ poisoned: boolean; seen: string }>> {
      let spoofing = true;
      const sent = Promise.all(spoofers).finally(() => (spoofing = false));
      sent.catch(() => undefined); // awaited below; this only keeps it from counting as unhandled
      const watch = entries.map(([who, ip]) => ({
        who,
        ip,
        poisoned: false,
        states: [] as string[],
      }));
      const readAll = async (): Promise<void> => {
        for (const w of watch) {
          const e = await lab.neighbour(w.who, w.ip);
          const state = e ? `${macName(e.mac)} ${e.state}` : "no entry";
          if (w.states.at(-1) !== state) w.states.push(state);
          if (e?.mac === facts.mac.b1) w.poisoned = true;
        }
      };
      for (let i = 0; spoofing && i < 100; i++) {
        await readAll();
        await sleep(100);
      }
      await sent;
      await readAll();
      return watch.map((w) => ({ poisoned: w.poisoned, seen: `${w.ip}: ${w.states.join(" → ")}` }));
    }

    /** Forgets every neighbour entry of the containers and the host (after a poisoning). */
    async function flushAll(): Promise<void> {
      const c = containers();
      for (const n of NAMES) await lab.flushNeighbours(c[n]);
      await lab.flushNeighbours(lab.host);
    }

    /** The same attacks and controls, once per run. */
    function attacks(tj: boolean): void {
      it("IPv6 link-local: backends reach each other and the proxy over fe80 addresses", async (tc) => {
        const v = new Verdicts(tc, tj);
        const { b1, b2, b3, proxy } = containers();
        const ll = facts.ll;
        const probes: Array<[string, () => Promise<boolean>]> = [
          ["b1→b2 TCP to b2's link-local", () => lab.tcp(b1, `${ll.b2}%eth0`, 80, 700)],
          ["b2→b1 TCP to b1's link-local", () => lab.tcp(b2, `${ll.b1}%eth0`, 80, 700)],
          ["b1→b3 UDP to b3's link-local", () => lab.udp(b1, `${ll.b3}%eth0`, 9000, 700)],
          [
            "b3→proxy TCP to the proxy's link-local",
            () => lab.tcp(b3, `${ll.proxy}%eth0`, 80, 700),
          ],
        ];
        for (const [what, probe] of probes) v.attack(what, await probe());
        v.control("proxy→b2 TCP to b2's link-local", await lab.tcp(proxy, `${ll.b2}%eth0`, 80));
        v.done();
      });

      it("IPv6 link-local: a ping to ff02::1 from b1 gets no answer but b1's own", async (tc) => {
        const v = new Verdicts(tc, tj);
        const responders = await lab.pingResponders(containers().b1, "ff02::1%eth0", 2);
        tc.diagnostic(`${v.phase}: ff02::1 answered by ${responders.map(nameOf).join(", ")}`);
        v.control("b1 answers its own ping to ff02::1", responders.includes(facts.ll.b1));
        for (const n of ["b2", "b3", "proxy"] as const) {
          v.attack(`${n} answers b1's ping to ff02::1`, responders.includes(facts.ll[n]));
        }
        const hostAnswers = responders.includes(facts.bridgeLl);
        if (hostOpen) {
          tc.diagnostic(`${v.phase}: the host answers (ALLOW_HOST_TRAFFIC): ${hostAnswers}`);
        } else {
          v.attack("the host answers b1's ping to ff02::1", hostAnswers);
        }
        const strangers = responders.filter((a) => nameOf(a) === a);
        assert.deepEqual(strangers, [], "answers from addresses of nobody in the lab");
        v.done();
      });

      it("IPv6 link-local: a host service on :: through the bridge's link-local address", async (tc) => {
        const v = new Verdicts(tc, tj);
        const b1 = containers().b1;
        const bridge = `${facts.bridgeLl}%eth0`;
        tc.diagnostic(`bridge ${facts.bridge}: ${facts.bridgeLl}`);
        const probes: Array<[string, boolean]> = [
          ["b1→host TCP 80 via the bridge's link-local", await lab.tcp(b1, bridge, 80, 700)],
          ["b1→host UDP 9000 via the bridge's link-local", await lab.udp(b1, bridge, 9000, 700)],
        ];
        for (const [what, got] of probes) {
          if (hostOpen) v.control(`${what} (ALLOW_HOST_TRAFFIC)`, got);
          else v.attack(what, got);
        }
        v.done();
      });

      it("forged sources from outside the subnet reach b2 (UDP)", async (tc) => {
        const v = new Verdicts(tc, tj);
        const { b1, b2, proxy } = containers();
        const tag = `foreign-${tj ? "tj" : "open"}-${Date.now()}`;
        const sources = [...FOREIGN4, outside.ipv4, ...FOREIGN6, outside.ipv6];
        for (const [i, src] of sources.entries()) {
          await lab.spoofUdp(b1, src, src.includes(":") ? b2.ipv6 : b2.ipv4, 9000, `${tag}-${i}`);
        }
        const echoed = await lab.udp(proxy, b2.ipv4, 9000, 1000, `${tag}-proxy`);
        const log = (await logsAfterBarrier([b2])).get(b2) ?? [];
        v.control("proxy→b2 UDP, echoed", echoed);
        v.control("proxy→b2 UDP, logged by b2", log.includes(`${proxy.ipv4} ${tag}-proxy`));
        for (const [i, src] of sources.entries()) {
          v.attack(`b1→b2 UDP forged from ${src}`, log.includes(`${src} ${tag}-${i}`));
        }
        v.done();
      });

      it("broadcast: b1's datagrams to 255.255.255.255, the subnet broadcast and ff02::1", async (tc) => {
        const v = new Verdicts(tc, tj);
        const { b1, b2, b3, proxy } = containers();
        const tag = `bcast-${tj ? "tj" : "open"}-${Date.now()}`;
        const kinds = [
          ["255.255.255.255", "limited broadcast 255.255.255.255"],
          ["172.28.0.255", "subnet broadcast 172.28.0.255"],
          ["ff02::1%eth0", "IPv6 all-nodes ff02::1"],
        ] as const;
        for (const [i, [dst]] of kinds.entries()) {
          await lab.sendUdp(b1, dst, 9000, `${tag}-${i}`, "eth0");
        }
        const logs = await logsAfterBarrier([b2, b3, proxy]);
        for (const [i, [, what]] of kinds.entries()) {
          for (const r of [b2, b3, proxy]) {
            const got = (logs.get(r) ?? []).some((l) => l.endsWith(` ${tag}-${i}`));
            v.attack(`${short(r)} receives b1's ${what}`, got);
          }
        }
        v.done();
      });

      it("multicast: b2 joins groups (IPv4 and IPv6), b1 sends to them", async (tc) => {
        const v = new Verdicts(tc, tj);
        const { b1, b2 } = containers();
        const tag = `mcast-${tj ? "tj" : "open"}-${Date.now()}`;
        const l4 = await lab.multicastListen(b2, MC4, MC_PORT, "eth0", 2);
        const l6 = await lab.multicastListen(b2, MC6, MC_PORT, "eth0", 2);
        for (let i = 0; i < 2; i++) {
          await lab.sendUdp(b1, MC4, MC_PORT, `${tag}-v4`, "eth0");
          await lab.sendUdp(b1, MC6, MC_PORT, `${tag}-v6`, "eth0");
          await sleep(100);
        }
        const [got4, got6] = [await l4.done, await l6.done];
        v.attack(`b2 receives b1's datagrams to ${MC4}`, got4.length > 0, got4.join(" | "));
        v.attack(`b2 receives b1's datagrams to ${MC6}`, got6.length > 0, got6.join(" | "));
        v.done();
      });

      it("injection: b1 forges b2's replies into the proxy's UDP flow with b2", async (tc) => {
        const v = new Verdicts(tc, tj);
        const { b1, b2, proxy } = containers();
        const tag = `inject-${tj ? "tj" : "open"}-${Date.now()}`;
        // Port 9000 on both sides: tjprobe serve logs every datagram but does not echo one from
        // port 9000, so the two servers do not answer each other forever.
        for (const f of [4, 6] as const) {
          const [p, b] = f === 4 ? [proxy.ipv4, b2.ipv4] : [proxy.ipv6, b2.ipv6];
          await lab.spoofUdp(proxy, p, b, 9000, `${tag}-open${f}`, 9000); // the proxy opens the flow
          await lab.spoofUdp(b2, b, p, 9000, `${tag}-reply${f}`, 9000); // b2 answers in it
          await lab.spoofUdp(b1, b, p, 9000, `${tag}-forged${f}`, 9000); // b1 injects as b2
          await lab.spoofUdp(b2, b, p, 9000, `${tag}-again${f}`, 9000); // b2 answers again
        }
        const flows = await lab.nsExec([
          "conntrack",
          "-L",
          "-p",
          "udp",
          "--sport",
          "9000",
          "--dport",
          "9000",
        ]);
        tc.diagnostic(
          `${v.phase}: conntrack flows 9000→9000: ${flows.trim().split("\n").join(" | ")}`,
        );
        const logs = await logsAfterBarrier([proxy, b2]);
        const [atProxy, atB2] = [logs.get(proxy) ?? [], logs.get(b2) ?? []];
        for (const f of [4, 6] as const) {
          const [p, b] = f === 4 ? [proxy.ipv4, b2.ipv4] : [proxy.ipv6, b2.ipv6];
          v.control(`IPv${f} proxy:9000→b2:9000 arrives`, atB2.includes(`${p} ${tag}-open${f}`));
          v.control(
            `IPv${f} b2's own replies b2:9000→proxy:9000 arrive`,
            atProxy.includes(`${b} ${tag}-reply${f}`) && atProxy.includes(`${b} ${tag}-again${f}`),
          );
          v.attack(
            `IPv${f} b1's forged b2:9000→proxy:9000`,
            atProxy.includes(`${b} ${tag}-forged${f}`),
          );
        }
        v.done();
      });

      it("ARP spoofing: b1 claims b2's IPv4 address to the proxy and to the host", async (tc) => {
        const v = new Verdicts(tc, tj);
        const { b1, b2, proxy } = containers();
        try {
          // Entries to poison: Linux ignores an unsolicited ARP reply for an unknown address.
          assert.equal(await lab.ping(proxy, b2.ipv4), true, "proxy→b2 ping");
          assert.equal(await lab.ping(lab.host, b2.ipv4), true, "host→b2 ping");
          await expectEntries([
            [proxy, b2.ipv4],
            [lab.host, b2.ipv4],
          ]);
          await sleep(ARP_LOCKTIME_MS + 300);
          const [atProxy, atHost] = await watchPoisoning(
            [
              lab.arpSpoof(b1, "eth0", b2.ipv4, proxy.ipv4, facts.mac.proxy, 20),
              lab.arpSpoof(b1, "eth0", b2.ipv4, t.gateway4, facts.bridgeMac, 20),
            ],
            [
              [proxy, b2.ipv4],
              [lab.host, b2.ipv4],
            ],
          );
          v.attack(
            "the proxy's entry for b2's IPv4 points to b1",
            !!atProxy?.poisoned,
            atProxy?.seen,
          );
          v.attack("the host's entry for b2's IPv4 points to b1", !!atHost?.poisoned, atHost?.seen);
          if (tj) v.control("proxy→b2 TCP after the attack", await lab.tcp(proxy, b2.ipv4, 80));
        } finally {
          await flushAll();
        }
        v.done();
      });

      it("neighbour-advertisement spoofing: b1 claims b2's IPv6 addresses (global, link-local)", async (tc) => {
        const v = new Verdicts(tc, tj);
        const { b1, b2, proxy } = containers();
        const llB2 = facts.ll.b2;
        const targets: Array<[Origin, string]> = [
          [proxy, b2.ipv6],
          [proxy, llB2],
          [lab.host, b2.ipv6],
        ];
        try {
          assert.equal(await lab.ping(proxy, b2.ipv6), true, "proxy→b2 ping v6");
          // ND runs before the echo: the entry exists even if a firewall drops the echo itself
          await lab.ping(proxy, `${llB2}%eth0`);
          assert.equal(await lab.ping(lab.host, b2.ipv6), true, "host→b2 ping v6");
          await expectEntries(targets);
          // b2's global address: unicast to the proxy and to the host; its link-local: to all nodes
          const [global, local, atHost] = await watchPoisoning(
            [
              lab.naSpoof(b1, "eth0", b2.ipv6, proxy.ipv6, 20),
              lab.naSpoof(b1, "eth0", b2.ipv6, t.gateway6 ?? "", 20),
              lab.naSpoof(b1, "eth0", llB2, "ff02::1", 20),
            ],
            targets,
          );
          v.attack(
            "the proxy's entry for b2's global IPv6 points to b1",
            !!global?.poisoned,
            global?.seen,
          );
          v.attack(
            "the proxy's entry for b2's link-local points to b1",
            !!local?.poisoned,
            local?.seen,
          );
          v.attack(
            "the host's entry for b2's global IPv6 points to b1",
            !!atHost?.poisoned,
            atHost?.seen,
          );
          if (tj) v.control("proxy→b2 TCP v6 after the attack", await lab.tcp(proxy, b2.ipv6, 80));
        } finally {
          await flushAll();
        }
        v.done();
      });

      it(`non-IP frames (ethertype 0x${ETHERTYPE.toString(16)}) from b1 reach b2 and b3`, async (tc) => {
        const v = new Verdicts(tc, tj);
        const { b1, b2, b3 } = containers();
        const [at2, at3] = [
          await lab.ethListen(b2, "eth0", ETHERTYPE, 2),
          await lab.ethListen(b3, "eth0", ETHERTYPE, 2),
        ];
        await lab.ethSend(b1, "eth0", facts.mac.b2, ETHERTYPE, 10);
        await lab.ethSend(b1, "eth0", "ff:ff:ff:ff:ff:ff", ETHERTYPE, 10);
        const [n2, n3] = [await at2.done, await at3.done];
        tc.diagnostic(
          `${v.phase}: b1 sent 10 frames to b2's MAC and 10 to ff:ff:ff:ff:ff:ff; b2 received ${n2}, b3 received ${n3}`,
        );
        v.attack("b2 receives b1's frames (unicast and broadcast)", n2 > 0, `${n2} of 20`);
        v.attack("b3 receives b1's broadcast frames", n3 > 0, `${n3} of 10`);
        v.done();
      });

      it("control: the proxy reaches every backend over IPv4 and IPv6; the host too", async (tc) => {
        const v = new Verdicts(tc, tj);
        for (const b of t.backends) {
          v.control(`proxy→${short(b)} TCP v4`, await lab.tcp(t.proxy, b.ipv4, 80));
          v.control(`proxy→${short(b)} TCP v6`, await lab.tcp(t.proxy, b.ipv6, 80));
          v.control(`proxy→${short(b)} UDP v4`, await lab.udp(t.proxy, b.ipv4, 9000));
          v.control(`host→${short(b)} TCP v4`, await lab.tcp(lab.host, b.ipv4, 80));
          v.control(`host→${short(b)} TCP v6`, await lab.tcp(lab.host, b.ipv6, 80));
        }
        v.done();
      });

      it("control: neighbour discovery and ARP run again from flushed caches", async (tc) => {
        const v = new Verdicts(tc, tj);
        const { b2, proxy } = containers();
        await lab.flushNeighbours(proxy);
        await lab.flushNeighbours(b2);
        v.control("proxy→b2 UDP v6, caches flushed", await lab.udp(proxy, b2.ipv6, 9000));
        v.control("proxy→b2 UDP v4, caches flushed", await lab.udp(proxy, b2.ipv4, 9000));
        const six = await lab.neighbour(b2, proxy.ipv6);
        const four = await lab.neighbour(proxy, b2.ipv4);
        v.control(
          "b2 resolved the proxy's IPv6 to its MAC",
          six?.mac === facts.mac.proxy,
          six?.line,
        );
        v.control(
          "the proxy resolved b2's IPv4 to its MAC",
          four?.mac === facts.mac.b2,
          four?.line,
        );
        v.done();
      });

      it("control: backends reach the outside namespace through the host and get replies", async (tc) => {
        const v = new Verdicts(tc, tj);
        const tag = `out-${tj ? "tj" : "open"}-${Date.now()}`;
        for (const b of [t.backends[0], t.backends[2]]) {
          v.control(`${short(b)}→outside TCP v4`, await lab.tcp(b, outside.ipv4, 80));
          v.control(`${short(b)}→outside UDP v4`, await lab.udp(b, outside.ipv4, 9000, 1000, tag));
          v.control(`${short(b)}→outside TCP v6`, await lab.tcp(b, outside.ipv6, 80));
          v.control(`${short(b)}→outside UDP v6`, await lab.udp(b, outside.ipv6, 9000, 1000, tag));
        }
        // Through Docker's NAT, where it manages iptables: the outside sees the lab host's
        // address on its link. With "iptables": false there is no NAT: it sees the backends'.
        const log = outside.udpLog();
        const nat = setup.lab.daemonJson?.iptables !== false;
        const seen = (b: Container, f: 4 | 6) =>
          nat ? (f === 4 ? outside.gateway4 : outside.gateway6) : f === 4 ? b.ipv4 : b.ipv6!;
        v.control(
          nat ? "the outside sees them masqueraded" : "the outside sees their own addresses",
          [t.backends[0], t.backends[2]].every(
            (b) => log.includes(`${seen(b, 4)} ${tag}`) && log.includes(`${seen(b, 6)} ${tag}`),
          ),
          log.filter((l) => l.endsWith(tag)).join(" | "),
        );
        v.done();
      });
    }

    describe("without TrafficJam: every attack gets through", () => {
      attacks(false);
    });

    describe("with TrafficJam: every attack fails, legitimate traffic flows", () => {
      before(async () => {
        daemon = await startTrafficJam(lab, t.net, setup.env);
      });

      attacks(true);

      it("SIGUSR1 removes everything of the instance and exits 0", async () => {
        assert.ok(daemon, "TrafficJam was started");
        daemon.signal("SIGUSR1");
        assert.deepEqual(await daemon.waitExit(10_000), { code: 0, signal: null });
        assert.deepEqual(await firewallLeftovers(lab), []);
      });
    });
  });
}
