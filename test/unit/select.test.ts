// FIREWALL_BACKEND: what auto chooses, and how a switch orders its steps (fake backends that
// record calls; the real ones are proven with packets in test/e2e/backend-switch.test.ts).
import { test } from "node:test";
import assert from "node:assert/strict";
import { SelectingBackend, type BackendChoice } from "../../src/firewall/index.js";
import { computeRuleset } from "../../src/policy.js";
import type { SelectableBackend, SyncResult } from "../../src/firewall/backend.js";

const ruleset = (proxies: string[]) =>
  computeRuleset(
    {
      id: "n",
      name: "web",
      subnets: ["172.20.0.0/16"],
      bridge: "br-web",
      members: proxies.map((ipv4, i) => ({ id: `c${i}`, name: `p${i}`, whitelisted: true, ipv4 })),
    },
    { instanceId: "web", allowHostTraffic: false },
  );
function fakes() {
  const calls: string[] = [];
  const state = {
    dockerUser: true,
    iptablesHolds: false,
    nftHolds: false,
    /** Kernel reads each fake made: fitness or holds or sync with fresh: true. */
    reads: { iptables: 0, nftables: 0 },
  };
  const result = (location: string, revoked: SyncResult["revoked"] = []): SyncResult => ({
    changed: true,
    differences: [`${location} changed`],
    location,
    revoked,
  });
  const read = (kind: "iptables" | "nftables", fresh: boolean) => {
    if (fresh) state.reads[kind]++;
  };
  const iptables: SelectableBackend = {
    kind: "iptables",
    fitness: async (fresh) => {
      read("iptables", fresh);
      return state.dockerUser
        ? { fits: true, viewed: true, reason: "Docker's DOCKER-USER chain is in iptables-nft" }
        : {
            fits: false,
            viewed: true,
            reason: "no iptables flavour has Docker's DOCKER-USER chain",
          };
    },
    holds: async (fresh) => {
      read("iptables", fresh);
      return state.iptablesHolds;
    },
    sync: async (_ruleset, options) => {
      read("iptables", options?.fresh ?? true);
      calls.push("iptables.sync");
      state.iptablesHolds = true;
      return result("iptables-nft");
    },
    clear: async () => {
      calls.push("iptables.clear");
      const held = state.iptablesHolds;
      state.iptablesHolds = false;
      return held
        ? result("iptables (all flavours)", [
            [4, "172.20.0.2"],
            [4, "172.20.0.9"],
          ])
        : { ...result("iptables"), changed: false, differences: [] };
    },
    check: async () => ({ location: "iptables-nft", differences: [] }),
  };
  const nftables: SelectableBackend = {
    kind: "nftables",
    fitness: async () => ({ fits: true, viewed: false, reason: "nftables fits anywhere" }),
    holds: async (fresh) => {
      read("nftables", fresh);
      return state.nftHolds;
    },
    sync: async (_ruleset, options) => {
      read("nftables", options?.fresh ?? true);
      calls.push("nftables.sync");
      state.nftHolds = true;
      return result("nftables");
    },
    clear: async () => {
      calls.push("nftables.clear");
      const held = state.nftHolds;
      state.nftHolds = false;
      return held ? result("nftables") : { ...result("nftables"), changed: false, differences: [] };
    },
    check: async () => ({ location: "nftables", differences: [] }),
  };
  return { calls, state, backends: { iptables, nftables } };
}

test("auto: iptables where DOCKER-USER exists, nftables where it does not; each choice told once", async () => {
  const f = fakes();
  const choices: BackendChoice[] = [];
  const backend = new SelectingBackend(
    "auto",
    "web",
    { onChoice: (c) => choices.push(c) },
    f.backends,
  );
  await backend.sync(ruleset([]));
  await backend.sync(ruleset([]));
  f.state.dockerUser = false;
  await backend.sync(ruleset([]));
  assert.deepEqual(
    choices.map((c) => c.kind),
    ["iptables", "nftables"],
  );
  assert.match(choices[0]!.reason, /DOCKER-USER chain is in iptables-nft/);
  assert.match(choices[1]!.reason, /no iptables flavour has Docker's DOCKER-USER/);
});

test("a switch applies the new backend first, then clears the old one, in the same pass", async () => {
  const f = fakes();
  const backend = new SelectingBackend("auto", "web", {}, f.backends);
  await backend.sync(ruleset(["172.20.0.2"]));
  f.calls.length = 0;
  f.state.dockerUser = false;
  const result = await backend.sync(ruleset(["172.20.0.2"]));
  assert.deepEqual(f.calls, ["nftables.sync", "iptables.clear"]);
  assert.equal(result.location, "nftables");
  // The new backend's differences, then the old one's, each named by where it was removed.
  assert.deepEqual(result.differences, [
    "nftables changed",
    "iptables (all flavours): iptables (all flavours) changed",
  ]);
  // Only what the new rules no longer allow is revoked: 172.20.0.2 keeps its flows.
  assert.deepEqual(result.revoked, [[4, "172.20.0.9"]]);
});

test("leftovers in the other backend are removed even without a switch (e.g. after a restart)", async () => {
  const f = fakes();
  f.state.nftHolds = true;
  const backend = new SelectingBackend("iptables", "web", {}, f.backends);
  await backend.sync(ruleset([]));
  assert.deepEqual(f.calls, ["iptables.sync", "nftables.clear"]);
  f.calls.length = 0;
  await backend.sync(ruleset([]));
  assert.deepEqual(f.calls, ["iptables.sync"], "nothing left to clear");
});

test("a forced backend ignores Docker's chains; --clear empties both", async () => {
  const f = fakes();
  const backend = new SelectingBackend("nftables", "web", {}, f.backends);
  const choice = await backend.choose(true);
  assert.deepEqual(choice, { kind: "nftables", reason: "FIREWALL_BACKEND=nftables" });
  await backend.sync(ruleset([]));
  f.calls.length = 0;
  await backend.clear();
  assert.deepEqual(f.calls, ["iptables.clear", "nftables.clear"]);
});

test("--clear: a backend that fails to clear does not keep the other from being cleared", async () => {
  const f = fakes();
  f.backends.iptables.clear = async () => {
    f.calls.push("iptables.clear");
    throw new Error("iptables-restore: resource busy");
  };
  const backend = new SelectingBackend("auto", "web", {}, f.backends);
  f.state.nftHolds = true;
  await assert.rejects(backend.clear(), /clearing failed: iptables-restore: resource busy/);
  assert.deepEqual(f.calls, ["iptables.clear", "nftables.clear"]);
  assert.equal(f.state.nftHolds, false, "the nftables tables were removed all the same");
});

test("a resync reads each kernel once: the view auto chose from is the one synced and checked for leftovers", async () => {
  const f = fakes();
  const backend = new SelectingBackend("auto", "web", {}, f.backends);
  await backend.sync(ruleset([])); // iptables fits: probed, synced on that view; nft checked
  assert.deepEqual(f.state.reads, { iptables: 1, nftables: 1 });
  f.state.dockerUser = false;
  // iptables probed (unfit); nftables fits without looking at the kernel: its sync reads it
  await backend.sync(ruleset([]));
  assert.deepEqual(f.state.reads, { iptables: 2, nftables: 2 });
  await backend.sync(ruleset([])); // and every resync does; iptables' leftovers: the view probed
  assert.deepEqual(f.state.reads, { iptables: 3, nftables: 3 });
  await backend.sync(ruleset([]), { fresh: false }); // an event pass reads nothing
  assert.deepEqual(f.state.reads, { iptables: 3, nftables: 3 });
});
