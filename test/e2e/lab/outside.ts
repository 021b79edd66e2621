// "The outside world" of a lab: a network namespace beyond the lab host, linked to it by a veth
// pair and routed through it, with `tjprobe serve` running there. Containers reach it as they
// would reach the Internet, through Docker's NAT (the lab dockerd masquerades its subnets).
//
//   containers ── bridge ── lab host (tj-NAME) ── veth tjo-SUFFIX ══ eth0 ── tj-NAME_SUFFIX
//                                PREFIX4.1/30, PREFIX6::1/64          PREFIX4.2, PREFIX6::2
//
// Named tj-NAME_SUFFIX: teardown (teardown.ts) finds namespaces with the lab's prefix, kills the
// processes inside them by PID and deletes them, also after a crash (safety net, stale sweep).
import { existsSync } from "node:fs";
import { runOk, type RunResult } from "./exec.js";
import { HostServer } from "./host-server.js";
import { tjprobeBinary } from "./image.js";
import type { Lab } from "./lab.js";
import { nsRun, nsRunOk } from "./netns.js";

export interface OutsideOptions {
  /** [a-z0-9], 1–8 characters: the namespace is tj-LAB_SUFFIX, the lab's veth tjo-SUFFIX. */
  suffix?: string;
  /** First three octets of a /30: the lab side gets .1, the outside .2. Default 10.251.0. */
  prefix4?: string;
  /** A /64 prefix without "::": the lab side gets ::1, the outside ::2. Default fd00:251. */
  prefix6?: string;
}

export class Outside {
  /** Addresses of the outside namespace. */
  readonly ipv4: string;
  readonly ipv6: string;
  /** The lab host's addresses on the link (the outside's default gateways). */
  readonly gateway4: string;
  readonly gateway6: string;
  /** The lab host's end of the veth pair. */
  readonly labIface: string;

  constructor(
    readonly netns: string,
    readonly server: HostServer,
    o: Required<OutsideOptions>,
  ) {
    this.ipv4 = `${o.prefix4}.2`;
    this.ipv6 = `${o.prefix6}::2`;
    this.gateway4 = `${o.prefix4}.1`;
    this.gateway6 = `${o.prefix6}::1`;
    this.labIface = `tjo-${o.suffix}`;
  }

  /** "<src ip> <payload>" lines received on UDP 9000 in the outside namespace. */
  udpLog(): string[] {
    return this.server.udpLog();
  }

  /** Runs a command in the outside namespace; never throws for a non-zero exit. */
  run(cmd: readonly string[], timeoutMs?: number): Promise<RunResult> {
    return nsRun(this.netns, cmd, timeoutMs);
  }

  /** Stops its server and deletes the namespace (and so the veth pair). Idempotent. */
  async remove(): Promise<void> {
    await this.server.stop();
    if (existsSync(`/run/netns/${this.netns}`)) await runOk("ip", ["netns", "delete", this.netns]);
  }
}

export async function startOutside(lab: Lab, opts: OutsideOptions = {}): Promise<Outside> {
  const o: Required<OutsideOptions> = {
    suffix: opts.suffix ?? "out",
    prefix4: opts.prefix4 ?? "10.251.0",
    prefix6: opts.prefix6 ?? "fd00:251",
  };
  if (!/^[a-z0-9]{1,8}$/.test(o.suffix)) throw new Error(`bad outside suffix ${o.suffix}`);
  const netns = `${lab.paths.extraNetnsPrefix}${o.suffix}`;
  if (existsSync(`/run/netns/${netns}`)) throw new Error(`netns ${netns} already exists`);
  const labIface = `tjo-${o.suffix}`;
  // From here on, lab.stop() removes whatever exists even if a step below fails.
  await runOk("ip", ["netns", "add", netns]);
  const inside = (cmd: string[]) => nsRunOk(netns, cmd);
  await inside(["ip", "link", "set", "lo", "up"]);
  await lab.nsExec(["ip", "link", "add", labIface, "type", "veth", "peer", "name", "eth0"]);
  await lab.nsExec(["ip", "link", "set", "eth0", "netns", netns]);
  await lab.nsExec(["ip", "addr", "add", `${o.prefix4}.1/30`, "dev", labIface]);
  await lab.nsExec(["ip", "-6", "addr", "add", `${o.prefix6}::1/64`, "dev", labIface, "nodad"]);
  await lab.nsExec(["ip", "link", "set", labIface, "up"]);
  await inside(["ip", "addr", "add", `${o.prefix4}.2/30`, "dev", "eth0"]);
  await inside(["ip", "-6", "addr", "add", `${o.prefix6}::2/64`, "dev", "eth0", "nodad"]);
  await inside(["ip", "link", "set", "eth0", "up"]);
  await inside(["ip", "route", "add", "default", "via", `${o.prefix4}.1`]);
  await inside(["ip", "-6", "route", "add", "default", "via", `${o.prefix6}::1`]);
  const server = new HostServer(lab, await tjprobeBinary(), netns);
  await server.ready();
  return new Outside(netns, server, o);
}
