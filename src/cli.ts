#!/usr/bin/env node
// argv + environment → one command, loading only what that command needs: `--help` nothing,
// `healthcheck` a state file reader, `--clear` the firewall code, only the daemon everything.
// Exit: 0 done, 2 configuration error, 1 any other failure.

const USAGE = `usage: trafficjam                     run the daemon (configured by environment variables);
                                      with SWARM_DAEMON=true, the Swarm daemon on a manager
       trafficjam --clear             remove this INSTANCE_ID's rules, chains, jumps and tables, then exit
                                      (SWARM_DAEMON=true: every node's, and the worker service)
       trafficjam swarm-worker [--clear]  a Swarm node's worker (deployed by the Swarm daemon)
       trafficjam healthcheck [--deep] exit 0 if this INSTANCE_ID's daemon is alive and its last pass
                                      verified the rules in force, recently; else 1 (one line says why).
                                      --deep: also read the rules back from the kernel now
       trafficjam status [--json]     every instance here: network, mode, rules, whitelisted containers
                                      and their ports, last pass, repairs, drop counters, attempts
       trafficjam plan                the rules this configuration installs, and how the kernel differs
                                      now (changes nothing): exit 0 in sync, 3 when a change is pending
       trafficjam explain FROM TO [PORT/PROTO] [--json]
                                      whether TrafficJam lets a new connection FROM → TO through, and
                                      the rule that decides (containers by name or ID, or addresses)
       trafficjam doctor [--json]     check the host: one line per check, exit 1 when one fails
       trafficjam boot-guard unit     print the systemd unit of the opt-in boot guard (BOOT_GUARD)
       trafficjam boot-guard open     delete this INSTANCE_ID's boot guard table now
       trafficjam --version           print the version`;

function configError(problems: string[]): number {
  for (const problem of problems)
    process.stderr.write(`trafficjam: configuration error: ${problem}\n`);
  return 2;
}

async function healthcheck(deep: boolean): Promise<number> {
  const { instanceIdOf, InstanceIdError } = await import("./instance.js");
  let instanceId: string;
  try {
    instanceId = instanceIdOf(process.env);
  } catch (error) {
    if (error instanceof InstanceIdError) return configError([error.message]);
    throw error;
  }
  const { checkHealth } = await import("./ops/health.js");
  const verdict = await checkHealth(instanceId, process.env, { deep });
  const out = verdict.healthy ? process.stdout : process.stderr;
  out.write(`${verdict.healthy ? "healthy" : "unhealthy"}: ${verdict.reason}\n`);
  return verdict.healthy ? 0 : 1;
}

async function clear(): Promise<number> {
  const { parseClearConfig } = await import("./config.js");
  const config = parseClearConfig(process.env);
  const { createLog } = await import("./log.js");
  if (config.swarmDaemon) {
    const { clearSwarm } = await import("./swarm/daemon.js");
    return clearSwarm(config.instanceId, createLog(config));
  }
  const { runClear } = await import("./clear.js");
  return runClear(config.instanceId, createLog(config));
}

async function swarmWorker(clearOnly: boolean): Promise<number> {
  const { parseConfig } = await import("./config.js");
  const config = parseConfig(process.env);
  const [{ createLog }, worker, { WORKER_KEY_FILE, WORKER_STATE_DIR }, { VERSION }] =
    await Promise.all([
      import("./log.js"),
      import("./swarm/worker.js"),
      import("./swarm/daemon.js"),
      import("./version.js"),
    ]);
  const log = createLog(config);
  const settings = {
    channelPort: config.swarmChannelPort,
    keyFile: WORKER_KEY_FILE,
    stateFile: `${WORKER_STATE_DIR}/${config.instanceId}.allowed.json`,
    netnsDir: "/var/run/docker/netns",
  };
  if (clearOnly) return worker.clearSwarmWorker(config, settings, log);
  const fromDaemon = worker.workerSettingsFromEnv(process.env);
  log.info("daemon.starting", "starting the Swarm worker", {
    version: VERSION,
    network: config.network,
    whitelist: `${config.whitelistFilter.key}=${config.whitelistFilter.value}`,
    firewallBackend: config.firewallBackend,
  });
  return worker.runSwarmWorker(config, { ...settings, ...fromDaemon }, log);
}

