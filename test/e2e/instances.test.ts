// Several instances side by side (IDs that are prefixes of each other), --clear of one of them,
// and ALLOW_HOST_TRAFFIC on and off, on a running host.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  iptablesRules,
  iptablesSave,
  runCli,
  startLab,
  type Container,
  type DaemonProcess,
  type Lab,
  type LogEntry,
} from "./lab/index.js";
import {
  PROXY_LABEL,
  PUBLISHED_PORT,
  buildTopology,
  eventually,
  expectAll,
  isApplied,
  startTrafficJam,
  type Topology,
} from "./topology.js";

interface Small {
  net: string;
  proxy: Container;
  b1: Container;
  b2: Container;
}

/** A dual-stack network with a proxy and two backends (no published port: web has it). */
async function buildSmall(lab: Lab, net: string, v4: string, v6: string): Promise<Small> {
  await lab.createNetwork(net, { subnets: [`${v4}.0/24`, `${v6}::/64`] });
  const [proxy, b1, b2] = await Promise.all([
    lab.run({
      name: `${net}-proxy`,
      network: net,
      ip: `${v4}.10`,
      ip6: `${v6}::10`,
      labels: PROXY_LABEL,
    }),
    lab.run({ name: `${net}-b1`, network: net, ip: `${v4}.21`, ip6: `${v6}::21` }),
    lab.run({ name: `${net}-b2`, network: net, ip: `${v4}.22`, ip6: `${v6}::22` }),
  ]);
  return { net, proxy, b1, b2 };
}

/** iptables-save of both families, for text assertions. */
async function saved(lab: Lab): Promise<Record<4 | 6, string>> {
  const [v4, v6] = await Promise.all([iptablesSave(lab, 4), iptablesSave(lab, 6)]);
  return { 4: v4, 6: v6 };
}

/**
 * The filter table of one family from `iptables -S` (whole table: ip6tables-nft 1.8.9 answers
 * "incompatible" rather than "No chain" when one names a chain that does not exist): chain ->
 * its "-A" lines.
 */
async function filterChains(lab: Lab, family: 4 | 6): Promise<Map<string, string[]>> {
  const chains = new Map<string, string[]>();
  for (const line of await iptablesRules(lab, family)) {
    const [verb, chain] = line.split(" ");
    if (!chain) continue;
    if (!chains.has(chain)) chains.set(chain, []);
    if (verb === "-A") chains.get(chain)!.push(line);
  }
  return chains;
}

/** Where TRAFFICJAM is jumped from: DOCKER-USER, or FORWARD (IPv6 on Docker 20.10 has none). */
const forwardAnchor = (chains: Map<string, string[]>) =>
  chains.has("DOCKER-USER") ? "DOCKER-USER" : "FORWARD";

/**
 * Departures from the shared layout: exactly one jump from each anchor (DOCKER-USER, or FORWARD
 * for IPv6 on Docker 20.10, and INPUT) into the entry chains, each first, and exactly one jump
 * per running instance (web, web2) in each entry chain.
 */
async function layoutProblems(lab: Lab): Promise<string[]> {
  const problems: string[] = [];
  for (const family of [4, 6] as const) {
    const chains = await filterChains(lab, family);
    for (const [anchor, entry, prefix] of [
      [forwardAnchor(chains), "TRAFFICJAM", "TJF_"],
      ["INPUT", "TRAFFICJAM_INPUT", "TJI_"],
    ] as const) {
      const rules = chains.get(anchor) ?? [];
      const jump = `-A ${anchor} -j ${entry}`;
      const count = rules.filter((l) => l === jump).length;
      if (count !== 1 || rules[0] !== jump)
        problems.push(`IPv${family} ${anchor}: ${count} jumps to ${entry}, first rule ${rules[0]}`);
      const inEntry = chains.get(entry) ?? [];
      for (const id of ["web", "web2"]) {
        const own = inEntry.filter(
          (l) => l === `-A ${entry} -m comment --comment "trafficjam:${id}" -j ${prefix}${id}`,
        );
        if (own.length !== 1) problems.push(`IPv${family} ${entry}: ${own.length} jumps for ${id}`);
      }
    }
  }
  return problems;
}

