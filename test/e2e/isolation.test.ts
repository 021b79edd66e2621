// Isolation with the default FIREWALL_BACKEND=auto on a Docker host using iptables-nft (Debian's
// default): auto must pick iptables, in the nft flavour, and keep the seed's chain layout.
import assert from "node:assert/strict";
import { iptablesRules } from "./lab/index.js";
import { isolationSuite, type FirewallSetup } from "./isolation-suite.js";
import { l2AttackSuite } from "./l2-attacks.js";

const setup: FirewallSetup = {
  title: "auto on iptables-nft → iptables",
  labName: "iso",
  lab: {},
  env: {},
  expectBackend: "iptables",
  expectLocation: "iptables-nft",
  vandalism: () => [
    ["iptables", "-F", "TJF_web"],
    ["iptables", "-D", "DOCKER-USER", "-j", "TRAFFICJAM"],
    ["iptables", "-I", "DOCKER-USER", "-j", "ACCEPT"],
    ["ip6tables", "-F", "TJF_web"],
  ],
  checkRepaired: async (lab) => {
    const rules = (await iptablesRules(lab, 4, "DOCKER-USER")).filter((l) => l.startsWith("-A"));
    assert.equal(rules[0], "-A DOCKER-USER -j TRAFFICJAM");
    await lab.nsExec(["iptables", "-D", "DOCKER-USER", "-j", "ACCEPT"]);
  },
};

isolationSuite(setup);
// The attacks below and beside the addresses, in a lab of their own on the same setup.
l2AttackSuite({ ...setup, labName: `${setup.labName}-l2` });
