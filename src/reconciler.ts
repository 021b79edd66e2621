// The only place with time in it: triggers (events, the resync timer, failures, startup) become
// passes of observe → policy → sync → verify, one at a time, bursts coalesced into one pass.
import type { Log } from "./log.js";
import type { Family, NetworkSnapshot, Ruleset } from "./model.js";
import type { FirewallBackend, SyncResult } from "./firewall/backend.js";
import type { FlowCutter } from "./host/flow-cutter.js";
import { computeRuleset, type PolicyOptions } from "./policy.js";
import { PassQueue } from "./pass-queue.js";

export interface ReconcilerDeps {
  instanceId: string;
  networkRef: string;
  allowHostTraffic: boolean;
  /** MODE and the blocked-attempt log's rules (see PolicyOptions); default: enforce, no log. */
  policy?: Pick<PolicyOptions, "mode" | "log">;
  pollIntervalMs: number;
  /**
   * fresh: read everything again (resync); otherwise what the Docker events may have changed.
   * kernelFresh: the rules may have changed under us (fresh, or nft monitor saw somebody's commit).
   */
  observe(fresh: boolean, kernelFresh: boolean): Promise<NetworkSnapshot | null>;
  backend: FirewallBackend;
  /** The kernel's tracked flows: what the rules forbid is cut (conntrack). */
  flows: FlowCutter;
  /**
   * What on the host makes the rules bypassed (br_netfilter switched off), read at every full
   * pass; empty: nothing. Each problem makes the daemon unhealthy while it lasts.
   */
  hostProblems?(ruleset: Ruleset): Promise<string[]>;
  log: Log;
  /** Called after every pass (e.g. to publish health); must not throw. */
  onPass?(outcome: PassOutcome): void;
}

export interface PassOutcome {
  ok: boolean;
  at: number;
  /** The desired ruleset the pass put (or found) in force; absent when the pass failed. */
  ruleset?: Ruleset;
  /** Where the rules are, e.g. "iptables-nft"; absent when the pass failed. */
  location?: string;
  /** Why the pass failed. */
  error?: string;
  /**
   * What is wrong although the rules are in force (tracked flows not cut yet, br_netfilter off):
   * the daemon is unhealthy until it is mended.
   */
  problems?: string[];
  /** The pass changed the kernel; `repaired`: to put back what another tool changed. */
  changed?: boolean;
  repaired?: boolean;
  /** From the Docker event that triggered the pass to the rules in force (rules.applied's). */
  eventToEnforcedMs?: number;
}

export class Reconciler {
  /** Triggers → passes, one at a time, bursts coalesced (see pass-queue.ts). */
  private readonly passes = new PassQueue((reasons, since) => this.pass(reasons, since));
  private resyncTimer: NodeJS.Timeout | null = null;
  private failures = 0;
  private applied: Ruleset | null = null;
  private appliedLocation: string | null = null;
  private networkMissingLogged = false;
  private bridgelessLogged = false;
  private whitelistedKey = "";
  /** The bridge (namespace|name) whose forbidden flows have been cut since it was first enforced. */
  private swept: string | null = null;
  /** Addresses whose allowance went but whose flows could not be deleted yet: tried every pass. */
  private readonly unrevoked = new Map<string, [Family, string]>();
  private flowFailures = 0;
  private flowRetry: NodeJS.Timeout | null = null;
  /** br_netfilter sysctls found off at the last check ("" when none). */
  private hostProblemKey = "";
  private hostProblemList: string[] = [];
  lastOutcome: PassOutcome | null = null;

  constructor(private readonly deps: ReconcilerDeps) {}

  /** Starts the periodic resync; the first pass is requested by the caller. */
  start(): void {
    this.resyncTimer = setInterval(() => this.request("resync"), this.deps.pollIntervalMs);
  }

  private get stopped(): boolean {
    return this.passes.halted;
  }

  /** Asks for a pass; many requests before it starts make one pass. */
  request(reason: string, eventTimeMs?: number): void {
    this.passes.request(reason, eventTimeMs);
  }

  /** Runs one pass now and reports whether it succeeded (used at startup). */
  async runOnce(reason: string): Promise<boolean> {
    await this.passes.runNow(reason);
    return this.lastOutcome?.ok ?? false;
  }

  /**
   * Stops passes for good, waits for the one in flight to end (however long: the Engine client and
   * the firewall tools have timeouts), then removes every rule of the instance. Going through the
   * same queue as the passes means no pass can put rules back after the clear.
   */
  async stopAndClear(): Promise<SyncResult> {
    this.halt();
    await this.passes.idle();
    return this.deps.backend.clear();
  }

