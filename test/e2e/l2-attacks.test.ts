// Layer-2 and address attacks (l2-attacks.ts) with the default setup: FIREWALL_BACKEND=auto on
// a Docker host using iptables-nft, so TrafficJam picks iptables in the nft flavour.
import { l2AttackSuite } from "./l2-attacks.js";

l2AttackSuite({
  title: "auto on iptables-nft → iptables",
  labName: "l2a",
  lab: {},
  env: {},
  expectBackend: "iptables",
  expectLocation: "iptables-nft",
  vandalism: () => [],
});
