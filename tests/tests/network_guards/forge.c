/* Forged frames a workload with CAP_NET_RAW (Docker's default set) can send from its eth0,
 * each followed by a control the host must answer, sent from the same CPU: frames from one
 * CPU are handled in order, so once the control is answered the forged frame has been
 * handled (or dropped) before it, and nothing has to be waited for.
 *
 *   forge loopback GW PORT   raw SYN to 127.0.0.1:PORT through the gateway GW, then a raw
 *                            SYN to GW's closed port 1; prints "loopback answered" or
 *                            "loopback silent", then "control answered".
 *   forge ra GW              a router advertisement (default router, prefix 2001:db8:dead::/64)
 *                            and an ICMPv6 echo request to all nodes (ff02::1), then a TCP
 *                            connect to GW's closed port 1; prints "control refused".
 *   forge ra6 GW             the same advertisement through a raw ICMPv6 socket (no AF_PACKET
 *                            needed: a VM guest's workload has none), then the TCP connect;
 *                            prints "ra6 sent" or "ra6 not sent", then "control refused".
 *   forge sniff              prints "ready", then reads IPv6 frames on eth0 until the echo
 *                            request: prints "ra seen" or "no ra", then "echo seen".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static int raw, ifindex;
static unsigned char mymac[6], gwmac[6];
static struct in_addr myip;

static void die(const char *what) { perror(what); exit(2); }

static unsigned sum16(const unsigned char *b, int len, unsigned sum) {
    for (int i = 0; i + 1 < len; i += 2) sum += (b[i] << 8) | b[i + 1];
    if (len & 1) sum += b[len - 1] << 8;
    return sum;
}
static unsigned short fold(unsigned sum) {
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return (unsigned short)~sum;
}

/* One CPU for every frame this program sends, so they are handled in the order sent. */
static void pin(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(sched_getcpu(), &set);
    if (sched_setaffinity(0, sizeof set, &set)) die("sched_setaffinity");
}

static void open_raw(int proto) {
    raw = socket(AF_PACKET, SOCK_RAW, htons(proto));
    if (raw < 0) die("socket(AF_PACKET)");
    struct ifreq ifr = {0};
    strcpy(ifr.ifr_name, "eth0");
    if (ioctl(raw, SIOCGIFINDEX, &ifr)) die("SIOCGIFINDEX");
    ifindex = ifr.ifr_ifindex;
    if (ioctl(raw, SIOCGIFHWADDR, &ifr)) die("SIOCGIFHWADDR");
    memcpy(mymac, ifr.ifr_hwaddr.sa_data, 6);
    if (ioctl(raw, SIOCGIFADDR, &ifr) == 0)
        myip = ((struct sockaddr_in *)&ifr.ifr_addr)->sin_addr;
    struct sockaddr_ll ll = {.sll_family = AF_PACKET, .sll_protocol = htons(proto), .sll_ifindex = ifindex};
    if (bind(raw, (void *)&ll, sizeof ll)) die("bind(AF_PACKET)");
    struct timeval tv = {20, 0}; /* a bound on a failure, never a condition */
    setsockopt(raw, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

/* A TCP connect to GW:1, refused by the host (nothing listens there). */
static int refused(const char *gw) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(1)};
    inet_pton(AF_INET, gw, &a.sin_addr);
    struct timeval tv = {20, 0};
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int rc = connect(s, (void *)&a, sizeof a);
    int err = errno;
    close(s);
    return rc < 0 && err == ECONNREFUSED;
}

/* The gateway's MAC, from the ARP entry the refused connect left. */
static void gateway_mac(const char *gw) {
    if (!refused(gw)) { fprintf(stderr, "the gateway %s did not refuse port 1\n", gw); exit(2); }
    FILE *f = fopen("/proc/net/arp", "r");
    char line[256], ip[64], mac[64];
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "%63s %*s %*s %63s", ip, mac) == 2 && !strcmp(ip, gw) &&
            sscanf(mac, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &gwmac[0], &gwmac[1], &gwmac[2],
                   &gwmac[3], &gwmac[4], &gwmac[5]) == 6)
            return;
    fprintf(stderr, "no ARP entry for %s\n", gw);
    exit(2);
}

static void send_frame(unsigned char *f, int len) {
    struct sockaddr_ll ll = {.sll_family = AF_PACKET, .sll_ifindex = ifindex, .sll_halen = 6};
    memcpy(ll.sll_addr, f, 6);
    if (sendto(raw, f, len, 0, (void *)&ll, sizeof ll) != len) die("sendto(AF_PACKET)");
}

