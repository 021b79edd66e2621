// `SWARM_DAEMON=true` on a manager: deploys the global worker service (one worker per node, see
// worker.ts), keeps it deployed, and relays addresses: every worker reports its node's
// whitelisted containers and load-balancer address; the daemon merges them (ledger.ts) and tells
// every worker the whole set whenever it changes. It writes no firewall rule itself.
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import type { Config } from "../config.js";
import type { Log } from "../log.js";
import { healthPublisher } from "../daemon.js";
import { computeRuleset } from "../policy.js";
import { createEngineClient, parseDockerHost, type EngineClient } from "../observe/engine-api.js";
import { EventWatcher } from "../observe/events.js";
import { stateDir } from "../ops/health.js";
import { DaemonDialer, hostOf } from "./channel.js";
import { SwarmApi, connectSwarm, type EngineNode, type EngineService } from "./swarm-api.js";
import { AllowedLedger } from "./ledger.js";
import type { AllowedMessage } from "./protocol.js";

export const workerServiceName = (instanceId: string) => `trafficjam_${instanceId}_worker`;
/** The key's secret: named after a digest of the key, so a kept key finds its own secret. */
const secretName = (instanceId: string, key: Buffer) =>
  `trafficjam_${instanceId}_key_${createHash("sha256").update(key).digest("hex").slice(0, 12)}`;
export const INSTANCE_LABEL = "trafficjam.instance";
/** Where the worker finds the key: the secret's file in the task. */
export const WORKER_KEY_FILE = "/run/secrets/trafficjam_key";
export const WORKER_STATE_DIR = "/var/lib/trafficjam";
const CLEAR_TIMEOUT_MS = 90_000;

export interface SwarmDaemonSettings {
  channelPort: number;
}

/** The variables a worker gets from the daemon: the daemon's own, so both act alike. */
export function workerEnv(config: Config, env: NodeJS.ProcessEnv, channelPort: number): string[] {
  const passed = [
    "NETWORK",
    "WHITELIST_FILTER",
    "INSTANCE_ID",
    "ALLOW_HOST_TRAFFIC",
    "DEBUG",
    "TZ",
    "POLL_INTERVAL",
    "DOCKER_HOST",
    "FIREWALL_BACKEND",
  ];
  return [
    ...passed.flatMap((name) => (env[name] === undefined ? [] : [`${name}=${env[name]}`])),
    `SWARM_CHANNEL_PORT=${channelPort}`,
  ];
}

/** The worker service's spec. Pure. */
export function workerServiceSpec(input: {
  instanceId: string;
  image: string;
  env: string[];
  secret: { id: string; name: string };
  hostNetworkId: string;
  dockerSocket: string | null;
  clear?: boolean;
}): Record<string, unknown> {
  const { instanceId } = input;
  const mounts: Array<Record<string, unknown>> = [
    // Propagation rslave: namespaces Docker creates after the worker started are seen too.
    {
      Type: "bind",
      Source: "/var/run/docker/netns",
      Target: "/var/run/docker/netns",
      BindOptions: { Propagation: "rslave" },
    },
    { Type: "volume", Source: `trafficjam_${instanceId}_state`, Target: WORKER_STATE_DIR },
  ];
  if (input.dockerSocket)
    mounts.unshift({ Type: "bind", Source: input.dockerSocket, Target: input.dockerSocket });
  const body = {
    Name: workerServiceName(instanceId),
    Labels: { [INSTANCE_LABEL]: instanceId, "trafficjam.role": "worker" },
    TaskTemplate: {
      ContainerSpec: {
        Image: input.image,
        Args: input.clear ? ["swarm-worker", "--clear"] : ["swarm-worker"],
        Env: input.env,
        Mounts: mounts,
        CapabilityAdd: ["CAP_NET_ADMIN", "CAP_SYS_ADMIN"],
        Secrets: [
          {
            SecretID: input.secret.id,
            SecretName: input.secret.name,
            File: { Name: "trafficjam_key", UID: "0", GID: "0", Mode: 0o400 },
          },
        ],
        StopGracePeriod: 10_000_000_000,
      },
      Networks: [{ Target: input.hostNetworkId }],
      RestartPolicy: input.clear
        ? { Condition: "none" }
        : { Condition: "any", Delay: 1_000_000_000 },
    },
    Mode: { Global: {} },
    // All nodes at once: a worker leaves its rules in force while it is replaced.
    UpdateConfig: { Parallelism: 0, FailureAction: "continue", Order: "stop-first" },
  };
  return body;
}

