// Docker bridge networks of a lab, and the host side (gateway) of each.
import type { DockerFn } from "./containers.js";

export interface CreateNetworkOptions {
  /** IPv4 and/or IPv6 CIDRs, one IPAM config each. */
  subnets: readonly string[];
  /** Default: true when a subnet is IPv6. */
  ipv6?: boolean;
  internal?: boolean;
  labels?: Record<string, string>;
  /** Driver options (`-o`), e.g. com.docker.network.bridge.name. */
  options?: Record<string, string>;
}

export interface NetworkInfo {
  id: string;
  name: string;
  /** Host interface of the network (br-<id12>, docker0, or the bridge.name option). */
  bridge: string;
  subnets: string[];
  /** Gateways recorded by IPAM (often empty on 20.10 when only --subnet was given). */
  gateways: string[];
}

export async function createNetwork(
  docker: DockerFn,
  name: string,
  o: CreateNetworkOptions,
): Promise<NetworkInfo> {
  const args = ["network", "create", "--driver", "bridge"];
  for (const s of o.subnets) args.push("--subnet", s);
  if (o.ipv6 ?? o.subnets.some((s) => s.includes(":"))) args.push("--ipv6");
  if (o.internal) args.push("--internal");
  for (const [k, v] of Object.entries(o.labels ?? {})) args.push("--label", `${k}=${v}`);
  for (const [k, v] of Object.entries(o.options ?? {})) args.push("-o", `${k}=${v}`);
  args.push(name);
  await docker(args);
  return inspectNetwork(docker, name);
}

export async function inspectNetwork(docker: DockerFn, nameOrId: string): Promise<NetworkInfo> {
  const arr = JSON.parse(await docker(["network", "inspect", nameOrId])) as Array<{
    Id: string;
    Name: string;
    Options: Record<string, string> | null;
    IPAM: { Config: Array<{ Subnet?: string; Gateway?: string }> | null };
  }>;
  const n = arr[0];
  if (!n) throw new Error(`no network ${nameOrId}`);
  const cfg = n.IPAM.Config ?? [];
  return {
    id: n.Id,
    name: n.Name,
    bridge:
      n.Options?.["com.docker.network.bridge.name"] ??
      (n.Name === "bridge" ? "docker0" : `br-${n.Id.slice(0, 12)}`),
    subnets: cfg.flatMap((c) => (c.Subnet ? [c.Subnet] : [])),
    gateways: cfg.flatMap((c) => (c.Gateway ? [c.Gateway] : [])),
  };
}

/** Parses `ip -j addr show dev X` and returns the first global address of the family. */
export function globalAddressOf(ipJson: string, family: 4 | 6): string | undefined {
  const links = JSON.parse(ipJson) as Array<{
    addr_info?: Array<{ family: string; local: string; scope: string }>;
  }>;
  for (const l of links) {
    for (const a of l.addr_info ?? []) {
      if (a.family === (family === 4 ? "inet" : "inet6") && a.scope === "global") return a.local;
    }
  }
  return undefined;
}
