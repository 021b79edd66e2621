// The boot guard's pure parts (the saved ruleset, the systemd unit, the folder) and the daemon's
// side of it with a fake nft: opened once after the first successful pass, saved when the bridge
// changes, failures said once and tried again. The real kernel: test/e2e/boot-guard.test.ts.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  BootGuard,
  bootGuardDir,
  bootGuardFile,
  loadCommand,
  renderBootGuard,
  renderUnit,
  SYSCTL_COMMAND,
} from "../../src/ops/boot-guard.js";
import { ConfigError } from "../../src/config.js";
import { createLog } from "../../src/log.js";
import { computeRuleset } from "../../src/policy.js";
import type { PassOutcome } from "../../src/reconciler.js";
import { SCENARIOS } from "./fixtures.js";

const ruleset = computeRuleset(SCENARIOS[0]!.snapshot, {
  instanceId: "web",
  allowHostTraffic: false,
});

test("the saved ruleset closes the bridge on the forward and input hooks, replaced whole on load", () => {
  const text = renderBootGuard("web", "traefik_public", "br-3f2a9c1d0e4b", "2026-12-07T10:00:00Z");
  const rules = text.split("\n").filter((l) => !l.startsWith("#"));
  assert.deepEqual(rules, [
    "table inet trafficjam-boot_web",
    "delete table inet trafficjam-boot_web",
    "table inet trafficjam-boot_web {",
    "\tchain forward {",
    "\t\ttype filter hook forward priority -200; policy accept;",
    '\t\tiifname "br-3f2a9c1d0e4b" drop',
    "\t}",
    "\tchain input {",
    "\t\ttype filter hook input priority -200; policy accept;",
    '\t\tiifname "br-3f2a9c1d0e4b" drop',
    "\t}",
    "}",
    "",
  ]);
});

test("a bridge name nft or a shell would read otherwise is refused", () => {
  for (const bad of ['br-x" accept #', "br-x;", "", "a-name-longer-than-15"])
    assert.throws(() => renderBootGuard("web", "n", bad, "now"), /not a bridge name/);
});

