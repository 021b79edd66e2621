// A minimal Docker Engine API client for the few requests TrafficJam makes, on Node's own
// http/https. It replaces dockerode, whose dependencies (gRPC, protobuf, ssh2…) cost ~0.3 s of
// CPU to load for a handful of GETs. On one host it only ever sends GET, so a read-only socket
// proxy in front of the Engine is enough (the Swarm daemon alone writes: its worker service and
// key, src/swarm/swarm-api.ts), and it validates the Engine's JSON here, keeping only what is read.
import { EventEmitter } from "node:events";
import { readFileSync } from "node:fs";
import { Agent as HttpAgent, request as httpRequest, STATUS_CODES } from "node:http";
import type { ClientRequest, IncomingMessage, RequestOptions } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { homedir } from "node:os";
import { join } from "node:path";
import { text } from "node:stream/consumers";
import { z } from "zod/v3";

// ----- Where the Engine is: DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH as Docker reads them

export const DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock";

export type EngineEndpoint =
  | { protocol: "unix"; socketPath: string }
  | { protocol: "http"; host: string; port: number }
  /** `certPath` null: the server is checked against the system's CAs, with no client certificate. */
  | { protocol: "https"; host: string; port: number; certPath: string | null };

/**
 * unix:///path; tcp://host[:port], over TLS when DOCKER_TLS_VERIFY is non-empty (any value, as for
 * Docker) with ca.pem, cert.pem and key.pem from DOCKER_CERT_PATH (default ~/.docker); http:// and
 * https:// as explicit forms of either. Throws, naming DOCKER_HOST, for anything else.
 */
export function parseDockerHost(env: NodeJS.ProcessEnv = process.env): EngineEndpoint {
  const raw = env.DOCKER_HOST?.trim() || `unix://${DEFAULT_DOCKER_SOCKET}`;
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(raw)?.[1]?.toLowerCase();
  const tlsVerify = (env.DOCKER_TLS_VERIFY ?? "") !== "";
  const certPath = env.DOCKER_CERT_PATH || join(homedir(), ".docker");
  switch (scheme) {
    case "unix":
      return { protocol: "unix", socketPath: raw.slice("unix://".length) || DEFAULT_DOCKER_SOCKET };
    case "tcp":
      return tlsVerify
        ? { protocol: "https", ...hostAndPort(raw, 2376), certPath }
        : { protocol: "http", ...hostAndPort(raw, 2375) };
    case "http":
      // Going plain when TLS was asked for would be a silent downgrade.
      if (tlsVerify)
        throw dockerHostError(raw, "http:// while DOCKER_TLS_VERIFY asks for TLS: use tcp://");
      return { protocol: "http", ...hostAndPort(raw, 2375) };
    case "https":
      return {
        protocol: "https",
        ...hostAndPort(raw, 2376),
        certPath: tlsVerify ? certPath : null,
      };
    default:
      throw dockerHostError(
        raw,
        `${scheme ? `${scheme}:// is not supported` : "no scheme"}: ` +
          "expected unix:///path, tcp://host:port, http://host:port or https://host:port",
      );
  }
}

export function describeEngineEndpoint(endpoint: EngineEndpoint): string {
  if (endpoint.protocol === "unix") return `unix://${endpoint.socketPath}`;
  const host = endpoint.host.includes(":") ? `[${endpoint.host}]` : endpoint.host;
  return `${endpoint.protocol}://${host}:${endpoint.port}`;
}

function dockerHostError(raw: string, problem: string): Error {
  return new Error(`DOCKER_HOST=${raw}: ${problem}`);
}

function hostAndPort(raw: string, defaultPort: number): { host: string; port: number } {
  const authority = raw.slice(raw.indexOf("://") + 3);
  // Docker reads an empty host as localhost (tcp://:2375). A scheme without a default port keeps
  // an explicit :80 or :443, which http:// would drop.
  let url: URL;
  try {
    url = new URL(
      `tcp://${authority === "" || authority.startsWith(":") ? "localhost" : ""}${authority}`,
    );
  } catch {
    throw dockerHostError(raw, "expected host[:port]");
  }
  if (url.username || url.password || url.search || url.hash || !["", "/"].includes(url.pathname))
    throw dockerHostError(raw, "expected host[:port], without path, credentials or query");
  return {
    host: url.hostname.replace(/^\[(.*)\]$/, "$1") || "localhost",
    port: url.port ? Number(url.port) : defaultPort,
  };
}

