// A lab = one network namespace acting as a Docker host, with its own dockerd and the test image.
import { mkdirSync } from "node:fs";
import { after, before, type TestContext } from "node:test";
import {
  inspectContainer,
  runContainer,
  type Container,
  type RunContainerOptions,
} from "./containers.js";
import { docker as dockerCli, dockerRun } from "./docker-cli.js";
import { Dockerd } from "./dockerd.js";
import { runOk, type RunResult } from "./exec.js";
import {
  BUSYBOX,
  TEST_IMAGE_SPECS,
  loadTestImage,
  tjprobeBinary,
  type TestImageKind,
} from "./image.js";
import { HostServer } from "./host-server.js";
import { createNetns, nsRun, nsRunOk } from "./netns.js";
import { startOutside, type Outside, type OutsideOptions } from "./outside.js";
import {
  createNetwork,
  globalAddressOf,
  inspectNetwork,
  type CreateNetworkOptions,
  type NetworkInfo,
} from "./networks.js";
import { DATA_BASE, LOG_BASE, RUN_BASE, labPaths, type LabPaths } from "./paths.js";
import * as probes from "./probes.js";
import { register, unregister, type Disposable } from "./safety-net.js";
import {
  findLabPids,
  killPids,
  leftovers,
  pruneOldLogs,
  sweepStaleLabs,
  teardownSync,
  writeOwner,
} from "./teardown.js";
import { randomId, sleep, waitFor } from "./util.js";

export interface StartLabOptions {
  /** Short name ([a-z0-9-], ≤ 15 chars); netns tj-NAME. Default: random, so parallel runs never collide. */
  name?: string;
  /** Docker 20.10 writes ip6tables rules only with experimental + ip6tables. */
  ipv6?: boolean;
  /** Merged over the defaults ({"shutdown-timeout": 2, iptables: true}, + the IPv6 keys). Must not repeat CLI flags. */
  daemonJson?: Record<string, unknown>;
  /** Folder prepended to dockerd's PATH (e.g. iptables -> iptables-legacy links). */
  pathPrefix?: string;
  /**
   * The test image: "tjprobe" (default; compiled with gcc) or "busybox", which needs no compiler
   * but serves TCP 80 only and probes only with tcp (whole seconds) and ping.
   */
  image?: TestImageKind;
  /** dockerd's hostname (in a UTS namespace of its own); default: the machine's. */
  hostname?: string;
  /**
   * Runs once the lab's netns exists (lo up, ip_forward=0), before its dockerd starts: to give the
   * "host" more interfaces, as a real host has its NICs before Docker starts (see swarm.ts).
   */
  beforeDockerd?: (lab: Lab) => Promise<void>;
}

/** A neighbour-cache entry of a container (`ip neigh show IP`). */
export interface Neighbour {
  ip: string;
  /** Link-layer address; absent for INCOMPLETE or FAILED entries. */
  mac?: string;
  /** REACHABLE, STALE, DELAY, PROBE, FAILED, PERMANENT... */
  state: string;
  line: string;
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** The first "inet6 fe80::…/64" of `ip -6 addr show` output, without its prefix length. */
function linkLocalIn(ipAddrOutput: string): string | undefined {
  return /inet6 (fe80:[0-9a-f:]+)\/\d+/.exec(ipAddrOutput)?.[1];
}

/** Marker for "the lab host" where probes accept a container. */
export const LAB_HOST = Object.freeze({ labHost: true as const });
export type LabHost = typeof LAB_HOST;
/** Where a probe starts: a container (object or name) or the lab host. */
export type Origin = Container | string | LabHost;
const isLabHost = (o: Origin): o is LabHost => o === LAB_HOST;

/** Something the lab must kill on stop (TrafficJam daemons). */
export interface OwnedProcess {
  kill(): Promise<unknown>;
  killSync(): void;
}

export class Lab implements Disposable {
  readonly name: string;
  readonly netns: string;
  readonly netnsPath: string;
  readonly dockerHost: string;
  readonly paths: LabPaths;
  readonly image: TestImageKind;
  private readonly dockerd: Dockerd;
  private readonly beforeDockerd?: (lab: Lab) => Promise<void>;
  private readonly owned = new Set<OwnedProcess>();
  private stopping?: Promise<void>;

