// scripts/install-deps.sh on made-up hosts, without root and without installing anything: the
// tools it looks for live in a folder of stubs (TJ_DEPS_PATH), and apt-get, dpkg and systemctl
// are fakes that record their calls. A simulation (`apt-get -s`) goes to the real apt-get, which
// reads a faked dpkg status (-o Dir::State::status=...) and so plans as it would on that host;
// the fake never lets a real install through.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const SCRIPT = fileURLToPath(new URL("../../scripts/install-deps.sh", import.meta.url));
const DPKG_STATUS = "/var/lib/dpkg/status";

/** Every tool (and pseudo-tool stub) the test profile looks for on TJ_DEPS_PATH. */
const TOOLS = [
  ...["dockerd", "docker-proxy", "docker", "containerd", "containerd-shim-runc-v2", "runc"],
  ...["iptables", "ip6tables", "iptables-nft", "iptables-legacy", "nft", "ip", "nsenter"],
  ...["sysctl", "ps", "gcc", "conntrack", "debootstrap", "docker-compose", "python3"],
  "docker-registry",
  ...["tcpdump", "prometheus", "promtool"],
];

/** What Docker's own packages declare (docker-ce-packaging, containerd-packaging). */
const DOCKER_CE = `Package: docker-ce
Status: install ok installed
Priority: optional
Section: admin
Maintainer: Docker <support@docker.com>
Architecture: amd64
Version: 5:28.2.2-1~debian.12~bookworm
Depends: containerd.io (>= 1.7.27), docker-ce-cli
Conflicts: docker (<< 1.5~), docker-engine, docker.io
Replaces: docker-engine, docker-ce-cli (<< 5:28.0.0)
Description: Docker: the open-source application container engine

Package: docker-ce-cli
Status: install ok installed
Priority: optional
Section: admin
Maintainer: Docker <support@docker.com>
Architecture: amd64
Version: 5:28.2.2-1~debian.12~bookworm
Conflicts: docker (<< 1.5~), docker-engine, docker.io
Replaces: docker-ce (<< 5:0)
Breaks: docker-ce (<< 5:0)
Description: Docker CLI: the open-source application container engine

Package: containerd.io
Status: install ok installed
Priority: optional
Section: devel
Maintainer: Containerd team <help@containerd.io>
Architecture: amd64
Version: 1.7.27-1
Provides: containerd, runc
Conflicts: containerd, runc
Replaces: containerd, runc
Description: An open and reliable container runtime

Package: docker-compose-plugin
Status: install ok installed
Priority: optional
Maintainer: Docker <support@docker.com>
Architecture: amd64
Version: 2.36.2-1~debian.12~bookworm
Conflicts: docker-compose
Replaces: docker-compose
Breaks: docker-compose
Description: Docker Compose (V2) plugin for the Docker CLI.
`;

const FAKE_APT_GET = `#!/bin/sh
echo "apt-get $*" >> "$FAKE_LOG"
case " $* " in
  *" update "*) exit 0 ;;
  *" -s "*)
    if [ -n "\${FAKE_SIMULATION:-}" ]; then cat "$FAKE_SIMULATION"; exit 100; fi
    exec /usr/bin/apt-get $FAKE_APT_OPTIONS "$@" ;;
esac
# A real install: never passed on. Record the service policy in force, then "install" the tools.
"$TJ_DEPS_POLICY_RC_D" docker.service start
echo "policy-rc.d says $?" >> "$FAKE_LOG"
for t in $FAKE_PROVIDES; do printf '#!/bin/sh\\n' > "$TJ_DEPS_PATH/$t"; chmod +x "$TJ_DEPS_PATH/$t"; done
`;

// dpkg -L as it answers after a real install of docker.io and containerd (their units)
const FAKE_DPKG = `#!/bin/sh
echo "dpkg $*" >> "$FAKE_LOG"
[ "$1" = -L ] || exec /usr/bin/dpkg "$@"
shift
for p; do
  case $p in
    docker.io) printf '%s\\n' /lib/systemd/system/docker.service /lib/systemd/system/docker.socket /etc/init.d/docker /usr/sbin/dockerd ;;
    containerd) printf '%s\\n' /lib/systemd/system/containerd.service /usr/bin/containerd ;;
    *) echo "/usr/share/doc/$p" ;;
  esac
done
`;

const FAKE_SYSTEMCTL = `#!/bin/sh
echo "systemctl $*" >> "$FAKE_LOG"
`;

interface Host {
  dir: string;
  tools: string;
  log: string;
  policy: string;
  env: NodeJS.ProcessEnv;
}

function script(path: string, text: string): void {
  writeFileSync(path, text);
  chmodSync(path, 0o755);
}

