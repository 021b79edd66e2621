// The test image, without any registry: the equivalent of
//   FROM scratch / COPY busybox tjprobe /bin/ / RUN busybox --install -s /bin / CMD tjprobe serve
// assembled as a root-filesystem tarball on the host (applet symlinks made here, tjprobe built
// with gcc -static) and loaded with `docker import`. No builder, no container run: ~0.2 s per lab.
// Binary and tarball are cached in the temp folder, keyed by their inputs' hash, shared by all labs.
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

/** Path of the cached rootfs tarball of the test image (built on first use). */
export const testImageTarball = once(async () => {
  const tjprobe = await tjprobeBinary();
  const busybox = readFileSync(BUSYBOX);
  if (hasInterpreter(busybox)) {
    throw new Error(`${BUSYBOX} looks dynamically linked; install busybox-static`);
  }
  const hash = createHash("sha256")
    .update(readFileSync(tjprobe))
    .update(busybox)
    .digest("hex")
    .slice(0, 16);
  return cachedFile(join(CACHE_BASE, `tj-test-${hash}.tar`), async (out) => {
    const root = `${out}.rootfs`;
    mkdirSync(join(root, "bin"), { recursive: true });
    mkdirSync(join(root, "tmp"));
    chmodSync(join(root, "tmp"), 0o1777);
    copyFileSync(BUSYBOX, join(root, "bin", "busybox"));
    chmodSync(join(root, "bin", "busybox"), 0o755);
    copyFileSync(tjprobe, join(root, "bin", "tjprobe"));
    chmodSync(join(root, "bin", "tjprobe"), 0o755);
    // what `busybox --install -s /bin` would do inside the image
    const applets = (await runOk(BUSYBOX, ["--list"]))
      .split("\n")
      .filter((a) => /^[\w.[-]+$/.test(a));
    for (const a of applets) {
      if (!existsSync(join(root, "bin", a))) symlinkSync("busybox", join(root, "bin", a));
    }
    await runOk("tar", ["--numeric-owner", "--owner=0", "--group=0", "-C", root, "-cf", out, "."]);
  });
});

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

/** Loads the test image into an engine as TEST_IMAGE. */
export async function loadTestImage(host: string): Promise<void> {
  const tarball = await testImageTarball();
  await docker(host, ["import", "--change", 'CMD ["/bin/tjprobe","serve"]', tarball, TEST_IMAGE]);
}
