// The planner against kernel states other than a fresh host: converged, drifted, shared, cleared.
import { test } from "node:test";
import assert from "node:assert/strict";
import { planFamily, type FamilyTarget } from "../../src/firewall/iptables/plan.js";
import {
  allowedSourcesIn,
  forwardRules,
  inputRules,
  instanceChains,
  outputRules,
} from "../../src/firewall/iptables/layout.js";
import { normalizeRule, parseFilterTable } from "../../src/firewall/iptables/save-format.js";
import type { Family, FamilyRuleset, Ruleset } from "../../src/model.js";

const RULES: Ruleset = {
  instanceId: "web",
  networkName: "web",
  bridge: "br-web",
  netns: null,
  protectHost: true,
  ports: [],
  tunnelIdentities: [],
  gateway: null,
  mode: "enforce",
  log: null,
  families: {
    4: { subnets: ["172.20.0.0/16"], allowedSources: ["172.20.0.2"], portBindings: [] },
    6: { subnets: [], allowedSources: [], portBindings: [] },
  },
};

/** RULES with IPv4 (and ruleset-wide) fields changed. */
const v4 = (family: Partial<FamilyRuleset>, rest: Partial<Ruleset> = {}): Ruleset => ({
  ...RULES,
  ...rest,
  families: { ...RULES.families, 4: { ...RULES.families[4], ...family } },
});
const WEB2 = v4({ subnets: ["172.21.0.0/16"] }, { instanceId: "web2", bridge: "br-web2" });

function target(instanceId: string, rules: Ruleset | null, family: Family = 4): FamilyTarget {
  return { family, instanceId, rules, forwardAnchor: "DOCKER-USER", staleForwardAnchors: [] };
}

/** The filter table of a host where `instances` are installed as desired. */
function converged(
  instances: Array<[string, Ruleset]>,
  extra: string[] = [],
  family: Family = 4,
): string {
  const lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD DROP [0:0]", ":DOCKER-USER - [0:0]"];
  lines.push(":TRAFFICJAM - [0:0]", ":TRAFFICJAM_INPUT - [0:0]", ":TRAFFICJAM_OUTPUT - [0:0]");
  for (const [id] of instances)
    lines.push(`:TJF_${id} - [0:0]`, `:TJI_${id} - [0:0]`, `:TJO_${id} - [0:0]`);
  lines.push(
    "-A INPUT -j TRAFFICJAM_INPUT",
    "-A OUTPUT -j TRAFFICJAM_OUTPUT",
    "-A FORWARD -j DOCKER-USER",
    "-A DOCKER-USER -j TRAFFICJAM",
  );
  lines.push("-A DOCKER-USER -j RETURN");
  for (const [id, rules] of instances) {
    const c = instanceChains(id);
    lines.push(...forwardRules(c, family, rules), ...inputRules(c, family, rules));
    lines.push(...outputRules(c, family, rules));
    lines.push(`-A TRAFFICJAM -m comment --comment "${c.comment}" -j ${c.forward}`);
    lines.push(`-A TRAFFICJAM_INPUT -m comment --comment "${c.comment}" -j ${c.input}`);
    lines.push(`-A TRAFFICJAM_OUTPUT -m comment --comment "${c.comment}" -j ${c.output}`);
  }
  return [...lines, ...extra, "COMMIT", ""].join("\n");
}

test("a converged host needs nothing", () => {
  const plan = planFamily(parseFilterTable(converged([["web", RULES]])), target("web", RULES));
  assert.equal(plan.script, null);
  assert.deepEqual(plan.createChains, []);
  assert.deepEqual(plan.differences, []);
});

