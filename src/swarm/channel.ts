// The channel between workers and the daemon: TCP with TLS 1.2 and a pre-shared key (the Swarm
// secret the daemon creates), so only a holder of the key can report or be told addresses. No
// certificates: the key is the identity. ECDHE-PSK gives forward secrecy. The daemon listens on
// its node's Swarm address only; workers connect to the managers Docker lists, in turn.
import { connect, createServer, type Server, type TLSSocket } from "node:tls";
import type { z } from "zod/v3";
import {
  LineSplitter,
  daemonMessageSchema,
  parseLine,
  workerMessageSchema,
  type AllowedMessage,
  type Report,
} from "./protocol.js";

export const DEFAULT_CHANNEL_PORT = 7390;
const CIPHERS = "ECDHE-PSK-CHACHA20-POLY1305:ECDHE-PSK-AES256-CBC-SHA384:PSK-AES256-GCM-SHA384";
const IDENTITY = "trafficjam-worker";
const TLS = { ciphers: CIPHERS, minVersion: "TLSv1.2", maxVersion: "TLSv1.2" } as const;
/** A worker whose report got no answer within this long reconnects (a dead daemon's node). */
const ANSWER_TIMEOUT_MS = 5000;

interface Lines<T> {
  onMessage(message: T): void;
  onInvalid(error: string): void;
}

function readLines<T>(
  socket: TLSSocket,
  schema: z.ZodType<T, z.ZodTypeDef, unknown>,
  handler: Lines<T>,
): void {
  const splitter = new LineSplitter();
  socket.setEncoding("utf8");
  socket.on("data", (chunk: string) => {
    let lines: string[];
    try {
      lines = splitter.push(chunk);
    } catch (error) {
      handler.onInvalid((error as Error).message);
      socket.destroy();
      return;
    }
    for (const line of lines) {
      const parsed = parseLine(schema, line);
      if (parsed.ok) handler.onMessage(parsed.message);
      else {
        handler.onInvalid(parsed.error);
        socket.destroy();
        return;
      }
    }
  });
}

export interface ServerEvents {
  onReport(report: Report, peer: string): void;
  /** What a worker is told first, and in answer to each report. */
  current(): AllowedMessage;
  onRefused(peer: string, reason: string): void;
  onDisconnected(peer: string, node: string | null): void;
}

/** The daemon's end: takes reports, answers with the allowed set, and tells every worker of changes. */
export class ChannelServer {
  private readonly server: Server;
  private readonly sockets = new Set<TLSSocket>();

