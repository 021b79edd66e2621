import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BridgeNetfilterError, ensureBridgeNetfilter } from "../../src/host/bridge-netfilter.js";

test("sysctls that are off are switched on and reported", async () => {
  const dir = await mkdtemp(join(tmpdir(), "tj-brnf-"));
  try {
    await writeFile(join(dir, "bridge-nf-call-iptables"), "0\n");
    await writeFile(join(dir, "bridge-nf-call-ip6tables"), "1\n");
    assert.deepEqual(await ensureBridgeNetfilter(dir), { changed: ["bridge-nf-call-iptables"] });
    assert.equal(await readFile(join(dir, "bridge-nf-call-iptables"), "utf8"), "1");
  } finally {
    await rm(dir, { recursive: true });
  }
});

test("without br_netfilter the error names both sysctls and gives the fix", async () => {
  const missing = join(tmpdir(), "tj-brnf-missing", "bridge");
  await assert.rejects(ensureBridgeNetfilter(missing), (error: unknown) => {
    assert.ok(error instanceof BridgeNetfilterError);
    assert.deepEqual(error.off, ["bridge-nf-call-iptables", "bridge-nf-call-ip6tables"]);
    assert.match(
      error.message,
      /modprobe br_netfilter && sysctl -w net\.bridge\.bridge-nf-call-iptables=1/,
    );
    return true;
  });
});
