/* Test peer that misbehaves on purpose: a blocking TLS client or server in
 * its own thread that presents any certificate, claims any identity and
 * sends any hello, so the tests can check that a hub on the loop thread
 * refuses it. It never checks the hub beyond what it is told to. */
#ifndef UB_TESTS_ROUTE_ROGUE_H
#define UB_TESTS_ROUTE_ROGUE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

enum route_rogue_hello {
    ROUTE_ROGUE_HELLO_GOOD,    /* well-formed hello for the claimed identity */
    ROUTE_ROGUE_HELLO_NONE,    /* nothing after the TLS handshake */
    ROUTE_ROGUE_HELLO_GARBAGE, /* bytes that are not a hello */
};

struct route_rogue_cfg {
    const char *cert;          /* certificate we present */
    const char *key;
    const char *name;          /* node name we claim */
    uint64_t id;               /* id we claim; 0 = rt_node_id(name) */
    const uint8_t *secret;     /* secret for our hello's MAC */
    size_t secret_len;
    uint32_t kind;             /* dial: kind and group we ask for */
    uint64_t group;
    enum route_rogue_hello hello;
    int port;                  /* dial: the hub's port on 127.0.0.1 */
};

struct route_rogue {
    struct route_rogue_cfg cfg;
    pthread_t thread;
    int listen_fd;             /* accept mode */
    int port;                  /* accept mode: where we listen */
    int dialing;
    atomic_int done;           /* set when the thread has finished */
    /* Results, read after route_rogue_join(). */
    int tls_ok;                /* our TLS handshake completed */
    int got_hello;             /* a hello frame arrived from the hub */
    int hub_closed;            /* the hub closed or aborted the connection */
    char detail[256];
};

/* Dials the hub in a thread. Returns 0 or -1. */
int route_rogue_dial(struct route_rogue *r, const struct route_rogue_cfg *cfg);

/* Listens on 127.0.0.1 (r->port) and serves one connection in a thread.
 * Returns 0 or -1. */
int route_rogue_accept(struct route_rogue *r,
                       const struct route_rogue_cfg *cfg);

/* Waits for the thread. */
void route_rogue_join(struct route_rogue *r);

#endif