  constructor(name: string, opts: StartLabOptions) {
    this.name = name;
    this.paths = labPaths(name);
    this.netns = this.paths.netns;
    this.netnsPath = this.paths.netnsPath;
    this.image = opts.image ?? "tjprobe";
    const daemonJson: Record<string, unknown> = {
      "shutdown-timeout": 2,
      iptables: true,
      // keep the libtrust key in the lab instead of the machine's /etc/docker/key.json
      "deprecated-key-path": `${this.paths.base}/key.json`,
      ...(opts.ipv6 ? { experimental: true, ip6tables: true } : {}),
      ...opts.daemonJson,
    };
    this.dockerd = new Dockerd({
      paths: this.paths,
      daemonJson,
      pathPrefix: opts.pathPrefix,
      hostname: opts.hostname,
    });
    this.beforeDockerd = opts.beforeDockerd;
    this.dockerHost = this.dockerd.host;
  }

  /** Current dockerd pid (changes with restartDockerd()). */
  get dockerdPid(): number {
    return this.dockerd.pid;
  }

  /** @internal used by startLab() */
  async init(): Promise<void> {
    await createNetns(this.netns);
    await this.beforeDockerd?.(this);
    await this.dockerd.start();
    await loadTestImage(this.dockerHost, this.image);
  }

  // ---- docker ----

  /** docker CLI against this lab's engine: stdout, throws with stderr on failure. */
  docker(...args: string[]): Promise<string> {
    return dockerCli(this.dockerHost, args);
  }

  /** docker CLI without throwing on a non-zero exit. */
  dockerResult(args: readonly string[], timeoutMs?: number): Promise<RunResult> {
    return dockerRun(this.dockerHost, args, { timeoutMs });
  }

  private readonly dockerFn = (args: readonly string[], timeoutMs?: number): Promise<string> =>
    dockerCli(this.dockerHost, args, { timeoutMs });

  /** Creates and starts a container; its default command (the image's server) is awaited. */
  run(opts: RunContainerOptions): Promise<Container> {
    return runContainer(this.dockerFn, opts, TEST_IMAGE_SPECS[this.image].ready);
  }

  /** Fresh view of a container (addresses may change after restarts). */
  inspect(nameOrId: string, networkOrder: readonly string[] = []): Promise<Container> {
    return inspectContainer(this.dockerFn, nameOrId, networkOrder);
  }

  createNetwork(name: string, opts: CreateNetworkOptions): Promise<NetworkInfo> {
    return createNetwork(this.dockerFn, name, opts);
  }

  inspectNetwork(nameOrId: string): Promise<NetworkInfo> {
    return inspectNetwork(this.dockerFn, nameOrId);
  }

  /** The host's address on a network (its bridge gateway), as containers see the host. */
  async hostAddressOf(network: string, family: 4 | 6 = 4): Promise<string> {
    const n = await this.inspectNetwork(network);
    const fromIpam = n.gateways.find((g) => g.includes(":") === (family === 6));
    if (fromIpam) return fromIpam.replace(/\/\d+$/, "");
    // 20.10 leaves IPAM Gateway empty when only --subnet was given: read the bridge itself
    const ip = globalAddressOf(
      await this.nsExec(["ip", "-j", "addr", "show", "dev", n.bridge]),
      family,
    );
    if (!ip)
      throw new Error(
        `bridge ${n.bridge} of network ${network} has no global IPv${family} address`,
      );
    return ip;
  }

  // ---- inside containers ----