/* An IPv4 frame to the gateway's MAC: 14 + 20 bytes of headers, then `l4` of `l4len`. */
static void send_ipv4(struct in_addr src, struct in_addr dst, int proto, const unsigned char *l4, int l4len) {
    unsigned char f[256] = {0};
    memcpy(f, gwmac, 6);
    memcpy(f + 6, mymac, 6);
    f[12] = 0x08;
    unsigned char *ip = f + 14;
    ip[0] = 0x45;
    ip[2] = (20 + l4len) >> 8;
    ip[3] = (20 + l4len) & 0xff;
    ip[8] = 64;
    ip[9] = proto;
    memcpy(ip + 12, &src, 4);
    memcpy(ip + 16, &dst, 4);
    unsigned short c = fold(sum16(ip, 20, 0));
    ip[10] = c >> 8;
    ip[11] = c & 0xff;
    unsigned char *l = ip + 20;
    memcpy(l, l4, l4len);
    /* The TCP/UDP checksum over the pseudo-header. */
    unsigned char ph[12];
    memcpy(ph, &src, 4);
    memcpy(ph + 4, &dst, 4);
    ph[8] = 0;
    ph[9] = proto;
    ph[10] = l4len >> 8;
    ph[11] = l4len & 0xff;
    int at = proto == IPPROTO_TCP ? 16 : 6;
    l[at] = l[at + 1] = 0;
    c = fold(sum16(l, l4len, sum16(ph, 12, 0)));
    l[at] = c >> 8;
    l[at + 1] = c & 0xff;
    send_frame(f, 14 + 20 + l4len);
}

static void send_syn(struct in_addr dst, int sport, int dport) {
    unsigned char t[20] = {0};
    t[0] = sport >> 8; t[1] = sport & 0xff;
    t[2] = dport >> 8; t[3] = dport & 0xff;
    t[7] = 1;        /* sequence number */
    t[12] = 5 << 4;  /* data offset */
    t[13] = 0x02;    /* SYN */
    t[14] = 0xff; t[15] = 0xff;
    send_ipv4(myip, dst, IPPROTO_TCP, t, 20);
}

static int loopback(const char *gw, int port) {
    struct in_addr lo, gwip;
    inet_pton(AF_INET, "127.0.0.1", &lo);
    inet_pton(AF_INET, gw, &gwip);
    gateway_mac(gw);
    open_raw(ETH_P_IP);
    send_syn(lo, 41234, port);
    send_syn(gwip, 41235, 1);
    int answered = 0;
    unsigned char r[2048];
    for (;;) {
        int n = recv(raw, r, sizeof r, 0);
        if (n < 0) { printf("control unanswered\n"); return 1; }
        if (n < 14 + 20 + 20 || r[14 + 9] != IPPROTO_TCP) continue;
        unsigned char *ip = r + 14, *t = ip + (ip[0] & 15) * 4;
        int dport = (t[2] << 8) | t[3];
        if (dport == 41234 && !memcmp(ip + 12, &lo, 4)) answered = 1;
        if (dport == 41235 && !memcmp(ip + 12, &gwip, 4)) break;
    }
    printf("loopback %s\ncontrol answered\n", answered ? "answered" : "silent");
    return 0;
}

/* An IPv6 frame from our link-local address to ff02::1 (MAC 33:33:00:00:00:01). */
static void send_icmpv6(unsigned char *icmp, int len) {
    unsigned char f[256] = {0};
    unsigned char dmac[6] = {0x33, 0x33, 0, 0, 0, 1};
    memcpy(f, dmac, 6);
    memcpy(f + 6, mymac, 6);
    f[12] = 0x86;
    f[13] = 0xdd;
    unsigned char *ip = f + 14;
    unsigned char src[16] = {0xfe, 0x80}, dst[16] = {0xff, 0x02};
    src[8] = mymac[0] ^ 2; src[9] = mymac[1]; src[10] = mymac[2]; src[11] = 0xff;
    src[12] = 0xfe; src[13] = mymac[3]; src[14] = mymac[4]; src[15] = mymac[5];
    dst[15] = 1;
    ip[0] = 0x60;
    ip[4] = len >> 8;
    ip[5] = len & 0xff;
    ip[6] = 58;  /* ICMPv6 */
    ip[7] = 255; /* hop limit, as neighbour discovery requires */
    memcpy(ip + 8, src, 16);
    memcpy(ip + 24, dst, 16);
    unsigned char ph[40];
    memcpy(ph, src, 16);
    memcpy(ph + 16, dst, 16);
    memset(ph + 32, 0, 8);
    ph[34] = len >> 8;
    ph[35] = len & 0xff;
    ph[39] = 58;
    icmp[2] = icmp[3] = 0;
    unsigned short c = fold(sum16(icmp, len, sum16(ph, 40, 0)));
    icmp[2] = c >> 8;
    icmp[3] = c & 0xff;
    memcpy(ip + 40, icmp, len);
    send_frame(f, 14 + 40 + len);
}

