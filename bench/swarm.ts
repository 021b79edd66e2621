// Swarm convergence and idle cost: `npm run bench:swarm` (root). A three-node swarm lab of the
// end-to-end suite's own (engines in network namespaces), the Swarm daemon run as a user runs it,
// and real probes. Prints figures, never pass/fail. Every time is measured on this machine's one
// clock: a container's start (its engine's StartedAt) to the worker log line saying the rules are
// in force (`rules.applied`, its `time`), or to the first probe that gets through. Idle cost: CPU
// of each container's cgroup over 30 s, health checks included, nothing changing.
//
//   BENCH_SWARM_ROUNDS=3                 rounds of each measured change (median and max printed)
//   BENCH_SWARM_PARTS=idle,convergence   which parts to run
import { watch } from "node:fs";
import { cgroupCpu, table, envInt } from "./figures.js";
import { startSwarmLab, type Container, type SwarmLab } from "../test/e2e/lab/index.js";
import {
  deployBackendsAndProxy,
  loadBalancerOf,
  PAIR_SCRIPT,
  startSwarmDaemon,
  type LogLine,
  type SwarmTrafficJam,
} from "../test/e2e/lab/swarm-trafficjam.js";
import { sleep, waitFor } from "../test/e2e/lab/util.js";

const NET = "benchnet";
const ROUNDS = envInt("BENCH_SWARM_ROUNDS", 3, 1, 20);
const PARTS = new Set(
  (process.env.BENCH_SWARM_PARTS ?? "idle,convergence").split(",").map((p) => p.trim()),
);
const IDLE_WINDOW_S = 30;
const IDLE_WARMUP_S = 60;

/** The measurement (the original 2.2.2, and TrafficJam before this work), for comparison. */
const IDLE_BEFORE = {
  daemon: { original: "7803 ms (daemon + 3 workers)", before: "430 ms" },
  worker: { original: "(in the daemon's figure)", before: "1377–1460 ms" },
};

/** CPU (ms) of each container's cgroup over one window, nothing changing. */
async function idleCpu(
  swarm: SwarmLab,
  containers: Array<{ label: string; node: number; id: string }>,
): Promise<Map<string, number>> {
  const meters = await Promise.all(
    containers.map(async (c) => {
      const pid = Number(
        (await swarm.node(c.node).docker("inspect", "--format", "{{.State.Pid}}", c.id)).trim(),
      );
      return { ...c, cpu: cgroupCpu(pid) };
    }),
  );
  const before = meters.map((m) => m.cpu.usec());
  const t0 = performance.now();
  await sleep(IDLE_WINDOW_S * 1000);
  const elapsed = performance.now() - t0;
  return new Map(
    meters.map((m, i) => [
      m.label,
      ((m.cpu.usec() - before[i]!) / 1000) * ((IDLE_WINDOW_S * 1000) / elapsed),
    ]),
  );
}

/**
 * The daemon and its three workers idle at `pollS`: deployed, every worker enforcing, a warm-up,
 * then one window. Everything of that instance is cleared afterwards.
 */
async function idleAt(swarm: SwarmLab, pollS: number): Promise<Map<string, number>> {
  const instanceId = `idle${pollS}`;
  const tj = await startSwarmDaemon(swarm, {
    instanceId,
    network: NET,
    whitelist: "label=role=proxy",
    env: { SWARM_IMAGE: "trafficjam:e2e", POLL_INTERVAL: String(pollS) },
  });
  try {
    for (const n of [1, 2, 3])
      await tj.waitWorker(n, (l) => l.event === "rules.applied", "rules applied", 120_000);
    await sleep(IDLE_WARMUP_S * 1000);
    const workers = await Promise.all(
      [1, 2, 3].map(async (n) => ({
        label: `worker on node${n}`,
        node: n,
        id: (await tj.workerContainer(n))!,
      })),
    );
    return await idleCpu(swarm, [
      { label: "the Swarm daemon", node: 1, id: tj.container },
      ...workers,
    ]);
  } finally {
    await swarm.manager.docker("kill", "--signal", "USR1", tj.container);
    await waitFor(async () => !(await tj.daemonState()).running, {
      timeoutMs: 120_000,
      intervalMs: 500,
      what: "the idle daemon to clear and exit",
    });
    await swarm.manager.docker("rm", "-f", tj.container);
  }
}

