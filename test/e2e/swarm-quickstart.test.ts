// The README's Docker Swarm quick start, run as written on a clean three-node swarm lab ("swq")
// with a private registry: Debian's docker-registry, run in node1's namespace on its underlay
// address (every node lists it in insecure-registries: it serves plain HTTP). The product image is
// built on node1 only, so nodes 2 and 3 can run a worker only by pulling the pinned digest from
// the registry.
// The README's two shell blocks run as they are, in bash, against node1's engine, with two lab
// substitutions: `docker build` is skipped (the test built that tag already: the lab has no
// registry to pull the Node base from), and examples/swarm/stack.yml is the example with the lab's
// test image in place of Traefik and whoami (which cannot be pulled here) and `endpoint_mode:
// dnsrr` (the lab kernel has no IPVS); everything TrafficJam's service says is the example's.
// Then packets: the proxy reaches a backend on every node, backends on different nodes do not
// reach each other.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  LAB_HOST,
  REPO_ROOT,
  TEST_IMAGE,
  startSwarmLab,
  waitFor,
  type SwarmLab,
} from "./lab/index.js";
import { run, runOk, type RunResult } from "./lab/exec.js";
import { LOG_BASE } from "./lab/paths.js";
import { buildProductImage } from "./lab/product-image.js";

const REGISTRY_PORT = 5000;

/** The README's shell blocks of its "### Docker Swarm" section, in order. */
function readmeSwarmBlocks(): string[] {
  const readme = readFileSync(join(REPO_ROOT, "README.md"), "utf8");
  const start = readme.indexOf("### Docker Swarm");
  const section = readme.slice(start, readme.indexOf("\n## ", start));
  const blocks = [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!);
  assert.equal(blocks.length, 2, "the README's Swarm quick start: a deploy block, a check block");
  return blocks;
}

/** examples/swarm/stack.yml for the lab: only the images of the proxy and backends change. */
async function labStack(dir: string): Promise<void> {
  const adapt = `
import sys, yaml
stack = yaml.safe_load(open(sys.argv[1]))
for name, service in stack["services"].items():
    service.setdefault("deploy", {})["endpoint_mode"] = "dnsrr"  # no IPVS in the lab kernel
    if name != "trafficjam":
        service["image"] = sys.argv[2]  # Traefik and whoami cannot be pulled here
        service.pop("command", None)  # the test image serves TCP 80 by itself
        service.pop("ports", None)
yaml.safe_dump(stack, open(sys.argv[3], "w"), sort_keys=False)
`;
  mkdirSync(join(dir, "examples", "swarm"), { recursive: true });
  await runOk("python3", [
    "-c",
    adapt,
    join(REPO_ROOT, "examples", "swarm", "stack.yml"),
    TEST_IMAGE,
    join(dir, "examples", "swarm", "stack.yml"),
  ]);
}

