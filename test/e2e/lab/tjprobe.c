/*
 * tjprobe: tiny network probe baked into the e2e test image (compiled with gcc -static).
 *
 * Busybox only has whole-second timeouts and its wget segfaults here, so the tests use this
 * helper for fast, millisecond-precise probes. Exit status: 0 = success, 1 = probe failed
 * (reason on stderr, always prefixed "tjprobe:" so the lab can tell a failed probe from a
 * failed `docker exec`), 2 = usage error.
 *
 *   tjprobe serve                               TCP 80 + 8080 ("ok\n" then close), UDP 9000 echo
 *                                               (+ "<src ip> <payload>" lines in /tmp/udp.log),
 *                                               dual-stack, forever; SIGTERM exits at once.
 *                                               Creates /tmp/tjprobe.ready once listening.
 *                                               $TJPROBE_DIR replaces /tmp (used on the lab host).
 *                                               A datagram from source port 9000 (another serve,
 *                                               or a forged one) is logged but not echoed, so two
 *                                               servers never echo each other forever.
 *   tjprobe tcp HOST PORT TIMEOUT_MS            connect within the timeout
 *   tjprobe udp HOST PORT TIMEOUT_MS [PAYLOAD]  echo received within the timeout
 *   tjprobe watch HOST PORT INTERVAL_MS COUNT [TIMEOUT_MS]
 *                                               COUNT connects, one every INTERVAL_MS; prints
 *                                               "ok"/"fail" per attempt then "summary ok=N fail=M";
 *                                               exit 0 only if every attempt succeeded
 *   tjprobe spoofudp SRC DST PORT [PAYLOAD [SRCPORT]]
 *                                               one UDP datagram with a forged source address
 *                                               (raw socket, IPv4 and IPv6; DST may be fe80::X%IF);
 *                                               source port SRCPORT, default 40000 + pid % 20000
 *   tjprobe arpspoof IFACE CLAIMED_IP DST_IP DST_MAC COUNT [SENDER_MAC]
 *                                               COUNT ARP replies ~50 ms apart, Ethernet to DST_MAC,
 *                                               saying CLAIMED_IP is at SENDER_MAC (default IFACE's
 *                                               MAC); the Ethernet source is always IFACE's MAC
 *   tjprobe naspoof IFACE TARGET_ADDR DST COUNT [LLADDR]
 *                                               COUNT unsolicited ICMPv6 neighbour advertisements
 *                                               ~50 ms apart (override flag, hop limit 255, target
 *                                               link-layer option LLADDR, default IFACE's MAC)
 *                                               claiming TARGET_ADDR, to DST (unicast or ff02::1;
 *                                               not looped back to the sender itself)
 *   tjprobe sendudp DST PORT PAYLOAD [IFACE]    one UDP datagram from an ordinary socket with
 *                                               SO_BROADCAST (255.255.255.255 works); IFACE picks
 *                                               the interface (multicast and broadcast alike)
 *   tjprobe mlisten GROUP PORT IFACE SECONDS    joins multicast GROUP (IPv4 or IPv6) on IFACE,
 *                                               bound to GROUP:PORT; prints "<src ip> <payload>"
 *                                               per datagram for SECONDS, then exits 0.
 *                                               /tmp/mlisten-GROUP-PORT.ready exists while joined
 *   tjprobe ethsend IFACE DST_MAC ETHERTYPE COUNT
 *                                               COUNT raw Ethernet frames (~10 ms apart) of any
 *                                               ETHERTYPE (e.g. 0x88b5) from IFACE's MAC
 *   tjprobe vxlan HOST PORT VNI udp|arp INNER_SRC INNER_DST DST_MAC COUNT [PAYLOAD|SENDER_MAC]
 *                                               COUNT VXLAN datagrams (~50 ms apart) from an ordinary
 *                                               UDP socket (no capability) to HOST:PORT, each wrapping
 *                                               an Ethernet frame to DST_MAC: "udp", from Docker's
 *                                               overlay MAC of INNER_SRC (02:42:<its IPv4>), an IPv4
 *                                               datagram INNER_SRC -> INNER_DST:9000 carrying PAYLOAD;
 *                                               "arp", from SENDER_MAC (default that overlay MAC), an
 *                                               ARP reply claiming INNER_SRC is at SENDER_MAC
 *   tjprobe stamp COMMAND ARGS...               prints "stamp <ms since the epoch>" on stdout, then
 *                                               runs COMMAND (any of these): when a probe began,
 *                                               by the kernel's clock (the one log lines use)
 *   tjprobe flood DST PORT RATE SECONDS         UDP datagrams to DST:PORT, RATE a second (sent
 *                                               every millisecond, in bursts of RATE/1000) for
 *                                               SECONDS, from an ordinary socket; prints
 *                                               "sent N" (send errors, e.g. ENOBUFS, not counted)
 *   tjprobe ethlisten IFACE ETHERTYPE SECONDS   counts frames of ETHERTYPE arriving on IFACE for
 *                                               SECONDS, then prints "received N" and exits 0.
 *                                               /tmp/ethlisten-IFACE-ETHERTYPE.ready (ETHERTYPE as
 *                                               0x%04x) exists while listening
 *
 * The raw commands need CAP_NET_RAW, which Docker grants by default. Listeners remove a stale
 * ready file first, create it once set up, and remove it on exit.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/icmp6.h>
#include <netinet/if_ether.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip6.h>
#include <netinet/udp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef IPV6_HDRINCL
#define IPV6_HDRINCL 36
#endif

static int fail(const char *fmt, const char *arg) {
  fprintf(stderr, "tjprobe: ");
  fprintf(stderr, fmt, arg);
  fputc('\n', stderr);
  return 1;
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int parse_int(const char *s, long lo, long hi, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *s == '\0' || *end != '\0' || v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

/* Numeric IPv4 or IPv6 literal (optionally "addr%iface") -> sockaddr. No DNS on purpose. */
static int parse_addr(const char *host, long port, struct sockaddr_storage *ss, socklen_t *len) {
  memset(ss, 0, sizeof(*ss));
  struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
  if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    *len = sizeof(*s4);
    return 0;
  }
  struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
  char buf[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
  snprintf(buf, sizeof(buf), "%s", host);
  char *scope = strchr(buf, '%');
  if (scope) *scope++ = '\0';
  if (inet_pton(AF_INET6, buf, &s6->sin6_addr) != 1) return -1;
  s6->sin6_family = AF_INET6;
  s6->sin6_port = htons((uint16_t)port);
  if (scope) s6->sin6_scope_id = if_nametoindex(scope);
  *len = sizeof(*s6);
  return 0;
}

