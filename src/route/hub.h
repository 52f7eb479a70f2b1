/* The route hub: one mutual-TLS listener on the route port shared by all the
 * traffic that crosses nodes (raft of every group, bus interest, forwarded
 * requests), plus the dialer for the same connections.
 *
 * Every connection: TCP, TLS 1.3 where both ends present a certificate from
 * the cluster CA, then a hello in each direction (hello.h) carrying the
 * sender's node name, id and an HMAC bound to the TLS session with the
 * cluster secret. Each side checks that the peer certificate names the node
 * its hello claims, that the id is rt_node_id(name), the HMAC, and (dialer)
 * the expected id. Any failure is logged as a warning naming the peer
 * address and the reason, and the connection is closed.
 *
 * After both hellos the application gets a plain byte stream: one end of an
 * AF_UNIX socketpair wrapped in a uv_pipe_t allocated with raft_malloc(); the
 * hub relays the other end <-> TLS <-> TCP with backpressure. The receiver
 * owns that handle: it closes it with uv_close() and frees it with
 * raft_free() in the close callback (exactly what libraft's uv backend does).
 * Closing it makes the hub send a TLS close_notify and close the TCP
 * connection; the peer's application then reads EOF. A TCP EOF or error
 * likewise ends in EOF on the local stream.
 *
 * Everything runs on one libuv loop thread; nothing here is thread-safe.
 * The process must not die of SIGPIPE: rt_hub_create() ignores SIGPIPE if
 * its disposition is still the default. */
#ifndef UB_ROUTE_HUB_H
#define UB_ROUTE_HUB_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define RT_DEFAULT_PORT 6250
#define RT_DEFAULT_TIMEOUT_MS 5000

/* Connection kinds carried in the hello; one accept handler per kind. */
enum rt_kind {
    RT_KIND_RAFT = 1,     /* raft traffic; the group selects the raft group */
    RT_KIND_DISCOVER = 2, /* cluster discovery */
    RT_KIND_FORWARD = 3,  /* requests forwarded to the meta leader */
    RT_KIND_BUS = 4,      /* bus routes: interest and messages, one way */
    RT_KIND_MAX = 15,
};

struct rt_hub;

/* The authenticated peer of a route connection. */
struct rt_peer {
    uint64_t id;       /* rt_node_id(name) */
    char name[64];     /* node name, named by its certificate */
    char address[256]; /* its advertised route address "host:port" */
};

struct rt_hub_config {
    const char *name;        /* our node name (required, checked against cert) */
    const char *listen_host; /* IP literal or "localhost"; NULL = 0.0.0.0 */
    int listen_port;         /* 0 = any free port (see rt_hub_port) */
    const char *advertise;   /* "host:port" others reach us at; NULL = derived */
    const char *cert_file;   /* route certificate chain (PEM) */
    const char *key_file;    /* its private key (PEM) */
    const char *ca_file;     /* the dedicated cluster CA (PEM), nothing else */
    const uint8_t *secret;   /* cluster secret, copied; 16..1024 bytes */
    size_t secret_len;
    unsigned timeout_ms;     /* dial and handshake+hello limit; 0 = 5000 */
};

/* Counters for metrics and tests. */
struct rt_hub_stats {
    uint64_t accepted;   /* inbound connections handed to a handler */
    uint64_t dialed;     /* outbound connections handed to their callback */
    uint64_t refused;    /* connections closed for a failed check, and
                            inbound ones that failed before the relay */
    uint64_t failed;     /* dials that failed (resolve, connect, timeout) */
    uint64_t relays;     /* relays open now */
    uint64_t bytes_in;   /* plaintext bytes received from peers */
    uint64_t bytes_out;  /* plaintext bytes sent to peers */
    char last_error[192]; /* reason of the last refusal or failure */
};

/* The node id of a node name: first 8 bytes of SHA-256(name), big-endian,
 * top bit cleared, 0 mapped to 1. It is the raft id of the node in every
 * group. */
uint64_t rt_node_id(const char *name);

