// One dockerd inside the lab netns, with a mount namespace of its own.
//
// `ip netns exec` gives the new mount namespace and a sysfs of the netns, but that /sys remount
// hides the cgroup hierarchies ("Devices cgroup isn't mounted"): the inner script re-mounts them
// (the reference lab's node-inner.sh technique). It then binds the lab's run folder over /run, so
// dockerd uses a real host's default paths (/var/run/docker.sock, /var/run/docker, containerd
// shim sockets...) without touching the machine's /run, and a container given
// `-v /var/run/docker.sock:...` gets the lab engine, never another one. `ip netns exec`, sh and
// the script all exec(), so the spawned pid is dockerd's own. With a hostname, `unshare --uts`
// (which exec()s too) gives dockerd a UTS namespace of its own first, named so (a swarm node's
// name is its engine's hostname).
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { dockerRun } from "./docker-cli.js";
import type { LabPaths } from "./paths.js";
import { StopWaiting, tail, waitFor, withTimeout } from "./util.js";

const INNER_SCRIPT = `
cg=$1 run=$2 host=$3; shift 3
if [ -n "$host" ]; then
  # never the machine's own hostname: only in a UTS namespace other than init's
  [ "$(readlink /proc/self/ns/uts)" != "$(readlink /proc/1/ns/uts)" ] || exit 97
  printf %s "$host" > /proc/sys/kernel/hostname
fi
while read -r src mp fstype opts; do
  mkdir -p "$mp" 2>/dev/null || true
  mount -t "$fstype" -o "$opts" "$src" "$mp"
done < "$cg"
# one iptables lock for dockerd and for TrafficJam (which runs with the machine's /run)
[ -e /run/xtables.lock ] || : > /run/xtables.lock
: >> "$run/xtables.lock"
mount --bind /run/xtables.lock "$run/xtables.lock"
mount --rbind "$run" /run
mount --make-rshared /run
exec "$@"
`;

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface DockerdOptions {
  paths: LabPaths;
  daemonJson: Record<string, unknown>;
  pathPrefix?: string;
  readyTimeoutMs?: number;
  /** dockerd's hostname, in a UTS namespace of its own; default: the machine's (shared). */
  hostname?: string;
}

export class Dockerd {
  readonly host: string;
  private child?: ChildProcess;
  private exited?: Promise<ExitInfo>;
  private hasExited = false;

  constructor(private readonly opts: DockerdOptions) {
    this.host = `unix://${opts.paths.socket}`;
  }

  get pid(): number {
    if (this.child?.pid === undefined) throw new Error("dockerd is not running");
    return this.child.pid;
  }

  get running(): boolean {
    return this.child !== undefined && !this.hasExited;
  }

  logTail(n = 40): string {
    try {
      return tail(readFileSync(this.opts.paths.dockerdLog, "utf8"), n);
    } catch {
      return "(no dockerd log)";
    }
  }

  /** Starts dockerd; `daemonJson` keys, if given, are merged over the current ones first. */
  async start(daemonJson: Record<string, unknown> = {}): Promise<void> {
    if (this.running) throw new Error("dockerd already running");
    Object.assign(this.opts.daemonJson, daemonJson);
    const p = this.opts.paths;
    mkdirSync(p.runDir, { recursive: true });
    mkdirSync(p.dataRoot, { recursive: true });
    writeFileSync(p.daemonJson, JSON.stringify(this.opts.daemonJson, null, 2));
    const cgroupMounts = readFileSync("/proc/self/mounts", "utf8")
      .split("\n")
      .map((l) => l.split(" "))
      .filter((f) => (f[1] ?? "").startsWith("/sys/fs/cgroup"))
      .map((f) => f.slice(0, 4).join(" "));
    writeFileSync(p.cgroupMounts, cgroupMounts.join("\n") + "\n");

    const PATH = [this.opts.pathPrefix, process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin"]
      .filter(Boolean)
      .join(":");
    const log = openSync(p.dockerdLog, "a");
    const started = Date.now();
    const host = this.opts.hostname ?? "";
    const child = spawn(
      "ip",
      [
        ...["netns", "exec", p.netns, ...(host ? ["unshare", "--uts"] : [])],
        ...["sh", "-ec", INNER_SCRIPT, "sh", p.cgroupMounts, p.runDir, host],
        ...["dockerd", "--config-file", p.daemonJson, "--data-root", p.dataRoot],
        ...["--exec-root", "/var/run/docker", "--pidfile", "/var/run/docker.pid"],
        ...["-H", "unix:///var/run/docker.sock"],
        ...["--cgroup-parent", p.cgroupParent],
      ],
      // own process group: a Ctrl-C reaches our safety net, not dockerd directly
      {
        detached: true,
        stdio: ["ignore", log, log],
        env: { PATH, HOME: process.env.HOME ?? "/root" },
      },
    );
    closeSync(log);
    this.child = child;
    this.hasExited = false;
    this.exited = new Promise((resolve) => {
      child.on("error", (e) => {
        this.hasExited = true;
        writeFileSync(p.dockerdLog, `spawn error: ${e.message}\n`, { flag: "a" });
        resolve({ code: null, signal: null });
      });
      child.on("exit", (code, signal) => {
        this.hasExited = true;
        resolve({ code, signal });
      });
    });
    child.unref(); // the lab's stop()/safety net own its lifetime, not the event loop

    await waitFor(
      async () => {
        if (this.hasExited) throw new StopWaiting("dockerd exited during start-up");
        const r = await dockerRun(this.host, ["version", "--format", "{{.Server.Version}}"], {
          timeoutMs: 5_000,
        });
        return r.code === 0;
      },
      {
        timeoutMs: this.opts.readyTimeoutMs ?? 30_000,
        intervalMs: 100,
        what: `dockerd of lab ${p.netns} to answer on ${this.host}`,
        details: () => `dockerd log ${p.dockerdLog}:\n${this.logTail()}`,
      },
    );
    const comm = readFileSync(`/proc/${this.pid}/comm`, "utf8").trim();
    if (comm !== "dockerd") throw new Error(`pid ${this.pid} is ${comm}, expected dockerd`);
    writeFileSync(p.dockerdLog, `# tj-e2e: dockerd ready in ${Date.now() - started} ms\n`, {
      flag: "a",
    });
  }

  /** SIGTERM and wait for the exit (a graceful stop: containers are stopped, rules stay). */
  async stop(timeoutMs = 20_000): Promise<ExitInfo> {
    if (!this.child || !this.exited) throw new Error("dockerd was never started");
    if (!this.hasExited) this.child.kill("SIGTERM");
    try {
      return await withTimeout(this.exited, timeoutMs, `dockerd ${this.pid} to exit after SIGTERM`);
    } catch (e) {
      this.child.kill("SIGKILL");
      await withTimeout(this.exited, 5_000, `dockerd ${this.pid} to exit after SIGKILL`);
      throw new Error(`${(e as Error).message}\n${this.logTail()}`, { cause: e });
    }
  }

  /** SIGKILL (used by teardown, which then kills containerd and the shims by namespace). */
  async kill(): Promise<void> {
    if (!this.child || !this.exited || this.hasExited) return;
    this.child.kill("SIGKILL");
    await withTimeout(this.exited, 5_000, `dockerd ${this.pid} to exit after SIGKILL`).catch(
      () => undefined,
    );
  }

  killSync(): void {
    if (this.running) this.child?.kill("SIGKILL");
  }
}