async function daemon(): Promise<number> {
  // Loaded side by side: the daemon's code is only needed with a valid configuration, but
  // waiting for the configuration's before loading it would add to every start-up.
  const daemonCode = import("./daemon.js");
  daemonCode.catch(() => undefined); // awaited below, once the configuration is valid
  import("./ops/runtime.js").catch(() => undefined); // the daemon's operations side, loaded alike
  const { parseConfig } = await import("./config.js");
  const config = parseConfig(process.env);
  const [{ createLog }, { runDaemon }, { VERSION }, bootGuard] = await Promise.all([
    import("./log.js"),
    daemonCode,
    import("./version.js"),
    import("./ops/boot-guard.js"),
  ]);
  const log = createLog(config);
  if (config.swarmDaemon) {
    log.info("daemon.starting", "starting the Swarm daemon", {
      version: VERSION,
      network: config.network,
      whitelist: `${config.whitelistFilter.key}=${config.whitelistFilter.value}`,
      channelPort: config.swarmChannelPort,
    });
    const { runSwarmDaemon } = await import("./swarm/daemon.js");
    return runSwarmDaemon(config, { channelPort: config.swarmChannelPort }, log);
  }
  log.info("daemon.starting", "starting", {
    version: VERSION,
    network: config.network,
    whitelist: `${config.whitelistFilter.key}=${config.whitelistFilter.value}`,
    pollIntervalMs: config.pollIntervalMs,
    allowHostTraffic: config.allowHostTraffic,
    firewallBackend: config.firewallBackend,
    bootGuard: config.bootGuard,
    mode: config.mode,
    metricsAddress: config.metricsAddress
      ? `${config.metricsAddress.host}:${config.metricsAddress.port}`
      : null,
  });
  const guard = bootGuard.bootGuardVariant({
    instanceId: config.instanceId,
    save: config.bootGuard,
    dir: bootGuard.bootGuardDir(process.env),
    version: VERSION,
    log,
  });
  return runDaemon(config, log, { ...guard, operations: true });
}

/** `boot-guard unit`: the systemd unit; `boot-guard open`: this instance's guard table deleted. */
async function bootGuardCommand(what: "unit" | "open"): Promise<number> {
  const guard = await import("./ops/boot-guard.js");
  const dir = guard.bootGuardDir(process.env);
  if (what === "unit") {
    process.stdout.write(guard.renderUnit(dir));
    return 0;
  }
  const { instanceIdOf, InstanceIdError } = await import("./instance.js");
  let instanceId: string;
  try {
    instanceId = instanceIdOf(process.env);
  } catch (error) {
    if (error instanceof InstanceIdError) return configError([error.message]);
    throw error;
  }
  const opened = await guard.openBootGuard(instanceId);
  process.stdout.write(
    opened
      ? `opened: table inet ${guard.bootGuardTable(instanceId)} deleted\n`
      : `nothing to open: no table inet ${guard.bootGuardTable(instanceId)}\n`,
  );
  return 0;
}

/** A command that reads the daemon's whole configuration (NETWORK, WHITELIST_FILTER…). */
async function withConfig(run: (config: Config) => Promise<number>): Promise<number> {
  const { parseConfig } = await import("./config.js");
  return run(parseConfig(process.env));
}

type Config = import("./config.js").Config;

/** argv → the command to run; null: an unknown argument. */
function commandOf(args: readonly string[]): (() => Promise<number>) | null {
  const [name, ...rest] = args;
  const flags = (...allowed: string[]) => rest.every((a) => allowed.includes(a));
  const json = rest.includes("--json");
  switch (name) {
    case undefined:
      return daemon;
    case "--clear":
      return rest.length === 0 ? clear : null;
    case "healthcheck":
      return rest.length <= 1 && flags("--deep") ? () => healthcheck(rest[0] === "--deep") : null;
    case "swarm-worker":
      return rest.length <= 1 && flags("--clear") ? () => swarmWorker(rest[0] === "--clear") : null;
    case "status":
      return flags("--json") ? async () => (await import("./ops/status.js")).runStatus(json) : null;
    case "plan":
      return rest.length === 0
        ? () => withConfig(async (c) => (await import("./ops/plan.js")).runPlan(c))
        : null;
    case "explain": {
      const ends = rest.filter((a) => a !== "--json");
      return ends.length >= 2 && ends.length <= 3
        ? () =>
            withConfig(async (c) => {
              const explain = await import("./ops/explain.js");
              try {
                return await explain.runExplain(c, ends, json);
              } catch (error) {
                if (!(error instanceof explain.ExplainUsageError)) throw error;
                process.stderr.write(`trafficjam explain: ${error.message}\n`);
                return 2;
              }
            })
        : null;
    }
    case "doctor":
      return flags("--json") ? async () => (await import("./ops/doctor.js")).runDoctor(json) : null;
    case "boot-guard":
      return rest.length === 1 && (rest[0] === "unit" || rest[0] === "open")
        ? () => bootGuardCommand(rest[0] as "unit" | "open")
        : null;
    default:
      return null;
  }
}

async function main(argv: string[]): Promise<number> {
  const args = argv.filter((a) => a !== "");
  if (args.includes("--help") || args.includes("-h")) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (args.length === 1 && args[0] === "--version") {
    const { VERSION } = await import("./version.js");
    process.stdout.write(`trafficjam ${VERSION}\n`);
    return 0;
  }
  const command = commandOf(args);
  if (command === null) {
    process.stderr.write(`trafficjam: unknown argument ${args.join(" ")}\n${USAGE}\n`);
    return 2;
  }
  try {
    return await command();
  } catch (error) {
    const { ConfigError } = await import("./config.js"); // loaded already by the command
    if (error instanceof ConfigError) return configError(error.problems);
    process.stderr.write(`trafficjam: ${(error as Error).message}\n`);
    return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`trafficjam: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
