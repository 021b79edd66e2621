// nftables: what one whitelist change costs as set-element updates (what the backend does) and as
// a whole-table replace (the alternative), with 1, 10 and 100 whitelisted addresses. Run by
// bench/run.ts inside the lab's network namespace (`ip netns exec`), never on the machine itself:
// it writes the tables `inet` and `bridge trafficjam_benchupd` there and removes them. Prints one
// table.
import { NftablesBackend } from "../src/firewall/nftables/backend.js";
import { computeRuleset } from "../src/policy.js";
import type { NetworkSnapshot } from "../src/model.js";

const INSTANCE_ID = "benchupd";
const ROUNDS = 40;
const WHITELIST_SIZES = [1, 10, 100];

function snapshot(whitelisted: number, extra: boolean): NetworkSnapshot {
  const addresses = Array.from({ length: whitelisted }, (_, i) => `10.77.1.${i + 2}`);
  if (extra) addresses.push("10.77.2.2"); // the change: one more whitelisted container
  const hex = (n: number) => n.toString(16).padStart(2, "0");
  return {
    id: "bench",
    name: "bench",
    subnets: ["10.77.0.0/16", "fd00:77::/64"],
    bridge: "br-bench",
    members: addresses.map((ipv4, i) => ({
      id: `c${i}`,
      name: `p${i}`,
      whitelisted: true,
      ipv4,
      mac: `02:42:0a:4d:${hex(i >> 8)}:${hex(i & 255)}`,
      port: `vethb${i}`,
    })),
  };
}

const median = (values: number[]) =>
  [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

async function measure(replaceAlways: boolean, whitelisted: number) {
  const backend = new NftablesBackend(INSTANCE_ID, { replaceAlways });
  const ruleset = (extra: boolean) =>
    computeRuleset(snapshot(whitelisted, extra), {
      instanceId: INSTANCE_ID,
      allowHostTraffic: false,
    });
  await backend.sync(ruleset(false), { fresh: true });
  const apply: number[] = [];
  const total: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const t0 = performance.now();
    let enforced = 0;
    // fresh: false, as on a Docker event: plans against the last read-back
    await backend.sync(ruleset(i % 2 === 0), {
      fresh: false,
      onEnforced: () => (enforced = performance.now()),
    });
    apply.push(enforced - t0);
    total.push(performance.now() - t0);
  }
  await backend.clear();
  return { apply: median(apply), total: median(total) };
}

const rows: string[][] = [];
for (const whitelisted of WHITELIST_SIZES) {
  for (const replaceAlways of [false, true]) {
    const r = await measure(replaceAlways, whitelisted);
    rows.push([
      replaceAlways ? "whole-table replace" : "set-element update",
      String(whitelisted),
      `${r.apply.toFixed(1)} ms`,
      `${r.total.toFixed(1)} ms`,
    ]);
  }
}
const header = [
  "nftables: one whitelist change",
  "whitelisted",
  "nft -f (median)",
  "+ read-back (median)",
];
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ");
console.log([line(header), line(widths.map((w) => "─".repeat(w))), ...rows.map(line)].join("\n"));
console.log(`(${ROUNDS} changes each, alternately adding and removing one address)`);
