// The backend the configuration asks for: FIREWALL_BACKEND=auto|iptables|nftables.
import type { FirewallBackend } from "./backend.js";
import { IptablesBackend } from "./iptables/backend.js";
import type { NftChangeMonitor } from "./nft-monitor.js";

export type BackendMode = "auto" | "iptables" | "nftables";

export function createBackend(
  mode: BackendMode,
  monitor: NftChangeMonitor | null = null,
): FirewallBackend {
  if (mode === "nftables") throw new Error("the nftables backend is not available yet");
  return new IptablesBackend(monitor);
}