test("a changed whitelist replaces only the instance chain, declared once", () => {
  const table = parseFilterTable(converged([["web", RULES]]));
  const plan = planFamily(table, target("web", v4({ allowedSources: ["172.20.0.9"] })));
  assert.deepEqual(plan.differences, ["chain TJF_web differs from the desired rules"]);
  assert.match(plan.script!, /^:TJF_web - \[0:0\]$/m);
  assert.match(plan.script!, /-s 172\.20\.0\.9\/32 -i br-web -o br-web/);
  assert.doesNotMatch(plan.script!, /TRAFFICJAM -m|DOCKER-USER|TJI_web/);
});

test("a jump pushed down in DOCKER-USER is moved back to the top", () => {
  const dump = converged([["web", RULES]]).replace(
    "-A DOCKER-USER -j TRAFFICJAM\n",
    "-A DOCKER-USER -s 10.0.0.1/32 -j ACCEPT\n-A DOCKER-USER -j TRAFFICJAM\n",
  );
  const plan = planFamily(parseFilterTable(dump), target("web", RULES));
  assert.deepEqual(plan.differences, ["jump DOCKER-USER → TRAFFICJAM is not first"]);
  assert.equal(
    plan.script,
    "*filter\n-D DOCKER-USER -j TRAFFICJAM\n-I DOCKER-USER 1 -j TRAFFICJAM\nCOMMIT\n",
  );
});

test("a flushed instance chain and a deleted jump are restored", () => {
  const dump = converged([["web", RULES]])
    .split("\n")
    .filter((l) => !l.startsWith("-A TJF_web") && l !== "-A INPUT -j TRAFFICJAM_INPUT")
    .join("\n");
  const plan = planFamily(parseFilterTable(dump), target("web", RULES));
  assert.deepEqual(plan.differences, [
    "chain TJF_web differs from the desired rules",
    "jump INPUT → TRAFFICJAM_INPUT missing",
  ]);
  assert.match(plan.script!, /^-I INPUT 1 -j TRAFFICJAM_INPUT$/m);
});

test("instances whose IDs share a prefix are independent (web, web2)", () => {
  const table = parseFilterTable(
    converged([
      ["web", RULES],
      ["web2", WEB2],
    ]),
  );
  assert.equal(planFamily(table, target("web2", WEB2)).script, null);
  const clearWeb = planFamily(table, target("web", null));
  assert.equal(
    clearWeb.script,
    [
      "*filter",
      "-D TRAFFICJAM -m comment --comment trafficjam:web -j TJF_web",
      "-D TRAFFICJAM_INPUT -m comment --comment trafficjam:web -j TJI_web",
      "-D TRAFFICJAM_OUTPUT -m comment --comment trafficjam:web -j TJO_web",
      "-F TJF_web",
      "-X TJF_web",
      "-F TJI_web",
      "-X TJI_web",
      "-F TJO_web",
      "-X TJO_web",
      "COMMIT",
      "",
    ].join("\n"),
  );
});

test("clearing the last instance removes the entry chains and Docker's jump to them", () => {
  const plan = planFamily(parseFilterTable(converged([["web", RULES]])), target("web", null));
  assert.match(plan.script!, /^-D DOCKER-USER -j TRAFFICJAM$/m);
  assert.match(plan.script!, /^-D INPUT -j TRAFFICJAM_INPUT$/m);
  assert.match(plan.script!, /^-X TRAFFICJAM$/m);
  assert.match(plan.script!, /^-X TRAFFICJAM_INPUT$/m);
  // Jumps go before the chains they point to.
  assert.ok(plan.script!.indexOf("-D TRAFFICJAM ") < plan.script!.indexOf("-X TJF_web"));
});

test("clearing an instance that is not installed changes nothing", () => {
  const plan = planFamily(parseFilterTable(converged([["web2", RULES]])), target("web", null));
  assert.equal(plan.script, null);
});

test("switching ALLOW_HOST_TRAFFIC on removes the input chain left from before", () => {
  const table = parseFilterTable(converged([["web", RULES]]));
  const plan = planFamily(table, target("web", { ...RULES, protectHost: false }));
  assert.match(plan.script!, /^-X TJI_web$/m);
  assert.match(plan.script!, /^-X TRAFFICJAM_INPUT$/m);
  assert.doesNotMatch(plan.script!, /TJF_web/);
});