/* One non-blocking connect bounded by timeout_ms. Returns 0 on success, else sets *why. */
static int tcp_once(const struct sockaddr_storage *ss, socklen_t len, long timeout_ms, const char **why) {
  int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) { *why = strerror(errno); return -1; }
  int rc = connect(fd, (const struct sockaddr *)ss, len);
  if (rc < 0 && errno != EINPROGRESS) { *why = strerror(errno); close(fd); return -1; }
  if (rc < 0) {
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    long long deadline = now_ms() + timeout_ms;
    for (;;) {
      long left = (long)(deadline - now_ms());
      if (left < 0) left = 0;
      int n = poll(&p, 1, (int)left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) { *why = "timeout"; close(fd); return -1; }
      break;
    }
    int err = 0;
    socklen_t el = sizeof(err);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err) { *why = strerror(err); close(fd); return -1; }
  }
  close(fd);
  return 0;
}

static int cmd_tcp(int argc, char **argv) {
  long port, timeout;
  struct sockaddr_storage ss;
  socklen_t len;
  if (argc != 5 || parse_int(argv[3], 1, 65535, &port) || parse_int(argv[4], 1, 600000, &timeout))
    return fprintf(stderr, "usage: tjprobe tcp HOST PORT TIMEOUT_MS\n"), 2;
  if (parse_addr(argv[2], port, &ss, &len)) return fprintf(stderr, "tjprobe: bad address %s\n", argv[2]), 2;
  const char *why = "";
  if (tcp_once(&ss, len, timeout, &why)) return fail("tcp fail: %s", why);
  puts("ok");
  return 0;
}

static int cmd_udp(int argc, char **argv) {
  long port, timeout;
  struct sockaddr_storage ss;
  socklen_t len;
  if ((argc != 5 && argc != 6) || parse_int(argv[3], 1, 65535, &port) || parse_int(argv[4], 1, 600000, &timeout))
    return fprintf(stderr, "usage: tjprobe udp HOST PORT TIMEOUT_MS [PAYLOAD]\n"), 2;
  if (parse_addr(argv[2], port, &ss, &len)) return fprintf(stderr, "tjprobe: bad address %s\n", argv[2]), 2;
  const char *payload = argc == 6 ? argv[5] : "probe";
  int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail("udp socket: %s", strerror(errno));
  /* connect() so an ICMP port-unreachable surfaces as ECONNREFUSED instead of a timeout */
  if (connect(fd, (struct sockaddr *)&ss, len) < 0) return fail("udp connect: %s", strerror(errno));
  if (send(fd, payload, strlen(payload), 0) < 0) return fail("udp send: %s", strerror(errno));
  struct pollfd p = {.fd = fd, .events = POLLIN};
  long long deadline = now_ms() + timeout;
  char buf[2048];
  for (;;) {
    long left = (long)(deadline - now_ms());
    if (left < 0) left = 0;
    int n = poll(&p, 1, (int)left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail("udp fail: %s", "timeout");
    ssize_t r = recv(fd, buf, sizeof(buf), 0);
    if (r < 0) return fail("udp fail: %s", strerror(errno));
    puts("ok");
    return 0;
  }
}

static int cmd_watch(int argc, char **argv) {
  long port, interval, count, timeout;
  struct sockaddr_storage ss;
  socklen_t len;
  if ((argc != 6 && argc != 7) || parse_int(argv[3], 1, 65535, &port) ||
      parse_int(argv[4], 1, 600000, &interval) || parse_int(argv[5], 1, 1000000, &count))
    return fprintf(stderr, "usage: tjprobe watch HOST PORT INTERVAL_MS COUNT [TIMEOUT_MS]\n"), 2;
  timeout = interval;
  if (argc == 7 && parse_int(argv[6], 1, 600000, &timeout))
    return fprintf(stderr, "usage: tjprobe watch HOST PORT INTERVAL_MS COUNT [TIMEOUT_MS]\n"), 2;
  if (parse_addr(argv[2], port, &ss, &len)) return fprintf(stderr, "tjprobe: bad address %s\n", argv[2]), 2;
  long ok = 0, bad = 0;
  long long start = now_ms();
  setvbuf(stdout, NULL, _IOLBF, 0);
  for (long i = 0; i < count; i++) {
    /* attempts are scheduled on a fixed grid; an overrunning attempt makes the next start at once */
    long long due = start + i * interval;
    long long wait = due - now_ms();
    if (wait > 0) {
      struct timespec ts = {.tv_sec = wait / 1000, .tv_nsec = (wait % 1000) * 1000000};
      while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
    }
    const char *why = "";
    if (tcp_once(&ss, len, timeout, &why) == 0) { ok++; puts("ok"); }
    else { bad++; printf("fail %s\n", why); }
  }
  printf("summary ok=%ld fail=%ld\n", ok, bad);
  return bad == 0 ? 0 : 1;
}

static uint32_t csum_add(uint32_t sum, const void *data, size_t len) {
  const uint8_t *p = data;
  for (; len > 1; len -= 2, p += 2) sum += (uint32_t)(p[0] << 8 | p[1]);
  if (len) sum += (uint32_t)(p[0] << 8);
  return sum;
}

/* Internet checksum over big-endian 16-bit words; the result is in host order (htons it). */
static uint16_t csum_fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return (uint16_t)~sum;
}

