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
import { SWARM_DAEMON_LOCATION, stateDir } from "../ops/health.js";
import { PassQueue } from "../pass-queue.js";
import { DaemonDialer, hostOf } from "./channel.js";
import {
  SwarmApi,
  connectSwarm,
  type EngineNode,
  type EngineService,
  type EngineTask,
} from "./swarm-api.js";
import { AllowedLedger } from "./ledger.js";
import type { AllowedMessage, NodeStatus, Report } from "./protocol.js";
import type { SwarmNodeState } from "../ops/state.js";
import { checkReport, type ReportContext, type ScheduledTask } from "./report-check.js";
import { LogRate } from "./rate-limit.js";
import {
  generateSigningKeys,
  keysFromPem,
  privateKeyPem,
  publicKeyOf,
  signBody,
  verifyMessage,
  type SigningKeys,
} from "./signing.js";

export const workerServiceName = (instanceId: string) => `trafficjam_${instanceId}_worker`;
/** The key's secret: named after a digest of the key, so a kept key finds its own secret. */
const secretName = (instanceId: string, key: Buffer) =>
  `trafficjam_${instanceId}_key_${createHash("sha256").update(key).digest("hex").slice(0, 12)}`;
export const INSTANCE_LABEL = "trafficjam.instance";
/** Where the worker finds the key: the secret's file in the task. */
export const WORKER_KEY_FILE = "/run/secrets/trafficjam_key";
export const WORKER_STATE_DIR = "/var/lib/trafficjam";
const CLEAR_TIMEOUT_MS = 90_000;
/** How often the daemon tells every worker the set again, as a heartbeat. */
const KEEPALIVE_MS = 10_000;
/** The worker service's spec and the node list (both sending events) are read at least this often. */
const RARE_CHECK_MS = 30_000;
/** After the worker service is created or updated, its tasks are looked for this often… */
const DEPLOY_POLL_MS = 500;
/** …for at most this long. */
const DEPLOY_WATCH_MS = 60_000;

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
    "MODE",
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
  log.info("swarm.key.created", "created the channel key secret", { key: "channel", secret: name });
  return { key, secret: { id, name } };
}

/**
 * The daemon's signing key (signing.ts), kept in the state folder beside the channel key: a
 * restarted daemon signs as before, so its workers need no update.
 */
function signingKeys(file: string, log: Log): SigningKeys {
  try {
    return keysFromPem(readFileSync(file, "utf8"));
  } catch {
    const keys = generateSigningKeys();
    mkdirSync(join(file, ".."), { recursive: true });
    writeFileSync(file, privateKeyPem(keys.privateKey), { mode: 0o600 });
    log.info("swarm.key.created", "created the daemon's signing key", {
      key: "signing",
      publicKey: keys.publicKey,
    });
    return keys;
  }
}

/**
 * Where the daemon's own container is, for the workers' channel exemption (node-view.ts): its
 * service's name if it is a task, else its container ID; null without a container or with host
 * networking (its connections then come from its node, not from a container bridge).
 */
async function ownReference(client: EngineClient): Promise<string> {
  const self = await client.inspectContainer(ownContainerId()).catch(() => null);
  if (!self) return "";
  const networks = Object.keys(self.NetworkSettings.Networks);
  if (networks.length === 1 && networks[0] === "host") return "";
  const service = self.Config.Labels["com.docker.swarm.service.name"];
  return service ? `service:${service}` : `container:${self.Id}`;
}

/** The managers' tasks on the overlay `networkId`, reduced for the report check. */
function scheduledOn(tasks: readonly EngineTask[], networkId: string): ScheduledTask[] {
  return tasks.flatMap((t) => {
    const addresses = t.NetworksAttachments.filter((a) => a.Network.ID === networkId).flatMap((a) =>
      a.Addresses.map((x) => x.split("/")[0] ?? x),
    );
    return addresses.length === 0
      ? []
      : [{ node: t.NodeID, addresses, labels: t.Spec.ContainerSpec?.Labels ?? {} }];
  });
}

/** How long the daemon waits before asking its queue again after a failed pass (capped). */
const retryAfterMs = (failures: number, pollMs: number) =>
  Math.min(pollMs, 250 * 2 ** Math.min(failures, 6));