  constructor(key: Buffer, events: ServerEvents) {
    this.server = createServer(
      {
        ...TLS,
        pskIdentityHint: "trafficjam",
        pskCallback: (_s, id) => (id === IDENTITY ? key : null),
      },
      (socket) => {
        const peer = `${socket.remoteAddress}:${socket.remotePort}`;
        let node: string | null = null;
        this.sockets.add(socket);
        socket.setKeepAlive(true, 5000);
        socket.on("close", () => {
          this.sockets.delete(socket);
          events.onDisconnected(peer, node);
        });
        socket.on("error", () => undefined); // reported by close
        readLines(socket, workerMessageSchema, {
          onMessage: (report) => {
            node = report.node;
            events.onReport(report, peer);
            socket.write(`${JSON.stringify(events.current())}\n`);
          },
          onInvalid: (error) => events.onRefused(peer, `invalid message: ${error}`),
        });
        socket.write(`${JSON.stringify(events.current())}\n`);
      },
    );
    // A wrong key ends in the handshake: said once per peer, not kept.
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

  broadcast(message: AllowedMessage): void {
    const line = `${JSON.stringify(message)}\n`;
    for (const socket of this.sockets) socket.write(line);
  }

  get connections(): number {
    return this.sockets.size;
  }

  close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

export interface ClientOptions {
  key: Buffer;
  port: number;
  /** The managers' addresses, asked again before each attempt (managers come and go). */
  managers(): Promise<string[]>;
  onAllowed(message: AllowedMessage): void;
  onConnected(address: string): void;
  onLost(reason: string, retryInMs: number): void;
}

/** The worker's end: keeps one connection to the daemon, whichever manager it runs on. */
export class ChannelClient {
  private socket: TLSSocket | null = null;
  private report: Report | null = null;
  private stopped = false;
  private attempt = 0;
  private timer: NodeJS.Timeout | null = null;
  private answerTimer: NodeJS.Timeout | null = null;

  constructor(private readonly options: ClientOptions) {}

  start(): void {
    void this.connectAny();
  }

  /** Sends the node's report now (and again on every reconnection). */
  send(report: Report): void {
    this.report = report;
    const socket = this.socket;
    if (socket === null) return;
    socket.write(`${JSON.stringify(report)}\n`);
    this.answerTimer ??= setTimeout(
      () => socket.destroy(new Error("no answer")),
      ANSWER_TIMEOUT_MS,
    );
  }

  get connected(): boolean {
    return this.socket !== null;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.answerTimer) clearTimeout(this.answerTimer);
    this.socket?.destroy();
  }

  private async connectAny(): Promise<void> {
    if (this.stopped) return;
    let managers: string[] = [];
    let lastError = "no manager listed";
    try {
      managers = await this.options.managers();
    } catch (error) {
      lastError = `cannot list the managers: ${(error as Error).message}`;
    }
    for (const host of managers) {
      if (this.stopped) return;
      try {
        const socket = await this.open(host);
        if (this.stopped) return void socket.destroy(); // stopped while it was opening
        this.attach(socket, host);
        return;
      } catch (error) {
        lastError = `${host}: ${(error as Error).message}`;
      }
    }
    this.retry(lastError);
  }

  private open(host: string): Promise<TLSSocket> {
    return new Promise((resolve, reject) => {
      const socket = connect({
        ...TLS,
        host,
        port: this.options.port,
        checkServerIdentity: () => undefined, // no certificate: the key authenticates both ends
        pskCallback: () => ({ psk: this.options.key, identity: IDENTITY }),
        timeout: 3000,
      });
      const fail = (error: Error) => {
        socket.destroy();
        reject(error);
      };
      socket.once("error", fail);
      socket.once("timeout", () => fail(new Error("timed out")));
      socket.once("secureConnect", () => {
        socket.off("error", fail);
        socket.setTimeout(0);
        resolve(socket);
      });
    });
  }

  private attach(socket: TLSSocket, host: string): void {
    this.socket = socket;
    this.attempt = 0;
    socket.setKeepAlive(true, 5000);
    socket.on("error", () => undefined); // reported by close
    socket.on("close", () => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.answerTimer) clearTimeout(this.answerTimer);
      this.answerTimer = null;
      if (!this.stopped) this.retry(`connection to ${host} closed`);
    });
    readLines(socket, daemonMessageSchema, {
      onMessage: (message) => {
        if (this.answerTimer) clearTimeout(this.answerTimer);
        this.answerTimer = null;
        this.options.onAllowed(message);
      },
      onInvalid: (error) => this.options.onLost(`invalid message from the daemon: ${error}`, 0),
    });
    this.options.onConnected(host);
    if (this.report) this.send(this.report);
  }

  private retry(reason: string): void {
    if (this.stopped) return;
    const delay = Math.min(5000, 200 * 2 ** this.attempt++);
    this.options.onLost(reason, delay);
    this.timer = setTimeout(() => void this.connectAny(), delay);
  }
}

/** "10.0.0.1:2377" or "[fd00::1]:2377" → the host part. */
export function hostOf(address: string): string {
  const v6 = /^\[(.*)\]:\d+$/.exec(address);
  if (v6) return v6[1]!;
  const i = address.lastIndexOf(":");
  return i > 0 && !address.slice(0, i).includes(":") ? address.slice(0, i) : address;
}
