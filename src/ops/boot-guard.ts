// The opt-in boot guard (docs/operations.md#the-boot-guard). After a reboot the kernel holds no
// rule until TrafficJam's first pass, while Docker already starts the backends. With
// BOOT_GUARD=true, TrafficJam saves a small nft ruleset naming its network's bridge; a systemd
// unit ordered before docker.service loads the saved rulesets at boot, so whatever the members
// send is dropped from their first packet; TrafficJam's first successful pass deletes the table
// ("opens" the guard), its own rules being in force by then. The bridge name of a user network
// (br-<first 12 characters of its ID>, or its com.docker.network.bridge.name) survives reboots,
// so a name saved now is right at the next boot.
//
// The guard is an `inet` table matching the bridge as the packets' input interface: bridged
// traffic reaches the IP hooks through br_netfilter (which the unit switches on first), with the
// bridge as interface. The bridge family would see frames without br_netfilter, but only with
// `meta ibrname`, which kernels without nft_meta_bridge lack (this project's lab kernel among
// them).
import { existsSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ConfigError } from "../config.js";
import type { DaemonVariant } from "../daemon.js";
import { CommandError } from "../host/exec.js";
import { localHost, runChecked } from "../host/host.js";
import type { Log } from "../log.js";
import type { PassOutcome } from "../reconciler.js";

export const DEFAULT_BOOT_GUARD_DIR = "/var/lib/trafficjam/boot-guard";
export const BOOT_GUARD_UNIT = "trafficjam-boot-guard.service";
/** Before the filter hooks of Docker and of TrafficJam's own tables (0): a drop here is final. */
const GUARD_PRIORITY = -200;
/** A Linux interface name (IFNAMSIZ - 1), without anything nft or a shell would read. */
const BRIDGE_NAME = /^[A-Za-z0-9_.-]{1,15}$/;
/** The folder is written into a systemd unit and an nft include: a plain absolute path only. */
const SAFE_DIR = /^\/[A-Za-z0-9_./-]*$/;

export function bootGuardDir(env: Record<string, string | undefined>): string {
  const dir = env.TRAFFICJAM_BOOT_GUARD_DIR?.trim() || DEFAULT_BOOT_GUARD_DIR;
  if (!SAFE_DIR.test(dir) || dir.split("/").includes(".."))
    throw new ConfigError([
      `TRAFFICJAM_BOOT_GUARD_DIR=${JSON.stringify(dir)}: expected an absolute path of letters, digits, _ . - and /`,
    ]);
  return dir.replace(/\/+$/, "") || "/";
}

export const bootGuardTable = (instanceId: string) => `trafficjam-boot_${instanceId}`;
export const bootGuardFile = (dir: string, instanceId: string) => join(dir, `${instanceId}.nft`);

/** The ruleset saved for the next boot: one table closing `bridge`, replaced whole on load. */
export function renderBootGuard(
  instanceId: string,
  network: string,
  bridge: string,
  saved: string,
): string {
  if (!BRIDGE_NAME.test(bridge)) throw new Error(`not a bridge name: ${JSON.stringify(bridge)}`);
  const table = `inet ${bootGuardTable(instanceId)}`;
  const chain = (hook: string) => [
    `\tchain ${hook} {`,
    `\t\ttype filter hook ${hook} priority ${GUARD_PRIORITY}; policy accept;`,
    `\t\tiifname "${bridge}" drop`,
    `\t}`,
  ];
  return [
    `# TrafficJam boot guard of INSTANCE_ID=${instanceId}: network ${network.replace(/[^\w.-]/g, "?")}, bridge ${bridge}.`,
    `# Saved ${saved}. Loaded at boot by ${BOOT_GUARD_UNIT}, before Docker starts: what the`,
    `# network's members send is dropped until TrafficJam's first pass deletes the table.`,
    `table ${table}`,
    `delete table ${table}`,
    `table ${table} {`,
    ...chain("forward"),
    ...chain("input"),
    `}`,
    ``,
  ].join("\n");
}

/** What the unit runs to close the saved bridges: every saved ruleset, in one nft transaction. */
export function loadCommand(dir: string): string[] {
  return ["nft", `include "${dir}/*.nft"`];
}

/** Bridged traffic must reach the IP hooks for the guard (as for TrafficJam itself). */
export const SYSCTL_COMMAND = [
  "sysctl",
  "-q",
  "-w",
  "net.bridge.bridge-nf-call-iptables=1",
  "net.bridge.bridge-nf-call-ip6tables=1",
];

/** The systemd unit that loads the saved rulesets before Docker starts. */
export function renderUnit(dir: string): string {
  const quoted = (argv: string[]) =>
    argv.map((a) => (/^[\w./=-]+$/.test(a) ? a : `'${a}'`)).join(" ");
  return [
    `# TrafficJam's boot guard (docs/operations.md#the-boot-guard): before Docker starts, drops`,
    `# what the members of each network TrafficJam protects send, from the rulesets it saved in`,
    `# ${dir} (BOOT_GUARD=true); TrafficJam's first pass after the boot opens each network again.`,
    `[Unit]`,
    `Description=TrafficJam boot guard: protected Docker networks closed until TrafficJam's first pass`,
    `DefaultDependencies=no`,
    `After=local-fs.target systemd-modules-load.service`,
    `Before=docker.service network-pre.target`,
    `Wants=network-pre.target`,
    `ConditionDirectoryNotEmpty=${dir}`,
    ``,
    `[Service]`,
    `Type=oneshot`,
    `RemainAfterExit=yes`,
    `ExecStartPre=-modprobe br_netfilter`,
    `ExecStartPre=${quoted(SYSCTL_COMMAND)}`,
    `ExecStart=${quoted(loadCommand(dir))}`,
    ``,
    `[Install]`,
    `WantedBy=docker.service`,
    ``,
  ].join("\n");
}

