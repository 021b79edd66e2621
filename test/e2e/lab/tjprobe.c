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
 *   tjprobe tcp HOST PORT TIMEOUT_MS            connect within the timeout
 *   tjprobe udp HOST PORT TIMEOUT_MS [PAYLOAD]  echo received within the timeout
 *   tjprobe watch HOST PORT INTERVAL_MS COUNT [TIMEOUT_MS]
 *                                               COUNT connects, one every INTERVAL_MS; prints
 *                                               "ok"/"fail" per attempt then "summary ok=N fail=M";
 *                                               exit 0 only if every attempt succeeded
 *   tjprobe spoofudp SRC DST PORT [PAYLOAD]     one UDP datagram with a forged source address
 *                                               (raw socket, IPv4 and IPv6)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
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
  if ((argc != 5 && argc != 6) || parse_int(argv[4], 1, 65535, &port))
    return fprintf(stderr, "usage: tjprobe spoofudp SRC DST PORT [PAYLOAD]\n"), 2;
  const char *payload = argc == 6 ? argv[5] : "spoof";
  size_t plen = strlen(payload);
  if (plen > 1000) return fprintf(stderr, "tjprobe: payload too long\n"), 2;
  struct sockaddr_storage src, dst;
  socklen_t slen, dlen;
  if (parse_addr(argv[2], 0, &src, &slen) || parse_addr(argv[3], 0, &dst, &dlen) || src.ss_family != dst.ss_family)
    return fprintf(stderr, "tjprobe: SRC and DST must be addresses of the same family\n"), 2;
  uint8_t pkt[1100];
  memset(pkt, 0, sizeof(pkt));
  uint16_t sport = 40000 + (uint16_t)(getpid() % 20000);
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
    udp->source = htons(sport);
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
    udp->source = htons(sport);
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

int main(int argc, char **argv) {
  const char *cmd = argc > 1 ? argv[1] : "";
  if (!strcmp(cmd, "serve")) return cmd_serve();
  if (!strcmp(cmd, "tcp")) return cmd_tcp(argc, argv);
  if (!strcmp(cmd, "udp")) return cmd_udp(argc, argv);
  if (!strcmp(cmd, "watch")) return cmd_watch(argc, argv);
  if (!strcmp(cmd, "spoofudp")) return cmd_spoofudp(argc, argv);
  fprintf(stderr, "usage: tjprobe serve | tcp HOST PORT TIMEOUT_MS | udp HOST PORT TIMEOUT_MS [PAYLOAD] |\n"
                  "       watch HOST PORT INTERVAL_MS COUNT [TIMEOUT_MS] | spoofudp SRC DST PORT [PAYLOAD]\n");
  return 2;
}