static int cmd_spoofudp(int argc, char **argv) {
  long port;
  long sport = 40000 + getpid() % 20000;
  if (argc < 5 || argc > 7 || parse_int(argv[4], 1, 65535, &port) ||
      (argc == 7 && parse_int(argv[6], 1, 65535, &sport)))
    return fprintf(stderr, "usage: tjprobe spoofudp SRC DST PORT [PAYLOAD [SRCPORT]]\n"), 2;
  const char *payload = argc >= 6 ? argv[5] : "spoof";
  size_t plen = strlen(payload);
  if (plen > 1000) return fprintf(stderr, "tjprobe: payload too long\n"), 2;
  struct sockaddr_storage src, dst;
  socklen_t slen, dlen;
  if (parse_addr(argv[2], 0, &src, &slen) || parse_addr(argv[3], 0, &dst, &dlen) || src.ss_family != dst.ss_family)
    return fprintf(stderr, "tjprobe: SRC and DST must be addresses of the same family\n"), 2;
  uint8_t pkt[1100];
  memset(pkt, 0, sizeof(pkt));
  if (dst.ss_family == AF_INET) {
    /* IPPROTO_RAW implies IP_HDRINCL: the kernel sends our header, forged saddr included */
    struct iphdr *ip = (struct iphdr *)pkt;
    struct udphdr *udp = (struct udphdr *)(pkt + sizeof(*ip));
    size_t total = sizeof(*ip) + sizeof(*udp) + plen;
    memcpy(pkt + sizeof(*ip) + sizeof(*udp), payload, plen);
    ip->version = 4;
    ip->ihl = 5;
    ip->ttl = 64;
    ip->protocol = IPPROTO_UDP;
    ip->tot_len = htons((uint16_t)total);
    ip->id = htons((uint16_t)getpid());
    ip->saddr = ((struct sockaddr_in *)&src)->sin_addr.s_addr;
    ip->daddr = ((struct sockaddr_in *)&dst)->sin_addr.s_addr;
    ip->check = htons(csum_fold(csum_add(0, ip, sizeof(*ip))));
    udp->source = htons((uint16_t)sport);
    udp->dest = htons((uint16_t)port);
    udp->len = htons((uint16_t)(sizeof(*udp) + plen));
    uint32_t sum = csum_add(0, &ip->saddr, 8);
    sum += IPPROTO_UDP + (uint32_t)(sizeof(*udp) + plen);
    sum = csum_add(sum, udp, sizeof(*udp) + plen);
    udp->check = htons(csum_fold(sum));
    if (udp->check == 0) udp->check = 0xffff;
    int fd = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
    if (fd < 0) return fail("raw socket: %s", strerror(errno));
    if (sendto(fd, pkt, total, 0, (struct sockaddr *)&dst, dlen) < 0) return fail("sendto: %s", strerror(errno));
  } else {
    /* AF_INET6 + IPPROTO_RAW also means "header included" on Linux; set IPV6_HDRINCL too */
    struct ip6_hdr *ip6 = (struct ip6_hdr *)pkt;
    struct udphdr *udp = (struct udphdr *)(pkt + sizeof(*ip6));
    size_t ulen = sizeof(*udp) + plen;
    memcpy(pkt + sizeof(*ip6) + sizeof(*udp), payload, plen);
    ip6->ip6_flow = htonl(6u << 28);
    ip6->ip6_plen = htons((uint16_t)ulen);
    ip6->ip6_nxt = IPPROTO_UDP;
    ip6->ip6_hlim = 64;
    ip6->ip6_src = ((struct sockaddr_in6 *)&src)->sin6_addr;
    ip6->ip6_dst = ((struct sockaddr_in6 *)&dst)->sin6_addr;
    udp->source = htons((uint16_t)sport);
    udp->dest = htons((uint16_t)port);
    udp->len = htons((uint16_t)ulen);
    uint32_t sum = csum_add(0, &ip6->ip6_src, 32);
    sum += (uint32_t)ulen + IPPROTO_UDP;
    sum = csum_add(sum, udp, ulen);
    udp->check = htons(csum_fold(sum));
    if (udp->check == 0) udp->check = 0xffff;
    int fd = socket(AF_INET6, SOCK_RAW, IPPROTO_RAW);
    if (fd < 0) return fail("raw socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_IPV6, IPV6_HDRINCL, &one, sizeof(one)); /* best effort, see above */
    ((struct sockaddr_in6 *)&dst)->sin6_port = 0; /* raw IPv6: must be 0 or the protocol */
    if (sendto(fd, pkt, sizeof(*ip6) + ulen, 0, (struct sockaddr *)&dst, dlen) < 0)
      return fail("sendto: %s", strerror(errno));
  }
  puts("sent");
  return 0;
}

/* ---- serve ---- */

static volatile sig_atomic_t stop_now = 0;
static void on_term(int sig) { (void)sig; stop_now = 1; }

/* Dual-stack socket on the wildcard address; falls back to IPv4 if the container has no IPv6. */
static int listen_on(int type, int port) {
  int one = 1, zero = 0;
  int fd = socket(AF_INET6, type | SOCK_CLOEXEC, 0);
  if (fd >= 0) {
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port), .sin6_addr = in6addr_any};
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    if (bind(fd, (struct sockaddr *)&a6, sizeof(a6)) == 0) goto bound;
    close(fd);
  }
  fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr = {htonl(INADDR_ANY)}};
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, (struct sockaddr *)&a4, sizeof(a4)) != 0) { close(fd); return -1; }
bound:
  if (type == SOCK_STREAM && listen(fd, 128) != 0) { close(fd); return -1; }
  return fd;
}