/** A short digest of what makes two specs different for the workers. */
const specDigest = (spec: Record<string, unknown>) =>
  createHash("sha256").update(JSON.stringify(spec)).digest("hex").slice(0, 16);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Our own container's ID: from the mounts Docker makes for it (its hostname is the host's with
 * host networking), else the hostname.
 */
function ownContainerId(): string {
  try {
    const found = /\/containers\/([0-9a-f]{64})\//.exec(
      readFileSync("/proc/self/mountinfo", "utf8"),
    );
    if (found) return found[1]!;
  } catch {
    // not Linux's procfs: the hostname below
  }
  return hostname();
}

/** The image to deploy: SWARM_IMAGE, or the daemon's own container's. */
async function workerImage(config: Config, client: EngineClient): Promise<string> {
  if (config.swarmImage) return config.swarmImage;
  const self = await client.inspectContainer(ownContainerId()).catch(() => null);
  const image = self?.Config.Image;
  if (!image)
    throw new Error(
      "SWARM_IMAGE is not set and the daemon does not run in a container whose image it could reuse: set SWARM_IMAGE",
    );
  return image;
}

/** The channel key: kept in the state folder, so a restarted daemon still knows it. */
async function channelKey(
  api: SwarmApi,
  instanceId: string,
  keyFile: string,
  log: Log,
): Promise<{ key: Buffer; secret: { id: string; name: string } }> {
  let key: Buffer | null;
  try {
    key = Buffer.from(readFileSync(keyFile, "utf8").trim(), "base64");
    if (key.length < 32) key = null;
  } catch {
    key = null;
  }
  if (key) {
    const name = secretName(instanceId, key);
    const found = await api.findSecret(name);
    if (found) return { key, secret: found };
  }
  // Secrets cannot be read back from the Engine: a new key, in a new secret, which the service
  // is then updated to (its workers restart once, keeping their rules in force meanwhile).
  key = randomBytes(32);
  const name = secretName(instanceId, key);
  const id = await api.createSecret(name, Buffer.from(key.toString("base64")), {
    [INSTANCE_LABEL]: instanceId,
  });
  mkdirSync(join(keyFile, ".."), { recursive: true });
  writeFileSync(keyFile, key.toString("base64"), { mode: 0o600 });
  log.info("swarm.key.created", "created the channel key secret", { secret: name });
  return { key, secret: { id, name } };
}