function tlsFiles(certPath: string): { ca: Buffer; cert: Buffer; key: Buffer } {
  const read = (name: string): Buffer => {
    const path = join(certPath, name);
    try {
      return readFileSync(path);
    } catch (error) {
      throw new Error(
        `DOCKER_TLS_VERIFY is set but ${path} cannot be read (DOCKER_CERT_PATH names the folder ` +
          `holding ca.pem, cert.pem and key.pem): ${errorMessage(error)}`,
        { cause: error },
      );
    }
  };
  return { ca: read("ca.pem"), cert: read("cert.pem"), key: read("key.pem") };
}

// ----- Errors

/** The Engine, or a proxy in front of it, answered with an error status. */
export class EngineError extends Error {
  override readonly name = "EngineError";
  constructor(
    /** What was asked, e.g. "GET /v1.41/containers/json". */
    readonly endpoint: string,
    readonly statusCode: number,
    /** The Engine's `{"message": ...}`, or the start of whatever else a proxy answered. */
    readonly engineMessage: string,
  ) {
    super(`${endpoint}: ${statusCode} ${engineMessage}`);
  }
}

/** The answer is not the JSON expected: `problem` names the path of what is wrong in it. */
export class InvalidEngineResponseError extends Error {
  override readonly name = "InvalidEngineResponseError";
  constructor(
    readonly endpoint: string,
    readonly problem: string,
  ) {
    super(`${endpoint}: unexpected answer: ${problem}`);
  }
}

export class EngineTimeoutError extends Error {
  override readonly name = "EngineTimeoutError";
  constructor(
    readonly endpoint: string,
    readonly timeoutMs: number,
  ) {
    super(`${endpoint}: no complete answer within ${timeoutMs} ms`);
  }
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

const engineMessageSchema = z.object({ message: z.string() });

function engineError(endpoint: string, statusCode: number, body: string): EngineError {
  return new EngineError(endpoint, statusCode, messageOf(body) || STATUS_CODES[statusCode] || "");
}

function messageOf(body: string): string {
  try {
    const parsed = engineMessageSchema.safeParse(JSON.parse(body));
    if (parsed.success) return parsed.data.message;
  } catch {
    // not JSON: a proxy's own page, quoted below
  }
  return body.replace(/\s+/g, " ").trim().slice(0, 200);
}

/** The Engine refuses the API version in the path (it was upgraded or downgraded meanwhile). */
function refusesApiVersion(error: unknown): boolean {
  return (
    error instanceof EngineError &&
    error.statusCode === 400 &&
    /client version \S+ is too (old|new)/i.test(error.engineMessage)
  );
}

// ----- The Engine's JSON, reduced to what TrafficJam reads (unknown fields are stripped)

/** A map the Engine sends as null, or leaves out, when empty: read as {}. */
function mapOf<T extends z.ZodType>(value: T) {
  return z
    .record(z.string(), value)
    .nullish()
    .transform((map): Record<string, z.output<T>> => map ?? {});
}

/** A list the Engine sends as null, or leaves out, when empty: read as []. */
function listOf<T extends z.ZodType>(item: T) {
  return z
    .array(item)
    .nullish()
    .transform((list): z.output<T>[] => list ?? []);
}

/** An object the Engine may send as null or leave out: read as `empty`. */
function objectOr<T extends z.ZodType>(schema: T, empty: z.output<T>) {
  return schema.nullish().transform((value): z.output<T> => value ?? empty);
}

const optionalText = z.string().optional();

const endpointSchema = z.object({
  NetworkID: optionalText,
  EndpointID: optionalText,
  MacAddress: optionalText,
  IPAddress: optionalText,
  GlobalIPv6Address: optionalText,
});

/** Network name → endpoint. Entries may be null too (a pointer in the Engine): dropped. */
const endpointsByNetwork = z
  .record(z.string(), endpointSchema.nullable())
  .nullish()
  .transform((map): Record<string, EngineEndpointSettings> =>
    Object.fromEntries(
      Object.entries(map ?? {}).flatMap(([name, endpoint]) => (endpoint ? [[name, endpoint]] : [])),
    ),
  );

const networkMemberSchema = z.object({
  Name: optionalText,
  EndpointID: optionalText,
  MacAddress: optionalText,
  /** With the prefix length: "172.18.0.2/16". */
  IPv4Address: optionalText,
  IPv6Address: optionalText,
});

const networkSchema = z.object({
  Id: z.string(),
  Name: z.string(),
  Driver: optionalText,
  Options: mapOf(z.string()),
  IPAM: z.object({ Config: listOf(z.object({ Subnet: optionalText })) }).optional(),
  /** Container id → its endpoint: the network's members on this host. */
  Containers: mapOf(networkMemberSchema),
});

const containerSummarySchema = z.object({
  Id: z.string(),
  Names: listOf(z.string()),
  NetworkSettings: objectOr(z.object({ Networks: endpointsByNetwork }), { Networks: {} }),
});

const containerSchema = z.object({
  Id: z.string(),
  Name: z.string(),
  State: z.object({ Running: z.boolean(), Pid: z.number().int() }),
  Config: objectOr(z.object({ Image: optionalText, Labels: mapOf(z.string()) }), { Labels: {} }),
  NetworkSettings: objectOr(z.object({ SandboxKey: optionalText, Networks: endpointsByNetwork }), {
    Networks: {},
  }),
});

const versionSchema = z.object({
  Version: z.string(),
  ApiVersion: z.string(),
  MinAPIVersion: optionalText,
});

const eventSchema = z.object({
  Type: z.string(),
  Action: z.string(),
  Actor: z.object({ ID: z.string(), Attributes: mapOf(z.string()) }),
  timeNano: z.number().optional(),
});

export type EngineEndpointSettings = z.output<typeof endpointSchema>;
export type EngineNetworkMember = z.output<typeof networkMemberSchema>;
export type EngineNetwork = z.output<typeof networkSchema>;
export type EngineContainerSummary = z.output<typeof containerSummarySchema>;
export type EngineContainer = z.output<typeof containerSchema>;
export type EngineVersion = z.output<typeof versionSchema>;
export type EngineEvent = z.output<typeof eventSchema>;
/** As the Engine takes them: key → accepted values, e.g. { label: ["a=b"], status: ["running"] }. */
export type EngineFilters = Record<string, string[]>;

type Parsed<T> = { ok: true; data: T } | { ok: false; error: InvalidEngineResponseError };

function parseEngineJson<T>(
  endpoint: string,
  body: string,
  schema: z.ZodType<T, z.ZodTypeDef, unknown>,
): Parsed<T> {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    const start = body.replace(/\s+/g, " ").trim().slice(0, 80);
    return { ok: false, error: new InvalidEngineResponseError(endpoint, `not JSON: ${start}`) };
  }
  const result = schema.safeParse(json);
  if (result.success) return { ok: true, data: result.data };
  return {
    ok: false,
    error: new InvalidEngineResponseError(endpoint, describeIssues(result.error)),
  };
}

