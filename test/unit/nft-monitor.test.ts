// nft monitor's lines: a commit of ours is no change, somebody else's is, and it is told at once.
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { NftChangeMonitor, classifyMonitorLine } from "../../src/host/nft-monitor.js";
import { commOf, isOwnCommit, noteToolRun, resetOwnTools } from "../../src/host/own-tools.js";

test("monitor lines: what changed, then the commit naming its process", () => {
  const own = (pid: number) => pid === 42;
  assert.equal(classifyMonitorLine("", own), "blank");
  assert.equal(classifyMonitorLine("add rule ip filter FORWARD counter accept", own), "content");
  assert.equal(classifyMonitorLine("# new generation 7 by process 42 (nft)", own), "own");
  assert.equal(classifyMonitorLine("# new generation 8 by process 43 (iptables)", own), "foreign");
  // A comment that is no commit line is content: told as a change, never skipped.
  assert.equal(classifyMonitorLine("# new generation by somebody", own), "content");
});

test("the kernel's name of a tool: its file name cut to 15 characters, nsenter looked through", () => {
  assert.equal(commOf("iptables-nft-restore", ["--noflush"]), "iptables-nft-re");
  assert.equal(commOf("nsenter", ["--net=/run/netns/x", "--", "nft", "-f", "-"]), "nft");
  assert.equal(commOf("/usr/sbin/nft", ["-f", "-"]), "nft");
});

test("before our pids are seen: a commit is ours by its name while a writing tool of ours runs, once per run", () => {
  resetOwnTools();
  const t0 = Date.now();
  const restore = ["--net=/x", "--", "iptables-nft-restore", "--noflush"];
  const ended = noteToolRun(900_001, "nsenter", restore, t0);
  // In a container the kernel names the host's pid: the name, while ours runs.
  assert.equal(isOwnCommit(123_456, "iptables", t0 + 1), false, "Docker's iptables is not ours");
  assert.equal(isOwnCommit(123_456, "iptables-nft-re", t0 + 1), true);
  assert.equal(isOwnCommit(123_457, "iptables-nft-re", t0 + 2), false, "one commit per run");
  ended();
  const end = Date.now();
  noteToolRun(900_002, "nsenter", restore, end)();
  assert.equal(isOwnCommit(123_458, "iptables-nft-re", end + 100), true, "its line comes late");
  noteToolRun(900_003, "nsenter", restore, end)();
  assert.equal(isOwnCommit(123_459, "iptables-nft-re", end + 1_000), false, "long after: not ours");
  // A listing commits nothing: a commit by somebody's nft while ours lists is theirs.
  const listing = noteToolRun(900_004, "nft", ["-j", "list", "table", "inet", "x"], end);
  assert.equal(isOwnCommit(123_460, "nft", end + 1), false);
  listing();
});

test("once the kernel names one of our pids, pids alone decide", () => {
  resetOwnTools();
  const t0 = Date.now();
  const ended = noteToolRun(900_010, "nft", ["-f", "-"], t0);
  assert.equal(isOwnCommit(900_010, "nft", t0 + 1), true, "our pid");
  noteToolRun(900_011, "nft", ["-f", "-"], t0);
  assert.equal(isOwnCommit(123_461, "nft", t0 + 2), false, "same name, another pid: not ours");
  ended();
  resetOwnTools();
});

test("somebody else's commit is told once, after its burst; the watch sees it as a change", async () => {
  // A stand-in for nft on PATH: prints what `nft monitor` prints for a foreign commit, then waits.
  const dir = mkdtempSync(join(tmpdir(), "tj-nft-"));
  const fake = join(dir, "nft");
  writeFileSync(
    fake,
    [
      "#!/bin/sh",
      "sleep 0.7",
      "echo 'add table inet x'",
      "echo '# new generation 3 by process 999999 (nft)'",
      "echo 'add chain inet x c'",
      "echo '# new generation 4 by process 999999 (nft)'",
      "sleep 0.5",
      "echo 'delete table inet x'",
      "echo '# new generation 5 by process 999999 (nft)'",
      "exec sleep 30",
      "",
    ].join("\n"),
  );
  chmodSync(fake, 0o755);
  const path = process.env.PATH;
  process.env.PATH = `${dir}:${path}`;
  const monitor = new NftChangeMonitor();
  try {
    const told: number[] = [];
    let second: () => void = () => undefined;
    const toldTwice = new Promise<void>((resolve) => (second = resolve));
    const toldOnce = new Promise<void>((resolve) =>
      monitor.onChange(() => {
        told.push(Date.now());
        if (told.length === 1) resolve();
        else second();
      }),
    );
    monitor.start();
    const startedAt = Date.now();
    // Past the subscription grace, before the change: quiet.
    await new Promise((r) => setTimeout(r, 600));
    assert.equal(monitor.quietSince(startedAt + 550), true);
    await toldOnce;
    assert.equal(monitor.quietSince(startedAt + 550), false, "a change after that moment");
    // The third commit, half a second later, is told on its own: the first two made one call.
    await toldTwice;
    assert.equal(told.length, 2);
  } finally {
    monitor.stop();
    process.env.PATH = path;
    rmSync(dir, { recursive: true, force: true });
  }
});
