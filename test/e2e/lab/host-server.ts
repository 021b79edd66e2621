// `tjprobe serve` running on the lab host (in the lab netns), as a service of the Docker host
// that containers should, or should not, be able to reach; or in another namespace of the lab
// (the outside namespace, see outside.ts).
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Lab, OwnedProcess } from "./lab.js";
import { parseUdpLog } from "./probes.js";
import { StopWaiting, waitFor, withTimeout } from "./util.js";

let counter = 0;

export class HostServer implements OwnedProcess {
  /** Holds tjprobe.ready and udp.log (removed with the lab). */
  readonly dir: string;
  readonly pid: number;
  private readonly child: ChildProcess;
  private readonly exited: Promise<void>;
  private hasExited = false;
  private stderr = "";

  constructor(
    private readonly lab: Lab,
    tjprobe: string,
    /** Network namespace to serve in (default: the lab host's). */
    readonly netns = lab.netns,
  ) {
    this.dir = join(lab.paths.base, `hostserver-${++counter}`);
    mkdirSync(this.dir, { recursive: true });
    this.child = spawn("ip", ["netns", "exec", netns, tjprobe, "serve"], {
      env: { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin", TJPROBE_DIR: this.dir },
      stdio: ["ignore", "ignore", "pipe"],
      detached: true,
    });
    this.child.stderr?.setEncoding("utf8").on("data", (d: string) => (this.stderr += d));
    this.exited = new Promise((resolve) => {
      this.child.on("error", (e) => {
        this.stderr += `spawn error: ${e.message}\n`;
        this.hasExited = true;
        resolve();
      });
      this.child.on("exit", () => {
        this.hasExited = true;
        resolve();
      });
    });
    if (this.child.pid === undefined) throw new Error("cannot start tjprobe serve on the lab host");
    this.pid = this.child.pid;
    lab.own(this);
  }

  async ready(): Promise<void> {
    await waitFor(
      () => {
        if (this.hasExited) throw new StopWaiting(`it exited: ${this.stderr.trim()}`);
        return existsSync(join(this.dir, "tjprobe.ready"));
      },
      {
        timeoutMs: 5_000,
        intervalMs: 20,
        what: `tjprobe serve in ${this.netns} (lab ${this.lab.name})`,
      },
    );
  }

  /** "<src ip> <payload>" lines received on UDP 9000. */
  udpLog(): string[] {
    const f = join(this.dir, "udp.log");
    return existsSync(f) ? parseUdpLog(readFileSync(f, "utf8")) : [];
  }

  async stop(): Promise<void> {
    if (!this.hasExited) this.child.kill("SIGTERM");
    await withTimeout(this.exited, 5_000, "host tjprobe serve to exit").catch(() => this.kill());
    this.lab.disown(this);
  }

  async kill(): Promise<void> {
    if (!this.hasExited) this.child.kill("SIGKILL");
    await withTimeout(this.exited, 5_000, "host tjprobe serve to exit after SIGKILL");
  }

  killSync(): void {
    if (!this.hasExited) this.child.kill("SIGKILL");
  }
}