  /** docker exec; never throws for a non-zero exit (see RunResult.code). */
  exec(
    container: Container | string,
    cmd: readonly string[],
    timeoutMs = 30_000,
  ): Promise<RunResult> {
    const name = typeof container === "string" ? container : container.name;
    return this.dockerResult(["exec", name, ...cmd], timeoutMs);
  }

  /** The lab host itself as a probe origin: lab.tcp(lab.host, ip, port). */
  readonly host: LabHost = LAB_HOST;

  /** Where a probe runs: docker exec in a container, or `ip netns exec` on the lab host. */
  private runner(from: Origin): probes.Runner {
    return async (cmd, t) => {
      if (cmd[0] === "tjprobe") this.requireTjprobe(`tjprobe ${cmd[1]}`);
      if (!isLabHost(from)) return this.exec(from, cmd, t);
      return nsRun(this.netns, await this.onLabHost(cmd), t);
    };
  }

  /** A probe command as the lab host runs it: the cached tjprobe, busybox's ping and nc. */
  private async onLabHost(cmd: readonly string[]): Promise<readonly string[]> {
    const [bin, ...rest] = cmd;
    if (bin === "tjprobe") return [await tjprobeBinary(), ...rest];
    if (bin === "ping" || bin === "nc") return [BUSYBOX, bin, ...rest];
    return cmd;
  }

  /** A busybox lab has no tjprobe, and must not build one: it is for hosts without a compiler. */
  private requireTjprobe(what: string): void {
    if (this.image !== "tjprobe") {
      throw new Error(`${what} needs tjprobe, which a lab of image "${this.image}" lacks`);
    }
  }

  /**
   * TCP connect from a container (or lab.host); true if it connected within timeoutMs. A busybox
   * lab uses busybox nc, whose timeout is whole seconds (timeoutMs rounded up).
   */
  tcp(from: Origin, host: string, port: number, timeoutMs = 1000): Promise<boolean> {
    const probe = this.image === "busybox" ? probes.ncTcpProbe : probes.tcpProbe;
    return probe(this.runner(from), host, port, timeoutMs);
  }

  /** UDP datagram from a container (or lab.host); true if the echo came back within timeoutMs. */
  udp(
    from: Origin,
    host: string,
    port = 9000,
    timeoutMs = 1000,
    payload?: string,
  ): Promise<boolean> {
    return probes.udpProbe(this.runner(from), host, port, timeoutMs, payload);
  }

  /** One ICMP echo (1 s). */
  ping(from: Origin, host: string): Promise<boolean> {
    return probes.pingProbe(this.runner(from), host);
  }

  /** COUNT connects every intervalMs; start it, act, then await the result. */
  watch(
    from: Origin,
    host: string,
    port: number,
    intervalMs: number,
    count: number,
    timeoutMs?: number,
  ): Promise<probes.WatchResult> {
    return probes.watchProbe(this.runner(from), host, port, intervalMs, count, timeoutMs);
  }

  /**
   * One UDP datagram with a forged source address (raw socket), from source port `srcPort`
   * (default: a random high port). `dst` may carry a scope ("fe80::X%eth0").
   */
  spoofUdp(
    from: Origin,
    src: string,
    dst: string,
    port = 9000,
    payload?: string,
    srcPort?: number,
  ): Promise<void> {
    return probes.spoofUdp(this.runner(from), src, dst, port, payload, srcPort);
  }

  /** COUNT VXLAN datagrams from an ordinary UDP socket of `from` (see probes.vxlanSend). */
  vxlanSend(
    from: Origin,
    host: string,
    port: number,
    vni: number,
    kind: "udp" | "arp",
    innerSrc: string,
    innerDst: string,
    dstMac: string,
    count: number,
    payloadOrSenderMac: string,
  ): Promise<void> {
    return probes.vxlanSend(
      this.runner(from),
      ...([host, port, vni, kind, innerSrc, innerDst, dstMac, count, payloadOrSenderMac] as const),
    );
  }

