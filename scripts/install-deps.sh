#!/usr/bin/env bash
# Installs what `npm run demo` or `npm test` runs and this machine lacks, on Debian/Ubuntu as root:
#   scripts/install-deps.sh demo|test
#
# What is missing is decided by looking for the tools themselves (dockerd, nft, gcc...), whatever
# package brought them: Docker CE's dockerd serves as well as docker.io's. Each missing tool maps
# to the Debian package that provides it. Only then does apt run: update, a simulated install, and
# the install. apt never removes anything (--no-remove): where the install would remove or
# downgrade a package (on a Docker CE host docker.io would replace docker-ce) or cannot be
# resolved, the script stops before installing anything and says what to install by hand.
# Nothing is started or enabled: the tests and the demo start their own dockerd in a network
# namespace, so the daemons of newly installed packages are kept from starting (policy-rc.d) and
# disabled at boot.
#
# Test hooks (test/unit/install-deps.test.ts): TJ_DEPS_PATH, the folders searched for the tools
# (default: $PATH); TJ_E2E_BUSYBOX, the busybox the test image copies (default /bin/busybox, as in
# test/e2e/lab/image.ts); TJ_DEPS_POLICY_RC_D (default /usr/sbin/policy-rc.d). apt-get, dpkg and
# systemctl are the first ones on PATH: the test puts fakes there that record their calls, and
# passes its own options (a faked dpkg status) to the real apt-get when it simulates.
set -euo pipefail

# "package: tools it provides" for what each profile runs. sh, tar, find and mount are essential
# and taken as given; the pseudo-tools static-libc, static-busybox and python3-yaml are checked
# by present() below.
demo=(
  "docker.io: dockerd docker-proxy docker"         # the lab's engine, published ports, its CLI
  "containerd: containerd containerd-shim-runc-v2" # dockerd's runtime
  "runc: runc"
  "iptables: iptables ip6tables iptables-nft iptables-legacy" # dockerd's; TrafficJam reads both
  "nftables: nft"                                  # TrafficJam's `nft monitor`
  "iproute2: ip"                                   # ip netns: the lab's own namespace
  "util-linux: nsenter"                            # TrafficJam finds bridge ports by entering netns
  "procps: sysctl"                                 # the lab host's sysctls
  "busybox-static: static-busybox"                 # the image's userland, server and TCP probe
)
# The tests also compile tjprobe, their probe for UDP, forged packets, multicast... (the demo's
# image is busybox alone), delete flows (conntrack), build the product image on a debootstrapped
# Node base, run the compose files (docker-compose, read back with python3-yaml), look at
# processes (ps), push the product image to a private registry for the Swarm quick start
# (docker-registry, run inside a lab namespace; its own service is never started), read the
# blocked-attempt log's NFLOG groups as TrafficJam does (tcpdump) and scrape its metrics with a
# real Prometheus (prometheus and its promtool, run inside a lab namespace; never started as a
# service).
test_only=(
  "gcc: gcc"                                       # tjprobe, the probe in every test container,
  "libc6-dev: static-libc"                         # is compiled with gcc -static
  "conntrack: conntrack"
  "debootstrap: debootstrap"
  "docker-compose: docker-compose"
  "python3-yaml: python3-yaml"
  "procps: ps"
  "docker-registry: docker-registry"               # the Swarm quick start's registry
  "tcpdump: tcpdump"                               # the blocked-attempt log's reader
  "prometheus: prometheus promtool"                # scrapes the metrics; checks the alert rules
)
case "${1:-}" in
  demo) entries=("${demo[@]}") ;;
  test) entries=("${demo[@]}" "${test_only[@]}") ;;
  *) echo "usage: $0 demo|test" >&2 && exit 2 ;;
esac
profile=$1
tool_path=${TJ_DEPS_PATH:-$PATH}
busybox=${TJ_E2E_BUSYBOX:-/bin/busybox}
policy=${TJ_DEPS_POLICY_RC_D:-/usr/sbin/policy-rc.d}
export LC_ALL=C # apt's messages are read below

say() { printf 'install-deps: %s\n' "$*"; }

# where TOOL: its path in tool_path (not `command -v`, which would search this shell's PATH)
where() {
  local dir dirs
  IFS=: read -ra dirs <<<"$tool_path"
  for dir in "${dirs[@]}"; do
    [ -x "$dir/$1" ] && echo "$dir/$1" && return 0
  done
  return 1
}

present() {
  local bin
  case $1 in
    static-libc) # what tjprobe's build needs: a static link
      bin=$(where gcc) && "$bin" -static -x c -o /dev/null - <<<'int main(void){}' 2>/dev/null ;;
    static-busybox) [ -x "$busybox" ] && ! ldd "$busybox" >/dev/null 2>&1 ;; # ldd fails on static
    python3-yaml) bin=$(where python3) && "$bin" -c 'import yaml' 2>/dev/null ;;
    *) where "$1" >/dev/null ;;
  esac
}

