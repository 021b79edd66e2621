// `npm run demo`: TrafficJam in one minute, on a throwaway Docker host. It starts a dockerd in its
// own network namespace (the end-to-end test lab: the machine's own Docker and firewall are never
// touched), loads an image made of the static busybox alone (no compiler needed), puts a proxy and
// three backends on one network, probes who can open a TCP connection to whom (busybox nc) before
// and after TrafficJam starts, and removes everything, also on Ctrl-C.
import {
  iptablesRules,
  randomId,
  startDaemon,
  startLab,
  type Container,
  type DaemonProcess,
  type Lab,
  type LogEntry,
} from "../test/e2e/lab/index.js";

const NET = "webnet";
const PUBLISHED = 18080;
/** busybox nc counts whole seconds: a connection not open within 1 s reads as BLOCKED. */
const PROBE_TIMEOUT_MS = 1000;
const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const say = (s = "") => process.stdout.write(`${s}\n`);

interface Cast {
  proxy: Container;
  backends: Container[];
  hostAddress: string;
}

async function probeMatrix(lab: Lab, cast: Cast): Promise<string[][]> {
  const from = [cast.proxy, ...cast.backends];
  const to: Array<[string, string, number]> = [
    ...from.map((c): [string, string, number] => [c.name, c.ipv4, 80]),
    ["published", cast.hostAddress, PUBLISHED],
  ];
  return Promise.all(
    from.map((src) =>
      Promise.all(
        to.map(async ([name, ip, port]) => {
          if (name === src.name) return "-";
          return (await lab.tcp(src, ip, port, PROBE_TIMEOUT_MS)) ? "open" : "BLOCKED";
        }),
      ),
    ),
  );
}

function printMatrix(title: string, cast: Cast, cells: string[][], before?: string[][]): void {
  const rows = [cast.proxy, ...cast.backends].map((c) => c.name);
  const header = ["from \\ to", ...rows, `host:${PUBLISHED} (backend1's port)`];
  const width = header.map((h, i) =>
    Math.max(h.length, ...cells.map((r) => (i === 0 ? 0 : (r[i - 1] ?? "").length + 1))),
  );
  width[0] = Math.max(width[0] ?? 0, ...rows.map((r) => r.length));
  const line = (cols: string[]) =>
    cols
      .map((c, i) => c.padEnd(width[i] ?? 0))
      .join("  ")
      .trimEnd();
  say(bold(title));
  say("  " + line(header));
  rows.forEach((name, r) => {
    const row = cells[r] ?? [];
    const shown = row.map((cell, c) => (before && before[r]?.[c] !== cell ? `${cell}*` : cell));
    say("  " + line([name, ...shown]));
  });
}

async function main(): Promise<void> {
  say(bold("TrafficJam demo"));
  say("A throwaway Docker host (its own dockerd in its own network namespace) runs a reverse");
  say(`proxy and three backends on one network, "${NET}". backend1 publishes port ${PUBLISHED}.`);
  say("Each cell: can the row's container open a TCP connection to the column (within 1 s)?");
  say();
  const t0 = Date.now();
  // a name of its own: test labs may run beside it, and so may another demo
  const lab = await startLab({ name: `demo-${randomId(2)}`, image: "busybox" });
  let daemon: DaemonProcess | undefined;
  try {
    await lab.createNetwork(NET, { subnets: ["172.30.0.0/24"] });
    const [proxy, ...backends] = await Promise.all([
      lab.run({ name: "proxy", network: NET, ip: "172.30.0.10", labels: { role: "proxy" } }),
      lab.run({
        name: "backend1",
        network: NET,
        ip: "172.30.0.21",
        publish: [`${PUBLISHED}:80`],
      }),
      lab.run({ name: "backend2", network: NET, ip: "172.30.0.22" }),
      lab.run({ name: "backend3", network: NET, ip: "172.30.0.23" }),
    ]);
    const cast: Cast = { proxy: proxy!, backends, hostAddress: await lab.hostAddressOf(NET) };
    say(
      `Docker host ready in ${((Date.now() - t0) / 1000).toFixed(1)} s: proxy ${cast.proxy.ipv4}, ` +
        backends.map((b) => `${b.name} ${b.ipv4}`).join(", ") +
        `, host ${cast.hostAddress}.`,
    );
    say();
    const before = await probeMatrix(lab, cast);
    printMatrix("BEFORE TrafficJam: the network is flat", cast, before);
    say("  A compromised backend can reach every other backend, the proxy, and published ports.");
    say();

    say(bold("Starting TrafficJam") + "  NETWORK=webnet WHITELIST_FILTER=label=role=proxy");
    daemon = startDaemon(lab, {
      NETWORK: NET,
      WHITELIST_FILTER: "label=role=proxy",
      INSTANCE_ID: "demo",
    });
    const applied = await daemon.waitForLog(
      (e: LogEntry) => e.event === "rules.applied" || e.event === "rules.verified",
      20_000,
    );
    say(
      `  ${String(applied.event)}: subnets ${JSON.stringify(applied.subnets)}, whitelisted ${JSON.stringify(applied.allowed)}, ${String(applied.ms)} ms`,
    );
    say("  Rules it keeps (iptables, filter table):");
    const rules = (await iptablesRules(lab, 4)).filter((l) => /TJF_demo|TJI_demo/.test(l));
    for (const r of rules.filter((l) => l.startsWith("-A"))) say(`    ${r}`);
    say();

    const after = await probeMatrix(lab, cast);
    printMatrix("AFTER TrafficJam (* = changed)", cast, after, before);
    say("  Only the proxy opens connections to the backends (their replies pass). Backends reach");
    say("  neither each other nor the proxy. No container of the network opens connections to the");
    say(
      "  host, so the published port is closed to them all (ALLOW_HOST_TRAFFIC=true reopens it);",
    );
    say("  from outside the network it stays published as usual.");
    say();

    daemon.signal("SIGTERM");
    await daemon.waitExit(10_000);
    say(
      "TrafficJam stopped with SIGTERM: its rules stay in force (fail-closed); `trafficjam --clear`",
    );
    say("or SIGUSR1 removes them.");
  } finally {
    await daemon?.kill().catch(() => undefined);
    await lab.stop();
    say(
      `Removed the demo Docker host, its containers, images and namespace (${((Date.now() - t0) / 1000).toFixed(0)} s in all).`,
    );
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`demo failed: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
