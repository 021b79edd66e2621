// Where a lab lives. Everything a lab creates is named after it (netns tj-NAME, cgroup
// /tj-e2e-NAME, the two folders below), so teardown can find exactly that and nothing else.
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** Repository root, from this file's location (test/e2e/lab/), not from the current directory. */
export const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));

export const DATA_BASE = "/var/lib/tj-e2e";
export const RUN_BASE = "/run/tj-e2e";
/** Logs survive stop() on purpose: they are what you read after a failure. */
export const LOG_BASE = join(tmpdir(), "tj-e2e-logs");
export const CACHE_BASE = join(tmpdir(), "tj-e2e-cache");

export interface LabPaths {
  netns: string;
  netnsPath: string;
  /**
   * Prefix of the other namespaces the lab makes (e.g. the outside one, tj-NAME_out). "_" never
   * occurs in a lab name, so no other lab's namespace can match it.
   */
  extraNetnsPrefix: string;
  /** /var/lib/tj-e2e/NAME: daemon.json, owner file, cgroup list, data root. */
  base: string;
  dataRoot: string;
  daemonJson: string;
  /** Who owns the lab (pid + start time), so a later run can sweep labs of dead test processes. */
  ownerFile: string;
  cgroupMounts: string;
  /** Bound over /run inside dockerd's mount namespace: docker.sock, docker/ (exec root), containerd/. */
  runDir: string;
  socket: string;
  pidfile: string;
  dockerdLog: string;
  /** cgroup parent given to dockerd, so container processes can be found by cgroup. */
  cgroupParent: string;
}

export const NAME_RE = /^[a-z0-9][a-z0-9-]{0,14}$/;

export function labPaths(name: string): LabPaths {
  if (!NAME_RE.test(name)) throw new Error(`bad lab name ${JSON.stringify(name)}: want ${NAME_RE}`);
  const base = join(DATA_BASE, name);
  const runDir = join(RUN_BASE, name);
  return {
    netns: `tj-${name}`,
    netnsPath: `/run/netns/tj-${name}`,
    extraNetnsPrefix: `tj-${name}_`,
    base,
    dataRoot: join(base, "docker"),
    daemonJson: join(base, "daemon.json"),
    ownerFile: join(base, "owner"),
    cgroupMounts: join(base, "cgroup-mounts"),
    runDir,
    socket: join(runDir, "docker.sock"),
    pidfile: join(runDir, "docker.pid"),
    dockerdLog: join(LOG_BASE, `${name}-dockerd.log`),
    cgroupParent: `/tj-e2e-${name}`,
  };
}
