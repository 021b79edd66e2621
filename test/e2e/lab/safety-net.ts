// Last-resort cleanup when a test process ends without running its after() hooks: on 'exit'
// (uncaught error, process.exit) and on SIGINT/SIGTERM/SIGHUP (Ctrl-C, runner timeout). Only
// synchronous work is possible there, so each registered lab provides a synchronous teardown.
// A SIGKILLed test process leaves its lab behind; sweepStaleLabs() in the next startLab removes it.
import { liveChildren } from "./exec.js";

export interface Disposable {
  /** Synchronous, idempotent, kills with SIGKILL. */
  disposeSync(): void;
}

const registered = new Set<Disposable>();
let installed = false;

function disposeAll(): void {
  for (const child of liveChildren) child.kill("SIGKILL");
  for (const d of [...registered]) {
    try {
      d.disposeSync();
    } catch (e) {
      process.stderr.write(`tj-e2e safety net: ${(e as Error).message}\n`);
    }
    registered.delete(d);
  }
}

export function register(d: Disposable): void {
  registered.add(d);
  if (installed) return;
  installed = true;
  process.on("exit", disposeAll);
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.once(sig, () => {
      disposeAll();
      process.exit(128 + ({ SIGHUP: 1, SIGINT: 2, SIGTERM: 15 } as const)[sig]);
    });
  }
}

export function unregister(d: Disposable): void {
  registered.delete(d);
}
