// A Node base image made here, without any registry: the stand-in for node:20-bookworm-slim when
// the tests build the product's Dockerfile (`--build-arg BASE=tj-node-base`).
//   debootstrap --variant=minbase bookworm  +  the host's own node binary and npm in /usr/local
// laid out like the official image (node and npm in /usr/local/bin). The rootfs tarball is cached
// in the temp folder, keyed by its inputs (node binary, npm version, this recipe), so only the
// first run on a machine pays for debootstrap (about a minute); later runs `docker import` it.
import { createHash } from "node:crypto";
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { dirname, join } from "node:path";
import { realpathSync } from "node:fs";
import { docker } from "./docker-cli.js";
import { runOk } from "./exec.js";
import { cachedFile, once } from "./image.js";
import { CACHE_BASE } from "./paths.js";

export const NODE_BASE_IMAGE = "tj-node-base";
const SUITE = "bookworm";
const MIRROR = process.env.TJ_E2E_DEBIAN_MIRROR ?? "http://deb.debian.org/debian";
const RECIPE_VERSION = "1";
/**
 * A machine whose outbound TLS passes through an inspecting proxy trusts an extra CA and tells Node
 * so with NODE_EXTRA_CA_CERTS: the base then carries that bundle and that variable too, as a
 * company's own base image would. Unset (the usual case): nothing is added.
 */
const EXTRA_CA = process.env.NODE_EXTRA_CA_CERTS;
const CA_IN_IMAGE = "/etc/ssl/certs/tj-extra-ca.crt";

/** The host's npm package folder (…/lib/node_modules/npm), found from the `npm` on PATH. */
function npmDir(): string {
  const cli = realpathSync(join(dirname(process.execPath), "npm"));
  return dirname(dirname(cli)); // …/npm/bin/npm-cli.js → …/npm
}

/** Path of the cached rootfs tarball of the Node base (built on first use). */
export const nodeBaseTarball = once(async () => {
  const node = realpathSync(process.execPath);
  const npm = npmDir();
  const npmVersion = (
    JSON.parse(readFileSync(join(npm, "package.json"), "utf8")) as {
      version: string;
    }
  ).version;
  const hash = createHash("sha256")
    .update(readFileSync(node))
    .update(`${npmVersion} ${SUITE} ${MIRROR} ${RECIPE_VERSION}`)
    .update(EXTRA_CA ? readFileSync(EXTRA_CA) : "")
    .digest("hex")
    .slice(0, 16);
  return cachedFile(join(CACHE_BASE, `node-base-${hash}.tar`), async (out) => {
    const root = `${out}.rootfs`;
    await runOk("debootstrap", ["--variant=minbase", SUITE, root, MIRROR], {
      timeoutMs: 600_000,
    });
    // What the official image has: node and npm in /usr/local, no package caches.
    mkdirSync(join(root, "usr/local/bin"), { recursive: true });
    cpSync(node, join(root, "usr/local/bin/node"));
    cpSync(npm, join(root, "usr/local/lib/node_modules/npm"), { recursive: true });
    symlinkSync("../lib/node_modules/npm/bin/npm-cli.js", join(root, "usr/local/bin/npm"));
    symlinkSync("../lib/node_modules/npm/bin/npx-cli.js", join(root, "usr/local/bin/npx"));
    if (EXTRA_CA) {
      mkdirSync(join(root, dirname(CA_IN_IMAGE)), { recursive: true });
      cpSync(EXTRA_CA, join(root, CA_IN_IMAGE));
    }
    for (const dir of ["var/cache/apt/archives", "var/lib/apt/lists"]) {
      const path = join(root, dir);
      if (!existsSync(path)) continue;
      await runOk("find", [path, "-maxdepth", "1", "-type", "f", "-delete"]);
    }
    try {
      await runOk("tar", [
        ...["--numeric-owner", "--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*"],
        ...["-C", root, "-cf", out, "."],
      ]);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

/** Loads the Node base into an engine as NODE_BASE_IMAGE (PATH and CMD as in node:20). */
export async function loadNodeBase(host: string): Promise<void> {
  const tarball = await nodeBaseTarball();
  await docker(
    host,
    [
      "import",
      ...["--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
      ...["--change", 'CMD ["node"]'],
      ...(EXTRA_CA ? ["--change", `ENV NODE_EXTRA_CA_CERTS=${CA_IN_IMAGE}`] : []),
      tarball,
      NODE_BASE_IMAGE,
    ],
    { timeoutMs: 180_000 },
  );
}
