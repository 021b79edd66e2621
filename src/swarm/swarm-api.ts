// The Swarm side of the Engine API: node identity, the cluster-wide view of an overlay, and (on a
// manager) the worker service, its key secret and its tasks. Validated where the JSON enters.
import { z } from "zod/v3";
import { createEngineClient, listOf, mapOf, type EngineClient } from "../observe/engine-api.js";
import { waitForDocker } from "../daemon.js";
import type { Log } from "../log.js";

const infoSchema = z.object({
  Name: z.string().optional(),
  Swarm: z
    .object({
      NodeID: z.string().default(""),
      NodeAddr: z.string().default(""),
      LocalNodeState: z.string().default(""),
      ControlAvailable: z.boolean().default(false),
      /** Managers only: the swarm's settings, its data-path port among them. */
      Cluster: z.object({ DataPathPort: z.number().int().min(0).max(65535).optional() }).nullish(),
    })
    .optional(),
});
export type SwarmInfo = z.output<typeof infoSchema>["Swarm"] & {};

const verboseNetworkSchema = z.object({
  Id: z.string(),
  Name: z.string(),
  /** Service name ("" for standalone containers) → its endpoints, cluster-wide. */
  Services: mapOf(
    z.object({
      Tasks: listOf(
        z.object({
          Name: z.string().default(""),
          EndpointIP: z.string().default(""),
          Info: mapOf(z.string()),
        }),
      ),
    }),
  ),
});

/** An endpoint of an overlay somewhere in the cluster, as every node's Engine lists it. */
export interface ClusterEndpoint {
  name: string;
  ipv4: string;
  /** The underlay address of the node it lives on. */
  hostIp: string;
}

const serviceSchema = z.object({
  ID: z.string(),
  Version: z.object({ Index: z.number() }),
  Spec: z.record(z.string(), z.unknown()),
});
export type EngineService = z.output<typeof serviceSchema>;

const taskSchema = z.object({
  ID: z.string(),
  ServiceID: z.string().default(""),
  NodeID: z.string().default(""),
  DesiredState: z.string().default(""),
  Status: z.object({ State: z.string().default(""), Err: z.string().optional() }).default({}),
  Version: z.object({ Index: z.number() }).optional(),
  Spec: z
    .object({
      ContainerSpec: z.object({ Args: listOf(z.string()), Labels: mapOf(z.string()) }).optional(),
    })
    .default({}),
  /** The task's addresses on each overlay ("10.20.0.5/24"), as the manager allocated them. */
  NetworksAttachments: listOf(
    z.object({
      Network: z.object({ ID: z.string().default("") }).default({}),
      Addresses: listOf(z.string()),
    }),
  ),
});
export type EngineTask = z.output<typeof taskSchema>;

const nodeSchema = z.object({
  ID: z.string(),
  Status: z.object({ State: z.string().default(""), Addr: z.string().default("") }).default({}),
  ManagerStatus: z.object({ Addr: z.string().default("") }).optional(),
  Spec: z.object({ Availability: z.string().default("") }).default({}),
  Description: z.object({ Hostname: z.string().max(256).default("") }).default({}),
});
export type EngineNode = z.output<typeof nodeSchema>;

const secretSchema = z.object({ ID: z.string(), Spec: z.object({ Name: z.string() }) });

const bridgeNetworkSchema = z.object({
  Id: z.string(),
  Name: z.string(),
  Options: mapOf(z.string()),
});
const createdSchema = z.object({ ID: z.string() });

export class SwarmApi {
  constructor(private readonly client: EngineClient) {}

  async info(): Promise<SwarmInfo | null> {
    const info = await this.client.call("GET", "/info", infoSchema);
    return info?.Swarm ?? null;
  }

  /** Every endpoint of the overlay in the cluster (load-balancer endpoints are not listed). */
  async clusterEndpoints(
    network: string,
  ): Promise<{ id: string; endpoints: ClusterEndpoint[] } | null> {
    const net = await this.client.call(
      "GET",
      `/networks/${encodeURIComponent(network)}`,
      verboseNetworkSchema,
      undefined,
      { verbose: "true" },
    );
    if (net === null) return null;
    const endpoints = Object.values(net.Services).flatMap((s) =>
      s.Tasks.flatMap((t) =>
        t.EndpointIP === ""
          ? []
          : [{ name: t.Name, ipv4: t.EndpointIP.split("/")[0]!, hostIp: t.Info["Host IP"] ?? "" }],
      ),
    );
    return { id: net.Id, endpoints };
  }