  /**
   * COUNT ARP replies (~50 ms apart) from `iface` of `from` to `dstMac`/`dstIp`, saying
   * `claimedIp` is at `senderMac` (default: that interface's own MAC).
   */
  arpSpoof(
    from: Origin,
    iface: string,
    claimedIp: string,
    dstIp: string,
    dstMac: string,
    count: number,
    senderMac?: string,
  ): Promise<void> {
    return probes.arpSpoof(this.runner(from), iface, claimedIp, dstIp, dstMac, count, senderMac);
  }

  /**
   * COUNT unsolicited ICMPv6 neighbour advertisements (override flag) from `iface` of `from`,
   * claiming `target` is at `lladdr` (default: that interface's own MAC), sent to `dst` (unicast,
   * or "ff02::1").
   */
  naSpoof(
    from: Origin,
    iface: string,
    target: string,
    dst: string,
    count: number,
    lladdr?: string,
  ): Promise<void> {
    return probes.naSpoof(this.runner(from), iface, target, dst, count, lladdr);
  }

  /**
   * One UDP datagram from an ordinary socket with SO_BROADCAST (255.255.255.255 works) or to a
   * multicast group; `iface` picks the outgoing interface. No answer is awaited.
   */
  sendUdp(from: Origin, dst: string, port: number, payload: string, iface?: string): Promise<void> {
    return probes.sendUdp(this.runner(from), dst, port, payload, iface);
  }

  /**
   * Joins multicast `group` on `iface` of a container for `seconds`; resolves once joined, with a
   * `done` promise of the "<src ip> <payload>" lines it received (group:port only).
   */
  multicastListen(
    container: Container | string,
    group: string,
    port: number,
    iface: string,
    seconds: number,
  ): Promise<probes.Listener<string[]>> {
    return probes.multicastListen(this.runner(container), group, port, iface, seconds);
  }

  /** COUNT raw Ethernet frames of `ethertype` (e.g. 0x88b5), ~10 ms apart, to `dstMac`. */
  ethSend(
    from: Origin,
    iface: string,
    dstMac: string,
    ethertype: number,
    count: number,
  ): Promise<void> {
    return probes.ethSend(this.runner(from), iface, dstMac, ethertype, count);
  }

  /**
   * Counts frames of `ethertype` arriving on `iface` of a container for `seconds`; resolves
   * once listening, with a `done` promise of the count.
   */
  ethListen(
    container: Container | string,
    iface: string,
    ethertype: number,
    seconds: number,
  ): Promise<probes.Listener<number>> {
    return probes.ethListen(this.runner(container), iface, ethertype, seconds);
  }

  /**
   * busybox ping for `seconds` to `host` (e.g. "ff02::1%eth0"): the distinct addresses that
   * answered. Throws if ping did not run.
   */
  pingResponders(from: Origin, host: string, seconds = 2): Promise<string[]> {
    return probes.pingResponders(this.runner(from), host, seconds);
  }

  /** MAC address of a container's interface (/sys/class/net/IFACE/address). */
  async macOf(container: Container | string, iface = "eth0"): Promise<string> {
    const r = await this.exec(container, ["cat", `/sys/class/net/${iface}/address`]);
    const mac = r.stdout.trim();
    if (r.code !== 0 || !MAC_RE.test(mac)) throw new Error(`no MAC for ${iface}: ${r.stderr}`);
    return mac;
  }

  /** The IPv6 link-local address (fe80::…, without scope) of a container's interface. */
  async linkLocalOf(container: Container | string, iface = "eth0"): Promise<string> {
    const { ll, listing } = await this.linkScope(container, iface);
    if (!ll) throw new Error(`no link-local address on ${iface}: ${listing}`);
    return ll;
  }

