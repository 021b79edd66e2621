// A reboot of a lab host, as far as its firewall can tell. dockerd is stopped (live-restore is
// off, so its containers stop with it), then the lab's kernel forgets what a reboot forgets: every
// nftables table (iptables-nft's included), the tracked flows, the links Docker made (bridges;
// the veths went with the containers). `beforeDocker` runs next, as a unit ordered before
// docker.service would, then dockerd starts again: it re-creates its bridges under the same names
// and its chains, and starts the containers that have a restart policy, as at boot.
// TrafficJam is the caller's to stop first and to start again (as a shutdown kills it and its
// container or unit starts it again).
import type { Lab } from "./lab.js";

export interface RebootTimes {
  /** Date.now() when dockerd was started again, and when it answered. */
  dockerStarting: number;
  dockerReady: number;
}

export async function simulateReboot(
  lab: Lab,
  beforeDocker: () => Promise<void> = async () => undefined,
): Promise<RebootTimes> {
  await lab.stopDockerd();
  const legacy = await lab.nsRun(["iptables-legacy-save"]);
  if (/^-A /m.test(legacy.stdout))
    throw new Error("simulateReboot: the lab has iptables-legacy rules, which it cannot forget");
  await lab.nsExec(["nft", "flush", "ruleset"]);
  await lab.nsRun(["conntrack", "-F"]); // empty already when nothing was tracked: exit 1 then
  const links = JSON.parse(await lab.nsExec(["ip", "-j", "link", "show", "type", "bridge"])) as {
    ifname: string;
  }[];
  for (const { ifname } of links) await lab.nsExec(["ip", "link", "delete", ifname]);
  await beforeDocker();
  const dockerStarting = Date.now();
  await lab.startDockerd();
  return { dockerStarting, dockerReady: Date.now() };
}
