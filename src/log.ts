// One JSON line per meaningful event, timestamped in the configured time zone. Every line carries
// a stable `event` field (the vocabulary below, documented in docs/logs.md): tests, the bench and
// users' alerting match on it, so rewording a message breaks nothing.
// Written here rather than with a logging library: a few lines a minute need JSON.stringify and
// one write, and a library's load (pino: ~40 ms and megabytes of a daemon that runs all day) was
// the largest part of the start-up left.

export type LogEvent =
  | "daemon.starting"
  | "daemon.stopping"
  | "docker.connected"
  | "docker.unreachable"
  | "docker.event"
  | "docker.events.lost"
  | "docker.events.reconnected"
  | "docker.events.malformed"
  | "host.sysctls.enabled"
  | "host.bridge-netfilter.off"
  | "host.bridge-netfilter.on"
  | "host.monitor.unavailable"
  | "backend.chosen"
  | "network.missing"
  | "network.appeared"
  | "network.unprotectable"
  | "whitelist.changed"
  | "port.unbound"
  | "gateway.unknown"
  | "port.retry"
  | "rules.applied"
  | "rules.repaired"
  | "rules.verified"
  | "rules.view.stale"
  | "rules.cleared"
  | "rules.clear.failed"
  | "reconcile.failed"
  | "allowance.revoked"
  | "flows.delete.failed"
  | "flows.cut"
  | "health.state.unwritable"
  | "mode.audit"
  | "mode.changed"
  | "attempt.blocked"
  | "attempt.audited"
  | "attempts.suppressed"
  | "attempts.reading"
  | "attempts.unavailable"
  | "metrics.listening"
  | "metrics.failed"
  | "boot.guard.opened"
  | "boot.guard.saved"
  | "boot.guard.failed"
  | "boot.guard.removed"
  | "swarm.not-manager"
  | "swarm.key.created"
  | "swarm.service.created"
  | "swarm.service.updated"
  | "swarm.service.removed"
  | "swarm.channel.listening"
  | "swarm.channel.refused"
  | "swarm.worker.connected"
  | "swarm.worker.disconnected"
  | "swarm.allowed.changed"
  | "swarm.sync.failed"
  | "swarm.clear.incomplete"
  | "swarm.node.inactive"
  | "swarm.state.loaded"
  | "swarm.state.unreadable"
  | "swarm.state.unwritable"
  | "swarm.channel.connected"
  | "swarm.channel.lost"
  | "swarm.allowed.received"
  | "swarm.allowed.settled"
  | "swarm.allowed.incomplete"
  | "swarm.allowed.rejected"
  | "swarm.node.guarded"
  | "swarm.netns.unwatched"
  | "swarm.underlay.ipv6"
  | "swarm.report.rejected";

type Fields = Record<string, unknown>;
type Emit = (event: LogEvent, msg: string, fields?: Fields) => void;

export interface Log {
  debug: Emit;
  info: Emit;
  warn: Emit;
  error: Emit;
}

const formatters = new Map<string, Intl.DateTimeFormat>();

/** One formatter per time zone: building one costs more than formatting a line. */
function formatterFor(timeZone: string): Intl.DateTimeFormat {
  let formatter = formatters.get(timeZone);
  if (!formatter) {
    formatter = new Intl.DateTimeFormat("en-US", {
      timeZone,
      hourCycle: "h23",
      year: "numeric",
      month: "2-digit",
      day: "2-digit",
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
      timeZoneName: "longOffset",
    });
    formatters.set(timeZone, formatter);
  }
  return formatter;
}

/** ISO-8601 local time in `timeZone`, with its UTC offset, e.g. 2026-11-28T14:03:07.123-08:00. */
export function formatTimestamp(date: Date, timeZone: string): string {
  const parts = formatterFor(timeZone).formatToParts(date);
  const part = (type: Intl.DateTimeFormatPartTypes) =>
    parts.find((p) => p.type === type)?.value ?? "";
  const offset = part("timeZoneName").replace(/^GMT/, "") || "+00:00";
  const ms = String(date.getMilliseconds()).padStart(3, "0");
  return `${part("year")}-${part("month")}-${part("day")}T${part("hour")}:${part("minute")}:${part("second")}.${ms}${offset === "" ? "Z" : offset}`;
}

type Level = "debug" | "info" | "warn" | "error";
const SEVERITY: Record<Level, number> = { debug: 20, info: 30, warn: 40, error: 50 };

/** An error as data: its type, message and stack, its own fields (a command's stderr…), its cause. */
export function errorFields(error: unknown): unknown {
  if (!(error instanceof Error)) return error;
  const fields: Record<string, unknown> = {
    type: error.name,
    message: error.message,
    stack: error.stack,
  };
  for (const [key, value] of Object.entries(error)) if (!(key in fields)) fields[key] = value;
  if (error.cause !== undefined) fields.cause = errorFields(error.cause);
  return fields;
}

export function createLog(
  options: { debug: boolean; timeZone: string; instanceId: string },
  write: (line: string) => void = (line) => process.stdout.write(line),
): Log {
  const threshold = SEVERITY[options.debug ? "debug" : "info"];
  const at =
    (level: Level): Emit =>
    (event, msg, fields = {}) => {
      if (SEVERITY[level] < threshold) return;
      const { err, ...rest } = fields;
      const entry = {
        level,
        time: formatTimestamp(new Date(), options.timeZone),
        instance: options.instanceId,
        event,
        ...rest,
        ...(err === undefined ? {} : { err: errorFields(err) }),
        msg,
      };
      write(`${JSON.stringify(entry)}\n`);
    };
  return { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}

/** A Log that writes nothing (unit tests). */
export const silentLog: Log = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
};
