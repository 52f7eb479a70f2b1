/* The bus: the NATS-protocol data plane of a node (DESIGN.md §5).
 *
 * One listener on the loop; each client connection is parsed by proto.h,
 * authenticated against the member directory (directory.h) through the NATS
 * nkey challenge, checked by the ACL on every SUB and PUB, and served from
 * the subscription index (sublist.h). Outbound bytes are buffered per
 * connection and written once per loop iteration; a connection whose
 * buffered bytes pass max_pending is cut off as a slow consumer without
 * stalling anyone else. Messages with interest on other nodes go over the
 * route hub (bus_routes.h).
 *
 * Everything runs on one libuv loop thread; nothing here is thread-safe. */
#ifndef UB_BUS_BUS_H
#define UB_BUS_BUS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct ctl;
struct kv_store;
struct rt_hub;

enum bus_auth_mode {
    BUS_AUTH_OFF = 0, /* no identity, no ACL */
    BUS_AUTH_WARN,    /* identity and ACL evaluated, violations only logged */
    BUS_AUTH_ENFORCE, /* nkey challenge required, ACL enforced */
};

struct bus_config {
    const char *listen;       /* HOST:PORT */
    const char *name;         /* server_name in INFO */
    enum bus_auth_mode auth;
    const char *tls_cert;     /* PEM chain; with tls_key: TLS required */
    const char *tls_key;
    const char *tls_ca;       /* verify client certificates against it */
    size_t max_payload;       /* 0 = 1 MiB */
    size_t max_control;       /* 0 = 4096 */
    size_t max_pending;       /* slow-consumer limit, 0 = 64 MiB */
    unsigned max_conns;       /* 0 = 65536 */
    unsigned max_subs;        /* per connection, 0 = 65536 */
    unsigned auth_timeout_ms; /* 0 = 2000 */
    unsigned ping_interval_ms; /* 0 = 120000 */
    unsigned max_pings_out;   /* 0 = 2 */
    unsigned write_deadline_ms; /* 0 = 10000 */
    struct kv_store *kv;      /* the node's replica of the meta KV */
    struct ctl *ctl;          /* the control plane, for $UB.API services */
    struct rt_hub *hub;       /* NULL on a lone node */
    const char *const *peers; /* route addresses of the other nodes */
    unsigned n_peers;
};

struct bus_stats {
    uint64_t conns;        /* open client connections */
    uint64_t conns_total;  /* accepted since start */
    uint64_t subs;         /* subscriptions */
    uint64_t msgs_in, bytes_in;   /* published by clients */
    uint64_t msgs_out, bytes_out; /* delivered to clients */
    uint64_t slow_consumers;      /* connections cut off */
    uint64_t stalls;              /* publishers paused for a subscriber */
    uint64_t auth_failures;
    uint64_t permission_denials;
    uint64_t route_msgs_in, route_msgs_out;
    uint64_t routes;              /* route peers connected */
};

struct bus;

/* Creates the bus, loads TLS material and listens. Returns 0 or -1 with a
 * message in err. */
int bus_create(uv_loop_t *loop, const struct bus_config *cfg, struct bus **out,
               char *err, size_t errlen);

/* The bound port (useful with port 0). */
int bus_port(const struct bus *b);

void bus_get_stats(const struct bus *b, struct bus_stats *out);

/* Routes to address too ("host:port" of a node's route listener): the
 * node keeps the bus routed to every member of the meta group, not only
 * to --routes. Known addresses and a node without routes are ignored. */
void bus_add_route(struct bus *b, const char *address);

/* Stops accepting, closes every connection (they see EOF), closes routes,
 * and frees the bus; cb(arg) runs when every handle is closed. */
void bus_close(struct bus *b, void (*cb)(void *arg), void *arg);

/* "off", "warn", "enforce" -> mode; -1 for anything else. */
int bus_auth_parse(const char *s);

#endif
