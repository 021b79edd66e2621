// Docker's event stream, kept open: reconnects with backoff and reports each (re)connection,
// after which the caller must resync fully (events may have been missed meanwhile).
import type { EngineClient, EngineEvent, EngineEventStream } from "./engine-api.js";

export type DockerEvent = EngineEvent;

export interface EventWatcherHandlers {
  onEvent(event: DockerEvent): void;
  /** Stream (re)opened: a full resync is needed. */
  onConnected(reconnect: boolean): void;
  onLost(error: Error | null, retryInMs: number): void;
  /** A line of the stream that is not an event: skipped (the periodic resync covers it). */
  onMalformed?(error: Error): void;
}

export class EventWatcher {
  private stream: EngineEventStream | null = null;
  private stopped = false;
  private retryTimer: NodeJS.Timeout | null = null;
  private failures = 0;
  private connectedOnce = false;

  constructor(
    private readonly client: EngineClient,
    private readonly handlers: EventWatcherHandlers,
    /** Docker's event filters (see filter-events.ts for the daemon's). */
    private readonly filters: Record<string, string[]>,
  ) {}

  start(): void {
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.stream?.stop();
  }

  private connect(): void {
    if (this.stopped) return;
    const stream = this.client.events(this.filters);
    this.stream = stream;
    stream.on("open", () => {
      this.failures = 0;
      this.handlers.onConnected(this.connectedOnce);
      this.connectedOnce = true;
    });
    stream.on("event", (event) => this.handlers.onEvent(event));
    stream.on("malformed", (error) => this.handlers.onMalformed?.(error));
    stream.on("end", (error) => this.scheduleRetry(error));
  }

  private scheduleRetry(error: Error | null): void {
    if (this.stopped) return;
    const delay = Math.min(5000, 100 * 2 ** this.failures);
    this.failures++;
    this.handlers.onLost(error, delay);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }
}
