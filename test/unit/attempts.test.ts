// The blocked-attempt log's pure parts: tcpdump's pcap of NFLOG groups decoded (real captures),
// each packet attributed to containers by their bridge ports, and the reporter's dedupe, rate
// limits and bounds.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { kindOfGroup, type LogGroups } from "../../src/drops.js";
import type { Member } from "../../src/model.js";
import {
  AttemptReporter,
  attemptOf,
  describeParty,
  isAmbient,
  type Attempt,
} from "../../src/ops/attempts.js";
import { PcapError, PcapReader, headersOf } from "../../src/ops/nflog.js";
import { AttemptLog, tcpdumpArgs } from "../../src/ops/attempt-log.js";
import { localHost } from "../../src/host/host.js";

// `tcpdump -i nflog:40001,40002 -w - -U` while an iptables-nft rule in a throwaway namespace
// logged three UDP datagrams to 127.0.0.1:5555 (OUTPUT, group 40001).
const LOOPBACK_CAPTURE = Buffer.from(
  "d4c3b2a102000400000000000000000000000400ef000000fc44176b71d10900500000005000000002009c41080001000800030005000a0000000000080005000000000108000b000000000008000e0000000000230009004500001f52ac40004011ea1f7f0000017f000001989615b3000bfe1e68690a00fc44176b9ad10900500000005000000002009c41080001000800030005000a0000000000080005000000000108000b000000000008000e0000000000230009004500001f033240004011399a7f0000017f000001adda15b3000bfe1e68690a00fc44176b9dd10900500000005000000002009c41080001000800030005000a0000000000080005000000000108000b000000000008000e0000000000230009004500001f25d34000401116f97f0000017f00000198b015b3000bfe1e68690a00",
  "hex",
);

test("tcpdump's pcap of an NFLOG group: group, family, devices and headers of each packet", () => {
  const packets = new PcapReader().push(LOOPBACK_CAPTURE);
  assert.equal(packets.length, 3);
  for (const p of packets) {
    assert.equal(p.group, 40001);
    assert.equal(p.family, 2);
    assert.equal(p.ethertype, 0x0800);
    assert.equal(p.outdev, 1); // lo
    const h = headersOf(p);
    assert.deepEqual(
      [h.protocol, h.source, h.destination, h.destinationPort],
      ["udp", "127.0.0.1", "127.0.0.1", 5555],
    );
  }
  assert.ok(packets[0]!.timeMs > 1.7e12, "capture time in ms since the epoch");
});

test("the stream may come in pieces of any size: the same packets, a partial record kept", () => {
  const reader = new PcapReader();
  const packets = [];
  for (let i = 0; i < LOOPBACK_CAPTURE.length; i += 7)
    packets.push(...reader.push(LOOPBACK_CAPTURE.subarray(i, i + 7)));
  assert.deepEqual(
    packets.map((p) => headersOf(p).sourcePort),
    new PcapReader().push(LOOPBACK_CAPTURE).map((p) => headersOf(p).sourcePort),
  );
});

test("anything but a pcap stream of link type NFLOG is refused, and so is an absurd record", () => {
  assert.throws(() => new PcapReader().push(Buffer.alloc(24, 7)), PcapError);
  const ethernet = Buffer.from(LOOPBACK_CAPTURE.subarray(0, 24));
  ethernet.writeUInt32LE(1, 20);
  assert.throws(() => new PcapReader().push(ethernet), /link type 1, not NFLOG/);
  const huge = Buffer.concat([LOOPBACK_CAPTURE.subarray(0, 24), Buffer.alloc(16)]);
  huge.writeUInt32LE(10_000_000, 24 + 8);
  assert.throws(() => new PcapReader().push(huge), /a record of 10000000 bytes/);
});

