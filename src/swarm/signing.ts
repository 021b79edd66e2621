// The Swarm daemon's identity: an Ed25519 key pair. The daemon signs every allowed set; workers
// hold only the public half (in their service's environment, which only a Swarm manager can set),
// so a node's root, who can read its worker's channel key, can talk on the channel but cannot
// make other nodes allow anything.
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  sign,
  verify,
  type KeyObject,
} from "node:crypto";
import type { AllowedBody, AllowedMessage } from "./protocol.js";

/** JSON with object keys sorted at every level: both ends serialise a body alike. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

export interface SigningKeys {
  privateKey: KeyObject;
  /** The public half as workers get it: base64 of its DER (SPKI). */
  publicKey: string;
}

export function generateSigningKeys(): SigningKeys {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  return {
    privateKey,
    publicKey: publicKey.export({ type: "spki", format: "der" }).toString("base64"),
  };
}

/** The private key as kept on disk (PEM, PKCS#8), and back. */
export const privateKeyPem = (key: KeyObject) =>
  key.export({ type: "pkcs8", format: "pem" }).toString();

export function keysFromPem(pem: string): SigningKeys {
  const privateKey = createPrivateKey(pem);
  if (privateKey.asymmetricKeyType !== "ed25519") throw new Error("not an Ed25519 private key");
  const publicKey = createPublicKey(privateKey).export({ type: "spki", format: "der" });
  return { privateKey, publicKey: publicKey.toString("base64") };
}

/** A worker's view of the daemon's public key (base64 DER); throws on anything else. */
export function publicKeyOf(base64: string): KeyObject {
  const key = createPublicKey({ key: Buffer.from(base64, "base64"), format: "der", type: "spki" });
  if (key.asymmetricKeyType !== "ed25519") throw new Error("not an Ed25519 public key");
  return key;
}

export function signBody(body: AllowedBody, privateKey: KeyObject): AllowedMessage {
  const signature = sign(null, Buffer.from(canonicalJson(body)), privateKey).toString("base64");
  return { ...body, signature };
}

/** Whether `message` was signed by the holder of `publicKey` (its body exactly as signed). */
export function verifyMessage(message: AllowedMessage, publicKey: KeyObject): boolean {
  const { signature, ...body } = message;
  try {
    return verify(
      null,
      Buffer.from(canonicalJson(body)),
      publicKey,
      Buffer.from(signature, "base64"),
    );
  } catch {
    return false;
  }
}
