// `explain`'s walk of a packet through the rendered rules: the verdict and the deciding rule, for
// both backends (which must agree), in both modes; a rule it cannot read is an error.
import { test } from "node:test";
import assert from "node:assert/strict";
import { logGroupsOf } from "../../src/drops.js";
import { render } from "../../src/ops/desired.js";
import {
  explainPacket,
  packetOf,
  parseService,
  resolveEnd,
  ExplainUsageError,
  type End,
} from "../../src/ops/explain.js";
import { evalNftRule, TraceError } from "../../src/ops/trace.js";
import type { Member } from "../../src/model.js";
import { SCENARIOS, rulesetOf } from "./fixtures.js";

const scenario = (name: string) => SCENARIOS.find((s) => s.name === name)!;
const HOST = ["172.20.0.1", "fd00:20::1", "10.0.0.5"];

function explain(name: string, from: string, to: string, service = "80/tcp") {
  const s = scenario(name);
  const ruleset = rulesetOf(s);
  const members = s.snapshot.members;
  const family = from.includes(":") || to.includes(":") ? 6 : 4;
  const a = resolveEnd(from, members, HOST, family);
  const b = resolveEnd(to, members, HOST, family);
  const packet = packetOf(a, b, parseService(service), ruleset.bridge!);
  return (["iptables", "nftables"] as const).map((kind) =>
    explainPacket(packet, render(kind, ruleset), kind, logGroupsOf("web")),
  );
}

test("the proxy → a backend: allowed, by its allowance bound to its port", () => {
  const [ipt, nft] = explain("one-proxy", "proxy", "backend2");
  assert.equal(ipt!.verdict, "allowed");
  assert.match(
    ipt!.decidedBy!.rule,
    /-s 172\.20\.0\.2\/32 .*--physdev-in veth1a2b3c4 .*-j RETURN$/,
  );
  assert.equal(nft!.verdict, "allowed");
  assert.equal(nft!.decidedBy!.rule, "iifname @bridges oifname @bridges ip saddr @allowed4 accept");
});

test("a backend → the proxy, or the host: dropped, by the last rule, logged to its kind's group", () => {
  for (const [to, kind, chain] of [
    ["proxy", "member-to-member", /TJF_web/],
    ["172.20.0.1", "member-to-host", /TJI_web/],
    ["10.0.0.5", "member-to-host", /TJI_web/],
  ] as const) {
    const [ipt, nft] = explain("one-proxy", "backend2", to, "22/tcp");
    assert.deepEqual([ipt!.verdict, ipt!.kind], ["dropped", kind], to);
    assert.match(ipt!.decidedBy!.chain, chain);
    assert.match(ipt!.decidedBy!.rule, / -j DROP$/);
    assert.deepEqual([nft!.verdict, nft!.kind], ["dropped", kind], to);
    assert.match(nft!.decidedBy!.rule, / drop$/);
  }
});

test("the host → a member, and a member → elsewhere: none of TrafficJam's rules drop them", () => {
  for (const [from, to] of [
    ["172.20.0.1", "backend2"],
    ["backend2", "192.0.2.9"],
    ["192.0.2.9", "backend2"],
  ]) {
    for (const result of explain("one-proxy", from!, to!)) {
      assert.equal(result.verdict, "allowed", `${from} → ${to}`);
      assert.equal(result.wouldDrop, false);
    }
  }
});

test("a backend sending the proxy's address: dropped by the bridge guard, as a forgery", () => {
  const s = scenario("one-proxy");
  const ruleset = rulesetOf(s);
  const backend = s.snapshot.members.find((m) => m.name === "backend2")!;
  const forger: End = { kind: "member", member: backend, address: "172.20.0.2" };
  const target = resolveEnd("backend2", s.snapshot.members, HOST, 4);
  const packet = packetOf(
    forger,
    { ...target, address: "172.20.0.9" } as End,
    { protocol: "udp", port: 9000 },
    ruleset.bridge!,
  );
  for (const kind of ["iptables", "nftables"] as const) {
    const result = explainPacket(packet, render(kind, ruleset), kind, logGroupsOf("web"));
    assert.deepEqual([result.verdict, result.kind], ["dropped", "forged"], kind);
    assert.match(result.layers[0]!.layer, /^bridge trafficjam(-l2)?_web prerouting$/);
    assert.equal(result.decidedBy!.rule, "counter drop");
    assert.deepEqual(
      result.layers[0]!.result.steps.map((s) => s.effect),
      ["goto forged", "logged (NFLOG group 52206)", "drop"],
    );
  }
});

test("audit mode: what enforce mode drops is allowed, and said to be dropped when enforcing", () => {
  const [ipt, nft] = explain("audit", "backend2", "proxy");
  for (const result of [ipt!, nft!]) {
    assert.equal(result.verdict, "allowed");
    assert.equal(result.wouldDrop, true);
    assert.equal(result.kind, "member-to-member");
  }
});

test("both backends agree on every pair of every scenario, IPv4 and IPv6", () => {
  let pairs = 0;
  for (const s of SCENARIOS.filter((x) => x.snapshot.bridge)) {
    const ends = [...s.snapshot.members.map((m) => m.name), "172.20.0.1", "198.51.100.1"];
    for (const from of ends)
      for (const to of ends) {
        if (from === to) continue;
        for (const service of ["80/tcp", "53/udp", "icmp"]) {
          const [ipt, nft] = explain(s.name, from, to, service);
          assert.equal(ipt!.verdict, nft!.verdict, `${s.name}: ${from} → ${to} ${service}`);
          assert.equal(ipt!.kind, nft!.kind, `${s.name}: ${from} → ${to} ${service}`);
          pairs++;
        }
      }
  }
  assert.ok(pairs > 200, `${pairs} pairs`);
});

test("ends and services are read strictly", () => {
  const members: Member[] = scenario("one-proxy").snapshot.members;
  assert.equal((resolveEnd("c1000", members, HOST, 4) as { member: Member }).member.name, "proxy");
  assert.throws(
    () => resolveEnd("c", members, HOST, 4),
    ExplainUsageError,
    "an ID prefix of 4 at least",
  );
  assert.throws(() => resolveEnd("nobody", members, HOST, 4), /no container of that name/);
  assert.equal(resolveEnd("172.20.0.3", members, HOST, 4).kind, "member");
  assert.equal(resolveEnd("10.0.0.5", members, HOST, 4).kind, "host");
  assert.deepEqual(parseService("53/udp"), { protocol: "udp", port: 53 });
  assert.deepEqual(parseService("tcp/8080"), { protocol: "tcp", port: 8080 });
  assert.deepEqual(parseService(undefined), { protocol: "tcp" });
  for (const bad of ["80", "80/sctp", "70000/tcp", "http"])
    assert.throws(() => parseService(bad), ExplainUsageError, bad);
});

test("a rule the walk cannot read is an error, never a guess", () => {
  const rendered = render("nftables", rulesetOf(scenario("one-proxy")));
  assert.equal(rendered.kind, "nftables");
  const table = rendered.inet;
  const packet = {
    family: 4 as const,
    source: "1.2.3.4",
    destination: "5.6.7.8",
    protocol: "tcp",
    iif: "x",
  };
  assert.throws(() => evalNftRule("meta mark 0x1 drop", packet, table, "forward"), TraceError);
  assert.throws(
    () => evalNftRule("ip saddr @nosuchset drop", packet, table, "forward"),
    /set @nosuchset/,
  );
});
