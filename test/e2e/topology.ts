// The network every isolation test uses: one proxy (whitelisted by label), three backends (b1
// publishes a port on the host), and an outsider on another network. Dual-stack when asked.
import assert from "node:assert/strict";
import {
  startDaemon,
  waitFor,
  type Container,
  type DaemonProcess,
  type Lab,
  type LogEntry,
} from "./lab/index.js";

export const PROXY_LABEL = { "tj.role": "proxy" };
export const WHITELIST_FILTER = "label=tj.role=proxy";
export const PUBLISHED_PORT = 18080;

export interface Topology {
  net: string;
  other: string;
  proxy: Container;
  backends: [Container, Container, Container];
  outsider: Container;
  /** The protected network's gateway: the host, as seen from the network. */
  gateway4: string;
  gateway6?: string;
  /** Another address of the host: the gateway of the other network. */
  otherHostAddress: string;
}

export async function buildTopology(
  lab: Lab,
  opts: { net?: string; v4?: string; v6?: string; otherV4?: string } = {},
): Promise<Topology> {
  const net = opts.net ?? "web";
  const other = `${net}-other`;
  const v4 = opts.v4 ?? "172.28.0";
  const otherV4 = opts.otherV4 ?? "172.29.0";
  await lab.createNetwork(net, {
    subnets: opts.v6 ? [`${v4}.0/24`, `${opts.v6}::/64`] : [`${v4}.0/24`],
  });
  await lab.createNetwork(other, { subnets: [`${otherV4}.0/24`] });
  const six = (n: number) => (opts.v6 ? { ip6: `${opts.v6}::${n}` } : {});
  const [proxy, b1, b2, b3, outsider] = await Promise.all([
    lab.run({
      name: `${net}-proxy`,
      network: net,
      ip: `${v4}.10`,
      ...six(10),
      labels: PROXY_LABEL,
    }),
    lab.run({
      name: `${net}-b1`,
      network: net,
      ip: `${v4}.21`,
      ...six(21),
      publish: [`${PUBLISHED_PORT}:80`],
    }),
    lab.run({ name: `${net}-b2`, network: net, ip: `${v4}.22`, ...six(22) }),
    lab.run({ name: `${net}-b3`, network: net, ip: `${v4}.23`, ...six(23) }),
    lab.run({ name: `${net}-outsider`, network: other, ip: `${otherV4}.30` }),
  ]);
  return {
    net,
    other,
    proxy,
    backends: [b1, b2, b3],
    outsider,
    gateway4: await lab.hostAddressOf(net),
    gateway6: opts.v6 ? await lab.hostAddressOf(net, 6) : undefined,
    otherHostAddress: await lab.hostAddressOf(other),
  };
}

/** Starts TrafficJam on `net` with a short POLL_INTERVAL and waits for its first apply. */
export async function startTrafficJam(
  lab: Lab,
  net: string,
  env: Record<string, string> = {},
): Promise<DaemonProcess> {
  const daemon = startDaemon(lab, {
    NETWORK: net,
    WHITELIST_FILTER,
    INSTANCE_ID: net.replace(/[^A-Za-z0-9_]/g, "_"),
    POLL_INTERVAL: "1",
    ...env,
  });
  await daemon.waitForLog(isInForce, 15_000);
  return daemon;
}

/** The first pass that leaves the rules in force, whether it had to change them or not. */
export const isInForce = (e: LogEntry) =>
  isApplied(e) || (e.event === "rules.verified" && e.level === "info");

export const isApplied = (e: LogEntry) =>
  e.event === "rules.applied" || e.event === "rules.repaired";

/** Waits until `probe` gives `expected`, polling; fails with `what` after `timeoutMs`. */
export async function eventually(
  what: string,
  probe: () => Promise<boolean>,
  expected: boolean,
  timeoutMs: number,
): Promise<number> {
  const start = Date.now();
  await waitFor(async () => (await probe()) === expected, { timeoutMs, intervalMs: 100, what });
  return Date.now() - start;
}

/** Asserts every probe in `cases` gives `expected`, reporting all mismatches at once. */
export async function expectAll(
  cases: Array<[string, () => Promise<boolean>]>,
  expected: boolean,
): Promise<void> {
  const results = await Promise.all(
    cases.map(async ([name, probe]) => [name, await probe()] as const),
  );
  const wrong = results.filter(([, got]) => got !== expected).map(([name]) => name);
  assert.deepEqual(
    wrong,
    [],
    `expected ${expected ? "connected" : "blocked"}: ${wrong.join(", ")}`,
  );
}

/** Waits for a container running `tjprobe watch` to print its summary; returns its output. */
export async function watchOutput(
  lab: Lab,
  container: Container,
  timeoutMs: number,
): Promise<string> {
  await eventually(
    `${container.name}'s probe to finish`,
    async () => /summary/.test(await lab.docker("logs", container.name)),
    true,
    timeoutMs,
  );
  return lab.docker("logs", container.name);
}

/** Waits until a TCP port listens inside a container (busybox netstat), e.g. an `nc -l` started with `exec -d`. */
export async function listening(lab: Lab, container: Container, port: number): Promise<void> {
  await waitFor(
    async () => {
      const r = await lab.exec(container, ["netstat", "-ltn"]);
      return r.code === 0 && new RegExp(`:${port}\\s`).test(r.stdout);
    },
    { timeoutMs: 5_000, intervalMs: 50, what: `${container.name} to listen on ${port}` },
  );
}
