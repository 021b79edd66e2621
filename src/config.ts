// Environment → validated Config. Every error names the variable, the bad value and what is expected,
// and nothing here touches the firewall, so a bad configuration exits 2 before any change.
import { isIPv4, isIPv6 } from "node:net";
import { z } from "zod/v3";
import type { Mode } from "./drops.js";
import { DEFAULT_INSTANCE_ID, INSTANCE_ID_PATTERN } from "./instance.js";

/** Container filter keys the Docker Engine accepts on GET /containers/json. */
export const CONTAINER_FILTER_KEYS = [
  "ancestor",
  "before",
  "expose",
  "exited",
  "health",
  "id",
  "isolation",
  "is-task",
  "label",
  "name",
  "network",
  "publish",
  "since",
  "status",
  "volume",
] as const;

export type FirewallBackendChoice = "auto" | "iptables" | "nftables";

export interface WhitelistFilter {
  key: string;
  value: string;
}

export interface Config {
  network: string;
  whitelistFilter: WhitelistFilter;
  instanceId: string;
  pollIntervalMs: number;
  allowHostTraffic: boolean;
  debug: boolean;
  timeZone: string;
  swarmDaemon: boolean;
  /** "": the daemon's own image. */
  swarmImage: string;
  /** TCP port of the channel between the Swarm daemon and its workers. */
  swarmChannelPort: number;
  firewallBackend: FirewallBackendChoice;
  /** BOOT_GUARD: save the boot guard's ruleset for the next boot (ops/boot-guard.ts). */
  bootGuard: boolean;
  /** MODE: enforce, or audit (what would be dropped is logged and accepted). */
  mode: Mode;
  /** METRICS_ADDRESS: where the Prometheus metrics are served; null (default): nowhere. */
  metricsAddress: MetricsAddress | null;
}

export interface MetricsAddress {
  /** An IP address (IPv6 without brackets). */
  host: string;
  port: number;
}

/** Unset: the Swarm daemon deploys its own container's image. */
export const DEFAULT_SWARM_IMAGE = "";
export const DEFAULT_SWARM_CHANNEL_PORT = 7390;

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join("\n"));
    this.name = "ConfigError";
  }
}

const TRUE_WORDS = new Set(["true", "1", "yes", "on"]);
const FALSE_WORDS = new Set(["false", "0", "no", "off", ""]);

const strictBoolean = z
  .string()
  .optional()
  .transform((raw, ctx) => {
    const word = (raw ?? "").trim().toLowerCase();
    if (TRUE_WORDS.has(word)) return true;
    if (FALSE_WORDS.has(word)) return false;
    ctx.addIssue({
      code: "custom",
      message: "expected a boolean: true/false, 1/0, yes/no, on/off (any case), or empty for off",
    });
    return z.NEVER;
  });

const required = (what: string) =>
  z
    .string({ required_error: `is required: ${what}` })
    .trim()
    .min(1, { message: `is required: ${what}` });

const instanceId = z
  .string()
  .optional()
  .transform((raw) => (raw === undefined || raw === "" ? DEFAULT_INSTANCE_ID : raw))
  .pipe(
    z.string().regex(INSTANCE_ID_PATTERN, {
      message: "expected 1 to 24 characters from A-Z, a-z, 0-9 and _",
    }),
  );

const whitelistFilter = required(
  "one Docker container filter key=value, e.g. name=traefik or label=role=proxy",
).transform((raw, ctx): WhitelistFilter => {
  const eq = raw.indexOf("=");
  const key = eq > 0 ? raw.slice(0, eq) : "";
  const value = eq > 0 ? raw.slice(eq + 1) : "";
  if (!(CONTAINER_FILTER_KEYS as readonly string[]).includes(key) || value === "") {
    ctx.addIssue({
      code: "custom",
      message: `expected one Docker container filter key=value with key one of ${CONTAINER_FILTER_KEYS.join(", ")}`,
    });
    return z.NEVER;
  }
  return { key, value };
});

const pollInterval = z
  .string()
  .optional()
  .transform((raw, ctx) => {
    if (raw === undefined || raw.trim() === "") return 5000;
    const seconds = Number(raw);
    if (!Number.isFinite(seconds) || seconds <= 0 || seconds > 86400) {
      ctx.addIssue({
        code: "custom",
        message: "expected a positive number of seconds (at most 86400)",
      });
      return z.NEVER;
    }
    return Math.round(seconds * 1000);
  });

const timeZone = z
  .string()
  .optional()
  .transform((raw, ctx) => {
    const zone = raw === undefined || raw.trim() === "" ? "UTC" : raw.trim();
    try {
      new Intl.DateTimeFormat("en-US", { timeZone: zone });
      return zone;
    } catch {
      ctx.addIssue({
        code: "custom",
        message: "expected an IANA time zone such as UTC or Europe/Paris",
      });
      return z.NEVER;
    }
  });

const firewallBackend = z
  .string()
  .optional()
  .transform((raw) => (raw === undefined || raw.trim() === "" ? "auto" : raw.trim().toLowerCase()))
  .pipe(
    z.enum(["auto", "iptables", "nftables"], {
      errorMap: () => ({ message: "expected auto, iptables or nftables" }),
    }),
  );

const mode = z
  .string()
  .optional()
  .transform((raw) =>
    raw === undefined || raw.trim() === "" ? "enforce" : raw.trim().toLowerCase(),
  )
  .pipe(
    z.enum(["enforce", "audit"], {
      errorMap: () => ({
        message:
          "expected enforce, or audit (the rules log what they would drop, and drop nothing)",
      }),
    }),
  );

