// Test containers: created with the docker CLI, described by what tests need (addresses per network).
import { TEST_IMAGE } from "./image.js";
import { waitFor } from "./util.js";

export type DockerFn = (args: readonly string[], timeoutMs?: number) => Promise<string>;

export interface Addresses {
  ipv4: string; // "" when none
  ipv6: string; // "" when none
}

export interface Container {
  id: string;
  name: string;
  /** Addresses on the first network (the one given first to run()); "" when absent. */
  ipv4: string;
  ipv6: string;
  /** Network name -> addresses, in attachment order when known. */
  networks: Record<string, Addresses & { networkId: string }>;
  /** Address on a network (name or id); throws if the container has none of that family there. */
  ipOn(network: string, family?: 4 | 6): string;
}

export interface RunContainerOptions {
  /** Docker needs at least 2 characters. */
  name: string;
  /** One network or several (the first is used at creation, the others connected before start). */
  network: string | readonly string[];
  ip?: string;
  ip6?: string;
  labels?: Record<string, string>;
  /** `-p` specs, e.g. "8081:80". */
  publish?: readonly string[];
  /** Default: the image's CMD (tjprobe serve; httpd in a busybox lab). */
  cmd?: readonly string[];
  restart?: string;
  capAdd?: readonly string[];
  /** Extra `docker create` arguments, placed before the image. */
  args?: readonly string[];
  image?: string;
}

interface InspectNet {
  NetworkID: string;
  IPAddress: string;
  GlobalIPv6Address: string;
}

export function containerFromInspect(raw: unknown, order: readonly string[] = []): Container {
  const j = raw as {
    Id: string;
    Name: string;
    NetworkSettings: { Networks: Record<string, InspectNet> | null };
  };
  const nets = j.NetworkSettings.Networks ?? {};
  const names = [
    ...order.filter((n) => n in nets),
    ...Object.keys(nets).filter((n) => !order.includes(n)),
  ];
  const networks: Container["networks"] = {};
  for (const n of names) {
    const v = nets[n];
    if (v)
      networks[n] = {
        networkId: v.NetworkID,
        ipv4: v.IPAddress ?? "",
        ipv6: v.GlobalIPv6Address ?? "",
      };
  }
  const first = names[0] !== undefined ? networks[names[0]] : undefined;
  const name = j.Name.replace(/^\//, "");
  return {
    id: j.Id,
    name,
    ipv4: first?.ipv4 ?? "",
    ipv6: first?.ipv6 ?? "",
    networks,
    ipOn(network: string, family: 4 | 6 = 4): string {
      const entry =
        networks[network] ??
        Object.values(networks).find(
          (v) => network.length >= 12 && v.networkId.startsWith(network),
        );
      const ip = family === 4 ? entry?.ipv4 : entry?.ipv6;
      if (!ip)
        throw new Error(`container ${name} has no IPv${family} address on network ${network}`);
      return ip;
    },
  };
}

export async function inspectContainer(
  docker: DockerFn,
  nameOrId: string,
  order: readonly string[] = [],
): Promise<Container> {
  const out = await docker(["container", "inspect", nameOrId]);
  const arr = JSON.parse(out) as unknown[];
  if (!arr[0]) throw new Error(`no container ${nameOrId}`);
  return containerFromInspect(arr[0], order);
}

/** `serveReady`: the command that succeeds in the container once the test image's CMD serves. */
export async function runContainer(
  docker: DockerFn,
  o: RunContainerOptions,
  serveReady: readonly string[],
): Promise<Container> {
  const networks = typeof o.network === "string" ? [o.network] : [...o.network];
  const [first, ...more] = networks;
  if (first === undefined) throw new Error("run(): at least one network is required");
  const args = ["create", "--name", o.name, "--network", first];
  if (o.ip) args.push("--ip", o.ip);
  if (o.ip6) args.push("--ip6", o.ip6);
  for (const [k, v] of Object.entries(o.labels ?? {})) args.push("--label", `${k}=${v}`);
  for (const p of o.publish ?? []) args.push("-p", p);
  if (o.restart) args.push("--restart", o.restart);
  for (const c of o.capAdd ?? []) args.push("--cap-add", c);
  args.push(...(o.args ?? []), o.image ?? TEST_IMAGE, ...(o.cmd ?? []));
  await docker(args);
  // docker 20.10 attaches one network at creation; the others are connected before start
  for (const n of more) await docker(["network", "connect", n, o.name]);
  await docker(["start", o.name]);
  if (!o.cmd && (o.image ?? TEST_IMAGE) === TEST_IMAGE) {
    await waitFor(
      async () => {
        await docker(["exec", o.name, ...serveReady], 10_000);
        return true;
      },
      {
        timeoutMs: 10_000,
        intervalMs: 50,
        what: `the image's server to listen in container ${o.name}`,
        details: async () =>
          `docker logs: ${await docker(["logs", o.name]).catch((e: Error) => e.message)}`,
      },
    );
  }
  return inspectContainer(docker, o.name, networks);
}
