// TrafficJam behind a read-only Docker socket proxy granting only what the README says it needs:
// containers, networks, events and ping (GET only). A small filtering proxy in the test process
// stands in for tecnativa/docker-socket-proxy (no registry here): every other path or method is
// answered 403 and recorded. Isolation and event-driven changes must work through it.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startLab, type DaemonProcess, type Lab } from "./lab/index.js";
import {
  PROXY_LABEL,
  buildTopology,
  eventually,
  expectAll,
  startTrafficJam,
  type Topology,
} from "./topology.js";

const ALLOWED =
  /^(\/v[\d.]+)?\/(containers\/json|containers\/[^/]+\/json|networks|events|_ping)(\/|\?|$)/;

/** A unix-socket HTTP proxy to dockerd that lets only ALLOWED GETs through. */
function startSocketProxy(target: string, path: string, denied: string[]): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const url = req.url ?? "";
    if ((req.method !== "GET" && req.method !== "HEAD") || !ALLOWED.test(url)) {
      denied.push(`${req.method} ${url}`);
      res.writeHead(403, { "content-type": "text/plain" }).end("forbidden by the socket proxy\n");
      return;
    }
    const upstream = http.request(
      { socketPath: target, path: url, method: req.method, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on("error", () => res.destroy());
    req.pipe(upstream);
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(path, () => resolve(server));
  });
}

describe("behind a read-only socket proxy (containers, networks, events, ping)", () => {
  let lab: Lab;
  let t: Topology;
  let daemon: DaemonProcess;
  let server: http.Server | undefined;
  const socket = join(tmpdir(), `tj-socket-proxy-${process.pid}.sock`);
  const denied: string[] = [];

  before(async () => {
    lab = await startLab({ name: "sockproxy" });
    t = await buildTopology(lab);
    rmSync(socket, { force: true });
    server = await startSocketProxy(lab.dockerHost.replace(/^unix:\/\//, ""), socket, denied);
    daemon = await startTrafficJam(lab, t.net, { DOCKER_HOST: `unix://${socket}` });
  });
  after(async () => {
    daemon?.kill();
    server?.closeAllConnections();
    server?.close();
    rmSync(socket, { force: true });
    await lab?.stop();
  });

  it("starts, with nothing asked of Docker beyond those permissions but the version it logs", async () => {
    const connected = await daemon.waitForLog((e) => e.event === "docker.connected", 1000);
    assert.match(String(connected.version), /^unknown/);
    assert.deepEqual(
      denied.filter((r) => !/\/version$/.test(r)),
      [],
      `denied requests: ${denied.join(", ")}`,
    );
  });

  it("the network is isolated, and a new proxy is allowed at its start event", async () => {
    const [b1, b2] = t.backends;
    await expectAll([["proxy→b1", () => lab.tcp(t.proxy, b1.ipv4, 80)]], true);
    await expectAll([["b1→b2", () => lab.tcp(b1, b2.ipv4, 80, 500)]], false);
    const proxy2 = await lab.run({ name: "proxy2", network: t.net, labels: PROXY_LABEL });
    await eventually("proxy2 to reach b2", () => lab.tcp(proxy2, b2.ipv4, 80, 300), true, 3000);
    const applied = await daemon.waitForLog(
      (e) => e.event === "rules.applied" && String(e.reason).includes("container:start"),
      1000,
    );
    assert.ok(JSON.stringify(applied.allowed).includes(proxy2.ipv4));
    assert.deepEqual(
      denied.filter((r) => !/\/version$/.test(r)),
      [],
    );
  });
});