const METRICS_ADDRESS_EXPECTED =
  "expected an IP address and a TCP port, such as 127.0.0.1:9469 or [::1]:9469 (or empty: no metrics)";

const metricsAddress = z
  .string()
  .optional()
  .transform((raw, ctx): MetricsAddress | null => {
    const text = (raw ?? "").trim();
    if (text === "") return null;
    const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text);
    const host = match?.[1] ?? match?.[2] ?? "";
    const port = Number(match?.[3]);
    const hostOk = match?.[1] !== undefined ? isIPv6(host) : isIPv4(host);
    if (!match || !hostOk || !(port >= 1 && port <= 65535)) {
      ctx.addIssue({ code: "custom", message: METRICS_ADDRESS_EXPECTED });
      return z.NEVER;
    }
    return { host, port };
  });

const swarmImage = z
  .string()
  .optional()
  .transform((raw) => (raw === undefined || raw.trim() === "" ? DEFAULT_SWARM_IMAGE : raw.trim()))
  .pipe(
    // A Docker image reference: [registry/]name[:tag][@sha256:digest], no whitespace.
    z.string().regex(/^$|^[a-z0-9][a-z0-9._\-/:]*(@sha256:[a-f0-9]{64})?$/, {
      message: "expected a Docker image reference such as kaysond/trafficjam:tag@sha256:<digest>",
    }),
  );

const dockerHost = z
  .string()
  .optional()
  .refine((raw) => raw === undefined || raw === "" || /^(unix|tcp|https?):\/\/\S*$/.test(raw), {
    message:
      "expected a Docker endpoint unix:///path, tcp://host:port, http:// or https:// (such as unix:///var/run/docker.sock or tcp://proxy:2375)",
  });

const daemonSchema = z.object({
  NETWORK: required("the name or ID of the Docker network to protect"),
  WHITELIST_FILTER: whitelistFilter,
  INSTANCE_ID: instanceId,
  POLL_INTERVAL: pollInterval,
  ALLOW_HOST_TRAFFIC: strictBoolean,
  DEBUG: strictBoolean,
  TZ: timeZone,
  SWARM_DAEMON: strictBoolean,
  SWARM_IMAGE: swarmImage,
  SWARM_CHANNEL_PORT: z
    .string()
    .optional()
    .transform((raw) =>
      raw === undefined || raw.trim() === "" ? String(DEFAULT_SWARM_CHANNEL_PORT) : raw.trim(),
    )
    .pipe(
      z
        .string()
        .regex(/^\d{1,5}$/, { message: "expected a TCP port number, 1 to 65535" })
        .transform(Number)
        .pipe(
          z
            .number()
            .int()
            .min(1, "expected a TCP port number, 1 to 65535")
            .max(65535, "expected a TCP port number, 1 to 65535"),
        ),
    ),
  FIREWALL_BACKEND: firewallBackend,
  DOCKER_HOST: dockerHost,
  BOOT_GUARD: strictBoolean,
  MODE: mode,
  METRICS_ADDRESS: metricsAddress,
});

/** The variables the daemon's configuration reads (the README's table documents each). */
export const CONFIG_VARIABLES: readonly string[] = Object.keys(daemonSchema.shape);

type Env = Record<string, string | undefined>;

function describeIssues(error: z.ZodError, env: Env): string[] {
  return error.issues.map((issue) => {
    const variable = String(issue.path[0] ?? "environment");
    const value = env[variable];
    const shown = value === undefined ? "unset" : JSON.stringify(value);
    return `${variable}=${shown}: ${issue.message}`;
  });
}

/** Parses the whole daemon configuration; throws ConfigError listing every problem. */
export function parseConfig(env: Env): Config {
  const parsed = daemonSchema.safeParse(env);
  if (!parsed.success) throw new ConfigError(describeIssues(parsed.error, env));
  const c = parsed.data;
  return {
    network: c.NETWORK,
    whitelistFilter: c.WHITELIST_FILTER,
    instanceId: c.INSTANCE_ID,
    pollIntervalMs: c.POLL_INTERVAL,
    allowHostTraffic: c.ALLOW_HOST_TRAFFIC,
    debug: c.DEBUG,
    timeZone: c.TZ,
    swarmDaemon: c.SWARM_DAEMON,
    swarmImage: c.SWARM_IMAGE,
    swarmChannelPort: c.SWARM_CHANNEL_PORT,
    firewallBackend: c.FIREWALL_BACKEND,
    bootGuard: c.BOOT_GUARD,
    mode: c.MODE,
    metricsAddress: c.METRICS_ADDRESS,
  };
}

export interface ClearConfig {
  instanceId: string;
  debug: boolean;
  timeZone: string;
  swarmDaemon: boolean;
}

/** `--clear` needs only the instance (and logging) variables. */
export function parseClearConfig(env: Env): ClearConfig {
  const parsed = z
    .object({
      INSTANCE_ID: instanceId,
      DEBUG: strictBoolean,
      TZ: timeZone,
      SWARM_DAEMON: strictBoolean,
    })
    .safeParse(env);
  if (!parsed.success) throw new ConfigError(describeIssues(parsed.error, env));
  return {
    instanceId: parsed.data.INSTANCE_ID,
    debug: parsed.data.DEBUG,
    timeZone: parsed.data.TZ,
    swarmDaemon: parsed.data.SWARM_DAEMON,
  };
}
