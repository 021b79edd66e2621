// The channel between the daemon and its workers: TCP with TLS 1.2 and a pre-shared key (the
// Swarm secret the daemon creates), so only a holder of the key can report or be told addresses.
// No certificates: the key is the identity; ECDHE-PSK gives forward secrecy.
// Each worker listens on its node's Swarm address only (it runs with host networking); the
// daemon dials every node the swarm lists, so the daemon itself needs no port of its own, nor
// host networking. Messages are newline-delimited JSON (protocol.ts).
import { connect, createServer, type Server, type TLSSocket } from "node:tls";
import type { z } from "zod/v3";
import {
  LineSplitter,
  daemonMessageSchema,
  parseLine,
  workerMessageSchema,
  type AllowedMessage,
  type NodeStatus,
  type Report,
} from "./protocol.js";

const CIPHERS = "ECDHE-PSK-CHACHA20-POLY1305:ECDHE-PSK-AES256-CBC-SHA384:PSK-AES256-GCM-SHA384";
const IDENTITY = "trafficjam-daemon";
const TLS = { ciphers: CIPHERS, minVersion: "TLSv1.2", maxVersion: "TLSv1.2" } as const;
/** A worker that does not answer the daemon's message within this long is dialled again. */
const ANSWER_TIMEOUT_MS = 5000;
const CONNECT_TIMEOUT_MS = 3000;

function readLines<T>(
  socket: TLSSocket,
  schema: z.ZodType<T, z.ZodTypeDef, unknown>,
  onMessage: (message: T) => void,
  onInvalid: (error: string) => void,
): void {
  const splitter = new LineSplitter();
  socket.setEncoding("utf8");
  socket.on("data", (chunk: string) => {
    let lines: string[];
    try {
      lines = splitter.push(chunk);
    } catch (error) {
      onInvalid((error as Error).message);
      socket.destroy();
      return;
    }
    for (const line of lines) {
      const parsed = parseLine(schema, line);
      if (!parsed.ok) {
        onInvalid(parsed.error);
        socket.destroy();
        return;
      }
      onMessage(parsed.message);
    }
  });
}

const send = (socket: TLSSocket, message: unknown) => socket.write(`${JSON.stringify(message)}\n`);

// ----- the worker's end

export interface ListenerEvents {
  onAllowed(message: AllowedMessage): void;
  onConnected(peer: string): void;
  onDisconnected(peer: string): void;
  onRefused(peer: string, reason: string): void;
}

/**
 * A worker's end: listens on its node's address; tells every daemon connected its node's report
 * at once, on every change, and in answer to each message (so a daemon knows it is alive).
 */
export class WorkerListener {
  private readonly server: Server;
  private readonly sockets = new Set<TLSSocket>();
  private report: Report | null = null;
  private status: NodeStatus | null = null;

  constructor(key: Buffer, events: ListenerEvents) {
    this.server = createServer(
      {
        ...TLS,
        pskIdentityHint: "trafficjam",
        pskCallback: (_socket, identity) => (identity === IDENTITY ? key : null),
      },
      (socket) => {
        const peer = `${socket.remoteAddress}:${socket.remotePort}`;
        this.sockets.add(socket);
        socket.setKeepAlive(true, 5000);
        socket.on("error", () => undefined); // reported by close
        socket.on("close", () => {
          this.sockets.delete(socket);
          events.onDisconnected(peer);
        });
        readLines(
          socket,
          daemonMessageSchema,
          (message) => {
            events.onAllowed(message);
            if (this.report) send(socket, this.report);
          },
          (error) => events.onRefused(peer, `invalid message: ${error}`),
        );
        events.onConnected(peer);
        if (this.report) send(socket, this.report);
        if (this.status) send(socket, this.status);
      },
    );
    // A wrong key ends in the handshake.
    this.server.on("tlsClientError", (error, socket) =>
      events.onRefused(`${socket.remoteAddress}:${socket.remotePort}`, error.message),
    );
  }

  listen(host: string, port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(port, host, () => {
        this.server.off("error", reject);
        resolve();
      });
    });
  }

  /** The node's report, sent to every daemon connected now and to any that connects later. */
  send(report: Report): void {
    this.report = report;
    for (const socket of this.sockets) send(socket, report);
  }

  /** How the node enforces, to every daemon connected now and, kept, to any that connects. */
  sendStatus(status: NodeStatus): void {
    this.status = status;
    for (const socket of this.sockets) send(socket, status);
  }

  get connected(): boolean {
    return this.sockets.size > 0;
  }

  close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

