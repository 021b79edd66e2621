// `trafficjam status [--json]`: every instance in this network namespace, from the state files
// the daemons publish (ops/health.ts, ops/state.ts) and from the kernel: its network, mode,
// backend and where the rules are, its whitelisted containers and their ports (or why unbound),
// the last pass, repairs since the start, the drop counters per kind read from the kernel now,
// and the blocked attempts. Changes nothing. An instance whose rules are in force but whose
// daemon does not run here (stopped: the rules stay) is listed from the kernel alone.
import { DROP_KINDS, logGroupsOf, type DropKind, type Mode } from "../drops.js";
import { localHost, type Host } from "../host/host.js";
import { formatTimestamp } from "../log.js";
import { readDropCounts, type DropCounts } from "./counters.js";
import { SWARM_DAEMON_LOCATION, assessHealth, liveStates, stateDir } from "./health.js";
import { instancesIn, readKernelView } from "./inventory.js";
import type { OpsState, SwarmNodeState } from "./state.js";

export interface InstanceStatus {
  instanceId: string;
  /** The daemon: running (its state file and process), or not running here. */
  daemon: { running: boolean; pid?: number; startedAt?: string };
  network?: { name: string | null; bridge: string | null; subnets: string[] };
  mode?: Mode;
  backend?: { setting: string; location: string | null };
  /** Where the kernel holds the instance's rules. */
  rulesIn: string[];
  /** Why the kernel could not be read here (rulesIn is then empty). */
  kernelError?: string;
  health?: { healthy: boolean; reason: string };
  lastPass?: { ok: boolean; at: string; ago: string; error?: string };
  passes?: OpsState["passes"];
  repairs?: number;
  whitelisted?: OpsState["whitelisted"];
  /** Packets dropped (in audit mode: that would have been) since the rules were written. */
  drops?: DropCounts | { error: string };
  attempts?: OpsState["attempts"];
  attemptLog?: OpsState["attemptLog"];
  metrics?: string | null;
  /** The Swarm daemon's: every node, its worker and how it enforces (told over the channel). */
  swarm?: { channelPort: number; nodes: Array<SwarmNodeState & { heardAgo: string | null }> };
}

const ago = (ms: number) => `${(Math.max(0, ms) / 1000).toFixed(1)} s ago`;

export async function collectStatus(
  env: Record<string, string | undefined>,
  host: Host = localHost,
  clock: () => number = Date.now,
): Promise<InstanceStatus[]> {
  const tz = env.TZ?.trim() || "UTC";
  const time = (ms: number) => formatTimestamp(new Date(ms), tz);
  // The Swarm daemon's container may not read the kernel (it needs no capability): said, not fatal.
  let kernelError: string | undefined;
  const kernel = await readKernelView(host).then(instancesIn, (error: Error) => {
    kernelError = error.message.split("\n")[0];
    return [];
  });
  // A state file whose daemon is gone says nothing (a killed daemon leaves it): only the kernel.
  const live = liveStates(stateDir(env));
  const now = clock(); // after the files were read: no pass in them is from the future
  const ids = [...new Set([...live.map((s) => s.instanceId), ...kernel.map((k) => k.id)])].sort();
  const out: InstanceStatus[] = [];
  for (const id of ids) {
    const state = live.find((s) => s.instanceId === id);
    const alive = state !== undefined;
    // A Swarm worker's rules are in the overlay's namespace: its counters are read there.
    const netns = (alive ? state?.ruleset?.netns : null) ?? null;
    const rulesHost = host.in(netns);
    const rulesIn = [...(kernel.find((k) => k.id === id)?.where ?? [])];
    if (netns !== null) {
      const there = await readKernelView(rulesHost).then(instancesIn, () => []);
      rulesIn.push(...(there.find((k) => k.id === id)?.where ?? []).map((w) => `${w} in ${netns}`));
    }
    const status: InstanceStatus = {
      instanceId: id,
      daemon: alive
        ? {
            running: true,
            pid: state!.pid,
            ...(state!.ops ? { startedAt: time(state!.ops.startedAt) } : {}),
          }
        : { running: false },
      rulesIn,
      ...(kernelError ? { kernelError } : {}),
    };
    if (state && alive) {
      const r = state.ruleset;
      status.network = {
        name: r?.networkName ?? state.ops?.network ?? state.swarm?.network ?? null,
        bridge: r?.bridge ?? null,
        subnets: r ? [...r.families[4].subnets, ...r.families[6].subnets] : [],
      };
      status.mode = r?.mode ?? "enforce";
      status.backend = { setting: state.firewallBackend, location: state.location };
      status.health = assessHealth(state, now, alive);
      if (state.lastPass)
        status.lastPass = {
          ok: state.lastPass.ok,
          at: time(state.lastPass.at),
          ago: ago(now - state.lastPass.at),
          ...(state.lastPass.error ? { error: state.lastPass.error } : {}),
        };
      if (state.ops) {
        status.passes = state.ops.passes;
        status.repairs = state.ops.repairs;
        status.whitelisted = state.ops.whitelisted;
        status.attempts = state.ops.attempts;
        status.attemptLog = state.ops.attemptLog;
        status.metrics = state.ops.metrics;
      }
      if (state.swarm)
        status.swarm = {
          channelPort: state.swarm.channelPort,
          nodes: state.swarm.nodes.map((n) => ({
            ...n,
            heardAgo: n.heardAt === null ? null : ago(now - n.heardAt),
          })),
        };
    }
    const location =
      alive && (state?.swarm || state?.location === SWARM_DAEMON_LOCATION)
        ? null // the Swarm daemon's counters are its nodes'
        : ((alive ? state?.location : null) ??
          rulesIn.find((w) => /^(iptables-(nft|legacy)|nftables)$/.test(w)) ??
          null);
    if (location) {
      try {
        status.drops = await readDropCounts(rulesHost, id, location, logGroupsOf(id));
      } catch (error) {
        status.drops = { error: (error as Error).message };
      }
    }
    out.push(status);
  }
  return out;
}

