// Operating TrafficJam on a Docker host whose iptables are the legacy flavour (a PATH shim for
// that dockerd only): the blocked-attempt log, counters, audit mode, plan and explain with the
// rules in iptables-legacy. See operate-suite.ts.
import { iptablesLegacyShim } from "./lab/index.js";
import { operateSuite } from "./operate-suite.js";

operateSuite({
  title: "dockerd on iptables-legacy",
  labName: "opslegacy",
  lab: { pathPrefix: iptablesLegacyShim() },
  backends: [
    {
      title: "iptables-legacy, FIREWALL_BACKEND=auto",
      env: {},
      location: "iptables-legacy",
      tamper: [["iptables-legacy", "-D", "TJF_web", "1"]],
      listing: [["iptables-legacy-save", "-t", "filter"]],
    },
  ],
});
