// The daemon's operations side on one host: the blocked-attempt log, MODE and its switches, the
// opt-in metrics, and what `trafficjam status` reads from the state file. The daemon calls it at
// a few points (daemon.ts: `ops?.…`); it decides nothing about the rules beyond the policy
// options it hands the reconciler (the mode, and that drops are logged).
import type { Config } from "../config.js";
import { logGroupsOf, type LogGroups, type Mode } from "../drops.js";
import type { Host } from "../host/host.js";
import type { Log } from "../log.js";
import type { Member, NetworkSnapshot } from "../model.js";
import type { PassOutcome } from "../reconciler.js";
import { AttemptLog } from "./attempt-log.js";
import { assessHealth, type HealthPublisher } from "./health.js";
import { modeInKernel } from "./mode.js";
import { noAttempts, type OpsState, type WhitelistedState } from "./state.js";

/** The state file is written again for new attempts at most this often (else after each pass). */
const STATE_EVERY_MS = 1_000;

type MetricsModule = typeof import("./metrics.js");

export class Operations {
  readonly policy: { mode: Mode; log: true };
  private attemptLog: AttemptLog;
  /** Where the rules, and so the kernel's log of their drops, are: null: our namespace. */
  private rulesNetns: string | null = null;
  /** Packets read by the readers of namespaces left behind (a Swarm overlay recreated). */
  private packetsBefore = 0;
  private running = false;
  private metrics: InstanceType<MetricsModule["Metrics"]> | null = null;
  private readonly state: OpsState;
  private readonly unbound = new Map<string, string>();
  private members: readonly Member[] = [];
  /** The mode of the rules in force before our first pass (null: none; undefined: not read). */
  private kernelMode: Mode | null | undefined;
  private stateTimer: NodeJS.Timeout | null = null;
  private lastLocation: string | null = null;
  private lastRulesetInstance: string | null = null;
  /** The instance's NFLOG groups (from INSTANCE_ID). */
  private readonly groups: LogGroups;

  constructor(
    private readonly config: Config,
    private readonly log: Log,
    private readonly host: Host,
    private readonly health: HealthPublisher,
  ) {
    const groups = (this.groups = logGroupsOf(config.instanceId));
    this.policy = { mode: config.mode, log: true };
    this.state = {
      startedAt: Date.now(),
      network: config.network,
      whitelist: `${config.whitelistFilter.key}=${config.whitelistFilter.value}`,
      passes: { ok: 0, failed: 0 },
      repairs: 0,
      whitelisted: [],
      attemptLog: { groups, reading: false, reason: "not started yet" },
      attempts: noAttempts(),
      metrics: config.metricsAddress ? addressText(config.metricsAddress) : null,
    };
    this.attemptLog = this.reader(host);
  }

  /** The blocked-attempt log's reader in `host`'s namespace, counting on with the last one's. */
  private reader(host: Host, reporter?: AttemptLog["reporter"]): AttemptLog {
    const groups = this.groups;
    return new AttemptLog({
      host,
      groups,
      mode: this.config.mode,
      log: this.log,
      network: this.config.network,
      ...(reporter ? { reporter } : {}),
      onAttempt: (attempt, verdict) => {
        if (verdict !== "known") this.metrics?.attempt(attempt.kind);
        this.noteAttempts();
      },
      onState: (reading, reason) => {
        this.state.attemptLog = { groups, reading, ...(reason ? { reason } : {}) };
        this.publish();
      },
    });
  }

  /** Before the first pass: says audit mode loudly, and reads the mode of the rules in force. */
  async beforeFirstPass(): Promise<void> {
    if (this.config.mode === "audit")
      this.log.warn(
        "mode.audit",
        "MODE=audit: the rules log what they would drop and drop nothing: the network is NOT protected",
        { network: this.config.network },
      );
    try {
      this.kernelMode = await modeInKernel(this.host, this.config.instanceId);
    } catch {
      this.kernelMode = null; // cannot tell: a switch then goes unsaid, nothing worse
    }
  }

  portUnknown(member: Member, reason: string): void {
    this.unbound.set(member.id, reason);
  }

  /** A pass's snapshot: whom blocked packets are attributed to, and who is whitelisted. */
  observed(snapshot: NetworkSnapshot | null): void {
    this.members = snapshot?.members ?? [];
    this.attemptLog.setMembers(this.members);
  }

