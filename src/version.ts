// TrafficJam's version, from one place: package.json's "version". The build writes it into the
// bundle (esbuild --define, see package.json's "build" script), so the CLI reads no file for it;
// unbundled runs (the tests, under tsx) read package.json once.
import { readFileSync } from "node:fs";

declare const TRAFFICJAM_VERSION: string | undefined;

function packageVersion(): string {
  const text = readFileSync(new URL("../package.json", import.meta.url), "utf8");
  const version: unknown = (JSON.parse(text) as { version?: unknown }).version;
  if (typeof version !== "string" || version === "") throw new Error("package.json has no version");
  return version;
}

export const VERSION: string =
  typeof TRAFFICJAM_VERSION === "string" && TRAFFICJAM_VERSION !== ""
    ? TRAFFICJAM_VERSION
    : packageVersion();
