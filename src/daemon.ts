// `trafficjam`: wires observation (Docker and the host), the reconciler and the firewall, and the
// signals. Nothing is decided here.
import type { Config } from "./config.js";
import type { Log } from "./log.js";
import type { NetworkSnapshot, Ruleset } from "./model.js";
import { createEngineClient, type EngineClient } from "./observe/engine-api.js";
import { Observer, type ObserverOptions } from "./observe/index.js";
import { EventWatcher, type DockerEvent } from "./observe/events.js";
import { eventFilters } from "./observe/filter-events.js";
import {
  BridgeNetfilterError,
  bridgeNetfilterOff,
  ensureBridgeNetfilter,
} from "./host/bridge-netfilter.js";
import { NftChangeMonitor } from "./host/nft-monitor.js";
import { ConntrackFlowCutter } from "./host/flow-cutter.js";
import { localHost, type Host } from "./host/host.js";
import { createBackend, type SelectingOptions } from "./firewall/index.js";
import type { FirewallBackend } from "./firewall/backend.js";
import { Reconciler, type PassOutcome } from "./reconciler.js";
import { HealthPublisher, stateDir, statePath, type HealthState } from "./ops/health.js";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** When the containers an event named are read again (see Observer.noteEvent). */
const RECHECK_AFTER_MS = [250, 1000];

export async function waitForDocker(
  client: EngineClient,
  log: Log,
  isStopping: () => boolean,
): Promise<void> {
  for (let attempt = 0; !isStopping(); attempt++) {
    try {
      await client.ping();
      // The version is only logged, once known, while the first pass goes on: a socket proxy
      // that denies it must not stop the daemon, nor delay the rules.
      void client
        .version()
        .then(
          (v) => v.Version,
          () => "unknown (not allowed by the endpoint?)",
        )
        .then((version) =>
          log.info("docker.connected", "connected to Docker", {
            endpoint: client.describe(),
            version,
          }),
        );
      return;
    } catch (error) {
      const retryMs = Math.min(5000, 200 * 2 ** attempt);
      log.warn("docker.unreachable", "cannot reach Docker yet", {
        endpoint: client.describe(),
        err: error,
        retryMs,
      });
      await sleep(retryMs);
    }
  }
}

/** The state file `trafficjam healthcheck` reads, published after every pass. */
export function healthPublisher(config: Config, log: Log): HealthPublisher {
  return new HealthPublisher(
    statePath(stateDir(process.env), config.instanceId),
    {
      instanceId: config.instanceId,
      firewallBackend: config.firewallBackend,
      pollIntervalMs: config.pollIntervalMs,
    },
    (err) => log.warn("health.state.unwritable", "cannot write the health state file", { err }),
  );
}

/** Said once at the given level, then at debug level. */
export function onceThenDebug(log: Log, level: "info" | "warn"): Log["info"] {
  let said = false;
  return (event, msg, fields) => {
    log[said ? "debug" : level](event, msg, fields);
    said = true;
  };
}

/**
 * What a Swarm worker (swarm/worker.ts) changes in the daemon: where the rules go, what the
 * network is on its node, and what it adds once the first pass is done. On one host: nothing.
 */
export interface DaemonVariant {
  /** The backend, given the options the daemon wires (logs); default: FIREWALL_BACKEND's. */
  backend?(options: SelectingOptions): FirewallBackend;
  /** Skip the host's br_netfilter sysctls (the worker sets its namespace's instead). */
  ownSysctls?: false;
  /** Watch netfilter with `nft monitor` (our own namespace's): default true. */
  monitor?: boolean;
  observer?: Pick<ObserverOptions, "bridgeOf" | "sandboxOf">;
  /** Completes a pass's snapshot (null: nothing to enforce here); `fresh`: a full pass. */
  /** fresh: a full pass (read Docker again); kernelFresh: the rules may have changed under us. */
  refine?(
    snapshot: NetworkSnapshot | null,
    fresh: boolean,
    kernelFresh: boolean,
  ): Promise<NetworkSnapshot | null>;
  /**
   * What makes the rules bypassed in the rules' namespace, read at every full pass; default: the
   * br_netfilter sysctls there.
   */
  hostProblems?(ruleset: Ruleset): Promise<string[]>;
  /** After every pass, with its outcome (as the health state gets it); must not throw. */
  passed?(outcome: PassOutcome): void;
  /** After SIGUSR1 removed the instance's rules: remove what the variant added. */
  cleared?(): Promise<void>;
  /** Docker is known to answer already (the variant waited for it). */
  dockerReady?: boolean;
  /** Every Docker event, before the observer's own filtering (a worker's view of its node). */
  event?(event: DockerEvent): void;
  /** Once the first pass is done: `request` asks for a pass. */
  started?(request: (reason: string) => void): void;
  /** The daemon is stopping (cleared: after its rules were removed). */
  stopping?(): void;
  /**
   * The operations side (ops/runtime.ts: the blocked-attempt log, MODE, metrics, `status`): the
   * daemon on one host and a Swarm worker have it.
   */
  operations?: boolean;
  /** Once, at start: reads what the daemon publishes for `status` (the state file's content). */
  state?(read: () => HealthState): void;
}