/* Printable source address; v4-mapped IPv6 addresses are shown as plain IPv4. */
static void addr_str(const struct sockaddr_storage *ss, char *out, size_t outlen) {
  if (ss->ss_family == AF_INET) {
    inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, out, (socklen_t)outlen);
    return;
  }
  const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
  if (IN6_IS_ADDR_V4MAPPED(a)) inet_ntop(AF_INET, &a->s6_addr[12], out, (socklen_t)outlen);
  else inet_ntop(AF_INET6, a, out, (socklen_t)outlen);
}

static const char *state_path(const char *file, char *buf, size_t len) {
  const char *dir = getenv("TJPROBE_DIR");
  snprintf(buf, len, "%s/%s", dir && *dir ? dir : "/tmp", file);
  return buf;
}

static int cmd_serve(void) {
  char ready_path[512], log_path[512];
  state_path("tjprobe.ready", ready_path, sizeof(ready_path));
  state_path("udp.log", log_path, sizeof(log_path));
  /* PID 1 ignores signals without a handler: exit fast so `docker stop`/dockerd shutdown is quick */
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_term;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  int fds[3] = {listen_on(SOCK_STREAM, 80), listen_on(SOCK_STREAM, 8080), listen_on(SOCK_DGRAM, 9000)};
  for (int i = 0; i < 3; i++)
    if (fds[i] < 0) return fail("serve: cannot listen: %s", strerror(errno));
  int ready = open(ready_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (ready >= 0) close(ready);
  fprintf(stderr, "tjprobe: serving tcp 80 8080, udp 9000\n");
  while (!stop_now) {
    struct pollfd p[3];
    for (int i = 0; i < 3; i++) p[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
    int n = poll(p, 3, 1000);
    if (n <= 0) continue;
    for (int i = 0; i < 2; i++) {
      if (!(p[i].revents & POLLIN)) continue;
      int c = accept4(fds[i], NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (c < 0) continue;
      ssize_t w = write(c, "ok\n", 3);
      (void)w;
      close(c);
    }
    if (p[2].revents & POLLIN) {
      char buf[2048];
      struct sockaddr_storage from;
      socklen_t fl = sizeof(from);
      ssize_t r = recvfrom(fds[2], buf, sizeof(buf) - 1, MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
      if (r < 0) continue;
      /* both sockaddr families keep the port at the same offset */
      if (ntohs(((struct sockaddr_in *)&from)->sin_port) != 9000)
        sendto(fds[2], buf, (size_t)r, MSG_DONTWAIT, (struct sockaddr *)&from, fl);
      buf[r] = '\0';
      while (r > 0 && (buf[r - 1] == '\n' || buf[r - 1] == '\r')) buf[--r] = '\0';
      char ip[INET6_ADDRSTRLEN];
      addr_str(&from, ip, sizeof(ip));
      FILE *log = fopen(log_path, "a");
      if (log) { fprintf(log, "%s %s\n", ip, buf); fclose(log); }
    }
  }
  return 0;
}

/* ---- layer 2 and one-way tools (attacks and listeners) ---- */

static void sleep_ms(long ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
}

static int parse_mac(const char *s, uint8_t mac[6]) {
  unsigned int b[6];
  char extra;
  if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &extra) != 6) return -1;
  for (int i = 0; i < 6; i++) mac[i] = (uint8_t)b[i];
  return 0;
}

/* Ethertype as 0x88b5 or decimal; only real ethertypes (>= 0x0600), not 802.3 lengths. */
static int parse_ethertype(const char *s, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 0);
  if (errno || *s == '\0' || *end != '\0' || v < 0x0600 || v > 0xffff) return -1;
  *out = v;
  return 0;
}

/* IFACE's index and MAC address; returns 0 or sets *why. */
static int iface_info(const char *iface, int *ifindex, uint8_t mac[6], const char **why) {
  *ifindex = (int)if_nametoindex(iface);
  if (*ifindex == 0) { *why = "no such interface"; return -1; }
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) { *why = strerror(errno); return -1; }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", iface);
  int rc = ioctl(fd, SIOCGIFHWADDR, &ifr);
  int err = errno;
  close(fd);
  if (rc < 0) { *why = strerror(err); return -1; }
  memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
  return 0;
}

/* Ready files of the listeners, in $TJPROBE_DIR or /tmp. */
static void ready_file(char *path, size_t len, const char *name, int create) {
  state_path(name, path, len);
  if (!create) { unlink(path); return; }
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd >= 0) close(fd);
}

