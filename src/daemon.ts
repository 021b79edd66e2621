// Wires the pieces together for `trafficjam`: Docker → reconciler → firewall, plus signals.
import type { Config } from "./config.js";
import type { Logger } from "./log.js";
import { createDockerClient, describeDockerEndpoint, type Docker } from "./docker/client.js";
import { NetworkObserver } from "./docker/snapshot.js";
import { EventWatcher, type DockerEvent } from "./docker/events.js";
import { ensureBridgeNetfilter } from "./bridge-netfilter.js";
import { createBackend } from "./firewall/index.js";
import { NftChangeMonitor } from "./firewall/nft-monitor.js";
import { deleteFlowsFrom } from "./conntrack.js";
import { Reconciler } from "./reconciler.js";
import { HealthPublisher, stateDir, statePath } from "./health.js";
import { BridgePortFinder, hostBridgePortDeps, type SandboxInfo } from "./bridge-ports.js";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitForDocker(
  docker: Docker,
  log: Logger,
  isStopping: () => boolean,
): Promise<void> {
  for (let attempt = 0; !isStopping(); attempt++) {
    try {
      await docker.ping();
      // The version is only logged: a socket proxy that denies it must not stop the daemon.
      const version = await docker.version().then(
        (v) => v.Version,
        () => "unknown (not allowed by the endpoint?)",
      );
      log.info({ endpoint: describeDockerEndpoint(), version }, "connected to Docker");
      return;
    } catch (error) {
      const retryMs = Math.min(5000, 200 * 2 ** attempt);
      log.warn(
        { endpoint: describeDockerEndpoint(), err: error, retryMs },
        "cannot reach Docker yet",
      );
      await sleep(retryMs);
    }
  }
}

/** Events that may change the network's members, whitelist or existence. */
function isRelevant(event: DockerEvent, config: Config, networkId: () => string | null): boolean {
  if (event.Type !== "network") return true;
  const id = event.Actor?.ID ?? "";
  const name = event.Actor?.Attributes?.name ?? "";
  return id === networkId() || name === config.network || id.startsWith(config.network);
}

