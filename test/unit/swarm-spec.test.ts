// The worker service the Swarm daemon deploys: its spec (pure) and the environment it passes on.
import { test } from "node:test";
import assert from "node:assert/strict";
import { basename, dirname } from "node:path";
import { parseConfig } from "../../src/config.js";
import {
  INSTANCE_LABEL,
  WORKER_KEY_FILE,
  WORKER_STATE_DIR,
  workerEnv,
  workerServiceName,
  workerServiceSpec,
} from "../../src/swarm/daemon.js";

interface Mount {
  Type: string;
  Source: string;
  Target: string;
  BindOptions?: { Propagation?: string };
}
interface Spec {
  Name: string;
  Labels: Record<string, string>;
  Mode: Record<string, unknown>;
  TaskTemplate: {
    ContainerSpec: {
      Image: string;
      Args: string[];
      Env: string[];
      Mounts: Mount[];
      CapabilityAdd: string[];
      Secrets: Array<{
        SecretID: string;
        SecretName: string;
        File: { Name: string; UID: string; GID: string; Mode: number };
      }>;
    };
    Networks: Array<{ Target: string }>;
    RestartPolicy: { Condition: string };
  };
}

const INPUT = {
  instanceId: "web",
  image: "kaysond/trafficjam:1.0@sha256:" + "a".repeat(64),
  env: ["NETWORK=web", "SWARM_CHANNEL_PORT=7390"],
  secret: { id: "s3cr3tid", name: "trafficjam_web_key_0123456789ab" },
  hostNetworkId: "hostnetid",
  dockerSocket: "/var/run/docker.sock" as string | null,
};
const spec = (input: Partial<typeof INPUT> & { clear?: boolean } = {}) =>
  workerServiceSpec({ ...INPUT, ...input }) as unknown as Spec;

test("the worker service: global, on the host network, named and labelled by its instance", () => {
  const s = spec();
  assert.equal(s.Name, workerServiceName("web"));
  assert.equal(s.Name, "trafficjam_web_worker");
  assert.deepEqual(s.Mode, { Global: {} });
  assert.deepEqual(s.TaskTemplate.Networks, [{ Target: "hostnetid" }]);
  assert.equal(s.Labels[INSTANCE_LABEL], "web");
  assert.equal(s.TaskTemplate.ContainerSpec.Image, INPUT.image);
  assert.deepEqual(s.TaskTemplate.ContainerSpec.Env, INPUT.env);
});

test("the worker may change its namespaces' firewall and enter them: NET_ADMIN and SYS_ADMIN", () => {
  const caps = spec().TaskTemplate.ContainerSpec.CapabilityAdd;
  assert.deepEqual(
    caps.map((c) => c.replace(/^CAP_/, "")),
    ["NET_ADMIN", "SYS_ADMIN"],
  );
});

test("mounts: Docker's netns folder (rslave), the state volume, the socket only when unix", () => {
  const netns: Mount = {
    Type: "bind",
    Source: "/var/run/docker/netns",
    Target: "/var/run/docker/netns",
    BindOptions: { Propagation: "rslave" },
  };
  const state: Mount = { Type: "volume", Source: "trafficjam_web_state", Target: WORKER_STATE_DIR };
  assert.deepEqual(spec().TaskTemplate.ContainerSpec.Mounts, [
    { Type: "bind", Source: "/var/run/docker.sock", Target: "/var/run/docker.sock" },
    netns,
    state,
  ]);
  assert.deepEqual(spec({ dockerSocket: null }).TaskTemplate.ContainerSpec.Mounts, [netns, state]);
  // A state volume per instance: two instances' workers keep their sets apart.
  const other = spec({ instanceId: "db" }).TaskTemplate.ContainerSpec.Mounts;
  assert.ok(other.some((m) => m.Type === "volume" && m.Source === "trafficjam_db_state"));
});

test("the key secret is the file the worker reads, readable by root only", () => {
  const secrets = spec().TaskTemplate.ContainerSpec.Secrets;
  assert.deepEqual(secrets, [
    {
      SecretID: "s3cr3tid",
      SecretName: "trafficjam_web_key_0123456789ab",
      File: { Name: basename(WORKER_KEY_FILE), UID: "0", GID: "0", Mode: 0o400 },
    },
  ]);
  assert.equal(dirname(WORKER_KEY_FILE), "/run/secrets");
});

test('the worker runs "swarm-worker", restarted always; with clear, once with --clear', () => {
  const run = spec();
  assert.deepEqual(run.TaskTemplate.ContainerSpec.Args, ["swarm-worker"]);
  assert.equal(run.TaskTemplate.RestartPolicy.Condition, "any");
  const clear = spec({ clear: true });
  assert.deepEqual(clear.TaskTemplate.ContainerSpec.Args, ["swarm-worker", "--clear"]);
  assert.deepEqual(clear.TaskTemplate.RestartPolicy, { Condition: "none" });
  assert.deepEqual(spec({ clear: false }), run);
});

test("the spec is pure: the same input gives the same spec", () => {
  assert.deepEqual(spec(), spec());
  assert.equal(JSON.stringify(spec()), JSON.stringify(spec()));
});

const CONFIG = parseConfig({ NETWORK: "web", WHITELIST_FILTER: "name=traefik" });

test("workerEnv passes on exactly the worker's variables that are set, and the channel port", () => {
  const env = {
    NETWORK: "web",
    WHITELIST_FILTER: "name=traefik",
    INSTANCE_ID: "web",
    ALLOW_HOST_TRAFFIC: "true",
    DEBUG: "1",
    TZ: "Europe/Paris",
    POLL_INTERVAL: "2",
    DOCKER_HOST: "unix:///var/run/docker.sock",
    FIREWALL_BACKEND: "nftables",
    MODE: "audit",
    // The daemon's own: never a worker's.
    SWARM_DAEMON: "true",
    SWARM_IMAGE: "kaysond/trafficjam",
    SWARM_CHANNEL_PORT: "9999",
    PATH: "/usr/bin",
    HOSTNAME: "manager1",
  };
  assert.deepEqual(workerEnv(CONFIG, env, 7400), [
    "NETWORK=web",
    "WHITELIST_FILTER=name=traefik",
    "INSTANCE_ID=web",
    "ALLOW_HOST_TRAFFIC=true",
    "DEBUG=1",
    "TZ=Europe/Paris",
    "POLL_INTERVAL=2",
    "DOCKER_HOST=unix:///var/run/docker.sock",
    "FIREWALL_BACKEND=nftables",
    "MODE=audit",
    "SWARM_CHANNEL_PORT=7400",
  ]);
});

test("workerEnv leaves out what is unset (an empty value is passed as set)", () => {
  assert.deepEqual(
    workerEnv(CONFIG, { NETWORK: "web", WHITELIST_FILTER: "name=traefik", TZ: "" }, 7390),
    ["NETWORK=web", "WHITELIST_FILTER=name=traefik", "TZ=", "SWARM_CHANNEL_PORT=7390"],
  );
  assert.deepEqual(workerEnv(CONFIG, {}, 7390), ["SWARM_CHANNEL_PORT=7390"]);
});
