// What TrafficJam drops, by kind, and how its rules tell the daemon about it: the kinds of drop,
// the enforcement mode, the NFLOG groups of the blocked-attempt log and the kernel-side limits on
// the log rules. Pure: the renderers, the blocked-attempt reader, `status`, `doctor` and the
// metrics all read these, so they agree.
import { createHash } from "node:crypto";

/**
 * Why a packet is dropped: a member opening a connection to another member (or sending any frame
 * to another member's port), a member reaching the host, or a frame claiming an identity (MAC,
 * address, neighbour) its port may not carry.
 */
export type DropKind = "member-to-member" | "member-to-host" | "forged";
export const DROP_KINDS: readonly DropKind[] = ["member-to-member", "member-to-host", "forged"];

/** A count per kind, all zero. */
export const zeroCounts = (): Record<DropKind, number> => ({
  "member-to-member": 0,
  "member-to-host": 0,
  forged: 0,
});

/** `enforce`: drop. `audit`: the same rules, but what they would drop is logged and accepted. */
export type Mode = "enforce" | "audit";
export const MODES: readonly Mode[] = ["enforce", "audit"];

/** The blocked-attempt log's NFLOG group of each kind (one group per kind: no prefix to parse). */
export type LogGroups = Record<DropKind, number>;

/**
 * Three consecutive NFLOG groups per instance, from a hash of its INSTANCE_ID, in 32768–65535
 * (the upper half, clear of the small numbers people pick by hand). A group can be read by one
 * process only, so instances must not share one: `trafficjam doctor` reports a collision.
 */
export function logGroupsOf(instanceId: string): LogGroups {
  const slot = parseInt(sha(instanceId).slice(0, 8), 16) % 8191;
  const base = 0x8000 + slot * 4;
  return { "member-to-member": base, "member-to-host": base + 1, forged: base + 2 };
}

/** The kind a group number reports, for one instance's groups; null: not one of them. */
export function kindOfGroup(groups: LogGroups, group: number): DropKind | null {
  return DROP_KINDS.find((kind) => groups[kind] === group) ?? null;
}

/**
 * Kernel-side limits on the log rules (never on the drops): each source may be logged
 * `perSource` times a second (a burst of `perSourceBurst`), remembered for `sourceTtlS` in a
 * table of at most `sources` entries; each log rule logs at most `perRule` packets a second,
 * whatever the number of sources. A flood costs the kernel a limit check per packet, and the
 * daemon at most `perRule` packets a second per log rule.
 */
export const LOG_LIMITS = {
  perSource: 5,
  perSourceBurst: 10,
  sources: 4096,
  sourceTtlS: 60,
  perRule: 100,
  perRuleBurst: 100,
  /** Bytes of each packet copied to the log: the IP and transport headers. */
  snaplen: 128,
  /**
   * Each logged packet goes to the reader at once: the kernel's default queues up to 100 of them
   * for up to a second (measured: attempts then reached the log ~1 s late).
   */
  queueThreshold: 1,
} as const;

/** A short name of the kernel's per-source table (iptables hashlimit: at most 15 characters). */
export function limitTableName(instanceId: string, kind: DropKind): string {
  const letter = kind === "member-to-member" ? "m" : kind === "member-to-host" ? "h" : "x";
  return `tj${letter}${sha(instanceId).slice(0, 10)}`;
}

function sha(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}