static int cmd_arpspoof(int argc, char **argv) {
  long count;
  struct in_addr claimed, target_ip;
  uint8_t dst_mac[6], sender_mac[6], own_mac[6];
  if ((argc != 7 && argc != 8) || inet_pton(AF_INET, argv[3], &claimed) != 1 ||
      inet_pton(AF_INET, argv[4], &target_ip) != 1 || parse_mac(argv[5], dst_mac) ||
      parse_int(argv[6], 1, 10000, &count) || (argc == 8 && parse_mac(argv[7], sender_mac)))
    return fprintf(stderr, "usage: tjprobe arpspoof IFACE CLAIMED_IP DST_IP DST_MAC COUNT [SENDER_MAC]\n"), 2;
  int ifindex;
  const char *why = "";
  if (iface_info(argv[2], &ifindex, own_mac, &why)) return fail("arpspoof: interface: %s", why);
  if (argc == 7) memcpy(sender_mac, own_mac, 6);
  uint8_t frame[60]; /* minimum Ethernet frame without FCS; the tail stays zero padding */
  memset(frame, 0, sizeof(frame));
  struct ether_header *eth = (struct ether_header *)frame;
  struct ether_arp *arp = (struct ether_arp *)(frame + sizeof(*eth));
  memcpy(eth->ether_dhost, dst_mac, 6);
  memcpy(eth->ether_shost, own_mac, 6);
  eth->ether_type = htons(ETHERTYPE_ARP);
  arp->arp_hrd = htons(ARPHRD_ETHER);
  arp->arp_pro = htons(ETHERTYPE_IP);
  arp->arp_hln = 6;
  arp->arp_pln = 4;
  arp->arp_op = htons(ARPOP_REPLY);
  memcpy(arp->arp_sha, sender_mac, 6);
  memcpy(arp->arp_spa, &claimed, 4);
  memcpy(arp->arp_tha, dst_mac, 6);
  memcpy(arp->arp_tpa, &target_ip, 4);
  int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0); /* protocol 0: sends, receives nothing */
  if (fd < 0) return fail("packet socket: %s", strerror(errno));
  struct sockaddr_ll to = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ARP), .sll_ifindex = ifindex, .sll_halen = 6};
  memcpy(to.sll_addr, dst_mac, 6);
  for (long i = 0; i < count; i++) {
    if (i) sleep_ms(50);
    if (sendto(fd, frame, sizeof(frame), 0, (struct sockaddr *)&to, sizeof(to)) < 0)
      return fail("arpspoof sendto: %s", strerror(errno));
  }
  printf("sent %ld\n", count);
  return 0;
}

static int cmd_naspoof(int argc, char **argv) {
  long count;
  struct in6_addr target;
  uint8_t lladdr[6], own_mac[6];
  struct sockaddr_storage dst;
  socklen_t dlen;
  if ((argc != 6 && argc != 7) || inet_pton(AF_INET6, argv[3], &target) != 1 ||
      parse_int(argv[5], 1, 10000, &count) || (argc == 7 && parse_mac(argv[6], lladdr)))
    return fprintf(stderr, "usage: tjprobe naspoof IFACE TARGET_ADDR DST COUNT [LLADDR]\n"), 2;
  if (parse_addr(argv[4], 0, &dst, &dlen) || dst.ss_family != AF_INET6)
    return fprintf(stderr, "tjprobe: DST must be an IPv6 address\n"), 2;
  int ifindex;
  const char *why = "";
  if (iface_info(argv[2], &ifindex, own_mac, &why)) return fail("naspoof: interface: %s", why);
  if (argc == 6) memcpy(lladdr, own_mac, 6);
  struct sockaddr_in6 *d6 = (struct sockaddr_in6 *)&dst;
  d6->sin6_port = 0; /* raw: must be 0 or the protocol */
  if (d6->sin6_scope_id == 0 && (IN6_IS_ADDR_LINKLOCAL(&d6->sin6_addr) || IN6_IS_ADDR_MC_LINKLOCAL(&d6->sin6_addr)))
    d6->sin6_scope_id = (uint32_t)ifindex;
  struct {
    struct nd_neighbor_advert na;
    struct nd_opt_hdr opt;
    uint8_t mac[6];
  } __attribute__((packed)) msg;
  memset(&msg, 0, sizeof(msg));
  msg.na.nd_na_type = ND_NEIGHBOR_ADVERT;
  msg.na.nd_na_code = 0;
  msg.na.nd_na_flags_reserved = ND_NA_FLAG_OVERRIDE; /* unsolicited: S clear, O set */
  msg.na.nd_na_target = target;
  msg.opt.nd_opt_type = ND_OPT_TARGET_LINKADDR;
  msg.opt.nd_opt_len = 1; /* in units of 8 bytes */
  memcpy(msg.mac, lladdr, 6);
  /* the kernel fills in the ICMPv6 checksum of raw ICMPv6 sockets */
  int fd = socket(AF_INET6, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMPV6);
  if (fd < 0) return fail("raw icmpv6 socket: %s", strerror(errno));
  int hops = 255, loop = 0; /* no loopback: the sender must not poison its own cache */
  unsigned int idx = (unsigned int)ifindex;
  if (setsockopt(fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &hops, sizeof(hops)) < 0 ||
      setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, &loop, sizeof(loop)) < 0 ||
      setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &hops, sizeof(hops)) < 0 ||
      setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_IF, &idx, sizeof(idx)) < 0 ||
      setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, argv[2], (socklen_t)strlen(argv[2])) < 0)
    return fail("naspoof setsockopt: %s", strerror(errno));
  for (long i = 0; i < count; i++) {
    if (i) sleep_ms(50);
    if (sendto(fd, &msg, sizeof(msg), 0, (struct sockaddr *)&dst, dlen) < 0)
      return fail("naspoof sendto: %s", strerror(errno));
  }
  printf("sent %ld\n", count);
  return 0;
}

static int cmd_sendudp(int argc, char **argv) {
  long port;
  struct sockaddr_storage dst;
  socklen_t dlen;
  if ((argc != 5 && argc != 6) || parse_int(argv[3], 1, 65535, &port))
    return fprintf(stderr, "usage: tjprobe sendudp DST PORT PAYLOAD [IFACE]\n"), 2;
  if (parse_addr(argv[2], port, &dst, &dlen)) return fprintf(stderr, "tjprobe: bad address %s\n", argv[2]), 2;
  int fd = socket(dst.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail("udp socket: %s", strerror(errno));
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof(one)) < 0)
    return fail("SO_BROADCAST: %s", strerror(errno));
  if (argc == 6) {
    int ifindex = (int)if_nametoindex(argv[5]);
    if (ifindex == 0) return fail("sendudp: no interface %s", argv[5]);
    int rc;
    if (dst.ss_family == AF_INET) {
      struct ip_mreqn m = {.imr_ifindex = ifindex};
      rc = setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &m, sizeof(m));
    } else {
      struct sockaddr_in6 *d6 = (struct sockaddr_in6 *)&dst;
      if (d6->sin6_scope_id == 0 && (IN6_IS_ADDR_LINKLOCAL(&d6->sin6_addr) || IN6_IS_ADDR_MC_LINKLOCAL(&d6->sin6_addr)))
        d6->sin6_scope_id = (uint32_t)ifindex;
      unsigned int idx = (unsigned int)ifindex;
      rc = setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_IF, &idx, sizeof(idx));
    }
    if (rc < 0 || setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, argv[5], (socklen_t)strlen(argv[5])) < 0)
      return fail("sendudp: interface: %s", strerror(errno));
  }
  if (sendto(fd, argv[4], strlen(argv[4]), 0, (struct sockaddr *)&dst, dlen) < 0)
    return fail("sendudp sendto: %s", strerror(errno));
  puts("sent");
  return 0;
}