test("without a bridge (no network, or not a bridge network) nothing of the instance is held", () => {
  const plan = planFamily(
    parseFilterTable(converged([])),
    target("web", { ...RULES, bridge: null }),
  );
  assert.match(plan.script!, /^-X TRAFFICJAM$/m);
  assert.doesNotMatch(plan.script!, /TJF_web/);
});

test("IPv6 hooks FORWARD when there is no DOCKER-USER, and drops that jump once there is", () => {
  const fresh = parseFilterTable("*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n");
  const v6: Ruleset = {
    ...RULES,
    families: {
      ...RULES.families,
      6: { subnets: ["fd00::/64"], allowedSources: ["fd00::2"], portBindings: [] },
    },
  };
  const first = planFamily(fresh, { ...target("web", v6), family: 6, forwardAnchor: "FORWARD" });
  assert.match(first.script!, /^-I FORWARD 1 -j TRAFFICJAM$/m);
  const withDockerUser = parseFilterTable(
    "*filter\n:FORWARD ACCEPT [0:0]\n:DOCKER-USER - [0:0]\n-A FORWARD -j TRAFFICJAM\nCOMMIT\n",
  );
  const moved = planFamily(withDockerUser, {
    ...target("web", v6),
    family: 6,
    forwardAnchor: "DOCKER-USER",
    staleForwardAnchors: ["FORWARD"],
  });
  assert.match(moved.script!, /^-D FORWARD -j TRAFFICJAM$/m);
  assert.match(moved.script!, /^-I DOCKER-USER 1 -j TRAFFICJAM$/m);
});

test("duplicate instance jumps are reduced to one", () => {
  const c = instanceChains("web");
  const dup = `-A TRAFFICJAM -m comment --comment "${c.comment}" -j ${c.forward}`;
  const plan = planFamily(
    parseFilterTable(converged([["web", RULES]], [dup])),
    target("web", RULES),
  );
  assert.equal(plan.script, `*filter\n${normalizeRule(dup).replace("-A", "-D")}\nCOMMIT\n`);
});

test("iptables-save quoting and our rendering compare equal", () => {
  assert.equal(
    normalizeRule('-A X -m comment --comment "trafficjam:web" -j RETURN'),
    normalizeRule("-A X -m comment --comment trafficjam:web -j RETURN"),
  );
  assert.equal(
    normalizeRule('-A X -m comment --comment "a b" -j RETURN'),
    '-A X -m comment --comment "a b" -j RETURN',
  );
});

test("revoked sources are read from the kernel's rules, exactly this instance's", () => {
  // (also from the rules of versions that matched subnets: an upgrade revokes what they allowed)
  const old = parseFilterTable(
    "*filter\n:TJF_web - [0:0]\n-A TJF_web -s 172.20.0.7/32 -d 172.20.0.0/16 -m comment --comment trafficjam:web -j RETURN\nCOMMIT\n",
  );
  assert.deepEqual(planFamily(old, target("web", RULES)).revokedSources, ["172.20.0.7"]);
  const table = parseFilterTable(
    converged([
      ["web", v4({ allowedSources: ["172.20.0.2", "172.20.0.3"] })],
      [
        "web2",
        v4({ subnets: ["172.21.0.0/16"], allowedSources: ["172.21.0.9"] }, { bridge: "br-web2" }),
      ],
    ]),
  );
  assert.deepEqual(planFamily(table, target("web", RULES)).revokedSources, ["172.20.0.3"]);
  assert.deepEqual(planFamily(table, target("web", null)).revokedSources, [
    "172.20.0.2",
    "172.20.0.3",
  ]);
  assert.deepEqual(
    planFamily(parseFilterTable(converged([])), target("web", RULES)).revokedSources,
    [],
  );
});

