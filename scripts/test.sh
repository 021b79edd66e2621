#!/usr/bin/env bash
# The whole test suite, from a fresh clone on Debian 12 with Node 20, as root:
# installs the tools it misses (scripts/install-deps.sh test, which never removes a package) and
# npm dependencies, checks types, lint and format, runs the unit tests, then the end-to-end tests
# (which start their own dockerd in a network namespace).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "the end-to-end tests need root (network namespaces, netfilter)" >&2; exit 1; }
scripts/install-deps.sh test
npm ci --no-audit --no-fund
npm run typecheck
npm run lint
npm run build
npm run test:unit
npm run test:e2e
