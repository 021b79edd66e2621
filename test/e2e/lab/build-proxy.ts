// Package downloads for `docker build` inside a lab. The lab's network namespace has no route to
// the outside world, and giving it one would mean NAT rules in the machine's own firewall. Instead:
//   build container → <lab docker0 gateway>:PORT → forwarder in the lab netns → unix socket
//   → HTTP proxy in this test process (root netns) → an allow-listed package host only.
// A unix socket is a file, so it crosses network namespaces. The proxy URL is given as the
// `http_proxy`/`https_proxy` build arguments, which Docker predefines and keeps out of the image.
import { spawn, type ChildProcess } from "node:child_process";
import { rmSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { join } from "node:path";
import type { Lab } from "./lab.js";
import { StopWaiting, waitFor } from "./util.js";

/** Hosts a build may reach: Debian's mirror (apt over http) and the npm registry (https). */
export const PACKAGE_HOSTS = ["deb.debian.org", "security.debian.org", "registry.npmjs.org"];
const PORT = 3142;

const FORWARDER = `
const net = require("net");
const [sock, port] = process.argv.slice(1);
net.createServer((c) => {
  const u = net.connect(sock);
  c.on("error", () => u.destroy());
  u.on("error", () => c.destroy());
  c.pipe(u).pipe(c);
}).listen(Number(port), "0.0.0.0", () => console.log("listening"));
`;

export interface BuildProxy {
  /** http://GATEWAY:PORT, reachable from build containers on the lab's default bridge. */
  url: string;
  /** Hosts asked for, allowed or not, for diagnostics. */
  requests: string[];
  close(): Promise<void>;
}

export async function startBuildProxy(lab: Lab, allow = PACKAGE_HOSTS): Promise<BuildProxy> {
  const requests: string[] = [];
  const allowed = (host: string) => {
    requests.push(host);
    return allow.includes(host);
  };
  const sockets = new Set<net.Socket>();
  const server = http.createServer((req, res) => {
    let url: URL;
    try {
      url = new URL(req.url ?? "");
    } catch {
      res.writeHead(400).end();
      return;
    }
    if (url.protocol !== "http:" || !allowed(url.hostname)) {
      res.writeHead(403).end(`${url.hostname} is not allowed by the test proxy\n`);
      return;
    }
    const headers = { ...req.headers };
    delete headers["proxy-connection"];
    const upstream = http.request(
      {
        host: url.hostname,
        port: url.port || 80,
        path: url.pathname + url.search,
        method: req.method,
        headers,
      },
      (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      },
    );
    upstream.on("error", (e) => {
      if (!res.headersSent) res.writeHead(502);
      res.end(String(e));
    });
    req.pipe(upstream);
  });
  server.on("connect", (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    const [host = "", port = "443"] = (req.url ?? "").split(":");
    if (!allowed(host) || port !== "443") {
      socket.end("HTTP/1.1 403 Forbidden\r\n\r\n");
      return;
    }
    const upstream = net.connect(Number(port), host, () => {
      socket.write("HTTP/1.1 200 Connection Established\r\n\r\n");
      upstream.write(head);
      upstream.pipe(socket);
      socket.pipe(upstream);
    });
    sockets.add(upstream);
    upstream.on("close", () => sockets.delete(upstream));
    upstream.on("error", () => socket.destroy());
    socket.on("error", () => upstream.destroy());
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  const sock = join(lab.paths.base, "build-proxy.sock");
  rmSync(sock, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(sock, resolve);
  });

  const gateway = JSON.parse(
    await lab.docker("network", "inspect", "bridge", "--format", "{{json .IPAM.Config}}"),
  ) as Array<{ Gateway?: string }>;
  const ip = gateway.find((g) => g.Gateway)?.Gateway ?? "172.17.0.1";
  // In the lab netns, so the lab's teardown kills it at the latest (it finds processes by netns).
  const forwarder: ChildProcess = spawn(
    "ip",
    ["netns", "exec", lab.netns, process.execPath, "-e", FORWARDER, sock, String(PORT)],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  let listening = false;
  forwarder.stdout?.on("data", () => (listening = true));
  let exited = false;
  forwarder.on("exit", () => (exited = true));
  const close = async () => {
    forwarder.kill("SIGKILL");
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(sock, { force: true });
  };
  try {
    await waitFor(
      () => {
        if (exited) throw new StopWaiting("the build proxy forwarder exited");
        return listening;
      },
      { timeoutMs: 10_000, intervalMs: 50, what: "the build proxy forwarder to listen" },
    );
  } catch (e) {
    await close();
    throw e;
  }
  return { url: `http://${ip}:${PORT}`, requests, close };
}