test("a jump into TRAFFICJAM inserted twice (two instances starting together) is made single", () => {
  const dump = converged([["web", RULES]]).replace(
    "-A DOCKER-USER -j TRAFFICJAM\n",
    "-A DOCKER-USER -j TRAFFICJAM\n-A DOCKER-USER -j TRAFFICJAM\n",
  );
  const plan = planFamily(parseFilterTable(dump), target("web", RULES));
  assert.deepEqual(plan.differences, ["jump DOCKER-USER → TRAFFICJAM duplicated"]);
  assert.equal(
    plan.script,
    "*filter\n-D DOCKER-USER -j TRAFFICJAM\n-D DOCKER-USER -j TRAFFICJAM\n-I DOCKER-USER 1 -j TRAFFICJAM\nCOMMIT\n",
  );
});

test("bound allowances: a new port for the same address is no revocation; a gone address is", () => {
  const bound = (port: string) => v4({ portBindings: [{ address: "172.20.0.2", port }] });
  const table = parseFilterTable(converged([["web", bound("veth1111111")]]));
  const moved = planFamily(table, target("web", bound("veth2222222")));
  assert.deepEqual(moved.differences, [
    "chain TJF_web differs from the desired rules",
    "chain TJI_web differs from the desired rules",
  ]);
  assert.match(
    moved.script!,
    /-s 172\.20\.0\.2\/32 -i br-web -m physdev ! --physdev-in veth2222222 .* -j DROP/,
  );
  assert.match(moved.script!, /-m physdev --physdev-in veth2222222 .* -j RETURN/);
  assert.deepEqual(moved.revokedSources, []);
  const gone = planFamily(table, target("web", v4({ allowedSources: [] })));
  assert.deepEqual(gone.revokedSources, ["172.20.0.2"]);
});

/** Both families, with neighbour discovery, a bound allowance and its spoof guard. */
const DUAL: Ruleset = {
  ...RULES,
  families: {
    4: {
      subnets: ["172.20.0.0/16"],
      allowedSources: ["172.20.0.2"],
      portBindings: [{ address: "172.20.0.2", port: "veth1111111" }],
    },
    6: {
      subnets: ["fd00::/64"],
      allowedSources: ["fd00::2"],
      portBindings: [{ address: "fd00::2", port: "veth1111111" }],
    },
  },
};

const DIFFERS = ["chain TJF_web differs from the desired rules"];

/** `text` with `from` replaced, which must be in it (or the test would prove nothing). */
function edited(text: string, from: string | RegExp, to: string): string {
  const result = text.replace(from, to);
  assert.notEqual(result, text, `${String(from)} is not in the text`);
  return result;
}

test("each rule of the instance chains carries the instance comment and a hash that tells it from every other rule", () => {
  const c = instanceChains("web");
  const hashes = (rules: Ruleset) =>
    ([4, 6] as const).flatMap((family) =>
      [
        ...forwardRules(c, family, rules),
        ...inputRules(c, family, rules),
        ...outputRules(c, family, rules),
      ].map((line) => {
        const hash = /-m comment --comment "trafficjam:web ([0-9a-f]{12})" -j \S+$/.exec(line)?.[1];
        assert.ok(hash, line);
        return { family, line, hash };
      }),
    );
  const all = hashes(DUAL);
  // Within a family no two rules share a hash (the read-back tells them apart by it)…
  for (const family of [4, 6] as const) {
    const ofFamily = all.filter((r) => r.family === family);
    assert.equal(new Set(ofFamily.map((r) => r.hash)).size, ofFamily.length);
  }
  // …and a rule that differs in any match has another hash: every rule names the bridge.
  const renamed = new Set(hashes({ ...DUAL, bridge: "br-other" }).map((r) => r.hash));
  for (const r of all) assert.ok(!renamed.has(r.hash), `${r.line} kept its hash`);
});

