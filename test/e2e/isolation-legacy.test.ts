// Isolation on a Docker host whose iptables are the legacy flavour (a PATH shim for that dockerd
// only): auto must find DOCKER-USER in iptables-legacy and write there, not in iptables-nft.
import assert from "node:assert/strict";
import { iptablesLegacyShim, iptablesRules } from "./lab/index.js";
import { isolationSuite, type FirewallSetup } from "./isolation-suite.js";
import { l2AttackSuite } from "./l2-attacks.js";

const setup: FirewallSetup = {
  title: "auto on iptables-legacy → iptables-legacy",
  labName: "isolegacy",
  lab: { pathPrefix: iptablesLegacyShim() },
  env: {},
  expectBackend: "iptables",
  expectLocation: "iptables-legacy",
  vandalism: () => [
    ["iptables-legacy", "-F", "TJF_web"],
    ["iptables-legacy", "-D", "DOCKER-USER", "-j", "TRAFFICJAM"],
    ["ip6tables-legacy", "-F", "TJF_web"],
  ],
  checkRepaired: async (lab) => {
    const legacy = await iptablesRules(lab, 4, "DOCKER-USER", { flavour: "legacy" });
    assert.equal(legacy.filter((l) => l.startsWith("-A"))[0], "-A DOCKER-USER -j TRAFFICJAM");
    // Nothing of ours in the flavour Docker does not use.
    const nft = await iptablesRules(lab, 4, undefined, { flavour: "nft" });
    assert.deepEqual(
      nft.filter((l) => /TRAFFICJAM|TJF_|TJI_/.test(l)),
      [],
    );
  },
};

isolationSuite(setup);
// The attacks below and beside the addresses, in a lab of their own on the same setup.
l2AttackSuite({ ...setup, labName: `${setup.labName}-l2` });