// A real lab: TrafficJam's rules (iptables-nft, bridge guard) and tcpdump on its three groups
// while backend b1 tried b2 (IPv4 and IPv6) and the host, and b2 sent a datagram with the proxy's
// address (test/unit/fixtures/capture-nflog.mts).
const FIXTURE = JSON.parse(
  readFileSync(new URL("./fixtures/nflog-iptables-nft.json", import.meta.url), "utf8"),
) as {
  groups: LogGroups;
  members: Array<{
    name: string;
    ipv4: string;
    ipv6: string;
    mac: string;
    port: string;
    ifindex: number;
  }>;
};
const MEMBERS: Member[] = FIXTURE.members.map((m) => ({
  id: m.name,
  name: m.name,
  whitelisted: m.name === "web-proxy",
  ipv4: m.ipv4,
  ipv6: m.ipv6,
  mac: m.mac,
  port: m.port,
}));
const VIEW = {
  members: MEMBERS,
  interfaceName: (i: number) => FIXTURE.members.find((m) => m.ifindex === i)?.port,
};

function fixtureAttempts(): Attempt[] {
  const pcap = readFileSync(new URL("./fixtures/nflog-iptables-nft.pcap", import.meta.url));
  return new PcapReader().push(pcap).flatMap((p) => {
    const headers = headersOf(p);
    const kind = kindOfGroup(FIXTURE.groups, p.group);
    if (kind === null || isAmbient(headers)) return [];
    return [attemptOf(p, headers, kind, VIEW)];
  });
}

test("each blocked packet names its sender by bridge port, its destination, protocol and port", () => {
  const lines = fixtureAttempts().map(
    (a) =>
      `${a.kind}: ${describeParty(a.source)}${a.claimed ? ` claiming ${a.claimed}` : ""} → ${describeParty(a.destination)} ${a.protocol}/${a.port}`,
  );
  assert.deepEqual(lines, [
    "member-to-member: web-b1 → web-b2 tcp/80",
    "member-to-host: web-b1 → host 172.28.0.1 tcp/80",
    // the bridge guard's drop: the sender is the port it came in through, not the address
    "forged: web-b2 claiming 172.28.0.10 → web-b1 udp/9000",
    "member-to-member: web-b1 → web-b2 tcp/80",
  ]);
  const [first] = fixtureAttempts();
  assert.deepEqual(first!.source, {
    container: "web-b1",
    port: "vethe1f8ec6",
    address: "172.28.0.21",
  });
  assert.deepEqual(first!.destination, {
    container: "web-b2",
    port: "vethbceb2c6",
    address: "172.28.0.22",
  });
});

test("what every container's kernel sends unasked (MLD reports, router solicitations) is no attempt", () => {
  const pcap = readFileSync(new URL("./fixtures/nflog-iptables-nft.pcap", import.meta.url));
  const ambient = new PcapReader().push(pcap).filter((p) => isAmbient(headersOf(p)));
  assert.ok(ambient.length >= 5, `${ambient.length} ambient packets in the capture`);
  assert.equal(isAmbient({ protocol: "icmpv6", destination: "fd00:28::22", icmpType: 143 }), false);
  assert.equal(isAmbient({ protocol: "icmpv6", destination: "ff02::1", icmpType: 128 }), false);
});

test("a sender whose port is not a member's is named by its MAC, then its address", () => {
  const headers = {
    protocol: "tcp",
    source: "172.28.0.22",
    destination: "172.28.0.21",
    destinationPort: 22,
  };
  const byMac = attemptOf(
    { physindev: 99, hwaddr: "02:42:ac:1c:00:15" },
    headers,
    "member-to-member",
    VIEW,
  );
  assert.equal(byMac.source.container, "web-b1");
  const byAddress = attemptOf({ physindev: 99 }, headers, "member-to-member", VIEW);
  assert.equal(byAddress.source.container, "web-b2");
  const stranger = attemptOf({}, { ...headers, source: "10.9.9.9" }, "member-to-member", VIEW);
  assert.equal(describeParty(stranger.source), "10.9.9.9");
});

const attempt = (from: string, port: number, to = "web-b2"): Attempt => ({
  kind: "member-to-member",
  source: { container: from },
  destination: { container: to },
  protocol: "tcp",
  port,
});

test("an attempt is reported once, then again only after it has been quiet", () => {
  let now = 0;
  const reporter = new AttemptReporter(undefined, () => now);
  assert.equal(reporter.offer(attempt("web-b1", 80)), "report");
  for (let i = 0; i < 1000; i++) {
    now += 50;
    assert.equal(reporter.offer(attempt("web-b1", 80)), "known");
  }
  now += 10 * 60_000;
  assert.equal(reporter.offer(attempt("web-b1", 80)), "report", "quiet for 10 minutes: new again");
  assert.equal(reporter.reported, 2);
  assert.equal(reporter.attempts["member-to-member"], 2);
});

