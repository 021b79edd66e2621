// Finding and removing everything a lab created. Synchronous on purpose: the same code serves
// Lab.stop(), the process 'exit'/signal safety net (where nothing async runs) and the sweep of
// labs left behind by a test process that died.
//
// A lab's processes are recognised by PID from /proc, never by name:
//   * in the lab's network namespace (/run/netns/tj-NAME, whose bind mount keeps its inode
//     valid): dockerd, containerd, shims, docker-proxy, TrafficJam; or in one of the other
//     namespaces it made (/run/netns/tj-NAME_*, e.g. the outside one and its tjprobe serve);
//   * with /run bound from /run/tj-e2e/NAME (read from /proc/PID/mountinfo, like the reference
//     teardown.sh): dockerd's mount namespace, even if the netns file were already gone;
//   * in the cgroup /tj-e2e-NAME given to dockerd as --cgroup-parent: the container processes.
// All three are names only this lab uses. Namespace inodes are never remembered: once a namespace
// dies its inode can be reused by someone else's.
// Nothing else is ever signalled.
import { execFileSync } from "node:child_process";
import {
  existsSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  renameSync,
  rmSync,
  rmdirSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { DATA_BASE, LOG_BASE, NAME_RE, RUN_BASE, labPaths } from "./paths.js";
import { sleepSync } from "./util.js";

/** Current inode of a netns file (as in /proc/PID/ns/net "net:[INODE]"), undefined if absent. */
export function netnsInode(netnsPath: string): number | undefined {
  try {
    return statSync(netnsPath).ino;
  } catch {
    return undefined;
  }
}

function readOr(path: string, fallback = ""): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return fallback;
  }
}

function linkOr(path: string): string {
  try {
    return readlinkSync(path);
  } catch {
    return "";
  }
}

/** Process start time (clock ticks since boot), to tell a live pid from a recycled one. */
export function processStartTime(pid: number): string | undefined {
  const stat = readOr(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return fields[19]; // field 22 of stat; fields[0] is field 3 (state)
}

/** True while `pid` is the same process (same start time) and not a zombie. */
export function isAlive(pid: number, startTime: string | undefined): boolean {
  const stat = readOr(`/proc/${pid}/stat`);
  if (!stat || startTime === undefined) return false;
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return fields[0] !== "Z" && fields[19] === startTime;
}

/** The lab's other namespaces (tj-NAME_*, see LabPaths.extraNetnsPrefix) that exist now. */
export function extraNetns(name: string): string[] {
  const prefix = labPaths(name).extraNetnsPrefix;
  try {
    return readdirSync("/run/netns").filter((n) => n.startsWith(prefix));
  } catch {
    return [];
  }
}

/** PIDs (not zombies, not ourselves) that belong to the lab. */
export function findLabPids(name: string): number[] {
  const p = labPaths(name);
  const cgroupParent = p.cgroupParent;
  const nets = new Set(
    [p.netnsPath, ...extraNetns(name).map((n) => `/run/netns/${n}`)]
      .map(netnsInode)
      .filter((ino) => ino !== undefined)
      .map((ino) => `net:[${ino}]`),
  );
  const found: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid || pid === 1) continue;
    const stat = readOr(`/proc/${pid}/stat`);
    if (!stat || stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) === "Z") continue;
    const inNet = nets.has(linkOr(`/proc/${pid}/ns/net`));
    const inMnt = readOr(`/proc/${pid}/mountinfo`)
      .split("\n")
      .some((line) => {
        const f = line.split(" "); // id parent dev root mountpoint ...
        // root is the path inside its filesystem: /run/tj-e2e/NAME, or /tj-e2e/NAME if /run is a tmpfs
        return f[4] === "/run" && (f[3] ?? "").endsWith(`/tj-e2e/${name}`);
      });
    const inCgroup = readOr(`/proc/${pid}/cgroup`)
      .split("\n")
      .some((line) => {
        const path = line.slice(line.indexOf(":", line.indexOf(":") + 1) + 1);
        return path === cgroupParent || path.startsWith(cgroupParent + "/");
      });
    if (inNet || inMnt || inCgroup) found.push(pid);
  }
  return found;
}

export function killPids(pids: readonly number[], signal: NodeJS.Signals = "SIGKILL"): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      /* already gone */
    }
  }
}

/** SIGKILLs the lab's processes until none is left (bounded); returns the survivors. */
export function killLabProcessesSync(name: string, rounds = 30): number[] {
  for (let i = 0; i < rounds; i++) {
    const pids = findLabPids(name);
    if (pids.length === 0) return [];
    killPids(pids);
    sleepSync(100);
  }
  return findLabPids(name);
}

function cgroupDirs(name: string): string[] {
  const leaf = labPaths(name).cgroupParent.slice(1);
  let hierarchies: string[];
  try {
    hierarchies = readdirSync("/sys/fs/cgroup");
  } catch {
    return [];
  }
  const dirs = hierarchies.map((h) => join("/sys/fs/cgroup", h, leaf));
  dirs.push(join("/sys/fs/cgroup", leaf)); // pure cgroup v2 hosts
  return dirs.filter((d) => existsSync(d));
}

