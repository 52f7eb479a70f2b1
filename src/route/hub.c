/* Route hub: listener, dialer and TLS relay of every route connection.
 *
 * Happy path of a dial (rt_hub_connect):
 *   resolve (uv_getaddrinfo) -> TCP connect, each resolved address in turn ->
 *   TLS client handshake -> the acceptor's certificate must name a node whose
 *   id is expect_id -> send our hello -> read and check the acceptor's hello
 *   -> socketpair: end A goes to the callback, end B is relayed.
 * Happy path of an accept:
 *   accept -> TLS server handshake (client certificate required) -> read and
 *   check the dialer's hello, and that a handler exists for its kind -> send
 *   our hello -> socketpair: end A goes to the kind's handler, end B relayed.
 * Failure modes:
 *   - a check fails, the TLS handshake fails, or the peer closes before the
 *     hellos are through: warning naming the peer address and the reason,
 *     connection closed; a dial reports UV_EPROTO;
 *   - network errors before the relay starts: warning; a dial reports the
 *     uv error;
 *   - the hub timeout (default 5 s) runs out before the relay starts:
 *     UV_ETIMEDOUT;
 *   - rt_connect_cancel() or rt_hub_close(): UV_ECANCELED.
 * Relay teardown:
 *   - the application closes its end (EOF or error reading end B): TLS
 *     close_notify, TCP shutdown once queued writes are out, then close;
 *   - TCP EOF or close_notify from the peer: the plaintext already received
 *     is flushed into end B, end B is shut down (the application reads EOF),
 *     then everything is closed;
 *   - a write error on either side: both sides closed at once;
 *   - a drain that takes longer than DRAIN_TIMEOUT_MS is cut short.
 * Backpressure: reading end B stops while more than RELAY_HIGH_WATER bytes
 * wait to be written to TCP, and reading TCP (and decrypting) stops while
 * more than that wait to be written to end B; each resumes below
 * RELAY_LOW_WATER.
 * Lifetime: a connection frees itself when its last handle (timer, tcp,
 * relay pipe) has called back and no getaddrinfo is in flight. A failed or
 * cancelled dial's callback fires at that point, so it is never synchronous.
 * The TLS session runs over memory BIOs fed from the uv read callbacks. */
#include "route/hub.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <raft.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/log.h"
#include "route/hello.h"
#include "route/tls.h"

#define RELAY_HIGH_WATER (1u << 20)
#define RELAY_LOW_WATER (256u << 10)
#define IO_CHUNK (64u << 10)
#define MAX_INBOUND_HANDSHAKES 256
#define DRAIN_TIMEOUT_MS 5000
#define SECRET_MIN 16
#define SECRET_MAX 1024
#define LISTEN_BACKLOG 128
#define KEEPALIVE_DELAY_S 30
#define REMOTE_MAX 300

enum conn_state {
    CONN_RESOLVING,  /* dial: uv_getaddrinfo in flight */
    CONN_CONNECTING, /* dial: uv_tcp_connect in flight; accept: accepted */
    CONN_HANDSHAKE,  /* TLS handshake */
    CONN_HELLO,      /* waiting for the peer's hello */
    CONN_RELAY,      /* stream handed over, relaying */
    CONN_DRAINING,   /* one side finished, flushing towards the other */
    CONN_CLOSING,    /* handles closing; freed once all called back */
    CONN_NR,
};

static const char *const conn_state_names[CONN_NR] = {
    "resolving", "connecting", "TLS handshake", "hello",
    "relay",     "draining",   "closing",
};

/* Allowed transitions, one bit per next state. */
#define BIT(s) (1u << (s))
static const unsigned conn_next[CONN_NR] = {
    [CONN_RESOLVING] = BIT(CONN_CONNECTING) | BIT(CONN_CLOSING),
    [CONN_CONNECTING] = BIT(CONN_CONNECTING) | BIT(CONN_HANDSHAKE) |
                        BIT(CONN_CLOSING),
    [CONN_HANDSHAKE] = BIT(CONN_HELLO) | BIT(CONN_CLOSING),
    [CONN_HELLO] = BIT(CONN_RELAY) | BIT(CONN_CLOSING),
    [CONN_RELAY] = BIT(CONN_DRAINING) | BIT(CONN_CLOSING),
    [CONN_DRAINING] = BIT(CONN_CLOSING),
    [CONN_CLOSING] = 0,
};

struct accept_handler {
    rt_accept_cb cb;
    void *arg;
};

#define RT_HEARD_MAX 32
#define RT_DIAL_WARN_SLOTS 16

struct rt_hub {
    uv_loop_t *loop;                  /* borrowed */
    SSL_CTX *ctx;                     /* owned */
    char name[RT_NAME_MAX + 1];
    uint64_t id;                      /* rt_node_id(name) */
    char listen_host[RT_ADDRESS_MAX + 1];
    int port;                         /* configured, then bound */
    char advertise[RT_ADDRESS_MAX + 1];
    uint8_t *secret;                  /* owned, cleansed on free */
    size_t secret_len;
    unsigned timeout_ms;
    uv_timer_t anchor;                /* never started; makes close async */
    uv_tcp_t listener;
    bool listener_open;               /* listener initialised, not closing */
    unsigned open_handles;            /* hub-level handles not closed yet */
    struct rt_connect *conns;         /* every live connection */
    unsigned inbound_handshakes;      /* accepted, not yet relaying */
    struct accept_handler handlers[RT_KIND_MAX + 1];
    bool closing;
    void (*close_cb)(void *arg);
    void *close_arg;
    struct rt_hub_stats stats;
    struct {
        uint64_t id;
        uint64_t at;                  /* uv_now of the last bytes from id */
    } heard[RT_HEARD_MAX];
    struct {
        char remote[REMOTE_MAX];
        uint64_t at;                  /* last warning about dialing it */
    } dial_warned[RT_DIAL_WARN_SLOTS];
    char in_buf[IO_CHUNK];            /* uv read buffer of every stream */
    char plain_buf[IO_CHUNK];         /* SSL_read output */
    char wire_buf[IO_CHUNK];          /* ciphertext taken from the write BIO */
};

/* One route connection, dialed or accepted. As a dial handle it is the
 * public struct rt_connect, valid until the dial callback fires. */
