// What workers and the daemon say to each other: newline-delimited JSON, one message per line,
// validated on arrival (the other end is trusted only as far as its key proves). Pure.
import { isIPv4 } from "node:net";
import { z } from "zod/v3";

const ipv4 = z.string().refine((a) => isIPv4(a), { message: "expected an IPv4 address" });
const name = z.string().max(256);
const nodeId = z.string().regex(/^[a-z0-9]{1,64}$/);

/** A container of one node that may open connections (the whitelist, evaluated on its node). */
export const endpointSchema = z.object({ name, ipv4 });
export type ReportedEndpoint = z.output<typeof endpointSchema>;

/** One allowed address of the cluster, with the node it lives on. */
export const allowedEntrySchema = z.object({
  node: nodeId,
  /** That node's underlay address. */
  hostIp: z.string().max(64),
  ipv4,
  name,
  kind: z.enum(["container", "load-balancer"]),
});
export type AllowedEntry = z.output<typeof allowedEntrySchema>;

/**
 * Daemon → worker: the cluster's allowed set, whole, whenever it changes (and on connecting),
 * signed by the daemon (signing.ts): the channel's key, which every node holds, lets a peer talk,
 * not decide.
 */
export const allowedBodySchema = z.object({
  type: z.literal("allowed"),
  instanceId: z.string().max(24),
  networkId: z.string().max(64),
  /** Strictly increasing under one daemon key: a worker takes no set older than its last. */
  seq: z.number().int().nonnegative(),
  entries: z.array(allowedEntrySchema).max(65536),
  /**
   * Nodes whose part of `entries` is the daemon's own knowledge (a report of the node, or a part
   * it signed before, shrunk by the cluster's view): a worker replaces what it had for them. For
   * any other node it keeps what it had, adding what is told (see allowed-set.ts).
   */
  vouched: z.array(nodeId).max(4096),
  /** Every node the cluster shows on the network is vouched for. */
  complete: z.boolean(),
});
export type AllowedBody = z.output<typeof allowedBodySchema>;
export const allowedSchema = allowedBodySchema.extend({
  /** Ed25519 signature (base64) of the body's canonical JSON (signing.ts). */
  signature: z.string().max(200),
});
export type AllowedMessage = z.output<typeof allowedSchema>;

/** Worker → daemon: what its node has on the overlay; sent on connecting and on every change. */
export const reportSchema = z.object({
  type: z.literal("report"),
  node: nodeId,
  /** The node's underlay address, as the cluster lists it ("Host IP"). */
  hostIp: z.string().max(64),
  /** The overlay's ID; null while the network is not on this node (nothing to report). */
  networkId: z.string().max(64).nullable(),
  whitelisted: z.array(endpointSchema).max(4096),
  /** The node's load-balancer endpoint on the overlay, while it has one. */
  loadBalancer: ipv4.nullable(),
  /**
   * The last set this worker took (as signed): a daemon that just started takes the other nodes'
   * parts from it, once it has checked its own signature, until they report themselves, so its
   * first answers never drop a node that has not reported yet.
   */
  known: allowedSchema.nullable(),
});
export type Report = z.output<typeof reportSchema>;

const count = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const byKind = z.object({ "member-to-member": count, "member-to-host": count, forged: count });
const text = z.string().max(2000);

/**
 * Worker → daemon, now and then: how its node enforces (for the daemon's `status` and `doctor`).
 * Said, not decided on: nothing in it changes any rule.
 */
export const nodeStatusSchema = z.object({
  type: z.literal("status"),
  node: nodeId,
  version: z.string().max(64),
  mode: z.enum(["enforce", "audit"]),
  /** Where the worker's rules are (the overlay's namespace), null before its first success. */
  location: text.nullable(),
  /** The overlay's namespace on the node, null while the network is not there. */
  netns: text.nullable(),
  lastPass: z.object({ ok: z.boolean(), at: z.number(), error: text.optional() }).nullable(),
  passes: z.object({ ok: count, failed: count }),
  repairs: count,
  /** The kernel's drop counters there, read when the status was made; or why not. */
  drops: z.union([byKind, z.object({ error: text })]).nullable(),
  attempts: z.object({ byKind, reported: count, suppressed: count, packets: count }),
  attemptLog: z.object({ reading: z.boolean(), reason: text.optional() }),
  /** When the worker made this status (its clock). */
  at: z.number(),
});
export type NodeStatus = z.output<typeof nodeStatusSchema>;

export const workerMessageSchema = z.discriminatedUnion("type", [reportSchema, nodeStatusSchema]);
export type WorkerMessage = z.output<typeof workerMessageSchema>;
export const daemonMessageSchema = allowedSchema;

/** Longest line accepted: a full allowed set of thousands of entries fits, a flood does not. */
export const MAX_LINE_BYTES = 8 * 1024 * 1024;

/** Splits a byte stream into lines; too long a line is an error (the peer is misbehaving). */
export class LineSplitter {
  private buffered = "";

  push(chunk: string): string[] {
    // Only a chunk with a newline ends lines: a long line arriving in pieces is not re-split.
    if (!chunk.includes("\n")) {
      this.buffered += chunk;
      if (this.buffered.length > MAX_LINE_BYTES) throw new Error("line too long");
      return [];
    }
    const lines = (this.buffered + chunk).split("\n");
    this.buffered = lines.pop() ?? "";
    if (this.buffered.length > MAX_LINE_BYTES || lines.some((l) => l.length > MAX_LINE_BYTES))
      throw new Error("line too long");
    return lines.filter((l) => l.trim() !== "");
  }
}

/** Parses one line; null when it is not a valid message (reported by the caller). */
export function parseLine<T>(
  schema: z.ZodType<T, z.ZodTypeDef, unknown>,
  line: string,
): { ok: true; message: T } | { ok: false; error: string } {
  let json: unknown;
  try {
    json = JSON.parse(line);
  } catch {
    return { ok: false, error: "not JSON" };
  }
  const parsed = schema.safeParse(json);
  if (parsed.success) return { ok: true, message: parsed.data };
  const issue = parsed.error.issues[0];
  return { ok: false, error: `${issue?.path.join(".") ?? ""}: ${issue?.message ?? "invalid"}` };
}

/** Docker's overlay MAC for an endpoint: 02:42 followed by its IPv4 address. */
export function overlayMac(ipv4Address: string): string {
  return [
    "02",
    "42",
    ...ipv4Address.split(".").map((b) => Number(b).toString(16).padStart(2, "0")),
  ].join(":");
}