function describeIssues(error: z.ZodError): string {
  const shown = error.issues
    .slice(0, 3)
    .map((issue) => `${formatPath(issue.path) || "(top)"}: ${issue.message}`);
  const more = error.issues.length - shown.length;
  return shown.join("; ") + (more > 0 ? ` (and ${more} more)` : "");
}

/** [3].NetworkSettings.Networks["my-net"].IPAddress */
function formatPath(path: PropertyKey[]): string {
  return path
    .map((key, index) => {
      if (typeof key === "number") return `[${key}]`;
      const name = String(key);
      if (!/^[A-Za-z_$][\w$]*$/.test(name)) return `[${JSON.stringify(name)}]`;
      return index === 0 ? name : `.${name}`;
    })
    .join("");
}

// ----- API version: negotiated, since a pinned one breaks on Engines that dropped it

type ApiVersion = readonly [major: number, minor: number];

/** The API version the schemas above were written against (Docker 20.10). */
const NEWEST_CHECKED: ApiVersion = [1, 41];
export const NEWEST_CHECKED_API_VERSION = `${NEWEST_CHECKED[0]}.${NEWEST_CHECKED[1]}`;

function parseApiVersion(raw: string | undefined): ApiVersion | null {
  const match = /^(\d+)\.(\d+)$/.exec(raw ?? "");
  return match ? [Number(match[1]), Number(match[2])] : null;
}

function isOlder(a: ApiVersion, b: ApiVersion): boolean {
  return a[0] !== b[0] ? a[0] < b[0] : a[1] < b[1];
}

/**
 * The Engine's newest version capped at the one checked here, but never below the Engine's oldest
 * (Docker 29 refuses anything before 1.44). Null when the Engine's answer gives no version.
 */