/** Runs until a signal; resolves with the exit code. */
export async function runDaemon(
  config: Config,
  log: Log,
  variant: DaemonVariant = {},
): Promise<number> {
  const client = createEngineClient(process.env);
  const host: Host = localHost;
  // For `trafficjam healthcheck` (see ops/health.ts); removed on exit.
  const health = healthPublisher(config, log);
  variant.state?.(() => health.current);
  const ops = variant.operations
    ? new (await import("./ops/runtime.js")).Operations(config, log, host, health)
    : null;
  /** The mode of the rules in force, read by the first pass beside Docker's answers. */
  let opsReady: Promise<void> | undefined;
  if (variant.ownSysctls !== false) {
    const bridge = await ensureBridgeNetfilter();
    if (bridge.changed.length > 0)
      log.info("host.sysctls.enabled", "enabled br_netfilter sysctls", { sysctls: bridge.changed });
  }

  const monitorWarn = onceThenDebug(log, "warn");
  const monitor = new NftChangeMonitor((reason) =>
    monitorWarn(
      "host.monitor.unavailable",
      "nft monitor unavailable: every resync re-reads the rules (more CPU)",
      { reason },
    ),
  );
  const staleView = onceThenDebug(log, "info");
  const useMonitor = variant.monitor !== false;
  const backendOptions: SelectingOptions = {
    host,
    monitor: useMonitor ? monitor : null,
    onChoice: (choice) =>
      log.info("backend.chosen", `firewall backend: ${choice.kind}`, { ...choice }),
    onStaleView: (error) =>
      staleView(
        "rules.view.stale",
        "the rules changed under the last read-back: planning again from a fresh read",
        { err: error },
      ),
  };
  const backend =
    variant.backend?.(backendOptions) ??
    createBackend(config.firewallBackend, config.instanceId, backendOptions);

  const portWarn = onceThenDebug(log, "warn");
  const gatewayWarn = onceThenDebug(log, "warn");
  const observer = new Observer(client, {
    host,
    network: config.network,
    whitelist: config.whitelistFilter,
    onPortUnknown: (member, reason) => {
      ops?.portUnknown(member, reason);
      portWarn(
        "port.unbound",
        "cannot find the bridge port of a member: its port is not bound to its MAC and " +
          "addresses, so it can forge sources and ARP claims nobody else holds, and a " +
          "whitelisted member's allowance is bound to its addresses only (a backend with " +
          "CAP_NET_RAW forging them gets through). In the image, mount Docker's netns folder " +
          "read-only at /run/netns (-v /var/run/docker/netns:/run/netns:ro,rslave); run the " +
          "host command as root. See docs/troubleshooting.md",
        { container: member.name, whitelisted: member.whitelisted, reason },
      );
    },
    onPortRetry: (member, reason, retryInMs) => {
      log.debug("port.retry", "bridge port not found yet: trying again", {
        container: member.name,
        reason,
        retryInMs,
      });
      setTimeout(() => reconciler.request("port:retry"), retryInMs).unref();
    },
    onPortsLearned: () => reconciler.request("port:learned"),
    onGatewayUnknown: (bridge, reason) =>
      gatewayWarn(
        "gateway.unknown",
        "cannot read the bridge's own MAC and addresses: claims of the gateway's identity are not refused",
        { bridge, reason },
      ),
    ...variant.observer,
  });

  const reconciler = new Reconciler({
    instanceId: config.instanceId,
    networkRef: config.network,
    allowHostTraffic: config.allowHostTraffic,
    policy: ops?.policy,
    pollIntervalMs: config.pollIntervalMs,
    backend,
    flows: new ConntrackFlowCutter(host),
    hostProblems:
      variant.hostProblems ??
      (async (ruleset) => {
        const off = await bridgeNetfilterOff(host.in(ruleset.netns));
        return off.length > 0 ? [new BridgeNetfilterError(off).message] : [];
      }),
    log,
    onPass: (outcome) => {
      ops?.passed(outcome);
      health.record(outcome);
      variant.passed?.(outcome);
    },
    observe: async (fresh, kernelFresh) => {
      opsReady ??= ops?.beforeFirstPass();
      const snapshot = await observer.observe(fresh);
      const refined = variant.refine
        ? await variant.refine(snapshot, fresh, kernelFresh)
        : snapshot;
      await opsReady; // before the first pass changes them
      ops?.observed(refined);
      return refined;
    },
  });

  const watcher = new EventWatcher(
    client,
    {
      onEvent: (event) => {
        variant.event?.(event);
        const effect = observer.noteEvent(event);
        if (effect.kind === "none") return;
        log.debug("docker.event", "docker event", {
          type: event.Type,
          action: event.Action,
          actor: event.Actor.ID,
        });
        const timeMs = event.timeNano ? Math.floor(event.timeNano / 1e6) : undefined;
        reconciler.request(`${event.Type}:${event.Action}`, timeMs);
        if (effect.kind !== "containers") return;
        // The Engine may log the event before its container list shows the change: read the
        // containers again shortly after, so a stale answer costs a fraction of a second, not
        // a POLL_INTERVAL.
        for (const delayMs of RECHECK_AFTER_MS)
          setTimeout(() => {
            observer.recheck(effect.ids);
            reconciler.request("container:recheck");
          }, delayMs).unref();
      },
      onConnected: (reconnect) => {
        if (reconnect)
          log.info("docker.events.reconnected", "Docker event stream reconnected: resyncing");
        reconciler.request(reconnect ? "docker-reconnected" : "events-connected");
      },
      onLost: (error, retryInMs) =>
        log.warn("docker.events.lost", "Docker event stream lost: reconnecting", {
          err: error ?? undefined,
          retryInMs,
        }),
      onMalformed: (error) =>
        log.debug("docker.events.malformed", "skipped a line of the event stream", { err: error }),
    },
    eventFilters(config.whitelistFilter.key),
  );

  let stopping = false;
  let resolveExit: (code: number) => void = () => undefined;
  const exited = new Promise<number>((resolve) => (resolveExit = resolve));
  const shutdown = async (clear: boolean) => {
    if (stopping) return;
    stopping = true;
    watcher.stop();
    variant.stopping?.();
    if (!clear) {
      await reconciler.stop();
      finish();
      log.info("daemon.stopping", "stopping: rules stay in force");
      resolveExit(0);
      return;
    }
    try {
      // Through the reconciler: after the pass in flight, never before, and none after.
      const result = await reconciler.stopAndClear();
      await variant.cleared?.();
      finish();
      log.info("rules.cleared", "SIGUSR1: rules of this instance removed", {
        removed: result.differences,
      });
      resolveExit(0);
    } catch (error) {
      finish();
      log.error("rules.clear.failed", "SIGUSR1: clearing the rules failed", { err: error });
      resolveExit(1);
    }
  };
  const finish = () => {
    ops?.stop();
    monitor.stop();
    health.close();
    client.close();
  };
  // A change somebody else made to the rules (nft monitor names who commits): repaired now.
  monitor.onChange(() => reconciler.request("rules:changed"));
  process.on("SIGTERM", () => void shutdown(false));
  process.on("SIGINT", () => void shutdown(false));
  process.on("SIGUSR1", () => void shutdown(true));

  if (!variant.dockerReady) await waitForDocker(client, log, () => stopping);
  if (stopping) return exited;
  // Rules first: the initial pass runs before anything else, then events and the timer.
  await reconciler.runOnce("startup");
  if (!stopping) {
    watcher.start();
    reconciler.start();
    // Only resyncs use it, and a watcher needs a moment to be trusted: not before the rules.
    if (useMonitor) monitor.start();
    variant.started?.((reason) => reconciler.request(reason));
    void ops?.started();
  }
  return exited;
}