/** A made-up host: the given tools present (as stubs), and optionally a faked dpkg status. */
function makeHost(present: readonly string[], dpkgStatus?: string): Host {
  const dir = mkdtempSync(join(tmpdir(), "tj-deps-"));
  const tools = join(dir, "tools");
  const bin = join(dir, "bin");
  mkdirSync(tools);
  mkdirSync(bin);
  for (const t of present) script(join(tools, t), "#!/bin/sh\n"); // gcc, python3 and busybox too
  script(join(bin, "apt-get"), FAKE_APT_GET);
  script(join(bin, "dpkg"), FAKE_DPKG);
  script(join(bin, "systemctl"), FAKE_SYSTEMCTL);
  const log = join(dir, "calls.log");
  writeFileSync(log, "");
  const policy = join(dir, "policy-rc.d");
  const env: NodeJS.ProcessEnv = {
    PATH: `${bin}:${process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin"}`,
    TJ_DEPS_PATH: tools,
    TJ_DEPS_POLICY_RC_D: policy,
    // a shell script is "not a dynamic executable" to ldd: a static busybox, as far as it can tell
    TJ_E2E_BUSYBOX: present.includes("busybox") ? join(tools, "busybox") : join(dir, "no-busybox"),
    FAKE_LOG: log,
  };
  if (dpkgStatus !== undefined) {
    // apt reads the faked status, and keeps its package cache beside it, built once per host
    writeFileSync(join(dir, "status"), dpkgStatus);
    env.FAKE_APT_OPTIONS = [
      ...["-o", `Dir::State::status=${join(dir, "status")}`],
      ...["-o", `Dir::Cache::pkgcache=${join(dir, "pkgcache.bin")}`],
      ...["-o", `Dir::Cache::srcpkgcache=${join(dir, "srcpkgcache.bin")}`],
    ].join(" ");
  }
  return { dir, tools, log, policy, env };
}

function runScript(host: Host, profile: string, env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync("bash", [SCRIPT, profile], {
    env: { ...host.env, ...env },
    encoding: "utf8",
    timeout: 120_000,
  });
  const calls = readFileSync(host.log, "utf8").split("\n").filter(Boolean);
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, calls };
}

/** This machine's dpkg status without the given packages' records, plus `extra` records. */
function statusWithout(drop: readonly string[], extra = ""): string {
  const kept = readFileSync(DPKG_STATUS, "utf8")
    .split(/\n{2,}/)
    .filter((s) => s.trim() !== "" && !drop.includes(/^Package: (\S+)/m.exec(s)?.[1] ?? ""));
  return [...kept, extra].filter(Boolean).join("\n\n").trimEnd() + "\n";
}

/** Real apt simulation needs apt, a dpkg database and package lists that know docker.io. */
function aptSkipReason(): string | false {
  if (!existsSync("/usr/bin/apt-get") || !existsSync(DPKG_STATUS)) return "no apt/dpkg here";
  const policy = spawnSync("apt-cache", ["policy", "docker.io", "conntrack"], { encoding: "utf8" });
  if (/Candidate: \(none\)/.test(policy.stdout) || !/Candidate:/.test(policy.stdout))
    return "apt's package lists lack docker.io or conntrack (run apt-get update)";
  return false;
}

const sha = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");
const aptInstalls = (calls: string[]) =>
  calls.filter((c) => c.startsWith("apt-get ") && / install /.test(c));

test("nothing missing: exit 0, apt never called", () => {
  const host = makeHost([...TOOLS, "busybox"]);
  try {
    for (const profile of ["demo", "test"]) {
      const r = runScript(host, profile);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`nothing missing for the ${profile} profile`));
      assert.deepEqual(r.calls, []);
    }
  } finally {
    rmSync(host.dir, { recursive: true, force: true });
  }
});

/** The Debian packages a profile reports missing on a host without any tool. */
function wantedOnBareHost(profile: string): string[] {
  const host = makeHost([]);
  try {
    const r = runScript(host, profile, { FAKE_SIMULATION: join(host.dir, "none") });
    return [...r.stdout.matchAll(/\(Debian package (\S+)\)/g)].map((m) => m[1] ?? "");
  } finally {
    rmSync(host.dir, { recursive: true, force: true });
  }
}

const DEMO_PACKAGES = [
  ...["docker.io", "containerd", "runc", "iptables", "nftables", "iproute2", "util-linux"],
  ...["procps", "busybox-static"],
];

test("the demo profile wants only what the demo runs: no compiler, debootstrap, compose, conntrack, python3-yaml, registry, tcpdump, prometheus", () => {
  assert.deepEqual(wantedOnBareHost("demo"), DEMO_PACKAGES);
});

test("the test profile wants the demo's packages, then the compiler for tjprobe and the tests' tools", () => {
  assert.deepEqual(wantedOnBareHost("test"), [
    ...DEMO_PACKAGES,
    ...["gcc", "libc6-dev", "conntrack", "debootstrap", "docker-compose", "python3-yaml"],
    "docker-registry",
    ...["tcpdump", "prometheus"],
  ]);
});

