// The compose files in examples/: each must parse (`docker-compose config`, which needs no Docker
// engine), configure TrafficJam as our own configuration parser accepts it, run it the way the
// image needs (NET_ADMIN, host network, a Docker endpoint, Docker's netns folder read-only), and
// whitelist a proxy that is really attached to the protected network.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { parseConfig } from "../../src/config.js";
import { REPO_ROOT } from "./lab/index.js";
import { run } from "./lab/exec.js";

interface Service {
  image?: string;
  cap_add?: string[];
  network_mode?: string;
  environment?: Record<string, string | null>;
  volumes?: Array<string | { source?: string; target?: string }>;
  labels?: Record<string, string>;
  networks?: Record<string, unknown> | string[];
}
interface Compose {
  services: Record<string, Service>;
  networks?: Record<string, { name?: string }>;
}

const EXAMPLES = join(REPO_ROOT, "examples");
const files = readdirSync(EXAMPLES).filter((f) => f.endsWith(".yml"));

async function composeConfig(file: string): Promise<Compose> {
  const r = await run("docker-compose", ["-f", join(EXAMPLES, file), "config"], {
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: "/root" },
  });
  assert.equal(r.code, 0, `docker-compose config ${file}: ${r.stderr}`);
  // what compose resolved, read as JSON (python3-yaml comes with docker-compose)
  const resolved = await run("python3", [
    "-c",
    "import sys, json, yaml; json.dump(yaml.safe_load(sys.argv[1]), sys.stdout)",
    r.stdout,
  ]);
  assert.equal(resolved.code, 0, resolved.stderr);
  return JSON.parse(resolved.stdout) as Compose;
}

describe("examples/*.yml", () => {
  it("there are examples for Traefik, Traefik behind a socket proxy, and Caddy", () => {
    assert.deepEqual(files.sort(), ["caddy.yml", "traefik-socket-proxy.yml", "traefik.yml"]);
  });

  for (const file of files) {
    it(`${file}: parses, and runs TrafficJam correctly configured for its proxy`, async () => {
      const c = await composeConfig(file);
      const tj = c.services.trafficjam;
      assert.ok(tj, "a trafficjam service");
      assert.ok(tj.cap_add?.includes("NET_ADMIN"), "cap_add NET_ADMIN");
      assert.equal(tj.network_mode, "host");
      const env = Object.fromEntries(
        Object.entries(tj.environment ?? {}).map(([k, v]) => [k, v ?? ""]),
      );
      const config = parseConfig(env); // throws ConfigError naming the bad variable
      const socket = (tj.volumes ?? []).some((v) =>
        (typeof v === "string" ? v : `${v.source}:${v.target}`).startsWith(
          "/var/run/docker.sock:/var/run/docker.sock",
        ),
      );
      assert.ok(socket || env.DOCKER_HOST, "the Docker socket or DOCKER_HOST");
      // Docker's netns folder where iproute2 finds it, read-only and following new namespaces.
      assert.ok(
        (tj.volumes ?? []).includes("/var/run/docker/netns:/run/netns:ro,rslave"),
        "Docker's netns folder at /run/netns (ro,rslave)",
      );
      assert.ok(!tj.cap_add?.includes("SYS_ADMIN"), "no CAP_SYS_ADMIN");

      // NETWORK is the real name of a network of the file, and the proxy matched by the filter
      // is attached to it.
      const [key, value] = [config.whitelistFilter.key, config.whitelistFilter.value];
      assert.equal(key, "label", "examples whitelist by label (exact, unlike name=)");
      const [labelKey, labelValue] = value.split("=");
      const netKey = Object.entries(c.networks ?? {}).find(
        ([, n]) => n.name === config.network,
      )?.[0];
      assert.ok(netKey, `a network named ${config.network}`);
      const proxies = Object.entries(c.services).filter(
        ([, s]) => labelKey !== undefined && s.labels?.[labelKey] === labelValue,
      );
      assert.equal(proxies.length, 1, `one service labelled ${value}`);
      const attached = proxies[0]![1].networks ?? {};
      const names = Array.isArray(attached) ? attached : Object.keys(attached);
      assert.ok(names.includes(netKey), `the proxy is on ${netKey}`);
    });
  }
});
