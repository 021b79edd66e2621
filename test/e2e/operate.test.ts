// Operating TrafficJam on a Docker host whose iptables are the nft flavour (Debian's default): the
// iptables backend (auto), then the nftables backend, in one lab; this lab also runs `doctor`
// and a real Prometheus. See operate-suite.ts.
import { operateSuite } from "./operate-suite.js";

operateSuite({
  title: "dockerd on iptables-nft",
  labName: "ops",
  lab: {},
  hostChecks: true,
  backends: [
    {
      title: "iptables-nft, FIREWALL_BACKEND=auto",
      env: {},
      location: "iptables-nft",
      tamper: [["iptables", "-D", "TJF_web", "1"]],
      listing: [["iptables-save", "-t", "filter"]],
    },
    {
      title: "FIREWALL_BACKEND=nftables",
      env: { FIREWALL_BACKEND: "nftables" },
      location: "nftables",
      tamper: [["nft", "flush", "chain", "inet", "trafficjam_web", "forward"]],
      // -t: without the sets' elements (the per-source limits' sets change with every packet)
      listing: [["nft", "-t", "list", "table", "inet", "trafficjam_web"]],
    },
  ],
});
