#!/usr/bin/env bash
# `npm run demo`, from a fresh clone on Debian/Ubuntu with Node 20, as root: installs what is
# missing (tools: scripts/install-deps.sh demo, which never removes a package; npm dependencies),
# builds, then runs scripts/demo.ts, which starts a throwaway dockerd in its own network namespace
# and removes it again (also on Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "the demo needs root (network namespaces, netfilter): sudo npm run demo" >&2; exit 1; }
scripts/install-deps.sh demo
if [ ! -x node_modules/.bin/tsx ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent build
exec node --import tsx scripts/demo.ts
