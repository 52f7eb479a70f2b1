/* nfqdelay: delays the packets of one NFQUEUE queue (netem is not available).
 *
 *   nfqdelay QUEUE DELAY_MS [JITTER_MS [DROP_PCT]]
 *
 * Each queued packet gets a release time of arrival + DELAY_MS +/- a uniform
 * JITTER_MS, but never earlier than the packet before it (FIFO: no
 * reordering, as TCP between two nodes expects); it is accepted
 * (NF_ACCEPT) once that time has come. DROP_PCT percent of the packets are
 * dropped on arrival. Prints "ready" on stdout once bound to the queue.
 * SIGTERM/SIGINT: accepts every pending packet, unbinds and exits 0.
 * Wire up on the receiving side (held packets on the sender's OUTPUT stay
 * charged to its socket and TCP Small Queues then throttles the sender):
 *   iptables -A INPUT -s PEER -j NFQUEUE --queue-num Q --queue-bypass
 * (with --queue-bypass, packets pass untouched when no nfqdelay is bound). */
#define _GNU_SOURCE
#include <arpa/inet.h> /* before the kernel headers */
#include <errno.h>
#include <linux/netfilter.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif
#ifndef NETLINK_NO_ENOBUFS
#define NETLINK_NO_ENOBUFS 5
#endif

#define RING 65536u /* a power of two; a full ring lets packets through */

struct pkt { uint32_t id; uint64_t due; };

static struct pkt ring[RING];
static unsigned head, tail; /* tail - head = packets held */
static uint64_t delay_ns, jitter_ns, last_due;
static double drop_pct;
static volatile sig_atomic_t stopping;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void on_signal(int sig) { (void)sig; stopping = 1; }

static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg,
                     struct nfq_data *nfa, void *data)
{
    (void)msg; (void)data;
    struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
    if (ph == NULL)
        return 0;
    uint32_t id = ntohl(ph->packet_id);
    if (drop_pct > 0 && drand48() * 100.0 < drop_pct)
        return nfq_set_verdict(qh, id, NF_DROP, 0, NULL);
    if (tail - head == RING)
        return nfq_set_verdict(qh, id, NF_ACCEPT, 0, NULL);
    int64_t d = (int64_t)delay_ns;
    if (jitter_ns > 0)
        d += (int64_t)(drand48() * 2.0 * (double)jitter_ns) - (int64_t)jitter_ns;
    uint64_t due = now_ns() + (uint64_t)(d > 0 ? d : 0);
    if (due < last_due)
        due = last_due;
    last_due = due;
    ring[tail++ % RING] = (struct pkt){id, due};
    return 0;
}

static void release(struct nfq_q_handle *qh, int all)
{
    uint64_t now = now_ns();
    while (head != tail && (all || ring[head % RING].due <= now)) {
        nfq_set_verdict(qh, ring[head % RING].id, NF_ACCEPT, 0, NULL);
        head++;
    }
}

static double num(const char *s, const char *what)
{
    char *end;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || v < 0) {
        fprintf(stderr, "nfqdelay: bad %s '%s'\n", what, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 5) {
        fprintf(stderr, "usage: %s QUEUE DELAY_MS [JITTER_MS [DROP_PCT]]\n", argv[0]);
        return 2;
    }
    unsigned queue = (unsigned)num(argv[1], "queue");
    delay_ns = (uint64_t)(num(argv[2], "delay") * 1e6);
    jitter_ns = argc > 3 ? (uint64_t)(num(argv[3], "jitter") * 1e6) : 0;
    drop_pct = argc > 4 ? num(argv[4], "drop percentage") : 0;
    srand48((long)now_ns() ^ (long)getpid());

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: ppoll returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    struct nfq_handle *h = nfq_open();
    if (h == NULL) {
        perror("nfqdelay: nfq_open");
        return 1;
    }
    nfq_unbind_pf(h, AF_INET); /* no-ops on current kernels */
    nfq_bind_pf(h, AF_INET);
    struct nfq_q_handle *qh = nfq_create_queue(h, (uint16_t)queue, on_packet, NULL);
    if (qh == NULL) {
        perror("nfqdelay: nfq_create_queue");
        nfq_close(h);
        return 1;
    }
    if (nfq_set_mode(qh, NFQNL_COPY_META, 0) < 0)
        perror("nfqdelay: nfq_set_mode");
    nfq_set_queue_maxlen(qh, RING);
    /* Kernel queue full (we are stopped, say): let packets through. */
    nfq_set_queue_flags(qh, NFQA_CFG_F_FAIL_OPEN, NFQA_CFG_F_FAIL_OPEN);
    int fd = nfq_fd(h), one = 1, rcvbuf = 8 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf);
    setsockopt(fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof one);
    printf("ready\n");
    fflush(stdout);

    static char buf[65536] __attribute__((aligned));
    while (!stopping) {
        struct timespec ts, *tp = NULL;
        if (head != tail) {
            uint64_t now = now_ns(), due = ring[head % RING].due;
            uint64_t wait = due > now ? due - now : 0;
            ts.tv_sec = (time_t)(wait / 1000000000u);
            ts.tv_nsec = (long)(wait % 1000000000u);
            tp = &ts;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = ppoll(&p, 1, tp, NULL);
        if (r < 0 && errno != EINTR) {
            perror("nfqdelay: poll");
            break;
        }
        if (r > 0) {
            for (;;) {
                ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
                if (n > 0)
                    nfq_handle_packet(h, buf, (int)n);
                else if (n < 0 && errno == ENOBUFS)
                    continue;
                else
                    break;
            }
        }
        release(qh, 0);
    }
    release(qh, 1);
    nfq_destroy_queue(qh);
    nfq_close(h);
    return 0;
}