  /**
   * Waits until a container's link-local address is usable: the kernel runs duplicate address
   * detection on it for about a second after the interface comes up ("tentative").
   */
  async linkLocalReady(container: Container | string, iface = "eth0"): Promise<void> {
    const name = typeof container === "string" ? container : container.name;
    await waitFor(
      async () => {
        const { ll, listing } = await this.linkScope(container, iface);
        return ll !== undefined && !/tentative/.test(listing);
      },
      { timeoutMs: 10_000, intervalMs: 100, what: `the link-local address of ${name}` },
    );
  }

  /** `ip -6 addr show dev IFACE scope link` in a container, and the address it lists. */
  private async linkScope(container: Container | string, iface: string) {
    const cmd = ["ip", "-6", "addr", "show", "dev", iface, "scope", "link"];
    const r = await this.exec(container, cmd);
    const listing = `${r.stdout}${r.stderr}`;
    return { ll: r.code === 0 ? linkLocalIn(r.stdout) : undefined, listing };
  }

  /** The IPv6 link-local address of a host interface (e.g. a network's bridge) in the lab netns. */
  async hostLinkLocalOf(iface: string): Promise<string> {
    const out = await this.nsExec(["ip", "-6", "addr", "show", "dev", iface, "scope", "link"]);
    const ll = linkLocalIn(out);
    if (!ll) throw new Error(`no link-local address on ${iface} of the lab host: ${out}`);
    return ll;
  }

  /** MAC address of a lab host interface (e.g. a network's bridge). */
  async hostMacOf(iface: string): Promise<string> {
    const mac = (await this.nsExec(["cat", `/sys/class/net/${iface}/address`])).trim();
    if (!MAC_RE.test(mac)) throw new Error(`no MAC for ${iface} of the lab host: ${mac}`);
    return mac;
  }

  /**
   * A container's (or the lab host's) neighbour entry for `ip` (`ip [-6] neigh show IP` inside
   * it), undefined when there is none. `mac` is absent for entries without a link-layer address
   * (INCOMPLETE, FAILED).
   */
  async neighbour(from: Origin, ip: string): Promise<Neighbour | undefined> {
    const cmd = ["ip", ip.includes(":") ? "-6" : "-4", "neigh", "show", ip];
    const r = isLabHost(from) ? await this.nsRun(cmd) : await this.exec(from, cmd);
    if (r.code !== 0) throw new Error(`ip neigh show ${ip} failed: ${r.stderr.trim()}`);
    const line = r.stdout.split("\n").find((l) => l.split(" ")[0] === ip);
    if (!line) return undefined;
    const mac = / lladdr (\S+)/.exec(line)?.[1];
    return { ip, mac, state: line.trim().split(/\s+/).at(-1) ?? "", line: line.trim() };
  }

  /**
   * Empties the IPv4 and IPv6 neighbour caches of a container (`ip neigh flush all`, entered
   * from the lab host: containers lack NET_ADMIN) or of the lab host.
   */
  async flushNeighbours(of: Origin): Promise<void> {
    for (const family of ["-4", "-6"]) {
      const flush = ["ip", family, "neigh", "flush", "all"];
      if (isLabHost(of)) {
        await this.nsExec(flush);
        continue;
      }
      const name = typeof of === "string" ? of : of.name;
      const pid = (await this.docker("inspect", "--format", "{{.State.Pid}}", name)).trim();
      if (!/^[1-9]\d*$/.test(pid)) throw new Error(`container ${name} is not running (pid ${pid})`);
      await runOk("nsenter", [`--net=/proc/${pid}/ns/net`, ...flush]);
    }
  }

  /** "<src ip> <payload>" lines received so far by a serving container on UDP 9000. */
  async udpLog(container: Container | string): Promise<string[]> {
    const r = await this.exec(container, ["cat", "/tmp/udp.log"]);
    if (r.code === 0) return probes.parseUdpLog(r.stdout);
    if (/No such file/.test(r.stderr)) return [];
    throw new Error(`reading /tmp/udp.log failed: ${r.stderr.trim()}`);
  }

