// A Docker Swarm of lab nodes: N Labs (one network namespace + one dockerd each, so every probe of
// Lab works per node), linked by an L2 switch, with node1 the manager.
//
//   tj-S-n1 (manager)   tj-S-n2    …  tj-S-nN          each: dockerd, hostname S-nI, eth0 UNDERLAY.I/24
//        eth0             eth0          eth0
//         └── sw-n1 ──────┴─ sw-n2 ─ … ─┴─ sw-nN ── br0 in tj-S-n1_sw (the switch)
//
// Everything is named after the labs (netns tj-S-nI, the switch tj-S-n1_sw as an extra namespace of
// node1, cgroups /tj-e2e-S-nI, /run/tj-e2e/S-nI, /var/lib/tj-e2e/S-nI), and every node is a
// registered Lab: stop(), the process-exit safety net and the stale-lab sweep remove all of it.
// No veth ever exists in the root namespace (pairs are made inside a node and moved to the switch).
//
// Facts of this machine (see the reference lab's notes): no IPVS, so services need
// `--endpoint-mode dnsrr` (createService adds it); no registry, so every node needs every image
// (the test image is imported on each node, other images go node1 → others by save/load); a
// node's overlay namespace is /run/docker/netns/<epoch>-<network id, first 10> in its dockerd's
// mount namespace, reachable from here as /proc/<dockerd pid>/root/run/docker/netns/…; it appears
// with the node's first container or task on that network (and outlives the last one: measured,
// still there 30 s after the node's tasks were removed, with the node's lb_<id> namespace).
import { existsSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before } from "node:test";
import type { Container } from "./containers.js";
import { runOk } from "./exec.js";
import { TEST_IMAGE, TEST_IMAGE_SPECS, type TestImageKind } from "./image.js";
import { LAB_HOST, Lab, startLabOf, type StartLabOptions } from "./lab.js";
import { nsRunOk } from "./netns.js";
import { loadNodeBase } from "./node-base.js";
import { PRODUCT_IMAGE, buildProductImage } from "./product-image.js";
import { randomId, waitFor } from "./util.js";

/** Underlay /24 of the nodes (inside the lab's namespaces only): node I is PREFIX.I. */
export const UNDERLAY_PREFIX = "10.231.0";
/** A swarm lab's name: [a-z0-9-], ≤ 12 characters, so that its nodes' "NAME-nI" are lab names. */
const SWARM_NAME_RE = /^[a-z0-9][a-z0-9-]{0,11}$/;
const SERVICE_LABEL = "com.docker.swarm.service.name";
const switchPort = (index: number) => `sw-n${index}`;

export interface SwarmLabOptions {
  /** [a-z0-9-], ≤ 12 chars; nodes are labs NAME-n1…NAME-nN. Default: random. */
  name?: string;
  /** 1–9, default 3. Node 1 is the (only) manager. */
  nodes?: number;
  /**
   * How many nodes (1…nodes, node1 first) join the swarm at start; default all. The others are
   * started (dockerd running, test image loaded, on the switch) and join later with joinNode().
   */
  joined?: number;
  /** Test image of every node (see StartLabOptions.image). */
  image?: TestImageKind;
  /**
   * Build the product image (trafficjam:e2e, the repository's Dockerfile) on node1 and load it
   * into every node. Takes as long as buildProductImage (package downloads), in parallel with the
   * swarm's forming.
   */
  productImage?: boolean;
  /** daemon.json keys of every node (see StartLabOptions.daemonJson), e.g. insecure-registries. */
  daemonJson?: Record<string, unknown>;
}

/** One swarm node: a Lab (all its probes work on this node's engine) with its swarm identity. */
export class SwarmNodeLab extends Lab {
  /** Swarm node id while the node is in the swarm. */
  swarmNodeId?: string;

  constructor(
    name: string,
    opts: StartLabOptions,
    /** 1…N; node 1 is the manager. */
    readonly index: number,
    /** Underlay address (eth0), the node's advertise and data-path address. */
    readonly ip: string,
  ) {
    super(name, opts);
  }

  /** The engine's hostname, which is the swarm node's name (its lab name). */
  get hostname(): string {
    return this.name;
  }

  /** The switch's end of this node's underlay link (made in the node, moved to the switch). */
  get switchPort(): string {
    return switchPort(this.index);
  }
}

export interface OverlayNetwork {
  id: string;
  name: string;
  subnet: string;
}