class SwarmDaemon {
  private ledger: AllowedLedger | null = null;
  /** The nodes the cluster's view shows on the network: the set is complete once each has a part. */
  private viewHosts: Set<string> | null = null;
  private toldComplete = false;
  private readonly knownNetworks = new Set<string>();
  /** What a report is checked against, as of the last pass (see report-check.ts). */
  private context: Omit<ReportContext, "whitelist"> = { view: [], tasks: [], nodes: new Map() };
  private seq = 0;
  private failures = 0;
  private readonly refusals = new LogRate();
  private serviceCheckedAt = 0;
  private nodeList: { nodes: EngineNode[]; at: number } | null = null;
  private readonly passes = new PassQueue((reasons) => this.pass(reasons));
  private readonly dialer: DaemonDialer;
  private timer: NodeJS.Timeout | null = null;
  private keepalive: NodeJS.Timeout | null = null;
  private retry: NodeJS.Timeout | null = null;
  /** Until then, a worker task not started yet is looked for again soon (see prune). */
  private deployingUntil = 0;
  private deployTimer: NodeJS.Timeout | null = null;
  /** The nodes with a worker task, as the last pass found them (id → underlay address). */
  private workerNodes = new Map<string, string>();
  private readonly connected = new Set<string>();
  /** Each node's last status from its worker, and when it came (for `status`, `doctor`). */
  private readonly statuses = new Map<string, { status: NodeStatus; at: number }>();
  private nodesKey = "";

  constructor(
    private readonly config: Config,
    private readonly log: Log,
    private readonly api: SwarmApi,
    /** The worker service: its name, spec and digest; its ID once deployed. */
    private readonly service: {
      name: string;
      spec: Record<string, unknown>;
      digest: string;
      id?: string;
    },
    private readonly keys: SigningKeys,
    psk: Buffer,
    private readonly channelPort: number,
    private readonly health: ReturnType<typeof healthPublisher>,
  ) {
    this.dialer = new DaemonDialer(psk, channelPort, {
      current: () => this.current(),
      onConnected: (node, address) => {
        log.info("swarm.worker.connected", "connected to the node's worker", { node, address });
        this.connected.add(node);
        this.publishNodes();
        this.passes.request("worker:connected"); // a node new to the view, perhaps
      },
      onReport: (report, node) => this.onReport(report, node),
      onStatus: (status, node) => this.onStatus(status, node),
      onRefused: (node, reason) =>
        this.refused("swarm.channel.refused", "a worker's answer was refused", { node, reason }),
      onLost: (node, reason, retryInMs) => {
        if (this.connected.delete(node)) this.publishNodes();
        log.debug(
          "swarm.worker.disconnected",
          "no connection to the node's worker (its addresses stay allowed): dialling again",
          { node, reason, retryInMs },
        );
      },
    });
  }

  private refused(
    event: "swarm.channel.refused" | "swarm.report.rejected",
    msg: string,
    fields: Record<string, unknown>,
  ): void {
    const ok = this.refusals.take(Date.now());
    if (ok) this.log.warn(event, msg, { ...fields, suppressed: ok.suppressed });
  }

  private ledgerFor(networkId: string): AllowedLedger {
    if (this.ledger?.networkId !== networkId) this.ledger = new AllowedLedger(networkId);
    return this.ledger;
  }

  private isComplete(): boolean {
    if (this.ledger === null || this.viewHosts === null) return false;
    const hosts = this.ledger.hosts();
    return [...this.viewHosts].every((h) => hosts.has(h));
  }

  /** The set as it stands, signed: every send is a new sequence number. */
  private current(): AllowedMessage {
    this.seq = Math.max(this.seq + 1, Date.now());
    return signBody(
      {
        type: "allowed",
        instanceId: this.config.instanceId,
        networkId: this.ledger?.networkId ?? "",
        seq: this.seq,
        entries: this.ledger?.entries() ?? [],
        vouched: this.ledger?.vouched() ?? [],
        complete: this.isComplete(),
      },
      this.keys.privateKey,
    );
  }

