// `trafficjam doctor`: checks the host TrafficJam runs on and says what is wrong and how to fix
// it, one line per check (pass / warn / fail / skip). Exit 1 when a check fails. Reads only:
// sysctls, /proc, the mount table, the firewall's tables, the Docker Engine.
// Checks are pure functions of what was read (a `Facts` object), so each is tested without root;
// gathering the facts is the only I/O.
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { delimiter, join } from "node:path";
import { z } from "zod/v3";
import { ConfigError, parseConfig, type Config } from "../config.js";
import { DROP_KINDS, logGroupsOf } from "../drops.js";
import { bridgeNetfilterFix, bridgeNetfilterOff } from "../host/bridge-netfilter.js";
import { localHost, type Host } from "../host/host.js";
import { DOCKER_USER, ENTRY_FORWARD } from "../firewall/iptables/layout.js";
import { readFilterTable, type Flavour } from "../firewall/iptables/backend.js";
import type { FilterTable } from "../firewall/iptables/save-format.js";
import { createEngineClient } from "../observe/engine-api.js";
import { bridgeOf, subnetsOf } from "../observe/network.js";
import { liveStates, stateDir } from "./health.js";
import { instancesIn, readKernelView, type KernelView } from "./inventory.js";
import type { SwarmState } from "./state.js";
import { nodeName } from "./status.js";

export type Level = "pass" | "warn" | "fail" | "skip";

export interface CheckLine {
  level: Level;
  check: string;
  message: string;
  fix?: string;
}

/** Everything the checks look at, read once. */
export interface Facts {
  instanceId: string;
  config: Config | null;
  configProblems: string[];
  bridgeNetfilterOff: string[] | null;
  /** CapEff of this process, as a bit mask. */
  capabilities: bigint;
  /** Tools found on PATH, by name. */
  tools: Record<string, boolean>;
  docker:
    | { ok: true; version: string; api: string; endpoint: string; firewall: string | null }
    | { ok: false; endpoint: string; error: string };
  network:
    | { name: string; found: true; bridge: string | undefined; subnets: string[]; driver: string }
    | { name: string; found: false }
    | null;
  kernel: KernelView;
  /** The IPv6 filter tables of both flavours. */
  ip6tables: Record<Flavour, FilterTable>;
  ipv6Kernel: boolean;
  /** /proc/self/mountinfo. */
  mountinfo: string;
  inContainer: boolean;
  /** Process names running here (/proc/N/comm of our PID namespace). */
  processes: string[];
  /** NFLOG groups bound in this network namespace (/proc/net/netfilter/nfnetlink_log). */
  boundGroups: number[];
  /** Instances whose daemon runs here (live state files). */
  liveInstances: string[];
  /** The Swarm daemon's nodes, from its state file here (null: no Swarm daemon runs here). */
  swarm: SwarmState | null;
  /** A Swarm worker of this instance runs here (its rules are in an overlay's namespace). */
  swarmWorkerHere: boolean;
  /** When the facts were read (ms since the epoch). */
  now: number;
}

/** A worker's status older than this is news that does not come: the channel is down. */
export const STATUS_STALE_MS = 150_000;

const CAP_NET_ADMIN = 12n;
const CAP_SYS_ADMIN = 21n;
const has = (caps: bigint, bit: bigint) => ((caps >> bit) & 1n) === 1n;

/** A mount of /proc/self/mountinfo: where, what root of its filesystem, its propagation. */
interface Mount {
  point: string;
  root: string;
  propagation: "shared" | "slave" | "private";
}

export function parseMountinfo(text: string): Mount[] {
  return text
    .split("\n")
    .filter(Boolean)
    .map((line) => {
      const fields = line.split(" ");
      const separator = fields.indexOf("-");
      const optional = fields.slice(6, separator);
      const propagation = optional.some((o) => o.startsWith("shared:"))
        ? "shared"
        : optional.some((o) => o.startsWith("master:"))
          ? "slave"
          : "private";
      const unescape = (s: string) =>
        s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
      return { point: unescape(fields[4] ?? ""), root: unescape(fields[3] ?? ""), propagation };
    });
}

