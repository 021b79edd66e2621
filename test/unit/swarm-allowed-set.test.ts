// A worker's allowed set: only newer sets taken (no replay), vouched nodes' parts replaced,
// other nodes' kept and added to, a new network replacing everything. And the daemon's signature.
import { test } from "node:test";
import assert from "node:assert/strict";
import { AllowedSet, merge } from "../../src/swarm/allowed-set.js";
import type { AllowedBody, AllowedEntry, AllowedMessage } from "../../src/swarm/protocol.js";
import {
  canonicalJson,
  generateSigningKeys,
  keysFromPem,
  privateKeyPem,
  publicKeyOf,
  signBody,
  verifyMessage,
} from "../../src/swarm/signing.js";

const node = (n: string) => `node${n}`.padEnd(25, "0");
const NET = "n".repeat(25);
const e = (n: string, ipv4: string): AllowedEntry => ({
  node: node(n),
  hostIp: `192.168.0.${n === "a" ? 1 : n === "b" ? 2 : 3}`,
  ipv4,
  name: `proxy@${ipv4}`,
  kind: "container",
});
const KEYS = generateSigningKeys();
const body = (
  seq: number,
  entries: AllowedEntry[],
  vouched: string[],
  complete = false,
  networkId = NET,
): AllowedBody => ({
  type: "allowed",
  instanceId: "web",
  networkId,
  seq,
  entries,
  vouched: vouched.map(node),
  complete,
});
const msg = (...args: Parameters<typeof body>): AllowedMessage =>
  signBody(body(...args), KEYS.privateKey);

test("vouched nodes' parts are replaced; others keep what they had, plus what is told", () => {
  const held = [e("a", "10.20.0.3"), e("b", "10.20.0.5"), e("c", "10.20.0.9")];
  // a and b vouched: a's proxy gone, b's moved; c silent since the daemon restarted: kept.
  assert.deepEqual(merge(held, msg(2, [e("b", "10.20.0.6")], ["a", "b"])), [
    e("b", "10.20.0.6"),
    e("c", "10.20.0.9"),
  ]);
  // Told of c without vouching for it: added, nothing of c taken away.
  assert.deepEqual(merge(held, msg(2, [e("c", "10.20.0.10")], ["a", "b"])), [
    e("c", "10.20.0.10"),
    e("c", "10.20.0.9"),
  ]);
});

test("a set older than the last one taken changes nothing (a replayed set allows nothing again)", () => {
  const set = new AllowedSet(null, KEYS.publicKey);
  const old = msg(10, [e("a", "10.20.0.3")], ["a"], true);
  assert.equal(set.take(old), "changed");
  assert.equal(set.take(msg(11, [], ["a"], true)), "changed");
  assert.deepEqual(set.entries(NET), []);
  assert.equal(set.take(old), "stale", "the older set, replayed");
  assert.equal(set.take(msg(11, [e("a", "10.20.0.4")], ["a"], true)), "stale", "same sequence");
  assert.deepEqual(set.entries(NET), []);
  assert.equal(set.take(msg(12, [], ["a"], true)), "unchanged");
});

test("a set of another network replaces everything; completeness is remembered per network", () => {
  const set = new AllowedSet(null, KEYS.publicKey);
  set.take(msg(1, [e("a", "10.20.0.3")], ["a"], true));
  assert.equal(set.complete, true);
  set.take(msg(2, [e("b", "10.30.0.5")], [], false, "m".repeat(25)));
  assert.equal(set.networkId, "m".repeat(25));
  assert.deepEqual(set.entries("m".repeat(25)), [e("b", "10.30.0.5")]);
  assert.deepEqual(set.entries(NET), []);
  assert.equal(set.complete, false);
});

test("a set saved under another daemon key says nothing of order: the next set is taken", () => {
  const first = new AllowedSet(null, KEYS.publicKey);
  first.take(msg(1_000, [e("a", "10.20.0.3")], ["a"], true));
  const other = generateSigningKeys();
  const set = new AllowedSet(first.saved(), other.publicKey);
  assert.deepEqual(set.entries(NET), [e("a", "10.20.0.3")], "still enforced meanwhile");
  assert.equal(set.take(signBody(body(5, [], ["a"], true), other.privateKey)), "changed");
});

test("signatures: the daemon's verify, a changed body or another key does not", () => {
  const public_ = publicKeyOf(KEYS.publicKey);
  const m = msg(7, [e("a", "10.20.0.3")], ["a"], true);
  assert.equal(verifyMessage(m, public_), true);
  assert.equal(
    verifyMessage({ ...m, entries: [...m.entries, e("a", "10.20.0.99")] }, public_),
    false,
  );
  assert.equal(verifyMessage({ ...m, seq: 8 }, public_), false);
  assert.equal(verifyMessage({ ...m, signature: "AAAA" }, public_), false);
  const stranger = generateSigningKeys();
  assert.equal(verifyMessage(signBody(body(7, [], ["a"]), stranger.privateKey), public_), false);
  // The same body, its keys in another order, is the same to the signature.
  const reordered = JSON.parse(
    JSON.stringify({ signature: m.signature, ...body(7, [e("a", "10.20.0.3")], ["a"], true) }),
  );
  assert.equal(verifyMessage(reordered as AllowedMessage, public_), true);
  assert.equal(canonicalJson({ b: 1, a: [{ d: 2, c: 3 }] }), '{"a":[{"c":3,"d":2}],"b":1}');
  // Kept on disk as PEM and read back: the same key.
  assert.equal(keysFromPem(privateKeyPem(KEYS.privateKey)).publicKey, KEYS.publicKey);
  assert.throws(() => publicKeyOf("bm90IGEga2V5"));
});
