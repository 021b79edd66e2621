// A proxy that loses its allowance while it has open connections: its tracked flows are deleted
// (and only those), so its open connection is cut while another proxy's keeps flowing. Shared by
// the lifecycle suite (iptables) and the isolation suite (every backend).
import assert from "node:assert/strict";
import type { TestContext } from "node:test";
import {
  conntrackList,
  sleep,
  waitFor,
  type Container,
  type DaemonProcess,
  type Lab,
} from "./lab/index.js";
import { expectAll, listening, startTrafficJam } from "./topology.js";

/** The original source address of each `conntrack -L` line. */
export const flowsFrom = (lines: string[], ip: string) =>
  lines.filter((l) => /\bsrc=(\S+)/.exec(l)?.[1] === ip);

export interface RevocationOptions {
  /** Daemon environment beyond NETWORK/WHITELIST_FILTER (e.g. FIREWALL_BACKEND, DEBUG). */
  env: Record<string, string>;
  /** Network name and its /24 prefix, unique within the lab. */
  network: string;
  prefix: string;
  pollIntervalS: number;
  /** Daemons started here, for the caller to kill. */
  started: DaemonProcess[];
}

export async function proxyLosesItsAllowance(
  lab: Lab,
  tc: TestContext,
  o: RevocationOptions,
): Promise<void> {
  const POLL_INTERVAL_S = o.pollIntervalS;
  const net = o.network;
  // Docker itself deletes the conntrack entries of an endpoint leaving a network (disconnect,
  // stop, removal), which would hide whether TrafficJam does. So here the proxy loses its
  // allowance while staying on the network: a second instance whitelists by name, and the
  // proxy is renamed.
  await lab.createNetwork(net, { subnets: [`${o.prefix}.0/24`] });
  const [pa, pb, backend] = await Promise.all([
    lab.run({ name: `${net}-proxy-a`, network: net, ip: `${o.prefix}.10` }),
    lab.run({ name: `${net}-proxy-b`, network: net, ip: `${o.prefix}.11` }),
    lab.run({ name: `${net}-backend`, network: net, ip: `${o.prefix}.21` }),
  ]);
  const ct = await startTrafficJam(lab, net, { WHITELIST_FILTER: `name=${net}-proxy`, ...o.env });
  o.started.push(ct);
  // Long-lived connections: the backend streams a line every 100 ms to each proxy, on port
  // 7000 to proxy-a (to be revoked) and 7001 to proxy-b (to be kept).
  const streams = [
    [pa, 7000],
    [pb, 7001],
  ] as const;
  for (const [client, port] of streams) {
    const loop = "i=0; while :; do i=$((i+1)); echo $i; sleep 0.1; done";
    await lab.docker("exec", "-d", backend.name, "sh", "-c", `${loop} | nc -l -p ${port}`);
    await listening(lab, backend, port);
    const nc = `sleep 120 | nc ${backend.ipv4} ${port} > /tmp/stream`;
    await lab.docker("exec", "-d", client.name, "sh", "-c", nc);
  }
  const received = async (c: Container) => {
    const r = await lab.exec(c.id, ["sh", "-c", "wc -l < /tmp/stream"]);
    assert.equal(r.code, 0, r.stderr);
    return Number(r.stdout.trim());
  };
  const established = (lines: string[], from: Container, port: number) =>
    flowsFrom(lines, from.ipv4).filter(
      (l) =>
        l.includes(" ESTABLISHED ") &&
        l.includes(`dst=${backend.ipv4} `) &&
        l.includes(`dport=${port} `),
    );
  const tracked = await waitFor(
    async () => {
      const lines = await conntrackList(lab, 4);
      for (const [client, port] of streams) {
        if (established(lines, client, port).length === 0) return false;
        if ((await received(client)) < 3) return false;
      }
      return lines;
    },
    { timeoutMs: 5_000, what: "both streams to flow and be tracked as ESTABLISHED" },
  );
  const before = flowsFrom(tracked, pa.ipv4).length;

  const mark = ct.mark();
  const renamedAt = Date.now();
  await lab.docker("rename", pa.name, `${net}-retired`);
  // A rename event triggers a pass (the POLL_INTERVAL resync would find it too).
  const revoked = await ct.waitForLog(
    (e) => e.event === "allowance.revoked" && e.address === pa.ipv4,
    POLL_INTERVAL_S * 1000 + 2_000,
    mark,
  );
  const revokedMs = Date.now() - renamedAt;
  const applied = await ct.waitForLog(
    (e) => e.event === "rules.applied" || e.event === "rules.repaired",
    1_000,
    mark,
  );
  const afterRevoke = await conntrackList(lab, 4);
  tc.diagnostic(
    `rename→revoked ${revokedMs} ms (logged as ${String(applied.event)}); proxy-a flows before ${before}, deleted ${String(revoked.flows)}, left ${flowsFrom(afterRevoke, pa.ipv4).length}`,
  );
  assert.ok(Number(revoked.flows) >= 1, JSON.stringify(revoked));
  assert.deepEqual(flowsFrom(afterRevoke, pa.ipv4), [], "flows of the revoked proxy remain");
  assert.ok(
    established(afterRevoke, pb, 7001).length > 0,
    `the still-allowed proxy's flow was deleted too:\n${afterRevoke.join("\n")}`,
  );

  // With packets: the revoked proxy's stream stops, the other one keeps flowing.
  await sleep(300);
  const [a1, b1] = [await received(pa), await received(pb)];
  await sleep(1_000);
  const [a2, b2] = [await received(pa), await received(pb)];
  tc.diagnostic(
    `lines received in 1 s after the revocation: proxy-a ${a2 - a1}, proxy-b ${b2 - b1}`,
  );
  assert.equal(a2 - a1, 0, "the revoked proxy's connection still carries data");
  assert.ok(b2 - b1 >= 5, `the allowed proxy's stream stalled (${b2 - b1} lines in 1 s)`);
  await expectAll(
    [
      ["retired→backend tcp", () => lab.tcp(pa.id, backend.ipv4, 80, 500)],
      ["retired→backend udp", () => lab.udp(pa.id, backend.ipv4, 9000, 500)],
    ],
    false,
  );
  await expectAll([["proxy-b→backend", () => lab.tcp(pb, backend.ipv4, 80)]], true);

  // Leaving the network (Docker also clears the flows then): revoked at its event, at once.
  const mark2 = ct.mark();
  const disconnectedAt = Date.now();
  await lab.docker("network", "disconnect", net, pb.name);
  const revokedB = await ct.waitForLog(
    (e) => e.event === "allowance.revoked" && e.address === pb.ipv4,
    3_000,
    mark2,
  );
  tc.diagnostic(
    `disconnect→revoked ${Date.now() - disconnectedAt} ms (flows ${String(revokedB.flows)})`,
  );
  assert.deepEqual(flowsFrom(await conntrackList(lab, 4), pb.ipv4), []);
}
