// Docs that stay true: each test reads a fact from the code (never from a copy of it) and fails
// when the documentation says otherwise.
// - the log vocabulary: the `LogEvent` union in src/log.ts, parsed from its source, against
//   docs/logs.md (and the Swarm events of docs/swarm.md); and the sample line of docs/logs.md
//   against a `rules.applied` line the reconciler really writes;
// - the README's variable table against the configuration schema (names, and each default as
//   parseConfig gives it);
// - the exit codes the README and the CLI's header state against what the CLI does.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  CONFIG_VARIABLES,
  ConfigError,
  DEFAULT_SWARM_IMAGE,
  parseConfig,
  type Config,
} from "../../src/config.js";
import { createLog } from "../../src/log.js";
import { Reconciler } from "../../src/reconciler.js";
import type { FirewallBackend, SyncResult } from "../../src/firewall/backend.js";
import { DEFAULT_DOCKER_SOCKET } from "../../src/observe/engine-api.js";
import { SCENARIOS } from "./fixtures.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const read = (path: string) => readFileSync(join(ROOT, path), "utf8");

/** Every .ts file under src/, with its text. */
function sources(dir = "src"): Array<[string, string]> {
  return readdirSync(join(ROOT, dir), { withFileTypes: true }).flatMap((entry) => {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory()) return sources(path);
    return entry.name.endsWith(".ts") ? [[path, read(path)] as [string, string]] : [];
  });
}

/** The `LogEvent` union of src/log.ts: the string literals between `type LogEvent =` and `;`. */
function logVocabulary(): string[] {
  const source = read("src/log.ts");
  const union = /export type LogEvent\s*=([^;]*);/.exec(source)?.[1];
  assert.ok(union, 'src/log.ts declares `export type LogEvent = | "…" | …;`');
  const events = [...union.matchAll(/"([^"]+)"/g)].map((m) => m[1]!);
  assert.ok(events.length > 10, `only ${events.length} events parsed from the LogEvent union`);
  return events;
}

/**
 * Events of a markdown text from `heading` on: the first column of every table whose header's
 * first cell is `event`.
 */
function documentedEvents(markdown: string, heading: RegExp): string[] {
  const start = markdown.search(heading);
  assert.ok(start >= 0, `heading ${heading} not found`);
  const tables: string[][] = [];
  let previous = "";
  for (const line of markdown.slice(start).split("\n")) {
    if (line.startsWith("|") && !previous.startsWith("|")) tables.push([]);
    if (line.startsWith("|")) tables.at(-1)!.push(line);
    previous = line;
  }
  return tables
    .filter((table) => /^\| `event` +\|/.test(table[0] ?? ""))
    .flatMap((table) => table.slice(2))
    .map((row) => /^\| `([a-z][a-z0-9.-]*)` +\|/.exec(row)?.[1] ?? `unparsed row: ${row}`);
}

const sorted = (xs: Iterable<string>) => [...new Set(xs)].sort();