struct rt_connect {
    struct rt_hub *hub;
    struct rt_connect *prev, *next;   /* hub->conns */
    enum conn_state state;
    bool dialer;
    uint32_t kind;
    uint64_t group;
    uint64_t expect_id;               /* dial: required acceptor id or 0 */
    char remote[REMOTE_MAX];          /* peer, for log lines */
    /* Dial only. */
    rt_connect_cb cb;                 /* NULL once fired, or when never to */
    void *arg;
    int status;                       /* failure reported to cb */
    int last_connect_error;
    char host[RT_ADDRESS_MAX + 1];
    char port[8];
    uv_getaddrinfo_t gai;
    bool gai_pending;
    struct addrinfo *addrs;           /* owned, uv_freeaddrinfo */
    struct addrinfo *next_addr;       /* next address to try */
    uv_connect_t connect_req;
    /* Handles: each counts in open_handles until its close callback. */
    uv_timer_t timer;                 /* timeouts */
    uv_tcp_t tcp;
    uv_pipe_t relay;                  /* end B of the socketpair */
    bool timer_open, tcp_open, relay_open;
    unsigned open_handles;
    uv_shutdown_t shutdown_req;
    /* TLS. */
    SSL *ssl;                         /* owned; owns rbio and wbio */
    BIO *rbio;                        /* ciphertext received */
    BIO *wbio;                        /* ciphertext to send */
    uint8_t exporter[RT_EXPORTER_LEN];
    uint8_t hello[RT_HELLO_MAX];
    size_t hello_have, hello_need;
    struct rt_peer peer;
    /* Relay. */
    size_t tcp_queued;                /* bytes in the TCP write queue */
    size_t relay_queued;              /* bytes in the end B write queue */
    bool tcp_paused;                  /* TCP reading stopped (backpressure) */
    bool relay_paused;                /* end B reading stopped */
    bool peer_done;                   /* TCP EOF or close_notify seen */
    bool inbound_counted;             /* counts in hub->inbound_handshakes */
    bool relay_counted;               /* counts in hub->stats.relays */
};

/* Remembers when a peer last sent us anything, for health reporting. */
static void note_heard(struct rt_hub *h, uint64_t id)
{
    unsigned oldest = 0;
    uint64_t now = uv_now(h->loop);
    for (unsigned i = 0; i < RT_HEARD_MAX; i++) {
        if (h->heard[i].id == id) {
            h->heard[i].at = now;
            return;
        }
        if (h->heard[i].at < h->heard[oldest].at) {
            oldest = i;
        }
    }
    h->heard[oldest].id = id;
    h->heard[oldest].at = now;
}

uint64_t rt_hub_last_heard(const struct rt_hub *h, uint64_t id)
{
    for (unsigned i = 0; i < RT_HEARD_MAX; i++) {
        if (h->heard[i].id == id) {
            return h->heard[i].at;
        }
    }
    return 0;
}

/* A queued write; the data follows the struct. */
struct wreq {
    uv_write_t req;
    struct rt_connect *c;
    size_t *queued;                   /* counter in c to decrement */
    size_t len;
    char data[];
};

static void conn_close(struct rt_connect *c);
static void conn_drive(struct rt_connect *c);
static void conn_tcp_read_cb(uv_stream_t *stream, ssize_t nread,
                             const uv_buf_t *buf);
static void conn_read_plain(struct rt_connect *c);
static void conn_connect_next(struct rt_connect *c);

/* --- connection lifecycle -------------------------------------------------*/