export function chooseApiVersion(version: EngineVersion): string | null {
  const newest = parseApiVersion(version.ApiVersion);
  if (!newest) return null;
  let chosen = isOlder(newest, NEWEST_CHECKED) ? newest : NEWEST_CHECKED;
  const oldest = parseApiVersion(version.MinAPIVersion);
  if (oldest && isOlder(chosen, oldest)) chosen = oldest;
  return `${chosen[0]}.${chosen[1]}`;
}

function prefixFor(version: EngineVersion): string {
  const chosen = chooseApiVersion(version);
  return chosen ? `/v${chosen}` : "";
}

// ----- The client

export interface EngineClientOptions {
  /** Per request, until its whole answer is read; for the event stream, until the Engine answers. */
  timeoutMs?: number;
  /**
   * "1.41" pins the API version; null sends unversioned paths (the Engine's newest). By default it
   * is negotiated on first use from GET /version, or unversioned when a proxy refuses /version.
   */
  apiVersion?: string | null;
}

export const DEFAULT_TIMEOUT_MS = 10_000;
export { mapOf, listOf };

interface RawResponse {
  statusCode: number;
  body: string;
}

/** "GET /v1.41/containers/json", without the query. */
function describeRequest(path: string, method = "GET"): string {
  return `${method} ${path.split("?")[0]}`;
}

function withQuery(path: string, params: Record<string, string | undefined>): string {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params))
    if (value !== undefined) search.set(key, value);
  const query = search.toString();
  return query ? `${path}?${query}` : path;
}

/** The Engine's filters parameter: the JSON of the map, left out when there is nothing to filter. */
function filtersParam(filters: EngineFilters | undefined): string | undefined {
  return filters && Object.keys(filters).length > 0 ? JSON.stringify(filters) : undefined;
}

function isSuccess(statusCode: number): boolean {
  return statusCode >= 200 && statusCode < 300;
}

function isConnectionReset(error: Error): boolean {
  return "code" in error && error.code === "ECONNRESET";
}

export function createEngineClient(
  env: NodeJS.ProcessEnv = process.env,
  options: EngineClientOptions = {},
): EngineClient {
  return new EngineClient(parseDockerHost(env), options);
}

export class EngineClient {
  /** Kept-alive connections: a pass makes several requests, every few seconds. */
  private readonly agent: HttpAgent;
  private readonly timeoutMs: number;
  private readonly pinnedApiVersion: string | null | undefined;
  /** The path prefix, "/v1.41" or "", once negotiated (or while it is). */
  private apiPrefixPromise: Promise<string> | null = null;

  /** Reads the TLS files now, so that a missing one is reported at startup. */
  constructor(
    readonly endpoint: EngineEndpoint,
    options: EngineClientOptions = {},
  ) {
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.pinnedApiVersion = options.apiVersion;
    this.agent =
      endpoint.protocol === "https"
        ? new HttpsAgent({
            keepAlive: true,
            ...(endpoint.certPath === null ? {} : tlsFiles(endpoint.certPath)),
          })
        : new HttpAgent({ keepAlive: true });
  }

  describe(): string {
    return describeEngineEndpoint(this.endpoint);
  }

  /** Resolves when the Engine answers GET /_ping. */
  async ping(): Promise<void> {
    const response = await this.send("/_ping");
    if (!isSuccess(response.statusCode))
      throw engineError("GET /_ping", response.statusCode, response.body);
  }

  async version(): Promise<EngineVersion> {
    const version = await this.getJson("/version", versionSchema);
    this.apiPrefixPromise ??= Promise.resolve(prefixFor(version));
    return version;
  }

  /** Null when the Engine knows no such network. */
  inspectNetwork(idOrName: string): Promise<EngineNetwork | null> {
    return this.getUnlessMissing(`/networks/${encodeURIComponent(idOrName)}`, networkSchema);
  }

  /**
   * Any request, for the Swarm calls (src/swarm/swarm-api.ts): `body` sent as JSON, the answer
   * validated by `schema` (null: not read). A 404 resolves to null.
   */
  async call<T>(
    method: "GET" | "POST" | "DELETE",
    path: string,
    schema: z.ZodType<T, z.ZodTypeDef, unknown> | null,
    body?: unknown,
    query: Record<string, string | undefined> = {},
  ): Promise<T | null> {
    const full = (await this.apiPrefix()) + withQuery(path, query);
    const endpoint = describeRequest(full, method);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const response = await this.send(full, method === "GET", method, payload);
    if (response.statusCode === 404) return null;
    if (!isSuccess(response.statusCode))
      throw engineError(endpoint, response.statusCode, response.body);
    if (schema === null) return null;
    const parsed = parseEngineJson(endpoint, response.body, schema);
    if (!parsed.ok) throw parsed.error;
    return parsed.data;
  }

