// TrafficJam in a swarm lab: the Swarm daemon as a container on the manager (as a user runs it),
// the workers it deploys, and what their JSON logs say.
import { PRODUCT_IMAGE } from "./product-image.js";
import type { SwarmLab } from "./swarm.js";
import { waitFor } from "./util.js";

export interface LogLine {
  event: string;
  time?: string;
  [key: string]: unknown;
}

export const workerService = (instanceId: string) => `trafficjam_${instanceId}_worker`;

/** JSON log lines of a container (other lines, e.g. a crash's stack, are skipped). */
export async function containerLog(
  swarm: SwarmLab,
  node: number,
  container: string,
): Promise<LogLine[]> {
  const r = await swarm.node(node).dockerResult(["logs", container], 20_000);
  return `${r.stdout}\n${r.stderr}`
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as LogLine];
      } catch {
        return [];
      }
    });
}

export class SwarmTrafficJam {
  constructor(
    readonly swarm: SwarmLab,
    readonly instanceId: string,
    /** The daemon's container on node1. */
    readonly container: string,
  ) {}

  get service(): string {
    return workerService(this.instanceId);
  }

  daemonLog(): Promise<LogLine[]> {
    return containerLog(this.swarm, 1, this.container);
  }

  /** The worker container on node `index` (the running one), or null. */
  async workerContainer(index: number): Promise<string | null> {
    const out = await this.swarm
      .node(index)
      .docker(
        ...[
          "ps",
          "-q",
          "--no-trunc",
          "--filter",
          `label=com.docker.swarm.service.name=${this.service}`,
        ],
      );
    return out.trim().split("\n").filter(Boolean)[0] ?? null;
  }

  /** Every worker container ever run on node `index` (running or not): counts restarts. */
  async workerContainers(index: number): Promise<string[]> {
    const out = await this.swarm
      .node(index)
      .docker(
        ...[
          "ps",
          "-aq",
          "--no-trunc",
          "--filter",
          `label=com.docker.swarm.service.name=${this.service}`,
        ],
      );
    return out.trim().split("\n").filter(Boolean);
  }

  async workerLog(index: number): Promise<LogLine[]> {
    const id = await this.workerContainer(index);
    return id ? containerLog(this.swarm, index, id) : [];
  }

  /** Waits for a worker log line on node `index` matching `pred`; returns it. */
  waitWorker(
    index: number,
    pred: (l: LogLine) => boolean,
    what: string,
    timeoutMs = 30_000,
    /** Only lines from this index of the worker's log on (see workerLog().length). */
    from = 0,
  ): Promise<LogLine> {
    return waitFor(async () => (await this.workerLog(index)).slice(from).find(pred) ?? false, {
      timeoutMs,
      intervalMs: 200,
      what: `node${index}'s worker: ${what}`,
      details: async () =>
        (await this.workerLog(index))
          .slice(-15)
          .map((l) => JSON.stringify(l).slice(0, 400))
          .join("\n"),
    });
  }

  waitDaemon(pred: (l: LogLine) => boolean, what: string, timeoutMs = 30_000): Promise<LogLine> {
    return waitFor(async () => (await this.daemonLog()).find(pred) ?? false, {
      timeoutMs,
      intervalMs: 200,
      what: `the Swarm daemon: ${what}`,
      details: async () =>
        (await this.daemonLog())
          .slice(-15)
          .map((l) => JSON.stringify(l).slice(0, 400))
          .join("\n"),
    });
  }

  /** The daemon's container state: running, exited (with its code). */
  async daemonState(): Promise<{ running: boolean; exitCode: number }> {
    const out = await this.swarm
      .node(1)
      .docker("inspect", "--format", "{{.State.Running}} {{.State.ExitCode}}", this.container);
    const [running, code] = out.trim().split(" ");
    return { running: running === "true", exitCode: Number(code) };
  }
}

export interface SwarmDaemonOptions {
  instanceId: string;
  network: string;
  whitelist: string;
  env?: Record<string, string>;
}

/**
 * Runs the Swarm daemon on node1 the way the docs say: host network, the Docker socket, the
 * product image, SWARM_DAEMON=true.
 */
export async function startSwarmDaemon(
  swarm: SwarmLab,
  opts: SwarmDaemonOptions,
): Promise<SwarmTrafficJam> {
  const name = `tj-swarm-${opts.instanceId}`;
  const env = {
    SWARM_DAEMON: "true",
    NETWORK: opts.network,
    WHITELIST_FILTER: opts.whitelist,
    INSTANCE_ID: opts.instanceId,
    POLL_INTERVAL: "5",
    ...opts.env,
  };
  await swarm
    .node(1)
    .docker(
      ...["run", "-d", "--name", name, "--network", "host"],
      ...["-v", "/var/run/docker.sock:/var/run/docker.sock"],
      ...Object.entries(env).flatMap(([k, v]) => ["-e", `${k}=${v}`]),
      PRODUCT_IMAGE,
    );
  return new SwarmTrafficJam(swarm, opts.instanceId, name);
}

/**
 * The scenario the Swarm tests and the bench share: an attachable overlay, a global service of
 * the test image ("backend", one task per node) and one proxy task on node1, container-labelled
 * `proxyLabel` (key=value). Waits until `nodes` backends and the proxy serve.
 */
export async function deployBackendsAndProxy(
  swarm: SwarmLab,
  opts: { network: string; subnet: string; proxyLabel: string; nodes: number },
): Promise<{ networkId: string }> {
  const { id } = await swarm.createOverlay(opts.network, { subnet: opts.subnet });
  await swarm.createService([
    "--name",
    "backend",
    "--mode",
    "global",
    "--network",
    opts.network,
    "tj-test",
  ]);
  await swarm.createService([
    ...["--name", "proxy", "--replicas", "1", "--network", opts.network],
    ...["--constraint", `node.hostname==${swarm.node(1).hostname}`],
    ...["--container-label", opts.proxyLabel],
    "tj-test",
  ]);
  await swarm.waitServiceRunning("backend", opts.nodes);
  await swarm.waitServiceRunning("proxy", 1);
  return { networkId: id };
}

/** The address of node `index`'s load-balancer endpoint on a network (its `lb-NET` member). */
export async function loadBalancerOf(
  swarm: SwarmLab,
  index: number,
  network: string,
): Promise<string> {
  const format = `{{(index .Containers "lb-${network}").IPv4Address}}`;
  const out = await swarm.node(index).docker("network", "inspect", network, "--format", format);
  return out.trim().split("/")[0] ?? "";
}

/**
 * A task of the "pair" service: from its first instant it looks the other task up and connects,
 * again and again; /tmp/tried and /tmp/reached count the attempts and the connections.
 */
export const PAIR_SCRIPT = [
  "tjprobe serve &",
  "me=$(hostname -i)",
  "i=0",
  "while [ $i -lt 400 ]; do",
  "  for ip in $(nslookup tasks.pair 2>/dev/null | sed -n 's/^Address:[[:space:]]*\\([0-9.]*\\)$/\\1/p'); do",
  '    [ "$ip" = "$me" ] && continue',
  '    echo "$ip" >> /tmp/tried',
  '    tjprobe tcp "$ip" 80 100 >/dev/null 2>&1 && echo "$ip" >> /tmp/reached',
  "  done",
  "  i=$((i+1)); sleep 0.02",
  "done",
  "sleep 600",
].join("\n");