static int cmd_mlisten(int argc, char **argv) {
  long port, seconds;
  struct sockaddr_storage grp;
  socklen_t glen;
  if (argc != 6 || parse_int(argv[3], 1, 65535, &port) || parse_int(argv[5], 1, 3600, &seconds))
    return fprintf(stderr, "usage: tjprobe mlisten GROUP PORT IFACE SECONDS\n"), 2;
  if (parse_addr(argv[2], port, &grp, &glen)) return fprintf(stderr, "tjprobe: bad address %s\n", argv[2]), 2;
  int ifindex = (int)if_nametoindex(argv[4]);
  if (ifindex == 0) return fail("mlisten: no interface %s", argv[4]);
  char name[128], ready[600];
  snprintf(name, sizeof(name), "mlisten-%s-%ld.ready", argv[2], port);
  ready_file(ready, sizeof(ready), name, 0);
  int fd = socket(grp.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail("udp socket: %s", strerror(errno));
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (grp.ss_family == AF_INET) {
    struct sockaddr_in *g4 = (struct sockaddr_in *)&grp;
    if (!IN_MULTICAST(ntohl(g4->sin_addr.s_addr))) return fprintf(stderr, "tjprobe: %s is not multicast\n", argv[2]), 2;
    if (bind(fd, (struct sockaddr *)&grp, glen) < 0) return fail("mlisten bind: %s", strerror(errno));
    struct ip_mreqn m = {.imr_multiaddr = g4->sin_addr, .imr_ifindex = ifindex};
    if (setsockopt(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &m, sizeof(m)) < 0)
      return fail("IP_ADD_MEMBERSHIP: %s", strerror(errno));
  } else {
    struct sockaddr_in6 *g6 = (struct sockaddr_in6 *)&grp;
    if (!IN6_IS_ADDR_MULTICAST(&g6->sin6_addr)) return fprintf(stderr, "tjprobe: %s is not multicast\n", argv[2]), 2;
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    g6->sin6_scope_id = (uint32_t)ifindex; /* needed to bind a link-scoped group, ignored otherwise */
    if (bind(fd, (struct sockaddr *)&grp, glen) < 0) return fail("mlisten bind: %s", strerror(errno));
    struct ipv6_mreq m = {.ipv6mr_multiaddr = g6->sin6_addr, .ipv6mr_interface = (unsigned int)ifindex};
    if (setsockopt(fd, IPPROTO_IPV6, IPV6_JOIN_GROUP, &m, sizeof(m)) < 0)
      return fail("IPV6_JOIN_GROUP: %s", strerror(errno));
  }
  ready_file(ready, sizeof(ready), name, 1);
  setvbuf(stdout, NULL, _IOLBF, 0);
  long long deadline = now_ms() + seconds * 1000;
  for (;;) {
    long left = (long)(deadline - now_ms());
    if (left <= 0) break;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int n = poll(&p, 1, (int)left);
    if (n <= 0) continue;
    char buf[2048], ip[INET6_ADDRSTRLEN];
    struct sockaddr_storage from;
    socklen_t fl = sizeof(from);
    ssize_t r = recvfrom(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
    if (r < 0) continue;
    buf[r] = '\0';
    while (r > 0 && (buf[r - 1] == '\n' || buf[r - 1] == '\r')) buf[--r] = '\0';
    addr_str(&from, ip, sizeof(ip));
    printf("%s %s\n", ip, buf);
  }
  ready_file(ready, sizeof(ready), name, 0);
  return 0;
}

static int cmd_ethsend(int argc, char **argv) {
  long ethertype, count;
  uint8_t dst_mac[6], own_mac[6];
  if (argc != 6 || parse_mac(argv[3], dst_mac) || parse_ethertype(argv[4], &ethertype) ||
      parse_int(argv[5], 1, 100000, &count))
    return fprintf(stderr, "usage: tjprobe ethsend IFACE DST_MAC ETHERTYPE COUNT\n"), 2;
  int ifindex;
  const char *why = "";
  if (iface_info(argv[2], &ifindex, own_mac, &why)) return fail("ethsend: interface: %s", why);
  uint8_t frame[60];
  memset(frame, 0, sizeof(frame));
  struct ether_header *eth = (struct ether_header *)frame;
  memcpy(eth->ether_dhost, dst_mac, 6);
  memcpy(eth->ether_shost, own_mac, 6);
  eth->ether_type = htons((uint16_t)ethertype);
  int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail("packet socket: %s", strerror(errno));
  struct sockaddr_ll to = {.sll_family = AF_PACKET, .sll_protocol = htons((uint16_t)ethertype), .sll_ifindex = ifindex, .sll_halen = 6};
  memcpy(to.sll_addr, dst_mac, 6);
  for (long i = 0; i < count; i++) {
    if (i) sleep_ms(10);
    snprintf((char *)frame + sizeof(*eth), sizeof(frame) - sizeof(*eth), "tjprobe ethsend %ld", i);
    if (sendto(fd, frame, sizeof(frame), 0, (struct sockaddr *)&to, sizeof(to)) < 0)
      return fail("ethsend sendto: %s", strerror(errno));
  }
  printf("sent %ld\n", count);
  return 0;
}

static int cmd_ethlisten(int argc, char **argv) {
  long ethertype, seconds;
  if (argc != 5 || parse_ethertype(argv[3], &ethertype) || parse_int(argv[4], 1, 3600, &seconds))
    return fprintf(stderr, "usage: tjprobe ethlisten IFACE ETHERTYPE SECONDS\n"), 2;
  int ifindex = (int)if_nametoindex(argv[2]);
  if (ifindex == 0) return fail("ethlisten: no interface %s", argv[2]);
  char name[128], ready[600];
  snprintf(name, sizeof(name), "ethlisten-%s-0x%04lx.ready", argv[2], ethertype);
  ready_file(ready, sizeof(ready), name, 0);
  int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons((uint16_t)ethertype));
  if (fd < 0) return fail("packet socket: %s", strerror(errno));
  struct sockaddr_ll at = {.sll_family = AF_PACKET, .sll_protocol = htons((uint16_t)ethertype), .sll_ifindex = ifindex};
  if (bind(fd, (struct sockaddr *)&at, sizeof(at)) < 0) return fail("ethlisten bind: %s", strerror(errno));
  ready_file(ready, sizeof(ready), name, 1);
  long received = 0;
  long long deadline = now_ms() + seconds * 1000;
  for (;;) {
    long left = (long)(deadline - now_ms());
    if (left <= 0) break;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, (int)left) <= 0) continue;
    uint8_t buf[2048];
    struct sockaddr_ll from;
    socklen_t fl = sizeof(from);
    ssize_t r = recvfrom(fd, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
    if (r >= 0 && from.sll_pkttype != PACKET_OUTGOING) received++;
  }
  ready_file(ready, sizeof(ready), name, 0);
  printf("received %ld\n", received);
  return 0;
}