/* snprintf that may truncate on purpose (log text, labels). */
static void fmt(char *buf, size_t len, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
static void fmt(char *buf, size_t len, const char *format, ...)
{
    va_list ap;

    va_start(ap, format);
    vsnprintf(buf, len, format, ap);
    va_end(ap);
}

static void conn_move(struct rt_connect *c, enum conn_state next)
{
    if (c->state >= CONN_NR || next >= CONN_NR ||
        (conn_next[c->state] & BIT(next)) == 0) {
        ub_error("route", "%s: bad state change %d -> %d", c->remote,
                 (int)c->state, (int)next);
        assert(!"bad route connection state change");
    }
    ub_debug("route", "%s: %s -> %s", c->remote, conn_state_names[c->state],
             conn_state_names[next]);
    c->state = next;
}

static void hub_maybe_finish(struct rt_hub *h)
{
    void (*cb)(void *arg);
    void *arg;

    if (!h->closing || h->conns != NULL || h->open_handles > 0) {
        return;
    }
    cb = h->close_cb;
    arg = h->close_arg;
    SSL_CTX_free(h->ctx);
    OPENSSL_clear_free(h->secret, h->secret_len);
    free(h);
    if (cb != NULL) {
        cb(arg);
    }
}

static void conn_maybe_destroy(struct rt_connect *c)
{
    struct rt_hub *h = c->hub;
    rt_connect_cb cb;
    void *arg;
    int status;

    if (c->state != CONN_CLOSING || c->open_handles > 0 || c->gai_pending) {
        return;
    }
    cb = c->cb;
    arg = c->arg;
    status = c->status != 0 ? c->status : UV_ECANCELED;
    if (c->inbound_counted) {
        h->inbound_handshakes--;
    }
    if (c->relay_counted) {
        h->stats.relays--;
    }
    SSL_free(c->ssl);
    if (c->addrs != NULL) {
        uv_freeaddrinfo(c->addrs);
    }
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        h->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    OPENSSL_cleanse(c->exporter, sizeof c->exporter);
    free(c);
    if (cb != NULL) {
        cb(arg, status, NULL, NULL);
    }
    hub_maybe_finish(h);
}

static void conn_handle_closed(uv_handle_t *handle)
{
    struct rt_connect *c = handle->data;

    assert(c->open_handles > 0);
    c->open_handles--;
    conn_maybe_destroy(c);
}

static void conn_close_handle(uv_handle_t *handle, bool *open)
{
    if (*open) {
        *open = false;
        uv_close(handle, conn_handle_closed);
    }
}

/* Starts closing every handle; the connection frees itself afterwards. The
 * timer is open from creation until here, so destruction is always
 * asynchronous. */
static void conn_close(struct rt_connect *c)
{
    if (c->state == CONN_CLOSING) {
        return;
    }
    conn_move(c, CONN_CLOSING);
    if (c->gai_pending) {
        uv_cancel((uv_req_t *)&c->gai);
    }
    conn_close_handle((uv_handle_t *)&c->timer, &c->timer_open);
    conn_close_handle((uv_handle_t *)&c->tcp, &c->tcp_open);
    conn_close_handle((uv_handle_t *)&c->relay, &c->relay_open);
}

/* Whether a failed dial to remote was already reported in the last 10 s:
 * a peer that is down is retried every 200 ms by every user of the hub. */
static bool dial_warned_recently(struct rt_hub *h, const char *remote)
{
    uint64_t now = uv_now(h->loop);
    unsigned slot = 0;
    for (unsigned i = 0; i < RT_DIAL_WARN_SLOTS; i++) {
        if (strcmp(h->dial_warned[i].remote, remote) == 0) {
            if (now - h->dial_warned[i].at < 10000) {
                return true;
            }
            slot = i;
            break;
        }
        if (h->dial_warned[i].at < h->dial_warned[slot].at) {
            slot = i;
        }
    }
    snprintf(h->dial_warned[slot].remote, sizeof h->dial_warned[slot].remote,
             "%s", remote);
    h->dial_warned[slot].at = now;
    return false;
}

static void conn_note(struct rt_connect *c, const char *what,
                      const char *reason)
{
    fmt(c->hub->stats.last_error, sizeof c->hub->stats.last_error,
        "%s %s: %s", what, c->remote, reason);
    if (c->dialer && dial_warned_recently(c->hub, c->remote)) {
        ub_debug("route", "%s %s: %s", what, c->remote, reason);
        return;
    }
    ub_warn("route", "%s %s: %s", what, c->remote, reason);
}

static const char *conn_what(const struct rt_connect *c)
{
    return c->dialer ? "refused route to" : "refused route connection from";
}

/* A check failed: the peer is not who or what it must be. */
static void conn_refuse(struct rt_connect *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void conn_refuse(struct rt_connect *c, const char *fmt, ...)
{
    char reason[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    c->hub->stats.refused++;
    conn_note(c, conn_what(c), reason);
    if (c->status == 0) {
        c->status = UV_EPROTO;
    }
    conn_close(c);
}

/* The connection failed before the relay started (network, timeout). */
static void conn_fail(struct rt_connect *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void conn_fail(struct rt_connect *c, int status, const char *fmt, ...)
{
    char reason[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    /* Inbound, any failure before the relay is a refusal of the peer. */
    if (c->dialer) {
        c->hub->stats.failed++;
    } else {
        c->hub->stats.refused++;
    }
    conn_note(c, c->dialer ? "route dial to" : "route connection from",
              reason);
    if (c->status == 0) {
        c->status = status;
    }
    conn_close(c);
}

/* An I/O error: before the relay it fails the connection, afterwards it just
 * ends it. */
static void conn_io_error(struct rt_connect *c, const char *where, int status)
{
    if (c->state == CONN_CLOSING) {
        return;
    }
    if (c->state < CONN_RELAY) {
        conn_fail(c, status, "%s: %s", where, uv_strerror(status));
        return;
    }
    ub_debug("route", "%s (%s): %s: %s", c->remote, c->peer.name, where,
             uv_strerror(status));
    conn_close(c);
}

static void conn_timeout_cb(uv_timer_t *timer)
{
    struct rt_connect *c = timer->data;

    if (c->state == CONN_DRAINING) {
        ub_debug("route", "%s: drain timed out", c->remote);
        conn_close(c);
    } else if (c->state < CONN_RELAY) {
        conn_fail(c, UV_ETIMEDOUT, "timed out after %u ms in %s",
                  c->hub->timeout_ms, conn_state_names[c->state]);
    }
}

static struct rt_connect *conn_new(struct rt_hub *h, bool dialer)
{
    struct rt_connect *c = calloc(1, sizeof *c);

    if (c == NULL) {
        return NULL;
    }
    c->hub = h;
    c->dialer = dialer;
    c->state = dialer ? CONN_RESOLVING : CONN_CONNECTING;
    uv_timer_init(h->loop, &c->timer);
    c->timer.data = c;
    c->timer_open = true;
    c->open_handles = 1;
    c->next = h->conns;
    if (h->conns != NULL) {
        h->conns->prev = c;
    }
    h->conns = c;
    return c;
}

/* --- writing -------------------------------------------------------------*/

static void conn_resume(struct rt_connect *c);

static void conn_write_cb(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    struct rt_connect *c = w->c;
    bool to_tcp = w->queued == &c->tcp_queued;

    assert(*w->queued >= w->len);
    *w->queued -= w->len;
    free(w);
    if (c->state == CONN_CLOSING) {
        return;
    }
    if (status < 0) {
        conn_io_error(c, to_tcp ? "write to peer" : "write to local stream",
                      status);
        return;
    }
    conn_resume(c);
}

/* Writes len bytes to stream, directly when its queue is empty, otherwise
 * (or for the rest) through a queued copy. Returns 0, or -1 after ending the
 * connection. */
static int conn_send(struct rt_connect *c, uv_stream_t *stream,
                     size_t *queued, const char *data, size_t len)
{
    struct wreq *w;
    uv_buf_t buf;
    int rv;

    if (*queued == 0) {
        buf = uv_buf_init((char *)data, (unsigned)len);
        rv = uv_try_write(stream, &buf, 1);
        if (rv > 0) {
            data += rv;
            len -= (size_t)rv;
        } else if (rv != UV_EAGAIN && rv != UV_ENOSYS) {
            conn_io_error(c, queued == &c->tcp_queued ? "write to peer"
                                                      : "write to local stream",
                          rv);
            return -1;
        }
    }
    if (len == 0) {
        return 0;
    }
    w = malloc(sizeof *w + len);
    if (w == NULL) {
        conn_io_error(c, "write", UV_ENOMEM);
        return -1;
    }
    w->c = c;
    w->queued = queued;
    w->len = len;
    memcpy(w->data, data, len);
    buf = uv_buf_init(w->data, (unsigned)len);
    rv = uv_write(&w->req, stream, &buf, 1, conn_write_cb);
    if (rv != 0) {
        free(w);
        conn_io_error(c, "write", rv);
        return -1;
    }
    *queued += len;
    return 0;
}

/* Moves the ciphertext OpenSSL produced to the TCP connection. */
static int conn_flush(struct rt_connect *c)
{
    struct rt_hub *h = c->hub;
    size_t pending;

    while ((pending = BIO_ctrl_pending(c->wbio)) > 0) {
        int n = BIO_read(c->wbio, h->wire_buf,
                         (int)(pending < IO_CHUNK ? pending : IO_CHUNK));
        if (n <= 0) {
            conn_io_error(c, "TLS output", UV_EIO);
            return -1;
        }
        if (!c->tcp_open) {
            continue; /* closing: drop it */
        }
        if (conn_send(c, (uv_stream_t *)&c->tcp, &c->tcp_queued, h->wire_buf,
                      (size_t)n) != 0) {
            return -1;
        }
    }
    return 0;
}

/* --- relay ---------------------------------------------------------------*/

static void conn_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    struct rt_connect *c = handle->data;

    (void)suggested;
    *buf = uv_buf_init(c->hub->in_buf, IO_CHUNK);
}

static void conn_shutdown_cb(uv_shutdown_t *req, int status)
{
    struct rt_connect *c = req->data;

    (void)status;
    conn_close(c);
}

static void conn_start_drain(struct rt_connect *c, uv_stream_t *stream)
{
    int rv;

    uv_timer_start(&c->timer, conn_timeout_cb, DRAIN_TIMEOUT_MS, 0);
    c->shutdown_req.data = c;
    rv = uv_shutdown(&c->shutdown_req, stream, conn_shutdown_cb);
    if (rv != 0) {
        conn_close(c);
    }
}

/* The peer finished sending (TCP EOF or close_notify). */
static void conn_peer_finished(struct rt_connect *c)
{
    if (c->state == CONN_HELLO) {
        conn_refuse(c, "peer closed the connection before its hello (it may "
                       "have refused us; see its log)");
        return;
    }
    if (c->state != CONN_RELAY) {
        return;
    }
    ub_debug("route", "%s (%s): peer finished", c->remote, c->peer.name);
    conn_move(c, CONN_DRAINING);
    uv_read_stop((uv_stream_t *)&c->relay);
    if (c->tcp_open) {
        uv_read_stop((uv_stream_t *)&c->tcp);
    }
    /* uv_shutdown completes after the queued plaintext is written, then
     * the local application reads EOF. */
    conn_start_drain(c, (uv_stream_t *)&c->relay);
}

/* The local application closed its end. */
static void conn_local_finished(struct rt_connect *c)
{
    if (c->state != CONN_RELAY) {
        return;
    }
    ub_debug("route", "%s (%s): local stream finished", c->remote,
             c->peer.name);
    conn_move(c, CONN_DRAINING);
    uv_read_stop((uv_stream_t *)&c->relay);
    uv_read_stop((uv_stream_t *)&c->tcp);
    ERR_clear_error();
    SSL_shutdown(c->ssl); /* queues close_notify */
    ERR_clear_error();
    if (conn_flush(c) != 0) {
        return;
    }
    conn_start_drain(c, (uv_stream_t *)&c->tcp);
}

static void conn_relay_read_cb(uv_stream_t *stream, ssize_t nread,
                               const uv_buf_t *buf)
{
    struct rt_connect *c = stream->data;
    int n;

    if (c->state != CONN_RELAY || nread == 0) {
        return;
    }
    if (nread < 0) {
        /* EOF, or ECONNRESET when the application closed with unread
         * data: either way it is done with the stream. */
        conn_local_finished(c);
        return;
    }
    ERR_clear_error();
    n = SSL_write(c->ssl, buf->base, (int)nread);
    if (n != nread) {
        char why[160];
        rt_tls_error(c->ssl, why, sizeof why);
        ub_info("route", "%s (%s): TLS write failed: %s", c->remote,
                c->peer.name, why);
        conn_close(c);
        return;
    }
    c->hub->stats.bytes_out += (uint64_t)nread;
    if (conn_flush(c) != 0) {
        return;
    }
    if (c->tcp_queued > RELAY_HIGH_WATER && !c->relay_paused) {
        c->relay_paused = true;
        uv_read_stop((uv_stream_t *)&c->relay);
    }
}

static void conn_resume(struct rt_connect *c)
{
    if (c->state != CONN_RELAY) {
        return;
    }
    if (c->relay_paused && c->tcp_queued <= RELAY_LOW_WATER) {
        c->relay_paused = false;
        uv_read_start((uv_stream_t *)&c->relay, conn_alloc,
                      conn_relay_read_cb);
    }
    if (c->tcp_paused && c->relay_queued <= RELAY_LOW_WATER) {
        c->tcp_paused = false;
        if (!c->peer_done) {
            uv_read_start((uv_stream_t *)&c->tcp, conn_alloc,
                          conn_tcp_read_cb);
        }
        conn_read_plain(c); /* what OpenSSL still holds */
    }
}

static void free_raft_handle(uv_handle_t *handle)
{
    raft_free(handle);
}

/* Both hellos are through: create the socketpair, start relaying end B and
 * hand end A to the application. */
static void conn_handover(struct rt_connect *c)
{
    struct rt_hub *h = c->hub;
    struct rt_peer peer;
    uv_pipe_t *app;
    int sv[2];
    int rv;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        rv = -errno;
        conn_fail(c, rv, "socketpair: %s", uv_strerror(rv));
        return;
    }
    uv_pipe_init(h->loop, &c->relay, 0);
    c->relay.data = c;
    c->relay_open = true;
    c->open_handles++;
    rv = uv_pipe_open(&c->relay, sv[1]);
    if (rv != 0) {
        close(sv[0]);
        close(sv[1]);
        conn_fail(c, rv, "relay socket: %s", uv_strerror(rv));
        return;
    }
    app = raft_malloc(sizeof *app);
    if (app == NULL) {
        close(sv[0]);
        conn_fail(c, UV_ENOMEM, "out of memory");
        return;
    }
    uv_pipe_init(h->loop, app, 0);
    rv = uv_pipe_open(app, sv[0]);
    if (rv == 0) {
        rv = uv_read_start((uv_stream_t *)&c->relay, conn_alloc,
                           conn_relay_read_cb);
    } else {
        close(sv[0]);
    }
    if (rv != 0) {
        uv_close((uv_handle_t *)app, free_raft_handle);
        conn_fail(c, rv, "relay socket: %s", uv_strerror(rv));
        return;
    }
    uv_timer_stop(&c->timer);
    conn_move(c, CONN_RELAY);
    if (c->inbound_counted) {
        c->inbound_counted = false;
        h->inbound_handshakes--;
    }
    c->relay_counted = true;
    h->stats.relays++;
    peer = c->peer;
    ub_info("route", "%s %s (%s, id %016" PRIx64 ") kind %u group %" PRIu64,
            c->dialer ? "connected to" : "accepted", peer.name, c->remote,
            peer.id, c->kind, c->group);
    if (c->dialer) {
        rt_connect_cb cb = c->cb;
        c->cb = NULL;
        h->stats.dialed++;
        cb(c->arg, 0, &peer, (uv_stream_t *)app);
    } else {
        struct accept_handler ah = h->handlers[c->kind];
        h->stats.accepted++;
        ah.cb(ah.arg, &peer, c->group, (uv_stream_t *)app);
    }
}

/* --- hello ---------------------------------------------------------------*/

static int conn_send_hello(struct rt_connect *c)
{
    struct rt_hub *h = c->hub;
    uint8_t frame[RT_HELLO_MAX];
    struct rt_hello hello;
    int n;

    memset(&hello, 0, sizeof hello);
    hello.kind = c->kind;
    hello.role = c->dialer ? RT_ROLE_DIALER : RT_ROLE_ACCEPTOR;
    hello.group = c->group;
    hello.id = h->id;
    snprintf(hello.name, sizeof hello.name, "%s", h->name);
    snprintf(hello.address, sizeof hello.address, "%s", h->advertise);
    n = rt_hello_encode(&hello, c->exporter, h->secret, h->secret_len, frame,
                        sizeof frame);
    if (n < 0) {
        conn_fail(c, UV_EINVAL, "cannot encode our hello");
        return -1;
    }
    ERR_clear_error();
    if (SSL_write(c->ssl, frame, n) != n) {
        char why[160];
        rt_tls_error(c->ssl, why, sizeof why);
        conn_fail(c, UV_EPROTO, "cannot send our hello: %s", why);
        return -1;
    }
    return conn_flush(c);
}

static void conn_check_hello(struct rt_connect *c)
{
    struct rt_hub *h = c->hub;
    X509 *cert = SSL_get0_peer_certificate(c->ssl);
    uint8_t want_role = c->dialer ? RT_ROLE_ACCEPTOR : RT_ROLE_DIALER;
    struct rt_hello hello;
    const char *why;

    if (rt_hello_decode(c->hello, c->hello_have, c->exporter, h->secret,
                        h->secret_len, &hello, &why) != 0) {
        conn_refuse(c, "%s", why);
        return;
    }
    if (hello.role != want_role) {
        conn_refuse(c, "hello has the wrong role (reflected hello?)");
        return;
    }
    if (!rt_tls_cert_names(cert, hello.name)) {
        char label[80];
        rt_tls_cert_label(cert, label, sizeof label);
        conn_refuse(c,
                    "hello claims node '%s' but its certificate names '%s'",
                    hello.name, label);
        return;
    }
    if (c->dialer) {
        if (c->expect_id != 0 && hello.id != c->expect_id) {
            conn_refuse(c,
                        "peer is node '%s' (id %016" PRIx64
                        "), expected id %016" PRIx64,
                        hello.name, hello.id, c->expect_id);
            return;
        }
        if (hello.kind != c->kind || hello.group != c->group) {
            conn_refuse(c,
                        "peer answered kind %" PRIu32 " group %" PRIu64
                        ", we asked for kind %" PRIu32 " group %" PRIu64,
                        hello.kind, hello.group, c->kind, c->group);
            return;
        }
    } else {
        if (hello.kind == 0 || hello.kind > RT_KIND_MAX ||
            h->handlers[hello.kind].cb == NULL) {
            conn_refuse(c, "node '%s' asked for connection kind %" PRIu32
                           ", which nothing here serves",
                        hello.name, hello.kind);
            return;
        }
        c->kind = hello.kind;
        c->group = hello.group;
    }
    c->peer.id = hello.id;
    snprintf(c->peer.name, sizeof c->peer.name, "%s", hello.name);
    snprintf(c->peer.address, sizeof c->peer.address, "%s", hello.address);
    if (!c->dialer && conn_send_hello(c) != 0) {
        return;
    }
    conn_handover(c);
}

/* Takes hello bytes from data; returns how many it consumed. Stops at the
 * end of the frame, so the rest is application data. */
static size_t conn_feed_hello(struct rt_connect *c, const char *data,
                              size_t len)
{
    size_t used = 0;

    while (used < len && c->state == CONN_HELLO) {
        size_t want = c->hello_need - c->hello_have;
        size_t take = want < len - used ? want : len - used;

        memcpy(c->hello + c->hello_have, data + used, take);
        c->hello_have += take;
        used += take;
        if (c->hello_have < c->hello_need) {
            break;
        }
        if (c->hello_need == RT_HELLO_PREFIX) {
            int total = rt_hello_frame_len(c->hello, c->hello_have);
            if (total <= 0) {
                conn_refuse(c, "malformed hello (magic, version or length)");
                break;
            }
            c->hello_need = (size_t)total;
            continue;
        }
        conn_check_hello(c);
    }
    return used;
}

/* --- TLS -----------------------------------------------------------------*/

/* Decrypts what is available: hello bytes first, then plaintext for the
 * application, until OpenSSL needs more input or backpressure applies. */
static void conn_read_plain(struct rt_connect *c)
{
    struct rt_hub *h = c->hub;

    for (;;) {
        size_t used = 0;
        int n, e;

        if (c->state == CONN_RELAY && c->relay_queued > RELAY_HIGH_WATER) {
            if (!c->tcp_paused) {
                c->tcp_paused = true;
                uv_read_stop((uv_stream_t *)&c->tcp);
            }
            return;
        }
        if (c->state != CONN_HELLO && c->state != CONN_RELAY) {
            return;
        }
        ERR_clear_error();
        n = SSL_read(c->ssl, h->plain_buf, IO_CHUNK);
        if (n > 0) {
            if (c->state == CONN_HELLO) {
                used = conn_feed_hello(c, h->plain_buf, (size_t)n);
            }
            if (c->state == CONN_RELAY && used < (size_t)n) {
                h->stats.bytes_in += (uint64_t)n - used;
                note_heard(h, c->peer.id);
                if (conn_send(c, (uv_stream_t *)&c->relay, &c->relay_queued,
                              h->plain_buf + used, (size_t)n - used) != 0) {
                    return;
                }
            }
            continue;
        }
        e = SSL_get_error(c->ssl, n);
        if (e == SSL_ERROR_WANT_READ) {
            break;
        }
        if (e == SSL_ERROR_ZERO_RETURN) {
            c->peer_done = true; /* close_notify */
            if (c->tcp_open) {
                uv_read_stop((uv_stream_t *)&c->tcp);
            }
            break;
        }
        {
            char why[160];
            rt_tls_error(c->ssl, why, sizeof why);
            if (c->state < CONN_RELAY) {
                conn_refuse(c, "TLS error: %s", why);
            } else {
                ub_info("route", "%s (%s): TLS error: %s", c->remote,
                        c->peer.name, why);
                conn_close(c);
            }
            return;
        }
    }
    if (conn_flush(c) != 0) {
        return;
    }
    if (c->peer_done) {
        conn_peer_finished(c);
    }
}

static int conn_handshake_done(struct rt_connect *c)
{
    X509 *cert = SSL_get0_peer_certificate(c->ssl);

    if (cert == NULL) {
        conn_refuse(c, "peer presented no certificate");
        return -1;
    }
    if (rt_tls_exporter(c->ssl, c->exporter) != 0) {
        conn_refuse(c, "cannot derive the TLS exporter");
        return -1;
    }
    if (c->dialer && c->expect_id != 0 &&
        !rt_tls_cert_has_id(cert, c->expect_id)) {
        char label[80];
        rt_tls_cert_label(cert, label, sizeof label);
        conn_refuse(c, "its certificate names '%s', not node id %016" PRIx64,
                    label, c->expect_id);
        return -1;
    }
    conn_move(c, CONN_HELLO);
    c->hello_have = 0;
    c->hello_need = RT_HELLO_PREFIX;
    if (c->dialer) {
        return conn_send_hello(c);
    }
    return 0;
}

static void conn_drive(struct rt_connect *c)
{
    if (c->state == CONN_HANDSHAKE) {
        int r, e;

        ERR_clear_error();
        r = SSL_do_handshake(c->ssl);
        /* Flush even on failure: the alert tells the peer why. */
        if (conn_flush(c) != 0) {
            return;
        }
        if (r != 1) {
            char why[160];
            e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ && !c->peer_done) {
                return;
            }
            if (e == SSL_ERROR_WANT_READ) {
                snprintf(why, sizeof why,
                         "peer closed the connection (it may have refused "
                         "our certificate; see its log)");
            } else {
                rt_tls_error(c->ssl, why, sizeof why);
            }
            conn_refuse(c, "TLS handshake failed: %s", why);
            return;
        }
        if (conn_handshake_done(c) != 0) {
            return;
        }
    }
    if (c->state == CONN_HELLO || c->state == CONN_RELAY) {
        conn_read_plain(c);
    }
}

static void conn_tcp_read_cb(uv_stream_t *stream, ssize_t nread,
                             const uv_buf_t *buf)
{
    struct rt_connect *c = stream->data;

    if (c->state == CONN_CLOSING || c->state == CONN_DRAINING || nread == 0) {
        return;
    }
    if (nread > 0) {
        if (BIO_write(c->rbio, buf->base, (int)nread) != nread) {
            conn_io_error(c, "buffering TLS input", UV_ENOMEM);
            return;
        }
        conn_drive(c);
        return;
    }
    if (nread == UV_EOF) {
        c->peer_done = true;
        uv_read_stop(stream);
        conn_drive(c); /* ends in conn_peer_finished once drained */
        return;
    }
    conn_io_error(c, "read from peer", (int)nread);
}

static void conn_tls_start(struct rt_connect *c)
{
    int rv;

    ERR_clear_error();
    c->ssl = SSL_new(c->hub->ctx);
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    if (c->ssl == NULL || c->rbio == NULL || c->wbio == NULL) {
        BIO_free(c->rbio);
        BIO_free(c->wbio);
        c->rbio = c->wbio = NULL;
        ERR_clear_error();
        conn_fail(c, UV_ENOMEM, "cannot create a TLS session");
        return;
    }
    BIO_set_mem_eof_return(c->rbio, -1); /* empty means "wait for more" */
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    if (c->dialer) {
        SSL_set_connect_state(c->ssl);
    } else {
        SSL_set_accept_state(c->ssl);
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_tcp_keepalive(&c->tcp, 1, KEEPALIVE_DELAY_S);
    rv = uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_tcp_read_cb);
    if (rv != 0) {
        conn_fail(c, rv, "read: %s", uv_strerror(rv));
        return;
    }
    conn_move(c, CONN_HANDSHAKE);
    conn_drive(c);
}

/* --- dialing -------------------------------------------------------------*/

static void conn_tcp_retry_closed(uv_handle_t *handle)
{
    struct rt_connect *c = handle->data;

    c->open_handles--;
    if (c->state == CONN_CLOSING) {
        conn_maybe_destroy(c);
        return;
    }
    conn_connect_next(c);
}

static void conn_connect_cb(uv_connect_t *req, int status)
{
    struct rt_connect *c = req->data;

    if (c->state == CONN_CLOSING) {
        return;
    }
    if (status < 0) {
        c->last_connect_error = status;
        ub_debug("route", "%s: connect: %s", c->remote, uv_strerror(status));
        if (c->next_addr != NULL) {
            c->tcp_open = false;
            uv_close((uv_handle_t *)&c->tcp, conn_tcp_retry_closed);
        } else {
            conn_fail(c, status, "connect: %s", uv_strerror(status));
        }
        return;
    }
    conn_tls_start(c);
}

static void conn_connect_next(struct rt_connect *c)
{
    struct rt_hub *h = c->hub;
    struct addrinfo *ai = c->next_addr;
    int rv;

    while (ai != NULL && ai->ai_family != AF_INET &&
           ai->ai_family != AF_INET6) {
        ai = ai->ai_next;
    }
    if (ai == NULL) {
        int status = c->last_connect_error != 0 ? c->last_connect_error
                                                : UV_EHOSTUNREACH;
        conn_fail(c, status, "connect: %s", uv_strerror(status));
        return;
    }
    c->next_addr = ai->ai_next;
    conn_move(c, CONN_CONNECTING);
    uv_tcp_init(h->loop, &c->tcp);
    c->tcp.data = c;
    c->tcp_open = true;
    c->open_handles++;
    c->connect_req.data = c;
    rv = uv_tcp_connect(&c->connect_req, &c->tcp, ai->ai_addr,
                        conn_connect_cb);
    if (rv != 0) {
        /* Report it the same way as an asynchronous failure. */
        c->last_connect_error = rv;
        if (c->next_addr != NULL) {
            c->tcp_open = false;
            uv_close((uv_handle_t *)&c->tcp, conn_tcp_retry_closed);
        } else {
            conn_fail(c, rv, "connect: %s", uv_strerror(rv));
        }
    }
}

static void conn_gai_cb(uv_getaddrinfo_t *req, int status,
                        struct addrinfo *res)
{
    struct rt_connect *c = req->data;

    c->gai_pending = false;
    if (c->state == CONN_CLOSING) {
        if (res != NULL) {
            uv_freeaddrinfo(res);
        }
        conn_maybe_destroy(c);
        return;
    }
    if (status < 0) {
        conn_fail(c, status, "cannot resolve '%s': %s", c->host,
                  uv_strerror(status));
        return;
    }
    c->addrs = res;
    c->next_addr = res;
    conn_connect_next(c);
}

/* Splits "host:port" or "[v6]:port". Returns 0 or UV_EINVAL. */
static int split_address(const char *address, char *host, size_t hostlen,
                         char *port, size_t portlen)
{
    const char *p, *colon;
    size_t n;
    long v;
    char *end;

    if (address == NULL || !rt_address_valid(address)) {
        return UV_EINVAL;
    }
    if (address[0] == '[') {
        p = strchr(address, ']');
        if (p == NULL || p[1] != ':') {
            return UV_EINVAL;
        }
        n = (size_t)(p - address - 1);
        address++;
        colon = p + 1;
    } else {
        colon = strrchr(address, ':');
        if (colon == NULL) {
            return UV_EINVAL;
        }
        n = (size_t)(colon - address);
        if (memchr(address, ':', n) != NULL) {
            return UV_EINVAL; /* bare IPv6 needs brackets */
        }
    }
    if (n == 0 || n >= hostlen) {
        return UV_EINVAL;
    }
    memcpy(host, address, n);
    host[n] = '\0';
    errno = 0;
    v = strtol(colon + 1, &end, 10);
    if (colon[1] < '0' || colon[1] > '9' || *end != '\0' || errno != 0 ||
        v < 1 || v > 65535) {
        return UV_EINVAL;
    }
    snprintf(port, portlen, "%ld", v);
    return 0;
}

int rt_hub_connect(struct rt_hub *h, const char *address, uint64_t expect_id,
                   uint32_t kind, uint64_t group, rt_connect_cb cb, void *arg,
                   struct rt_connect **out)
{
    struct addrinfo hints;
    struct rt_connect *c;
    char host[RT_ADDRESS_MAX + 1];
    char port[8];
    int rv;

    if (h == NULL || cb == NULL || kind == 0 || kind > RT_KIND_MAX) {
        return UV_EINVAL;
    }
    if (h->closing) {
        return UV_ECANCELED;
    }
    rv = split_address(address, host, sizeof host, port, sizeof port);
    if (rv != 0) {
        ub_warn("route", "cannot dial '%s': not a host:port address",
                address != NULL ? address : "(null)");
        return rv;
    }
    c = conn_new(h, true);
    if (c == NULL) {
        return UV_ENOMEM;
    }
    c->kind = kind;
    c->group = group;
    c->expect_id = expect_id;
    snprintf(c->remote, sizeof c->remote, "%s", address);
    snprintf(c->host, sizeof c->host, "%s", host);
    snprintf(c->port, sizeof c->port, "%s", port);
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    hints.ai_flags = AI_NUMERICSERV;
    c->gai.data = c;
    rv = uv_getaddrinfo(h->loop, &c->gai, conn_gai_cb, c->host, c->port,
                        &hints);
    if (rv != 0) {
        conn_close(c); /* cb is NULL: nothing fires */
        return rv;
    }
    c->gai_pending = true;
    c->cb = cb;
    c->arg = arg;
    uv_timer_start(&c->timer, conn_timeout_cb, h->timeout_ms, 0);
    if (out != NULL) {
        *out = c;
    }
    return 0;
}

void rt_connect_cancel(struct rt_connect *c)
{
    if (c == NULL || c->cb == NULL) {
        return;
    }
    c->status = UV_ECANCELED;
    conn_close(c);
}

/* --- listening -----------------------------------------------------------*/

static void format_sockaddr(const struct sockaddr *sa, char *buf, size_t len)
{
    char ip[64] = "?";
    int port = 0;

    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        uv_ip4_name(in, ip, sizeof ip);
        port = ntohs(in->sin_port);
        snprintf(buf, len, "%s:%d", ip, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        uv_ip6_name(in6, ip, sizeof ip);
        port = ntohs(in6->sin6_port);
        snprintf(buf, len, "[%s]:%d", ip, port);
    } else {
        snprintf(buf, len, "?");
    }
}

static void hub_on_connection(uv_stream_t *server, int status)
{
    struct rt_hub *h = server->data;
    struct sockaddr_storage ss;
    int sslen = sizeof ss;
    struct rt_connect *c;

    if (status < 0) {
        ub_warn("route", "accept on the route port failed: %s",
                uv_strerror(status));
        return;
    }
    if (h->closing) {
        return;
    }
    c = conn_new(h, false);
    if (c == NULL) {
        ub_error("route", "out of memory accepting a route connection");
        return;
    }
    uv_tcp_init(h->loop, &c->tcp);
    c->tcp.data = c;
    c->tcp_open = true;
    c->open_handles++;
    snprintf(c->remote, sizeof c->remote, "?");
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sslen) == 0) {
        format_sockaddr((struct sockaddr *)&ss, c->remote, sizeof c->remote);
    }
    if (h->inbound_handshakes >= MAX_INBOUND_HANDSHAKES) {
        conn_note(c, "dropped route connection from",
                  "too many connections in handshake");
        conn_close(c);
        return;
    }
    h->inbound_handshakes++;
    c->inbound_counted = true;
    uv_timer_start(&c->timer, conn_timeout_cb, h->timeout_ms, 0);
    conn_tls_start(c);
}