export interface SwarmTask {
  id: string;
  /** Index of the node the task runs on. */
  node: number;
  containerId: string;
}

interface TaskInspect {
  ID: string;
  NodeID: string;
  Status: { State: string; ContainerStatus?: { ContainerID?: string } };
}

export class SwarmLab {
  private stopping?: Promise<void>;
  private tokens?: { worker: string };

  constructor(
    readonly name: string,
    /** nodes[0] is node 1 (the manager). */
    readonly nodes: readonly SwarmNodeLab[],
    /** Phase durations of startSwarmLab() in ms: labs, switch, swarm, productImage(Build|Load). */
    readonly timings: Record<string, number> = {},
  ) {}

  get manager(): SwarmNodeLab {
    return this.node(1);
  }

  /** Node by its index (1…N). */
  node(index: number): SwarmNodeLab {
    const n = this.nodes[index - 1];
    if (!n) throw new Error(`swarm ${this.name} has no node ${index} (1…${this.nodes.length})`);
    return n;
  }

  /** The switch namespace (an extra namespace of node1: removed with it). */
  get switchNetns(): string {
    return `${this.manager.paths.extraNetnsPrefix}sw`;
  }

  // ---- membership ----

  /** @internal puts every node's underlay port on a bridge in the switch namespace (root ns untouched). */
  async wireSwitch(): Promise<void> {
    const sw = this.switchNetns;
    await runOk("ip", ["netns", "add", sw]);
    await runOk("ip", ["-n", sw, "link", "set", "lo", "up"]);
    // a plain switch: bridged frames do not go through the switch namespace's (empty) iptables
    await nsRunOk(sw, [
      ...["sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=0"],
      "net.bridge.bridge-nf-call-ip6tables=0",
    ]);
    await runOk("ip", ["-n", sw, "link", "add", "br0", "type", "bridge"]);
    await runOk("ip", ["-n", sw, "link", "set", "br0", "up"]);
    for (const n of this.nodes) {
      await runOk("ip", ["-n", n.netns, "link", "set", n.switchPort, "netns", sw]);
      await runOk("ip", ["-n", sw, "link", "set", n.switchPort, "master", "br0", "up"]);
    }
  }

  /** @internal waits until node1 pings every other node over the switch. */
  async waitUnderlay(): Promise<void> {
    await Promise.all(
      this.nodes.slice(1).map(async (n) => {
        // a new link carries traffic once the kernel's link watch has run: up to a second
        await waitFor(() => this.manager.ping(LAB_HOST, n.ip), {
          timeoutMs: 10_000,
          intervalMs: 100,
          what: `node1 to ping node${n.index} (${n.ip}) over the underlay`,
        });
      }),
    );
  }

  /** @internal docker swarm init on node1. */
  async init(): Promise<void> {
    const m = this.manager;
    await m.docker("swarm", "init", "--advertise-addr", m.ip);
    m.swarmNodeId = (await m.docker("info", "--format", "{{.Swarm.NodeID}}")).trim();
    this.tokens = { worker: (await m.docker("swarm", "join-token", "-q", "worker")).trim() };
  }

  /** Joins node `index` to the swarm as a worker and waits until the manager lists it Ready. */
  async joinNode(index: number, timeoutMs = 30_000): Promise<void> {
    const n = this.node(index);
    if (!this.tokens) throw new Error("the swarm is not initialised");
    if (n.swarmNodeId) throw new Error(`node${index} is in the swarm already`);
    const join = ["swarm", "join", "--token", this.tokens.worker, "--advertise-addr", n.ip];
    await n.docker(...join, `${this.manager.ip}:2377`);
    const id = (await n.docker("info", "--format", "{{.Swarm.NodeID}}")).trim();
    if (!id) throw new Error(`node${index} joined but has no swarm node id`);
    n.swarmNodeId = id;
    await waitFor(
      async () =>
        (await this.manager.docker("node", "inspect", id, "--format", "{{.Status.State}}")) ===
        "ready",
      {
        timeoutMs,
        intervalMs: 100,
        what: `node${index} (${id}) to be Ready`,
        details: () => this.manager.docker("node", "ls").catch((e: Error) => e.message),
      },
    );
  }