const KIND_NAMES: Record<DropKind, string> = {
  "member-to-member": "member → member",
  "member-to-host": "member → host",
  forged: "forged identity at a port",
};

/** "member → member 4, member → host 0, forged identity at a port 1". */
const perKind = (counts: Record<DropKind, number>) =>
  DROP_KINDS.map((k) => `${KIND_NAMES[k]} ${counts[k]}`).join(", ");

/** The text `trafficjam status` prints: one block per instance, `key  value` lines. */
export function renderStatus(instances: readonly InstanceStatus[]): string {
  if (instances.length === 0)
    return "no TrafficJam instance in this network namespace (no state file, no rules)\n";
  const blocks = instances.map((s) => {
    const lines: Array<[string, string]> = [];
    const row = (key: string, value: string) => lines.push([key, value]);
    row(
      "daemon",
      s.daemon.running
        ? `running (pid ${s.daemon.pid}${s.daemon.startedAt ? `, since ${s.daemon.startedAt}` : ""})`
        : "not running here (the rules stay in force until --clear)",
    );
    if (s.network)
      row(
        "network",
        `${s.network.name ?? "(does not exist yet)"}${s.network.bridge ? `, bridge ${s.network.bridge}` : ""}${s.network.subnets.length ? `, subnets ${s.network.subnets.join(" ")}` : ""}`,
      );
    if (s.mode)
      row("mode", s.mode === "audit" ? "AUDIT: nothing is dropped, only logged" : "enforce");
    if (s.backend)
      row(
        "backend",
        `FIREWALL_BACKEND=${s.backend.setting}, rules in ${s.backend.location ?? "(none yet)"}`,
      );
    row(
      "rules in",
      s.rulesIn.length
        ? s.rulesIn.join(", ")
        : s.swarm
          ? "none here: the workers keep them on the nodes (below)"
          : s.kernelError
            ? `cannot read the kernel here: ${s.kernelError}`
            : "nothing in the kernel",
    );
    if (s.health)
      row("health", `${s.health.healthy ? "healthy" : "unhealthy"}: ${s.health.reason}`);
    if (s.lastPass)
      row(
        "last pass",
        `${s.lastPass.ok ? "ok" : "failed"} at ${s.lastPass.at} (${s.lastPass.ago})${s.lastPass.error ? `: ${s.lastPass.error}` : ""}`,
      );
    if (s.passes)
      row(
        "passes",
        `${s.passes.ok} ok, ${s.passes.failed} failed; repairs since start: ${s.repairs ?? 0}`,
      );
    if (s.whitelisted) {
      if (s.whitelisted.length === 0) row("whitelisted", "none");
      for (const [i, w] of s.whitelisted.entries()) {
        const addresses = [w.ipv4, w.ipv6].filter(Boolean).join(" ");
        const bound = w.port ? `bound to port ${w.port}` : `UNBOUND: ${w.unbound}`;
        row(i === 0 ? "whitelisted" : "", `${w.name} ${addresses}, ${bound}`);
      }
    }
    if (s.drops)
      row(
        "drops",
        "error" in s.drops
          ? `cannot read the counters: ${s.drops.error}`
          : perKind(s.drops) + " (packets, kernel counters since the rules were written)",
      );
    if (s.attempts)
      row(
        "attempts",
        `${perKind(s.attempts.byKind)} (new since start); ${s.attempts.reported} reported, ${s.attempts.suppressed} over the rate limit; ${s.attempts.packets ?? 0} packets read from the kernel's log`,
      );
    if (s.attemptLog) {
      const groups = DROP_KINDS.map((k) => `${s.attemptLog!.groups[k]} (${k})`).join(", ");
      row(
        "attempt log",
        s.attemptLog.reading
          ? `reading NFLOG groups ${groups}`
          : `NOT READING (${s.attemptLog.reason ?? "unknown"}); groups ${groups}`,
      );
    }
    if (s.metrics !== undefined) row("metrics", s.metrics ? `http://${s.metrics}/metrics` : "off");
    if (s.swarm) {
      const nodes = s.swarm.nodes;
      const up = nodes.filter((n) => n.worker === "connected").length;
      row(
        "swarm",
        `${nodes.length} nodes, ${up} workers connected (channel port ${s.swarm.channelPort})`,
      );
      for (const n of nodes)
        for (const [i, text] of nodeLines(n).entries()) row(i === 0 ? nodeName(n) : "", text);
    }
    const width = Math.max(...lines.map(([k]) => k.length));
    return [
      `instance ${s.instanceId}`,
      ...lines.map(([k, v]) => `  ${k.padEnd(width)}  ${v}`),
    ].join("\n");
  });
  return `${blocks.join("\n\n")}\n`;
}

