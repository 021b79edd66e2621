// Smoke test of the e2e lab itself, without TrafficJam: a Docker host in a netns, real traffic
// between containers over IPv4 and IPv6, a dockerd restart, the daemon harness (with a fake
// CLI), and a teardown that leaves nothing behind; then a lab of the busybox image (the demo's),
// whose probes must need nothing compiled.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  existsSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  iptablesSave,
  isAlive,
  processStartTime,
  randomId,
  runCli,
  startDaemon,
  startLab,
  type Container,
  type Lab,
} from "./lab/index.js";

const NET = "tjnet";
const OTHER = "othernet";

/** pid -> start time, to tell "still alive" from "pid reused" after stop(). */
function snapshot(pids: number[]): Map<number, string | undefined> {
  return new Map(pids.map((p) => [p, processStartTime(p)]));
}

describe("e2e lab (no TrafficJam)", () => {
  let lab: Lab;
  let a: Container; // on NET and OTHER
  let b: Container; // on NET, publishes 18080 -> 80
  let c: Container; // on OTHER only

  before(async () => {
    lab = await startLab({ name: `smoke-${randomId(2)}`, ipv6: true });
  });
  after(() => lab?.stop());

  it("starts dockerd inside its own netns", async () => {
    assert.equal(readFileSync(`/proc/${lab.dockerdPid}/comm`, "utf8").trim(), "dockerd");
    assert.equal(
      readlinkSync(`/proc/${lab.dockerdPid}/ns/net`),
      `net:[${statSync(lab.netnsPath).ino}]`,
    );
    assert.match(await lab.docker("version", "--format", "{{.Server.Version}}"), /^20\./);
    assert.equal(await lab.nsExec(["sysctl", "-n", "net.bridge.bridge-nf-call-iptables"]), "1\n");
    assert.equal(await lab.nsExec(["sysctl", "-n", "net.bridge.bridge-nf-call-ip6tables"]), "1\n");
  });

  it("runs containers on a dual-stack network and a second network", async () => {
    await lab.createNetwork(NET, { subnets: ["172.30.0.0/24", "fd00:30::/64"] });
    await lab.createNetwork(OTHER, { subnets: ["172.31.0.0/24"] });
    [a, b, c] = await Promise.all([
      lab.run({
        name: "ca",
        network: [NET, OTHER],
        ip: "172.30.0.10",
        ip6: "fd00:30::10",
        restart: "always",
      }),
      lab.run({
        name: "cb",
        network: NET,
        ip: "172.30.0.11",
        ip6: "fd00:30::11",
        publish: ["18080:80"],
        restart: "always",
        labels: { role: "backend" },
      }),
      lab.run({ name: "cc", network: OTHER }),
    ]);
    assert.equal(a.ipv4, "172.30.0.10");
    assert.equal(a.ipv6, "fd00:30::10");
    assert.match(a.ipOn(OTHER), /^172\.31\.0\./);
    assert.throws(() => c.ipOn(NET));
    assert.equal(await lab.hostAddressOf(NET), "172.30.0.1");
    assert.equal(await lab.hostAddressOf(NET, 6), "fd00:30::1");
  });

  it("A reaches B over IPv4 and IPv6 (tcp 80/8080, udp 9000, ping)", async () => {
    const results = await Promise.all([
      lab.tcp(a, b.ipv4, 80),
      lab.tcp(a, b.ipv4, 8080),
      lab.udp(a, b.ipv4, 9000),
      lab.ping(a, b.ipv4),
      lab.tcp(a, b.ipv6, 80),
      lab.udp(a, b.ipv6, 9000),
      lab.ping(a, b.ipv6),
    ]);
    assert.deepEqual(results, [true, true, true, true, true, true, true]);
    assert.equal(await lab.tcp(a, b.ipv4, 81, 500), false, "closed port must read as false");
    const log = await lab.udpLog(b);
    assert.ok(log.includes("172.30.0.10 probe"), log.join("\n"));
    assert.ok(log.includes("fd00:30::10 probe"), log.join("\n"));
  });

  it("the lab firewall is Docker's: networks are isolated, published ports work via the gateway", async () => {
    assert.equal(await lab.tcp(a, c.ipv4, 80), true, "A shares OTHER with C");
    assert.equal(await lab.tcp(b, c.ipv4, 80, 300), false, "DOCKER-ISOLATION between networks");
    assert.equal(await lab.tcp(a, await lab.hostAddressOf(NET), 18080), true);
    const v4 = await iptablesSave(lab, 4);
    assert.match(v4, /:FORWARD DROP/);
    assert.match(v4, /:DOCKER-USER/);
    assert.match(await iptablesSave(lab, 6), /:DOCKER /);
  });

  it("probes: watch, forged UDP sources", async () => {
    const w = await lab.watch(a, b.ipv4, 80, 20, 10);
    assert.deepEqual([w.ok, w.fail, w.attempts.length], [10, 0, 10]);
    await lab.spoofUdp(a, "172.30.0.99", b.ipv4, 9000, "forged4");
    await lab.spoofUdp(a, "fd00:30::99", b.ipv6, 9000, "forged6");
    for (let i = 0; i < 20; i++) {
      const log = await lab.udpLog(b);
      if (log.includes("172.30.0.99 forged4") && log.includes("fd00:30::99 forged6")) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.fail(`forged datagrams not received: ${(await lab.udpLog(b)).join(" | ")}`);
  });

  it("the lab host probes containers and serves them", async () => {
    assert.equal(await lab.tcp(lab.host, b.ipv4, 80), true);
    assert.equal(await lab.udp(lab.host, b.ipv6, 9000), true);
    assert.equal(await lab.ping(lab.host, b.ipv6), true);
    const server = await lab.startHostServer();
    const gw = await lab.hostAddressOf(NET);
    assert.equal(await lab.tcp(a, gw, 8080), true);
    assert.equal(await lab.udp(a, await lab.hostAddressOf(NET, 6), 9000, 1000, "tohost"), true);
    assert.ok(server.udpLog().includes("fd00:30::10 tohost"), server.udpLog().join("\n"));
    await server.stop();
    assert.equal(await lab.tcp(a, gw, 8080, 300), false);
  });

  it("runs a daemon in the netns with signals reaching node itself", async () => {
    const dir = mkdtempSync(join(tmpdir(), "tj-fake-cli-"));
    try {
      const cli = join(dir, "cli.mjs");
      writeFileSync(
        cli,
        `import { readlinkSync } from "node:fs";
const log = (msg, extra = {}) => process.stdout.write(JSON.stringify({ level: 30, msg, ...extra }) + "\\n");
if (process.argv.includes("--clear")) { process.stderr.write("plain line\\n"); log("cleared"); process.exit(0); }
process.on("SIGTERM", () => { log("terminating"); process.exit(0); });
log("started", { net: readlinkSync("/proc/self/ns/net"), host: process.env.DOCKER_HOST, ctx: process.env.NODE_TEST_CONTEXT ?? null, network: process.env.NETWORK });
setInterval(() => {}, 1000);
`,
      );
      const d = startDaemon(lab, { NETWORK: NET }, [], { cliPath: cli });
      const started = await d.waitForLog((e) => e.msg === "started", 10_000);
      assert.deepEqual(started, {
        level: 30,
        msg: "started",
        net: `net:[${statSync(lab.netnsPath).ino}]`,
        host: lab.dockerHost,
        ctx: null,
        network: NET,
      });
      d.signal("SIGTERM");
      await d.waitForLog(/"terminating"/, 5_000);
      assert.deepEqual(await d.waitExit(5_000), { code: 0, signal: null });
      const r = await runCli(lab, {}, ["--clear"], 10_000, { cliPath: cli });
      assert.equal(r.code, 0);
      assert.equal(r.stderr, "plain line\n");
      assert.match(r.stdout, /"cleared"/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("restarts dockerd; restart=always containers come back", async () => {
    const before = lab.dockerdPid;
    await lab.restartDockerd();
    assert.notEqual(lab.dockerdPid, before);
    assert.equal(existsSync(`/proc/${before}`), false);
    const b2 = await lab.inspect("cb", [NET]);
    let ok = false;
    for (let i = 0; i < 50 && !ok; i++) {
      ok = await lab.tcp("ca", b2.ipv4, 80, 500).catch(() => false); // exec fails until ca is up again
      if (!ok) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(ok, "ca -> cb after restart");
    assert.equal(await lab.tcp("ca", b2.ipv6, 8080), true);
  });

  it("stop() removes everything it created", async () => {
    const containerPids = (await lab.docker("inspect", "-f", "{{.State.Pid}}", "ca", "cb", "cc"))
      .split("\n")
      .map(Number)
      .filter((p) => p > 0);
    const nsPids = execFileSync("ip", ["netns", "pids", lab.netns])
      .toString()
      .split("\n")
      .filter(Boolean)
      .map(Number);
    assert.ok(nsPids.includes(lab.dockerdPid));
    assert.ok(nsPids.length >= 3, `dockerd, containerd, shims: ${nsPids}`); // plus docker-proxy
    const started = snapshot([...containerPids, ...nsPids]);
    const t0 = Date.now();
    await lab.stop();
    const took = Date.now() - t0;
    await lab.stop(); // idempotent

    assert.deepEqual(lab.leftovers(), []);
    assert.ok(!execFileSync("ip", ["netns", "list"]).toString().includes(lab.netns));
    const alive = [...started].filter(([pid, start]) => isAlive(pid, start)); // zombies are dead
    assert.deepEqual(alive, [], "processes still alive");
    const mounts = readFileSync("/proc/self/mountinfo", "utf8");
    for (const p of [lab.paths.base, lab.paths.runDir, lab.netnsPath]) {
      assert.ok(!mounts.includes(p), `mount under ${p}`);
      assert.equal(existsSync(p), false, `${p} still exists`);
    }
    assert.equal(existsSync(`/sys/fs/cgroup/memory${lab.paths.cgroupParent}`), false);
    const ps = execFileSync("ps", ["-eo", "args"]).toString();
    assert.ok(!ps.includes(lab.paths.dataRoot), "a dockerd of this lab is still listed by ps");
    assert.ok(took < 15_000, `stop took ${took} ms`);
  });
});

describe("e2e lab of the busybox image (the demo's: no tjprobe, so no compiler)", () => {
  let lab: Lab;
  let a: Container; // on NET and OTHER
  let b: Container; // on NET
  let c: Container; // on OTHER only

  before(async () => {
    lab = await startLab({ name: `bb-${randomId(2)}`, image: "busybox" });
    await lab.createNetwork(NET, { subnets: ["172.30.0.0/24"] });
    await lab.createNetwork(OTHER, { subnets: ["172.31.0.0/24"] });
    [a, b, c] = await Promise.all([
      lab.run({ name: "ba", network: [NET, OTHER] }),
      lab.run({ name: "bb", network: NET, publish: ["18080:80"] }),
      lab.run({ name: "bc", network: OTHER }),
    ]);
  });
  after(() => lab?.stop());

  it("holds busybox alone", async () => {
    assert.equal((await lab.exec(a, ["test", "-e", "/bin/tjprobe"])).code, 1);
    assert.equal((await lab.exec(a, ["test", "-x", "/bin/nc"])).code, 0);
  });

  it("tcp (busybox nc): open, refused, dropped; from containers and the lab host", async () => {
    const results = await Promise.all([
      lab.tcp(a, b.ipv4, 80),
      lab.tcp(a, await lab.hostAddressOf(NET), 18080),
      lab.tcp(lab.host, b.ipv4, 80),
      lab.tcp(a, b.ipv4, 81),
      lab.tcp(b, c.ipv4, 80, 300), // DOCKER-ISOLATION drops it: nc times out after 1 s
    ]);
    assert.deepEqual(results, [true, true, true, false, false]);
    assert.equal(await lab.ping(a, c.ipv4), true);
  });

  it("a probe that did not run throws instead of reading as blocked", async () => {
    await assert.rejects(lab.tcp("no-such-container", b.ipv4, 80), /nc did not run properly/);
    await assert.rejects(lab.tcp(a, "172.30.0.300", 80), /not an IP address/);
  });

  it("refuses what needs tjprobe instead of compiling it", async () => {
    await assert.rejects(lab.udp(a, b.ipv4), /tjprobe udp needs tjprobe/);
    await assert.rejects(lab.udp(lab.host, b.ipv4), /tjprobe udp needs tjprobe/);
    await assert.rejects(lab.startHostServer(), /needs tjprobe/);
  });

  it("stop() removes everything it created", async () => {
    await lab.stop();
    assert.deepEqual(lab.leftovers(), []);
  });
});