/** The mount a path is on: the longest mount point that contains it (the last one mounted). */
function mountOf(mounts: readonly Mount[], path: string): Mount | undefined {
  let best: Mount | undefined;
  for (const m of mounts) {
    const within = m.point === "/" || path === m.point || path.startsWith(`${m.point}/`);
    if (within && (!best || m.point.length >= best.point.length)) best = m;
  }
  return best;
}

/**
 * Docker's netns folder mounted at /run/netns, as the image mounts it: a mount there whose root
 * is Docker's folder (iproute2's own /run/netns, on a host, is not it).
 */
function dockerNetnsMount(mounts: readonly Mount[]): Mount | undefined {
  return mounts.find((m) => m.point === "/run/netns" && /docker\/netns$/.test(m.root));
}

/** The original's rule comments: `traefikjam-<hash> <date>`, `trafficjam-<hash> <date>`,
 * `trafficjam_<INSTANCE_ID> <date>` (docs/operations.md, from its tags). */
const ORIGINAL_COMMENT = /--comment "?(traefikjam|trafficjam)[-_][A-Za-z0-9_]+ [0-9]{4}-/;
const ORIGINAL_CHAINS = ["TRAEFIKJAM", "TRAEFIKJAM_INPUT"];

function check(level: Level, name: string, message: string, fix?: string): CheckLine {
  return { level, check: name, message, ...(fix ? { fix } : {}) };
}

