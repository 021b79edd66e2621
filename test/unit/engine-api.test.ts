// The Engine API client against a fake Engine: an HTTP server on a unix socket (or TCP, or TLS
// with certificates made by openssl here), answering with JSON as Docker 20.10 (API 1.41) does.
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { Socket } from "node:net";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { TLSSocket } from "node:tls";
import {
  EngineError,
  EngineTimeoutError,
  InvalidEngineResponseError,
  chooseApiVersion,
  createEngineClient,
  describeEngineEndpoint,
  parseDockerHost,
  type EngineClientOptions,
  type EngineEvent,
  type EngineEventStream,
} from "../../src/observe/engine-api.js";
import { bridgeOf, membersOn, subnetsOf } from "../../src/observe/network.js";

// ----- The Engine's answers, as Docker 20.10 writes them (extra fields included, to be dropped)

const NETWORK_ID = "7d86d31b1478e7cca9ebed7e73aa0fdeec46c5ca29497431d3007d2d9e15ed99";
const PROXY_ID = "8dfafdbc3a40c2f0e1d7f8b7d1c7e0a3b5c2d9e8f7a6b5c4d3e2f1a0b9c8d7e6";
const PROXY_ENDPOINT = "628cadb8bcb92de107b2a1e516cbffe463e321f548feb37697cce00ad694f21a";
const PROXY_MAC = "02:42:ac:14:00:02";

const webNetwork = {
  Name: "web",
  Id: NETWORK_ID,
  Created: "2023-10-01T12:00:00.000000000Z",
  Scope: "local",
  Driver: "bridge",
  EnableIPv6: false,
  IPAM: {
    Driver: "default",
    Options: null,
    Config: [{ Subnet: "172.20.0.0/16", Gateway: "172.20.0.1" }],
  },
  Internal: false,
  Attachable: false,
  Ingress: false,
  ConfigFrom: { Network: "" },
  ConfigOnly: false,
  Containers: {},
  Options: { "com.docker.network.bridge.name": "br-web" },
  Labels: {},
};

/** The "none" network, with the nulls the Engine sends for empty maps and lists. */
const noneNetwork = {
  Name: "none",
  Id: "0b9d3e6a1f2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6",
  Driver: "null",
  IPAM: { Driver: "default", Options: null, Config: null },
  Containers: null,
  Options: null,
  Labels: null,
};

const proxyEndpoint = {
  IPAMConfig: null,
  Links: null,
  Aliases: null,
  NetworkID: NETWORK_ID,
  EndpointID: PROXY_ENDPOINT,
  Gateway: "172.20.0.1",
  IPAddress: "172.20.0.2",
  IPPrefixLen: 16,
  IPv6Gateway: "",
  GlobalIPv6Address: "",
  GlobalIPv6PrefixLen: 0,
  MacAddress: PROXY_MAC,
  DriverOpts: null,
};

const proxySummary = {
  Id: PROXY_ID,
  Names: ["/proxy"],
  Image: "traefik:v2.10",
  Command: "/entrypoint.sh traefik",
  Created: 1696161600,
  Ports: [],
  Labels: { "com.example.role": "proxy" },
  State: "running",
  Status: "Up 2 hours",
  HostConfig: { NetworkMode: "web" },
  NetworkSettings: { Networks: { web: proxyEndpoint } },
  Mounts: [],
};

const proxyInspect = {
  Id: PROXY_ID,
  Created: "2023-10-01T12:00:00.000000000Z",
  Path: "/entrypoint.sh",
  Args: ["traefik"],
  State: { Status: "running", Running: true, Paused: false, Pid: 4242, ExitCode: 0 },
  Image: "sha256:0123",
  Name: "/proxy",
  Config: { Hostname: "8dfafdbc3a40", Image: "traefik:v2.10", Labels: { role: "proxy" } },
  NetworkSettings: {
    Bridge: "",
    SandboxID: "1a2b3c4d5e6f",
    SandboxKey: "/var/run/docker/netns/1a2b3c4d5e6f",
    SecondaryIPAddresses: null,
    Networks: { web: proxyEndpoint },
  },
};

function containerEvent(action: string, name: string) {
  return {
    status: action,
    id: PROXY_ID,
    from: "traefik:v2.10",
    Type: "container",
    Action: action,
    Actor: { ID: PROXY_ID, Attributes: { image: "traefik:v2.10", name } },
    scope: "local",
    time: 1696161600,
    timeNano: 1696161600000000000,
  };
}

/** What the client keeps of containerEvent(). */
function keptOf(event: ReturnType<typeof containerEvent>): EngineEvent {
  const { Type, Action, Actor, timeNano } = event;
  return { Type, Action, Actor, timeNano };
}

// ----- A fake Engine

type Handler = (request: IncomingMessage, response: ServerResponse) => void;

interface FakeEngine {
  dockerHost: string;
  /** What the Engine answers; a test may swap it, as when the Engine is upgraded. */
  handler: Handler;
  /** "GET /v1.41/networks?…", in the order received. */
  requests: string[];
  connections: number;
}