  /**
   * Node `index` (not the manager) leaves the swarm (`swarm leave --force`, which removes its task
   * containers) and is removed from the manager's node list; it may join again later.
   */
  async leaveNode(index: number): Promise<void> {
    const n = this.node(index);
    if (index === 1) throw new Error("node1 is the manager: it cannot leave its own swarm");
    const id = n.swarmNodeId;
    if (!id) throw new Error(`node${index} is not in the swarm`);
    await n.docker("swarm", "leave", "--force");
    n.swarmNodeId = undefined;
    await this.manager.docker("node", "rm", "--force", id);
  }

  // ---- networks, services, tasks (on the manager) ----

  /** `docker network create -d overlay` on the manager; attachable (standalone containers) by default. */
  async createOverlay(
    name: string,
    opts: { subnet: string; attachable?: boolean; args?: readonly string[] },
  ): Promise<OverlayNetwork> {
    await this.manager.docker(
      ...["network", "create", "--driver", "overlay", "--subnet", opts.subnet],
      ...(opts.attachable === false ? [] : ["--attachable"]),
      ...(opts.args ?? []),
      name,
    );
    const id = (
      await this.manager.docker("network", "inspect", "--format", "{{.Id}}", name)
    ).trim();
    return { id, name, subnet: opts.subnet };
  }

  /**
   * `docker service create --detach ARGS` on the manager; returns the service id. Unless ARGS set
   * them: `--endpoint-mode dnsrr` (no IPVS in this kernel, so no VIP) and `--stop-grace-period 1s`
   * (a PID 1 without a SIGTERM handler, e.g. busybox httpd, would otherwise hold a task for 10 s).
   * Always `--no-resolve-image` (there is no registry to ask for a digest).
   */
  async createService(args: readonly string[]): Promise<string> {
    const has = (flag: string) => args.some((a) => a === flag || a.startsWith(`${flag}=`));
    const out = await this.manager.docker(
      ...["service", "create", "--detach", "--quiet", "--no-resolve-image"],
      ...(has("--endpoint-mode") ? [] : ["--endpoint-mode", "dnsrr"]),
      ...(has("--stop-grace-period") ? [] : ["--stop-grace-period", "1s"]),
      ...args,
    );
    return out.trim().split("\n").at(-1) ?? "";
  }

  /** `docker service rm`, then waits until no node has a container of it left. */
  async removeService(name: string, timeoutMs = 30_000): Promise<void> {
    await this.manager.docker("service", "rm", name);
    await waitFor(
      async () => {
        for (const n of this.nodes) {
          const ids = await n.docker("ps", "-aq", "--filter", `label=${SERVICE_LABEL}=${name}`);
          if (ids.trim()) return false;
        }
        return true;
      },
      { timeoutMs, intervalMs: 200, what: `the containers of service ${name} to be gone` },
    );
  }

  /**
   * Waits until exactly `count` tasks of the service that should run do run and, for a service of
   * the test image with the image's own command, until each task's server listens. Returns them.
   */
  async waitServiceRunning(name: string, count: number, timeoutMs = 60_000): Promise<SwarmTask[]> {
    const spec = JSON.parse(
      await this.manager.docker(
        ...["service", "inspect", name, "--format", "{{json .Spec.TaskTemplate.ContainerSpec}}"],
      ),
    ) as { Image?: string; Command?: string[] | null; Args?: string[] | null };
    const image = (spec.Image ?? "").split("@")[0];
    const servesTestImage =
      (image === TEST_IMAGE || image === `${TEST_IMAGE}:latest`) &&
      !spec.Command?.length &&
      !spec.Args?.length;
    const ready = new Set<string>();
    return waitFor(
      async () => {
        const ids = (
          await this.manager.docker(
            ...["service", "ps", name, "--quiet", "--no-trunc"],
            ...["--filter", "desired-state=running"],
          )
        )
          .split("\n")
          .filter(Boolean);
        if (ids.length !== count) return false;
        const raw = JSON.parse(
          await this.manager.docker("inspect", "--type", "task", ...ids),
        ) as TaskInspect[];
        if (raw.some((t) => t.Status.State !== "running")) return false;
        const tasks = raw.map((t) => ({
          id: t.ID,
          node: this.indexOfNodeId(t.NodeID),
          containerId: t.Status.ContainerStatus?.ContainerID ?? "",
        }));
        for (const t of servesTestImage ? tasks : []) {
          if (ready.has(t.containerId)) continue;
          const n = this.node(t.node);
          const r = await n.exec(t.containerId, TEST_IMAGE_SPECS[n.image].ready, 10_000);
          if (r.code !== 0) return false;
          ready.add(t.containerId);
        }
        return tasks;
      },
      {
        timeoutMs,
        intervalMs: 100,
        what: `${count} running task(s) of service ${name}`,
        details: () =>
          this.manager.docker("service", "ps", "--no-trunc", name).catch((e: Error) => e.message),
      },
    );
  }