static void hub_handle_closed(uv_handle_t *handle)
{
    struct rt_hub *h = handle->data;

    h->open_handles--;
    hub_maybe_finish(h);
}

int rt_hub_listen(struct rt_hub *h, char *err, size_t errlen)
{
    const char *host = h->listen_host[0] != '\0' ? h->listen_host : "0.0.0.0";
    struct sockaddr_storage ss;
    int sslen = sizeof ss;
    bool v6;
    int rv;

    if (h->closing || h->listener_open) {
        snprintf(err, errlen, "route hub is closing or already listening");
        return UV_EINVAL;
    }
    if (strcmp(host, "localhost") == 0) {
        host = "127.0.0.1";
    }
    v6 = strchr(host, ':') != NULL;
    memset(&ss, 0, sizeof ss);
    rv = v6 ? uv_ip6_addr(host, h->port, (struct sockaddr_in6 *)&ss)
            : uv_ip4_addr(host, h->port, (struct sockaddr_in *)&ss);
    if (rv != 0) {
        snprintf(err, errlen,
                 "route listen address '%s' must be an IP address", host);
        return rv;
    }
    uv_tcp_init(h->loop, &h->listener);
    h->listener.data = h;
    h->listener_open = true;
    h->open_handles++;
    rv = uv_tcp_bind(&h->listener, (struct sockaddr *)&ss, 0);
    if (rv == 0) {
        rv = uv_listen((uv_stream_t *)&h->listener, LISTEN_BACKLOG,
                       hub_on_connection);
    }
    if (rv == 0) {
        rv = uv_tcp_getsockname(&h->listener, (struct sockaddr *)&ss, &sslen);
    }
    if (rv != 0) {
        snprintf(err, errlen, "cannot listen on %s%s%s:%d for routes: %s",
                 v6 ? "[" : "", host, v6 ? "]" : "", h->port,
                 uv_strerror(rv));
        h->listener_open = false;
        uv_close((uv_handle_t *)&h->listener, hub_handle_closed);
        return rv;
    }
    h->port = ntohs(ss.ss_family == AF_INET6
                        ? ((struct sockaddr_in6 *)&ss)->sin6_port
                        : ((struct sockaddr_in *)&ss)->sin_port);
    if (h->advertise[0] == '\0') {
        bool wildcard = strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0;
        if (wildcard) {
            snprintf(h->advertise, sizeof h->advertise, "%s:%d", h->name,
                     h->port);
        } else {
            fmt(h->advertise, sizeof h->advertise, "%s%s%s:%d",
                v6 ? "[" : "", host, v6 ? "]" : "", h->port);
        }
    }
    ub_info("route", "listening for routes on %s%s%s:%d (advertised as %s)",
            v6 ? "[" : "", host, v6 ? "]" : "", h->port, h->advertise);
    return 0;
}

