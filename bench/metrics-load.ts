// What the opt-in metrics cost the daemon when METRICS_ADDRESS is set: the bundled metrics chunk
// (prom-client inside) loaded in a fresh Node process, its size, load time and memory, against a
// process that loads nothing. Without METRICS_ADDRESS the chunk is never read. `npm run
// bench:metrics` (after `npm run build`; no root, no lab). Prints figures.
//   BENCH_RUNS=15   fresh processes per measurement
import { execFileSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { envInt, pct, table } from "./figures.js";

const RUNS = envInt("BENCH_RUNS", 15, 1, 200);
const DIST = fileURLToPath(new URL("../dist/chunks/", import.meta.url));
const chunk = readdirSync(DIST).find((f) => /^metrics-[A-Z0-9]+\.js$/.test(f));
if (!chunk) throw new Error(`no metrics chunk in ${DIST}: run npm run build first`);

/** One fresh process: ms to import the module (none: nothing), and the RSS it added, in KiB. */
function measure(module: string | null): { ms: number; rssKiB: number } {
  const code = `
    const rss0 = process.memoryUsage().rss;
    const t0 = performance.now();
    ${module ? `const m = await import(${JSON.stringify(module)});` : ""}
    const ms = performance.now() - t0;
    ${module ? `new m.Metrics({ instanceId: "x", network: "n", mode: "enforce", readDrops: async () => null, healthy: () => true });` : ""}
    console.log(JSON.stringify({ ms, rssKiB: (process.memoryUsage().rss - rss0) / 1024 }));`;
  const out = execFileSync(process.execPath, ["--input-type=module", "-e", code], {
    encoding: "utf8",
  });
  return JSON.parse(out) as { ms: number; rssKiB: number };
}

const runs = (module: string | null) => Array.from({ length: RUNS }, () => measure(module));
const bare = runs(null);
const loaded = runs(join(DIST, chunk));
const median = (xs: number[]) => pct(xs, 50);
console.log(`metrics chunk ${chunk}: ${(statSync(join(DIST, chunk)).size / 1024).toFixed(0)} KiB`);
console.log(
  table(
    ["fresh node process", "load ms (median, max)", "RSS added, MiB (median)"],
    [
      [
        "nothing imported",
        `${median(bare.map((r) => r.ms)).toFixed(1)}, ${Math.max(...bare.map((r) => r.ms)).toFixed(1)}`,
        (median(bare.map((r) => r.rssKiB)) / 1024).toFixed(1),
      ],
      [
        "the metrics chunk (prom-client), a registry made",
        `${median(loaded.map((r) => r.ms)).toFixed(1)}, ${Math.max(...loaded.map((r) => r.ms)).toFixed(1)}`,
        (median(loaded.map((r) => r.rssKiB)) / 1024).toFixed(1),
      ],
    ],
  ),
);
console.log(`${RUNS} processes each; node ${process.version}`);