  /**
   * The UDP log of a serving container once it holds `marker` (a datagram sent after the ones
   * being checked for): whatever arrived before the marker is in it. A check that something did
   * not arrive reads this, never the log after a sleep.
   */
  async udpLogThrough(
    container: Container | string,
    marker: string,
    timeoutMs = 3_000,
  ): Promise<string[]> {
    const name = typeof container === "string" ? container : container.name;
    return waitFor(
      async () => {
        const log = await this.udpLog(container);
        return log.some((l) => l.endsWith(` ${marker}`)) ? log : false;
      },
      { timeoutMs, intervalMs: 50, what: `"${marker}" in ${name}'s UDP log` },
    );
  }

  /**
   * `tjprobe serve` on the lab host itself (TCP 80 + 8080, UDP 9000 on every host address, e.g.
   * the bridge gateways), to test container -> host traffic without a published port.
   * Stopped by lab.stop() at the latest.
   */
  async startHostServer(): Promise<HostServer> {
    this.requireTjprobe("startHostServer()");
    const server = new HostServer(this, await tjprobeBinary());
    await server.ready();
    return server;
  }

  /**
   * A network namespace beyond the lab host ("the outside world"), routed through it: a veth
   * pair, addresses PREFIX4.2/30 and PREFIX6::2/64 (the lab side .1 and ::1), default routes
   * back to the lab host, and `tjprobe serve` running in it. Removed by lab.stop() at the latest.
   */
  async startOutside(opts: OutsideOptions = {}): Promise<Outside> {
    this.requireTjprobe("startOutside()");
    return startOutside(this, opts);
  }

  /** Host-side veth of a container's interface on a network (for physdev matches). */
  async hostVethOf(container: Container, network?: string): Promise<string> {
    const ip = network ? container.ipOn(network) : container.ipv4;
    const addrs = await this.exec(container, ["ip", "-o", "-4", "addr", "show"]);
    const ifname = addrs.stdout
      .split("\n")
      .find((l) => l.includes(` ${ip}/`))
      ?.split(/\s+/)[1];
    if (!ifname) throw new Error(`no interface with ${ip} in ${container.name}`);
    const iflink = (
      await this.exec(container, ["cat", `/sys/class/net/${ifname}/iflink`])
    ).stdout.trim();
    const links = await this.nsExec(["ip", "-o", "link", "show"]);
    const veth = links
      .split("\n")
      .find((l) => l.startsWith(`${iflink}: `))
      ?.split(": ")[1]
      ?.split("@")[0];
    if (!veth) throw new Error(`no host interface with index ${iflink} for ${container.name}`);
    return veth;
  }

  // ---- the lab host ----

  /** Runs a command in the lab netns (e.g. iptables-save, nft list ruleset); stdout, throws on failure. */
  nsExec(cmd: readonly string[], timeoutMs?: number): Promise<string> {
    return nsRunOk(this.netns, cmd, timeoutMs);
  }

  nsRun(cmd: readonly string[], timeoutMs?: number): Promise<RunResult> {
    return nsRun(this.netns, cmd, timeoutMs);
  }

  /**
   * Graceful dockerd restart (SIGTERM, bounded wait, start with the same roots, wait ready),
   * optionally with daemon.json keys changed (e.g. { iptables: true }).
   */
  async restartDockerd(daemonJson: Record<string, unknown> = {}): Promise<void> {
    await this.dockerd.stop();
    await this.dockerd.start(daemonJson);
  }

  /**
   * Graceful dockerd stop (SIGTERM, bounded wait): its containers stop, the lab's kernel state
   * (rules, bridges) stays. With startDockerd(), what happens between the two is the test's
   * (e.g. a reboot's forgetting of the kernel's rules).
   */
  async stopDockerd(): Promise<void> {
    await this.dockerd.stop();
  }

