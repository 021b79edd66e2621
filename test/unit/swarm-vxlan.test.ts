import assert from "node:assert/strict";
import { test } from "node:test";
import { renderVxlanGuard } from "../../src/swarm/vxlan-guard.js";

test("the tunnel check binds each other node's allowed address to that node's underlay address", () => {
  const script = renderVxlanGuard("sw1", 4097, [
    { ipv4: "10.20.0.9", hostIp: "10.231.0.2" },
    { ipv4: "10.20.0.6", hostIp: "10.231.0.1" },
  ]);
  assert.equal(
    script,
    [
      "table inet trafficjam-vxlan_sw1 {",
      "  chain input {",
      "    type filter hook input priority -200; policy accept;",
      "    udp dport 4789 @th,96,24 4097 @th,224,16 0x0800 @th,336,32 0x0a140006 ip saddr != 10.231.0.1 drop",
      "    udp dport 4789 @th,96,24 4097 @th,224,16 0x0806 @th,352,32 0x0a140006 ip saddr != 10.231.0.1 drop",
      "    udp dport 4789 @th,96,24 4097 @th,224,16 0x0800 @th,336,32 0x0a140009 ip saddr != 10.231.0.2 drop",
      "    udp dport 4789 @th,96,24 4097 @th,224,16 0x0806 @th,352,32 0x0a140009 ip saddr != 10.231.0.2 drop",
      "  }",
      "}",
    ].join("\n"),
  );
});

test("no other node's address: no table; an origin without a valid underlay address is left out", () => {
  assert.equal(renderVxlanGuard("sw1", 4097, []), null);
  assert.equal(renderVxlanGuard("sw1", 4097, [{ ipv4: "10.20.0.9", hostIp: "" }]), null);
});