/** Every check, from the facts. Pure. */
export function checks(f: Facts): CheckLine[] {
  const out: CheckLine[] = [];
  // configuration
  if (f.configProblems.length > 0)
    for (const p of f.configProblems) out.push(check("fail", "configuration", p));
  else if (f.config?.mode === "audit")
    out.push(
      check(
        "warn",
        "configuration",
        "MODE=audit: the rules drop nothing, they only log",
        "MODE=enforce once the logs show only what you expect",
      ),
    );
  else out.push(check("pass", "configuration", "the variables are valid"));
  if (f.config?.metricsAddress) {
    const host = f.config.metricsAddress.host;
    const loopback = host === "::1" || host.startsWith("127.");
    out.push(
      loopback
        ? check("pass", "metrics", `served on the loopback address ${host}`)
        : check(
            "warn",
            "metrics",
            `METRICS_ADDRESS ${host} is not a loopback address: anyone who reaches it reads the metrics`,
            "bind it to 127.0.0.1, or firewall the port",
          ),
    );
  }

  // The Swarm daemon enforces nothing where it runs: its nodes are what there is to check.
  if (f.config?.swarmDaemon)
    return [
      ...out,
      dockerCheck(f),
      check(
        "skip",
        "this host",
        "the Swarm daemon writes no rules here: each node's own checks run in its worker (docker exec <a worker task> trafficjam doctor)",
      ),
      ...swarmChecks(f),
    ];

  const mounts = parseMountinfo(f.mountinfo);

  // br_netfilter
  if (f.bridgeNetfilterOff === null)
    out.push(
      check(
        "fail",
        "br_netfilter",
        "no /proc/sys/net/bridge: br_netfilter is not loaded, bridged traffic bypasses every rule",
        bridgeNetfilterFix(["bridge-nf-call-iptables", "bridge-nf-call-ip6tables"]),
      ),
    );
  else if (f.bridgeNetfilterOff.length > 0)
    out.push(
      check(
        "fail",
        "br_netfilter",
        `${f.bridgeNetfilterOff.join(", ")} not 1: bridged traffic bypasses the firewall`,
        bridgeNetfilterFix(f.bridgeNetfilterOff),
      ),
    );
  else
    out.push(
      check("pass", "br_netfilter", "bridge-nf-call-iptables and bridge-nf-call-ip6tables are 1"),
    );

  // capabilities
  if (!has(f.capabilities, CAP_NET_ADMIN))
    out.push(
      check(
        "fail",
        "capabilities",
        "no CAP_NET_ADMIN: no rule can be read or written",
        "run the image with --cap-add NET_ADMIN, or the host command as root",
      ),
    );
  else {
    const netnsMounted = dockerNetnsMount(mounts) !== undefined;
    out.push(
      has(f.capabilities, CAP_SYS_ADMIN) || netnsMounted
        ? check(
            "pass",
            "capabilities",
            `CAP_NET_ADMIN${has(f.capabilities, CAP_SYS_ADMIN) ? " and CAP_SYS_ADMIN" : ", and Docker's netns folder at /run/netns"}: bridge ports can be found`,
          )
        : check(
            "warn",
            "capabilities",
            "no CAP_SYS_ADMIN and no netns folder at /run/netns: no member's bridge port can be found (port.unbound)",
            "mount -v /var/run/docker/netns:/run/netns:ro,rslave in the image; run the host command as root",
          ),
    );
  }

  // tools
  const need: Array<[string, Level, string]> = [
    ["nft", "fail", "both backends (the nftables tables, the iptables backend's bridge guard)"],
    ["iptables-nft", "warn", "the iptables backend where Docker uses iptables-nft"],
    ["iptables-legacy", "warn", "the iptables backend where Docker uses iptables-legacy"],
    ["conntrack", "warn", "cutting the flows the rules forbid (flows.delete.failed without it)"],
    ["ip", "warn", "finding bridge ports and the gateway's identity"],
    ["nsenter", "warn", "finding bridge ports by entering namespaces (the host command)"],
    ["tcpdump", "warn", "the blocked-attempt log (drops are counted without it, not reported)"],
  ];
  const missing = need.filter(([tool]) => !f.tools[tool]);
  const failing = missing.filter(([, level]) => level === "fail");
  out.push(
    missing.length === 0
      ? check("pass", "tools", need.map(([t]) => t).join(", ") + " found")
      : check(
          failing.length > 0 ? "fail" : "warn",
          "tools",
          missing.map(([t, , why]) => `${t} missing (${why})`).join("; "),
          "Debian packages: nftables, iptables, conntrack, iproute2, util-linux, tcpdump (the image has them)",
        ),
  );

  out.push(dockerCheck(f));

  // Docker's firewall: where its chains live
  const withUser = (["nft", "legacy"] as const).filter((fl) =>
    f.kernel.iptables[fl].chains.has(DOCKER_USER),
  );
  const dockerNft = f.kernel.nftTables.filter((t) => /\bdocker-bridges$/.test(t));
  const reported =
    f.docker.ok && f.docker.firewall
      ? `Docker says its firewall backend is ${f.docker.firewall}; `
      : "";
  if (withUser.length === 2)
    out.push(
      check(
        "warn",
        "docker firewall",
        `${reported}both iptables flavours hold DOCKER-USER: TrafficJam uses the one FORWARD jumps to; the other is probably left from a switch`,
        "restart dockerd after cleaning the unused flavour's chains, or leave it",
      ),
    );
  else if (withUser.length === 1)
    out.push(
      check(
        "pass",
        "docker firewall",
        `${reported}Docker's chains are in iptables-${withUser[0]}: FIREWALL_BACKEND=auto uses iptables there`,
      ),
    );
  else if (dockerNft.length > 0)
    out.push(
      check(
        "pass",
        "docker firewall",
        `${reported}Docker's own nftables firewall (${dockerNft.join(", ")}), no DOCKER-USER: FIREWALL_BACKEND=auto uses nftables`,
      ),
    );
  else
    out.push(
      check(
        "warn",
        "docker firewall",
        `${reported}no DOCKER-USER chain and no Docker nftables table: Docker writes no firewall rules here ("iptables": false?), or is not running; FIREWALL_BACKEND=auto uses nftables`,
      ),
    );
  // something ahead of TrafficJam's jump in DOCKER-USER
  for (const fl of withUser) {
    const rules = f.kernel.iptables[fl].chains.get(DOCKER_USER) ?? [];
    const ours = rules.indexOf(`-A ${DOCKER_USER} -j ${ENTRY_FORWARD}`);
    if (ours > 0)
      out.push(
        check(
          "warn",
          "firewall managers",
          `iptables-${fl}: ${ours} rule(s) ahead of TrafficJam's jump in DOCKER-USER (${rules[0]}): another tool inserts rules there; TrafficJam puts its jump back first at every pass`,
          "find the tool (ufw-docker, a script) and make it append, not insert",
        ),
      );
  }

  // IPv6
  if (!f.ipv6Kernel)
    out.push(check("pass", "ipv6", "this kernel has no IPv6: nothing to protect there"));
  else if (
    withUser.length > 0 &&
    !f.tools["ip6tables-nft"] &&
    !f.tools["ip6tables-legacy"] &&
    !f.tools.ip6tables
  )
    out.push(
      check(
        "fail",
        "ipv6",
        "no ip6tables: the iptables backend cannot protect IPv6 (link-local IPv6 stays open between members)",
        "install iptables (it brings ip6tables)",
      ),
    );
  else {
    const flavour = withUser[0] ?? "nft";
    const v6User = f.ip6tables[flavour].chains.has(DOCKER_USER);
    out.push(
      check(
        "pass",
        "ipv6",
        v6User
          ? `ip6tables-${flavour} has Docker's DOCKER-USER: TrafficJam's IPv6 jump is there`
          : `ip6tables-${flavour} has no DOCKER-USER (Docker without ip6tables): TrafficJam jumps from FORWARD, first; every member's link-local IPv6 is covered`,
      ),
    );
  }

  // the netns mount and its propagation
  const netns = dockerNetnsMount(mounts);
  if (netns) {
    out.push(
      netns.propagation === "private"
        ? check(
            "warn",
            "netns mount",
            "/run/netns is mounted but private: containers started after TrafficJam do not appear in it (their ports stay unbound)",
            "mount it with rslave: -v /var/run/docker/netns:/run/netns:ro,rslave",
          )
        : check(
            "pass",
            "netns mount",
            `/run/netns is mounted (${netns.root}), ${netns.propagation}: new containers' namespaces appear in it`,
          ),
    );
  } else if (f.inContainer) {
    out.push(
      check(
        "warn",
        "netns mount",
        "Docker's netns folder is not mounted at /run/netns: no member's bridge port can be found by namespace id (port.unbound)",
        "add -v /var/run/docker/netns:/run/netns:ro,rslave",
      ),
    );
  } else {
    const holder = mountOf(mounts, "/run/docker/netns") ?? mountOf(mounts, "/var/run/docker/netns");
    out.push(
      !holder || holder.propagation === "private"
        ? check(
            "warn",
            "netns mount",
            `the host command finds ports by entering namespaces (as root); but ${holder?.point ?? "the mount holding /var/run/docker/netns"} is private, so the image's netns line would fail ("is mounted on ${holder?.point ?? "/"} but it is not a shared or slave mount")`,
            `sudo mount --make-rshared ${holder?.point ?? "/"} (until reboot; systemd does it by default)`,
          )
        : check(
            "pass",
            "netns mount",
            `${holder.point} is ${holder.propagation}: the image's netns line (rslave) would work too`,
          ),
    );
  }

  // other firewall managers over the same chains
  const managers: string[] = [];
  if (f.processes.includes("firewalld") || f.kernel.nftTables.some((t) => /firewalld/.test(t)))
    managers.push("firewalld (it reloads its own rules and may flush Docker's)");
  for (const fl of ["nft", "legacy"] as const)
    if ([...f.kernel.iptables[fl].chains.keys()].some((c) => /^ufw6?-/.test(c)))
      managers.push(`ufw in iptables-${fl} (it manages FORWARD and INPUT too)`);
  out.push(
    managers.length === 0
      ? check("pass", "firewall managers", "no firewalld, no ufw")
      : check(
          "warn",
          "firewall managers",
          managers.join("; "),
          "make sure it leaves DOCKER-USER, TRAFFICJAM* and TrafficJam's nft tables alone; TrafficJam repairs its own rules at every resync (rules.repaired)",
        ),
  );

  // other TrafficJam instances: their NFLOG groups, leftovers of removed ones
  const instances = instancesIn(f.kernel);
  const ids = new Set([...instances.map((i) => i.id), ...f.liveInstances, f.instanceId]);
  const groupOwners = new Map<number, string[]>();
  for (const id of ids)
    for (const kind of DROP_KINDS) {
      const g = logGroupsOf(id)[kind];
      groupOwners.set(g, [...(groupOwners.get(g) ?? []), id]);
    }
  const clashes = [...groupOwners].filter(([, owners]) => owners.length > 1);
  if (clashes.length > 0)
    out.push(
      check(
        "fail",
        "other instances",
        `instances share NFLOG groups: ${clashes.map(([g, o]) => `${g} (${o.join(", ")})`).join("; ")}: only one can read a group`,
        "give one of them another INSTANCE_ID",
      ),
    );
  const ours = logGroupsOf(f.instanceId);
  if (!f.liveInstances.includes(f.instanceId)) {
    const taken = DROP_KINDS.filter((k) => f.boundGroups.includes(ours[k]));
    if (taken.length > 0)
      out.push(
        check(
          "fail",
          "other instances",
          `this instance's NFLOG groups ${taken.map((k) => ours[k]).join(", ")} are read by another process while its daemon does not run here: its blocked-attempt log could not start`,
          "stop that reader (another TrafficJam with the same INSTANCE_ID elsewhere, a tcpdump)",
        ),
      );
  }
  const others = instances.filter((i) => i.id !== f.instanceId);
  const orphans = others.filter((i) => !f.liveInstances.includes(i.id));
  if (orphans.length > 0)
    out.push(
      check(
        "warn",
        "removed instances",
        orphans.map((i) => `${i.id} (rules in ${i.where.join(", ")}, no daemon here)`).join("; ") +
          ": a stopped daemon leaves its rules in force on purpose; if the instance is gone, remove them",
        orphans.map((i) => `INSTANCE_ID=${i.id} trafficjam --clear`).join("; "),
      ),
    );
  else
    out.push(
      check(
        "pass",
        "removed instances",
        others.length
          ? `other instances here, each with its daemon: ${others.map((i) => i.id).join(", ")}`
          : "no other instance's rules here",
      ),
    );
  const both = instances.find(
    (i) =>
      i.id === f.instanceId &&
      i.where.includes("nftables") &&
      i.where.some((w) => w.startsWith("iptables-")),
  );
  if (both)
    out.push(
      check(
        "warn",
        "this instance",
        `rules in both backends (${both.where.join(", ")}): the daemon removes the unused one at its next pass; without a daemon, --clear removes both`,
      ),
    );

  // leftovers of the original (kaysond/trafficjam)
  const leftovers: string[] = [];
  for (const fl of ["nft", "legacy"] as const) {
    const table = f.kernel.iptables[fl];
    for (const chain of ORIGINAL_CHAINS)
      if (table.chains.has(chain)) leftovers.push(`iptables-${fl}: chain ${chain}`);
    for (const [chain, rules] of table.chains) {
      const n = rules.filter((r) => ORIGINAL_COMMENT.test(r)).length;
      if (n > 0) leftovers.push(`iptables-${fl}: ${n} rule(s) of the original in ${chain}`);
    }
  }
  out.push(
    leftovers.length === 0
      ? check("pass", "original trafficjam", "no rule or chain of kaysond/trafficjam")
      : check(
          "fail",
          "original trafficjam",
          `${leftovers.join("; ")}: their RETURNs skip TrafficJam's checks`,
          "remove them as docs/operations.md (Migrating from the original) shows",
        ),
  );

  // the network
  if (f.network) {
    const n = f.network;
    out.push(
      !n.found
        ? check("warn", "network", `${n.name} does not exist (yet): TrafficJam waits for it`)
        : n.driver === "overlay" && f.swarmWorkerHere
          ? check(
              "pass",
              "network",
              `${n.name}: overlay, subnets ${n.subnets.join(" ") || "none"}; this node's Swarm worker keeps the rules in its namespace`,
            )
          : n.bridge === undefined
            ? check(
                "fail",
                "network",
                `${n.name} is a ${n.driver} network, not a bridge: nothing can be enforced on it (Swarm overlays: SWARM_DAEMON=true)`,
              )
            : check(
                "pass",
                "network",
                `${n.name}: bridge ${n.bridge}, subnets ${n.subnets.join(" ") || "none"}`,
              ),
    );
  }

  return out;
}