/* --- hub -----------------------------------------------------------------*/

int rt_hub_create(uv_loop_t *loop, const struct rt_hub_config *cfg,
                  struct rt_hub **out, char *err, size_t errlen)
{
    struct sigaction sa;
    struct rt_hub *h;
    SSL_CTX *ctx;

    if (cfg == NULL || !rt_name_valid(cfg->name)) {
        snprintf(err, errlen,
                 "invalid node name '%s' (1-63 characters of "
                 "[A-Za-z0-9._-], starting with a letter or digit)",
                 cfg != NULL && cfg->name != NULL ? cfg->name : "");
        return UV_EINVAL;
    }
    if (cfg->secret == NULL || cfg->secret_len < SECRET_MIN ||
        cfg->secret_len > SECRET_MAX) {
        snprintf(err, errlen,
                 "the cluster secret is missing or not %d to %d bytes long "
                 "(--cluster-pass-file or UNIBUS_CLUSTER_PASS)",
                 SECRET_MIN, SECRET_MAX);
        return UV_EINVAL;
    }
    if (cfg->advertise != NULL &&
        (!rt_address_valid(cfg->advertise) ||
         strchr(cfg->advertise, ':') == NULL)) {
        snprintf(err, errlen, "advertised route address '%s' is not host:port",
                 cfg->advertise);
        return UV_EINVAL;
    }
    if (cfg->listen_host != NULL &&
        strlen(cfg->listen_host) > RT_ADDRESS_MAX) {
        snprintf(err, errlen, "route listen host is too long");
        return UV_EINVAL;
    }
    if (cfg->listen_port < 0 || cfg->listen_port > 65535) {
        snprintf(err, errlen, "route port %d is out of range",
                 cfg->listen_port);
        return UV_EINVAL;
    }
    ctx = rt_tls_ctx_create(cfg->cert_file, cfg->key_file, cfg->ca_file,
                            cfg->name, err, errlen);
    if (ctx == NULL) {
        return UV_EINVAL;
    }
    h = calloc(1, sizeof *h);
    if (h == NULL) {
        SSL_CTX_free(ctx);
        snprintf(err, errlen, "out of memory");
        return UV_ENOMEM;
    }
    h->secret = OPENSSL_malloc(cfg->secret_len);
    if (h->secret == NULL) {
        SSL_CTX_free(ctx);
        free(h);
        snprintf(err, errlen, "out of memory");
        return UV_ENOMEM;
    }
    memcpy(h->secret, cfg->secret, cfg->secret_len);
    h->secret_len = cfg->secret_len;
    h->loop = loop;
    h->ctx = ctx;
    snprintf(h->name, sizeof h->name, "%s", cfg->name);
    h->id = rt_node_id(cfg->name);
    snprintf(h->listen_host, sizeof h->listen_host, "%s",
             cfg->listen_host != NULL ? cfg->listen_host : "");
    h->port = cfg->listen_port;
    snprintf(h->advertise, sizeof h->advertise, "%s",
             cfg->advertise != NULL ? cfg->advertise : "");
    h->timeout_ms = cfg->timeout_ms != 0 ? cfg->timeout_ms
                                         : RT_DEFAULT_TIMEOUT_MS;
    uv_timer_init(loop, &h->anchor);
    h->anchor.data = h;
    h->open_handles = 1;

