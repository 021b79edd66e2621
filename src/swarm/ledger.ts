// The daemon's record of what every node allows: the merge of the workers' reports, shrunk only
// by what the cluster itself says. Pure (time is passed in).
//
// - A node's report replaces that node's part (a worker always reports its whole node).
// - A container leaves when the cluster's view of the overlay (which every Engine lists) no
//   longer has an endpoint with its address and name on its node, once it has had one; a node that is
//   slow or silent changes nothing. One never listed is dropped after a grace period (a report
//   racing the cluster's gossip is listed within seconds).
// - A load-balancer endpoint leaves with its node's next report, when the node leaves the swarm,
//   or when the cluster's view lists its address as a container's (the view never lists
//   load-balancer endpoints: the address was handed to a container since).
import type { ClusterEndpoint } from "./swarm-api.js";
import type { AllowedEntry, AllowedMessage, Report } from "./protocol.js";

/** How long an address reported but never listed by the cluster's view stays allowed. */
export const UNLISTED_GRACE_MS = 30_000;

interface NodeState {
  /** Reported by the node itself (not only heard from another node's `known`). */
  direct: boolean;
  hostIp: string;
  containers: Map<string, { name: string; reportedAt: number; listed: boolean }>;
  loadBalancer: string | null;
}

/** By node, then address: the order a set is told and saved in. */
export const byAddress = (a: AllowedEntry, b: AllowedEntry) =>
  a.node === b.node ? (a.ipv4 < b.ipv4 ? -1 : a.ipv4 > b.ipv4 ? 1 : 0) : a.node < b.node ? -1 : 1;

export class AllowedLedger {
  private readonly nodes = new Map<string, NodeState>();

  constructor(readonly networkId: string) {}

  /**
   * Takes a node's report; true when the allowed set changed. `known`: the set the reporter
   * enforces, once the caller has checked that this daemon signed it: the parts it vouched for
   * then stand for the nodes not heard from directly yet (hearsay), until they report.
   */
  report(report: Report, now: number, known: AllowedMessage | null = null): boolean {
    const before = this.key();
    const vouchedThen = new Set(known?.vouched ?? []);
    for (const e of known?.entries ?? []) {
      if (!vouchedThen.has(e.node) || e.node === report.node || this.nodes.get(e.node)?.direct)
        continue;
      const state = this.nodes.get(e.node) ?? {
        direct: false,
        hostIp: e.hostIp,
        containers: new Map(),
        loadBalancer: null,
      };
      if (e.kind === "load-balancer") state.loadBalancer = e.ipv4;
      else if (!state.containers.has(e.ipv4))
        state.containers.set(e.ipv4, { name: e.name, reportedAt: now, listed: false });
      this.nodes.set(e.node, state);
    }
    const previous = this.nodes.get(report.node);
    const containers = new Map<string, { name: string; reportedAt: number; listed: boolean }>();
    for (const e of report.whitelisted) {
      const had = previous?.containers.get(e.ipv4);
      containers.set(e.ipv4, {
        name: e.name,
        reportedAt: had?.name === e.name ? had.reportedAt : now,
        listed: had?.name === e.name ? had.listed : false,
      });
    }
    this.nodes.set(report.node, {
      direct: true,
      hostIp: report.hostIp,
      containers,
      loadBalancer: report.loadBalancer,
    });
    return this.key() !== before;
  }

  /**
   * Shrinks by the cluster's view: `endpoints` of the overlay cluster-wide, `nodes` the swarm's
   * node IDs (null: unknown, keep every node). True when the allowed set changed.
   */
  prune(
    endpoints: readonly ClusterEndpoint[],
    nodes: ReadonlySet<string> | null,
    now: number,
  ): boolean {
    const before = this.key();
    // The same address on the same node under another name is another container (its address
    // handed out again): the view names each endpoint as its container is named.
    const listed = new Set(endpoints.map((e) => `${e.ipv4}@${e.hostIp}#${e.name}`));
    const containerAddresses = new Set(endpoints.map((e) => e.ipv4));
    for (const [id, node] of this.nodes) {
      if (nodes !== null && !nodes.has(id)) {
        this.nodes.delete(id);
        continue;
      }
      if (node.loadBalancer !== null && containerAddresses.has(node.loadBalancer))
        node.loadBalancer = null;
      for (const [ipv4, c] of node.containers) {
        if (listed.has(`${ipv4}@${node.hostIp}#${c.name}`)) c.listed = true;
        else if (c.listed || now - c.reportedAt > UNLISTED_GRACE_MS) node.containers.delete(ipv4);
      }
    }
    return this.key() !== before;
  }

  /** The nodes whose part the daemon knows (reported, or signed before): it vouches for them. */
  vouched(): string[] {
    return [...this.nodes.keys()].sort();
  }

  /** The underlay addresses of the nodes with a part in the set. */
  hosts(): Set<string> {
    return new Set([...this.nodes.values()].map((n) => n.hostIp));
  }

  entries(): AllowedEntry[] {
    const out: AllowedEntry[] = [];
    for (const [node, state] of this.nodes) {
      const hostIp = state.hostIp;
      for (const [ipv4, c] of state.containers)
        out.push({ node, hostIp, ipv4, name: c.name, kind: "container" });
      if (state.loadBalancer)
        out.push({
          node,
          hostIp,
          ipv4: state.loadBalancer,
          name: "load-balancer",
          kind: "load-balancer",
        });
    }
    return out.sort(byAddress);
  }

  private key(): string {
    return JSON.stringify(this.entries());
  }
}