  private announce(why: string): void {
    const message = this.current();
    this.toldComplete = message.complete;
    this.log.info("swarm.allowed.changed", "allowed set changed: telling every worker", {
      reason: why,
      allowed: message.entries.map((e) => `${e.ipv4} (${e.kind} on ${e.node.slice(0, 12)})`),
      complete: message.complete,
      vouched: message.vouched.length,
      workers: this.dialer.connections,
    });
    this.dialer.broadcast(message);
  }

  /** A worker's status: kept for `status` and `doctor`; it decides nothing. */
  private onStatus(status: NodeStatus, node: string): void {
    if (status.node !== node)
      return this.refused(
        "swarm.report.rejected",
        "a worker's status named another node: ignored",
        {
          node,
          reported: status.node,
        },
      );
    this.statuses.set(node, { status, at: Date.now() });
    this.publishNodes(true);
  }

  /** Every node of the swarm and its worker, into the state file (when it changed, or `news`). */
  private publishNodes(news = false): void {
    const nodes = this.nodeList?.nodes ?? [];
    for (const id of this.statuses.keys())
      if (!nodes.some((n) => n.ID === id)) this.statuses.delete(id);
    const list = nodes.map((n): SwarmNodeState => {
      const heard = this.statuses.get(n.ID);
      return {
        node: n.ID,
        hostname: n.Description.Hostname,
        address: nodeAddress(n),
        worker: !this.workerNodes.has(n.ID)
          ? "no worker task"
          : this.connected.has(n.ID)
            ? "connected"
            : "not connected",
        heardAt: heard?.at ?? null,
        status: heard?.status ?? null,
      };
    });
    const key = JSON.stringify(list.map((n) => [n.node, n.hostname, n.address, n.worker]));
    if (!news && key === this.nodesKey) return;
    this.nodesKey = key;
    this.health.setSwarm({
      network: this.config.network,
      channelPort: this.channelPort,
      nodes: list,
    });
  }

  private onReport(received: Report, node: string): void {
    if (received.node !== node)
      return this.refused("swarm.report.rejected", "a worker reported for another node: ignored", {
        node,
        reported: received.node,
      });
    if (received.networkId === null) return; // the network is not on that node: nothing to take
    if (
      this.ledger !== null &&
      received.networkId !== this.ledger.networkId &&
      !this.knownNetworks.has(received.networkId)
    )
      return void this.passes.request("report:network"); // perhaps a recreated network: learn its id first
    const { report, rejected } = checkReport(received, {
      ...this.context,
      whitelist: this.config.whitelistFilter,
    });
    if (rejected.length > 0)
      this.refused("swarm.report.rejected", "parts of a worker's report were not taken", {
        node,
        rejected: rejected.map((r) => `${r.what}: ${r.reason}`),
      });
    if (report === null) return;
    // What the worker enforces, if this daemon signed it: the parts it vouched for then.
    const known =
      report.known && verifyMessage(report.known, publicKeyOf(this.keys.publicKey))
        ? report.known
        : null;
    const changed = this.ledgerFor(report.networkId!).report(report, Date.now(), known);
    if (changed || this.isComplete() !== this.toldComplete)
      this.announce(`report from ${report.node.slice(0, 12)}`);
  }

  /** One pass: the service kept deployed, the cluster read, the set shrunk by what it says. */
  private async pass(reasons: readonly string[]): Promise<void> {
    try {
      // The service and the nodes send events: a quiet resync checks them only now and then.
      const now = Date.now();
      const quiet = reasons.every((r) => r === "resync" || r === "worker:deploying");
      // A node joining (or coming back) gets a worker task: looked for soon, like a deployment.
      if (reasons.some((r) => r.startsWith("node:"))) this.deployingUntil = now + DEPLOY_WATCH_MS;
      if (!quiet || now - this.serviceCheckedAt >= RARE_CHECK_MS) {
        await this.ensureService();
        this.serviceCheckedAt = now;
      }
      const nodeNews = reasons.some((r) => !/^(resync|network:|worker:|report:)/.test(r));
      if (nodeNews || now - (this.nodeList?.at ?? 0) >= RARE_CHECK_MS) this.nodeList = null;
      await this.prune();
      this.failures = 0;
      this.health.record({
        ok: true,
        at: Date.now(),
        ruleset: computeRuleset(null, {
          instanceId: this.config.instanceId,
          allowHostTraffic: true,
        }),
        location: SWARM_DAEMON_LOCATION,
      });
    } catch (error) {
      this.failures++;
      const retryMs = retryAfterMs(this.failures, this.config.pollIntervalMs);
      this.log.error("swarm.sync.failed", "keeping the worker service or the allowed set failed", {
        err: error,
        retryMs,
      });
      this.health.record({ ok: false, at: Date.now(), error: (error as Error).message });
      if (this.retry) clearTimeout(this.retry);
      this.retry = setTimeout(() => this.passes.request("retry"), retryMs);
      this.retry.unref();
    }
  }

