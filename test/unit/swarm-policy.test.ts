// A Swarm worker's ruleset: the other nodes' allowed addresses come in through the overlay's
// VXLAN port, so they are allowed bound to it, and guarded from every other port, while the
// VXLAN port itself (which carries every remote container's frames) is not a known member port.
// Golden files of both backends for an overlay worker; UPDATE_GOLDEN=1 rewrites them after
// review. As root, the nftables golden file is checked by nft and read back from a throwaway
// network namespace, and the iptables backend in overlay mode is run for real in one.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { computeRuleset } from "../../src/policy.js";
import type { NetworkSnapshot, Ruleset } from "../../src/model.js";
import { desiredTables } from "../../src/firewall/nftables/backend.js";
import { planTables } from "../../src/firewall/nftables/plan.js";
import { parseTableJson } from "../../src/firewall/nftables/table.js";
import { planFamily } from "../../src/firewall/iptables/plan.js";
import { parseFilterTable } from "../../src/firewall/iptables/save-format.js";
import { IptablesBackend, guardTableName } from "../../src/firewall/iptables/backend.js";
import { guardTable } from "../../src/firewall/nftables/guard.js";
import { localHost } from "../../src/host/host.js";
import { overlayMac } from "../../src/swarm/protocol.js";
import { OVERLAY_WORKER } from "./fixtures.js";

const options = { instanceId: "web", allowHostTraffic: false };
const ruleset = (snapshot: NetworkSnapshot | null = OVERLAY_WORKER.snapshot): Ruleset =>
  computeRuleset(snapshot, options);
const remote = (ipv4: string) => ({ ipv4, mac: overlayMac(ipv4) });

test("remote allowed addresses are allowed sources bound to the VXLAN port", () => {
  const r = ruleset();
  assert.equal(r.bridge, "br0");
  // The local proxy, the node's load balancer, and the two remote addresses.
  assert.deepEqual(r.families[4].allowedSources, [
    "10.20.0.2",
    "10.20.0.3",
    "10.20.0.7",
    "10.20.0.9",
  ]);
  assert.deepEqual(r.families[4].portBindings, [
    { address: "10.20.0.2", port: "veth1" },
    { address: "10.20.0.3", port: "veth0" },
    { address: "10.20.0.7", port: "vxlan0" },
    { address: "10.20.0.9", port: "vxlan0" },
  ]);
  // IPv4 only: the remote endpoints (and these local members) have no IPv6 address here.
  assert.deepEqual(r.families[6].allowedSources, []);
  assert.deepEqual(r.families[6].portBindings, []);
});

test("remote addresses are tunnel identities, sorted by address, never known ports", () => {
  const r = ruleset();
  assert.deepEqual(r.tunnelIdentities, [
    { port: "vxlan0", mac: "02:42:0a:14:00:07", ipv4: ["10.20.0.7"], ipv6: [] },
    { port: "vxlan0", mac: "02:42:0a:14:00:09", ipv4: ["10.20.0.9"], ipv6: [] },
  ]);
  assert.deepEqual(
    r.ports.map((p) => p.port),
    ["veth0", "veth1", "veth2"],
  );
});

test("a remote address equal to a local member's is ignored (a stale report)", () => {
  const snapshot: NetworkSnapshot = {
    ...OVERLAY_WORKER.snapshot,
    tunnel: {
      port: "vxlan0",
      // 10.20.0.5 is the local backend, 10.20.0.3 the local proxy: neither comes from vxlan0.
      allowed: [remote("10.20.0.5"), remote("10.20.0.7"), remote("10.20.0.3")],
    },
  };
  const r = ruleset(snapshot);
  assert.deepEqual(
    r.tunnelIdentities.map((t) => t.ipv4),
    [["10.20.0.7"]],
  );
  assert.deepEqual(r.families[4].allowedSources, ["10.20.0.2", "10.20.0.3", "10.20.0.7"]);
  assert.deepEqual(
    r.families[4].portBindings.filter((b) => b.port === "vxlan0"),
    [{ address: "10.20.0.7", port: "vxlan0" }],
  );
});