  /** Running containers matching every filter key (any of a key's values). */
  listContainers(filters?: EngineFilters): Promise<EngineContainerSummary[]> {
    const path = withQuery("/containers/json", { filters: filtersParam(filters) });
    return this.getVersioned(path, z.array(containerSummarySchema));
  }

  /** Null when the Engine knows no such container (any more). */
  inspectContainer(id: string): Promise<EngineContainer | null> {
    return this.getUnlessMissing(`/containers/${encodeURIComponent(id)}/json`, containerSchema);
  }

  /**
   * Events from now on (or from `since`: Unix seconds, fractions allowed, or RFC 3339), until
   * stopped. No timeout once the Engine has answered: the stream may stay silent for hours.
   */
  events(filters?: EngineFilters, since?: number | string): EngineEventStream {
    const path = withQuery("/events", {
      filters: filtersParam(filters),
      since: since === undefined ? undefined : String(since),
    });
    const stream = new EngineEventStream(
      this.apiPrefix().then((prefix) => prefix + path),
      (fullPath) => this.request(fullPath),
      this.timeoutMs,
    );
    stream.on("end", (error) => {
      if (refusesApiVersion(error)) this.apiPrefixPromise = null; // the next stream renegotiates
    });
    return stream;
  }

  /** Closes every connection, event streams included. */
  close(): void {
    this.agent.destroy();
  }

  private apiPrefix(): Promise<string> {
    if (this.pinnedApiVersion !== undefined)
      return Promise.resolve(this.pinnedApiVersion === null ? "" : `/v${this.pinnedApiVersion}`);
    this.apiPrefixPromise ??= this.negotiateApiPrefix();
    return this.apiPrefixPromise;
  }

  private async negotiateApiPrefix(): Promise<string> {
    try {
      return prefixFor(await this.getJson("/version", versionSchema));
    } catch (error) {
      // Refused (a proxy denying /version) or not a version: unversioned paths, as dockerode sent.
      const refused = error instanceof EngineError && error.statusCode < 500;
      if (refused || error instanceof InvalidEngineResponseError) return "";
      this.apiPrefixPromise = null; // unreachable or failing: ask again next time
      throw error;
    }
  }

  private async getUnlessMissing<T>(
    path: string,
    schema: z.ZodType<T, z.ZodTypeDef, unknown>,
  ): Promise<T | null> {
    try {
      return await this.getVersioned(path, schema);
    } catch (error) {
      if (error instanceof EngineError && error.statusCode === 404) return null;
      throw error;
    }
  }

  private async getVersioned<T>(
    path: string,
    schema: z.ZodType<T, z.ZodTypeDef, unknown>,
    retry = true,
  ): Promise<T> {
    const prefix = await this.apiPrefix();
    try {
      return await this.getJson(prefix + path, schema);
    } catch (error) {
      if (!refusesApiVersion(error) || this.pinnedApiVersion !== undefined) throw error;
      this.apiPrefixPromise = null;
      if (!retry) throw error;
      return this.getVersioned(path, schema, false);
    }
  }

  private async getJson<T>(path: string, schema: z.ZodType<T, z.ZodTypeDef, unknown>): Promise<T> {
    const response = await this.send(path);
    const endpoint = describeRequest(path);
    if (!isSuccess(response.statusCode))
      throw engineError(endpoint, response.statusCode, response.body);
    const parsed = parseEngineJson(endpoint, response.body, schema);
    if (!parsed.ok) throw parsed.error;
    return parsed.data;
  }