async function idlePart(swarm: SwarmLab): Promise<void> {
  const at1 = await idleAt(swarm, 1);
  const at5 = await idleAt(swarm, 5);
  const f = (v: number | undefined) => (v === undefined ? "—" : `${Math.round(v)} ms`);
  const rows = [...at1.keys()].map((label) => {
    const before = label.startsWith("worker") ? IDLE_BEFORE.worker : IDLE_BEFORE.daemon;
    return [
      label,
      f(at1.get(label)),
      f(at5.get(label)),
      "≤ 250 ms",
      before.before,
      before.original,
    ];
  });
  process.stdout.write(
    `\nSwarm idle: CPU of each container's cgroup over ${IDLE_WINDOW_S} s, health checks included, ` +
      `nothing changing (${IDLE_WARMUP_S} s warm-up after every worker applied its rules)\n\n` +
      table(
        [
          "container",
          "POLL_INTERVAL=1",
          "POLL_INTERVAL=5",
          "goal",
          "before (issue, POLL_INTERVAL=1)",
          "original 2.2.2 (issue)",
        ],
        rows,
      ) +
      "\n",
  );
}

/** The original's figures, as measured by the issue that asked for this (not re-run here). */
const ORIGINAL = {
  isolation: "isolated 3.6 s, proxy allowed 105 s",
  proxyFirst: "105 s",
  proxyMove: "102 s",
  lbChange: "(not measured)",
  standalone: "(not measured)",
  deployCutOff: "105 s",
  restarts: "2 for 2 changes",
};

const ms = (t: string) => Date.parse(t);

async function startedAt(swarm: SwarmLab, node: number, container: string): Promise<number> {
  const raw = (
    await swarm.node(node).docker("inspect", "--format", "{{.State.StartedAt}}", container)
  ).trim();
  // RFC 3339 with nanoseconds: Date.parse keeps milliseconds
  return Date.parse(raw.replace(/(\.\d{3})\d*/, "$1"));
}

/** When node's worker first applied rules allowing `address` (ms), waiting for it. */
async function allowedAt(
  tj: SwarmTrafficJam,
  node: number,
  address: string,
  after: number,
): Promise<number> {
  const line = await waitFor(
    async () =>
      (await tj.workerLog(node)).find(
        (l: LogLine) =>
          l.event === "rules.applied" &&
          Array.isArray(l.allowed) &&
          l.allowed.includes(address) &&
          ms(String(l.time)) >= after - 1000,
      ) ?? false,
    { timeoutMs: 120_000, intervalMs: 100, what: `node${node} to allow ${address}` },
  );
  return ms(String(line.time));
}