# missing_now: sets `packages` (to install) and `for_package[PKG]` (its missing tools)
missing_now() {
  local entry pkg tool
  packages=() && for_package=()
  for entry in "${entries[@]}"; do
    pkg=${entry%%:*}
    for tool in ${entry#*:}; do
      present "$tool" && continue
      [ -n "${for_package[$pkg]:-}" ] || packages+=("$pkg")
      for_package[$pkg]+="${for_package[$pkg]:+ }$tool"
    done
  done
}

# simulate PKG...: apt's plan on stdout; fails where apt would remove or downgrade a package, or
# cannot resolve (--no-remove turns a removal into an error, but say so whatever the apt version)
simulate() {
  local out rc=0
  out=$(apt-get -s install --no-remove --no-install-recommends "$@" 2>&1) || rc=$?
  printf '%s\n' "$out"
  [ "$rc" = 0 ] && ! grep -qE '^(Remv |The following packages will be (REMOVED|DOWNGRADED))' <<<"$out"
}

# listed WHAT PLAN: the packages apt lists under "The following WHAT:", on one line
listed() { sed -n "/^The following $1:/,/^[^ ]/{/^ /p}" <<<"$2" | xargs; }

# why PLAN: what is wrong with a failed plan, on one line
why() {
  local removed downgraded
  removed=$(listed "packages will be REMOVED" "$1")
  downgraded=$(listed "packages will be DOWNGRADED" "$1")
  if [ -n "$removed" ]; then
    echo "would remove $removed${downgraded:+, downgrade $downgraded}"
  elif [ -n "$downgraded" ]; then
    echo "would downgrade $downgraded"
  else
    grep '^E: ' <<<"$1" | paste -sd ' ' - || echo "apt failed"
  fi
}

declare -A for_package
missing_now
if [ ${#packages[@]} = 0 ]; then
  say "nothing missing for the $profile profile"
  exit 0
fi
for pkg in "${packages[@]}"; do say "missing: ${for_package[$pkg]} (Debian package $pkg)"; done
command -v apt-get >/dev/null || { say "this system has no apt: add these tools by hand" >&2; exit 1; }

apt-get update -qq
if ! plan=$(simulate "${packages[@]}"); then
  # Each new package alone, so that the message names the ones in the way and their tools
  # (one already installed changes nothing, and is not tried).
  by_hand=() && fresh=" $(listed "NEW packages will be installed" "$plan") "
  {
    say "stopped: apt would change packages you have, so nothing was installed or removed."
    for pkg in "${packages[@]}"; do
      [ "$fresh" = "  " ] || [[ $fresh == *" $pkg "* ]] || continue
      if ! alone=$(simulate "$pkg"); then
        say "  $pkg (for ${for_package[$pkg]}): $(why "$alone")"
        by_hand+=("${for_package[$pkg]}")
      fi
    done
    if [ ${#by_hand[@]} = 0 ]; then
      say "  ${packages[*]}, together: $(why "$plan")"
      for pkg in "${packages[@]}"; do by_hand+=("${for_package[$pkg]}"); done
    fi
    say "Install by hand, in a way that keeps your own packages, what provides:"
    say "  ${by_hand[*]}"
    say "(or put it on PATH if you have it), then run scripts/install-deps.sh $profile again."
  } >&2
  exit 1
fi
mapfile -t new < <(sed -nE 's/^Inst ([^ ]+) \(.*/\1/p' <<<"$plan")
mapfile -t upgraded < <(sed -nE 's/^Inst ([^ ]+) \[.*/\1/p' <<<"$plan")
say "apt will install: ${new[*]:-nothing new}${upgraded[*]:+; and upgrade: ${upgraded[*]}}"

# No daemon starts during the install: invoke-rc.d and deb-systemd-invoke ask policy-rc.d, and 101
# is "refused". One already there is the administrator's and is left as it is.
if [ ! -e "$policy" ]; then
  trap 'rm -f "$policy"' EXIT
  printf '#!/bin/sh\nexit 101 # scripts/install-deps.sh is installing: no service starts\n' >"$policy"
  chmod 755 "$policy"
fi
DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-remove --no-install-recommends "${packages[@]}"
# Nor at the next boot: the new packages' postinst enabled their units (docker, containerd).
if [ ${#new[@]} != 0 ]; then
  files=$(dpkg -L "${new[@]}")
  if command -v systemctl >/dev/null; then # also disables the SysV scripts of the same names
    mapfile -t units < <(sed -nE 's#^(/usr)?/lib/systemd/system/([^/]+\.(service|socket))$#\2#p' \
      <<<"$files")
    [ ${#units[@]} = 0 ] || systemctl disable --quiet "${units[@]}" ||
      say "could not disable ${units[*]}: do it by hand" >&2
  else
    mapfile -t scripts < <(sed -n 's#^/etc/init\.d/##p' <<<"$files")
    for s in "${scripts[@]}"; do
      update-rc.d "$s" disable >/dev/null || say "could not disable $s: do it by hand" >&2
    done
  fi
fi
missing_now
if [ ${#packages[@]} != 0 ]; then
  for pkg in "${packages[@]}"; do
    say "installed $pkg, but still not found on $tool_path: ${for_package[$pkg]}" >&2
  done
  exit 1
fi
say "installed what the $profile profile needs; no service was started or enabled"
