// The test image, without any registry: the equivalent of
//   FROM scratch / COPY busybox tjprobe /bin/ / RUN busybox --install -s /bin / CMD tjprobe serve
// assembled as a root-filesystem tarball on the host (applet symlinks made here, tjprobe built
// with gcc -static) and loaded with `docker import`. No builder, no container run: ~0.2 s per lab.
// Binary and tarball are cached in the temp folder, keyed by their inputs' hash, shared by all labs.
// A lab may load the "busybox" kind instead (busybox alone, CMD httpd): no compiler, fewer probes.
import { createHash } from "node:crypto";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
} from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { docker } from "./docker-cli.js";
import { runOk } from "./exec.js";
import { CACHE_BASE } from "./paths.js";

export const TEST_IMAGE = "tj-test";
export const TJPROBE_SOURCE = fileURLToPath(new URL("./tjprobe.c", import.meta.url));
export const BUSYBOX = process.env.TJ_E2E_BUSYBOX ?? "/bin/busybox"; // from busybox-static

/** Memoises a cached build step per process; a failure is not memoised. */
export function once(build: () => Promise<string>): () => Promise<string> {
  let p: Promise<string> | undefined;
  return () =>
    (p ??= build().catch((e: unknown) => {
      p = undefined;
      throw e;
    }));
}

/** Builds `target` through a private temp path + rename (concurrent test processes may race). */
export async function cachedFile(
  target: string,
  build: (tmp: string) => Promise<void>,
): Promise<string> {
  if (existsSync(target)) return target;
  mkdirSync(CACHE_BASE, { recursive: true });
  const work = join(CACHE_BASE, `build-${process.pid}-${Date.now()}`);
  mkdirSync(work);
  try {
    const tmp = join(work, "out");
    await build(tmp);
    renameSync(tmp, target);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return target;
}

/** The static tjprobe binary (also usable on the lab host itself, see Lab.hostTcp). */
export const tjprobeBinary = once(() => {
  const source = readFileSync(TJPROBE_SOURCE);
  const hash = createHash("sha256").update(source).digest("hex").slice(0, 16);
  return cachedFile(join(CACHE_BASE, `tjprobe-${hash}`), async (out) => {
    await runOk("gcc", ["-static", "-O2", "-Wall", "-o", out, TJPROBE_SOURCE]);
  });
});

/** The static busybox's bytes; a dynamically linked one would find no libc in the image. */
function staticBusybox(): Buffer {
  const busybox = readFileSync(BUSYBOX);
  if (hasInterpreter(busybox)) {
    throw new Error(`${BUSYBOX} looks dynamically linked; install busybox-static`);
  }
  return busybox;
}

/**
 * A cached rootfs tarball `NAME-HASH.tar`: busybox with its applet links in /bin, plus `extra`
 * (file name in /bin -> host path of a static binary).
 */
async function rootfsTarball(name: string, extra: Record<string, string> = {}): Promise<string> {
  const busybox = staticBusybox();
  const hash = createHash("sha256");
  for (const path of Object.values(extra)) hash.update(readFileSync(path));
  const digest = hash.update(busybox).digest("hex").slice(0, 16);
  return cachedFile(join(CACHE_BASE, `${name}-${digest}.tar`), async (out) => {
    const root = `${out}.rootfs`;
    mkdirSync(join(root, "bin"), { recursive: true });
    mkdirSync(join(root, "tmp"));
    chmodSync(join(root, "tmp"), 0o1777);
    for (const [file, path] of Object.entries({ busybox: BUSYBOX, ...extra })) {
      copyFileSync(path, join(root, "bin", file));
      chmodSync(join(root, "bin", file), 0o755);
    }
    // what `busybox --install -s /bin` would do inside the image
    const applets = (await runOk(BUSYBOX, ["--list"]))
      .split("\n")
      .filter((a) => /^[\w.[-]+$/.test(a));
    for (const a of applets) {
      if (!existsSync(join(root, "bin", a))) symlinkSync("busybox", join(root, "bin", a));
    }
    await runOk("tar", ["--numeric-owner", "--owner=0", "--group=0", "-C", root, "-cf", out, "."]);
  });
}

/** Path of the cached rootfs tarball of the test image (built on first use). */
export const testImageTarball = once(async () =>
  rootfsTarball("tj-test", { tjprobe: await tjprobeBinary() }),
);

/** The same without tjprobe: busybox alone, so no compiler is needed (the demo's image). */
export const busyboxImageTarball = once(() => rootfsTarball("tj-busybox"));

/** True for a dynamically linked ELF64 (it has a PT_INTERP program header). */
function hasInterpreter(elf: Buffer): boolean {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2) return false;
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const off = phoff + i * phentsize;
    if (off + 4 <= elf.length && elf.readUInt32LE(off) === 3) return true;
  }
  return false;
}

/**
 * What a lab's test image is made of: "tjprobe" (the tests': every probe) or "busybox" (no
 * compiler needed: busybox probes only, see Lab.tcp).
 */
export type TestImageKind = "tjprobe" | "busybox";

export interface TestImageSpec {
  tarball: () => Promise<string>;
  /** The image's CMD: serves TCP port 80 at least. */
  cmd: readonly string[];
  /** Succeeds (run with docker exec) once a container running `cmd` serves. */
  ready: readonly string[];
}

export const TEST_IMAGE_SPECS: Readonly<Record<TestImageKind, TestImageSpec>> = {
  tjprobe: {
    tarball: testImageTarball,
    cmd: ["/bin/tjprobe", "serve"],
    ready: ["test", "-e", "/tmp/tjprobe.ready"], // tjprobe serve creates it once it listens
  },
  busybox: {
    tarball: busyboxImageTarball,
    // httpd forks a child per connection and listens with a backlog of 9; `nc -ll` (backlog 2)
    // loses SYNs when a few probes arrive at once, and a lost SYN reads as "blocked". Probes only
    // connect: there is nothing to serve (-h /tmp).
    cmd: ["/bin/httpd", "-f", "-p", "80", "-h", "/tmp"],
    ready: ["nc", "127.0.0.1", "80"], // connects, and exits 0 once httpd closes
  },
};

/** Loads the test image of that kind into an engine as TEST_IMAGE. */
export async function loadTestImage(host: string, kind: TestImageKind = "tjprobe"): Promise<void> {
  const spec = TEST_IMAGE_SPECS[kind];
  const cmd = `CMD ${JSON.stringify(spec.cmd)}`;
  await docker(host, ["import", "--change", cmd, await spec.tarball(), TEST_IMAGE]);
}