  /** Creates the service if missing, updates it if its spec is not ours. */
  private async ensureService(): Promise<void> {
    const { name, spec, digest } = this.service;
    const found: EngineService | null = await this.api.inspectService(name);
    if (found === null) {
      const id = await this.api.createService(spec);
      this.service.id = id;
      this.deployingUntil = Date.now() + DEPLOY_WATCH_MS;
      this.log.info("swarm.service.created", "deployed the worker service", {
        service: name,
        id,
        image: imageOf(spec),
      });
      return;
    }
    this.service.id = found.ID;
    const labels = (found.Spec.Labels ?? {}) as Record<string, string>;
    if (labels["trafficjam.spec"] === digest) return;
    await this.api.updateService(found.ID, found.Version.Index, spec);
    this.deployingUntil = Date.now() + DEPLOY_WATCH_MS;
    this.log.info("swarm.service.updated", "updated the worker service to this daemon's settings", {
      service: name,
      image: imageOf(spec),
    });
  }

  private async prune(): Promise<void> {
    const [view, kept, tasks] = await Promise.all([
      this.api.clusterEndpoints(this.config.network),
      this.nodeList?.nodes ?? this.api.nodes(),
      this.api.runningTasks(),
    ]);
    let nodes = kept;
    // A task on a node the kept list lacks: a node joined (its event may come later, or never).
    const listed = new Set(nodes.map((n) => n.ID));
    if (this.nodeList && tasks.some((t) => t.NodeID !== "" && !listed.has(t.NodeID)))
      nodes = await this.api.nodes();
    this.nodeList = this.nodeList?.nodes === nodes ? this.nodeList : { nodes, at: Date.now() };
    // Dial the nodes whose worker runs: a node without one (drained, down) is not dialled in a
    // loop; it is once its worker's task runs.
    // While the service deploys, its tasks are looked for every 0.5 s rather than every
    // POLL_INTERVAL: each worker is dialled as soon as it starts.
    const waiting = tasks.some(
      (t) =>
        t.ServiceID === this.service.id &&
        t.Status.State !== "running" &&
        t.Status.State !== "starting",
    );
    if (waiting && Date.now() < this.deployingUntil && !this.deployTimer) {
      this.deployTimer = setTimeout(() => {
        this.deployTimer = null;
        this.passes.request("worker:deploying");
      }, DEPLOY_POLL_MS);
      this.deployTimer.unref();
    }
    const workerNodes = new Set(
      tasks
        // "starting" too: Swarm holds a task there until its first health check passes (30 s),
        // while the worker listens within a second or two of its start.
        .filter(
          (t) =>
            t.ServiceID === this.service.id &&
            (t.Status.State === "running" || t.Status.State === "starting"),
        )
        .map((t) => t.NodeID),
    );
    this.workerNodes = new Map(
      nodes.filter((n) => workerNodes.has(n.ID)).map((n) => [n.ID, nodeAddress(n)]),
    );
    this.dialer.setNodes(this.workerNodes);
    this.publishNodes();
    this.context = {
      view: view?.endpoints ?? [],
      tasks: view ? scheduledOn(tasks, view.id) : [],
      nodes: new Map(nodes.map((n) => [n.ID, nodeAddress(n)])),
    };
    if (view === null) return;
    this.knownNetworks.add(view.id);
    const ledger = this.ledgerFor(view.id);
    this.viewHosts = new Set(view.endpoints.map((e) => e.hostIp).filter(Boolean));
    const changed = ledger.prune(view.endpoints, new Set(nodes.map((n) => n.ID)), Date.now());
    if (changed || this.isComplete() !== this.toldComplete) this.announce("cluster view");
  }