// ----- the daemon's end

export interface DialerEvents {
  onReport(report: Report, node: string): void;
  onStatus(status: NodeStatus, node: string): void;
  /** What a worker is told when connected, and at every `keepalive()`. */
  current(): AllowedMessage;
  onConnected(node: string, address: string): void;
  onLost(node: string, reason: string, retryInMs: number): void;
  onRefused(node: string, reason: string): void;
}

interface Link {
  address: string;
  socket: TLSSocket | null;
  attempt: number;
  timer: NodeJS.Timeout | null;
  answerTimer: NodeJS.Timeout | null;
  removed: boolean;
}

/** The daemon's end: one connection per node of the swarm, each dialled again when lost. */
export class DaemonDialer {
  private readonly links = new Map<string, Link>();

  constructor(
    private readonly key: Buffer,
    private readonly port: number,
    private readonly events: DialerEvents,
  ) {}

  /** The nodes to keep a connection to (id → underlay address); others are hung up. */
  setNodes(nodes: ReadonlyMap<string, string>): void {
    for (const [node, link] of this.links) {
      if (nodes.get(node) === link.address) continue;
      this.drop(node);
    }
    for (const [node, address] of nodes) {
      if (this.links.has(node) || address === "") continue;
      const link: Link = {
        address,
        socket: null,
        attempt: 0,
        timer: null,
        answerTimer: null,
        removed: false,
      };
      this.links.set(node, link);
      this.dial(node, link);
    }
  }

  /** Tells every connected worker the whole set. */
  broadcast(message: AllowedMessage): void {
    for (const [, link] of this.links) if (link.socket) this.tell(link, message);
  }

  /** Tells every worker the current set again: one that does not answer is dialled anew. */
  keepalive(): void {
    this.broadcast(this.events.current());
  }

  get connections(): number {
    return [...this.links.values()].filter((l) => l.socket !== null).length;
  }

  close(): void {
    for (const node of [...this.links.keys()]) this.drop(node);
  }

  private drop(node: string): void {
    const link = this.links.get(node);
    if (!link) return;
    link.removed = true;
    if (link.timer) clearTimeout(link.timer);
    if (link.answerTimer) clearTimeout(link.answerTimer);
    link.socket?.destroy();
    this.links.delete(node);
  }

  private tell(link: Link, message: AllowedMessage): void {
    const socket = link.socket;
    if (!socket) return;
    send(socket, message);
    link.answerTimer ??= setTimeout(
      () => socket.destroy(new Error("no answer")),
      ANSWER_TIMEOUT_MS,
    );
  }

  private dial(node: string, link: Link): void {
    const socket = connect({
      ...TLS,
      host: link.address,
      port: this.port,
      checkServerIdentity: () => undefined, // no certificate: the key authenticates both ends
      pskCallback: () => ({ psk: this.key, identity: IDENTITY }),
      timeout: CONNECT_TIMEOUT_MS,
    });
    let established = false;
    socket.on("error", () => undefined); // reported by close
    socket.once("timeout", () => socket.destroy(new Error("timed out")));
    socket.once("secureConnect", () => {
      established = true;
      socket.setTimeout(0);
      socket.setKeepAlive(true, 5000);
      link.socket = socket;
      link.attempt = 0;
      this.events.onConnected(node, link.address);
      readLines(
        socket,
        workerMessageSchema,
        (message) => {
          if (link.answerTimer) clearTimeout(link.answerTimer);
          link.answerTimer = null;
          if (message.type === "status") this.events.onStatus(message, node);
          else this.events.onReport(message, node);
        },
        (error) => this.events.onRefused(node, `invalid message: ${error}`),
      );
      this.tell(link, this.events.current());
    });
    socket.once("close", () => {
      if (link.socket === socket) link.socket = null;
      if (link.answerTimer) clearTimeout(link.answerTimer);
      link.answerTimer = null;
      if (link.removed) return;
      const delay = Math.min(5000, 200 * 2 ** link.attempt++);
      this.events.onLost(node, established ? "connection closed" : "cannot connect", delay);
      link.timer = setTimeout(() => {
        if (!link.removed) this.dial(node, link);
      }, delay);
    });
  }
}

/** "10.0.0.1:2377" or "[fd00::1]:2377" → the host part. */
export function hostOf(address: string): string {
  const v6 = /^\[(.*)\]:\d+$/.exec(address);
  if (v6) return v6[1]!;
  const i = address.lastIndexOf(":");
  return i > 0 && !address.slice(0, i).includes(":") ? address.slice(0, i) : address;
}