/** rmdir the lab's cgroups depth-first (cgroup dirs cannot be removed recursively). */
function removeCgroups(name: string): void {
  const rmTree = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory()) rmTree(join(dir, e.name));
    }
    rmdirSync(dir);
  };
  for (let attempt = 0; attempt < 10; attempt++) {
    const left = cgroupDirs(name);
    if (left.length === 0) return;
    for (const d of left) {
      try {
        rmTree(d);
      } catch {
        /* EBUSY right after the last process died: retry */
      }
    }
    sleepSync(50);
  }
}

function mountsUnder(paths: readonly string[]): string[] {
  return readOr("/proc/self/mountinfo")
    .split("\n")
    .map((l) => l.split(" ")[4] ?? "")
    .filter((mp) => paths.some((p) => mp === p || mp.startsWith(p + "/")));
}

/** Removes every trace of lab `name`. Idempotent. Returns what could not be removed. */
export function teardownSync(name: string): string[] {
  const p = labPaths(name);
  const survivors = killLabProcessesSync(name);
  removeCgroups(name);
  for (const netns of [...extraNetns(name), ...(existsSync(p.netnsPath) ? [p.netns] : [])]) {
    try {
      // the netns dies with its last process; its veths, bridges and iptables/nft rules with it
      execFileSync("ip", ["netns", "delete", netns], { stdio: "ignore", timeout: 10_000 });
    } catch {
      /* reported by leftovers() */
    }
  }
  if (survivors.length === 0 && mountsUnder([p.base, p.runDir]).length === 0) {
    // only once nothing can still use them: a live overlay mount would otherwise be emptied
    rmSync(p.base, { recursive: true, force: true });
    rmSync(p.runDir, { recursive: true, force: true });
  }
  for (const dir of [DATA_BASE, RUN_BASE]) {
    try {
      rmdirSync(dir); // only when empty: other labs may be running
    } catch {
      /* not empty or gone */
    }
  }
  return leftovers(name);
}

/** Everything of lab `name` still present; empty when the lab is completely gone. */
export function leftovers(name: string): string[] {
  const p = labPaths(name);
  const out: string[] = [];
  if (existsSync(p.netnsPath)) out.push(`netns ${p.netns}`);
  const extras = extraNetns(name);
  for (const n of extras) out.push(`netns ${n}`);
  const pids = findLabPids(name);
  if (pids.length) {
    out.push(
      `processes ${pids.map((pid) => `${pid}(${readOr(`/proc/${pid}/comm`).trim()})`).join(" ")}`,
    );
  }
  for (const d of cgroupDirs(name)) out.push(`cgroup ${d}`);
  const netnsFiles = [p.netnsPath, ...extras.map((n) => `/run/netns/${n}`)];
  for (const m of mountsUnder([p.base, p.runDir, ...netnsFiles])) out.push(`mount ${m}`);
  for (const d of [p.base, p.runDir]) if (existsSync(d)) out.push(`directory ${d}`);
  return out;
}

// ---- ownership, so a later run can clean up after a test process that was SIGKILLed ----

export function writeOwner(ownerFile: string): void {
  const tmp = `${ownerFile}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify({ pid: process.pid, start: processStartTime(process.pid) }));
  renameSync(tmp, ownerFile);
}

function ownerAlive(name: string): boolean {
  const p = labPaths(name);
  const raw = readOr(p.ownerFile);
  if (!raw) {
    // a lab being created right now has its folder before its owner file: give it a minute
    const mtime = [p.base, p.runDir].map((d) => {
      try {
        return statSync(d).mtimeMs;
      } catch {
        return 0;
      }
    });
    return Date.now() - Math.max(...mtime) < 60_000;
  }
  try {
    const { pid, start } = JSON.parse(raw) as { pid: number; start?: string };
    return processStartTime(pid) === start;
  } catch {
    return false;
  }
}

/** Deletes dockerd logs older than a day (logs are kept after stop() for post-mortems). */
export function pruneOldLogs(maxAgeMs = 24 * 3600_000): void {
  let files: string[];
  try {
    files = readdirSync(LOG_BASE);
  } catch {
    return;
  }
  for (const f of files) {
    const path = join(LOG_BASE, f);
    try {
      if (Date.now() - statSync(path).mtimeMs > maxAgeMs) rmSync(path, { force: true });
    } catch {
      /* raced with another run */
    }
  }
}

/** Tears down labs whose owning test process is gone (never a live one's). Returns their names. */
export function sweepStaleLabs(): string[] {
  const names = new Set<string>();
  for (const base of [DATA_BASE, RUN_BASE]) {
    try {
      for (const n of readdirSync(base)) if (NAME_RE.test(n)) names.add(n);
    } catch {
      /* no such folder */
    }
  }
  const swept: string[] = [];
  for (const name of names) {
    if (ownerAlive(name)) continue;
    teardownSync(name);
    swept.push(name);
  }
  return swept;
}
