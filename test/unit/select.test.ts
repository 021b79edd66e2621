// FIREWALL_BACKEND: what auto chooses, and how a switch orders its steps (fake backends that
// record calls; the real ones are proven with packets in test/e2e/backend-switch.test.ts).
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  SelectingBackend,
  type BackendChoice,
  type IptablesSide,
  type NftablesSide,
} from "../../src/firewall/index.js";
import { computeRuleset } from "../../src/policy.js";
import type { SyncResult } from "../../src/firewall/backend.js";

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
/** A view of the kernel as the fake iptables side hands it out. */
const view = {
  state: { tables: new Map(), guard: null, legacy: "false,false" },
  readAt: 0,
  cached: false,
};

function fakes() {
  const calls: string[] = [];
  const state = {
    dockerUser: true,
    iptablesHolds: false,
    nftHolds: false,
    locates: 0,
    viewsHandedOn: 0,
  };
  const result = (location: string, revoked: SyncResult["revoked"] = []): SyncResult => ({
    changed: true,
    differences: [`${location} changed`],
    location,
    revoked,
  });
  const iptables: IptablesSide = {
    locate: async () => {
      state.locates++;
      return { flavour: state.dockerUser ? "nft" : null, view };
    },
    holds: async (_fresh?, located?) => {
      if (located) state.viewsHandedOn++;
      return state.iptablesHolds;
    },
    sync: async (_ruleset, _options?, located?) => {
      if (located) state.viewsHandedOn++;
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
    check: async (_ruleset, located?) => {
      if (located) state.viewsHandedOn++;
      return { location: "iptables-nft", differences: [] };
    },
  };
  const nftables: NftablesSide = {
    holds: async () => state.nftHolds,
    sync: async () => {
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

test("under auto, the iptables tables are located once per pass and that view is handed on", async () => {
  const f = fakes();
  const backend = new SelectingBackend("auto", "web", {}, f.backends);
  await backend.sync(ruleset([])); // iptables chosen: its sync gets the view
  await backend.check(ruleset([])); // and so does its check
  f.state.dockerUser = false;
  await backend.sync(ruleset([])); // the switch to nftables clears iptables
  await backend.sync(ruleset([])); // then the leftover check gets the view
  assert.equal(f.state.locates, 4);
  assert.equal(f.state.viewsHandedOn, 3);
});