/** Probes `from` → `to` every 100 ms until it gets through: when it did (ms). */
async function reachableAt(
  swarm: SwarmLab,
  node: number,
  from: Container,
  to: string,
): Promise<number> {
  const deadline = Date.now() + 180_000;
  while (Date.now() < deadline) {
    if (await swarm.node(node).tcp(from, to, 80, 300)) return Date.now();
    await sleep(100);
  }
  throw new Error(`${from.name} never reached ${to}`);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;
const fmt = (xs: number[]) =>
  xs.length === 0
    ? "—"
    : `${(median(xs) / 1000).toFixed(2)} s (max ${(Math.max(...xs) / 1000).toFixed(2)} s)`;

async function main(): Promise<void> {
  if (PARTS.has("idle")) {
    const swarm = await startSwarmLab({ nodes: 3, productImage: true });
    try {
      await deployBackendsAndProxy(swarm, {
        network: NET,
        subnet: "10.30.0.0/24",
        proxyLabel: "role=proxy",
        nodes: 3,
      });
      await idlePart(swarm);
    } finally {
      await swarm.stop();
    }
  }
  if (PARTS.has("convergence")) await convergence();
}

async function convergence(): Promise<void> {
  const swarm = await startSwarmLab({ nodes: 3, joined: 2, productImage: true });
  try {
    await deployBackendsAndProxy(swarm, {
      network: NET,
      subnet: "10.30.0.0/24",
      proxyLabel: "role=proxy",
      nodes: 2,
    });
    let proxy = await swarm.taskContainer("proxy", 1);
    let proxyNode = 1;
    const backends = [
      await swarm.taskContainer("backend", 1),
      await swarm.taskContainer("backend", 2),
    ];

    // 1. Deploying: the proxy keeps probing both backends while the daemon deploys its workers.
    let probing = true;
    let failures = 0;
    let probes = 0;
    const prober = (async () => {
      while (probing) {
        for (const [i, b] of backends.entries()) {
          probes++;
          if (!(await swarm.node(1).tcp(proxy, b.ipv4, 80, 500))) {
            failures++;
            process.stderr.write(`probe proxy → node${i + 1} failed\n`);
          }
        }
        await sleep(100);
      }
    })();
    const deployStart = Date.now();
    const tj = await startSwarmDaemon(swarm, {
      instanceId: "bench",
      network: NET,
      whitelist: "label=role=proxy",
      env: { SWARM_IMAGE: "trafficjam:e2e" },
    });
    const isolated = Math.max(
      ...(await Promise.all([1, 2].map((n) => allowedAt(tj, n, proxy.ipv4, deployStart)))),
    );
    await sleep(2000);
    probing = false;
    await prober;
    const deployFigure = isolated - deployStart;
    const crossOpen = await swarm.node(1).tcp(backends[0]!, backends[1]!.ipv4, 80, 1000);

    // 2. The proxy rescheduled to the other node, back and forth.
    const moveAllowed: number[] = [];
    const moveReach: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const to = proxyNode === 1 ? 2 : 1;
      await swarm.manager.docker(
        ...["service", "update", "--detach", "--no-resolve-image"],
        ...["--constraint-rm", `node.hostname==${swarm.node(proxyNode).hostname}`],
        ...["--constraint-add", `node.hostname==${swarm.node(to).hostname}`],
        "proxy",
      );
      await swarm.waitServiceRunning("proxy", 1);
      proxy = await swarm.taskContainer("proxy", to);
      proxyNode = to;
      const started = await startedAt(swarm, to, proxy.id);
      const other = backends[to === 1 ? 1 : 0]!;
      const reached = await reachableAt(swarm, to, proxy, other.ipv4);
      const allowed = Math.max(
        ...(await Promise.all([1, 2].map((n) => allowedAt(tj, n, proxy.ipv4, started)))),
      );
      moveAllowed.push(allowed - started);
      moveReach.push(reached - started);
    }

    // 3. A node joins: its backend task starts with its worker; isolation and the proxy there.
    const joinStart = Date.now();
    await swarm.joinNode(3);
    await swarm.waitServiceRunning("backend", 3);
    const b3 = await swarm.taskContainer("backend", 3);
    const b3Started = await startedAt(swarm, 3, b3.id);
    const proxyAllowedOn3 = await allowedAt(tj, 3, proxy.ipv4, joinStart);
    const b3CrossAtStart = await swarm.node(3).tcp(b3, backends[0]!.ipv4, 80, 500);
    const reach3 = await reachableAt(swarm, proxyNode, proxy, b3.ipv4);

    // 4. A standalone whitelisted container on a worker node.
    const standalone: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const c = await swarm
        .node(3)
        .run({ name: `edge${r}`, network: NET, labels: { role: "proxy" } });
      const started = await startedAt(swarm, 3, c.id);
      const at = Math.max(
        ...(await Promise.all([1, 2, 3].map((n) => allowedAt(tj, n, c.ipv4, started)))),
      );
      standalone.push(at - started);
      await swarm.node(3).docker("rm", "-f", c.id);
    }

    // 5. A load-balancer address changes: node3's tasks leave the network and come back.
    const lbChange: number[] = [];
    const lbOf = (node: number) => loadBalancerOf(swarm, node, NET);
    /** When node's worker first applied rules allowing / no longer allowing `address` after `after`. */
    const appliedAt = async (
      node: number,
      after: number,
      pred: (allowed: string[]) => boolean,
      what: string,
    ) =>
      ms(
        String(
          (
            await waitFor(
              async () =>
                (await tj.workerLog(node)).find(
                  (l) =>
                    l.event === "rules.applied" &&
                    Array.isArray(l.allowed) &&
                    ms(String(l.time)) > after &&
                    pred(l.allowed as string[]),
                ) ?? false,
              { timeoutMs: 120_000, intervalMs: 100, what },
            )
          ).time,
        ),
      );
    for (let r = 0; r < ROUNDS; r++) {
      // Node3's only task on the network leaves (a placement constraint), so do the network and
      // its load-balancer endpoint, whose address the other nodes revoke; then a task comes back,
      // with a new endpoint: measured from node3's worker allowing it there (its own member) to
      // the last other node allowing it.
      const oldLb = await lbOf(3);
      const away = `node.hostname!=${swarm.node(3).hostname}`;
      const mark = Date.now();
      await swarm.manager.docker(
        "service",
        "update",
        "--detach",
        "--no-resolve-image",
        "--constraint-add",
        away,
        "backend",
      );
      const revoked = Math.max(
        ...(await Promise.all(
          [1, 2].map((n) =>
            appliedAt(n, mark, (a) => !a.includes(oldLb), `node${n} to revoke ${oldLb}`),
          ),
        )),
      );
      await swarm.manager.docker(
        "service",
        "update",
        "--detach",
        "--no-resolve-image",
        "--constraint-rm",
        away,
        "backend",
      );
      await swarm.waitServiceRunning("backend", 3);
      const lb = await lbOf(3);
      const local = await appliedAt(3, revoked, (a) => a.includes(lb), `node3 to allow its ${lb}`);
      const at = Math.max(
        ...(await Promise.all(
          [1, 2].map((n) =>
            appliedAt(n, revoked, (a) => a.includes(lb), `node${n} to allow ${lb}`),
          ),
        )),
      );
      lbChange.push(at - local);
    }

    const restarts = await Promise.all(
      [1, 2].map(async (n) => (await tj.workerContainers(n)).length - 1),
    );

    // 6. The network created again: its new namespace on node2, from the moment its file
    // appears in Docker's netns folder (watched here), to node2's worker having its rules in force
    // there; and two tasks started together in it, probing each other from their first instant.
    const windows: number[] = [];
    const firstStart: number[] = [];
    let pairReached = 0;
    let pairTried = 0;
    for (let r = 0; r < ROUNDS; r++) {
      for (const service of ["backend", "proxy", "pair"])
        await swarm.removeService(service).catch(() => undefined);
      await waitFor(
        async () => (await swarm.manager.dockerResult(["network", "rm", NET])).code === 0,
        { timeoutMs: 60_000, intervalMs: 500, what: `${NET} to be removed` },
      );
      const netnsDir = `/proc/${swarm.node(2).dockerdPid}/root/run/docker/netns`;
      const { id } = await swarm.createOverlay(NET, { subnet: "10.30.0.0/24" });
      let appeared = 0;
      const watcher = watch(netnsDir, (_kind, name) => {
        if (!appeared && typeof name === "string" && name.endsWith(`-${id.slice(0, 10)}`))
          appeared = Date.now();
      });
      try {
        await swarm.createService([
          ...["--name", "pair", "--replicas", "2", "--network", NET],
          ...["--constraint", `node.hostname==${swarm.node(2).hostname}`],
          ...["tj-test", "sh", "-c", PAIR_SCRIPT],
        ]);
        const tasks = await waitFor(
          async () => {
            const found = await swarm.taskContainers("pair", 2);
            return found.length === 2 ? found : false;
          },
          { timeoutMs: 60_000, intervalMs: 250, what: "the pair's two tasks on node2" },
        );
        const enforced = await waitFor(
          async () =>
            (await tj.workerLog(2)).find(
              (l) =>
                l.event === "rules.applied" &&
                appeared > 0 &&
                ms(String(l.time)) >= appeared &&
                String(l.bridge) === "br0",
            ) ?? false,
          {
            timeoutMs: 60_000,
            intervalMs: 100,
            what: "node2's worker to enforce in the new namespace",
          },
        );
        windows.push(ms(String(enforced.time)) - appeared);
        const starts = await Promise.all(tasks.map((t) => startedAt(swarm, 2, t.id)));
        firstStart.push(Math.min(...starts) - appeared);
        await sleep(5_000);
        for (const t of tasks) {
          const count = async (file: string) =>
            Number(
              (
                await swarm.node(2).exec(t, ["sh", "-c", `cat ${file} 2>/dev/null | wc -l`])
              ).stdout.trim(),
            ) || 0;
          pairTried += await count("/tmp/tried");
          pairReached += await count("/tmp/reached");
        }
      } finally {
        watcher.close();
      }
    }

    process.stdout.write(
      `\nSwarm convergence, three-node lab (engines in network namespaces), ${ROUNDS} round(s) each\n\n` +
        table(
          ["", "TrafficJam (this run)", "original (issue's measurement)"],
          [
            [
              "daemon start → every node enforcing, the proxy allowed everywhere",
              `${(deployFigure / 1000).toFixed(2)} s`,
              ORIGINAL.isolation,
            ],
            [
              "proxy probes failed while the workers were deployed",
              `${failures} of ${probes}`,
              `cut off ${ORIGINAL.deployCutOff}`,
            ],
            ["proxy rescheduled → allowed on every node", fmt(moveAllowed), ORIGINAL.proxyMove],
            [
              "proxy rescheduled → its first probe through (from its start)",
              fmt(moveReach),
              ORIGINAL.proxyMove,
            ],
            [
              "node joins → proxy allowed there (from the join)",
              `${((proxyAllowedOn3 - joinStart) / 1000).toFixed(2)} s`,
              "(not measured)",
            ],
            [
              "node joins → its backend task started, then proxy allowed there",
              `${((proxyAllowedOn3 - b3Started) / 1000).toFixed(2)} s`,
              "(not measured)",
            ],
            [
              "node joins → proxy reaches its backend (from its start)",
              `${((reach3 - b3Started) / 1000).toFixed(2)} s`,
              "(not measured)",
            ],
            [
              "new node's backend → node1's backend right after start",
              b3CrossAtStart ? "GOT THROUGH" : "blocked",
              "—",
            ],
            [
              "standalone whitelisted container on a worker → allowed on every node",
              fmt(standalone),
              ORIGINAL.standalone,
            ],
            [
              "load-balancer address changes → allowed on the other nodes (from its own node)",
              fmt(lbChange),
              ORIGINAL.lbChange,
            ],
            [
              "worker restarts for these changes (node1, node2)",
              restarts.join(", "),
              ORIGINAL.restarts,
            ],
            ["backends isolated across nodes after deployment", crossOpen ? "NO" : "yes", "yes"],
            [
              "network created again → rules in force in its new namespace (from the file's appearance)",
              fmt(windows),
              "(not measured)",
            ],
            ["  … its first task started (from the file's appearance)", fmt(firstStart), "—"],
            [
              "  … two tasks probing each other from their first instant: connections",
              `${pairReached} of ${pairTried}`,
              "—",
            ],
          ],
        ) +
        "\n",
    );
  } finally {
    await swarm.stop();
  }
}

await main();