  private indexOfNodeId(nodeId: string): number {
    const n = this.nodes.find((x) => x.swarmNodeId === nodeId);
    if (!n) throw new Error(`swarm node ${nodeId} is none of this lab's nodes`);
    return n.index;
  }

  /** The running containers of a service's tasks on node `index`, via that node's engine. */
  async taskContainers(service: string, index: number): Promise<Container[]> {
    const n = this.node(index);
    const ids = (
      await n.docker(
        ...["ps", "--quiet", "--no-trunc", "--filter", `label=${SERVICE_LABEL}=${service}`],
        ...["--filter", "status=running"],
      )
    )
      .split("\n")
      .filter(Boolean);
    return Promise.all(ids.map((id) => n.inspect(id)));
  }

  /** The one running task container of a service on node `index` (throws unless exactly one). */
  async taskContainer(service: string, index: number): Promise<Container> {
    const all = await this.taskContainers(service, index);
    const [c] = all;
    if (!c || all.length > 1) {
      throw new Error(`node${index} runs ${all.length} task containers of ${service}, not one`);
    }
    return c;
  }

  // ---- overlay namespaces ----

  /**
   * Path, usable from the test process, of the overlay namespace of network `networkId` on node
   * `index`: /proc/<dockerd pid>/root/run/docker/netns/<epoch>-<id, first 10>. It appears with the
   * node's first container or task on the network; the epoch is 1 unless the namespace was remade
   * while the network stayed on the node. Without one, the epoch-1 path is returned.
   */
  overlayNetnsPath(index: number, networkId: string): string {
    const dir = `/proc/${this.node(index).dockerdPid}/root/run/docker/netns`;
    const key = networkId.slice(0, 10);
    let names: string[] = [];
    try {
      names = readdirSync(dir);
    } catch {
      /* no netns folder yet */
    }
    const found = names
      .map((f) => /^(\d+)-(.+)$/.exec(f))
      .filter((m): m is RegExpExecArray => m !== null && m[2] === key)
      .sort((a, b) => Number(b[1]) - Number(a[1]))[0];
    return join(dir, found?.[0] ?? `1-${key}`);
  }

  /** Runs a command in node `index`'s overlay namespace of a network (nsenter --net); stdout. */
  async overlayExec(index: number, networkId: string, cmd: readonly string[]): Promise<string> {
    const path = this.overlayNetnsPath(index, networkId);
    if (!existsSync(path)) {
      throw new Error(
        `node${index} has no overlay namespace for network ${networkId} (${path}): it appears ` +
          "with the node's first container or task on that network",
      );
    }
    return runOk("nsenter", [`--net=${path}`, "--", ...cmd]);
  }

  // ---- images ----

  /** Copies an image of node1 to every other node (docker save, docker load: no registry). */
  async distributeImage(image: string): Promise<void> {
    const m = this.manager;
    const tar = join(m.paths.base, `image-${randomId(4)}.tar`);
    try {
      await m.dockerResult(["save", "-o", tar, image], 300_000).then((r) => {
        if (r.code !== 0) throw new Error(`docker save ${image} on node1: ${r.stderr.trim()}`);
      });
      await Promise.all(
        this.nodes.slice(1).map(async (n) => {
          const r = await n.dockerResult(["load", "--quiet", "--input", tar], 300_000);
          if (r.code !== 0) throw new Error(`docker load on node${n.index}: ${r.stderr.trim()}`);
        }),
      );
    } finally {
      rmSync(tar, { force: true });
    }
  }

  // ---- teardown ----

  /** What of the swarm lab still exists (empty after a successful stop()). */
  leftovers(): string[] {
    return this.nodes.flatMap((n) => n.leftovers());
  }

  /**
   * Removes everything of every node (Lab.stop(): all by PID, then namespaces, cgroups, folders;
   * node1's takes the switch namespace). Idempotent; throws if anything remains.
   */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      const results = await Promise.allSettled(this.nodes.map((n) => n.stop()));
      const errors = results.flatMap((r) => (r.status === "rejected" ? [String(r.reason)] : []));
      if (errors.length) throw new Error(`swarm lab ${this.name}: ${errors.join("\n")}`);
    })();
    return this.stopping;
  }
}