/* Creates a hub on loop: loads the certificate, key and CA, and refuses a
 * certificate that does not name cfg->name or does not come from the cluster
 * CA, with a message in err. Starts nothing. Returns 0 or a negative uv error
 * code; *out is set on success. */
int rt_hub_create(uv_loop_t *loop, const struct rt_hub_config *cfg,
                  struct rt_hub **out, char *err, size_t errlen);

/* Binds and listens on the configured host and port. Returns 0 or a negative
 * uv error code with a message in err. */
int rt_hub_listen(struct rt_hub *h, char *err, size_t errlen);

/* Called for each authenticated inbound connection of the handler's kind.
 * peer is borrowed for the call; stream is owned by the callee (uv_close it,
 * raft_free it in the close callback). */
typedef void (*rt_accept_cb)(void *arg, const struct rt_peer *peer,
                             uint64_t group, uv_stream_t *stream);

/* Installs (or with cb NULL removes) the handler for kind. Inbound
 * connections of a kind without handler are refused before the acceptor's
 * hello. */
void rt_hub_set_accept(struct rt_hub *h, uint32_t kind, rt_accept_cb cb,
                       void *arg);

/* Reads back the handler of kind (both NULL when none). */
void rt_hub_get_accept(const struct rt_hub *h, uint32_t kind, rt_accept_cb *cb,
                       void **arg);

/* An in-flight dial; valid until its callback has fired. */
struct rt_connect;

/* Fires exactly once per successful rt_hub_connect(). On status 0, peer is
 * borrowed for the call and stream is owned by the callee as for
 * rt_accept_cb. On failure status is a negative uv error code
 * (UV_ECANCELED after rt_connect_cancel or rt_hub_close, UV_ETIMEDOUT,
 * UV_EPROTO for a refused peer, or the resolve/connect error), and peer and
 * stream are NULL. Never called from inside rt_hub_connect. */
typedef void (*rt_connect_cb)(void *arg, int status,
                              const struct rt_peer *peer, uv_stream_t *stream);

/* Dials address ("host:port", "[v6]:port"; resolved with uv_getaddrinfo),
 * requiring the acceptor to be node expect_id (0 = any cluster node), and
 * asks for a connection of kind and group. The whole dial is limited to the
 * hub's timeout. Returns 0 (cb will fire; *out, if out is not NULL, is the
 * handle for rt_connect_cancel) or a negative uv error code (cb never
 * fires). */
int rt_hub_connect(struct rt_hub *h, const char *address, uint64_t expect_id,
                   uint32_t kind, uint64_t group, rt_connect_cb cb, void *arg,
                   struct rt_connect **out);

/* Aborts a dial whose callback has not fired yet; the callback then fires
 * with UV_ECANCELED, exactly once, from a later loop callback. */
void rt_connect_cancel(struct rt_connect *c);

/* Stops the listener, cancels every dial (callbacks fire with UV_ECANCELED),
 * closes every relay (local streams see EOF) and frees the hub; cb(arg) runs
 * once every handle is closed. Streams already handed out stay valid until
 * their owners close them. Close users of the hub (raft transports) first. */
void rt_hub_close(struct rt_hub *h, void (*cb)(void *arg), void *arg);

/* Our advertised "host:port" (known after rt_hub_listen when derived). */
const char *rt_hub_advertise(const struct rt_hub *h);

/* The bound port after rt_hub_listen, else the configured one. */
int rt_hub_port(const struct rt_hub *h);

/* Our node name and id. */
const char *rt_hub_name(const struct rt_hub *h);
uint64_t rt_hub_id(const struct rt_hub *h);

/* The loop the hub runs on. */
uv_loop_t *rt_hub_loop(const struct rt_hub *h);

/* uv_now() of the last plaintext bytes received from node id on any route
 * connection, or 0 if none yet. Feeds member health reports. */
uint64_t rt_hub_last_heard(const struct rt_hub *h, uint64_t id);

/* Copies the counters. */
void rt_hub_get_stats(const struct rt_hub *h, struct rt_hub_stats *out);

#endif