/** Whether Docker answers, and which. */
function dockerCheck(f: Facts): CheckLine {
  return !f.docker.ok
    ? check(
        "fail",
        "docker",
        `cannot reach Docker at ${f.docker.endpoint}: ${f.docker.error}`,
        "check DOCKER_HOST and that dockerd runs",
      )
    : check(
        "pass",
        "docker",
        `Docker ${f.docker.version} (API ${f.docker.api}) at ${f.docker.endpoint}`,
      );
}

/** Swarm mode: each node's worker, as the daemon running here last heard of it. */
function swarmChecks(f: Facts): CheckLine[] {
  const sw = f.swarm;
  if (sw === null)
    return [
      check(
        "fail",
        "swarm",
        "no Swarm daemon of this INSTANCE_ID runs here: the nodes are checked where it runs",
        "run `docker exec <the daemon's container> trafficjam doctor`",
      ),
    ];
  const ports = `TCP ${sw.channelPort} from the daemon's node to every node (the workers' channel), and Swarm's own: TCP 2377, TCP+UDP 7946, UDP data-path port (4789 unless --data-path-port)`;
  const out = [check("pass", "swarm ports", `the nodes need ${ports}`)];
  for (const n of sw.nodes) {
    const name = nodeName(n);
    const st = n.status;
    const age = n.heardAt === null ? null : f.now - n.heardAt;
    if (n.worker === "no worker task")
      out.push(
        check(
          "fail",
          name,
          "no worker task runs on it: nothing is enforced there",
          "see `docker service ps` of the worker service (a constraint, a drained node, the image missing on the node)",
        ),
      );
    else if (n.worker === "not connected")
      out.push(
        check(
          "fail",
          name,
          `the daemon cannot reach its worker at ${n.address}:${sw.channelPort} (its last rules stay in force)`,
          `let TCP ${sw.channelPort} through from the daemon's node to ${n.address}; see the worker's log (swarm.channel.*)`,
        ),
      );
    else if (st === null || age === null || age > STATUS_STALE_MS)
      out.push(check("warn", name, "its worker is connected but has told no status lately"));
    else if (!st.lastPass?.ok)
      out.push(
        check(
          "fail",
          name,
          `its worker's last pass failed: ${st.lastPass?.error ?? "no pass yet"}`,
          "see the worker's log on that node (rules.failed)",
        ),
      );
    else if (!st.attemptLog.reading)
      out.push(
        check(
          "warn",
          name,
          `rules in force (${st.location ?? "?"}), but blocked attempts are not logged: ${st.attemptLog.reason ?? "unknown"}`,
        ),
      );
    else
      out.push(
        check(
          "pass",
          name,
          `worker connected at ${n.address}, rules in force (${st.location ?? "nowhere: the network is not on this node"}), ${st.mode}, attempt log reading`,
        ),
      );
  }
  return out;
}

