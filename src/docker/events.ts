// Docker's event stream, kept open: reconnects with backoff and reports each (re)connection,
// after which the caller must resync fully (events may have been missed meanwhile).
import type { Readable } from "node:stream";
import type { Docker } from "./client.js";

export interface DockerEvent {
  Type?: string;
  Action?: string;
  Actor?: { ID?: string; Attributes?: Record<string, string> };
  timeNano?: number;
}

export interface EventWatcherHandlers {
  onEvent(event: DockerEvent): void;
  /** Stream (re)opened: a full resync is needed. */
  onConnected(reconnect: boolean): void;
  onLost(error: Error | null, retryInMs: number): void;
}

const FILTERS = {
  type: ["container", "network"] as Array<"container" | "network">,
  // rename: a name= whitelist may start or stop matching.
  event: ["start", "die", "destroy", "rename", "connect", "disconnect", "create"],
};

export class EventWatcher {
  private stream: Readable | null = null;
  private stopped = false;
  private retryTimer: NodeJS.Timeout | null = null;
  private failures = 0;
  private connectedOnce = false;

  constructor(
    private readonly docker: Docker,
    private readonly handlers: EventWatcherHandlers,
  ) {}

  start(): void {
    void this.connect();
  }

  stop(): void {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.stream?.destroy();
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    let stream: Readable;
    try {
      stream = (await this.docker.getEvents({ filters: FILTERS })) as unknown as Readable;
    } catch (error) {
      this.scheduleRetry(error as Error);
      return;
    }
    if (this.stopped) {
      stream.destroy();
      return;
    }
    this.stream = stream;
    this.failures = 0;
    this.handlers.onConnected(this.connectedOnce);
    this.connectedOnce = true;
    let buffer = "";
    let lost = false;
    const onLost = (error: Error | null) => {
      if (lost || this.stopped) return;
      lost = true;
      stream.destroy();
      this.scheduleRetry(error);
    };
    stream.setEncoding("utf8");
    stream.on("data", (chunk: string) => {
      buffer += chunk;
      let newline: number;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).trim();
        buffer = buffer.slice(newline + 1);
        if (line === "") continue;
        try {
          this.handlers.onEvent(JSON.parse(line) as DockerEvent);
        } catch {
          // a malformed line only costs us an event; the periodic resync covers it
        }
      }
    });
    stream.on("error", (error: Error) => onLost(error));
    stream.on("end", () => onLost(null));
    stream.on("close", () => onLost(null));
  }

  private scheduleRetry(error: Error | null): void {
    if (this.stopped) return;
    const delay = Math.min(5000, 100 * 2 ** this.failures);
    this.failures++;
    this.handlers.onLost(error, delay);
    this.retryTimer = setTimeout(() => void this.connect(), delay);
  }
}
