// The log: one JSON line per event, with the stable `event` field, the level, the time in TZ.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createLog, errorFields } from "../../src/log.js";
import { CommandError } from "../../src/host/exec.js";

function capture(debug = false) {
  const lines: string[] = [];
  const log = createLog({ debug, timeZone: "Asia/Kolkata", instanceId: "web" }, (l) =>
    lines.push(l),
  );
  return { log, lines, parsed: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

test("a line: level, time in TZ, instance, event, the fields, then the message", () => {
  const { log, lines, parsed } = capture();
  log.info("rules.applied", "rules applied", { location: "nftables", ms: 12.5 });
  assert.equal(lines.length, 1);
  assert.ok(lines[0]!.endsWith("\n"));
  const [entry] = parsed();
  assert.deepEqual(Object.keys(entry!), [
    "level",
    "time",
    "instance",
    "event",
    "location",
    "ms",
    "msg",
  ]);
  assert.equal(entry!.level, "info");
  assert.match(String(entry!.time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+05:30$/);
  assert.deepEqual(
    { instance: entry!.instance, event: entry!.event, msg: entry!.msg },
    { instance: "web", event: "rules.applied", msg: "rules applied" },
  );
});

test("debug lines only with DEBUG", () => {
  const quiet = capture(false);
  quiet.log.debug("docker.event", "docker event");
  quiet.log.warn("network.missing", "network not found");
  assert.deepEqual(
    quiet.parsed().map((e) => e.event),
    ["network.missing"],
  );
  const loud = capture(true);
  loud.log.debug("docker.event", "docker event");
  assert.equal(loud.lines.length, 1);
});

test("an error is written as data: type, message, stack, its own fields and its cause", () => {
  const { log, parsed } = capture();
  const failure = new CommandError("nft -f -", "exit", 1, "Error: Could not process rule");
  log.error("reconcile.failed", "reconcile failed", {
    err: new Error("pass failed", { cause: failure }),
  });
  const err = parsed()[0]!.err as Record<string, unknown>;
  assert.equal(err.type, "Error");
  assert.equal(err.message, "pass failed");
  assert.match(String(err.stack), /pass failed/);
  const cause = err.cause as Record<string, unknown>;
  assert.equal(cause.type, "CommandError");
  assert.equal(cause.stderr, "Error: Could not process rule");
  assert.equal(cause.exitCode, 1);
  assert.equal(errorFields("not an error"), "not an error");
});