  private halt(): void {
    this.passes.halt();
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    if (this.flowRetry) clearTimeout(this.flowRetry);
  }

  /** Stops triggering and waits (at most maxWaitMs) for a pass in flight. */
  async stop(maxWaitMs = 5000): Promise<void> {
    this.halt();
    // A pass stuck on a hung Docker must not hold up the exit; once Docker answers, it sees the
    // reconciler stopped and leaves the firewall alone. A pass stuck in a firewall tool instead
    // ends when the tool is killed (util/exec.ts timeout).
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.passes.idle(),
      new Promise((resolve) => (timer = setTimeout(resolve, maxWaitMs))),
    ]);
    clearTimeout(timer);
  }

  private async pass(reasons: string[], eventTimeMs: number | null): Promise<void> {
    const { log } = this.deps;
    const started = performance.now();
    const startedAt = Date.now();
    let enforcedAt: number | null = null;
    // Docker events (a port lookup tried again, a Swarm peer's news) take the fast path; anything else (startup,
    // resync, a failed pass retried) re-reads all.
    const fresh = !reasons.every((r) => /^(container|network|port|swarm|flows|rules):/.test(r));
    // Somebody else's commit (nft monitor): the kernel is read again, Docker need not be.
    const kernelFresh = fresh || reasons.includes("rules:changed");
    try {
      this.deps.backend.warm?.(kernelFresh); // the kernel is read while Docker answers
      const snapshot = await this.deps.observe(fresh, kernelFresh);
      // Where a slow pass spends its time: reading Docker and the host, or the firewall.
      const observeMs = Math.round((performance.now() - started) * 10) / 10;
      if (this.stopped) return; // stopped while Docker answered: leave the firewall alone
      this.noteNetwork(snapshot);
      const ruleset = computeRuleset(snapshot, {
        instanceId: this.deps.instanceId,
        allowHostTraffic: this.deps.allowHostTraffic,
        ...this.deps.policy,
      });
      this.noteWhitelist(snapshot, ruleset);
      // A port-bound allowance about to go has its flows deleted before the commit as well as
      // after: until the commit its guard keeps every other port's packets with that address
      // out, so no flow can be re-created in between, and after it no stale flow is left to
      // admit the address's next owner until the deletion runs.
      const early = await this.deleteFlows(ruleset, withdrawnBound(this.applied, ruleset));
      const result = await this.deps.backend.sync(ruleset, {
        fresh: kernelFresh,
        onEnforced: () => (enforcedAt = Date.now()),
      });
      const previous = this.applied;
      const previousLocation = this.appliedLocation;
      this.applied = ruleset;
      this.appliedLocation = result.location;
      // Revocations come from the kernel's own rules, so they hold across daemon restarts too.
      await this.dropFlows(ruleset, result.revoked, early);
      await this.sweepFlows(ruleset, snapshot?.members ?? []);
      const problems = [...this.flowProblems(), ...(await this.checkHost(ruleset, fresh))];
      const ms = Math.round((performance.now() - started) * 10) / 10;
      // Same desired rules in the same place as last time, yet the kernel had to change:
      // someone else changed it. (A move to another backend is not a repair.)
      const repair =
        result.changed &&
        previous !== null &&
        previousLocation === result.location &&
        JSON.stringify(previous) === JSON.stringify(ruleset);
      if (result.changed) {
        const fields = {
          reason: reasons.join(","),
          location: result.location,
          network: ruleset.networkName,
          bridge: ruleset.bridge,
          subnets: [...ruleset.families[4].subnets, ...ruleset.families[6].subnets],
          // Member ports bound to their own MAC and addresses.
          boundPorts: ruleset.ports.length,
          allowed: [...ruleset.families[4].allowedSources, ...ruleset.families[6].allowedSources],
          // Where each allowed address must come from; an address absent here is not bound.
          boundTo: Object.fromEntries(
            [...ruleset.families[4].portBindings, ...ruleset.families[6].portBindings].map((b) => [
              b.address,
              b.port,
            ]),
          ),
          differences: result.differences,
          ms,
          observeMs,
          // From the start of the pass to the commit: the rules were in force from then on.
          ...(enforcedAt !== null ? { enforcedMs: enforcedAt - startedAt } : {}),
          ...(eventTimeMs !== null && enforcedAt !== null
            ? { eventToEnforcedMs: enforcedAt - eventTimeMs }
            : {}),
        };
        if (repair)
          log.warn(
            "rules.repaired",
            "rules repaired: the kernel differed from the desired state",
            fields,
          );
        else log.info("rules.applied", "rules applied", fields);
      } else {
        // Said at info level when it is news: the first pass, or the first after a failure
        // (whose apply may have taken effect before its verification failed).
        const news = previous === null || this.failures > 0;
        log[news ? "info" : "debug"]("rules.verified", "rules verified", {
          reason: reasons.join(","),
          location: result.location,
          ms,
          observeMs,
        });
      }
      this.failures = 0;
      this.lastOutcome = {
        ok: true,
        at: Date.now(),
        ruleset,
        location: result.location,
        ...(problems.length > 0 ? { problems } : {}),
        changed: result.changed,
        repaired: repair,
        ...(eventTimeMs !== null && enforcedAt !== null
          ? { eventToEnforcedMs: enforcedAt - eventTimeMs }
          : {}),
      };
      this.deps.onPass?.(this.lastOutcome);
    } catch (error) {
      this.failures++;
      const retryMs = Math.min(this.deps.pollIntervalMs, 250 * 2 ** Math.min(this.failures, 6));
      log.error("reconcile.failed", "reconcile failed", {
        err: error,
        reason: reasons.join(","),
        retryMs,
      });
      this.lastOutcome = { ok: false, at: Date.now(), error: (error as Error).message };
      this.deps.onPass?.(this.lastOutcome);
      setTimeout(() => this.request("retry"), retryMs).unref();
    }
  }

  private noteNetwork(snapshot: NetworkSnapshot | null): void {
    const { log, networkRef } = this.deps;
    if (snapshot === null && !this.networkMissingLogged) {
      log.warn("network.missing", "network not found: waiting for it to be created", {
        network: networkRef,
      });
      this.networkMissingLogged = true;
    } else if (snapshot !== null && this.networkMissingLogged) {
      log.info("network.appeared", "network appeared: protecting it", {
        network: networkRef,
        id: snapshot.id,
      });
      this.networkMissingLogged = false;
    }
    const bridgeless = snapshot !== null && !snapshot.bridge;
    if (bridgeless && !this.bridgelessLogged) {
      log.error(
        "network.unprotectable",
        "the network has no Linux bridge on this host (not a bridge network): nothing can be enforced on it",
        { network: networkRef, id: snapshot.id },
      );
    }
    this.bridgelessLogged = bridgeless;
  }

  private noteWhitelist(snapshot: NetworkSnapshot | null, ruleset: Ruleset): void {
    const containers = (snapshot?.members ?? [])
      .filter((m) => m.whitelisted)
      .map((m) => ({
        name: m.name,
        ipv4: m.ipv4,
        ipv6: m.ipv6,
        port: m.port ?? "none found: bound to its addresses only",
      }));
    const key = JSON.stringify([
      containers,
      ruleset.families[4].subnets,
      ruleset.families[6].subnets,
    ]);
    if (key === this.whitelistedKey) return;
    this.whitelistedKey = key;
    this.deps.log.info(
      "whitelist.changed",
      containers.length === 0
        ? "no whitelisted container on the network"
        : "whitelisted containers",
      { network: ruleset.networkName, whitelisted: containers },
    );
  }

  /**
   * Deletes the tracked flows of each address; how many went, per address ("4/1.2.3.4"). One
   * that fails is kept, and tried again on every pass until it succeeds.
   */
  private async deleteFlows(
    ruleset: Ruleset,
    addresses: Array<[Family, string]>,
  ): Promise<Map<string, number>> {
    const deleted = new Map<string, number>();
    for (const [family, address] of addresses) {
      const key = `${family}/${address}`;
      try {
        deleted.set(key, await this.deps.flows.deleteFrom(ruleset, family, address));
        this.unrevoked.delete(key);
      } catch (error) {
        this.unrevoked.set(key, [family, address]);
        this.flowFailed(error, { address });
      }
    }
    return deleted;
  }

  /**
   * After a commit: deletes the flows of revoked addresses (and of those whose deletion failed
   * before), one log line per address.
   */
  private async dropFlows(
    ruleset: Ruleset,
    revoked: Array<[Family, string]>,
    early: Map<string, number>,
  ): Promise<void> {
    const still = new Set(
      ([4, 6] as const).flatMap((f) => ruleset.families[f].allowedSources.map((a) => `${f}/${a}`)),
    );
    // Allowed again meanwhile (a proxy restarted on its address): nothing to cut any more.
    for (const key of this.unrevoked.keys()) if (still.has(key)) this.unrevoked.delete(key);
    const due = new Map<string, [Family, string]>(this.unrevoked);
    for (const [family, address] of revoked) due.set(`${family}/${address}`, [family, address]);
    const late = await this.deleteFlows(ruleset, [...due.values()]);
    for (const key of new Set([...early.keys(), ...late.keys()])) {
      const flows = (early.get(key) ?? 0) + (late.get(key) ?? 0);
      const address = key.slice(key.indexOf("/") + 1);
      this.deps.log.info("allowance.revoked", "allowance revoked: tracked flows deleted", {
        address,
        flows,
      });
    }
  }

  /**
   * The first time a bridge is enforced (the daemon's first pass, a network created or
   * recreated), flows opened before the rules were in force are cut where the rules forbid them:
   * they would otherwise live on as replies. Tried again on every pass until it succeeds.
   */
  private async sweepFlows(ruleset: Ruleset, members: NetworkSnapshot["members"]): Promise<void> {
    const key = ruleset.bridge === null ? null : `${ruleset.netns ?? ""}|${ruleset.bridge}`;
    // Audit mode enforces nothing, so it cuts nothing: the first pass in enforce mode does.
    if (ruleset.mode === "audit") this.swept = null;
    if (key === null || key === this.swept || ruleset.mode === "audit") return;
    try {
      const { pairs, flows } = await this.deps.flows.sweep(ruleset, members);
      this.swept = key;
      const log = pairs.length > 0 ? this.deps.log.warn : this.deps.log.info;
      log("flows.cut", "tracked flows the rules forbid, opened before they were in force, cut", {
        network: ruleset.networkName,
        flows,
        pairs: pairs.map((p) => `${p.source} → ${p.destination} (${p.why})`),
      });
    } catch (error) {
      this.flowFailed(error, { network: ruleset.networkName, sweep: true });
    }
  }

  /** Logs a failed deletion and makes sure a pass tries again soon. */
  private flowFailed(error: unknown, fields: Record<string, unknown>): void {
    this.flowFailures++;
    const retryMs = Math.min(this.deps.pollIntervalMs, 250 * 2 ** Math.min(this.flowFailures, 6));
    this.deps.log.error("flows.delete.failed", "could not delete tracked flows: trying again", {
      err: error,
      ...fields,
      retryMs,
    });
    if (this.flowRetry || this.stopped) return;
    this.flowRetry = setTimeout(() => {
      this.flowRetry = null;
      this.request("flows:retry");
    }, retryMs);
    this.flowRetry.unref();
  }

  /** What is still to cut, as health problems; resets the backoff once nothing is. */
  private flowProblems(): string[] {
    const problems: string[] = [];
    const unswept =
      this.applied?.bridge != null &&
      this.applied.mode !== "audit" &&
      this.swept !== `${this.applied.netns ?? ""}|${this.applied.bridge}`;
    if (unswept)
      problems.push("tracked flows opened before the rules were in force are not cut yet");
    if (this.unrevoked.size > 0)
      problems.push(
        `tracked flows of revoked addresses not deleted yet: ${[...this.unrevoked.values()].map(([, a]) => a).join(", ")}`,
      );
    if (problems.length === 0) this.flowFailures = 0;
    return problems;
  }

  /**
   * The host's problems (br_netfilter), read at full passes; logged when they appear, change or
   * go, and reported on every pass while they last.
   */
  private async checkHost(ruleset: Ruleset, fresh: boolean): Promise<string[]> {
    if (!this.deps.hostProblems || (!fresh && this.hostProblemKey === ""))
      return this.hostProblemList;
    let problems: string[];
    try {
      problems = await this.deps.hostProblems(ruleset);
    } catch (error) {
      problems = [`cannot read the br_netfilter sysctls: ${(error as Error).message}`];
    }
    const key = problems.join("\n");
    if (key !== this.hostProblemKey) {
      if (problems.length > 0)
        this.deps.log.error("host.bridge-netfilter.off", "bridged traffic bypasses the rules", {
          problems,
        });
      else
        this.deps.log.info("host.bridge-netfilter.on", "bridged traffic reaches the rules again");
    }
    this.hostProblemKey = key;
    this.hostProblemList = problems;
    return problems;
  }
}

/** Addresses bound to a port in the last applied ruleset that the next one no longer allows. */
export function withdrawnBound(previous: Ruleset | null, next: Ruleset): Array<[Family, string]> {
  if (previous === null) return [];
  return ([4, 6] as const).flatMap((f) => {
    const still = new Set(next.families[f].allowedSources);
    return previous.families[f].portBindings
      .filter((b) => !still.has(b.address))
      .map((b): [Family, string] => [f, b.address]);
  });
}