/** Runs until a signal; resolves with the exit code. */
export async function runSwarmDaemon(
  config: Config,
  settings: SwarmDaemonSettings,
  log: Log,
): Promise<number> {
  let stopping = false;
  const { client, api } = await connectSwarm(log, () => stopping);
  const info = await api.info();
  if (!info || info.LocalNodeState !== "active" || !info.ControlAvailable) {
    log.error("swarm.not-manager", "SWARM_DAEMON needs a Swarm manager node's Docker engine", {
      state: info?.LocalNodeState ?? "unknown",
    });
    client.close();
    return 2;
  }
  const service = workerServiceName(config.instanceId);

  const image = await workerImage(config, client);
  const keyFile = join(stateDir(process.env), `swarm-${config.instanceId}.key`);
  const { key, secret } = await channelKey(api, config.instanceId, keyFile, log);
  const hostNetwork = await client.inspectNetwork("host");
  if (!hostNetwork) throw new Error("the Engine has no host network");
  const endpoint = parseDockerHost(process.env);
  const spec = workerServiceSpec({
    instanceId: config.instanceId,
    image,
    env: workerEnv(config, process.env, settings.channelPort),
    secret,
    hostNetworkId: hostNetwork.Id,
    dockerSocket: endpoint.protocol === "unix" ? endpoint.socketPath : null,
  });
  const digest = specDigest(spec);
  (spec.Labels as Record<string, string>)["trafficjam.spec"] = digest;

  const health = healthPublisher(config, log);
  const idle = computeRuleset(null, { instanceId: config.instanceId, allowHostTraffic: true });

  /** Creates the service if missing, updates it if its spec is not ours. */
  const ensureService = async (): Promise<void> => {
    const found: EngineService | null = await api.inspectService(service);
    if (found === null) {
      const id = await api.createService(spec);
      log.info("swarm.service.created", "deployed the worker service", { service, id, image });
      return;
    }
    const labels = (found.Spec.Labels ?? {}) as Record<string, string>;
    if (labels["trafficjam.spec"] === digest) return;
    await api.updateService(found.ID, found.Version.Index, spec);
    log.info("swarm.service.updated", "updated the worker service to this daemon's settings", {
      service,
      image,
    });
  };

  // ----- the ledger and the channel
  let ledger: AllowedLedger | null = null;
  const ledgerFor = (networkId: string) => {
    if (ledger?.networkId !== networkId) ledger = new AllowedLedger(networkId);
    return ledger;
  };
  // The nodes the cluster's view shows on the network: the set is complete once each has a part.
  let viewHosts: Set<string> | null = null;
  let toldComplete = false;
  const isComplete = () => {
    if (ledger === null || viewHosts === null) return false;
    const hosts = ledger.hosts();
    return [...viewHosts].every((h) => hosts.has(h));
  };
  const current = (): AllowedMessage => ({
    type: "allowed",
    networkId: ledger?.networkId ?? "",
    entries: ledger?.entries() ?? [],
    complete: isComplete(),
  });
  const announce = (why: string) => {
    const message = current();
    toldComplete = message.complete;
    log.info("swarm.allowed.changed", "allowed set changed: telling every worker", {
      reason: why,
      allowed: message.entries.map((e) => `${e.ipv4} (${e.kind} on ${e.node.slice(0, 12)})`),
      complete: message.complete,
      workers: dialer.connections,
    });
    dialer.broadcast(message);
  };
  const dialer = new DaemonDialer(key, settings.channelPort, {
    current,
    onConnected: (node, address) => {
      log.info("swarm.worker.connected", "connected to the node's worker", { node, address });
      requestPrune(); // a node new to the view, perhaps
    },
    onReport: (report, node) => {
      if (report.node !== node) {
        log.warn("swarm.channel.refused", "a worker reported for another node: ignored", {
          node,
          reported: report.node,
        });
        return;
      }
      if (
        ledger !== null &&
        report.networkId !== ledger.networkId &&
        !knownNetwork.has(report.networkId)
      )
        return void requestPrune(); // perhaps a recreated network: learn its id first
      const changed = ledgerFor(report.networkId).report(report, Date.now());
      if (changed || isComplete() !== toldComplete)
        announce(`report from ${report.node.slice(0, 12)}`);
    },
    onRefused: (node, reason) =>
      log.warn("swarm.channel.refused", "a worker's answer was refused", { node, reason }),
    onLost: (node, reason, retryInMs) =>
      log.debug(
        "swarm.worker.disconnected",
        "no connection to the node's worker (its addresses stay allowed): dialling again",
        {
          node,
          reason,
          retryInMs,
        },
      ),
  });
  const knownNetwork = new Set<string>();

  // ----- pruning by the cluster's view, and the service kept deployed
  let pruning: Promise<void> | null = null;
  let again = false;
  const prune = async () => {
    const [view, nodes] = await Promise.all([api.clusterEndpoints(config.network), api.nodes()]);
    dialer.setNodes(new Map(nodes.map((n) => [n.ID, nodeAddress(n)])));
    if (view === null) return;
    knownNetwork.add(view.id);
    const l = ledgerFor(view.id);
    viewHosts = new Set(view.endpoints.map((e) => e.hostIp).filter(Boolean));
    const changed = l.prune(view.endpoints, new Set(nodes.map((n) => n.ID)), Date.now());
    if (changed || isComplete() !== toldComplete) announce("cluster view");
  };
  const requestPrune = () => {
    if (pruning) return void (again = true);
    pruning = (async () => {
      do {
        again = false;
        try {
          await ensureService();
          await prune();
          health.record({ ok: true, at: Date.now(), ruleset: idle, location: "swarm daemon" });
        } catch (error) {
          log.error("swarm.sync.failed", "keeping the worker service or the allowed set failed", {
            err: error,
          });
          health.record({ ok: false, at: Date.now(), error: (error as Error).message });
        }
      } while (again && !stopping);
    })().finally(() => (pruning = null));
  };

  await ensureService();
  requestPrune();
  const timer = setInterval(() => {
    requestPrune();
    dialer.keepalive();
  }, config.pollIntervalMs);
  const watcher = new EventWatcher(
    client,
    {
      onEvent: (event) => {
        if (event.Type === "service" && event.Actor.Attributes.name !== service) return;
        requestPrune();
      },
      onConnected: () => requestPrune(),
      onLost: () => undefined,
    },
    { type: ["service", "node", "network"] },
  );
  watcher.start();

  return new Promise<number>((resolve) => {
    const shutdown = async (clear: boolean) => {
      if (stopping) return;
      stopping = true;
      clearInterval(timer);
      watcher.stop();
      await pruning;
      dialer.close();
      let code = 0;
      if (clear) code = await clearEverywhere(api, config.instanceId, log);
      else log.info("daemon.stopping", "stopping: the workers keep enforcing the last allowed set");
      health.close();
      client.close();
      resolve(code);
    };
    process.on("SIGTERM", () => void shutdown(false));
    process.on("SIGINT", () => void shutdown(false));
    process.on("SIGUSR1", () => void shutdown(true));
  });
}