/** Runs until a signal; resolves with the exit code. */
export async function runDaemon(config: Config, log: Logger): Promise<number> {
  const docker = createDockerClient();
  const bridge = await ensureBridgeNetfilter();
  if (bridge.changed.length > 0)
    log.info({ sysctls: bridge.changed }, "enabled br_netfilter sysctls");

  let monitorWarned = false;
  const monitor = new NftChangeMonitor((reason) => {
    if (monitorWarned) return;
    monitorWarned = true;
    log.warn({ reason }, "nft monitor unavailable: every resync re-reads the rules (more CPU)");
  });
  monitor.start();
  let staleWarned = false;
  const backend = createBackend(config.firewallBackend, config.instanceId, {
    monitor,
    onChoice: (choice) => log.info(choice, `firewall backend: ${choice.kind}`),
    // Said once at info level (the pass is redone from a fresh read), then at debug level.
    onStaleView: (error) => {
      log[staleWarned ? "debug" : "info"](
        { err: error },
        "the rules changed under the last read-back: planning again from a fresh read",
      );
      staleWarned = true;
    },
  });

  let networkId: string | null = null;
  // Containers that died lose their allowance and their port's binding now, not when Docker
  // gets round to disconnecting them: their address may be handed out again right after.
  const dead = new Set<string>();
  const observer = new NetworkObserver(docker, config.network, config.whitelistFilter);
  const inspectSandbox = async (id: string): Promise<SandboxInfo | null> => {
    try {
      const c = await docker.getContainer(id).inspect();
      return {
        running: c.State.Running,
        pid: c.State.Pid,
        sandboxKey: c.NetworkSettings.SandboxKey ?? "",
      };
    } catch (error) {
      if ((error as { statusCode?: number }).statusCode === 404) return null;
      throw error;
    }
  };
  let fallbackWarned = false;
  const ports = new BridgePortFinder(hostBridgePortDeps(inspectSandbox), (member, reason) => {
    const fields = { container: member.name, whitelisted: member.whitelisted, reason };
    if (fallbackWarned) {
      log.info(fields, "bridge port not found: this member's packets are bound to nothing");
      return;
    }
    fallbackWarned = true;
    log.warn(
      fields,
      "cannot find the bridge port of a member: its port is not bound to its MAC and addresses, " +
        "so it can forge sources and ARP claims nobody else holds, and a whitelisted member's " +
        "allowance is bound to its addresses only (a backend with CAP_NET_RAW forging them gets " +
        "through). In the image, mount Docker's netns folder read-only at /run/netns " +
        "(-v /var/run/docker/netns:/run/netns:ro,rslave); run the host command as root. " +
        "See the README",
    );
  });
  let stopping = false;
  // For `trafficjam healthcheck` (see health.ts); removed on exit.
  const health = new HealthPublisher(
    statePath(stateDir(process.env), config.instanceId),
    {
      instanceId: config.instanceId,
      firewallBackend: config.firewallBackend,
      pollIntervalMs: config.pollIntervalMs,
    },
    (err) => log.warn({ err }, "cannot write the health state file"),
  );

  const reconciler = new Reconciler({
    instanceId: config.instanceId,
    networkRef: config.network,
    allowHostTraffic: config.allowHostTraffic,
    pollIntervalMs: config.pollIntervalMs,
    backend,
    deleteFlowsFrom,
    log,
    onPass: (outcome) => health.record(outcome),
    observe: async (fresh) => {
      const snapshot = await observer.observe(fresh);
      networkId = snapshot?.id ?? null;
      if (!snapshot) return snapshot;
      // Once Docker no longer lists a dead container as a member, it needs no tombstone.
      const listed = new Set(snapshot.members.map((m) => m.id));
      for (const id of dead) if (!listed.has(id)) dead.delete(id);
      const alive = snapshot.members.filter((m) => !dead.has(m.id));
      return { ...snapshot, members: await ports.attach(alive, snapshot.bridge ?? null) };
    },
  });

  let resolveExit: (code: number) => void = () => undefined;
  const exited = new Promise<number>((resolve) => (resolveExit = resolve));
  const watcher = new EventWatcher(docker, {
    onEvent: (event) => {
      if (!isRelevant(event, config, () => networkId)) return;
      log.debug({ type: event.Type, action: event.Action, actor: event.Actor?.ID }, "docker event");
      const id = event.Actor?.ID ?? "";
      if (event.Type === "container" && event.Action === "die") dead.add(id);
      if (event.Type === "container" && (event.Action === "start" || event.Action === "destroy"))
        dead.delete(id);
      const timeMs = event.timeNano ? Math.floor(event.timeNano / 1e6) : undefined;
      reconciler.request(`${event.Type}:${event.Action}`, timeMs);
    },
    onConnected: (reconnect) => {
      if (reconnect) log.info("Docker event stream reconnected: resyncing");
      reconciler.request(reconnect ? "docker-reconnected" : "events-connected");
    },
    onLost: (error, retryInMs) =>
      log.warn({ err: error ?? undefined, retryInMs }, "Docker event stream lost: reconnecting"),
  });

  const shutdown = async (clear: boolean) => {
    if (stopping) return;
    stopping = true;
    watcher.stop();
    await reconciler.stop();
    monitor.stop();
    health.close();
    if (!clear) {
      log.info("stopping: rules stay in force");
      resolveExit(0);
      return;
    }
    try {
      const result = await backend.clear();
      log.info({ removed: result.differences }, "SIGUSR1: rules of this instance removed");
      resolveExit(0);
    } catch (error) {
      log.error({ err: error }, "SIGUSR1: clearing the rules failed");
      resolveExit(1);
    }
  };
  process.on("SIGTERM", () => void shutdown(false));
  process.on("SIGINT", () => void shutdown(false));
  process.on("SIGUSR1", () => void shutdown(true));

  await waitForDocker(docker, log, () => stopping);
  if (stopping) return exited;
  // Rules first: the initial pass runs before anything else, then events and the timer.
  await reconciler.runOnce("startup");
  if (!stopping) {
    watcher.start();
    reconciler.start();
  }
  return exited;
}

export async function runClear(instanceId: string, log: Logger): Promise<number> {
  const result = await createBackend("auto", instanceId).clear();
  log.info(
    { removed: result.differences },
    result.changed ? "rules of this instance removed" : "nothing of this instance was installed",
  );
  return 0;
}
