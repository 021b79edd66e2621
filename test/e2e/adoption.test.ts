// No fail-open corners on one host, with the iptables backend (auto, on Docker's iptables-nft).
import { adoptionSuite } from "./adoption-suite.js";

adoptionSuite({
  title: "iptables, auto",
  labName: "adopt",
  env: {},
  vandalism: [
    ["iptables", "-F", "TJF_web"],
    ["iptables", "-D", "DOCKER-USER", "-j", "TRAFFICJAM"],
    ["ip6tables", "-F", "TJF_web"],
    ["nft", "flush", "set", "bridge", "trafficjam-l2_web", "guarded4"],
  ],
});
