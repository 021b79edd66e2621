#!/usr/bin/env node
// argv + environment → one command. Exit: 0 done, 2 configuration error, 1 any other failure.
import { ConfigError, parseClearConfig, parseConfig } from "./config.js";
import { createLogger } from "./log.js";
import { runClear, runDaemon } from "./daemon.js";
import { checkHealth } from "./health.js";

const USAGE = `usage: trafficjam            run the daemon (configured by environment variables)
       trafficjam --clear    remove this INSTANCE_ID's rules, chains and jumps, then exit
       trafficjam healthcheck  exit 0 if this INSTANCE_ID's daemon is alive, recent and its rules
                               are in force in the kernel, else 1 (one line says why)`;

function configError(problems: string[]): number {
  for (const problem of problems)
    process.stderr.write(`trafficjam: configuration error: ${problem}\n`);
  return 2;
}

async function main(argv: string[]): Promise<number> {
  const args = argv.filter((a) => a !== "");
  if (args.includes("--help") || args.includes("-h")) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (args.length === 1 && args[0] === "healthcheck") {
    try {
      const verdict = await checkHealth(parseClearConfig(process.env).instanceId, process.env);
      const out = verdict.healthy ? process.stdout : process.stderr;
      out.write(`${verdict.healthy ? "healthy" : "unhealthy"}: ${verdict.reason}\n`);
      return verdict.healthy ? 0 : 1;
    } catch (error) {
      if (error instanceof ConfigError) return configError(error.problems);
      throw error;
    }
  }
  const unknown = args.filter((a) => a !== "--clear");
  if (unknown.length > 0) {
    process.stderr.write(`trafficjam: unknown argument ${unknown.join(" ")}\n${USAGE}\n`);
    return 2;
  }
  try {
    if (args.includes("--clear")) {
      const config = parseClearConfig(process.env);
      return await runClear(config.instanceId, createLogger(config));
    }
    const config = parseConfig(process.env);
    if (config.swarmDaemon) {
      return configError([
        `SWARM_DAEMON=${JSON.stringify(process.env.SWARM_DAEMON)}: Swarm mode is not available in this version; unset it to protect a bridge network`,
      ]);
    }
    const log = createLogger(config);
    log.info(
      {
        network: config.network,
        whitelist: `${config.whitelistFilter.key}=${config.whitelistFilter.value}`,
        pollIntervalMs: config.pollIntervalMs,
        allowHostTraffic: config.allowHostTraffic,
        firewallBackend: config.firewallBackend,
      },
      "starting",
    );
    return await runDaemon(config, log);
  } catch (error) {
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
