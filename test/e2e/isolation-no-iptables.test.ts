// Isolation on a Docker host run with "iptables": false: no flavour has DOCKER-USER, so auto must
// pick nftables (as on Docker's own nftables firewall, which has no DOCKER-USER either).
import assert from "node:assert/strict";
import { iptablesSave, nftRuleset } from "./lab/index.js";
import { isolationSuite, type FirewallSetup } from "./isolation-suite.js";
import { l2AttackSuite } from "./l2-attacks.js";

const TABLE = { family: "inet", name: "trafficjam_web" };

const setup: FirewallSetup = {
  title: 'auto with "iptables": false → nftables',
  labName: "isonoipt",
  lab: { daemonJson: { iptables: false, ip6tables: false } },
  env: {},
  expectBackend: "nftables",
  expectLocation: "nftables",
  vandalism: () => [
    ["nft", "flush", "chain", "inet", TABLE.name, "input"],
    ["nft", "delete", "table", "inet", TABLE.name],
    ["nft", "delete", "table", "bridge", TABLE.name],
  ],
  checkRepaired: async (lab) => {
    assert.match(await nftRuleset(lab, TABLE), /chain input/);
    assert.doesNotMatch(await iptablesSave(lab, 4), /DOCKER-USER/);
  },
};

isolationSuite(setup);
// The attacks below and beside the addresses, in a lab of their own on the same setup.
l2AttackSuite({ ...setup, labName: `${setup.labName}-l2` });