  /** GET (or `method`) `path`, whole answer read, within the timeout. */
  private send(
    path: string,
    mayResend = true,
    method = "GET",
    body?: string,
  ): Promise<RawResponse> {
    return new Promise((resolve, reject) => {
      const request = this.request(path, method, body);
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        reject(new EngineTimeoutError(describeRequest(path, method), this.timeoutMs));
        request.destroy();
      }, this.timeoutMs);
      request.on("response", (response) => {
        text(response)
          .then((body) => resolve({ statusCode: response.statusCode ?? 0, body }), reject)
          .finally(() => clearTimeout(timer));
      });
      request.on("error", (error) => {
        clearTimeout(timer);
        if (timedOut) return;
        // A kept-alive connection the Engine closed as it was being reused: once more, anew.
        if (mayResend && request.reusedSocket && isConnectionReset(error))
          resolve(this.send(path, false, method, body));
        else reject(error);
      });
      request.end(body);
    });
  }

  private request(path: string, method = "GET", body?: string): ClientRequest {
    const options: RequestOptions = {
      method,
      path,
      agent: this.agent,
      headers: {
        Accept: "application/json",
        ...(body === undefined
          ? {}
          : { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) }),
      },
    };
    const endpoint = this.endpoint;
    if (endpoint.protocol === "unix")
      return httpRequest({ ...options, socketPath: endpoint.socketPath });
    const target = { ...options, host: endpoint.host, port: endpoint.port };
    return endpoint.protocol === "https" ? httpsRequest(target) : httpRequest(target);
  }
}

// ----- The event stream: newline-delimited JSON, for as long as it lasts

export interface EngineEventStreamEvents {
  /** The Engine accepted the request: every event from now on is delivered. */
  open: [];
  event: [event: EngineEvent];
  /** A line that is not an event as expected; the stream goes on. */
  malformed: [error: InvalidEngineResponseError];
  /**
   * The stream is over: `error`, or null when the Engine ended it. Emitted once, also when the
   * stream could not open (unreachable, refused), and never after stop().
   */
  end: [error: Error | null];
}

export class EngineEventStream extends EventEmitter<EngineEventStreamEvents> {
  private request: ClientRequest | null = null;
  private answerTimer: NodeJS.Timeout | undefined;
  private over = false;

  /** See EngineClient.events(). */
  constructor(
    path: Promise<string>,
    send: (path: string) => ClientRequest,
    private readonly answerTimeoutMs: number,
  ) {
    super();
    path.then(
      (fullPath) => this.open(send, fullPath),
      (error: unknown) => this.finish(asError(error)),
    );
  }

  stop(): void {
    this.over = true;
    clearTimeout(this.answerTimer);
    this.request?.destroy();
  }

  private open(send: (path: string) => ClientRequest, path: string): void {
    if (this.over) return; // stopped while the API version was being negotiated
    let request: ClientRequest;
    try {
      request = send(path);
    } catch (error) {
      this.finish(asError(error));
      return;
    }
    this.watch(request, describeRequest(path));
  }

  private watch(request: ClientRequest, endpoint: string): void {
    this.request = request;
    // Only until the Engine answers, which it does at once (headers flushed before any event).
    this.answerTimer = setTimeout(
      () => request.destroy(new EngineTimeoutError(endpoint, this.answerTimeoutMs)),
      this.answerTimeoutMs,
    );
    request.on("error", (error) => this.finish(error));
    request.on("response", (response) => {
      clearTimeout(this.answerTimer);
      this.receive(response, endpoint);
    });
    request.end();
  }

  private receive(response: IncomingMessage, endpoint: string): void {
    const statusCode = response.statusCode ?? 0;
    if (statusCode !== 200) {
      text(response).then(
        (body) => this.finish(engineError(endpoint, statusCode, body)),
        (error: unknown) => this.finish(asError(error)),
      );
      return;
    }
    this.emit("open");
    // Decoded as UTF-8 across chunk boundaries; a line may also span chunks.
    response.setEncoding("utf8");
    let partialLine = "";
    response.on("data", (chunk: string) => {
      const lines = (partialLine + chunk).split("\n");
      partialLine = lines.pop() ?? "";
      for (const line of lines) this.deliver(line, endpoint);
    });
    response.on("end", () => {
      this.deliver(partialLine, endpoint);
      this.finish(null);
    });
    response.on("error", (error) => this.finish(error));
    response.on("close", () => this.finish(new Error(`${endpoint}: connection closed`)));
  }

  private deliver(line: string, endpoint: string): void {
    if (this.over || line.trim() === "") return;
    const parsed = parseEngineJson(endpoint, line, eventSchema);
    if (parsed.ok) this.emit("event", parsed.data);
    else this.emit("malformed", parsed.error);
  }

  private finish(error: Error | null): void {
    if (this.over) return;
    this.over = true;
    clearTimeout(this.answerTimer);
    this.request?.destroy();
    this.emit("end", error);
  }
}
