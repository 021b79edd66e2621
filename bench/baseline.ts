// The code the lean figures are compared with: a past commit (BENCH_BASELINE, default 958cd15)
// unpacked with `git archive` into the bench's temp folder, `npm ci` and `npm run build` there (its
// own node_modules: the old code still loads dockerode). No git worktree is registered, so nothing
// is left in the repository's metadata; the folder is kept as a cache, keyed by the full commit
// id, and reused while its build is complete (a `.bench-ready` marker written last).
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CLI_PATH, REPO_ROOT } from "../test/e2e/lab/index.js";
import { runOk } from "../test/e2e/lab/exec.js";

/** The bench's own temp folder (baseline builds, image tarballs). */
export const BENCH_TMP = join(tmpdir(), "tj-bench");

export interface Variant {
  key: "before" | "now";
  /** For the table's header, e.g. "before (958cd15)". */
  label: string;
  /** Folder with package.json, src/, dist/ and the Dockerfile. */
  root: string;
  cli: string;
}

const git = (...args: string[]): string =>
  execFileSync("git", ["-C", REPO_ROOT, ...args], { encoding: "utf8" }).trim();

/** The code under test: this checkout, built by `npm run bench` (npm run build) before it runs. */
export function currentVariant(): Variant {
  let rev = "?";
  try {
    rev = git("rev-parse", "--short", "HEAD");
    if (git("status", "--porcelain", "--", "src", "package.json", "package-lock.json") !== "")
      rev += "+changes";
  } catch {
    // not a git checkout: the label says so
  }
  return { key: "now", label: `now (${rev})`, root: REPO_ROOT, cli: CLI_PATH };
}

const ENV = (): NodeJS.ProcessEnv => ({
  PATH: process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin",
  HOME: process.env.HOME ?? "/root",
  ...(process.env.NODE_EXTRA_CA_CERTS
    ? { NODE_EXTRA_CA_CERTS: process.env.NODE_EXTRA_CA_CERTS }
    : {}),
});

/** The baseline, built on first use; `rev` is any commit-ish of this repository. */
export async function baselineVariant(rev: string, log: (s: string) => void): Promise<Variant> {
  const sha = git("rev-parse", "--verify", `${rev}^{commit}`);
  const short = sha.slice(0, 7);
  const root = join(BENCH_TMP, `baseline-${sha}`);
  const cli = join(root, "dist", "cli.js");
  const variant: Variant = { key: "before", label: `before (${short})`, root, cli };
  const ready = join(root, ".bench-ready");
  if (existsSync(ready) && existsSync(cli)) {
    log(`  baseline ${short}: cached build in ${root}`);
    return variant;
  }
  const started = performance.now();
  rmSync(root, { recursive: true, force: true });
  mkdirSync(root, { recursive: true });
  try {
    log(`  baseline ${short}: git archive → ${root}`);
    const tar = `${root}.tar`;
    git("archive", "--format=tar", "-o", tar, sha);
    try {
      await runOk("tar", ["-xf", tar, "-C", root]);
    } finally {
      rmSync(tar, { force: true });
    }
    log(`  baseline ${short}: npm ci`);
    await runOk("npm", ["ci", "--no-audit", "--no-fund", "--prefix", root], {
      timeoutMs: 900_000,
      env: ENV(),
    });
    log(`  baseline ${short}: npm run build`);
    await runOk("npm", ["run", "build", "--prefix", root], { timeoutMs: 300_000, env: ENV() });
    if (!existsSync(cli)) throw new Error(`${cli} missing after the build`);
    writeFileSync(ready, `${sha}\n`);
  } catch (e) {
    rmSync(root, { recursive: true, force: true });
    throw e;
  }
  log(`  baseline ${short}: built in ${((performance.now() - started) / 1000).toFixed(0)} s`);
  // Builds of other commits are not reused: only the newest one is kept.
  for (const entry of readdirSync(BENCH_TMP))
    if (entry.startsWith("baseline-") && entry !== `baseline-${sha}`)
      rmSync(join(BENCH_TMP, entry), { recursive: true, force: true });
  return variant;
}
