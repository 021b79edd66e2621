// The blocked-attempt log: reads the instance's NFLOG groups with tcpdump (one process, the three
// groups), names each logged packet's sender and destination from the network's last snapshot,
// and logs each new attempt once (ops/attempts.ts decides which). Why tcpdump: Node cannot open
// a netlink socket without a native module, and libpcap reads NFLOG groups as a link type of its
// own, `nflog:<group>,…`, writing pcap we parse here (ops/nflog.ts): a well-known tool, in
// Debian and in the image, with a stable binary format rather than text to scrape.
import type { DropKind, LogGroups, Mode } from "../drops.js";
import { kindOfGroup } from "../drops.js";
import type { Host, TiedProcess } from "../host/host.js";
import { interfaceIndex as sysfsInterfaceIndex, listLinks } from "../host/links.js";
import type { Log } from "../log.js";
import type { Member } from "../model.js";
import {
  AttemptReporter,
  attemptOf,
  describeParty,
  isAmbient,
  type Attempt,
  type NetworkView,
  type Verdict,
} from "./attempts.js";
import { PcapReader, headersOf } from "./nflog.js";

/** How often the attempts suppressed by the rate limits are summed up in one line. */
const SUMMARY_EVERY_MS = 60_000;
const RESTART_MIN_MS = 5_000;
const RESTART_MAX_MS = 300_000;

export interface AttemptLogOptions {
  host: Host;
  groups: LogGroups;
  mode: Mode;
  log: Log;
  /** NETWORK, for the log lines. */
  network: string;
  /** Told of every new attempt and what became of it (metrics). */
  onAttempt?(attempt: Attempt, verdict: Verdict): void;
  /** Told when reading starts or stops (status). */
  onState?(reading: boolean, reason?: string): void;
  reporter?: AttemptReporter;
  /** Where interface indexes are read (sysfs of our network namespace). */
  interfaceIndex?(name: string): number | null;
}

/** The tcpdump command line that reads the groups: pcap on stdout, flushed per packet. */
export function tcpdumpArgs(groups: LogGroups): string[] {
  const list = [groups["member-to-member"], groups["member-to-host"], groups.forged];
  return ["-i", `nflog:${list.join(",")}`, "-w", "-", "-U", "-n"];
}

export class AttemptLog {
  readonly reporter: AttemptReporter;
  private child: TiedProcess | null = null;
  private stopped = false;
  private restartTimer: NodeJS.Timeout | null = null;
  private summaryTimer: NodeJS.Timeout | null = null;
  private restartDelayMs = RESTART_MIN_MS;
  private unavailableSaid = false;
  private members: readonly Member[] = [];
  /** Bridge port name by interface index, for the members' ports. */
  private names = new Map<number, string>();
  private namesKey = "";
  /** When the names were last read for an unknown port (at most once a second: a flood). */
  private namesReadAt = 0;
  reading = false;
  /** Packets read from the kernel's log since the start (what the kernel's limits let through). */
  packets = 0;

  constructor(private readonly options: AttemptLogOptions) {
    this.reporter = options.reporter ?? new AttemptReporter();
  }

  /** The network's members as of the last pass: whom the packets are attributed to. */
  setMembers(members: readonly Member[]): void {
    this.members = members;
    const key = members.map((m) => m.port ?? "").join(",");
    if (key !== this.namesKey) this.refreshNames(key);
  }

  private refreshNames(key = this.members.map((m) => m.port ?? "").join(",")): void {
    this.namesKey = key;
    const { host, interfaceIndex } = this.options;
    // Another namespace's ports (a Swarm overlay's): our sysfs does not show them; `ip` there.
    if (!interfaceIndex && host.netns !== null) return void this.readNames(key);
    const index = interfaceIndex ?? sysfsInterfaceIndex;
    const names = new Map<number, string>();
    for (const m of this.members) {
      if (!m.port) continue;
      const i = index(m.port);
      if (i !== null) names.set(i, m.port);
    }
    this.names = names;
  }

  private async readNames(key: string): Promise<void> {
    const ports = new Set(this.members.flatMap((m) => (m.port ? [m.port] : [])));
    if (ports.size === 0) return void (this.names = new Map());
    const links = await listLinks(this.options.host).catch(() => null);
    if (links === null || this.namesKey !== key) return;
    const names = new Map<number, string>();
    for (const link of links) if (ports.has(link.ifname)) names.set(link.ifindex, link.ifname);
    this.names = names;
  }

  private view(): NetworkView {
    return {
      members: this.members,
      interfaceName: (ifindex) => this.names.get(ifindex),
    };
  }

