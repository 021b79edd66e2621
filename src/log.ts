// One JSON line per meaningful event, timestamped in the configured time zone. Every line carries
// a stable `event` field (the vocabulary below, documented in docs/logs.md): tests, the bench and
// users' alerting match on it, so rewording a message breaks nothing.
import { pino } from "pino";

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
  | "host.monitor.unavailable"
  | "backend.chosen"
  | "network.missing"
  | "network.appeared"
  | "network.unprotectable"
  | "whitelist.changed"
  | "port.unbound"
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
  | "health.state.unwritable";

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

export function createLog(options: { debug: boolean; timeZone: string; instanceId: string }): Log {
  const logger = pino({
    level: options.debug ? "debug" : "info",
    base: { instance: options.instanceId },
    formatters: { level: (label) => ({ level: label }) },
    timestamp: () => `,"time":"${formatTimestamp(new Date(), options.timeZone)}"`,
  });
  const at =
    (level: "debug" | "info" | "warn" | "error"): Emit =>
    (event, msg, fields = {}) =>
      logger[level]({ event, ...fields }, msg);
  return { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}

/** A Log that writes nothing (unit tests). */
export const silentLog: Log = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
};