test("the unit loads every saved ruleset before Docker, after switching br_netfilter on", () => {
  const unit = renderUnit("/var/lib/trafficjam/boot-guard");
  const line = (key: string) =>
    unit
      .split("\n")
      .filter((l) => l.startsWith(`${key}=`))
      .map((l) => l.slice(key.length + 1));
  assert.deepEqual(line("Before"), ["docker.service network-pre.target"]);
  assert.deepEqual(line("WantedBy"), ["docker.service"]);
  assert.deepEqual(line("Type"), ["oneshot"]);
  assert.deepEqual(line("ExecStart"), [`nft 'include "/var/lib/trafficjam/boot-guard/*.nft"'`]);
  assert.deepEqual(line("ExecStartPre"), ["-modprobe br_netfilter", SYSCTL_COMMAND.join(" ")]);
  assert.deepEqual(loadCommand("/var/lib/trafficjam/boot-guard"), [
    "nft",
    'include "/var/lib/trafficjam/boot-guard/*.nft"',
  ]);
  // systemd would expand $ and %: the unit has neither
  assert.doesNotMatch(unit.replace(/^#.*$/gm, ""), /[$%]/);
});

test("the guard's folder: default, override, and anything but a plain absolute path refused (exit 2)", () => {
  assert.equal(bootGuardDir({}), "/var/lib/trafficjam/boot-guard");
  assert.equal(bootGuardDir({ TRAFFICJAM_BOOT_GUARD_DIR: "/srv/tj/" }), "/srv/tj");
  for (const bad of ["relative", "/a b", "/a/../etc", '/x"y', "/a%i"])
    assert.throws(() => bootGuardDir({ TRAFFICJAM_BOOT_GUARD_DIR: bad }), ConfigError);
});

function harness(opts: { save: boolean; dir: string; open: (id: string) => Promise<boolean> }) {
  const lines: Array<Record<string, unknown>> = [];
  const log = createLog({ debug: true, timeZone: "UTC", instanceId: "web" }, (l) => {
    lines.push(JSON.parse(l) as Record<string, unknown>);
  });
  const guard = new BootGuard({ instanceId: "web", version: "9.9.9", log, ...opts });
  const events = () => lines.map((l) => `${String(l.level)} ${String(l.event)}`);
  return { guard, lines, events };
}

const ok = (bridge: string | null = ruleset.bridge): PassOutcome => ({
  ok: true,
  at: 0,
  ruleset: { ...ruleset, bridge },
  location: "fake",
});

test("opened once, after the first successful pass, whether or not saving is on", async () => {
  const dir = mkdtempSync(join(tmpdir(), "tj-bootguard-"));
  try {
    let opens = 0;
    const { guard, events } = harness({
      save: false,
      dir,
      open: async () => (opens++, true),
    });
    await guard.passed({ ok: false, at: 0, error: "docker down" });
    assert.equal(opens, 0, "a failed pass puts no rule in force: the guard stays closed");
    await guard.passed(ok());
    await guard.passed(ok());
    assert.equal(opens, 1);
    assert.deepEqual(events(), ["info boot.guard.opened"]);
    assert.equal(existsSync(bootGuardFile(dir, "web")), false, "BOOT_GUARD off saves nothing");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("no guard table at boot: nothing said; an open that fails is said once and tried again", async () => {
  const dir = mkdtempSync(join(tmpdir(), "tj-bootguard-"));
  try {
    const answers = [new Error("nft: busy"), new Error("nft: busy"), false];
    const { guard, events } = harness({
      save: false,
      dir,
      open: async () => {
        const next = answers.shift();
        if (next instanceof Error) throw next;
        return next ?? false;
      },
    });
    for (let i = 0; i < 4; i++) await guard.passed(ok());
    assert.deepEqual(events(), ["error boot.guard.failed", "debug boot.guard.failed"]);
    assert.equal(answers.length, 0, "tried again until it answered, then no more");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("BOOT_GUARD on: saved at the first pass and when the bridge changes, never for no bridge", async () => {
  const dir = mkdtempSync(join(tmpdir(), "tj-bootguard-"));
  try {
    const { guard, lines, events } = harness({ save: true, dir, open: async () => false });
    const file = bootGuardFile(dir, "web");
    await guard.passed(ok("br-aaaaaaaaaaaa"));
    assert.match(readFileSync(file, "utf8"), /iifname "br-aaaaaaaaaaaa" drop/);
    assert.match(readFileSync(file, "utf8"), /by TrafficJam 9\.9\.9/);
    await guard.passed(ok("br-aaaaaaaaaaaa"));
    await guard.passed(ok(null)); // the network removed: the last bridge stays saved
    await guard.passed(ok("br-bbbbbbbbbbbb"));
    assert.match(readFileSync(file, "utf8"), /iifname "br-bbbbbbbbbbbb" drop/);
    assert.doesNotMatch(readFileSync(file, "utf8"), /br-aaaaaaaaaaaa/);
    assert.deepEqual(events(), ["info boot.guard.saved", "info boot.guard.saved"]);
    assert.deepEqual(
      lines.map((l) => l.bridge),
      ["br-aaaaaaaaaaaa", "br-bbbbbbbbbbbb"],
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("BOOT_GUARD on without its folder: a warning once, then saved once the folder exists", async () => {
  const parent = mkdtempSync(join(tmpdir(), "tj-bootguard-"));
  const dir = join(parent, "missing");
  try {
    const { guard, events } = harness({ save: true, dir, open: async () => false });
    await guard.passed(ok());
    await guard.passed(ok());
    assert.deepEqual(events(), ["warn boot.guard.failed", "debug boot.guard.failed"]);
    const { mkdirSync } = await import("node:fs");
    mkdirSync(dir);
    await guard.passed(ok());
    assert.ok(existsSync(bootGuardFile(dir, "web")));
    assert.equal(events().at(-1), "info boot.guard.saved");
  } finally {
    rmSync(parent, { recursive: true, force: true });
  }
});