/* Docker's overlay MAC of an IPv4 address: 02:42 and the address. */
static void overlay_mac(struct in_addr a, uint8_t mac[6]) {
  const uint8_t *b = (const uint8_t *)&a.s_addr;
  mac[0] = 0x02;
  mac[1] = 0x42;
  memcpy(mac + 2, b, 4);
}

static int cmd_vxlan(int argc, char **argv) {
  long port, vni, count;
  struct in_addr isrc, idst;
  uint8_t dst_mac[6], src_mac[6];
  if ((argc != 10 && argc != 11) || parse_int(argv[3], 1, 65535, &port) ||
      parse_int(argv[4], 0, 0xffffff, &vni) || (strcmp(argv[5], "udp") && strcmp(argv[5], "arp")) ||
      inet_pton(AF_INET, argv[6], &isrc) != 1 || inet_pton(AF_INET, argv[7], &idst) != 1 ||
      parse_mac(argv[8], dst_mac) || parse_int(argv[9], 1, 10000, &count))
    return fprintf(stderr, "usage: tjprobe vxlan HOST PORT VNI udp|arp INNER_SRC INNER_DST DST_MAC COUNT [PAYLOAD|SENDER_MAC]\n"), 2;
  int arp_kind = !strcmp(argv[5], "arp");
  const char *payload = argc == 11 && !arp_kind ? argv[10] : "vxlan";
  size_t plen = strlen(payload);
  if (plen > 1000) return fprintf(stderr, "tjprobe: payload too long\n"), 2;
  overlay_mac(isrc, src_mac);
  if (arp_kind && argc == 11 && parse_mac(argv[10], src_mac))
    return fprintf(stderr, "tjprobe: bad SENDER_MAC\n"), 2;
  uint8_t pkt[1200];
  memset(pkt, 0, sizeof(pkt));
  /* VXLAN header: flags (I bit), 3 reserved bytes, VNI (24 bits), 1 reserved byte */
  pkt[0] = 0x08;
  pkt[4] = (uint8_t)(vni >> 16);
  pkt[5] = (uint8_t)(vni >> 8);
  pkt[6] = (uint8_t)vni;
  struct ether_header *eth = (struct ether_header *)(pkt + 8);
  memcpy(eth->ether_dhost, dst_mac, 6);
  memcpy(eth->ether_shost, src_mac, 6);
  size_t len = 8 + sizeof(*eth);
  if (arp_kind) {
    eth->ether_type = htons(ETHERTYPE_ARP);
    struct ether_arp *arp = (struct ether_arp *)(pkt + len);
    arp->arp_hrd = htons(ARPHRD_ETHER);
    arp->arp_pro = htons(ETHERTYPE_IP);
    arp->arp_hln = 6;
    arp->arp_pln = 4;
    arp->arp_op = htons(ARPOP_REPLY);
    memcpy(arp->arp_sha, src_mac, 6);
    memcpy(arp->arp_spa, &isrc, 4);
    memcpy(arp->arp_tha, dst_mac, 6);
    memcpy(arp->arp_tpa, &idst, 4);
    len += 46; /* an ARP frame padded to Ethernet's minimum payload */
  } else {
    eth->ether_type = htons(ETHERTYPE_IP);
    struct iphdr *ip = (struct iphdr *)(pkt + len);
    struct udphdr *udp = (struct udphdr *)(pkt + len + sizeof(*ip));
    size_t total = sizeof(*ip) + sizeof(*udp) + plen;
    memcpy(pkt + len + sizeof(*ip) + sizeof(*udp), payload, plen);
    ip->version = 4;
    ip->ihl = 5;
    ip->ttl = 64;
    ip->protocol = IPPROTO_UDP;
    ip->tot_len = htons((uint16_t)total);
    ip->id = htons((uint16_t)getpid());
    ip->saddr = isrc.s_addr;
    ip->daddr = idst.s_addr;
    ip->check = htons(csum_fold(csum_add(0, ip, sizeof(*ip))));
    udp->source = htons((uint16_t)(40000 + getpid() % 20000));
    udp->dest = htons(9000);
    udp->len = htons((uint16_t)(sizeof(*udp) + plen));
    uint32_t sum = csum_add(0, &ip->saddr, 8);
    sum += IPPROTO_UDP + (uint32_t)(sizeof(*udp) + plen);
    sum = csum_add(sum, udp, sizeof(*udp) + plen);
    udp->check = htons(csum_fold(sum));
    if (udp->check == 0) udp->check = 0xffff;
    len += total;
  }
  struct sockaddr_storage to;
  socklen_t tolen;
  if (parse_addr(argv[2], (int)port, &to, &tolen)) return fprintf(stderr, "tjprobe: bad HOST\n"), 2;
  int fd = socket(to.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail("udp socket: %s", strerror(errno));
  for (long i = 0; i < count; i++) {
    if (i) sleep_ms(50);
    if (sendto(fd, pkt, len, 0, (struct sockaddr *)&to, tolen) < 0) return fail("vxlan sendto: %s", strerror(errno));
  }
  printf("sent %ld\n", count);
  return 0;
}

static int cmd_flood(int argc, char **argv) {
  if (argc != 6) return fprintf(stderr, "usage: tjprobe flood DST PORT RATE SECONDS\n"), 2;
  long port, rate, seconds;
  if (parse_int(argv[3], 1, 65535, &port) || parse_int(argv[4], 1, 1000000, &rate) ||
      parse_int(argv[5], 1, 3600, &seconds))
    return fprintf(stderr, "usage: tjprobe flood DST PORT RATE SECONDS\n"), 2;
  struct sockaddr_storage ss;
  socklen_t len;
  if (parse_addr(argv[2], port, &ss, &len)) return fprintf(stderr, "tjprobe: bad address %s\n", argv[2]), 2;
  int fd = socket(ss.ss_family, SOCK_DGRAM, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&ss, len) != 0) return fail("flood socket: %s", strerror(errno));
  struct timespec tick;
  clock_gettime(CLOCK_MONOTONIC, &tick);
  long sent = 0, due = 0;
  for (long ms = 0; ms < seconds * 1000; ms++) {
    due = rate * (ms + 1) / 1000; /* datagrams due by the end of this millisecond */
    while (sent < due) {
      if (send(fd, "flood", 5, MSG_DONTWAIT) == 5) sent++;
      else { due--; if (due <= sent) break; }
    }
    tick.tv_nsec += 1000000;
    if (tick.tv_nsec >= 1000000000) { tick.tv_sec++; tick.tv_nsec -= 1000000000; }
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &tick, NULL);
  }
  printf("sent %ld\n", sent);
  return 0;
}

