// What the Swarm daemon takes of a worker's report: a node speaks for its own endpoints only, and
// what the managers know (the tasks they scheduled, where, with which labels) outweighs what a
// node says. A node's root controls its worker, so its report is checked against what it cannot
// forge. Pure.
import type { WhitelistFilter } from "../config.js";
import type { Report, ReportedEndpoint } from "./protocol.js";
import type { ClusterEndpoint } from "./swarm-api.js";

/** A task the managers want running, reduced to what a check needs. */
export interface ScheduledTask {
  node: string;
  /** Its addresses on the overlay (no prefix length). */
  addresses: string[];
  /** Its container labels (ContainerSpec.Labels). */
  labels: Record<string, string>;
}

export interface ReportContext {
  /** The cluster's view of the overlay (every node's Engine lists it). */
  view: readonly ClusterEndpoint[];
  /** Tasks on the overlay, as the managers scheduled them. */
  tasks: readonly ScheduledTask[];
  /** The swarm's nodes: ID → the address the managers know it by. */
  nodes: ReadonlyMap<string, string>;
  whitelist: WhitelistFilter;
}

export interface Checked {
  /** The report with only what may be taken (null: none of it). */
  report: Report | null;
  rejected: Array<{ what: string; reason: string }>;
}

/** Whether a task's labels satisfy a `label=` whitelist (key, or key=value). */
function labelMatches(labels: Record<string, string>, value: string): boolean {
  const eq = value.indexOf("=");
  return eq < 0 ? value in labels : labels[value.slice(0, eq)] === value.slice(eq + 1);
}

export function checkReport(report: Report, ctx: ReportContext): Checked {
  const rejected: Checked["rejected"] = [];
  const known = ctx.nodes.get(report.node);
  if (known === undefined)
    return {
      report: null,
      rejected: [{ what: `node ${report.node}`, reason: "not a node of the swarm" }],
    };
  const taskByAddress = new Map<string, ScheduledTask>();
  for (const t of ctx.tasks) for (const a of t.addresses) taskByAddress.set(a, t);
  // The node's data-path address: the one the managers know, or the one the view gives its tasks.
  const hostIps = new Set([known]);
  for (const e of ctx.view)
    if (taskByAddress.get(e.ipv4)?.node === report.node) hostIps.add(e.hostIp);
  if (!hostIps.has(report.hostIp))
    return {
      report: null,
      rejected: [
        {
          what: `node ${report.node}`,
          reason: `its address ${report.hostIp} is not the node's (${[...hostIps].join(", ")})`,
        },
      ],
    };
  const elsewhere = (address: string): string | null => {
    const task = taskByAddress.get(address);
    if (task && task.node !== report.node) return `a task of node ${task.node}`;
    const listed = ctx.view.find(
      (e) => e.ipv4 === address && e.hostIp !== "" && !hostIps.has(e.hostIp),
    );
    return listed ? `listed on ${listed.hostIp} by the cluster` : null;
  };
  const whitelisted = report.whitelisted.filter((e: ReportedEndpoint) => {
    const other = elsewhere(e.ipv4);
    if (other) return void rejected.push({ what: e.ipv4, reason: other });
    const task = taskByAddress.get(e.ipv4);
    if (task && ctx.whitelist.key === "label" && !labelMatches(task.labels, ctx.whitelist.value)) {
      rejected.push({
        what: e.ipv4,
        reason: `the managers' task does not carry the label ${ctx.whitelist.value}`,
      });
      return false;
    }
    return true;
  });
  let loadBalancer = report.loadBalancer;
  if (loadBalancer !== null) {
    const other =
      elsewhere(loadBalancer) ?? (taskByAddress.has(loadBalancer) ? "a task's address" : null);
    const container = ctx.view.some((e) => e.ipv4 === loadBalancer)
      ? "a container's address"
      : null;
    if (other ?? container) {
      rejected.push({ what: `load-balancer ${loadBalancer}`, reason: (other ?? container)! });
      loadBalancer = null;
    }
  }
  return { report: { ...report, whitelisted, loadBalancer }, rejected };
}