/**
 * A rule as another iptables version might print it: the comment first, `-s` last, `-o` before
 * `-i`, other protocol and ICMPv6 type names, the conntrack states the other way round, quotes
 * around what needs none.
 */
function respelt(line: string): string {
  const comment = / -m comment --comment "[^"]*"/.exec(line)?.[0] ?? "";
  return line
    .replace(comment, "")
    .replace(/^-A \S+/, (head) => `${head}${comment}`)
    .replace(/ -s (\S+)(.*) -j /, "$2 -s $1 -j ")
    .replace(/-i (\S+) -o (\S+)/, '-o "$2" -i "$1"')
    .replace(
      "-p ipv6-icmp -m icmp6 --icmpv6-type 135",
      "-p icmpv6 --icmpv6-type neighbour-solicitation",
    )
    .replace("-p ipv6-icmp -m icmp6 --icmpv6-type 136", '-p "58" -m icmpv6 --icmpv6-type 136/0')
    .replace("--ctstate RELATED,ESTABLISHED", "--ctstate ESTABLISHED,RELATED")
    .replace(/--physdev-in (\S+)/, '--physdev-in "$1"');
}

test("(a) our rules printed in another spelling, order and quoting are no difference", () => {
  for (const family of [4, 6] as const) {
    const dump = converged([["web", DUAL]], [], family)
      .split("\n")
      .map((line) => (/^-A TJ[FI]_web /.test(line) ? edited(line, line, respelt(line)) : line))
      .join("\n");
    if (family === 6) assert.match(dump, /neighbour-solicitation/);
    const plan = planFamily(parseFilterTable(dump), target("web", DUAL, family));
    assert.deepEqual(plan.differences, [], `IPv${family}`);
    assert.equal(plan.script, null);
    assert.deepEqual(plan.revokedSources, []);
  }
});

test("(b) a match changed under our comment goes unnoticed (the accepted limit, as with Felix)", () => {
  // Only the hash, the interfaces and the verdict are compared: the other matches are spelt
  // differently by different iptables versions, so their text cannot be compared.
  const dump = converged([["web", RULES]]);
  const plan = (text: string) => planFamily(parseFilterTable(text), target("web", RULES));
  const otherSource = edited(dump, "-A TJF_web -s 172.20.0.2/32", "-A TJF_web -s 10.9.9.9/32");
  assert.deepEqual(plan(otherSource).differences, []);
  const otherState = edited(dump, "--ctstate RELATED,ESTABLISHED", "--ctstate NEW");
  assert.deepEqual(plan(otherState).differences, []);
});

test("(b) a verdict or an interface changed under our comment is a difference", () => {
  const dump = converged([["web", RULES]]);
  const plan = (text: string) => planFamily(parseFilterTable(text), target("web", RULES));
  const accepted = edited(
    dump,
    /(-A TJF_web -i br-web -o br-web -m comment .*) -j DROP/,
    "$1 -j ACCEPT",
  );
  assert.deepEqual(plan(accepted).differences, DIFFERS);
  const otherOut = edited(
    dump,
    "-A TJF_web -i br-web -o br-web -m conntrack",
    "-A TJF_web -i br-web -o br-x -m conntrack",
  );
  assert.deepEqual(plan(otherOut).differences, DIFFERS);
  const negated = edited(
    dump,
    "-A TJF_web -i br-web -o br-web -m comment",
    "-A TJF_web -i br-web ! -o br-web -m comment",
  );
  assert.deepEqual(plan(negated).differences, DIFFERS);
});

/** The converged table with TJF_web holding `rules` instead of the desired ones. */
function withForwardChain(rules: readonly string[]): string {
  const lines = converged([["web", RULES]])
    .split("\n")
    .filter((line) => !line.startsWith("-A TJF_web "));
  lines.splice(lines.indexOf("COMMIT"), 0, ...rules);
  return lines.join("\n");
}