/* The advertisement's body: default router (preference high), prefix 2001:db8:dead::/64. */
static void advertisement(unsigned char m[16 + 32]) {
    memset(m, 0, 16 + 32);
    m[0] = 134;  /* router advertisement */
    m[4] = 64;   /* hop limit */
    m[5] = 0x08; /* router preference high */
    m[6] = 0x07; m[7] = 0x08; /* router lifetime 1800 s */
    unsigned char *pi = m + 16; /* prefix information: on-link, autonomous */
    pi[0] = 3; pi[1] = 4; pi[2] = 64; pi[3] = 0xc0;
    pi[6] = 0x0e; pi[7] = 0x10; pi[10] = 0x0e; pi[11] = 0x10;
    unsigned char prefix[16] = {0x20, 0x01, 0x0d, 0xb8, 0xde, 0xad};
    memcpy(pi + 16, prefix, 16);
}

static int ra(const char *gw) {
    gateway_mac(gw);
    open_raw(ETH_P_IPV6);
    unsigned char m[16 + 32 + 8] = {0};
    advertisement(m);
    unsigned char *sl = m + 48; /* source link-layer address */
    sl[0] = 1; sl[1] = 1;
    memcpy(sl + 2, mymac, 6);
    send_icmpv6(m, sizeof m);
    unsigned char echo[8 + 8] = {128, 0, 0, 0, 0x12, 0x34, 0, 1};
    memcpy(echo + 8, "control", 7);
    send_icmpv6(echo, sizeof echo);
    if (!refused(gw)) { printf("control not refused\n"); return 1; }
    printf("control refused\n");
    return 0;
}

static int ra6(const char *gw) {
    unsigned char m[16 + 32];
    advertisement(m);
    int s = socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6);
    int hops = 255, idx = if_nametoindex("eth0");
    struct sockaddr_in6 dst = {.sin6_family = AF_INET6, .sin6_scope_id = idx};
    inet_pton(AF_INET6, "ff02::1", &dst.sin6_addr);
    int sent = s >= 0 &&
               !setsockopt(s, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &hops, sizeof hops) &&
               !setsockopt(s, IPPROTO_IPV6, IPV6_MULTICAST_IF, &idx, sizeof idx) &&
               sendto(s, m, sizeof m, 0, (void *)&dst, sizeof dst) == (ssize_t)sizeof m;
    printf("ra6 %s\n", sent ? "sent" : "not sent");
    if (!refused(gw)) { printf("control not refused\n"); return 1; }
    printf("control refused\n");
    return 0;
}

static int sniff(void) {
    open_raw(ETH_P_IPV6);
    printf("ready\n");
    fflush(stdout);
    int seen_ra = 0;
    unsigned char r[2048];
    for (;;) {
        int n = recv(raw, r, sizeof r, 0);
        if (n < 0) { printf("echo unseen\n"); return 1; }
        if (n < 14 + 40 + 8 || r[14 + 6] != 58) continue;
        if (r[14 + 40] == 134) seen_ra = 1;
        if (r[14 + 40] == 128 && n >= 14 + 40 + 15 && !memcmp(r + 14 + 48, "control", 7)) break;
    }
    printf("%s\necho seen\n", seen_ra ? "ra seen" : "no ra");
    return 0;
}

int main(int argc, char **argv) {
    pin();
    if (argc == 4 && !strcmp(argv[1], "loopback")) return loopback(argv[2], atoi(argv[3]));
    if (argc == 3 && !strcmp(argv[1], "ra")) return ra(argv[2]);
    if (argc == 3 && !strcmp(argv[1], "ra6")) return ra6(argv[2]);
    if (argc == 2 && !strcmp(argv[1], "sniff")) return sniff();
    fprintf(stderr, "usage: forge loopback GW PORT | ra GW | ra6 GW | sniff\n");
    return 2;
}