/** Serves `handler` on a unix socket (default), on 127.0.0.1, or with the given server (TLS). */
async function startEngine(
  t: TestContext,
  handler: Handler,
  listenOn: "unix" | "tcp" = "unix",
  server: Server = createServer(),
  scheme = "tcp",
): Promise<FakeEngine> {
  const engine: FakeEngine = { dockerHost: "", handler, requests: [], connections: 0 };
  server.on("connection", () => engine.connections++);
  server.on("request", (request: IncomingMessage, response: ServerResponse) => {
    engine.requests.push(`${request.method} ${request.url}`);
    engine.handler(request, response);
  });
  if (listenOn === "unix") {
    const dir = mkdtempSync(join(tmpdir(), "tj-engine-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const socketPath = join(dir, "docker.sock");
    server.listen(socketPath);
    engine.dockerHost = `unix://${socketPath}`;
  } else {
    server.listen(0, "127.0.0.1");
  }
  await once(server, "listening");
  const address = server.address();
  if (listenOn === "tcp") {
    assert.ok(address !== null && typeof address === "object");
    engine.dockerHost = `${scheme}://127.0.0.1:${address.port}`;
  }
  t.after(async () => {
    server.closeAllConnections();
    server.close();
    await once(server, "close");
  });
  return engine;
}

/** Routes by path, with or without an API version prefix; anything else is a 404 as Docker's. */
function routes(table: Record<string, Handler>): Handler {
  return (request, response) => {
    const path = (request.url ?? "").split("?")[0]!.replace(/^\/v\d+\.\d+(?=\/)/, "");
    const route = table[path];
    if (route) route(request, response);
    else reply(response, 404, { message: "page not found" });
  };
}

function reply(response: ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, { "Content-Type": "application/json" });
  response.end(JSON.stringify(body));
}

const answer =
  (body: unknown, status = 200): Handler =>
  (_request, response) =>
    reply(response, status, body);

/** Never answers. */
const hang: Handler = () => undefined;

function queryOf(request: string): URLSearchParams {
  return new URL(request.split(" ")[1]!, "http://engine").searchParams;
}

function clientFor(t: TestContext, engine: FakeEngine, options: EngineClientOptions = {}) {
  const client = createEngineClient(
    { DOCKER_HOST: engine.dockerHost },
    { apiVersion: null, ...options },
  );
  t.after(() => client.close());
  return client;
}

function deferred<T>() {
  let resolve: (value: T) => void = () => undefined;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** Collects a stream's events; `count(n)` resolves once n have arrived. */
function collect(stream: EngineEventStream) {
  const events: EngineEvent[] = [];
  const waiters: Array<{ n: number; resolve: () => void }> = [];
  stream.on("event", (event) => {
    events.push(event);
    for (const waiter of waiters) if (events.length >= waiter.n) waiter.resolve();
  });
  const count = (n: number) =>
    events.length >= n
      ? Promise.resolve()
      : new Promise<void>((resolve) => waiters.push({ n, resolve }));
  return { events, count };
}

/** A client that waits forever on a broken stream fails its test, not the whole file. */
const BOUNDED = { timeout: 10_000 };

// ----- DOCKER_HOST

test("DOCKER_HOST unset or empty: Docker's own socket; unix:// with a path", () => {
  const socket = { protocol: "unix", socketPath: "/var/run/docker.sock" };
  assert.deepEqual(parseDockerHost({}), socket);
  assert.deepEqual(parseDockerHost({ DOCKER_HOST: "" }), socket);
  assert.deepEqual(parseDockerHost({ DOCKER_HOST: "unix://" }), socket);
  assert.deepEqual(parseDockerHost({ DOCKER_HOST: "unix:///run/user/1000/docker.sock" }), {
    protocol: "unix",
    socketPath: "/run/user/1000/docker.sock",
  });
  // TLS settings do not apply to a socket.
  assert.deepEqual(parseDockerHost({ DOCKER_HOST: "unix:///d.sock", DOCKER_TLS_VERIFY: "1" }), {
    protocol: "unix",
    socketPath: "/d.sock",
  });
});

test("DOCKER_HOST tcp://: plain HTTP, port 2375 by default, IPv6 literals, :80 kept", () => {
  const http = (host: string, port: number) => ({ protocol: "http", host, port });
  assert.deepEqual(parseDockerHost({ DOCKER_HOST: "tcp://proxy:2375" }), http("proxy", 2375));
  assert.deepEqual(parseDockerHost({ DOCKER_HOST: "tcp://proxy" }), http("proxy", 2375));
  assert.deepEqual(parseDockerHost({ DOCKER_HOST: "tcp://proxy:80/" }), http("proxy", 80));
  assert.deepEqual(parseDockerHost({ DOCKER_HOST: "tcp://[::1]:2375" }), http("::1", 2375));
  assert.deepEqual(parseDockerHost({ DOCKER_HOST: "tcp://:2375" }), http("localhost", 2375));
  // Docker reads an empty DOCKER_TLS_VERIFY as unset.
  assert.deepEqual(
    parseDockerHost({ DOCKER_HOST: "tcp://proxy", DOCKER_TLS_VERIFY: "" }),
    http("proxy", 2375),
  );
});

test("DOCKER_HOST tcp:// with DOCKER_TLS_VERIFY: HTTPS, port 2376, certificates of DOCKER_CERT_PATH or ~/.docker", () => {
  assert.deepEqual(parseDockerHost({ DOCKER_HOST: "tcp://docker:2376", DOCKER_TLS_VERIFY: "1" }), {
    protocol: "https",
    host: "docker",
    port: 2376,
    certPath: join(homedir(), ".docker"),
  });
  // Any non-empty value asks for TLS, as for Docker.
  assert.deepEqual(
    parseDockerHost({
      DOCKER_HOST: "tcp://docker",
      DOCKER_TLS_VERIFY: "0",
      DOCKER_CERT_PATH: "/certs",
    }),
    { protocol: "https", host: "docker", port: 2376, certPath: "/certs" },
  );
});

test("DOCKER_HOST http:// and https:// stand for tcp:// without and with TLS", () => {
  assert.deepEqual(parseDockerHost({ DOCKER_HOST: "http://proxy:2375" }), {
    protocol: "http",
    host: "proxy",
    port: 2375,
  });
  // Without DOCKER_TLS_VERIFY, the server is checked against the system's CAs.
  assert.deepEqual(parseDockerHost({ DOCKER_HOST: "https://docker.example.com" }), {
    protocol: "https",
    host: "docker.example.com",
    port: 2376,
    certPath: null,
  });
  assert.deepEqual(
    parseDockerHost({
      DOCKER_HOST: "https://d:443",
      DOCKER_TLS_VERIFY: "1",
      DOCKER_CERT_PATH: "/c",
    }),
    { protocol: "https", host: "d", port: 443, certPath: "/c" },
  );
  assert.throws(
    () => parseDockerHost({ DOCKER_HOST: "http://proxy:2375", DOCKER_TLS_VERIFY: "1" }),
    /DOCKER_HOST=http:\/\/proxy:2375: http:\/\/ while DOCKER_TLS_VERIFY asks for TLS/,
  );
});

test("DOCKER_HOST: other schemes, no scheme, paths, credentials: an error naming DOCKER_HOST", () => {
  for (const [value, reason] of [
    ["ssh://me@docker-host", /ssh:\/\/ is not supported/],
    ["npipe:////./pipe/docker_engine", /npipe:\/\/ is not supported/],
    ["fd://", /fd:\/\/ is not supported/],
    ["localhost:2375", /no scheme/],
    ["/var/run/docker.sock", /no scheme/],
    ["tcp://proxy:2375/docker", /without path/],
    ["tcp://user:secret@proxy:2375", /without path, credentials/],
    ["tcp://proxy:99999", /expected host\[:port\]/],
  ] as const) {
    assert.throws(
      () => parseDockerHost({ DOCKER_HOST: value }),
      (error: Error) =>
        error.message.startsWith(`DOCKER_HOST=${value}: `) && reason.test(error.message),
      value,
    );
  }
});

test("endpoints are described as URLs for the logs", () => {
  assert.equal(describeEngineEndpoint(parseDockerHost({})), "unix:///var/run/docker.sock");
  assert.equal(
    describeEngineEndpoint(parseDockerHost({ DOCKER_HOST: "tcp://[::1]", DOCKER_TLS_VERIFY: "1" })),
    "https://[::1]:2376",
  );
});

// ----- API version

test("API version: the Engine's newest, capped at 1.41, never below the Engine's oldest", () => {
  const choose = (ApiVersion: string, MinAPIVersion?: string) =>
    chooseApiVersion({ Version: "x", ApiVersion, MinAPIVersion });
  assert.equal(choose("1.41", "1.12"), "1.41"); // Docker 20.10
  assert.equal(choose("1.43", "1.12"), "1.41"); // Docker 24
  assert.equal(choose("1.40"), "1.40"); // Docker 19.03
  assert.equal(choose("1.52", "1.44"), "1.44"); // Docker 29 refuses older versions
  assert.equal(choose("2.3", "2.0"), "2.0");
  assert.equal(choose("latest"), null);
});

test(
  "the API version is negotiated once, from GET /version, and prefixes every path",
  BOUNDED,
  async (t) => {
    const engine = await startEngine(
      t,
      routes({
        "/version": answer({ Version: "24.0.7", ApiVersion: "1.43", MinAPIVersion: "1.12" }),
        "/networks/web": answer(webNetwork),
        "/containers/json": answer([]),
      }),
    );
    const client = clientFor(t, engine, { apiVersion: undefined });
    await Promise.all([client.inspectNetwork("web"), client.listContainers()]);
    await client.inspectNetwork("web");
    assert.deepEqual(engine.requests, [
      "GET /version",
      "GET /v1.41/networks/web",
      "GET /v1.41/containers/json",
      "GET /v1.41/networks/web",
    ]);
  },
);

test("the API version read by version() serves for the paths that follow", BOUNDED, async (t) => {
  const engine = await startEngine(
    t,
    routes({
      "/version": answer({ Version: "29.0.0", ApiVersion: "1.52", MinAPIVersion: "1.44" }),
      "/containers/json": answer([]),
    }),
  );
  const client = clientFor(t, engine, { apiVersion: undefined });
  assert.deepEqual(await client.version(), {
    Version: "29.0.0",
    ApiVersion: "1.52",
    MinAPIVersion: "1.44",
  });
  await client.listContainers();
  assert.deepEqual(engine.requests, ["GET /version", "GET /v1.44/containers/json"]);
});

test("a proxy refusing /version: unversioned paths, without asking again", BOUNDED, async (t) => {
  const engine = await startEngine(
    t,
    routes({
      "/version": (_request, response) => {
        response.writeHead(403, { "Content-Type": "text/html" });
        response.end("<html><body><h1>403 Forbidden</h1>\nRequest forbidden.\n</body></html>\n");
      },
      "/containers/json": answer([]),
    }),
  );
  const client = clientFor(t, engine, { apiVersion: undefined });
  await client.listContainers();
  await client.listContainers();
  assert.deepEqual(engine.requests, [
    "GET /version",
    "GET /containers/json",
    "GET /containers/json",
  ]);
});

test(
  "an Engine failing on /version: the call fails, and the next one asks again",
  BOUNDED,
  async (t) => {
    let versionAnswers = 0;
    const engine = await startEngine(
      t,
      routes({
        "/version": (_request, response) =>
          versionAnswers++ === 0
            ? reply(response, 503, { message: "daemon restarting" })
            : reply(response, 200, { Version: "20.10.24", ApiVersion: "1.41" }),
        "/containers/json": answer([]),
      }),
    );
    const client = clientFor(t, engine, { apiVersion: undefined });
    await assert.rejects(client.listContainers(), { statusCode: 503 });
    await client.listContainers();
    assert.deepEqual(engine.requests, [
      "GET /version",
      "GET /version",
      "GET /v1.41/containers/json",
    ]);
  },
);

test(
  "an Engine upgraded under the client refuses the old version: renegotiated, asked again",
  BOUNDED,
  async (t) => {
    const engine = await startEngine(
      t,
      routes({
        "/version": answer({ Version: "20.10.24", ApiVersion: "1.41", MinAPIVersion: "1.12" }),
        "/containers/json": answer([]),
      }),
    );
    const client = clientFor(t, engine, { apiVersion: undefined });
    await client.listContainers();
    engine.requests.length = 0;
    // Docker 29 now, refusing 1.41 as it does.
    engine.handler = routes({
      "/version": answer({ Version: "29.0.0", ApiVersion: "1.52", MinAPIVersion: "1.44" }),
      "/containers/json": (request, response) =>
        request.url?.startsWith("/v1.41/")
          ? reply(response, 400, {
              message:
                "client version 1.41 is too old. Minimum supported API version is 1.44, " +
                "please upgrade your client to a newer version",
            })
          : reply(response, 200, []),
    });
    assert.deepEqual(await client.listContainers(), []);
    assert.deepEqual(engine.requests, [
      "GET /v1.41/containers/json",
      "GET /version",
      "GET /v1.44/containers/json",
    ]);
  },
);

// ----- Reading: what is kept, nulls, filters

test(
  "inspectNetwork keeps what TrafficJam reads, and reads the Engine's nulls as empty",
  BOUNDED,
  async (t) => {
    const engine = await startEngine(
      t,
      routes({ "/networks/web": answer(webNetwork), "/networks/none": answer(noneNetwork) }),
    );
    const client = clientFor(t, engine);
    assert.deepEqual(await client.inspectNetwork("web"), {
      Id: NETWORK_ID,
      Name: "web",
      Driver: "bridge",
      Options: { "com.docker.network.bridge.name": "br-web" },
      IPAM: { Config: [{ Subnet: "172.20.0.0/16" }] },
      Containers: {},
    });
    assert.deepEqual(await client.inspectNetwork("none"), {
      Id: noneNetwork.Id,
      Name: "none",
      Driver: "null",
      Options: {},
      IPAM: { Config: [] },
      Containers: {},
    });
    assert.deepEqual(engine.requests, ["GET /networks/web", "GET /networks/none"]);
  },
);

test(
  "filters go in the query as the JSON the Engine expects, and only when there are some",
  BOUNDED,
  async (t) => {
    const engine = await startEngine(t, routes({ "/containers/json": answer([proxySummary]) }));
    const client = clientFor(t, engine);
    const filters = { label: ["com.example.role=proxy & more", "tier=front"], status: ["running"] };
    await client.listContainers(filters);
    await client.listContainers({});
    const [withFilters, withoutFilters] = engine.requests;
    assert.deepEqual(JSON.parse(queryOf(withFilters!).get("filters") ?? ""), filters);
    assert.equal(withoutFilters, "GET /containers/json");
  },
);

test(
  "listContainers: ids, names and the endpoint on each network; null maps accepted",
  BOUNDED,
  async (t) => {
    const detached = {
      ...proxySummary,
      Id: "c2",
      Names: null,
      NetworkSettings: { Networks: null },
    };
    const noSettings = { ...proxySummary, Id: "c3", NetworkSettings: null };
    const nullEndpoint = {
      ...proxySummary,
      Id: "c4",
      NetworkSettings: { Networks: { web: null } },
    };
    const engine = await startEngine(
      t,
      routes({ "/containers/json": answer([proxySummary, detached, noSettings, nullEndpoint]) }),
    );
    const client = clientFor(t, engine);
    const kept = {
      NetworkID: NETWORK_ID,
      EndpointID: PROXY_ENDPOINT,
      MacAddress: PROXY_MAC,
      IPAddress: "172.20.0.2",
      GlobalIPv6Address: "",
    };
    assert.deepEqual(await client.listContainers(), [
      { Id: PROXY_ID, Names: ["/proxy"], NetworkSettings: { Networks: { web: kept } } },
      { Id: "c2", Names: [], NetworkSettings: { Networks: {} } },
      { Id: "c3", Names: ["/proxy"], NetworkSettings: { Networks: {} } },
      { Id: "c4", Names: ["/proxy"], NetworkSettings: { Networks: {} } },
    ]);
  },
);

test(
  "inspectContainer: state, config, sandbox and endpoints; null when the Engine has no such container",
  BOUNDED,
  async (t) => {
    const stopped = {
      ...proxyInspect,
      Id: "stopped",
      State: { Status: "exited", Running: false, Pid: 0 },
      Config: { Image: "alpine", Labels: null },
      NetworkSettings: { SandboxKey: "", Networks: null },
    };
    const engine = await startEngine(
      t,
      routes({
        [`/containers/${PROXY_ID}/json`]: answer(proxyInspect),
        "/containers/stopped/json": answer(stopped),
        "/containers/gone/json": answer({ message: "No such container: gone" }, 404),
      }),
    );
    const client = clientFor(t, engine);
    assert.deepEqual(await client.inspectContainer(PROXY_ID), {
      Id: PROXY_ID,
      Name: "/proxy",
      State: { Running: true, Pid: 4242 },
      Config: { Image: "traefik:v2.10", Labels: { role: "proxy" } },
      NetworkSettings: {
        SandboxKey: "/var/run/docker/netns/1a2b3c4d5e6f",
        Networks: {
          web: {
            NetworkID: NETWORK_ID,
            EndpointID: PROXY_ENDPOINT,
            MacAddress: PROXY_MAC,
            IPAddress: "172.20.0.2",
            GlobalIPv6Address: "",
          },
        },
      },
    });
    assert.deepEqual(await client.inspectContainer("stopped"), {
      Id: "stopped",
      Name: "/proxy",
      State: { Running: false, Pid: 0 },
      Config: { Image: "alpine", Labels: {} },
      NetworkSettings: { SandboxKey: "", Networks: {} },
    });
    assert.equal(await client.inspectContainer("gone"), null);
  },
);

test(
  "inspectNetwork: every member with its endpoint; null when there is no such network",
  BOUNDED,
  async (t) => {
    const withMembers = {
      ...webNetwork,
      Containers: {
        [PROXY_ID]: {
          Name: "proxy",
          EndpointID: PROXY_ENDPOINT,
          MacAddress: PROXY_MAC,
          IPv4Address: "172.20.0.2/16",
          IPv6Address: "",
        },
      },
    };
    const engine = await startEngine(
      t,
      routes({
        "/networks/web": answer(withMembers),
        "/networks/my%20net": answer({ message: "network my net not found" }, 404),
      }),
    );
    const client = clientFor(t, engine);
    const network = await client.inspectNetwork("web");
    assert.deepEqual(network?.Containers, withMembers.Containers);
    assert.equal(await client.inspectNetwork("my net"), null);
    assert.deepEqual(engine.requests, ["GET /networks/web", "GET /networks/my%20net"]);
  },
);

test("what the client reads is what the network observer takes", BOUNDED, async (t) => {
  const engine = await startEngine(
    t,
    routes({
      "/networks/web": answer(webNetwork),
      "/containers/json": answer([proxySummary]),
    }),
  );
  const client = clientFor(t, engine);
  const network = await client.inspectNetwork("web");
  assert.ok(network);
  assert.deepEqual(subnetsOf(network), ["172.20.0.0/16"]);
  assert.equal(bridgeOf(network), "br-web");
  assert.deepEqual(membersOn(network.Id, await client.listContainers()), [
    {
      id: PROXY_ID,
      name: "proxy",
      whitelisted: true,
      ipv4: "172.20.0.2",
      ipv6: undefined,
      endpointId: PROXY_ENDPOINT,
      mac: PROXY_MAC,
    },
  ]);
});

test("every method sends GET only, to plain API paths", BOUNDED, async (t) => {
  const engine = await startEngine(
    t,
    routes({
      "/_ping": (_request, response) => response.end("OK"),
      "/version": answer({ Version: "20.10.24", ApiVersion: "1.41" }),
      "/networks/web": answer(webNetwork),
      "/containers/json": answer([]),
      [`/containers/${PROXY_ID}/json`]: answer(proxyInspect),
      "/events": (_request, response) => response.end(),
    }),
  );
  const client = clientFor(t, engine, { apiVersion: undefined });
  await client.ping();
  await client.version();
  await client.inspectNetwork("web");
  await client.listContainers({ label: ["a"] });
  await client.inspectContainer(PROXY_ID);
  await once(client.events(), "end");
  assert.deepEqual(
    engine.requests.map((request) => request.split("?")[0]),
    [
      "GET /_ping",
      "GET /version",
      "GET /v1.41/networks/web",
      "GET /v1.41/containers/json",
      `GET /v1.41/containers/${PROXY_ID}/json`,
      "GET /v1.41/events",
    ],
  );
});

// ----- Failures

test(
  "an error status: EngineError with the status and the Engine's message",
  BOUNDED,
  async (t) => {
    const engine = await startEngine(
      t,
      routes({
        "/containers/json": answer({ message: "invalid filter 'colour'" }, 400),
        "/networks/web": answer({ message: "Internal error: boom" }, 500),
        "/_ping": (_request, response) => {
          response.writeHead(502);
          response.end();
        },
        // tecnativa/docker-socket-proxy denying a path: HAProxy's own page.
        [`/containers/${PROXY_ID}/json`]: (_request, response) => {
          response.writeHead(403, { "Content-Type": "text/html" });
          response.end(
            "<html><body><h1>403 Forbidden</h1>\nRequest forbidden by administrative rules.\n</body></html>\n",
          );
        },
      }),
    );
    const client = clientFor(t, engine);
    await assert.rejects(client.listContainers({ colour: ["red"] }), (error) => {
      assert.ok(error instanceof EngineError);
      assert.equal(error.statusCode, 400);
      assert.equal(error.engineMessage, "invalid filter 'colour'");
      assert.equal(error.message, "GET /containers/json: 400 invalid filter 'colour'");
      return true;
    });
    await assert.rejects(client.inspectNetwork("web"), {
      name: "EngineError",
      statusCode: 500,
      engineMessage: "Internal error: boom",
    });
    await assert.rejects(client.ping(), {
      name: "EngineError",
      statusCode: 502,
      engineMessage: "Bad Gateway",
    });
    // Only a 404 means "no such container".
    await assert.rejects(client.inspectContainer(PROXY_ID), {
      name: "EngineError",
      statusCode: 403,
      engineMessage:
        "<html><body><h1>403 Forbidden</h1> Request forbidden by administrative rules. </body></html>",
    });
  },
);

test(
  "an answer of the wrong shape: InvalidEngineResponseError naming the endpoint and the path",
  BOUNDED,
  async (t) => {
    const brokenPid = { ...proxyInspect, State: { Running: true, Pid: "4242" } };
    const brokenEndpoint = {
      ...proxySummary,
      NetworkSettings: { Networks: { "my.net": { ...proxyEndpoint, IPAddress: 17 } } },
    };
    const engine = await startEngine(
      t,
      routes({
        "/networks/broken": answer({ ...webNetwork, Id: 42 }),
        [`/containers/${PROXY_ID}/json`]: answer(brokenPid),
        "/containers/json": answer([brokenEndpoint]),
        "/networks/web": (_request, response) => response.end("<html>not an engine</html>"),
      }),
    );
    const client = clientFor(t, engine);
    const invalid = (endpoint: string, problem: RegExp) => (error: unknown) => {
      assert.ok(error instanceof InvalidEngineResponseError);
      assert.equal(error.endpoint, endpoint);
      assert.match(error.problem, problem);
      assert.ok(error.message.startsWith(`${endpoint}: unexpected answer: `));
      return true;
    };
    await assert.rejects(
      client.inspectNetwork("broken"),
      invalid("GET /networks/broken", /^Id: .*string/),
    );
    await assert.rejects(
      client.inspectContainer(PROXY_ID),
      invalid(`GET /containers/${PROXY_ID}/json`, /^State\.Pid: .*number/),
    );
    await assert.rejects(
      client.listContainers(),
      invalid(
        "GET /containers/json",
        /^\[0\]\.NetworkSettings\.Networks\["my\.net"\]\.IPAddress: /,
      ),
    );
    await assert.rejects(
      client.inspectNetwork("web"),
      invalid("GET /networks/web", /^not JSON: <html>not an engine<\/html>/),
    );
  },
);

test(
  "no complete answer in time: EngineTimeoutError, whether the Engine is silent or stalls",
  BOUNDED,
  async (t) => {
    const engine = await startEngine(
      t,
      routes({
        "/_ping": hang,
        "/containers/json": (_request, response) => {
          response.writeHead(200, { "Content-Type": "application/json" });
          response.write("[");
        },
      }),
    );
    const client = clientFor(t, engine, { timeoutMs: 50 });
    await assert.rejects(client.ping(), (error) => {
      assert.ok(error instanceof EngineTimeoutError);
      assert.equal(error.message, "GET /_ping: no complete answer within 50 ms");
      return true;
    });
    await assert.rejects(client.listContainers(), {
      name: "EngineTimeoutError",
      endpoint: "GET /containers/json",
    });
  },
);

test("no Engine at the socket: the connection error, at once", BOUNDED, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "tj-engine-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const client = createEngineClient({ DOCKER_HOST: `unix://${join(dir, "docker.sock")}` });
  t.after(() => client.close());
  await assert.rejects(client.ping(), { code: "ENOENT" });
  await assert.rejects(client.listContainers(), { code: "ENOENT" });
  const [error] = await once(client.events(), "end");
  assert.equal(error.code, "ENOENT");
});

// ----- Connections

test("connections are kept alive between requests", BOUNDED, async (t) => {
  const engine = await startEngine(t, routes({ "/containers/json": answer([]) }));
  const client = clientFor(t, engine);
  for (let i = 0; i < 3; i++) await client.listContainers();
  assert.equal(engine.requests.length, 3);
  assert.equal(engine.connections, 1);
});

test(
  "a kept-alive connection the Engine drops as it is reused: the request is sent again",
  BOUNDED,
  async (t) => {
    const served = new WeakMap<Socket, number>();
    const engine = await startEngine(t, (request, response) => {
      const count = (served.get(request.socket) ?? 0) + 1;
      served.set(request.socket, count);
      // The second request on a connection finds it closed, as after the Engine's idle timeout.
      if (count === 2) request.socket.destroy();
      else reply(response, 200, []);
    });
    const client = clientFor(t, engine);
    await client.listContainers();
    assert.deepEqual(await client.listContainers(), []);
    assert.equal(engine.requests.length, 3);
    assert.equal(engine.connections, 2);
  },
);

// ----- The event stream

/** An /events route that hands each stream's response to the test once its headers are sent. */
function eventsRoute() {
  const streams: ServerResponse[] = [];
  const waiting: Array<(response: ServerResponse) => void> = [];
  const handler: Handler = (_request, response) => {
    response.writeHead(200, { "Content-Type": "application/json" });
    response.flushHeaders();
    const waiter = waiting.shift();
    if (waiter) waiter(response);
    else streams.push(response);
  };
  const next = () =>
    new Promise<ServerResponse>((resolve) => {
      const ready = streams.shift();
      if (ready) resolve(ready);
      else waiting.push(resolve);
    });
  return { handler, next };
}

test(
  "events: lines split across chunks (even inside a character) and several in one chunk",
  BOUNDED,
  async (t) => {
    const events = eventsRoute();
    const engine = await startEngine(t, routes({ "/events": events.handler }));
    const client = clientFor(t, engine);
    const stream = client.events(
      { type: ["container", "network"], event: ["start", "die"] },
      1696161600,
    );
    const received = collect(stream);
    await once(stream, "open");
    const server = await events.next();
    const [a, b, c, d] = [
      containerEvent("start", "proxy"),
      containerEvent("rename", "café-☕"),
      containerEvent("die", "proxy"),
      containerEvent("destroy", "proxy"),
    ];
    const bBytes = Buffer.from(`${JSON.stringify(b)}\n`);
    const insideTheCup = bBytes.indexOf(Buffer.from("☕")) + 1;
    server.write(
      Buffer.concat([Buffer.from(`${JSON.stringify(a)}\n`), bBytes.subarray(0, insideTheCup)]),
    );
    await received.count(1);
    // Written only once the first chunk was read: the client did see the line cut in two.
    server.write(
      Buffer.concat([
        bBytes.subarray(insideTheCup),
        Buffer.from(`${JSON.stringify(c)}\n${JSON.stringify(d)}\n`),
      ]),
    );
    await received.count(4);
    assert.deepEqual(received.events, [a, b, c, d].map(keptOf));
    assert.equal(received.events[1]?.Actor.Attributes.name, "café-☕");
    const query = queryOf(engine.requests[0]!);
    assert.deepEqual(JSON.parse(query.get("filters") ?? ""), {
      type: ["container", "network"],
      event: ["start", "die"],
    });
    assert.equal(query.get("since"), "1696161600");
    stream.stop();
  },
);

test(
  "events: a line that is not an event is reported, and the stream goes on",
  BOUNDED,
  async (t) => {
    const events = eventsRoute();
    const engine = await startEngine(t, routes({ "/events": events.handler }));
    const client = clientFor(t, engine);
    const stream = client.events();
    const malformed: InvalidEngineResponseError[] = [];
    stream.on("malformed", (error) => malformed.push(error));
    const received = collect(stream);
    const server = await events.next();
    const good = containerEvent("start", "proxy");
    server.write(`{"Type":"container","Actor":{"ID":"x"}}\nnot json\n\n${JSON.stringify(good)}\n`);
    await received.count(1);
    assert.deepEqual(received.events, [keptOf(good)]);
    assert.deepEqual(
      malformed.map((error) => error.message),
      [
        "GET /events: unexpected answer: Action: Required",
        "GET /events: unexpected answer: not JSON: not json",
      ],
    );
    stream.stop();
  },
);

test(
  "events: the Engine ending the stream is reported as an end without error",
  BOUNDED,
  async (t) => {
    const events = eventsRoute();
    const engine = await startEngine(t, routes({ "/events": events.handler }));
    const client = clientFor(t, engine);
    const stream = client.events();
    const received = collect(stream);
    const server = await events.next();
    server.end(`${JSON.stringify(containerEvent("die", "proxy"))}\n`);
    const [error] = await once(stream, "end");
    assert.equal(error, null);
    assert.equal(received.events.length, 1);
  },
);

test(
  "events: a connection lost mid-stream is reported as an end with its error",
  BOUNDED,
  async (t) => {
    const events = eventsRoute();
    const engine = await startEngine(t, routes({ "/events": events.handler }));
    const client = clientFor(t, engine);
    const stream = client.events();
    const server = await events.next();
    server.write(`${JSON.stringify(containerEvent("die", "proxy")).slice(0, 20)}`);
    server.socket?.destroy();
    const [error] = await once(stream, "end");
    assert.ok(error instanceof Error && "code" in error);
    assert.equal(error.code, "ECONNRESET");
  },
);

test("events: a refused stream ends with the EngineError, never opened", BOUNDED, async (t) => {
  const engine = await startEngine(
    t,
    routes({ "/events": answer({ message: "events are not allowed here" }, 403) }),
  );
  const client = clientFor(t, engine);
  const stream = client.events();
  let opened = false;
  stream.on("open", () => (opened = true));
  const [error] = await once(stream, "end");
  assert.ok(error instanceof EngineError);
  assert.equal(error.statusCode, 403);
  assert.equal(error.engineMessage, "events are not allowed here");
  assert.equal(opened, false);
});

test("events: stop() closes the connection, and no end is reported", BOUNDED, async (t) => {
  const closed = deferred<void>();
  const engine = await startEngine(
    t,
    routes({
      "/events": (request, response) => {
        response.writeHead(200);
        response.flushHeaders();
        request.socket.on("close", () => closed.resolve());
      },
    }),
  );
  const client = clientFor(t, engine);
  const stream = client.events();
  let ended = false;
  stream.on("end", () => (ended = true));
  await once(stream, "open");
  stream.stop();
  await closed.promise;
  assert.equal(ended, false);
});

test(
  "events: no timeout once open; a stream the Engine does not answer times out",
  BOUNDED,
  async (t) => {
    const events = eventsRoute();
    const engine = await startEngine(t, routes({ "/events": events.handler, "/_ping": hang }));
    // Long enough for the fake Engine to answer on a loaded machine.
    const client = clientFor(t, engine, { timeoutMs: 250 });
    const stream = client.events();
    const received = collect(stream);
    let ended = false;
    stream.on("end", () => (ended = true));
    await once(stream, "open");
    const server = await events.next();
    // A request timing out proves the timeout has passed since the stream opened.
    await assert.rejects(client.ping(), EngineTimeoutError);
    server.write(`${JSON.stringify(containerEvent("start", "proxy"))}\n`);
    await received.count(1);
    assert.equal(ended, false);
    stream.stop();

    engine.handler = hang;
    const [error] = await once(client.events(), "end");
    assert.ok(error instanceof EngineTimeoutError);
    assert.equal(error.endpoint, "GET /events");
  },
);

// ----- Over TCP, and over TLS

test("over TCP: the same requests to 127.0.0.1", BOUNDED, async (t) => {
  const engine = await startEngine(
    t,
    routes({
      "/_ping": (_request, response) => response.end("OK"),
      "/version": answer({ Version: "20.10.24", ApiVersion: "1.41", MinAPIVersion: "1.12" }),
      "/containers/json": answer([proxySummary]),
    }),
    "tcp",
  );
  const client = clientFor(t, engine, { apiVersion: undefined });
  assert.match(client.describe(), /^http:\/\/127\.0\.0\.1:\d+$/);
  await client.ping();
  assert.equal((await client.listContainers())[0]?.Id, PROXY_ID);
  assert.deepEqual(engine.requests, ["GET /_ping", "GET /version", "GET /v1.41/containers/json"]);
});

/** A CA, the Engine's certificate for 127.0.0.1 and a client certificate, made by openssl. */
function makeCertificates(dir: string, caName: string) {
  const config = join(dir, "openssl.cnf");
  writeFileSync(
    config,
    [
      "[req]",
      "distinguished_name = dn",
      "[dn]",
      "[ca]",
      "basicConstraints = critical, CA:TRUE",
      "keyUsage = critical, keyCertSign",
      "[server]",
      "subjectAltName = IP:127.0.0.1",
      "extendedKeyUsage = serverAuth",
      "[client]",
      "extendedKeyUsage = clientAuth",
      "",
    ].join("\n"),
  );
  const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  const newKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  openssl(
    "req",
    "-x509",
    "-config",
    config,
    "-extensions",
    "ca",
    ...newKey,
    "-keyout",
    "ca-key.pem",
    "-out",
    "ca.pem",
    "-days",
    "2",
    "-subj",
    `/CN=${caName}`,
  );
  const issue = (name: string, extensions: string, serial: string) => {
    openssl(
      "req",
      "-new",
      "-config",
      config,
      ...newKey,
      "-keyout",
      `${name}-key.pem`,
      "-out",
      `${name}.csr`,
      "-subj",
      `/CN=${name}`,
    );
    openssl(
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      "ca.pem",
      "-CAkey",
      "ca-key.pem",
      "-set_serial",
      serial,
      "-days",
      "2",
      "-extfile",
      config,
      "-extensions",
      extensions,
      "-out",
      `${name}.pem`,
    );
  };
  issue("engine", "server", "2");
  issue("client", "client", "3");
  const read = (name: string) => readFileSync(join(dir, name));
  // The client's folder, laid out as DOCKER_CERT_PATH expects.
  writeFileSync(join(dir, "cert.pem"), read("client.pem"));
  writeFileSync(join(dir, "key.pem"), read("client-key.pem"));
  return {
    certPath: dir,
    ca: read("ca.pem"),
    cert: read("engine.pem"),
    key: read("engine-key.pem"),
  };
}

test(
  "over TLS: the Engine checked against ca.pem, the client known by its certificate",
  BOUNDED,
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "tj-engine-tls-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const pki = makeCertificates(dir, "TrafficJam test CA");
    const server = createHttpsServer({ ...pki, requestCert: true, rejectUnauthorized: true });
    const clientNames: string[] = [];
    const engine = await startEngine(
      t,
      routes({
        "/containers/json": (request, response) => {
          if (request.socket instanceof TLSSocket)
            clientNames.push(String(request.socket.getPeerCertificate().subject.CN));
          reply(response, 200, [proxySummary]);
        },
      }),
      "tcp",
      server,
    );
    const env = { DOCKER_HOST: engine.dockerHost, DOCKER_TLS_VERIFY: "1", DOCKER_CERT_PATH: dir };
    const client = createEngineClient(env, { apiVersion: null });
    t.after(() => client.close());
    assert.match(client.describe(), /^https:\/\/127\.0\.0\.1:\d+$/);
    assert.equal((await client.listContainers())[0]?.Id, PROXY_ID);
    await client.listContainers();
    assert.deepEqual(clientNames, ["client", "client"]);
    assert.equal(engine.connections, 1);
  },
);

