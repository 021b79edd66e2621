// Isolation with FIREWALL_BACKEND=nftables on a Docker host using iptables-nft: the instance's
// own inet and bridge tables drop, alongside Docker's iptables rules, and nothing is written to
// iptables.
import assert from "node:assert/strict";
import { iptablesRules, nftRuleset } from "./lab/index.js";
import { isolationSuite, type FirewallSetup } from "./isolation-suite.js";
import { l2AttackSuite } from "./l2-attacks.js";

const TABLE = { family: "inet", name: "trafficjam_web" };

const setup: FirewallSetup = {
  title: "FIREWALL_BACKEND=nftables on iptables-nft",
  labName: "isonft",
  lab: {},
  env: { FIREWALL_BACKEND: "nftables" },
  expectBackend: "nftables",
  expectLocation: "nftables",
  vandalism: (t) => [
    ["nft", "flush", "chain", "inet", TABLE.name, "forward"],
    ["nft", "flush", "set", "inet", TABLE.name, "bridges"],
    ["nft", "insert", "rule", "inet", TABLE.name, "forward", "accept"],
    ["nft", "add", "element", "inet", TABLE.name, "allowed4", `{ ${t.backends[1].ipv4} }`],
    ["nft", "delete", "table", "inet", TABLE.name],
    ["nft", "flush", "set", "bridge", TABLE.name, "guarded4"],
    ["nft", "flush", "chain", "bridge", TABLE.name, "prerouting"],
    ["nft", "delete", "table", "bridge", TABLE.name],
  ],
  checkRepaired: async (lab) => {
    assert.match(await nftRuleset(lab, TABLE), /iifname @bridges oifname @bridges drop/);
    for (const family of [4, 6] as const) {
      const rules = await iptablesRules(lab, family);
      assert.deepEqual(
        rules.filter((l) => /TRAFFICJAM|TJF_|TJI_/.test(l)),
        [],
      );
    }
  },
};

isolationSuite(setup);
// The attacks below and beside the addresses, in a lab of their own on the same setup.
l2AttackSuite({ ...setup, labName: `${setup.labName}-l2` });