  /** After every pass, before the state file is written. */
  passed(outcome: PassOutcome): void {
    const s = this.state;
    if (outcome.ok) s.passes.ok++;
    else s.passes.failed++;
    if (outcome.repaired) s.repairs++;
    const ids = new Set(this.members.map((m) => m.id));
    for (const id of this.unbound.keys()) if (!ids.has(id)) this.unbound.delete(id);
    s.whitelisted = this.members
      .filter((m) => m.whitelisted)
      .map((m): WhitelistedState => ({
        name: m.name,
        id: m.id,
        ...(m.ipv4 ? { ipv4: m.ipv4 } : {}),
        ...(m.ipv6 ? { ipv6: m.ipv6 } : {}),
        ...(m.port
          ? { port: m.port }
          : { unbound: this.unbound.get(m.id) ?? "no bridge port found" }),
      }));
    if (outcome.ok && outcome.ruleset) {
      this.readIn(outcome.ruleset.netns ?? null);
      this.lastLocation = outcome.location ?? null;
      this.lastRulesetInstance = outcome.ruleset.instanceId;
      this.noteModeSwitch(outcome);
    }
    this.metrics?.passed(outcome, s.whitelisted.length);
    this.health.setOps(this.snapshotState());
  }

  /**
   * The rules moved to another namespace (a Swarm worker's overlay: its namespace appears, or is
   * made anew): the kernel's log of their drops is read there, by a reader started there.
   */
  private readIn(netns: string | null): void {
    if (netns === this.rulesNetns) return;
    this.rulesNetns = netns;
    const old = this.attemptLog;
    old.stop();
    this.packetsBefore += old.packets;
    this.attemptLog = this.reader(this.host.in(netns), old.reporter);
    this.attemptLog.setMembers(this.members);
    if (this.running) this.attemptLog.start();
  }

  /** The first pass in force after a start in another mode than the kernel's rules: said once. */
  private noteModeSwitch(outcome: PassOutcome): void {
    const before = this.kernelMode;
    if (before === undefined) return;
    this.kernelMode = undefined;
    if (before === null || before === this.config.mode || outcome.ruleset?.bridge == null) return;
    this.log.info("mode.changed", `mode switched from ${before} to ${this.config.mode}`, {
      from: before,
      to: this.config.mode,
      location: outcome.location,
      network: outcome.ruleset.networkName,
    });
  }

  /** Once the first pass is done: the log reader, and the metrics if asked for. */
  async started(): Promise<void> {
    this.running = true;
    this.attemptLog.start();
    const address = this.config.metricsAddress;
    if (!address) return;
    try {
      const { Metrics } = (await import("./metrics.js")) as MetricsModule;
      const { readDropCounts } = await import("./counters.js");
      const metrics = new Metrics({
        instanceId: this.config.instanceId,
        network: this.config.network,
        mode: this.config.mode,
        readDrops: async () =>
          this.lastLocation
            ? readDropCounts(
                this.host.in(this.rulesNetns),
                this.config.instanceId,
                this.lastLocation,
                this.groups,
              )
            : null,
        healthy: () => assessHealth(this.health.current, Date.now(), true).healthy,
      });
      await metrics.listen(address);
      this.metrics = metrics;
      this.log.info("metrics.listening", "serving Prometheus metrics", {
        address: `http://${addressText(address)}/metrics`,
      });
    } catch (error) {
      this.log.error("metrics.failed", "cannot serve the metrics (the daemon goes on without)", {
        address: addressText(address),
        err: error,
      });
    }
  }

  stop(): void {
    this.running = false;
    this.attemptLog.stop();
    this.metrics?.close();
    if (this.stateTimer) clearTimeout(this.stateTimer);
  }

  private snapshotState(): OpsState {
    const r = this.attemptLog.reporter;
    this.state.attempts = {
      byKind: { ...r.attempts },
      reported: r.reported,
      suppressed: r.suppressedTotal,
      packets: this.packetsBefore + this.attemptLog.packets,
    };
    return structuredClone(this.state);
  }

  /** New attempts: into the state file within STATE_EVERY_MS. */
  private noteAttempts(): void {
    if (this.stateTimer) return;
    this.stateTimer = setTimeout(() => {
      this.stateTimer = null;
      this.publish();
    }, STATE_EVERY_MS);
    this.stateTimer.unref();
  }

  private publish(): void {
    if (this.lastRulesetInstance === null) return this.health.setOps(this.snapshotState());
    this.health.setOps(this.snapshotState(), true);
  }
}

function addressText(address: { host: string; port: number }): string {
  return address.host.includes(":")
    ? `[${address.host}]:${address.port}`
    : `${address.host}:${address.port}`;
}