/** Where a node's worker listens: its Swarm address (a manager may list 0.0.0.0 there). */
function nodeAddress(node: EngineNode): string {
  const addr = node.Status.Addr;
  if (addr && addr !== "0.0.0.0") return addr;
  return node.ManagerStatus?.Addr ? hostOf(node.ManagerStatus.Addr) : "";
}

/** `trafficjam --clear` with SWARM_DAEMON=true, on a manager. */
export async function clearSwarm(instanceId: string, log: Log): Promise<number> {
  const client = createEngineClient(process.env);
  try {
    const info = await new SwarmApi(client).info();
    if (!info?.ControlAvailable) {
      log.error("swarm.not-manager", "SWARM_DAEMON needs a Swarm manager node's Docker engine", {
        state: info?.LocalNodeState ?? "unknown",
      });
      return 2;
    }
    return await clearEverywhere(new SwarmApi(client), instanceId, log);
  } finally {
    client.close();
  }
}

/**
 * Removes every node's rules, then the service: the service is updated to run
 * `swarm-worker --clear` once on every node (no restart), and removed once each node's task has
 * completed. Nodes that did not confirm within the time limit are named.
 */
async function clearEverywhere(api: SwarmApi, instanceId: string, log: Log): Promise<number> {
  const name = workerServiceName(instanceId);
  const found = await api.inspectService(name);
  if (found !== null) {
    const template = found.Spec.TaskTemplate as {
      ContainerSpec: Record<string, unknown>;
      RestartPolicy?: unknown;
      ForceUpdate?: number;
    };
    const spec = {
      ...found.Spec,
      TaskTemplate: {
        ...template,
        ContainerSpec: { ...template.ContainerSpec, Args: ["swarm-worker", "--clear"] },
        RestartPolicy: { Condition: "none" },
        ForceUpdate: (template.ForceUpdate ?? 0) + 1,
      },
      UpdateConfig: { Parallelism: 0, FailureAction: "continue", Order: "stop-first" },
    };
    await api.updateService(found.ID, found.Version.Index, spec);
    const deadline = Date.now() + CLEAR_TIMEOUT_MS;
    let pending: string[];
    for (;;) {
      const [tasks, nodes] = await Promise.all([api.tasks(found.ID), api.nodes()]);
      const ready = nodes.filter((n) => n.Status.State === "ready").map((n) => n.ID);
      const done = new Set(
        tasks
          .filter(
            (t) => t.Spec.ContainerSpec?.Args.includes("--clear") && t.Status.State === "complete",
          )
          .map((t) => t.NodeID),
      );
      pending = ready.filter((n) => !done.has(n));
      if (pending.length === 0 || Date.now() > deadline) break;
      await sleep(250);
    }
    await api.removeService(found.ID);
    if (pending.length > 0) {
      log.error(
        "swarm.clear.incomplete",
        "some nodes did not confirm that their rules are removed",
        { nodes: pending },
      );
    }
    log.info("swarm.service.removed", "removed the worker service", { service: name });
    if (pending.length > 0) {
      await removeSecrets(api, instanceId);
      return 1;
    }
  }
  await removeSecrets(api, instanceId);
  log.info("rules.cleared", "rules of this instance removed from every node", { service: name });
  return 0;
}

async function removeSecrets(api: SwarmApi, instanceId: string): Promise<void> {
  for (const s of await api.listSecrets(`${INSTANCE_LABEL}=${instanceId}`)) {
    // Still referenced by a service being removed: tried again briefly.
    for (let attempt = 0; attempt < 20; attempt++) {
      try {
        await api.removeSecret(s.id);
        break;
      } catch {
        await sleep(250);
      }
    }
  }
}
