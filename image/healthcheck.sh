#!/bin/sh
# The image's HEALTHCHECK: prints and exits as `trafficjam healthcheck` does, from the verdict the
# daemon writes after every pass (src/ops/health.ts: <INSTANCE_ID>.<netns>.verdict, one line
# "<until ms> <healthy|unhealthy> <reason>"), without starting a Node process: a check every few
# seconds, all day, on every node, costs next to nothing. A verdict past its `until` (no
# successful pass within 3 × POLL_INTERVAL: the daemon is stuck) is unhealthy. In the container
# the daemon is PID 1's child: when it dies, the container stops.
set -u
id=${INSTANCE_ID:-DEFAULT}
dir=${TRAFFICJAM_STATE_DIR:-/run/trafficjam}
ns=$(readlink /proc/self/ns/net | tr -cd 'a-z0-9')
file="$dir/$id.$ns.verdict"
if ! { read -r until verdict reason < "$file"; } 2>/dev/null; then
  echo "unhealthy: state file $dir/$id.$ns.json: missing (daemon not started, or stopped)" >&2
  exit 1
fi
now=$(date +%s%3N)
if [ "$now" -gt "$until" ]; then
  echo "unhealthy: no successful reconcile within 3 × POLL_INTERVAL (stale by $(((now - until) / 1000)) s): $reason" >&2
  exit 1
fi
if [ "$verdict" = healthy ]; then
  echo "healthy: $reason"
  exit 0
fi
echo "unhealthy: $reason" >&2
exit 1
