// Which Docker events can change what WHITELIST_FILTER matches, for each filter key Docker
// accepts. Pure. The daemon subscribes to these events and runs a pass at each, so an allowance is
// withdrawn within an event's latency whatever POLL_INTERVAL is (docs/design.md has the table).
import type { EngineEvent } from "./engine-api.js";

/** Container events every key needs: a container starts, dies, is removed, or its name changes. */
const LIFECYCLE = ["start", "die", "destroy", "rename", "create"];
/** Membership of the protected network (and, for `network=`, of any network). */
const MEMBERSHIP = ["connect", "disconnect"];
/** An image reference moved to another image (what `ancestor=` resolves). */
const IMAGE_REFERENCE = ["tag", "untag", "delete", "load", "import", "pull"];

/** For each filter key, the events that change its match beyond the lifecycle and membership. */
export const FILTER_EVENTS: Readonly<Record<string, { type: string; actions: string[] } | null>> = {
  label: null, // fixed when the container is created
  name: null, // rename: in LIFECYCLE
  id: null,
  network: { type: "network", actions: MEMBERSHIP }, // of any network, not only ours
  health: { type: "container", actions: ["health_status"] }, // Docker emits it on every change
  status: { type: "container", actions: ["pause", "unpause"] },
  ancestor: { type: "image", actions: IMAGE_REFERENCE },
  before: null, // relative to another container's creation: lifecycle events
  since: null,
  exited: null, // only exited containers: never a running one
  expose: null, // fixed at creation, as are the four below
  publish: null,
  volume: null,
  isolation: null,
  "is-task": null,
};

/** The event stream's filters for a whitelist key (Docker's `type` and `event` filters). */
export function eventFilters(key: string): Record<string, string[]> {
  const extra = FILTER_EVENTS[key] ?? null;
  const types = new Set(["container", "network", ...(extra ? [extra.type] : [])]);
  // `health_status` makes Docker match every event filter as a prefix ("health_status: healthy").
  const actions = new Set([...LIFECYCLE, ...MEMBERSHIP, ...(extra?.actions ?? [])]);
  return { type: [...types].sort(), event: [...actions].sort() };
}

/** What an event means for the next pass. */
export type EventEffect =
  /** Nothing that can change the snapshot: no pass. */
  | { kind: "none" }
  /** These containers may have joined, left, or started or stopped matching: read them. */
  | { kind: "containers"; ids: string[] }
  /** The protected network itself changed (created, destroyed): read it whole. */
  | { kind: "network" }
  /** Something the whitelist depends on but no container names (an image): list it whole. */
  | { kind: "whitelist" };

/**
 * What an event means for a network referred to as `ref` (name, ID or ID prefix), last seen with
 * ID `networkId`, under a whitelist with key `key`.
 */
export function effectOf(
  event: EngineEvent,
  ref: string,
  networkId: string | null,
  key: string,
): EventEffect {
  if (event.Type === "container") {
    const action = event.Action.split(":")[0] ?? "";
    const relevant =
      LIFECYCLE.includes(action) || (FILTER_EVENTS[key]?.actions.includes(action) ?? false);
    return relevant ? { kind: "containers", ids: [event.Actor.ID] } : { kind: "none" };
  }
  if (event.Type === "network") {
    const id = event.Actor.ID;
    const ours = id === networkId || event.Actor.Attributes.name === ref || id.startsWith(ref);
    const container = event.Actor.Attributes.container;
    const membership = MEMBERSHIP.includes(event.Action) && container;
    if (ours) return membership ? { kind: "containers", ids: [container] } : { kind: "network" };
    // Another network: only a `network=` whitelist can change with it.
    return key === "network" && membership
      ? { kind: "containers", ids: [container] }
      : { kind: "none" };
  }
  if (event.Type === "image" && key === "ancestor") return { kind: "whitelist" };
  return { kind: "none" };
}