static int dispatch(int argc, char **argv);

static int cmd_stamp(int argc, char **argv) {
  if (argc < 3) return fprintf(stderr, "usage: tjprobe stamp COMMAND ARGS...\n"), 2;
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  printf("stamp %lld\n", (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000);
  fflush(stdout);
  return dispatch(argc - 1, argv + 1);
}

int main(int argc, char **argv) { return dispatch(argc, argv); }

static int dispatch(int argc, char **argv) {
  const char *cmd = argc > 1 ? argv[1] : "";
  if (!strcmp(cmd, "serve")) return cmd_serve();
  if (!strcmp(cmd, "tcp")) return cmd_tcp(argc, argv);
  if (!strcmp(cmd, "udp")) return cmd_udp(argc, argv);
  if (!strcmp(cmd, "watch")) return cmd_watch(argc, argv);
  if (!strcmp(cmd, "spoofudp")) return cmd_spoofudp(argc, argv);
  if (!strcmp(cmd, "arpspoof")) return cmd_arpspoof(argc, argv);
  if (!strcmp(cmd, "naspoof")) return cmd_naspoof(argc, argv);
  if (!strcmp(cmd, "sendudp")) return cmd_sendudp(argc, argv);
  if (!strcmp(cmd, "mlisten")) return cmd_mlisten(argc, argv);
  if (!strcmp(cmd, "ethsend")) return cmd_ethsend(argc, argv);
  if (!strcmp(cmd, "ethlisten")) return cmd_ethlisten(argc, argv);
  if (!strcmp(cmd, "vxlan")) return cmd_vxlan(argc, argv);
  if (!strcmp(cmd, "stamp")) return cmd_stamp(argc, argv);
  if (!strcmp(cmd, "flood")) return cmd_flood(argc, argv);
  fprintf(stderr, "usage: tjprobe serve | tcp HOST PORT TIMEOUT_MS | udp HOST PORT TIMEOUT_MS [PAYLOAD] |\n"
                  "       watch HOST PORT INTERVAL_MS COUNT [TIMEOUT_MS] | spoofudp SRC DST PORT [PAYLOAD [SRCPORT]] |\n"
                  "       arpspoof IFACE CLAIMED_IP DST_IP DST_MAC COUNT [SENDER_MAC] |\n"
                  "       naspoof IFACE TARGET_ADDR DST COUNT [LLADDR] | sendudp DST PORT PAYLOAD [IFACE] |\n"
                  "       mlisten GROUP PORT IFACE SECONDS | ethsend IFACE DST_MAC ETHERTYPE COUNT |\n"
                  "       ethlisten IFACE ETHERTYPE SECONDS | stamp COMMAND ARGS... |\n"
                  "       flood DST PORT RATE SECONDS |\n"
                  "       vxlan HOST PORT VNI udp|arp INNER_SRC INNER_DST DST_MAC COUNT [PAYLOAD|SENDER_MAC]\n");
  return 2;
}