test("over TLS: an Engine whose certificate another CA signed is refused", BOUNDED, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "tj-engine-tls-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const trusted = makeCertificates(mkdtempSync(join(dir, "trusted-")), "trusted CA");
  const stranger = makeCertificates(mkdtempSync(join(dir, "stranger-")), "stranger CA");
  const engine = await startEngine(
    t,
    routes({ "/containers/json": answer([]) }),
    "tcp",
    createHttpsServer({ cert: stranger.cert, key: stranger.key }),
  );
  const client = createEngineClient(
    { DOCKER_HOST: engine.dockerHost, DOCKER_TLS_VERIFY: "1", DOCKER_CERT_PATH: trusted.certPath },
    { apiVersion: null },
  );
  t.after(() => client.close());
  await assert.rejects(client.listContainers(), { code: "UNABLE_TO_VERIFY_LEAF_SIGNATURE" });
  assert.deepEqual(engine.requests, []);
});

test("over TLS: missing certificate files are reported at once, naming DOCKER_CERT_PATH", () => {
  const dir = mkdtempSync(join(tmpdir(), "tj-engine-tls-"));
  try {
    assert.throws(
      () =>
        createEngineClient({
          DOCKER_HOST: "tcp://docker",
          DOCKER_TLS_VERIFY: "1",
          DOCKER_CERT_PATH: dir,
        }),
      new RegExp(
        `DOCKER_TLS_VERIFY is set but ${join(dir, "ca.pem")} cannot be read \\(DOCKER_CERT_PATH`,
      ),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