test("docs/logs.md documents every event the code can log, and no other", () => {
  const code = logVocabulary();
  const documented = documentedEvents(read("docs/logs.md"), /^## Events$/m);
  const missing = code.filter((e) => !documented.includes(e));
  const unknown = documented.filter((e) => !code.includes(e));
  assert.deepEqual(missing, [], "events of the LogEvent union that docs/logs.md lacks");
  assert.deepEqual(unknown, [], "events in docs/logs.md that the LogEvent union lacks");
});

test("every event of the vocabulary is logged somewhere in src/ (no dead word)", () => {
  const text = sources()
    .filter(([path]) => path !== "src/log.ts")
    .map(([, source]) => source)
    .join("\n");
  const unused = logVocabulary().filter((event) => !text.includes(`"${event}"`));
  assert.deepEqual(unused, [], "events of the LogEvent union that no code logs");
});

test("docs/swarm.md's event table names Swarm events of the code, all of them", () => {
  const code = logVocabulary().filter((e) => e.startsWith("swarm."));
  const table = documentedEvents(read("docs/swarm.md"), /Every `swarm\.\*` event/);
  assert.deepEqual(sorted(table), sorted(code));
});

/** The one rules.applied line a reconciler writes for an event-triggered pass that changed rules. */
async function realRulesApplied(): Promise<Record<string, unknown>> {
  const lines: Array<Record<string, unknown>> = [];
  const log = createLog({ debug: false, timeZone: "UTC", instanceId: "web" }, (line) => {
    lines.push(JSON.parse(line) as Record<string, unknown>);
  });
  const backend: FirewallBackend = {
    async sync(_ruleset, options) {
      options?.onEnforced?.();
      return { changed: true, differences: ["drift"], location: "iptables-nft", revoked: [] };
    },
    async clear(): Promise<SyncResult> {
      return { changed: false, differences: [], location: "iptables-nft", revoked: [] };
    },
    async check() {
      return { location: "iptables-nft", differences: [] };
    },
  };
  const reconciler = new Reconciler({
    instanceId: "web",
    networkRef: "web",
    allowHostTraffic: false,
    pollIntervalMs: 60_000,
    backend,
    log,
    flows: { deleteFrom: async () => 0, sweep: async () => ({ pairs: [], flows: 0 }) },
    observe: async () => SCENARIOS[0]!.snapshot,
  });
  reconciler.request("container:start", Date.now());
  for (let i = 0; i < 200 && !lines.some((l) => l.event === "rules.applied"); i++)
    await new Promise((resolve) => setTimeout(resolve, 5));
  await reconciler.stop();
  const line = lines.find((l) => l.event === "rules.applied");
  assert.ok(line, `no rules.applied line: ${JSON.stringify(lines)}`);
  return line;
}

test("the sample line of docs/logs.md has exactly the fields the code writes on rules.applied", async () => {
  const logs = read("docs/logs.md");
  const sample = /```\n(\{.*\})\n```/.exec(logs)?.[1];
  assert.ok(sample, "docs/logs.md opens with a sample JSON line in a code block");
  const documented = JSON.parse(sample) as Record<string, unknown>;
  assert.equal(documented.event, "rules.applied");
  const real = await realRulesApplied();
  assert.deepEqual(sorted(Object.keys(documented)), sorted(Object.keys(real)));
  // and the table of its fields names each field the line carries beyond the common ones
  const start = logs.indexOf("Fields of `rules.applied`");
  const fieldTable = logs.slice(start, logs.indexOf("\n\n", logs.indexOf("| ---", start)));
  const named = [...fieldTable.matchAll(/`([A-Za-z]+)`/g)].map((m) => m[1]!);
  const own = Object.keys(real).filter(
    (k) => !["level", "time", "instance", "event", "msg"].includes(k),
  );
  assert.deepEqual(
    own.filter((k) => !named.includes(k)),
    [],
    "fields of rules.applied not in its table",
  );
});

// ---- the README's variable table ----

/** README "Configuration" table: variable → its Default cell (backticks dropped). */
function readmeVariables(): Map<string, string> {
  const readme = read("README.md");
  const start = readme.indexOf("| Variable");
  assert.ok(start >= 0, "README.md has a `| Variable | Default | Meaning |` table");
  const rows = readme.slice(start).split("\n\n")[0]!.split("\n").slice(2);
  const table = new Map<string, string>();
  for (const row of rows) {
    const [names, defaults] = row
      .split("|")
      .slice(1, 3)
      .map((c) => c.trim());
    for (const [, name] of (names ?? "").matchAll(/`([A-Z][A-Z0-9_]*)`/g))
      table.set(name!, (defaults ?? "").replace(/`/g, ""));
  }
  return table;
}

const REQUIRED = { NETWORK: "n", WHITELIST_FILTER: "name=proxy" };
const onOff = (b: boolean) => (b ? "on" : "off");

/** How the README writes each variable's default, from the parsed defaults. */
const README_DEFAULT: Record<string, (c: Config) => string> = {
  INSTANCE_ID: (c) => c.instanceId,
  POLL_INTERVAL: (c) => String(c.pollIntervalMs / 1000),
  ALLOW_HOST_TRAFFIC: (c) => onOff(c.allowHostTraffic),
  DEBUG: (c) => onOff(c.debug),
  TZ: (c) => c.timeZone,
  SWARM_DAEMON: (c) => onOff(c.swarmDaemon),
  SWARM_IMAGE: (c) =>
    c.swarmImage === DEFAULT_SWARM_IMAGE && c.swarmImage === ""
      ? "the daemon's own image"
      : c.swarmImage,
  SWARM_CHANNEL_PORT: (c) => String(c.swarmChannelPort),
  FIREWALL_BACKEND: (c) => c.firewallBackend,
  BOOT_GUARD: (c) => onOff(c.bootGuard),
  MODE: (c) => c.mode,
  METRICS_ADDRESS: (c) =>
    c.metricsAddress === null ? "unset" : `${c.metricsAddress.host}:${c.metricsAddress.port}`,
  // not part of Config: the Engine client's own default
  DOCKER_HOST: () =>
    DEFAULT_DOCKER_SOCKET === "/var/run/docker.sock" ? "local socket" : DEFAULT_DOCKER_SOCKET,
};

test("the README's variable table lists every variable of the schema, with its default", () => {
  const readme = readmeVariables();
  const defaults = parseConfig(REQUIRED);
  let required: string[] = [];
  try {
    parseConfig({});
  } catch (error) {
    assert.ok(error instanceof ConfigError);
    required = error.problems
      .filter((p) => /=unset: is required/.test(p))
      .map((p) => p.split("=")[0]!);
  }
  for (const name of CONFIG_VARIABLES) {
    assert.ok(readme.has(name), `README.md's variable table lacks ${name}`);
    if (required.includes(name)) {
      assert.equal(readme.get(name), "required", name);
      continue;
    }
    const render = README_DEFAULT[name];
    assert.ok(render, `teach this test how the README writes ${name}'s default`);
    assert.equal(readme.get(name), render(defaults), `README.md's default of ${name}`);
  }
  assert.deepEqual(sorted(required), sorted(Object.keys(REQUIRED)));
});

test("every variable of the README's table is read by the code", () => {
  const text = sources()
    .map(([, source]) => source)
    .join("\n");
  const unread = [...readmeVariables().keys()].filter(
    (name) => !CONFIG_VARIABLES.includes(name) && !new RegExp(`env\\.${name}\\b`).test(text),
  );
  assert.deepEqual(unread, [], "variables in README.md that no code reads");
});

// ---- exit codes ----

/** "0 done, 2 configuration error …, 1 any other …" → { code: words }. */
function exitStatuses(sentence: string): Record<string, string> {
  return Object.fromEntries(
    [...sentence.matchAll(/\b([0-2]) ([a-z][a-z ]*)/g)].map((m) => [m[1]!, m[2]!.trim()]),
  );
}

function cli(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, ["--import", "tsx", join(ROOT, "src/cli.ts"), ...args], {
    encoding: "utf8",
    timeout: 30_000,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...env },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test("the exit codes of the README and of the CLI's header are what the CLI returns", () => {
  const readme = /Exit status: ([^.]*)\./.exec(read("README.md").replace(/\s+/g, " "))?.[1];
  const header = /^\/\/ Exit: ([^.]*)\./m.exec(read("src/cli.ts"))?.[1];
  assert.ok(readme && header, "README.md says `Exit status: …` and src/cli.ts `// Exit: …`");
  const documented = exitStatuses(readme);
  assert.deepEqual(Object.keys(documented).sort(), ["0", "1", "2"]);
  assert.match(documented["0"]!, /^done/);
  assert.match(documented["2"]!, /^configuration error/);
  assert.match(documented["1"]!, /other/);
  assert.deepEqual(Object.keys(exitStatuses(header)).sort(), ["0", "1", "2"]);
  assert.match(exitStatuses(header)["2"]!, /^configuration error/);

  const pkg = JSON.parse(read("package.json")) as { version: string };
  const version = cli(["--version"]);
  assert.deepEqual([version.code, version.stdout], [0, `trafficjam ${pkg.version}\n`]);
  assert.equal(cli(["--help"]).code, 0);
  // configuration errors: one line naming the variable, as docs/logs.md shows; nothing runs
  const ssh = cli([], { ...REQUIRED, DOCKER_HOST: "ssh://me@host" });
  assert.equal(ssh.code, 2, ssh.stderr);
  assert.match(ssh.stderr, /^trafficjam: configuration error: DOCKER_HOST="ssh:\/\/me@host": /);
  assert.equal(cli(["--frobnicate"]).code, 2);
  assert.equal(cli([], { ...REQUIRED, POLL_INTERVAL: "soon" }).code, 2);
  // a failure: the health check of a daemon that never ran
  const dir = mkdtempSync(join(tmpdir(), "tj-docs-"));
  try {
    const health = cli(["healthcheck"], { TRAFFICJAM_STATE_DIR: dir });
    assert.equal(health.code, 1, health.stderr);
    assert.match(health.stderr, /^unhealthy: /);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
