// iproute2, nsenter and stat: what the bridge port finder reads of the host's interfaces and
// network namespaces. The tools' JSON is validated here, where it enters.
import { stat } from "node:fs/promises";
import { z } from "zod/v3";
import { run } from "./exec.js";
import type { BridgePortDeps, IpLink } from "../observe/bridge-ports.js";

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
  schema: z.ZodType<T, z.ZodTypeDef, unknown>,
  args: string[],
  nsPath?: string,
): Promise<T> {
  const [file, argv] = nsPath
    ? ["nsenter", [`--net=${nsPath}`, "ip", "-j", ...args]]
    : ["ip", ["-j", ...args]];
  const r = await run(file, argv);
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

/** The finder's I/O on a real host, with the Engine's container inspect for the sandboxes. */
export const hostBridgePortDeps = (inspect: BridgePortDeps["inspect"]): BridgePortDeps => ({
  inspect,
  // Without -d: the peer's index and namespace id are in the plain listing (4× less to parse).
  bridgePorts: (bridge): Promise<IpLink[]> =>
    ipJson(linkSchema, ["link", "show", "master", bridge]),
  async namedNamespaceIds() {
    const listed = await ipJson(netnsSchema, ["netns", "list"]);
    return new Map(listed.flatMap((n) => (n.id === undefined ? [] : [[n.name, n.id] as const])));
  },
  linksIn: (nsPath) => ipJson(linkSchema, ["link", "show"], nsPath),
  namespaceInode: (path) =>
    stat(path).then(
      (s) => s.ino,
      () => null,
    ),
});