test("reports are rate-limited per source and overall; the rest is counted and summed up", () => {
  let now = 0;
  const reporter = new AttemptReporter(undefined, () => now);
  const verdicts = Array.from({ length: 30 }, (_, i) => reporter.offer(attempt("web-b1", i)));
  assert.equal(verdicts.filter((v) => v === "report").length, 10, "10 a minute per source");
  // another source is not held back by the first one's flood
  assert.equal(reporter.offer(attempt("web-b3", 1)), "report");
  assert.deepEqual(reporter.takeSuppressed(), { total: 20, sources: { "web-b1": 20 } });
  assert.equal(reporter.takeSuppressed(), null);
  now += 60_000;
  assert.equal(reporter.offer(attempt("web-b1", 1000)), "report", "a minute later: again");
  // overall: 60 a minute, whatever the number of sources
  const many = new AttemptReporter(undefined, () => now);
  const all = Array.from({ length: 500 }, (_, i) => many.offer(attempt(`c${i}`, 80)));
  assert.equal(all.filter((v) => v === "report").length, 60);
  assert.equal(many.suppressedTotal, 440);
  assert.equal(
    Object.keys(many.takeSuppressed()!.sources).length,
    10,
    "the summary is bounded too",
  );
});

test("memory is bounded whatever comes in: attempts and sources forgotten oldest first", () => {
  let now = 0;
  const limits = {
    quietMs: 600_000,
    maxAttempts: 100,
    perSourcePerMinute: 10,
    maxSources: 20,
    perMinute: 1e9,
  };
  const reporter = new AttemptReporter(limits, () => now);
  for (let i = 0; i < 10_000; i++) {
    now += 1;
    reporter.offer(attempt(`c${i % 50}`, i));
  }
  const internals = reporter as unknown as Record<
    "seen" | "buckets" | "suppressed",
    Map<string, unknown>
  >;
  assert.ok(internals.seen.size <= 100);
  assert.ok(internals.buckets.size <= 20);
  assert.ok(internals.suppressed.size <= 20);
});

test("tcpdump reads the instance's three groups, writing pcap to stdout, flushed per packet", () => {
  assert.deepEqual(tcpdumpArgs({ "member-to-member": 5, "member-to-host": 6, forged: 7 }), [
    "-i",
    "nflog:5,6,7",
    "-w",
    "-",
    "-U",
    "-n",
  ]);
});

test("the reader's lines: attempt.blocked (warn) in enforce mode, attempt.audited (info) in audit mode", () => {
  const pcap = readFileSync(new URL("./fixtures/nflog-iptables-nft.pcap", import.meta.url));
  for (const mode of ["enforce", "audit"] as const) {
    const lines: Array<{ level: string; event: string; fields: Record<string, unknown> }> = [];
    const emit =
      (level: string) =>
      (event: string, _msg: string, fields: Record<string, unknown> = {}) =>
        lines.push({ level, event, fields });
    const reader = new AttemptLog({
      host: localHost,
      groups: FIXTURE.groups,
      mode,
      network: "web",
      log: { debug: emit("debug"), info: emit("info"), warn: emit("warn"), error: emit("error") },
      interfaceIndex: (name) => FIXTURE.members.find((m) => m.port === name)?.ifindex ?? null,
    });
    reader.setMembers(MEMBERS);
    for (const packet of new PcapReader().push(pcap)) reader.packet(packet);
    const event = mode === "audit" ? "attempt.audited" : "attempt.blocked";
    assert.deepEqual(
      lines.map((l) => [l.level, l.event]),
      Array(3).fill([mode === "audit" ? "info" : "warn", event]),
      "three attempts (the IPv6 one is the same attempt as the first: once)",
    );
    assert.deepEqual(lines[0]!.fields, {
      kind: "member-to-member",
      network: "web",
      source: "web-b1",
      sourceAddress: "172.28.0.21",
      bridgePort: "vethe1f8ec6",
      destination: "web-b2",
      destinationAddress: "172.28.0.22",
      protocol: "tcp",
      port: 80,
    });
    assert.equal(reader.packets > lines.length, true, "every packet of its groups read");
  }
});