test("apt cannot resolve: stop with apt's error and the tools to install by hand", () => {
  const host = makeHost(TOOLS.filter((t) => t !== "conntrack").concat("busybox"));
  const sim = join(host.dir, "simulation");
  writeFileSync(sim, "Reading package lists...\nE: Unable to locate package conntrack\n");
  try {
    const r = runScript(host, "test", { FAKE_SIMULATION: sim });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /conntrack \(for conntrack\): E: Unable to locate package conntrack/);
    assert.match(r.stderr, /provides:\n.* {2}conntrack\n/);
    assert.deepEqual(
      aptInstalls(r.calls).filter((c) => !c.includes(" -s ")),
      [],
      "no real install",
    );
  } finally {
    rmSync(host.dir, { recursive: true, force: true });
  }
});

test(
  "Docker CE host (docker-ce, containerd.io, compose plugin) and no tools: nothing removed, stops with what to install by hand",
  { skip: aptSkipReason() },
  () => {
    const docker = ["docker.io", "containerd", "runc", "docker-compose", "docker-ce"];
    const drop = [...docker, "docker-ce-cli", "containerd.io", "docker-compose-plugin"];
    const host = makeHost([], statusWithout(drop, DOCKER_CE));
    const before = { fake: sha(join(host.dir, "status")), real: sha(DPKG_STATUS) };
    try {
      const r = runScript(host, "test");
      process.stdout.write(
        `--- install-deps.sh test on the Docker CE host:\n${r.stdout}${r.stderr}`,
      );
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(
        r.stderr,
        /stopped: apt would change packages you have, so nothing was installed/,
      );
      assert.match(
        r.stderr,
        /docker\.io \(for dockerd docker-proxy docker\): would remove containerd\.io docker-ce docker-ce-cli/,
      );
      assert.match(
        r.stderr,
        /containerd \(for containerd containerd-shim-runc-v2\): would remove containerd\.io/,
      );
      assert.match(r.stderr, /runc \(for runc\): would remove containerd\.io/);
      assert.match(
        r.stderr,
        /docker-compose \(for docker-compose\): would remove docker-compose-plugin/,
      );
      assert.match(
        r.stderr,
        /provides:\n.* {2}dockerd docker-proxy docker containerd containerd-shim-runc-v2 runc docker-compose\n/,
      );
      // apt-get update once, then simulations only, every one with --no-remove
      assert.equal(r.calls[0], "apt-get update -qq");
      const installs = aptInstalls(r.calls);
      assert.ok(installs.length > 1);
      for (const c of installs) assert.match(c, /^apt-get -s install --no-remove /);
      assert.deepEqual(
        { fake: sha(join(host.dir, "status")), real: sha(DPKG_STATUS) },
        before,
        "no dpkg database changed",
      );
      assert.ok(!existsSync(host.policy));
    } finally {
      rmSync(host.dir, { recursive: true, force: true });
    }
  },
);

test(
  "fresh host missing Docker and conntrack: simulated cleanly, installed with --no-remove, no service started or enabled",
  { skip: aptSkipReason() },
  () => {
    const missing = ["dockerd", "docker-proxy", "docker", "containerd", "containerd-shim-runc-v2"];
    missing.push("runc", "conntrack");
    const drop = ["docker.io", "containerd", "runc", "conntrack"];
    drop.push("docker-ce", "docker-ce-cli", "containerd.io", "docker-compose-plugin");
    const host = makeHost(
      TOOLS.filter((t) => !missing.includes(t)).concat("busybox"),
      statusWithout(drop),
    );
    try {
      const r = runScript(host, "test", { FAKE_PROVIDES: missing.join(" ") });
      process.stdout.write(`--- install-deps.sh test on a fresh host:\n${r.stdout}${r.stderr}`);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const planned = /apt will install: (.*)/.exec(r.stdout)?.[1]?.split(" ").sort();
      assert.deepEqual(planned, ["conntrack", "containerd", "docker.io", "runc"]);
      const installs = aptInstalls(r.calls);
      assert.equal(installs.length, 2, installs.join("\n"));
      assert.match(installs[0]!, /^apt-get -s install --no-remove --no-install-recommends /);
      assert.match(installs[1]!, /^apt-get install -y -q --no-remove --no-install-recommends /);
      assert.match(installs[1]!, / docker\.io containerd runc conntrack$/);
      assert.ok(
        r.calls.includes("policy-rc.d says 101"),
        "no service may start during the install",
      );
      assert.ok(!existsSync(host.policy), "our policy-rc.d is gone afterwards");
      const disabled = r.calls.filter((c) => c.startsWith("systemctl disable --quiet "));
      assert.equal(disabled.length, 1, r.calls.join("\n"));
      assert.deepEqual(disabled[0]!.split(" ").slice(3).sort(), [
        "containerd.service",
        "docker.service",
        "docker.socket",
      ]);
      assert.match(r.stdout, /no service was started or enabled/);
    } finally {
      rmSync(host.dir, { recursive: true, force: true });
    }
  },
);
