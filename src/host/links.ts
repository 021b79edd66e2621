// iproute2, nsenter and stat: what the bridge port finder reads of the host's interfaces and
// network namespaces. The tools' JSON is validated here, where it enters.
import { readFileSync } from "node:fs";
import { readdir, stat } from "node:fs/promises";
import { z } from "zod/v3";
import type { Host } from "./host.js";
import { settled, type BridgePortDeps, type IpLink } from "../observe/bridge-ports.js";

const linkSchema = z.array(
  z.object({
    ifindex: z.number(),
    ifname: z.string(),
    address: z.string().optional(),
    link_index: z.number().optional(),
    link_netnsid: z.number().optional(),
  }),
);
const netnsSchema = z.array(z.object({ name: z.string(), id: z.number().optional() }));

async function ipJson<T>(
  host: Host,
  schema: z.ZodType<T, z.ZodTypeDef, unknown>,
  args: string[],
): Promise<T> {
  const r = await host.run("ip", ["-j", ...args]);
  if (r.code !== 0) throw new Error(r.stderr.trim() || `exit ${r.code}`);
  const parsed = schema.safeParse(r.stdout.trim() === "" ? [] : JSON.parse(r.stdout));
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(
      `unexpected output of ip ${args.join(" ")}: ${issue?.path.join(".")}: ${issue?.message}`,
    );
  }
  return parsed.data;
}

/**
 * An interface's index in our namespace, from sysfs (tiny files: read synchronously), or null
 * once it is gone.
 */
export function interfaceIndex(name: string): number | null {
  try {
    const index = Number(readFileSync(`/sys/class/net/${name}/ifindex`, "utf8").trim());
    return Number.isInteger(index) ? index : null;
  } catch {
    return null;
  }
}

/** Every interface of `host`'s namespace (`ip -j link show` there). */
export const listLinks = (host: Host): Promise<IpLink[]> =>
  ipJson(host, linkSchema, ["link", "show"]);

/** Above this many new ports, one listing of all is cheaper than one `ip` per port (a process each). */
const LIST_ALL_ABOVE = 1;

/**
 * The ports of a bridge, read without listing them all on every pass: the bridge's port names
 * come from sysfs (in-process, cheap even with hundreds), and only ports not seen before are
 * asked of `ip`. A port's index and peer are fixed for its life, so what was read is kept, once
 * settled (a port listed while Docker still moves its peer shows no peer yet).
 */
function bridgePortReader(host: Host): BridgePortDeps["bridgePorts"] {
  const known = new Map<string, Map<string, IpLink>>();
  const listAll = (bridge: string) => ipJson(host, linkSchema, ["link", "show", "master", bridge]);
  return async (bridge, revalidate = false) => {
    // Our sysfs shows our own namespace's interfaces: in another one (a Swarm worker's overlay
    // namespace) the ports are listed by `ip` there, whole, every time.
    if (host.netns !== null) return listAll(bridge);
    let names: string[];
    try {
      names = await readdir(`/sys/class/net/${bridge}/brif`);
    } catch {
      return listAll(bridge); // no sysfs view of this namespace: ask for them all
    }
    const cache = known.get(bridge) ?? new Map<string, IpLink>();
    known.clear(); // one bridge at a time: a recreated network's old bridge is forgotten
    known.set(bridge, cache);
    const present = new Set(names);
    for (const name of cache.keys()) if (!present.has(name)) cache.delete(name);
    // A name kept by a new port (veth names are random, but) must not inherit the old one's
    // peer. Checking every entry costs a read per port: done when asked (the finder asks once
    // the port it matched turned out to have another index, see portIsCurrent).
    if (revalidate)
      for (const [name, link] of cache)
        if (interfaceIndex(name) !== link.ifindex) cache.delete(name);
    const fresh = names.filter((name) => !cache.has(name));
    const read =
      fresh.length > LIST_ALL_ABOVE
        ? await listAll(bridge)
        : (
            await Promise.all(
              fresh.map((name) =>
                ipJson(host, linkSchema, ["link", "show", "dev", name]).catch(() => []),
              ),
            )
          ).flat();
    const now = new Map(read.map((link) => [link.ifname, link]));
    for (const link of read) if (settled(link)) cache.set(link.ifname, link);
    return names.flatMap((name) => cache.get(name) ?? now.get(name) ?? []);
  };
}

/**
 * The finder's I/O on a real host, with the Engine's container inspect for the sandboxes. `host`:
 * the namespace the bridge is in (a Swarm worker's: the overlay's); containers' namespaces are
 * entered from ours.
 */
export const hostBridgePortDeps = (
  inspect: BridgePortDeps["inspect"],
  host: Host,
): BridgePortDeps => ({
  inspect,
  bridgePorts: bridgePortReader(host),
  portIsCurrent: (link) => host.netns !== null || interfaceIndex(link.ifname) === link.ifindex,
  async namedNamespaceIds() {
    // Ids are as the bridge's namespace sees the others: asked there.
    const listed = await ipJson(host, netnsSchema, ["netns", "list"]);
    return new Map(listed.flatMap((n) => (n.id === undefined ? [] : [[n.name, n.id] as const])));
  },
  linksIn: (nsPath) => listLinks(host.in(nsPath)),
  namespaceInode: (path) =>
    stat(path).then(
      (s) => s.ino,
      () => null,
    ),
});

const addressesSchema = z.array(
  z.object({
    ifname: z.string(),
    address: z.string().optional(),
    addr_info: z.array(z.object({ local: z.string().optional() })).default([]),
  }),
);

/** Every address of every interface in the host's namespace (what "the host" is to its members). */
export async function hostAddresses(host: Host): Promise<string[]> {
  const links = await ipJson(host, addressesSchema, ["addr", "show"]);
  return [...new Set(links.flatMap((l) => l.addr_info.flatMap((a) => a.local ?? [])))];
}

/** A bridge's own identity: its MAC and its addresses (the network's gateway), as the kernel has them. */
export async function bridgeIdentity(
  host: Host,
  bridge: string,
): Promise<{ mac: string; ipv4: string[]; ipv6: string[] } | null> {
  const [link] = await ipJson(host, addressesSchema, ["addr", "show", "dev", bridge]);
  if (!link?.address) return null;
  const addresses = link.addr_info.flatMap((a) => a.local ?? []);
  return {
    mac: link.address.toLowerCase(),
    ipv4: addresses.filter((a) => !a.includes(":")).sort(),
    ipv6: addresses.filter((a) => a.includes(":")).sort(),
  };
}