  start(): void {
    if (this.stopped || this.child) return;
    const { host, groups, log } = this.options;
    if (!host.stream) {
      this.unavailable("this host cannot run a reader");
      return;
    }
    const child = host.stream("tcpdump", tcpdumpArgs(groups));
    this.child = child;
    const reader = new PcapReader();
    let stderr = "";
    const startedAt = Date.now();
    child.stdout.on("data", (chunk: Buffer) => {
      try {
        for (const packet of reader.push(chunk)) this.packet(packet);
      } catch (error) {
        log.warn("attempts.unavailable", "the blocked-attempt log cannot read tcpdump's output", {
          err: error,
        });
        child.stdin.end(); // ends tcpdump; restarted below
      }
    });
    child.stderr.setEncoding("utf8").on("data", (text: string) => {
      stderr = (stderr + text).slice(-2000);
      if (!this.reading && /listening on nflog/.test(stderr)) {
        this.reading = true;
        this.unavailableSaid = false;
        this.options.onState?.(true);
        log.info("attempts.reading", "blocked-attempt log: reading the kernel's log groups", {
          groups,
        });
      }
    });
    const lost = (why: string) => {
      if (this.child !== child) return;
      this.child = null;
      this.reading = false;
      if (this.stopped) return;
      this.unavailable(why);
      const livedMs = Date.now() - startedAt;
      this.restartDelayMs =
        livedMs < 60_000 ? Math.min(this.restartDelayMs * 2, RESTART_MAX_MS) : RESTART_MIN_MS;
      this.restartTimer = setTimeout(() => this.start(), this.restartDelayMs);
      this.restartTimer.unref();
    };
    child.on("error", (error) => lost(error.message));
    child.on("exit", (code, signal) => {
      const said = stderr
        .split("\n")
        .filter(
          (l) => l.trim() !== "" && !/listening on|packets? (captured|received|dropped)/.test(l),
        )
        .join("; ");
      const why =
        code === 127
          ? "tcpdump is not installed (Debian package tcpdump; the image has it)"
          : `tcpdump exited (${signal ?? code})${said ? `: ${said}` : ""}`;
      lost(why);
    });
    if (!this.summaryTimer) {
      this.summaryTimer = setInterval(() => this.summarise(), SUMMARY_EVERY_MS);
      this.summaryTimer.unref();
    }
  }

  private unavailable(reason: string): void {
    this.options.onState?.(false, reason);
    const { log } = this.options;
    (this.unavailableSaid ? log.debug : log.warn)(
      "attempts.unavailable",
      "blocked-attempt log unavailable: blocked attempts are counted but not reported",
      { reason, retryInMs: this.restartDelayMs },
    );
    this.unavailableSaid = true;
  }

  stop(): void {
    this.stopped = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    if (this.summaryTimer) clearInterval(this.summaryTimer);
    this.child?.stdin.end(); // the wrapper ends tcpdump, then itself
    this.child = null;
  }

  /** One logged packet → at most one log line. */
  packet(
    packet: Parameters<typeof attemptOf>[0] & Parameters<typeof headersOf>[0] & { group: number },
  ): void {
    const kind = kindOfGroup(this.options.groups, packet.group);
    if (kind === null) return;
    this.packets++;
    const headers = headersOf(packet);
    if (isAmbient(headers)) return;
    let attempt = attemptOf(packet, headers, kind, this.view());
    const now = Date.now();
    const unknownPort =
      !attempt.source.container && (packet.physindev ?? packet.indev) !== undefined;
    if (unknownPort && now - this.namesReadAt >= 1000) {
      // A port not seen yet (a member started since the names were read): read them again.
      this.namesReadAt = now;
      this.refreshNames();
      attempt = attemptOf(packet, headers, kind, this.view());
    }
    const verdict = this.reporter.offer(attempt);
    this.options.onAttempt?.(attempt, verdict);
    if (verdict === "report") this.report(attempt);
  }

  private report(a: Attempt): void {
    const { log, mode, network } = this.options;
    const what =
      a.port !== undefined
        ? `${a.protocol}/${a.port}`
        : a.icmpType !== undefined
          ? `${a.protocol} type ${a.icmpType}`
          : a.protocol;
    const from = describeParty(a.source);
    const to = describeParty(a.destination);
    const fields = {
      kind: a.kind,
      network,
      source: from,
      ...(a.source.address !== undefined ? { sourceAddress: a.source.address } : {}),
      ...(a.source.port !== undefined ? { bridgePort: a.source.port } : {}),
      destination: to,
      ...(a.destination.address !== undefined ? { destinationAddress: a.destination.address } : {}),
      protocol: a.protocol,
      ...(a.port !== undefined ? { port: a.port } : {}),
      ...(a.icmpType !== undefined ? { icmpType: a.icmpType } : {}),
      ...(a.claimed !== undefined ? { claimed: a.claimed } : {}),
    };
    const claim = a.claimed !== undefined ? ` claiming ${a.claimed}` : "";
    if (mode === "audit")
      log.info("attempt.audited", `audit: would block ${from}${claim} → ${to} ${what}`, fields);
    else log.warn("attempt.blocked", `blocked ${from}${claim} → ${to} ${what}`, fields);
  }

  private summarise(): void {
    const suppressed = this.reporter.takeSuppressed();
    if (!suppressed) return;
    this.options.log.warn(
      "attempts.suppressed",
      "new blocked attempts not reported one by one (rate limit)",
      { network: this.options.network, ...suppressed },
    );
  }
}

export type { DropKind };