test("(c) a foreign, missing, reordered or duplicated rule in the instance chain is a difference", () => {
  const desired = forwardRules(instanceChains("web"), 4, RULES);
  const [related, allowance, drop] = desired;
  assert.ok(related && allowance && drop);
  const plan = (rules: string[]) =>
    planFamily(parseFilterTable(withForwardChain(rules)), target("web", RULES));
  assert.deepEqual(plan(desired).differences, []);
  const kernels: Record<string, string[]> = {
    "foreign, no comment": ["-A TJF_web -s 10.0.0.1/32 -j ACCEPT", ...desired],
    "foreign, its own comment": [
      ...desired.slice(0, 2),
      '-A TJF_web -s 10.0.0.1/32 -m comment --comment "allow admin" -j RETURN',
      drop,
    ],
    "web2's comment (a prefix of ours is not ours)": [
      related,
      allowance,
      edited(drop, '"trafficjam:web ', '"trafficjam:web2 '),
    ],
    "our comment with something else than a hash": [
      related,
      allowance,
      edited(drop, /"trafficjam:web [0-9a-f]+"/, '"trafficjam:web admin"'),
    ],
    missing: [related, drop],
    reordered: [allowance, related, drop],
    duplicated: [related, allowance, allowance, drop],
    "written by a version before the hashes": desired.map((line) =>
      edited(line, /"trafficjam:web [0-9a-f]{12}"/, "trafficjam:web"),
    ),
  };
  for (const [name, rules] of Object.entries(kernels)) {
    const result = plan(rules);
    assert.deepEqual(result.differences, DIFFERS, name);
    assert.match(result.script!, /^:TJF_web - \[0:0\]$/m, name);
    assert.deepEqual(result.script!.match(/^-A TJF_web .*$/gm), desired.map(normalizeRule), name);
  }
});

test("(d) allowed sources are read from this version's rules and the previous versions'", () => {
  const lines = [
    // versions that matched subnets, and those that matched the bridge, with or without a port
    "-A TJF_web -s 172.20.0.7/32 -d 172.20.0.0/16 -m comment --comment trafficjam:web -j RETURN",
    '-A TJF_web -s 172.20.0.8/32 -i br-web -o br-web -m comment --comment "trafficjam:web" -j RETURN',
    "-A TJF_web -s fd00::9/128 -i br-web -o br-web -m physdev --physdev-in veth1 -m comment --comment trafficjam:web -j RETURN",
    // this version, in some other spelling
    '-A TJF_web -m comment --comment "trafficjam:web 0123456789ab" -o br-web -i "br-web" -m physdev --physdev-in "veth1" -s 172.20.0.10/32 -j RETURN',
    // no allowances: a drop, a subnet, a negation, web2's, another chain's, a foreign rule's
    '-A TJF_web -s 172.20.0.11/32 -i br-web -m physdev ! --physdev-in veth1 -m comment --comment "trafficjam:web 0123456789ab" -j DROP',
    "-A TJF_web -s 172.20.0.0/16 -d 172.20.0.0/16 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment trafficjam:web -j RETURN",
    '-A TJF_web ! -s 172.20.0.12/32 -i br-web -o br-web -m comment --comment "trafficjam:web 0123456789ab" -j RETURN',
    '-A TJF_web -s 172.20.0.13/32 -i br-web -o br-web -m comment --comment "trafficjam:web2 0123456789ab" -j RETURN',
    "-A TJF_web -s 172.20.0.14/32 -i br-web -o br-web -m comment --comment trafficjam:web2 -j RETURN",
    '-A TJI_web -s 172.20.0.15/32 -i br-web -m comment --comment "trafficjam:web 0123456789ab" -j RETURN',
    "-A TJF_web -s 172.20.0.16/32 -i br-web -o br-web -j RETURN",
  ].map(normalizeRule);
  assert.deepEqual(allowedSourcesIn(lines, instanceChains("web")), [
    "172.20.0.7",
    "172.20.0.8",
    "fd00::9",
    "172.20.0.10",
  ]);
});
