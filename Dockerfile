# TrafficJam's container image. Works with the classic builder of Docker 20.10 and with BuildKit.
#   docker build -t trafficjam .
#   docker build --build-arg BASE=my-node:20 -t trafficjam .   (any Debian-based Node ≥ 20 image)
# The daemon is the entrypoint, so `docker run … trafficjam --clear` and
# `docker run … trafficjam healthcheck` pass their argument to it.
ARG BASE=node:20-bookworm-slim

FROM ${BASE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY tsconfig.json ./
COPY src ./src
# One bundle (esbuild), its dependencies inside: the image needs no node_modules, and the daemon
# and the health check load a few files instead of dozens.
RUN npm run build

FROM ${BASE}
# Both iptables flavours (iptables-nft and iptables-legacy, plus ip6tables) come with Debian's
# iptables package; nft for the nftables backend, for the bridge guard table of both backends and
# for change notifications; conntrack to delete the flows of revoked allowances; iproute2's ip to
# find each member's bridge port (from the namespace ids of Docker's netns folder, mounted at
# /run/netns); tcpdump to read the blocked-attempt log's NFLOG groups; tini as PID 1, forwarding
# SIGTERM/SIGUSR1.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      iptables nftables conntrack iproute2 tcpdump tini \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ENV NODE_ENV=production
COPY --from=build /src/package.json ./
COPY --from=build /src/dist ./dist
COPY image/healthcheck.sh /usr/local/bin/trafficjam-healthcheck
RUN ln -s /app/dist/cli.js /usr/local/bin/trafficjam && chmod 755 /app/dist/cli.js /usr/local/bin/trafficjam-healthcheck
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/trafficjam"]
# Healthy only while its last pass, within 3 × POLL_INTERVAL, succeeded: every pass reads the rules
# back from the kernel (or knows from nft monitor that nothing changed), so the check itself reads
# only the verdict the daemon wrote, with a shell script: no Node process per check
# (`trafficjam healthcheck` gives the same answer; `--deep` reads the kernel too). Every 30 s: each
# check is an exec into the container, some 50 ms of CPU on a small VM, paid on every Swarm node.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/trafficjam-healthcheck"]
