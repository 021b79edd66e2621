// One JSON line per meaningful event, timestamped in the configured time zone.
import { pino, type Logger } from "pino";

export type { Logger };

/** ISO-8601 local time in `timeZone`, with its UTC offset, e.g. 2026-11-28T14:03:07.123-08:00. */
export function formatTimestamp(date: Date, timeZone: string): string {
  const parts = new Intl.DateTimeFormat("en-US", {
    timeZone,
    hourCycle: "h23",
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    timeZoneName: "longOffset",
  }).formatToParts(date);
  const part = (type: Intl.DateTimeFormatPartTypes) =>
    parts.find((p) => p.type === type)?.value ?? "";
  const offset = part("timeZoneName").replace(/^GMT/, "") || "+00:00";
  const ms = String(date.getMilliseconds()).padStart(3, "0");
  return `${part("year")}-${part("month")}-${part("day")}T${part("hour")}:${part("minute")}:${part("second")}.${ms}${offset === "" ? "Z" : offset}`;
}

export function createLogger(options: {
  debug: boolean;
  timeZone: string;
  instanceId: string;
}): Logger {
  return pino({
    level: options.debug ? "debug" : "info",
    base: { instance: options.instanceId },
    formatters: { level: (label) => ({ level: label }) },
    timestamp: () => `,"time":"${formatTimestamp(new Date(), options.timeZone)}"`,
  });
}
