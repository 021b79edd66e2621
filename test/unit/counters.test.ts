// Drop counters per kind, as the kernel's listings give them (the fixtures are real captures of
// the rules; their counters are set here), and the mode the rules in force were written in.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { logGroupsOf } from "../../src/drops.js";
import { desiredTables } from "../../src/firewall/nftables/backend.js";
import { parseTableJson } from "../../src/firewall/nftables/table.js";
import { countsFromNftJson, countsFromSave } from "../../src/ops/counters.js";
import { modeOfGuard } from "../../src/ops/mode.js";
import { SCENARIOS, rulesetOf } from "./fixtures.js";

const fixture = (name: string) =>
  readFileSync(new URL(`./fixtures/${name}`, import.meta.url), "utf8");
const GROUPS = logGroupsOf("web");

test("iptables-save -c: each rule after one of our NFLOG rules counts that rule's kind", () => {
  // The dual-stack capture with counters, as `iptables-save -c` prints them: [packets:bytes].
  let n = 0;
  const dump = fixture("dual-stack.iptables-nft-save")
    .split("\n")
    .map((line) => (line.startsWith("-A ") ? `[${(n += 1) * 10}:${n * 600}] ${line}` : line))
    .join("\n");
  const lines = dump.split("\n");
  const packetsOf = (pattern: RegExp) =>
    lines
      .filter((l) => pattern.test(l))
      .map((l) => Number(/^\[(\d+):/.exec(l)![1]))
      .reduce((a, b) => a + b, 0);
  assert.deepEqual(countsFromSave(dump, "web", GROUPS), {
    // the last DROP of TJF_web, of TJI_web; the forgery guards (with ! --physdev-in) of both
    "member-to-member": packetsOf(/-A TJF_web -i \S+ -o \S+ -m comment .* -j DROP$/),
    "member-to-host": packetsOf(/-A TJI_web -i \S+ -m comment .* -j DROP$/),
    forged: packetsOf(/-A TJ[FI]_web .*! --physdev-in .*-j DROP$/),
  });
  assert.deepEqual(countsFromSave(dump, "web2", logGroupsOf("web2")), {
    "member-to-member": 0,
    "member-to-host": 0,
    forged: 0,
  });
});

test("nft -j: a log rule's counter counts its group's kind; in the guard, each kind's chain", () => {
  const inet = fixture("nft-1.0.6-port-unknown-inet.json");
  const bridge = fixture("nft-1.0.6-port-unknown-bridge.json");
  assert.deepEqual(countsFromNftJson(inet, GROUPS, false), {
    "member-to-member": 0,
    "member-to-host": 0,
    forged: 0,
  });
  // Set each counter to a number of its own: 1, 2, 3, … in the order of the listing.
  const counted = (json: string) => {
    let n = 0;
    return json.replace(/"packets": 0/g, () => `"packets": ${(n += 1)}`);
  };
  // inet: forward's log rules (IPv4, IPv6) then input's
  assert.deepEqual(countsFromNftJson(counted(inet), GROUPS, false), {
    "member-to-member": 1 + 2,
    "member-to-host": 3 + 4,
    forged: 0,
  });
  // the guard: chains forged, member, host, in that order
  assert.deepEqual(countsFromNftJson(counted(bridge), GROUPS, true), {
    forged: 1,
    "member-to-member": 2,
    "member-to-host": 3,
  });
});

test("the mode of the rules in force is read from the guard: counter drop or counter accept", () => {
  const listed = parseTableJson(
    fixture("nft-1.0.6-port-unknown-bridge.json"),
    "bridge",
    "trafficjam_web",
  );
  assert.equal(modeOfGuard(listed), "enforce");
  const audit = desiredTables(rulesetOf(SCENARIOS.find((s) => s.name === "audit")!)).bridge;
  assert.equal(modeOfGuard(audit), "audit");
  assert.equal(modeOfGuard(null), null);
  // a guard written before the log had no such chain, and only ever enforced
  listed.chains.delete("forged");
  assert.equal(modeOfGuard(listed), "enforce");
});