/** Whether nft lists the guard table of this instance. */
async function guardPresent(instanceId: string): Promise<boolean> {
  let listing: string;
  try {
    listing = await runChecked(localHost, "nft", ["list", "tables", "inet"]);
  } catch (error) {
    // Without nft nothing can have loaded a guard.
    if (error instanceof CommandError && error.failure === "not-installed") return false;
    throw error;
  }
  return listing
    .split("\n")
    .some((line) => line.trim() === `table inet ${bootGuardTable(instanceId)}`);
}

/** Deletes the guard table of this instance if it is there; true if it was. */
export async function openBootGuard(instanceId: string): Promise<boolean> {
  if (!(await guardPresent(instanceId))) return false;
  try {
    await runChecked(localHost, "nft", ["delete", "table", "inet", bootGuardTable(instanceId)]);
  } catch (error) {
    // Deleted meanwhile by another process (a --clear): opened all the same.
    if (error instanceof CommandError && !(await guardPresent(instanceId))) return true;
    throw error;
  }
  return true;
}

/**
 * `--clear` and SIGUSR1: the guard table and the saved ruleset of this instance, so that no later
 * boot closes a network TrafficJam no longer opens. Returns what was removed.
 */
export async function clearBootGuard(instanceId: string, dir: string): Promise<string[]> {
  const removed: string[] = [];
  if (await openBootGuard(instanceId)) removed.push(`table inet ${bootGuardTable(instanceId)}`);
  const file = bootGuardFile(dir, instanceId);
  if (existsSync(file)) {
    rmSync(file);
    removed.push(file);
  }
  return removed;
}

/** Writes the ruleset atomically (a boot never loads half a file). */
function save(file: string, text: string): void {
  const partial = `${file}.partial`;
  writeFileSync(partial, text, { mode: 0o600 });
  renameSync(partial, file);
}

export interface BootGuardOptions {
  instanceId: string;
  /** BOOT_GUARD: save the ruleset for the next boot. Opening needs no opt-in. */
  save: boolean;
  dir: string;
  version: string;
  log: Log;
  /** Deletes the guard table if present (default: openBootGuard; the unit tests fake it). */
  open?: (instanceId: string) => Promise<boolean>;
}

/**
 * The daemon's side: after each successful pass, opens the guard once (whether or not saving is
 * on: a guard loaded at boot must never stay closed), and saves the ruleset whenever the bridge
 * changes. Failures are logged and tried again at the next pass; one runs at a time.
 */
export class BootGuard {
  private opened = false;
  private savedBridge: string | null = null;
  private busy = false;
  private failuresSaid = new Set<string>();

  constructor(private readonly options: BootGuardOptions) {}

  /** Never rejects; resolves once this pass's work is done (the tests await it). */
  passed(outcome: PassOutcome): Promise<void> {
    if (!outcome.ok || !outcome.ruleset || this.busy) return Promise.resolve();
    const { bridge, networkName } = outcome.ruleset;
    this.busy = true;
    return this.afterPass(bridge, networkName).finally(() => (this.busy = false));
  }

  private async afterPass(bridge: string | null, network: string | null): Promise<void> {
    const { instanceId, log } = this.options;
    if (!this.opened) {
      try {
        if (await (this.options.open ?? openBootGuard)(instanceId))
          log.info("boot.guard.opened", "boot guard opened: the network is open to its proxy", {
            table: `inet ${bootGuardTable(instanceId)}`,
          });
        this.opened = true;
        this.failuresSaid.delete("open");
      } catch (error) {
        this.failed("open", "cannot open the boot guard: the network stays closed", error, "error");
      }
    }
    if (this.options.save && bridge !== null && bridge !== this.savedBridge) {
      const file = bootGuardFile(this.options.dir, instanceId);
      try {
        if (!existsSync(this.options.dir))
          throw new Error(
            `${this.options.dir} does not exist: create it (and in the image, mount it from the host)`,
          );
        const stamp = `${new Date().toISOString()} by TrafficJam ${this.options.version}`;
        save(file, renderBootGuard(instanceId, network ?? "?", bridge, stamp));
        this.savedBridge = bridge;
        this.failuresSaid.delete("save");
        log.info("boot.guard.saved", "boot guard saved for the next boot", { bridge, file });
      } catch (error) {
        this.failed("save", "cannot save the boot guard for the next boot", error, "warn");
      }
    }
  }

  /** Said at `level` the first time, then at debug level (it is tried again every pass). */
  private failed(what: string, msg: string, error: unknown, level: "warn" | "error"): void {
    const said = this.failuresSaid.has(what);
    this.failuresSaid.add(what);
    this.options.log[said ? "debug" : level]("boot.guard.failed", msg, {
      action: what,
      err: error,
    });
  }

  /** SIGUSR1: the guard table and the saved ruleset go with the rules. */
  async cleared(): Promise<void> {
    const removed = await clearBootGuard(this.options.instanceId, this.options.dir);
    if (removed.length > 0)
      this.options.log.info("boot.guard.removed", "boot guard removed", { removed });
  }
}

/** What the single-host daemon adds for the guard (see DaemonVariant). */
export function bootGuardVariant(
  options: BootGuardOptions,
): Pick<DaemonVariant, "passed" | "cleared"> {
  const guard = new BootGuard(options);
  return { passed: (outcome) => void guard.passed(outcome), cleared: () => guard.cleared() };
}