test("an address told twice is one tunnel identity", () => {
  const snapshot: NetworkSnapshot = {
    ...OVERLAY_WORKER.snapshot,
    tunnel: { port: "vxlan0", allowed: [remote("10.20.0.7"), remote("10.20.0.7")] },
  };
  const r = ruleset(snapshot);
  assert.equal(r.tunnelIdentities.length, 1);
  assert.deepEqual(r.families[4].allowedSources, ["10.20.0.2", "10.20.0.3", "10.20.0.7"]);
  assert.equal(r.families[4].portBindings.filter((b) => b.port === "vxlan0").length, 1);
});

test("no bridge (the overlay has no namespace here), no tunnel: nothing is enforced", () => {
  const r = ruleset({ ...OVERLAY_WORKER.snapshot, bridge: undefined });
  assert.equal(r.bridge, null);
  assert.deepEqual(r.tunnelIdentities, []);
  assert.deepEqual(r.families[4].allowedSources, []);
  assert.deepEqual(r.families[4].portBindings, []);
  assert.deepEqual(ruleset(null).tunnelIdentities, []);
});

test("without a tunnel, a snapshot's ruleset has no tunnel identities", () => {
  const { tunnel: _tunnel, ...bare } = OVERLAY_WORKER.snapshot;
  void _tunnel;
  const r = ruleset(bare);
  assert.deepEqual(r.tunnelIdentities, []);
  assert.deepEqual(r.families[4].allowedSources, ["10.20.0.2", "10.20.0.3"]);
});

test("the guard: vxlan0 is not a known port, its identities are bound and guarded", () => {
  const guard = guardTable(ruleset(), "trafficjam_web");
  const set = (name: string) => guard.sets.get(name)!.elements;
  assert.deepEqual(set("ports"), ["veth0", "veth1", "veth2"]);
  for (const [ipv4, mac] of [
    ["10.20.0.7", "02:42:0a:14:00:07"],
    ["10.20.0.9", "02:42:0a:14:00:09"],
  ] as const) {
    assert.ok(set("boundmac").includes(`${mac} . vxlan0`), mac);
    assert.ok(set("guardedmac").includes(mac), mac);
    assert.ok(set("bound4").includes(`${ipv4} . vxlan0`), ipv4);
    assert.ok(set("guarded4").includes(ipv4), ipv4);
  }
  // No IPv6 identity for remote endpoints: nothing of vxlan0 in the IPv6 or ND sets.
  for (const name of ["bound6", "boundnd"])
    assert.ok(!set(name).some((e) => e.includes("vxlan0")), name);
  // Every rule on frames from or to members is limited to known ports; vxlan0's other frames
  // (remote containers that are not allowed anywhere) are only kept off the guarded identities.
  const forward = guard.chains.get("forward")!.rules.map((r) => r.text);
  assert.ok(
    forward.every((r) => /^(i|o)ifname @ports /.test(r)),
    forward.join("\n"),
  );
});

// ----- golden files

const DOCKERLESS_FILTER = (forwardPolicy: string) => `*filter
:INPUT ACCEPT [0:0]
:FORWARD ${forwardPolicy} [0:0]
:OUTPUT ACCEPT [0:0]
COMMIT
`;

/** The iptables-restore input in an overlay namespace: no Docker chains, FORWARD in both families. */
function renderIptables(): string {
  const r = ruleset();
  const sections: string[] = [];
  for (const family of [4, 6] as const) {
    const tool = family === 4 ? "iptables" : "ip6tables";
    const plan = planFamily(parseFilterTable(DOCKERLESS_FILTER("ACCEPT")), {
      family,
      instanceId: "web",
      rules: r,
      forwardAnchor: "FORWARD",
      staleForwardAnchors: [],
    });
    sections.push(
      `# ${tool}-nft-restore --noflush (IPv${family}), in the overlay namespace`,
      ...plan.createChains.map((c) => `# before: ${tool}-nft -N ${c}`),
      plan.script ?? "# nothing to apply\n",
    );
  }
  return sections.join("\n");
}

function renderNft(): string {
  const { inet, bridge } = desiredTables(ruleset());
  return planTables([
    { current: null, desired: inet },
    { current: null, desired: bridge },
  ]).script!;
}

const golden = (ext: "nft" | "rules") =>
  new URL(`./golden/${OVERLAY_WORKER.name}.${ext}`, import.meta.url);

test(`golden: ${OVERLAY_WORKER.name} (iptables, overlay: FORWARD anchor in both families)`, async () => {
  const actual = renderIptables();
  if (process.env.UPDATE_GOLDEN === "1") await writeFile(golden("rules"), actual);
  assert.equal(actual, await readFile(golden("rules"), "utf8"));
  assert.doesNotMatch(actual, /DOCKER-USER/);
  assert.equal(actual.match(/^-I FORWARD 1 -j TRAFFICJAM$/gm)?.length, 2);
});