/** A node by its hostname and ID (nodes may share a hostname). */
export const nodeName = (n: Pick<SwarmNodeState, "hostname" | "node">) =>
  `node ${n.hostname ? `${n.hostname} ` : ""}${n.node.slice(0, 12)}`;

/** A node of the swarm as the daemon last heard of it: a few lines. */
function nodeLines(n: SwarmNodeState & { heardAgo: string | null }): string[] {
  const worker =
    n.worker === "connected"
      ? `worker connected at ${n.address}`
      : n.worker === "not connected"
        ? `worker NOT CONNECTED at ${n.address} (its rules stay in force)`
        : "NO WORKER TASK here: nothing enforced on this node";
  const st = n.status;
  if (!st) return [`${worker}; no status from it yet`];
  const pass = st.lastPass
    ? `last pass ${st.lastPass.ok ? "ok" : "FAILED"} ${ago(st.at - st.lastPass.at)} before its status${st.lastPass.error ? `: ${st.lastPass.error}` : ""}`
    : "no pass yet";
  const drops =
    st.drops === null
      ? "no counters (the network is not on this node)"
      : "error" in st.drops
        ? `cannot read the counters: ${st.drops.error}`
        : `drops ${perKind(st.drops)}`;
  return [
    `${worker}, its status from ${n.heardAgo}`,
    `${st.mode === "audit" ? "AUDIT" : "enforce"}, rules in ${st.location ?? "(none yet)"}${st.netns ? ` in ${st.netns}` : ""}; ${pass}; passes ${st.passes.ok} ok, ${st.passes.failed} failed, repairs ${st.repairs}`,
    `${drops}; attempts ${perKind(st.attempts.byKind)}; attempt log ${st.attemptLog.reading ? "reading" : `NOT READING (${st.attemptLog.reason ?? "unknown"})`}`,
  ];
}

/** `trafficjam status [--json]`: exit 0 (it reports; `healthcheck` is the check). */
export async function runStatus(json: boolean): Promise<number> {
  const instances = await collectStatus(process.env);
  process.stdout.write(json ? `${JSON.stringify(instances, null, 2)}\n` : renderStatus(instances));
  return 0;
}
