// Address arithmetic the policy and the renderers share. Pure.
import { isIPv6 } from "node:net";
import type { Family } from "./model.js";

/**
 * Remembers a pure function's results: members keep their MAC and addresses across the passes,
 * which would otherwise compute the same values again for every member on every pass.
 */
function memo(compute: (key: string) => string): (key: string) => string {
  const known = new Map<string, string>();
  return (key) => {
    let value = known.get(key);
    if (value === undefined) {
      if (known.size >= 4096) known.clear(); // bounded: containers come and go
      value = compute(key);
      known.set(key, value);
    }
    return value;
  };
}

export function familyOf(address: string): Family {
  return isIPv6(address.split("/")[0] ?? "") ? 6 : 4;
}

/** The one spelling nft, iproute2 and the Engine print (RFC 5952: lower case, longest :: run). */
export const canonicalIpv6 = memo((address) =>
  new URL(`http://[${address}]/`).hostname.slice(1, -1),
);

/**
 * The IPv6 link-local address the kernel gives an interface with this MAC (modified EUI-64, the
 * default address generation mode of a new network namespace), e.g. 02:42:ac:1c:00:15 →
 * fe80::42:acff:fe1c:15. A container has it on every network, IPv6-enabled or not.
 */
export const linkLocalOf = memo((mac: string): string => {
  const b = mac.split(":").map((x) => parseInt(x, 16));
  if (b.length !== 6 || b.some((x) => !(x >= 0 && x <= 255)))
    throw new Error(`not a MAC address: ${mac}`);
  const eui = [b[0]! ^ 0x02, b[1]!, b[2]!, 0xff, 0xfe, b[3]!, b[4]!, b[5]!];
  const groups = [0, 2, 4, 6].map((i) => ((eui[i]! << 8) | eui[i + 1]!).toString(16));
  return canonicalIpv6(`fe80::${groups.join(":")}`);
});

/** An IPv6 address as one 128-bit number in hex ("0xfe80…"), as nft prints raw payload values. */
export const ipv6Hex = memo((address: string): string => {
  const full = canonicalIpv6(address);
  const [head = "", tail = ""] = full.includes("::") ? full.split("::") : [full, ""];
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  const zeros = Array<string>(8 - left.length - right.length).fill("0");
  const hex = [...left, ...zeros, ...right].map((g) => g.padStart(4, "0")).join("");
  return `0x${BigInt(`0x${hex}`).toString(16)}`;
});