/** Starts the nodes (in parallel), the switch, the swarm; on failure removes all of it and throws. */
export async function startSwarmLab(opts: SwarmLabOptions = {}): Promise<SwarmLab> {
  const name = opts.name ?? `s${randomId(3)}`;
  if (!SWARM_NAME_RE.test(name)) {
    throw new Error(`bad swarm lab name ${JSON.stringify(name)}: want ${SWARM_NAME_RE}`);
  }
  const count = opts.nodes ?? 3;
  const joined = opts.joined ?? count;
  if (!Number.isInteger(count) || count < 1 || count > 9) throw new Error("nodes: 1…9");
  if (!Number.isInteger(joined) || joined < 1 || joined > count)
    throw new Error(`joined: 1…${count}`);

  const timings: Record<string, number> = {};
  const timed = async <T>(phase: string, f: () => Promise<T>): Promise<T> => {
    const t0 = Date.now();
    try {
      return await f();
    } finally {
      timings[phase] = Date.now() - t0;
    }
  };

  const started = await timed("labs", () =>
    Promise.allSettled(
      Array.from({ length: count }, (_, i) => {
        const index = i + 1;
        const nodeName = `${name}-n${index}`;
        const ip = `${UNDERLAY_PREFIX}.${index}`;
        const labOpts: StartLabOptions = {
          name: nodeName,
          image: opts.image,
          hostname: nodeName,
          daemonJson: opts.daemonJson,
          // the node's NIC exists before its dockerd starts; the pair is made inside the node,
          // never in the root namespace, and its other end moves to the switch (wireSwitch)
          beforeDockerd: async (lab) => {
            const ipn = (...args: string[]) => runOk("ip", ["-n", lab.netns, ...args]);
            await ipn("link", "add", "eth0", "type", "veth", "peer", "name", switchPort(index));
            await ipn("addr", "add", `${ip}/24`, "dev", "eth0");
            await ipn("link", "set", "eth0", "up");
          },
        };
        return startLabOf(labOpts, (n) => new SwarmNodeLab(n, labOpts, index, ip));
      }),
    ),
  );
  const nodes = started.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  const failed = started.find((r) => r.status === "rejected");
  if (failed) {
    await Promise.allSettled(nodes.map((n) => n.stop()));
    throw failed.reason;
  }
  const swarm = new SwarmLab(name, nodes, timings);
  try {
    await timed("switch", () => swarm.wireSwitch());
    const formSwarm = timed("swarm", async () => {
      // new links carry traffic only once the kernel's link watch has run (up to a second)
      await Promise.all([swarm.init(), swarm.waitUnderlay()]);
      await Promise.all(Array.from({ length: joined - 1 }, (_, i) => swarm.joinNode(i + 2)));
    });
    const product = opts.productImage
      ? timed("productImage", async () => {
          // the Node base on the other nodes meanwhile: `docker load` then skips its layer (the
          // same tarball imported gives the same layer), ~230 MB of the image's ~300
          const bases = Promise.all(swarm.nodes.slice(1).map((n) => loadNodeBase(n.dockerHost)));
          await timed("productImageBuild", () => buildProductImage(swarm.manager));
          await bases;
          await timed("productImageLoad", () => swarm.distributeImage(PRODUCT_IMAGE));
        })
      : undefined;
    await Promise.all([formSwarm, product]);
  } catch (e) {
    await swarm.stop().catch(() => undefined);
    throw e;
  }
  return swarm;
}

/**
 * One swarm lab for a describe() block (before/after hooks; call it synchronously in the describe
 * body), like useLab():
 *   describe("x", () => { const swarm = useSwarmLab({ joined: 2 }); it("y", () => swarm().joinNode(3)); });
 */
export function useSwarmLab(opts: SwarmLabOptions = {}): () => SwarmLab {
  let swarm: SwarmLab | undefined;
  before(async () => {
    swarm = await startSwarmLab(opts);
  });
  after(async () => {
    await swarm?.stop();
  });
  return () => {
    if (!swarm) {
      throw new Error("useSwarmLab(): the swarm lab is not started (its before() hook failed)");
    }
    return swarm;
  };
}
