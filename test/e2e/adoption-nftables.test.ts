// No fail-open corners on one host, with FIREWALL_BACKEND=nftables.
import { adoptionSuite } from "./adoption-suite.js";

adoptionSuite({
  title: "FIREWALL_BACKEND=nftables",
  labName: "adoptnft",
  env: { FIREWALL_BACKEND: "nftables" },
  vandalism: [
    ["nft", "flush", "chain", "inet", "trafficjam_web", "forward"],
    ["nft", "delete", "table", "inet", "trafficjam_web"],
    ["nft", "flush", "set", "bridge", "trafficjam_web", "guarded4"],
  ],
});
