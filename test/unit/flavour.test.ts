// Where the iptables backend writes: the flavour whose DOCKER-USER chain Docker uses.
import { test } from "node:test";
import assert from "node:assert/strict";
import { dockerFlavour } from "../../src/firewall/iptables/backend.js";
import { emptyFilterTable, parseFilterTable } from "../../src/firewall/iptables/save-format.js";

const withDockerUser = (jumped: boolean) =>
  parseFilterTable(
    `*filter\n:FORWARD DROP [0:0]\n:DOCKER-USER - [0:0]\n${jumped ? "-A FORWARD -j DOCKER-USER\n" : ""}COMMIT\n`,
  );

test("the flavour is the one where Docker's DOCKER-USER lives", () => {
  assert.equal(dockerFlavour({ nft: withDockerUser(true), legacy: emptyFilterTable() }), "nft");
  assert.equal(dockerFlavour({ nft: emptyFilterTable(), legacy: withDockerUser(true) }), "legacy");
});

test("with DOCKER-USER in both, the one FORWARD actually jumps to wins", () => {
  assert.equal(
    dockerFlavour({ nft: withDockerUser(false), legacy: withDockerUser(true) }),
    "legacy",
  );
  assert.equal(dockerFlavour({ nft: withDockerUser(true), legacy: withDockerUser(true) }), "nft");
});

test("no DOCKER-USER anywhere: no flavour (auto then chooses nftables)", () => {
  assert.equal(dockerFlavour({ nft: emptyFilterTable(), legacy: emptyFilterTable() }), null);
});