  /** Starts the stopped dockerd again, with the same roots; waits until it answers. */
  async startDockerd(daemonJson: Record<string, unknown> = {}): Promise<void> {
    await this.dockerd.start(daemonJson);
  }

  dockerdLogTail(lines = 40): string {
    return this.dockerd.logTail(lines);
  }

  /** @internal TrafficJam processes killed by stop(). */
  own(p: OwnedProcess): void {
    this.owned.add(p);
  }

  disown(p: OwnedProcess): void {
    this.owned.delete(p);
  }

  /** What of this lab still exists (empty after a successful stop()). */
  leftovers(): string[] {
    return leftovers(this.name);
  }

  /**
   * Removes everything: TrafficJam daemons, containers, dockerd, containerd, shims (all by PID),
   * cgroups, the netns (and so all its rules), folders. Idempotent; throws if something remains.
   * Everything is SIGKILLed: nothing of the lab survives it, so there is nothing to shut down cleanly.
   */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      for (const p of this.owned) await p.kill().catch(() => undefined);
      await this.dockerd.kill();
      for (let round = 0; round < 30; round++) {
        const pids = findLabPids(this.name);
        if (pids.length === 0) break;
        killPids(pids);
        await sleep(100); // lets node reap its own children between rounds
      }
      const left = teardownSync(this.name);
      unregister(this);
      if (left.length) throw new Error(`lab ${this.name} not fully removed: ${left.join("; ")}`);
    })();
    return this.stopping;
  }

  /** Synchronous SIGKILL teardown for the process-exit safety net. */
  disposeSync(): void {
    for (const p of this.owned) p.killSync();
    this.dockerd.killSync();
    teardownSync(this.name);
  }
}

/** Starts a lab; on failure everything already created is removed before the error is thrown. */
export function startLab(opts: StartLabOptions = {}): Promise<Lab> {
  return startLabOf(opts, (name) => new Lab(name, opts));
}

/**
 * startLab() for a subclass of Lab (e.g. a swarm node, see swarm.ts): `make` builds the instance
 * for the chosen name.
 */
export async function startLabOf<T extends Lab>(
  opts: StartLabOptions,
  make: (name: string) => T,
): Promise<T> {
  sweepStaleLabs();
  pruneOldLogs();
  const name = opts.name ?? `l${randomId(3)}`;
  const paths = labPaths(name);
  for (const d of [DATA_BASE, RUN_BASE, LOG_BASE]) mkdirSync(d, { recursive: true });
  try {
    mkdirSync(paths.base); // not recursive: fails if another live lab has this name
  } catch (e) {
    throw new Error(`lab ${name} already exists (${paths.base})`, { cause: e });
  }
  writeOwner(paths.ownerFile);
  const lab = make(name);
  register(lab);
  try {
    await lab.init();
  } catch (e) {
    await lab.stop().catch(() => undefined);
    throw e;
  }
  return lab;
}

/**
 * startLab() inside a test, stopped by `t.after` whether the test passes, fails or throws:
 *   test("x", async (t) => { const lab = await startTestLab({ ipv6: true }, t); ... });
 */
export async function startTestLab(opts: StartLabOptions, t: TestContext): Promise<Lab> {
  const lab = await startLab(opts);
  t.after(() => lab.stop());
  return lab;
}

/**
 * One lab for a describe() block: registers its before/after hooks (call it synchronously in the
 * describe body) and returns a getter for the tests. (A global after() called from inside a
 * before() hook would run right after that hook, hence this shape.)
 *   describe("x", () => { const lab = useLab({ ipv6: true }); it("y", async () => lab().docker("ps")); });
 */
export function useLab(opts: StartLabOptions = {}): () => Lab {
  let lab: Lab | undefined;
  before(async () => {
    lab = await startLab(opts);
  });
  after(async () => {
    await lab?.stop();
  });
  return () => {
    if (!lab)
      throw new Error("useLab(): the lab is not started (its before() hook failed or has not run)");
    return lab;
  };
}