test(`nft golden: ${OVERLAY_WORKER.name}`, async () => {
  const actual = renderNft();
  if (process.env.UPDATE_GOLDEN === "1") await writeFile(golden("nft"), actual);
  assert.equal(actual, await readFile(golden("nft"), "utf8"));
});

// ----- as root: the kernel's word

const canRun =
  process.getuid?.() === 0 &&
  spawnSync("nft", ["--version"]).status === 0 &&
  spawnSync("nsenter", ["--version"]).status === 0;

describe(
  "the overlay worker's rules in a throwaway network namespace",
  { skip: !canRun && "needs root, nft and nsenter" },
  () => {
    const netns = `tj-unit-swarm-${process.pid}`;
    const inNetns = (file: string, args: string[], input?: string) =>
      execFileSync("ip", ["netns", "exec", netns, file, ...args], { input, encoding: "utf8" });
    before(() => execFileSync("ip", ["netns", "add", netns]));
    after(() => {
      execFileSync("ip", ["netns", "delete", netns]);
    });

    test("nft -c accepts the golden file; the kernel's JSON listing reads back the same tables", async () => {
      const script = await readFile(golden("nft"), "utf8");
      inNetns("nft", ["-c", "-f", "-"], script);
      inNetns("nft", ["-f", "-"], script);
      try {
        const listed = (family: "inet" | "bridge") =>
          parseTableJson(
            inNetns("nft", ["-j", "list", "table", family, "trafficjam_web"]),
            family,
            "trafficjam_web",
          );
        const want = desiredTables(ruleset());
        const plan = planTables([
          { current: listed("inet"), desired: want.inet },
          { current: listed("bridge"), desired: want.bridge },
        ]);
        assert.deepEqual(plan.differences, []);
        assert.equal(plan.script, null);
      } finally {
        for (const family of ["inet", "bridge"])
          inNetns("nft", ["delete", "table", family, "trafficjam_web"]);
      }
    });

    test(
      "the iptables backend in overlay mode writes the golden chains into iptables-nft, from FORWARD",
      { skip: spawnSync("iptables-nft", ["--version"]).status !== 0 && "needs iptables-nft" },
      async () => {
        const backend = new IptablesBackend("web", {
          overlay: true,
          ipv6: true,
          host: localHost.in(`/var/run/netns/${netns}`),
        });
        {
          const fitness = await backend.fitness(true);
          assert.equal(fitness.fits, true);
          const result = await backend.sync(ruleset());
          assert.equal(result.changed, true);
          assert.equal(result.location.includes("legacy"), false, result.location);
          assert.deepEqual((await backend.check(ruleset())).differences, []);
          // What the kernel holds is what the golden file writes: planned against it, nothing.
          for (const family of [4, 6] as const) {
            const save = inNetns(family === 4 ? "iptables-nft-save" : "ip6tables-nft-save", [
              "-t",
              "filter",
            ]);
            const table = parseFilterTable(save);
            assert.equal(table.chains.has("DOCKER-USER"), false);
            assert.equal(table.chains.get("FORWARD")?.[0], "-A FORWARD -j TRAFFICJAM", save);
            const plan = planFamily(table, {
              family,
              instanceId: "web",
              rules: ruleset(),
              forwardAnchor: "FORWARD",
              staleForwardAnchors: [],
            });
            assert.equal(plan.script, null, plan.differences.join("\n"));
          }
          // The guard, under the iptables backend's name, is the golden file's bridge table.
          const name = guardTableName("web");
          const listed = parseTableJson(
            inNetns("nft", ["-j", "list", "table", "bridge", name]),
            "bridge",
            name,
          );
          const guard = planTables([{ current: listed, desired: guardTable(ruleset(), name) }]);
          assert.deepEqual(guard.differences, []);
          assert.deepEqual((await backend.clear()).changed, true);
          assert.equal(await backend.holds(true), false);
          assert.doesNotMatch(inNetns("iptables-nft-save", ["-t", "filter"]), /TRAFFICJAM|TJ[FI]_/);
          assert.doesNotMatch(inNetns("nft", ["list", "tables"]), /trafficjam/);
        }
      },
    );
  },
);