  /** The swarm's data-path (VXLAN) port, as a manager knows it; null where it does not. */
  async dataPathPort(): Promise<number | null> {
    const port = (await this.info())?.Cluster?.DataPathPort;
    return port ? port : port === 0 ? 4789 : null; // 0: Docker's default
  }

  /** Docker's bridge networks on this node and their Linux bridges. */
  async bridgeNetworks(): Promise<Array<{ id: string; name: string; bridge: string }>> {
    const filters = JSON.stringify({ driver: ["bridge"] });
    const list =
      (await this.client.call("GET", "/networks", z.array(bridgeNetworkSchema), undefined, {
        filters,
      })) ?? [];
    return list.map((n) => ({
      id: n.Id,
      name: n.Name,
      bridge: n.Options["com.docker.network.bridge.name"] || `br-${n.Id.slice(0, 12)}`,
    }));
  }

  inspectService(name: string): Promise<EngineService | null> {
    return this.client.call("GET", `/services/${encodeURIComponent(name)}`, serviceSchema);
  }

  async createService(spec: unknown): Promise<string> {
    const created = await this.client.call("POST", "/services/create", createdSchema, spec);
    if (created === null) throw new Error("the Engine answered 404 to POST /services/create");
    return created.ID;
  }

  async updateService(id: string, version: number, spec: unknown): Promise<void> {
    await this.client.call("POST", `/services/${encodeURIComponent(id)}/update`, null, spec, {
      version: String(version),
    });
  }

  async removeService(id: string): Promise<boolean> {
    return (await this.client.call("DELETE", `/services/${encodeURIComponent(id)}`, null)) === null;
  }

  async tasks(service: string): Promise<EngineTask[]> {
    const filters = JSON.stringify({ service: [service] });
    return (
      (await this.client.call("GET", "/tasks", z.array(taskSchema), undefined, { filters })) ?? []
    );
  }

  /** Every task the managers want running, cluster-wide (managers only). */
  async runningTasks(): Promise<EngineTask[]> {
    const filters = JSON.stringify({ "desired-state": ["running"] });
    return (
      (await this.client.call("GET", "/tasks", z.array(taskSchema), undefined, { filters })) ?? []
    );
  }

  async nodes(): Promise<EngineNode[]> {
    return (await this.client.call("GET", "/nodes", z.array(nodeSchema))) ?? [];
  }

  async findSecret(name: string): Promise<{ id: string; name: string } | null> {
    const filters = JSON.stringify({ name: [name] });
    const list = await this.client.call("GET", "/secrets", z.array(secretSchema), undefined, {
      filters,
    });
    const found = (list ?? []).find((s) => s.Spec.Name === name);
    return found ? { id: found.ID, name: found.Spec.Name } : null;
  }

  async createSecret(name: string, data: Buffer, labels: Record<string, string>): Promise<string> {
    const created = await this.client.call("POST", "/secrets/create", createdSchema, {
      Name: name,
      Labels: labels,
      Data: data.toString("base64"),
    });
    if (created === null) throw new Error("the Engine answered 404 to POST /secrets/create");
    return created.ID;
  }

  async listSecrets(label: string): Promise<Array<{ id: string; name: string }>> {
    const filters = JSON.stringify({ label: [label] });
    const list = await this.client.call("GET", "/secrets", z.array(secretSchema), undefined, {
      filters,
    });
    return (list ?? []).map((s) => ({ id: s.ID, name: s.Spec.Name }));
  }

  async removeSecret(id: string): Promise<void> {
    await this.client.call("DELETE", `/secrets/${encodeURIComponent(id)}`, null);
  }
}

/** The Engine of DOCKER_HOST, once it answers, with its Swarm calls. */
export async function connectSwarm(
  log: Log,
  isStopping: () => boolean,
): Promise<{ client: EngineClient; api: SwarmApi }> {
  const client = createEngineClient(process.env);
  await waitForDocker(client, log, isStopping);
  return { client, api: new SwarmApi(client) };
}