    /* A peer closing its socket must not kill the process. */
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
        signal(SIGPIPE, SIG_IGN);
    }
    *out = h;
    return 0;
}

void rt_hub_set_accept(struct rt_hub *h, uint32_t kind, rt_accept_cb cb,
                       void *arg)
{
    if (kind == 0 || kind > RT_KIND_MAX) {
        return;
    }
    h->handlers[kind].cb = cb;
    h->handlers[kind].arg = cb != NULL ? arg : NULL;
}

void rt_hub_get_accept(const struct rt_hub *h, uint32_t kind, rt_accept_cb *cb,
                       void **arg)
{
    *cb = NULL;
    *arg = NULL;
    if (kind == 0 || kind > RT_KIND_MAX) {
        return;
    }
    *cb = h->handlers[kind].cb;
    *arg = h->handlers[kind].arg;
}

void rt_hub_close(struct rt_hub *h, void (*cb)(void *arg), void *arg)
{
    struct rt_connect *c;

    if (h->closing) {
        return;
    }
    h->closing = true;
    h->close_cb = cb;
    h->close_arg = arg;
    if (h->listener_open) {
        h->listener_open = false;
        uv_close((uv_handle_t *)&h->listener, hub_handle_closed);
    }
    uv_close((uv_handle_t *)&h->anchor, hub_handle_closed);
    for (c = h->conns; c != NULL; c = c->next) {
        if (c->cb != NULL) {
            c->status = UV_ECANCELED;
        }
        conn_close(c);
    }
}

const char *rt_hub_advertise(const struct rt_hub *h)
{
    return h->advertise;
}

int rt_hub_port(const struct rt_hub *h)
{
    return h->port;
}

const char *rt_hub_name(const struct rt_hub *h)
{
    return h->name;
}

uint64_t rt_hub_id(const struct rt_hub *h)
{
    return h->id;
}

uv_loop_t *rt_hub_loop(const struct rt_hub *h)
{
    return h->loop;
}

void rt_hub_get_stats(const struct rt_hub *h, struct rt_hub_stats *out)
{
    *out = h->stats;
}
