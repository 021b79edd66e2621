// Opt-in Prometheus metrics (METRICS_ADDRESS), with prom-client. Loaded only when the variable is
// set: without it nothing listens and this module (and prom-client) is never read. Served on
// GET /metrics at that one address, nothing else.
import { createServer, type Server } from "node:http";
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { MetricsAddress } from "../config.js";
import { DROP_KINDS, type DropKind, type Mode } from "../drops.js";
import type { PassOutcome } from "../reconciler.js";
import type { DropCounts } from "./counters.js";

export interface MetricsOptions {
  instanceId: string;
  network: string;
  mode: Mode;
  /** The kernel's drop counters now; null: no rules in force yet. */
  readDrops(): Promise<DropCounts | null>;
  /** What `trafficjam healthcheck` would say now. */
  healthy(): boolean;
}

/** Seconds, from a Docker event to the rules in force (bench/run.ts measures ~10–40 ms). */
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

export class Metrics {
  readonly registry = new Registry();
  private readonly passes: Counter<"instance_id" | "outcome">;
  private readonly repairs: Counter<"instance_id">;
  private readonly attempts: Counter<"instance_id" | "network" | "kind">;
  private readonly latency: Histogram<"instance_id">;
  private readonly whitelisted: Gauge<"instance_id" | "network">;
  private server: Server | null = null;
  /** The kernel's counters at the last scrape: a lower value means the rules were rewritten. */
  private lastDrops: DropCounts | null = null;

  constructor(private readonly options: MetricsOptions) {
    const registers = [this.registry];
    const id = { instance_id: options.instanceId };
    const net = { ...id, network: options.network };
    this.passes = new Counter({
      name: "trafficjam_passes_total",
      help: "Passes of the reconciler (observe, policy, converge), by outcome.",
      labelNames: ["instance_id", "outcome"],
      registers,
    });
    this.repairs = new Counter({
      name: "trafficjam_repairs_total",
      help: "Passes that put back rules another tool changed (rules.repaired).",
      labelNames: ["instance_id"],
      registers,
    });
    this.attempts = new Counter({
      name: "trafficjam_blocked_attempts_total",
      help: "New blocked attempts (in audit mode: attempts that would be blocked), by kind; reported or not.",
      labelNames: ["instance_id", "network", "kind"],
      registers,
    });
    this.latency = new Histogram({
      name: "trafficjam_event_to_enforced_seconds",
      help: "From a Docker event to the rules it changes in force in the kernel.",
      labelNames: ["instance_id"],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.whitelisted = new Gauge({
      name: "trafficjam_whitelisted_containers",
      help: "Whitelisted containers on the network, as of the last pass.",
      labelNames: ["instance_id", "network"],
      registers,
    });
    const drops = new Counter({
      name: "trafficjam_dropped_packets_total",
      help: "Packets the rules dropped (in audit mode: would have dropped), by kind, read from the kernel's counters at each scrape.",
      labelNames: ["instance_id", "network", "kind"],
      registers,
      collect: async () => {
        const now = await options.readDrops().catch(() => null);
        if (!now) return;
        for (const kind of DROP_KINDS) {
          const last = this.lastDrops?.[kind] ?? 0;
          // The kernel's counters start again at zero when a chain or table is written anew.
          const delta = now[kind] >= last ? now[kind] - last : now[kind];
          drops.inc({ ...net, kind }, delta);
        }
        this.lastDrops = now;
      },
    });
    new Gauge({
      name: "trafficjam_healthy",
      help: "1 while `trafficjam healthcheck` would say healthy, else 0.",
      labelNames: ["instance_id"],
      registers,
      collect() {
        this.set(id, options.healthy() ? 1 : 0);
      },
    });
    new Gauge({
      name: "trafficjam_audit_mode",
      help: "1 in MODE=audit (nothing is dropped), 0 in enforce mode.",
      labelNames: ["instance_id"],
      registers,
    }).set(id, options.mode === "audit" ? 1 : 0);
    for (const kind of DROP_KINDS) {
      drops.inc({ ...net, kind }, 0);
      this.attempts.inc({ ...net, kind }, 0);
    }
    for (const outcome of ["ok", "failed"]) this.passes.inc({ ...id, outcome }, 0);
    this.repairs.inc(id, 0);
  }

  passed(outcome: PassOutcome, whitelisted: number): void {
    const id = { instance_id: this.options.instanceId };
    this.passes.inc({ ...id, outcome: outcome.ok ? "ok" : "failed" });
    if (outcome.repaired) this.repairs.inc(id);
    if (outcome.eventToEnforcedMs !== undefined)
      this.latency.observe(id, Math.max(0, outcome.eventToEnforcedMs) / 1000);
    if (outcome.ok) this.whitelisted.set({ ...id, network: this.options.network }, whitelisted);
  }

  attempt(kind: DropKind): void {
    const { instanceId, network } = this.options;
    this.attempts.inc({ instance_id: instanceId, network, kind });
  }

  /** Serves GET /metrics at `address`; resolves once listening. */
  listen(address: MetricsAddress): Promise<void> {
    const server = createServer((request, response) => {
      const path = (request.url ?? "").split("?")[0];
      if (request.method !== "GET" || path !== "/metrics") {
        response.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
        return;
      }
      this.registry.metrics().then(
        (text) => response.writeHead(200, { "content-type": this.registry.contentType }).end(text),
        (error: unknown) =>
          response.writeHead(500, { "content-type": "text/plain" }).end(`${String(error)}\n`),
      );
    });
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(address.port, address.host, () => {
        server.off("error", reject);
        resolve();
      });
    });
  }

  close(): void {
    this.server?.close();
    this.server = null;
  }
}