/** Anything of instance `web` — and only `web`, never `web2` — in a dump. */
const OF_WEB = /\bTJF_web(?![A-Za-z0-9_])|\bTJI_web(?![A-Za-z0-9_])|trafficjam:web(?![A-Za-z0-9_])/;

describe("instances side by side, --clear, ALLOW_HOST_TRAFFIC", () => {
  let lab: Lab;
  let web: Topology;
  let web2: Small;
  const daemons: DaemonProcess[] = [];
  let dWeb: DaemonProcess;
  let dWeb2: DaemonProcess;

  const track = (d: DaemonProcess) => {
    daemons.push(d);
    return d;
  };

  before(async () => {
    lab = await startLab({ name: "inst", ipv6: true });
    [web, web2] = await Promise.all([
      buildTopology(lab, { net: "web", v4: "172.40.0", v6: "fd00:40", otherV4: "172.41.0" }),
      buildSmall(lab, "web2", "172.42.0", "fd00:42"),
    ]);
    await lab.startHostServer(); // TCP 80/8080, UDP 9000 on every host address; stopped with the lab
  });
  after(async () => {
    for (const d of daemons) await d.kill().catch(() => undefined);
    await lab?.stop();
  });

  it(
    "two instances started at the same moment end with one jump from each anchor",
    // Both may see DOCKER-USER/INPUT without the entry jump and both insert it (nothing locks
    // iptables-nft between processes); the next resync makes it single again.
    async () => {
      const pair = await Promise.allSettled([
        startTrafficJam(lab, "web"),
        startTrafficJam(lab, "web2"),
      ]);
      const started = pair.flatMap((r) => (r.status === "fulfilled" ? [track(r.value)] : []));
      try {
        for (const r of pair) if (r.status === "rejected") throw r.reason;
        await eventually(
          "one jump from each anchor (a duplicate is repaired by the next 1 s resync)",
          async () => (await layoutProblems(lab)).length === 0,
          true,
          3_000,
        );
      } finally {
        // Whatever happened, SIGUSR1 to both removes everything, duplicates included.
        for (const d of started) {
          d.signal("SIGUSR1");
          assert.deepEqual(await d.waitExit(10_000), { code: 0, signal: null });
        }
        const left = await saved(lab);
        for (const family of [4, 6] as const)
          assert.doesNotMatch(left[family], /TRAFFICJAM|TJF_|TJI_|trafficjam/, left[family]);
      }
    },
  );

  it("web and web2 (prefix IDs): both isolated, each proxy reaches its own backends", async () => {
    dWeb = track(await startTrafficJam(lab, "web"));
    // DEBUG: its resyncs' "rules.verified" lines are counted below.
    dWeb2 = track(await startTrafficJam(lab, "web2", { DEBUG: "true" }));
    const [b1, b2] = web.backends;
    await expectAll(
      [
        ["web b1→b2 tcp", () => lab.tcp(b1, b2.ipv4, 80, 500)],
        ["web b2→b1 udp", () => lab.udp(b2, b1.ipv4, 9000, 500)],
        ["web b1→b2 tcp v6", () => lab.tcp(b1, b2.ipv6, 80, 500)],
        ["web2 b1→b2 tcp", () => lab.tcp(web2.b1, web2.b2.ipv4, 80, 500)],
        ["web2 b2→b1 icmp", () => lab.ping(web2.b2, web2.b1.ipv4)],
        ["web2 b2→b1 tcp v6", () => lab.tcp(web2.b2, web2.b1.ipv6, 80, 500)],
        ["web2 b1→proxy tcp", () => lab.tcp(web2.b1, web2.proxy.ipv4, 80, 500)],
      ],
      false,
    );
    await expectAll(
      [
        ["web proxy→b1", () => lab.tcp(web.proxy, b1.ipv4, 80)],
        ["web proxy→b2 v6", () => lab.tcp(web.proxy, b2.ipv6, 80)],
        ["web2 proxy→b1", () => lab.tcp(web2.proxy, web2.b1.ipv4, 80)],
        ["web2 proxy→b2 v6", () => lab.tcp(web2.proxy, web2.b2.ipv6, 80)],
      ],
      true,
    );
    // One shared entry per hook, one jump per instance in it.
    assert.deepEqual(await layoutProblems(lab), []);
  });

  it("trafficjam --clear (INSTANCE_ID=web) removes web, exactly, and leaves web2 whole", async () => {
    const [b1, b2] = web.backends;
    // Stop web's daemon first (SIGTERM leaves the rules in force), or it would put them back.
    dWeb.signal("SIGTERM");
    assert.deepEqual(await dWeb.waitExit(10_000), { code: 0, signal: null });
    await expectAll([["web b1→b2 after SIGTERM", () => lab.tcp(b1, b2.ipv4, 80, 500)]], false);
    const before = await saved(lab);
    assert.match(before[4], OF_WEB, "web's rules were there before --clear");

    const mark = dWeb2.mark();
    const r = await runCli(lab, { INSTANCE_ID: "web" }, ["--clear"], 20_000);
    assert.equal(r.code, 0, `--clear: ${r.stderr}${r.stdout}`);

    const after = await saved(lab);
    for (const family of [4, 6] as const) {
      assert.doesNotMatch(after[family], OF_WEB, `IPv${family} still has web:\n${after[family]}`);
      // web2's chains, its jumps in the entry chains, and the entry jumps, untouched.
      const keep = (line: string) =>
        /TJ[FI]_web2\b|trafficjam:web2"|-j TRAFFICJAM(_INPUT)?$/.test(line);
      const lines = (dump: string) =>
        dump
          .split("\n")
          .filter((l) => l.startsWith("-"))
          .filter(keep);
      assert.deepEqual(lines(after[family]), lines(before[family]), `IPv${family} web2 rules`);
      assert.ok(
        lines(after[family]).some((l) => l.startsWith("-A TJF_web2 ") && l.endsWith("-j DROP")),
      );
      assert.ok(
        lines(after[family]).some((l) => l.startsWith("-A TJI_web2 ") && l.endsWith("-j DROP")),
      );
      const chains = await filterChains(lab, family);
      const anchor = forwardAnchor(chains);
      assert.equal(chains.get(anchor)?.[0], `-A ${anchor} -j TRAFFICJAM`);
      assert.equal(chains.get("INPUT")?.[0], "-A INPUT -j TRAFFICJAM_INPUT");
      assert.deepEqual(chains.get("TRAFFICJAM"), [
        '-A TRAFFICJAM -m comment --comment "trafficjam:web2" -j TJF_web2',
      ]);
      assert.deepEqual(chains.get("TRAFFICJAM_INPUT"), [
        '-A TRAFFICJAM_INPUT -m comment --comment "trafficjam:web2" -j TJI_web2',
      ]);
    }
    await expectAll(
      [
        ["web b1→b2", () => lab.tcp(b1, b2.ipv4, 80)],
        ["web b2→b1 v6", () => lab.tcp(b2, b1.ipv6, 80)],
        ["web2 proxy→b1", () => lab.tcp(web2.proxy, web2.b1.ipv4, 80)],
      ],
      true,
    );
    await expectAll(
      [
        ["web2 b1→b2 tcp", () => lab.tcp(web2.b1, web2.b2.ipv4, 80, 500)],
        ["web2 b2→b1 udp", () => lab.udp(web2.b2, web2.b1.ipv4, 9000, 500)],
        ["web2 b1→b2 tcp v6", () => lab.tcp(web2.b1, web2.b2.ipv6, 80, 500)],
      ],
      false,
    );
    // web2's daemon had nothing to repair over the next resyncs: --clear never touched it.
    const resynced = (e: LogEntry) => e.event === "rules.verified" && e.reason === "resync";
    let from = dWeb2.mark();
    for (let i = 0; i < 2; i++) {
      await dWeb2.waitForLog(resynced, 5_000, from);
      from = dWeb2.mark();
    }
    assert.ok(dWeb2.running, dWeb2.output());
    const since = dWeb2.lines.slice(mark);
    assert.ok(!since.some((l) => /rules repaired|rules applied/.test(l)), since.join("\n"));
  });

  it("SIGUSR1 to web2, the last instance, removes everything of TrafficJam, IPv4 and IPv6", async () => {
    dWeb2.signal("SIGUSR1");
    assert.deepEqual(await dWeb2.waitExit(10_000), { code: 0, signal: null });
    const after = await saved(lab);
    for (const family of [4, 6] as const) {
      assert.doesNotMatch(
        after[family],
        /trafficjam|TRAFFICJAM|TJF_|TJI_/i,
        `IPv${family}:\n${after[family]}`,
      );
    }
    await expectAll(
      [
        ["web2 b1→b2", () => lab.tcp(web2.b1, web2.b2.ipv4, 80)],
        ["web2 b2→b1 v6", () => lab.tcp(web2.b2, web2.b1.ipv6, 80)],
      ],
      true,
    );
  });

  /** Probes of the host from backend b2 of web: a published port and services of the host. */
  const hostProbes = (): Array<[string, () => Promise<boolean>]> => {
    const b2 = web.backends[1];
    return [
      ["b1's published port via the gateway", () => lab.tcp(b2, web.gateway4, PUBLISHED_PORT, 500)],
      [
        "b1's published port via another host address",
        () => lab.tcp(b2, web.otherHostAddress, PUBLISHED_PORT, 500),
      ],
      ["host service tcp", () => lab.tcp(b2, web.gateway4, 8080, 500)],
      ["host service udp", () => lab.udp(b2, web.gateway4, 9000, 500)],
      ["host service tcp v6", () => lab.tcp(b2, web.gateway6!, 8080, 500)],
    ];
  };
  const backendProbes = (): Array<[string, () => Promise<boolean>]> => {
    const [b1, b2] = web.backends;
    return [
      ["b2→b1 tcp", () => lab.tcp(b2, b1.ipv4, 80, 500)],
      ["b2→b1 udp", () => lab.udp(b2, b1.ipv4, 9000, 500)],
      ["b2→b1 icmp", () => lab.ping(b2, b1.ipv4)],
      ["b2→b1 tcp v6", () => lab.tcp(b2, b1.ipv6, 80, 500)],
      ["b2→proxy tcp", () => lab.tcp(b2, web.proxy.ipv4, 80, 500)],
    ];
  };

  it("ALLOW_HOST_TRAFFIC unset: the host and published ports are out of reach", async () => {
    // Sanity: with no TrafficJam at all, every probe goes through (so "dropped" below means it).
    await expectAll(hostProbes(), true);
    const d = track(await startTrafficJam(lab, "web"));
    await expectAll([...hostProbes(), ...backendProbes()], false);
    assert.ok(((await filterChains(lab, 4)).get("TJI_web")?.length ?? 0) > 0, "TJI_web exists");
    d.signal("SIGUSR1");
    assert.deepEqual(await d.waitExit(10_000), { code: 0, signal: null });
  });

  it("ALLOW_HOST_TRAFFIC=false: the same probes are dropped; SIGTERM leaves them dropped", async () => {
    const d = track(await startTrafficJam(lab, "web", { ALLOW_HOST_TRAFFIC: "false" }));
    await expectAll([...hostProbes(), ...backendProbes()], false);
    d.signal("SIGTERM");
    assert.deepEqual(await d.waitExit(10_000), { code: 0, signal: null });
    const left = (await filterChains(lab, 4)).get("TJI_web") ?? [];
    assert.ok(left.length > 0, "TJI_web stays after SIGTERM");
    await expectAll(hostProbes().slice(0, 1), false);
  });

  it("ALLOW_HOST_TRAFFIC=true on the same host: the old input chain goes; host reachable, backends still isolated", async () => {
    const d = track(await startTrafficJam(lab, "web", { ALLOW_HOST_TRAFFIC: "true" }));
    const entry = await d.waitForLog(isApplied, 1000);
    assert.ok(
      Array.isArray(entry.differences) && entry.differences.some((x) => /TJI_web/.test(String(x))),
      `the apply removed TJI_web: ${JSON.stringify(entry.differences)}`,
    );
    for (const family of [4, 6] as const) {
      const all = (await iptablesRules(lab, family)).join("\n");
      assert.doesNotMatch(all, /TJI_/, `IPv${family}:\n${all}`);
      assert.match(all, /-A TJF_web .* -j DROP/, `IPv${family} forward chain kept`);
    }
    await expectAll(hostProbes(), true);
    await expectAll(backendProbes(), false);
    await expectAll([["proxy→b1", () => lab.tcp(web.proxy, web.backends[0].ipv4, 80)]], true);
  });
});