  async run(client: EngineClient): Promise<number> {
    await this.ensureService();
    this.passes.request("startup");
    this.timer = setInterval(() => this.passes.request("resync"), this.config.pollIntervalMs);
    // The heartbeat, on its own clock: a worker is alive when it answers; a dead link is found
    // within KEEPALIVE_MS + the answer's 5 s, whatever POLL_INTERVAL is.
    this.keepalive = setInterval(() => this.dialer.keepalive(), KEEPALIVE_MS);
    const watcher = new EventWatcher(
      client,
      {
        onEvent: (event) => {
          if (event.Type === "service" && event.Actor.Attributes.name !== this.service.name) return;
          this.passes.request(`${event.Type}:${event.Action}`);
        },
        onConnected: () => this.passes.request("events-connected"),
        onLost: () => undefined,
      },
      { type: ["service", "node", "network"] },
    );
    watcher.start();

    return new Promise<number>((resolve) => {
      let stopping = false;
      const shutdown = async (clear: boolean) => {
        if (stopping) return;
        stopping = true;
        if (this.timer) clearInterval(this.timer);
        if (this.keepalive) clearInterval(this.keepalive);
        if (this.retry) clearTimeout(this.retry);
        if (this.deployTimer) clearTimeout(this.deployTimer);
        watcher.stop();
        this.passes.halt();
        await this.passes.idle();
        this.dialer.close();
        let code = 0;
        if (clear) code = await clearEverywhere(this.api, this.config.instanceId, this.log);
        else
          this.log.info(
            "daemon.stopping",
            "stopping: the workers keep enforcing the last allowed set",
          );
        this.health.close();
        client.close();
        resolve(code);
      };
      process.on("SIGTERM", () => void shutdown(false));
      process.on("SIGINT", () => void shutdown(false));
      process.on("SIGUSR1", () => void shutdown(true));
    });
  }
}

const imageOf = (spec: Record<string, unknown>) =>
  (spec.TaskTemplate as { ContainerSpec: { Image: string } }).ContainerSpec.Image;

/** Runs until a signal; resolves with the exit code. */
export async function runSwarmDaemon(
  config: Config,
  settings: SwarmDaemonSettings,
  log: Log,
): Promise<number> {
  let stopping = false;
  const onSignal = () => (stopping = true);
  process.once("SIGTERM", onSignal);
  const { client, api } = await connectSwarm(log, () => stopping);
  process.off("SIGTERM", onSignal);
  if (stopping) {
    client.close();
    return 0;
  }
  const info = await api.info();
  if (!info || info.LocalNodeState !== "active" || !info.ControlAvailable) {
    log.error("swarm.not-manager", "SWARM_DAEMON needs a Swarm manager node's Docker engine", {
      state: info?.LocalNodeState ?? "unknown",
    });
    client.close();
    return 2;
  }
  const name = workerServiceName(config.instanceId);
  const image = await workerImage(config, client);
  const dir = stateDir(process.env);
  const { key, secret } = await channelKey(
    api,
    config.instanceId,
    join(dir, `swarm-${config.instanceId}.key`),
    log,
  );
  const keys = signingKeys(join(dir, `swarm-${config.instanceId}.signing.pem`), log);
  const hostNetwork = await client.inspectNetwork("host");
  if (!hostNetwork) throw new Error("the Engine has no host network");
  const endpoint = parseDockerHost(process.env);
  const spec = workerServiceSpec({
    instanceId: config.instanceId,
    image,
    env: [
      ...workerEnv(config, process.env, settings.channelPort),
      `TRAFFICJAM_DAEMON_KEY=${keys.publicKey}`,
      `TRAFFICJAM_DAEMON=${await ownReference(client)}`,
      `TRAFFICJAM_DATA_PATH_PORT=${(await api.dataPathPort()) ?? ""}`,
    ],
    secret,
    hostNetworkId: hostNetwork.Id,
    dockerSocket: endpoint.protocol === "unix" ? endpoint.socketPath : null,
  });
  const digest = specDigest(spec);
  (spec.Labels as Record<string, string>)["trafficjam.spec"] = digest;
  const daemon = new SwarmDaemon(
    config,
    log,
    api,
    { name, spec, digest },
    keys,
    key,
    settings.channelPort,
    healthPublisher(config, log),
  );
  return daemon.run(client);
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