const LEVEL_TEXT: Record<Level, string> = {
  pass: "pass",
  warn: "warn",
  fail: "FAIL",
  skip: "skip",
};

export function renderChecks(lines: readonly CheckLine[]): string {
  return lines
    .map(
      (l) => `${LEVEL_TEXT[l.level]}  ${l.check}: ${l.message}${l.fix ? ` — fix: ${l.fix}` : ""}\n`,
    )
    .join("");
}

// ---- gathering the facts ----

function onPath(tool: string, env: Record<string, string | undefined>): boolean {
  const dirs = (env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin").split(delimiter);
  return dirs.some((d) => d !== "" && existsSync(join(d, tool)));
}

function read(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

function processNames(): string[] {
  try {
    return readdirSync("/proc")
      .filter((p) => /^\d+$/.test(p))
      .map((p) => read(`/proc/${p}/comm`).trim())
      .filter(Boolean);
  } catch {
    return [];
  }
}

const infoSchema = z.object({ FirewallBackend: z.object({ Driver: z.string() }).optional() });

export async function gatherFacts(
  env: Record<string, string | undefined>,
  host: Host = localHost,
): Promise<Facts> {
  let config: Config | null = null;
  let configProblems: string[] = [];
  try {
    // NETWORK and WHITELIST_FILTER are not needed to check the host: stand-ins when unset.
    config = parseConfig({ NETWORK: "-", WHITELIST_FILTER: "name=-", ...env });
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    configProblems = error.problems;
  }
  const instanceId = config?.instanceId ?? "DEFAULT";
  const client = createEngineClient(env as NodeJS.ProcessEnv);
  const docker = (async (): Promise<Facts["docker"]> => {
    try {
      const version = await client.version();
      const info = await client.call("GET", "/info", infoSchema).catch(() => null);
      return {
        ok: true,
        version: version.Version ?? "?",
        api: version.ApiVersion ?? "?",
        endpoint: client.describe(),
        firewall: info?.FirewallBackend?.Driver ?? null,
      };
    } catch (error) {
      return { ok: false, endpoint: client.describe(), error: (error as Error).message };
    }
  })();
  const network = (async (): Promise<Facts["network"]> => {
    const name = env.NETWORK?.trim();
    if (!name) return null;
    try {
      const n = await client.inspectNetwork(name);
      if (!n) return { name, found: false };
      return {
        name,
        found: true,
        bridge: bridgeOf(n),
        subnets: subnetsOf(n),
        driver: n.Driver ?? "?",
      };
    } catch {
      return { name, found: false };
    }
  })();
  const tools = Object.fromEntries(
    [
      "nft",
      "iptables",
      "iptables-nft",
      "iptables-legacy",
      "ip6tables",
      "ip6tables-nft",
      "ip6tables-legacy",
      "conntrack",
      "ip",
      "nsenter",
      "tcpdump",
    ].map((t) => [t, onPath(t, env)]),
  );
  const [kernel, v6nft, v6legacy] = await Promise.all([
    // Without CAP_NET_ADMIN nothing can be read: the capabilities check says so, not a crash.
    readKernelView(host).catch((): KernelView => ({
      iptables: { nft: { chains: new Map() }, legacy: { chains: new Map() } },
      nftTables: [],
    })),
    readFilterTable(host, 6, "nft").catch(() => ({ chains: new Map() })),
    readFilterTable(host, 6, "legacy").catch(() => ({ chains: new Map() })),
  ]);
  const capLine = /^CapEff:\s*([0-9a-f]+)$/m.exec(read("/proc/self/status"))?.[1] ?? "0";
  const bound = read("/proc/net/netfilter/nfnetlink_log")
    .split("\n")
    .map((l) => Number(l.trim().split(/\s+/)[0]))
    .filter((n) => Number.isInteger(n) && n > 0);
  const states = liveStates(stateDir(env));
  const ours = states.filter((s) => s.instanceId === instanceId);
  const swarm = ours.find((s) => s.swarm)?.swarm ?? null;
  const swarmWorkerHere = ours.some((s) => s.ruleset?.netns);
  const mountinfo = read("/proc/self/mountinfo");
  const facts: Facts = {
    instanceId,
    config,
    configProblems,
    bridgeNetfilterOff: existsSync("/proc/sys/net/bridge") ? await bridgeNetfilterOff(host) : null,
    capabilities: BigInt(`0x${capLine}`),
    tools,
    docker: await docker,
    network: await network,
    kernel,
    ip6tables: { nft: v6nft, legacy: v6legacy },
    ipv6Kernel: existsSync("/proc/sys/net/ipv6"),
    mountinfo,
    // A container of Docker's (its marker file, and an overlay root: a machine built from an
    // image may keep the marker on a disk of its own)
    inContainer: existsSync("/.dockerenv") && / \/ \/ .* - overlay /.test(mountinfo),
    processes: processNames(),
    boundGroups: bound,
    liveInstances: states.map((s) => s.instanceId),
    swarm,
    swarmWorkerHere,
    now: Date.now(),
  };
  client.close();
  return facts;
}

/** `trafficjam doctor`: exit 1 when a check fails, else 0. */
export async function runDoctor(json: boolean): Promise<number> {
  const lines = checks(await gatherFacts(process.env));
  process.stdout.write(json ? `${JSON.stringify(lines, null, 2)}\n` : renderChecks(lines));
  return lines.some((l) => l.level === "fail") ? 1 : 0;
}