describe("the README's Docker Swarm quick start, on a three-node swarm with a private registry", () => {
  let swarm: SwarmLab;
  let registry: string;
  let workdir: string;
  /** Runs a README block in bash against node1's engine: its exit code and output. */
  let bash: (script: string, env?: Record<string, string>) => Promise<RunResult>;

  before(async () => {
    const underlay = "10.231.0.1"; // node1 (lab/swarm.ts: UNDERLAY_PREFIX.1)
    registry = `${underlay}:${REGISTRY_PORT}`;
    swarm = await startSwarmLab({
      name: "swq",
      daemonJson: { "insecure-registries": [registry] },
    });
    const node1 = swarm.manager;
    assert.equal(node1.ip, underlay);
    // the registry: Debian's docker-registry in node1's namespace, its storage in node1's folder
    const storage = join(node1.paths.base, "registry");
    mkdirSync(storage);
    const config = join(node1.paths.base, "registry.yml");
    writeFileSync(
      config,
      `version: 0.1\nlog: { level: warn }\nstorage: { filesystem: { rootdirectory: ${storage} } }\nhttp: { addr: "${registry}" }\n`,
    );
    const log = openSync(join(LOG_BASE, "swq-registry.log"), "a");
    const child = spawn("ip", ["netns", "exec", node1.netns, "docker-registry", "serve", config], {
      stdio: ["ignore", log, log],
      detached: true,
    });
    closeSync(log);
    child.unref();
    // killed with node1's namespace at the latest (the lab's teardown ends its processes)
    node1.own({
      kill: async () => void child.kill("SIGKILL"),
      killSync: () => void child.kill("SIGKILL"),
    });
    await waitFor(() => node1.tcp(LAB_HOST, underlay, REGISTRY_PORT, 500), {
      timeoutMs: 15_000,
      what: `the registry to listen on ${registry}`,
    });
    const started = Date.now();
    await buildProductImage(node1, `${registry}/trafficjam:1.0.0`);
    console.log(`product image built on node1 in ${Math.round((Date.now() - started) / 1000)} s`);
    workdir = join(node1.paths.base, "quickstart");
    await labStack(workdir);
    bash = async (script, env = {}) => {
      const r = await run(
        "bash",
        [
          "-ec",
          `docker() { if [ "$1" = build ]; then return 0; fi; command docker "$@"; }\n${script}`,
        ],
        {
          timeoutMs: 120_000,
          env: {
            PATH: process.env.PATH ?? "/usr/bin:/bin",
            HOME: "/root",
            DOCKER_HOST: node1.dockerHost,
            ...env,
          },
        },
      );
      return r;
    };
  });
  after(async () => {
    await swarm?.stop();
  });

  it("build, push, read the digest, deploy the stack pinned by it", async (tc) => {
    const [deploy] = readmeSwarmBlocks();
    // nodes 2 and 3 do not have the image: only the registry can give it to them
    for (const i of [2, 3]) {
      const r = await swarm
        .node(i)
        .dockerResult(["image", "inspect", `${registry}/trafficjam:1.0.0`]);
      assert.notEqual(r.code, 0, `node${i} must not have the image before the deploy`);
    }
    const r = await bash(`cd ${workdir}\n${deploy!}`, { REGISTRY: registry });
    assert.equal(r.code, 0, `the README's deploy block failed:\n${r.stdout}\n${r.stderr}`);
    const out = r.stdout;
    const image = out.split("\n").find((l) => l.startsWith(`${registry}/trafficjam@sha256:`));
    assert.ok(image, `the README's echo "$IMAGE" printed the pinned reference:\n${out}`);
    tc.diagnostic(`IMAGE=${image}`);
    const spec = JSON.parse(
      await swarm.manager.docker(
        ...[
          "service",
          "inspect",
          "edge_trafficjam",
          "--format",
          "{{json .Spec.TaskTemplate.ContainerSpec}}",
        ],
      ),
    ) as { Image: string; Env: string[] };
    assert.equal(spec.Image, image.trim());
    assert.ok(spec.Env.includes(`SWARM_IMAGE=${image.trim()}`), spec.Env.join(" "));
  });

  it("the README's check: a worker on every node, running the pinned digest, each with its rules applied", async (tc) => {
    const [, check] = readmeSwarmBlocks();
    const image = JSON.parse(
      await swarm.manager.docker(
        ...[
          "service",
          "inspect",
          "edge_trafficjam",
          "--format",
          "{{json .Spec.TaskTemplate.ContainerSpec.Image}}",
        ],
      ),
    ) as string;
    const nodes = swarm.nodes.map((n) => n.hostname);
    let last = "";
    await waitFor(
      async () => {
        const r = await bash(check!);
        last = `${r.stdout}${r.stderr}`;
        const lines = last.split("\n");
        const tasks = lines.filter((l) => / Running /.test(l));
        const everyNodeRuns = nodes.every((n) =>
          tasks.some((l) => l.startsWith(`${n} `) && l.endsWith(` ${image}`)),
        );
        const everyNodeApplied = nodes.every((n) =>
          lines.some((l) => l.includes(`@${n}`) && l.includes('"rules.applied"')),
        );
        return everyNodeRuns && everyNodeApplied;
      },
      {
        timeoutMs: 180_000,
        intervalMs: 2_000,
        what: "a worker on every node, on the pinned digest, with rules.applied",
        details: () => last,
      },
    );
    tc.diagnostic(
      last
        .split("\n")
        .filter((l) => / Running /.test(l))
        .join("; "),
    );
    // nodes 2 and 3 got the image from the registry
    for (const i of [2, 3]) {
      const digests = await swarm
        .node(i)
        .docker("image", "ls", "--digests", "--format", "{{.Repository}}@{{.Digest}}");
      assert.ok(digests.split("\n").includes(image), `node${i} pulled ${image}: ${digests}`);
    }
  });

  it("the proxy reaches a backend on every node; backends on different nodes reach nobody", async () => {
    const proxy = await swarm.taskContainer("edge_traefik", 1);
    const backends = await Promise.all(
      [1, 2, 3].map(async (i) => ({
        node: i,
        c: (await swarm.taskContainers("edge_whoami", i))[0],
      })),
    );
    const placed = backends.filter((b) => b.c !== undefined);
    assert.ok(placed.length >= 2, `whoami tasks on ${placed.length} node(s) only`);
    for (const b of placed) {
      const ip = b.c!.ipOn("traefik_public");
      await waitFor(() => swarm.node(1).tcp(proxy, ip, 80, 500), {
        timeoutMs: 30_000,
        what: `the proxy to reach whoami on node${b.node} (${ip})`,
      });
    }
    const [from, to] = placed;
    assert.equal(
      await swarm.node(from!.node).tcp(from!.c!, to!.c!.ipOn("traefik_public"), 80, 1000),
      false,
      `whoami on node${from!.node} reached whoami on node${to!.node}`,
    );
  });
});
