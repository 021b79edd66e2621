#!/usr/bin/env bash
# Installs what TrafficJam's tests need on Debian/Ubuntu, as root: Docker Engine (docker.io), both
# iptables flavours, nftables, conntrack, a static busybox and a C compiler for the test images,
# debootstrap (the local Node base the image tests build on) and docker-compose (compose files).
# Only missing packages are installed; nothing is started here (the tests start their own dockerd).
set -euo pipefail
packages=(docker.io iptables nftables conntrack busybox-static iproute2 util-linux gcc libc6-dev
  debootstrap docker-compose)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# docker.io's postinst may start a host dockerd where systemd runs; the tests never use it.
