/* The bus server (bus.h): client connections, the NATS protocol around
 * proto.h, authentication, ACL and local delivery.
 *
 * Output path: a delivery appends the MSG/HMSG bytes to the receiving
 * connection's `out` buffer and queues the connection for a flush; one
 * uv_prepare callback per loop iteration flushes every queued connection
 * with uv_try_write, handing only what the socket did not take to an
 * asynchronous uv_write. So a read of a few hundred PUBs turns into one
 * write per subscriber, and a slow reader never blocks the loop: its bytes
 * pile up in its own buffer until max_pending, where it is cut off.
 *
 * TLS: OpenSSL over memory BIOs. `out` holds plaintext; at flush time it is
 * encrypted into `net`, the raw queue every TLS connection writes from (the
 * plaintext INFO and the handshake records go there too). */
#include "bus/bus.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/nkey.h"
#include "bus/acl.h"
#include "bus/directory.h"
#include "bus/internal.h"
#include "bus/proto.h"
#include "bus/sublist.h"
#include "lib/config.h"
#include "lib/log.h"

#define BUS_VERSION "2.10.22" /* the NATS server version clients gate on */
#define READ_BUF (64 * 1024)
#define MAX_GRANTS 256          /* response grants kept per connection */
#define GRANT_TTL_MS (2 * 60 * 1000)
#define TICK_MS 250
/* Publisher stalls (flow control): a publisher whose messages pushed a
 * subscriber that is draining past STALL_BYTES pending stops being read
 * until that subscriber is below STALL_RESUME, for at most STALL_MAX_MS.
 * A subscriber that made no write progress for STALL_STUCK_MS stalls
 * nobody: it is stuck, fills up and is cut off as a slow consumer alone. */
#define STALL_BYTES (1u << 20)
#define STALL_RESUME (256u << 10)
#define STALL_MAX_MS 250
#define STALL_STUCK_MS 50
#define STALL_CHECK_MS 2

struct bbuf {
    char *p;
    size_t len, cap;
};

enum cstate {
    C_TLS,     /* TLS handshake running */
    C_CONNECT, /* INFO sent, waiting for CONNECT */
    C_OPEN,
    C_CLOSING,
};

struct bsub;

struct grant { /* one response allowed to a request's reply subject */
    char *subject;
    size_t len;
    uint64_t expires;
};

struct bconn {
    uv_tcp_t tcp;
    struct bus *b;
    struct bconn *prev, *next;  /* all connections */
    struct bconn *flush_next;   /* queued for the next flush */
    bool queued;
    uint64_t cid;
    char ip[64];
    int port;
    enum cstate state;
    bool verbose, pedantic, echo, headers, no_responders;
    bool authed;  /* an identity was proven (nkey) */
    char upub[NKEY_PUB_SIZE];
    char nonce[24];
    struct bacl acl;
    struct bp_parser *parser;
    struct bbuf out;   /* plaintext waiting for the next flush */
    struct bbuf net;   /* TLS only: ciphertext waiting */
    struct bbuf wbuf;  /* bytes handed to uv_write */
    bool writing;
    uv_write_t wreq;
    uint64_t write_started;
    SSL *ssl;
    BIO *rbio, *wbio;
    uint64_t started, last_ping;
    unsigned pings_out;
    struct bsub **sids; /* hash sid -> subscription, chained */
    size_t sid_cap, nsubs;
    struct grant *grants;
    size_t n_grants;
    bool warned; /* warn mode: violation logged once per connection */
    uint64_t last_progress;     /* uv_now() when its socket last took bytes */
    struct bconn *stall_target; /* subscriber this publisher waits for */
    bool stall_pending;         /* stall after the current read */
    bool stalled;               /* reads paused (on the bus's stalled list) */
    uint64_t stall_start;
    struct bconn *stall_next;
};

struct bsub {
    struct bsub *next; /* sid chain; once dead, the bus's dead list */
    struct bconn *c;
    char *subject;
    size_t subject_len;
    char *queue; /* NULL when none */
    size_t queue_len;
    char *sid;
    size_t sid_len;
    int64_t max;       /* auto-unsubscribe after this many, 0 = never */
    int64_t delivered;
    bool dead;         /* removed while a delivery loop ran */
};

struct bus {
    uv_loop_t *loop;
    struct bus_config cfg;
    char *listen, *name; /* owned copies */
    char host[256];
    int port;
    uv_tcp_t listener;
    uv_prepare_t flusher;
    uv_timer_t tick;
    uv_timer_t stall_timer;
    struct bconn *stalled; /* publishers whose reads are paused */
    SSL_CTX *tls;
    struct sl_index *index;
    struct bdir *dir;
    struct brt *routes;
    struct bsys *sys;
    struct bconn *conns;
    struct bconn *flush_head;
    uint64_t next_cid;
    char server_id[NKEY_PUB_SIZE];
    struct bus_stats st;
    uint8_t rbuf[READ_BUF];
    uint8_t tbuf[READ_BUF];
    struct bsub *dead; /* removed during a walk, unindexed at its end */
    int delivering;
    /* shutdown */
    bool closing;
    unsigned open_handles;
    void (*close_cb)(void *arg);
    void *close_arg;
};

static void conn_close(struct bconn *c, const char *err);
static void conn_flush(struct bconn *c);
static void check_stalls(struct bus *b);
static void on_stall_timer(uv_timer_t *t);
static void unstall(struct bconn *c);
static void queue_flush(struct bconn *c);

/* ------------------------------------------------------------------ */
/* Buffers */

static int buf_reserve(struct bbuf *b, size_t more)
{
    size_t need = b->len + more, cap;
    char *p;
    if (need <= b->cap) {
        return 0;
    }
    cap = b->cap ? b->cap : 4096;
    while (cap < need) {
        cap *= 2;
    }
    p = realloc(b->p, cap);
    if (p == NULL) {
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static int buf_add(struct bbuf *b, const void *data, size_t len)
{
    if (buf_reserve(b, len) != 0) {
        return -1;
    }
    memcpy(b->p + b->len, data, len);
    b->len += len;
    return 0;
}

static void buf_free(struct bbuf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* Decimal digits of v into p (no NUL); returns the count. */
static size_t put_u64(char *p, uint64_t v)
{
    char tmp[24];
    size_t n = 0, i;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (i = 0; i < n; i++) {
        p[i] = tmp[n - 1 - i];
    }
    return n;
}

static size_t pending_bytes(const struct bconn *c)
{
    return c->out.len + c->net.len + c->wbuf.len;
}

/* Cuts c off: nats-server sends no -ERR to a slow consumer either. */
static void slow_consumer(struct bconn *c)
{
    c->b->st.slow_consumers++;
    ub_warn("bus", "client %llu (%s:%d): slow consumer, %zu bytes pending; "
                   "closing it",
            (unsigned long long)c->cid, c->ip, c->port, pending_bytes(c));
    conn_close(c, NULL);
}

/* Queues protocol bytes for c; cuts it off as a slow consumer when its
 * pending bytes pass the limit. Returns 0, or -1 when c is closing. */
static int conn_send(struct bconn *c, const void *data, size_t len)
{
    if (c->state == C_CLOSING) {
        return -1;
    }
    if (pending_bytes(c) + len > c->b->cfg.max_pending) {
        slow_consumer(c);
        return -1;
    }
    if (buf_add(&c->out, data, len) != 0) {
        conn_close(c, NULL);
        return -1;
    }
    queue_flush(c);
    return 0;
}

static int conn_sendz(struct bconn *c, const char *s)
{
    return conn_send(c, s, strlen(s));
}

static void send_err(struct bconn *c, const char *text)
{
    char line[1200];
    int n = snprintf(line, sizeof line, "-ERR '%s'\r\n", text);
    if (n > 0 && (size_t)n < sizeof line) {
        conn_send(c, line, (size_t)n);
    }
}

static void send_ok(struct bconn *c)
{
    if (c->verbose) {
        conn_send(c, "+OK\r\n", 5);
    }
}

/* ------------------------------------------------------------------ */
/* Subscriptions of a connection: sid hash table. */

static struct bsub **sid_slot(struct bconn *c, const char *sid, size_t len)
{
    struct bsub **p = &c->sids[sl_hash(sid, len) & (c->sid_cap - 1)];
    while (*p && !((*p)->sid_len == len && memcmp((*p)->sid, sid, len) == 0)) {
        p = &(*p)->next;
    }
    return p;
}

static int sid_grow(struct bconn *c)
{
    size_t ncap = c->sid_cap ? c->sid_cap * 2 : 16;
    struct bsub **nt = calloc(ncap, sizeof *nt);
    if (nt == NULL) {
        return -1;
    }
    for (size_t i = 0; i < c->sid_cap; i++) {
        struct bsub *s = c->sids[i];
        while (s) {
            struct bsub *next = s->next;
            size_t k = sl_hash(s->sid, s->sid_len) & (ncap - 1);
            s->next = nt[k];
            nt[k] = s;
            s = next;
        }
    }
    free(c->sids);
    c->sids = nt;
    c->sid_cap = ncap;
    return 0;
}

static void sub_free(struct bsub *s)
{
    free(s->subject);
    free(s->queue);
    free(s->sid);
    free(s);
}

/* Leaves the index (and the routes' interest) and frees s. */
static void sub_unindex(struct bus *b, struct bsub *s)
{
    sl_remove(b->index, s->subject, s->subject_len, s->queue, s->queue_len, s);
    if (b->routes) {
        brt_interest(b->routes, s->subject, s->subject_len, s->queue,
                     s->queue_len, -1);
    }
    sub_free(s);
}

/* Takes s out of its connection's table and the index. While a match
 * result of the index is being walked (b->delivering), the index must not
 * change: s is only marked dead, and leaves the index when the walk ends. */
static void sub_remove(struct bsub *s)
{
    struct bconn *c = s->c;
    struct bus *b = c->b;
    struct bsub **p = sid_slot(c, s->sid, s->sid_len);
    if (*p == s) {
        *p = s->next;
    }
    c->nsubs--;
    b->st.subs--;
    if (b->delivering) {
        s->dead = true;
        s->next = b->dead; /* out of the sid table: the link is free */
        b->dead = s;
    } else {
        sub_unindex(b, s);
    }
}

static void walk_begin(struct bus *b)
{
    b->delivering++;
}

static void walk_end(struct bus *b)
{
    if (--b->delivering == 0) {
        while (b->dead) {
            struct bsub *s = b->dead;
            b->dead = s->next;
            sub_unindex(b, s);
        }
    }
}

static void conn_drop_subs(struct bconn *c)
{
    for (size_t i = 0; i < c->sid_cap; i++) {
        while (c->sids[i]) {
            sub_remove(c->sids[i]);
        }
    }
    free(c->sids);
    c->sids = NULL;
    c->sid_cap = 0;
}

/* ------------------------------------------------------------------ */
/* Delivery */

/* Appends MSG or HMSG for m on subscription s. */
static void deliver(struct bsub *s, const struct bmsg *m)
{
    struct bconn *c = s->c;
    struct bus *b = c->b;
    bool hdr = m->hdr_len > 0 && c->headers;
    size_t body_off = hdr ? 0 : m->hdr_len; /* strip headers for old clients */
    size_t body = m->total_len - body_off;
    size_t need = 5 + m->subject_len + 1 + s->sid_len + 1 + m->reply_len + 1 +
                  2 * 21 + 2 + body + 2;
    char *p;

    if (s->dead || c->state != C_OPEN) {
        return;
    }
    if (pending_bytes(c) + need > b->cfg.max_pending) {
        slow_consumer(c);
        return;
    }
    if (buf_reserve(&c->out, need) != 0) {
        conn_close(c, NULL);
        return;
    }
    p = c->out.p + c->out.len;
    if (hdr) {
        memcpy(p, "HMSG ", 5);
    } else {
        memcpy(p, "MSG ", 4);
        p--;
    }
    p += 5;
    memcpy(p, m->subject, m->subject_len);
    p += m->subject_len;
    *p++ = ' ';
    memcpy(p, s->sid, s->sid_len);
    p += s->sid_len;
    *p++ = ' ';
    if (m->reply) {
        memcpy(p, m->reply, m->reply_len);
        p += m->reply_len;
        *p++ = ' ';
    }
    if (hdr) {
        p += put_u64(p, m->hdr_len);
        *p++ = ' ';
    }
    p += put_u64(p, body);
    *p++ = '\r';
    *p++ = '\n';
    memcpy(p, m->data + body_off, body);
    p += body;
    *p++ = '\r';
    *p++ = '\n';
    c->out.len = (size_t)(p - c->out.p);
    b->st.msgs_out++;
    b->st.bytes_out += body; /* headers and payload (headers stripped for
                                clients without header support) */
    queue_flush(c);

    /* A member that receives a request may answer it once. */
    if (m->reply && !c->acl.all &&
        !bacl_can_publish(&c->acl, m->reply, m->reply_len)) {
        struct grant *g;
        if (c->n_grants == MAX_GRANTS) {
            free(c->grants[0].subject);
            memmove(c->grants, c->grants + 1,
                    (MAX_GRANTS - 1) * sizeof *c->grants);
            c->n_grants--;
        }
        if (c->grants == NULL) {
            c->grants = calloc(MAX_GRANTS, sizeof *c->grants);
        }
        if (c->grants != NULL) {
            g = &c->grants[c->n_grants];
            g->subject = malloc(m->reply_len);
            if (g->subject != NULL) {
                memcpy(g->subject, m->reply, m->reply_len);
                g->len = m->reply_len;
                g->expires = uv_now(b->loop) + GRANT_TTL_MS;
                c->n_grants++;
            }
        }
    }
    if (s->max > 0 && ++s->delivered >= s->max) {
        sub_remove(s);
    } else if (s->max == 0) {
        s->delivered++;
    }
}

/* Flow control: from's last message left subscriber c far behind. Only a
 * subscriber that is draining counts (see STALL_*). */
static void maybe_stall(struct bconn *from, struct bconn *c)
{
    if (from != NULL && from != c && c->state == C_OPEN &&
        pending_bytes(c) > STALL_BYTES &&
        uv_now(c->b->loop) - c->last_progress < STALL_STUCK_MS) {
        from->stall_pending = true;
        from->stall_target = c;
    }
}

/* Local delivery of m published by `from` (NULL: from a route). Plain
 * subscribers all get it; each queue group one member, except the groups
 * not listed in only_queues when it is given (messages from routes).
 * served_queues (may be NULL) collects the queue groups served here. */
static size_t deliver_local(struct bus *b, struct bconn *from,
                            const struct bmsg *m, const char *const *only,
                            const size_t *only_lens, size_t n_only,
                            const char **served, size_t *served_lens,
                            size_t *n_served, size_t served_cap)
{
    const struct sl_result *r = sl_match(b->index, m->subject, m->subject_len);
    size_t n = 0, i, j;
    if (r == NULL) {
        return 0;
    }
    for (i = 0; i < r->n; i++) {
        struct bsub *s = r->subs[i];
        if (s->c == from && !from->echo) {
            continue;
        }
        deliver(s, m);
        maybe_stall(from, s->c);
        n++;
    }
    for (i = 0; i < r->ngroups; i++) {
        const struct sl_group *g = &r->groups[i];
        size_t start, k;
        if (only != NULL) {
            bool listed = false;
            for (j = 0; j < n_only && !listed; j++) {
                listed = only_lens[j] == g->queue_len &&
                         memcmp(only[j], g->queue, g->queue_len) == 0;
            }
            if (!listed) {
                continue;
            }
        }
        if (g->n == 0) {
            continue;
        }
        start = (size_t)rand() % g->n;
        for (k = 0; k < g->n; k++) {
            struct bsub *s = g->subs[(start + k) % g->n];
            if ((s->c == from && !from->echo) || s->dead ||
                s->c->state != C_OPEN) {
                continue;
            }
            deliver(s, m);
            maybe_stall(from, s->c);
            n++;
            if (served != NULL && *n_served < served_cap) {
                served[*n_served] = g->queue;
                served_lens[*n_served] = g->queue_len;
                (*n_served)++;
            }
            break;
        }
    }
    return n;
}

void bus_publish_internal(struct bus *b, const char *subject, size_t len,
                          const void *data, size_t dlen)
{
    const char *served[64];
    size_t served_lens[64], n_served = 0;
    struct bmsg m = {subject, len, NULL, 0, data, 0, dlen};
    walk_begin(b);
    deliver_local(b, NULL, &m, NULL, NULL, 0, served, served_lens, &n_served,
                  64);
    if (b->routes) {
        b->st.route_msgs_out +=
            brt_publish(b->routes, &m, served, served_lens, n_served);
    }
    walk_end(b);
}

size_t bus_deliver_remote(struct bus *b, const struct bmsg *m,
                          const char *const *queues, const size_t *queue_lens,
                          size_t nq)
{
    static const char *none[1];
    static const size_t none_len[1];
    size_t n;
    b->st.route_msgs_in++;
    walk_begin(b);
    n = deliver_local(b, NULL, m, nq ? queues : none,
                      nq ? queue_lens : none_len, nq, NULL, NULL, NULL, 0);
    walk_end(b);
    return n;
}

/* The 503 a requester gets when nothing received its request
 * (NATS_WIRE.md 2): on its own subscription matching the reply subject. */
static void no_responders(struct bconn *c, const struct bmsg *m)
{
    const struct sl_result *r;
    struct bsub *mine = NULL;
    size_t i, j;
    char head[2600];
    int n, hl;

    r = sl_match(c->b->index, m->reply, m->reply_len);
    for (i = 0; r && i < r->n && !mine; i++) {
        struct bsub *s = r->subs[i];
        if (s->c == c) {
            mine = s;
        }
    }
    for (i = 0; r && i < r->ngroups && !mine; i++) {
        for (j = 0; j < r->groups[i].n && !mine; j++) {
            struct bsub *s = r->groups[i].subs[j];
            if (s->c == c) {
                mine = s;
            }
        }
    }
    if (mine == NULL || m->subject_len > 1024) {
        return;
    }
    hl = (int)(32 + m->subject_len);
    n = snprintf(head, sizeof head,
                 "HMSG %.*s %.*s %d %d\r\nNATS/1.0 503\r\nNats-Subject: %.*s"
                 "\r\n\r\n\r\n",
                 (int)m->reply_len, m->reply, (int)mine->sid_len, mine->sid,
                 hl, hl, (int)m->subject_len, m->subject);
    if (n > 0 && (size_t)n < sizeof head) {
        conn_send(c, head, (size_t)n);
    }
}

/* ------------------------------------------------------------------ */
/* Permissions */

/* what: "Publish to", "Publish with Reply of" or "Subscription to". */
static void violation(struct bconn *c, const char *what, const char *a,
                      size_t alen, const char *q, size_t qlen)
{
    char text[1200];
    if (q != NULL) {
        snprintf(text, sizeof text,
                 "Permissions Violation for %s \"%.*s\" using queue \"%.*s\"",
                 what, (int)alen, a, (int)qlen, q);
    } else {
        snprintf(text, sizeof text, "Permissions Violation for %s \"%.*s\"",
                 what, (int)alen, a);
    }
    c->b->st.permission_denials++;
    if (c->b->cfg.auth == BUS_AUTH_WARN) {
        if (!c->warned) {
            ub_warn("bus", "client %llu (%s): %s (allowed: --bus-auth warn)",
                    (unsigned long long)c->cid,
                    c->acl.handle[0] ? c->acl.handle : "anonymous", text);
            c->warned = true;
        }
        return;
    }
    send_err(c, text);
}

static bool warn_mode(const struct bconn *c)
{
    return c->b->cfg.auth == BUS_AUTH_WARN;
}

static bool use_grant(struct bconn *c, const char *subj, size_t len)
{
    uint64_t now = uv_now(c->b->loop);
    for (size_t i = 0; i < c->n_grants; i++) {
        struct grant *g = &c->grants[i];
        if (g->expires >= now && g->len == len &&
            memcmp(g->subject, subj, len) == 0) {
            free(g->subject);
            memmove(g, g + 1, (c->n_grants - i - 1) * sizeof *g);
            c->n_grants--;
            return true;
        }
    }
    return false;
}

/* Loads the member's rights from the directory. -1 when it is no longer a
 * member (or its key changed). */
static int load_rights(struct bconn *c)
{
    bool admin = false;
    char **rooms = NULL;
    size_t n = 0;
    if (bdir_check_member(c->b->dir, c->acl.handle, c->upub, &admin) != 0) {
        return -1;
    }
    if (!admin && bdir_rooms_of(c->b->dir, c->acl.handle, &rooms, &n) != 0) {
        return -1;
    }
    bdir_rooms_free(c->acl.rooms, c->acl.n_rooms);
    c->acl.rooms = rooms;
    c->acl.n_rooms = n;
    c->acl.all = admin;
    return 0;
}

/* The directory says handle's rights may have changed (NULL: anyone's). */
static void on_directory(void *arg, const char *handle)
{
    struct bus *b = arg;
    struct bconn *c, *next;
    for (c = b->conns; c; c = next) {
        next = c->next;
        if (!c->authed || c->state != C_OPEN ||
            (handle && strcmp(handle, c->acl.handle) != 0)) {
            continue;
        }
        if (load_rights(c) != 0) {
            if (b->cfg.auth == BUS_AUTH_ENFORCE) {
                ub_info("bus", "client %llu: member %s was removed; "
                               "disconnecting",
                        (unsigned long long)c->cid, c->acl.handle);
                conn_close(c, "Authorization Violation");
            } else {
                ub_warn("bus", "client %llu: member %s was removed; kept "
                               "connected (--bus-auth warn)",
                        (unsigned long long)c->cid, c->acl.handle);
            }
            continue;
        }
        if (b->cfg.auth != BUS_AUTH_ENFORCE || c->acl.all) {
            continue;
        }
        /* Subscriptions the member may no longer hold go, with the NATS
         * permissions error for each. */
        for (size_t i = 0; i < c->sid_cap && c->state == C_OPEN; i++) {
            struct bsub *s = c->sids[i];
            while (s) {
                struct bsub *sn = s->next;
                if (!bacl_can_subscribe(&c->acl, s->subject, s->subject_len)) {
                    violation(c, "Subscription to", s->subject,
                              s->subject_len, s->queue, s->queue_len);
                    sub_remove(s);
                }
                s = sn;
            }
        }
    }
}

/* ------------------------------------------------------------------ */
/* Protocol operations */

static bool needs_connect(struct bconn *c)
{
    if (c->state == C_OPEN) {
        return false;
    }
    if (c->b->cfg.auth != BUS_AUTH_OFF) {
        c->b->st.auth_failures++;
        conn_close(c, "Authorization Violation");
        return true;
    }
    return false;
}

static int authenticate(struct bconn *c, json_t *j)
{
    struct bus *b = c->b;
    const char *nk = json_string_value(json_object_get(j, "nkey"));
    const char *sig = json_string_value(json_object_get(j, "sig"));
    uint8_t raw[NKEY_SIG_LEN];
    const char *why = NULL;

    if (nk == NULL || sig == NULL) {
        why = "no nkey and sig in CONNECT";
    } else if (strlen(nk) != NKEY_PUB_LEN) {
        why = "malformed nkey";
    } else if (nkey_sig_decode(sig, strlen(sig), raw) != NKEY_OK ||
               nkey_verify(nk, c->nonce, strlen(c->nonce), raw) != NKEY_OK) {
        why = "bad signature";
    } else if (bdir_lookup_key(b->dir, nk, c->acl.handle,
                               sizeof c->acl.handle, &c->acl.all) != 0) {
        why = "not a member";
    }
    if (why == NULL) {
        snprintf(c->upub, sizeof c->upub, "%s", nk);
        c->acl.handle_len = strlen(c->acl.handle);
        if (load_rights(c) != 0) {
            why = "not a member";
        }
    }
    if (why != NULL) {
        b->st.auth_failures++;
        c->acl.handle[0] = '\0';
        c->acl.handle_len = 0;
        ub_info("bus", "client %llu (%s:%d): authentication failed: %s",
                (unsigned long long)c->cid, c->ip, c->port, why);
        if (b->cfg.auth == BUS_AUTH_ENFORCE) {
            return -1;
        }
        c->acl.all = true; /* warn: let it in, as nobody in particular */
        return 0;
    }
    c->authed = true;
    ub_debug("bus", "client %llu (%s:%d) is member %s%s",
             (unsigned long long)c->cid, c->ip, c->port, c->acl.handle,
             c->acl.all ? " (admin)" : "");
    return 0;
}

static int on_connect(void *arg, const char *json, size_t len)
{
    struct bconn *c = arg;
    json_error_t jerr;
    json_t *j, *v;
    json_int_t proto = 0;

    if (c->state == C_OPEN) { /* a second CONNECT changes nothing */
        send_ok(c);
        return 0;
    }
    j = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(j)) {
        json_decref(j);
        conn_close(c, "Unknown Protocol Operation");
        return -1;
    }
#define FLAG(name, field, dflt)                                   \
    v = json_object_get(j, name);                                 \
    c->field = v == NULL ? (dflt) : json_is_true(v);
    FLAG("verbose", verbose, true);
    FLAG("pedantic", pedantic, true);
    FLAG("echo", echo, true);
    FLAG("headers", headers, false);
    FLAG("no_responders", no_responders, false);
#undef FLAG
    v = json_object_get(j, "protocol");
    if (json_is_integer(v)) {
        proto = json_integer_value(v);
    }
    if (proto < 0 || proto > 1) {
        json_decref(j);
        conn_close(c, "invalid client protocol");
        return -1;
    }
    if (c->no_responders && !c->headers) {
        json_decref(j);
        conn_close(c, "no responders requires headers support");
        return -1;
    }
    if (c->b->cfg.auth != BUS_AUTH_OFF && authenticate(c, j) != 0) {
        json_decref(j);
        conn_close(c, "Authorization Violation");
        return -1;
    }
    json_decref(j);
    c->state = C_OPEN;
    send_ok(c);
    return 0;
}

static int on_pub(void *arg, const struct bp_pub *p)
{
    struct bconn *c = arg;
    struct bus *b = c->b;
    struct bmsg m;
    const char *served[64];
    size_t served_lens[64], n_served = 0, n;

    if (needs_connect(c)) {
        return -1;
    }
    if (p->has_headers && !c->headers) {
        conn_close(c, "message headers not supported");
        return -1;
    }
    b->st.msgs_in++;
    b->st.bytes_in += p->total_len; /* headers and payload, as bytes_out */
    if (!sl_subject_literal(p->subject, p->subject_len) ||
        (p->reply && !sl_subject_literal(p->reply, p->reply_len))) {
        send_err(c, "Invalid Publish Subject");
        return 0;
    }
    if (p->reply && !bacl_can_reply_to(&c->acl, p->reply, p->reply_len)) {
        violation(c, "Publish with Reply of", p->reply, p->reply_len, NULL, 0);
        if (!warn_mode(c)) {
            return 0;
        }
    }
    if (p->subject_len > 8 && memcmp(p->subject, "$UB.API.", 8) == 0 &&
        b->sys != NULL) {
        struct bmsg sm = {p->subject, p->subject_len, p->reply,
                          p->reply ? p->reply_len : 0, p->data, p->hdr_len,
                          p->total_len};
        bsys_request(b->sys, c->acl.handle, c->authed && c->acl.all, &sm);
        send_ok(c);
        return c->state == C_CLOSING ? -1 : 0;
    }
    if (!bacl_can_publish(&c->acl, p->subject, p->subject_len) &&
        !use_grant(c, p->subject, p->subject_len)) {
        violation(c, "Publish to", p->subject, p->subject_len, NULL, 0);
        if (!warn_mode(c)) {
            return 0;
        }
    }
    m.subject = p->subject;
    m.subject_len = p->subject_len;
    m.reply = p->reply;
    m.reply_len = p->reply ? p->reply_len : 0;
    m.data = p->data;
    m.hdr_len = p->hdr_len;
    m.total_len = p->total_len;
    /* served[] points into the match result: the index stays unchanged
     * until the routes have seen it (walk_end). */
    walk_begin(b);
    n = deliver_local(b, c, &m, NULL, NULL, 0, served, served_lens, &n_served,
                      64);
    if (b->routes) {
        size_t nr = brt_publish(b->routes, &m, served, served_lens, n_served);
        b->st.route_msgs_out += nr;
        n += nr;
    }
    if (n == 0 && m.reply && c->no_responders && c->state == C_OPEN) {
        no_responders(c, &m);
    }
    walk_end(b);
    if (c->state == C_OPEN) {
        send_ok(c);
    }
    return c->state == C_CLOSING ? -1 : 0;
}

static int on_sub(void *arg, const struct bp_sub *p)
{
    struct bconn *c = arg;
    struct bus *b = c->b;
    struct bsub *s, **slot;

    if (needs_connect(c)) {
        return -1;
    }
    if (!sl_subject_valid(p->subject, p->subject_len) ||
        (p->queue && !sl_queue_valid(p->queue, p->queue_len))) {
        send_err(c, "Invalid Subject");
        return 0;
    }
    if (!bacl_can_subscribe(&c->acl, p->subject, p->subject_len)) {
        violation(c, "Subscription to", p->subject, p->subject_len,
                  p->queue, p->queue_len);
        if (!warn_mode(c)) {
            return 0;
        }
    }
    if (c->sid_cap == 0 && sid_grow(c) != 0) {
        conn_close(c, NULL);
        return -1;
    }
    slot = sid_slot(c, p->sid, p->sid_len);
    if (*slot != NULL) { /* a duplicate sid changes nothing */
        send_ok(c);
        return 0;
    }
    if (c->nsubs >= b->cfg.max_subs) {
        send_err(c, "maximum subscriptions exceeded");
        return 0;
    }
    s = calloc(1, sizeof *s);
    if (s == NULL || (s->subject = malloc(p->subject_len + 1)) == NULL ||
        (s->sid = malloc(p->sid_len + 1)) == NULL ||
        (p->queue && (s->queue = malloc(p->queue_len + 1)) == NULL)) {
        if (s) {
            sub_free(s);
        }
        conn_close(c, NULL);
        return -1;
    }
    s->c = c;
    memcpy(s->subject, p->subject, p->subject_len);
    s->subject[p->subject_len] = '\0';
    s->subject_len = p->subject_len;
    memcpy(s->sid, p->sid, p->sid_len);
    s->sid[p->sid_len] = '\0';
    s->sid_len = p->sid_len;
    if (p->queue) {
        memcpy(s->queue, p->queue, p->queue_len);
        s->queue[p->queue_len] = '\0';
        s->queue_len = p->queue_len;
    }
    if (sl_insert(b->index, s->subject, s->subject_len, s->queue, s->queue_len,
                  s) != 0) {
        sub_free(s);
        send_err(c, "Invalid Subject");
        return 0;
    }
    if (c->nsubs + 1 > c->sid_cap && sid_grow(c) == 0) {
        slot = sid_slot(c, s->sid, s->sid_len);
    }
    s->next = *slot;
    *slot = s;
    c->nsubs++;
    b->st.subs++;
    if (b->routes) {
        brt_interest(b->routes, s->subject, s->subject_len, s->queue,
                     s->queue_len, +1);
    }
    send_ok(c);
    return 0;
}

static int on_unsub(void *arg, const struct bp_unsub *p)
{
    struct bconn *c = arg;
    struct bsub *s;
    if (needs_connect(c)) {
        return -1;
    }
    s = c->sid_cap ? *sid_slot(c, p->sid, p->sid_len) : NULL;
    if (s != NULL) {
        if (p->max_msgs > 0 && p->max_msgs > s->delivered) {
            s->max = p->max_msgs;
        } else {
            sub_remove(s);
        }
    }
    send_ok(c);
    return 0;
}

static int on_ping(void *arg)
{
    struct bconn *c = arg;
    if (needs_connect(c)) {
        return -1;
    }
    conn_send(c, "PONG\r\n", 6);
    return c->state == C_CLOSING ? -1 : 0;
}

static int on_pong(void *arg)
{
    struct bconn *c = arg;
    c->pings_out = 0;
    return 0;
}

static const struct bp_callbacks callbacks = {
    .on_connect = on_connect,
    .on_pub = on_pub,
    .on_sub = on_sub,
    .on_unsub = on_unsub,
    .on_ping = on_ping,
    .on_pong = on_pong,
};

/* ------------------------------------------------------------------ */
/* Connections: I/O */

static void queue_flush(struct bconn *c)
{
    if (!c->queued) {
        c->queued = true;
        c->flush_next = c->b->flush_head;
        c->b->flush_head = c;
    }
}

/* Moves TLS output records from the write BIO to net. */
static int drain_tls(struct bconn *c)
{
    for (;;) {
        size_t pend = BIO_ctrl_pending(c->wbio);
        int n;
        if (pend == 0) {
            return 0;
        }
        if (buf_reserve(&c->net, pend) != 0) {
            return -1;
        }
        n = BIO_read(c->wbio, c->net.p + c->net.len, (int)pend);
        if (n <= 0) {
            return 0;
        }
        c->net.len += (size_t)n;
    }
}

static void on_written(uv_write_t *req, int status)
{
    struct bconn *c = req->data;
    c->writing = false;
    c->wbuf.len = 0;
    if (c->wbuf.cap > 1024 * 1024) { /* give back a burst's memory */
        buf_free(&c->wbuf);
    }
    if (status < 0) {
        if (c->state != C_CLOSING) {
            conn_close(c, NULL);
        }
        return;
    }
    c->last_progress = uv_now(c->b->loop);
    if (c->b->stalled != NULL) {
        check_stalls(c->b);
    }
    if (c->state == C_CLOSING) {
        return;
    }
    if (c->out.len > 0 || c->net.len > 0) {
        queue_flush(c);
    }
}

/* Writes what c has queued: synchronously as far as the socket takes it,
 * the rest through one uv_write. */
static void conn_flush(struct bconn *c)
{
    struct bbuf *src;
    uv_buf_t ub;
    int n;

    if (c->ssl != NULL && c->out.len > 0 && c->state != C_TLS &&
        !SSL_in_init(c->ssl)) {
        int w = SSL_write(c->ssl, c->out.p, (int)c->out.len);
        if (w <= 0 || (size_t)w != c->out.len) {
            conn_close(c, NULL);
            return;
        }
        c->out.len = 0;
    }
    if (c->ssl != NULL && drain_tls(c) != 0) {
        conn_close(c, NULL);
        return;
    }
    src = c->ssl ? &c->net : &c->out;
    if (c->writing || src->len == 0) {
        return;
    }
    ub = uv_buf_init(src->p, (unsigned)src->len);
    n = uv_try_write((uv_stream_t *)&c->tcp, &ub, 1);
    if (n > 0) {
        c->last_progress = uv_now(c->b->loop);
    }
    if (n == (int)src->len) {
        src->len = 0;
        if (src->cap > 1024 * 1024) {
            buf_free(src);
        }
        return;
    }
    if (n < 0 && n != UV_EAGAIN) {
        conn_close(c, NULL);
        return;
    }
    if (n < 0) {
        n = 0;
    }
    /* The rest goes out asynchronously from wbuf; src keeps accumulating. */
    {
        struct bbuf tmp = c->wbuf;
        c->wbuf = *src;
        *src = tmp;
        src->len = 0;
    }
    memmove(c->wbuf.p, c->wbuf.p + n, c->wbuf.len - (size_t)n);
    c->wbuf.len -= (size_t)n;
    ub = uv_buf_init(c->wbuf.p, (unsigned)c->wbuf.len);
    c->wreq.data = c;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &ub, 1, on_written) != 0) {
        c->wbuf.len = 0;
        conn_close(c, NULL);
        return;
    }
    c->writing = true;
    c->write_started = uv_now(c->b->loop);
}

static void on_flush(uv_prepare_t *h)
{
    struct bus *b = h->data;
    while (b->flush_head) {
        struct bconn *c = b->flush_head;
        b->flush_head = c->flush_next;
        c->queued = false;
        c->flush_next = NULL;
        if (c->state != C_CLOSING) {
            conn_flush(c);
        }
    }
}

/* bus_close() finishes when the last handle of the bus has closed. */
static void handle_released(struct bus *b)
{
    if (--b->open_handles == 0 && b->closing) {
        void (*cb)(void *) = b->close_cb;
        void *arg = b->close_arg;
        free(b->listen);
        free(b->name);
        free(b);
        if (cb) {
            cb(arg);
        }
    }
}

static void on_conn_closed(uv_handle_t *h)
{
    struct bconn *c = h->data;
    struct bus *b = c->b;
    bp_parser_free(c->parser);
    buf_free(&c->out);
    buf_free(&c->net);
    buf_free(&c->wbuf);
    if (c->ssl) {
        SSL_free(c->ssl); /* frees both BIOs */
    }
    bdir_rooms_free(c->acl.rooms, c->acl.n_rooms);
    for (size_t i = 0; i < c->n_grants; i++) {
        free(c->grants[i].subject);
    }
    free(c->grants);
    free(c);
    handle_released(b);
}

/* Closes c after trying to send err as a -ERR line (NULL: no line). */
static void conn_close(struct bconn *c, const char *err)
{
    struct bus *b = c->b;
    enum cstate prev = c->state;
    if (prev == C_CLOSING) {
        return;
    }
    if (err != NULL) {
        send_err(c, err);
    }
    c->state = C_CLOSING;
    /* Last words go out now if the socket takes them; nothing waits (a
     * failing flush calls back here and returns at once). */
    if (!c->writing && prev != C_TLS) {
        conn_flush(c);
    }
    if (c->stalled || c->b->stalled != NULL) {
        unstall(c);
    }
    if (c->queued) { /* it is freed before the next flush */
        struct bconn **p = &b->flush_head;
        while (*p != c) {
            p = &(*p)->flush_next;
        }
        *p = c->flush_next;
        c->queued = false;
    }
    conn_drop_subs(c);
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        b->conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    b->st.conns--;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);
static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

/* Resumes the stalled publishers whose subscriber caught up, got stuck or
 * went away, or that waited long enough. */
static void check_stalls(struct bus *b)
{
    uint64_t now = uv_now(b->loop);
    struct bconn **p = &b->stalled;
    while (*p) {
        struct bconn *c = *p, *t = c->stall_target;
        if (t == NULL || pending_bytes(t) <= STALL_RESUME ||
            now - t->last_progress >= STALL_STUCK_MS ||
            now - c->stall_start >= STALL_MAX_MS) {
            *p = c->stall_next;
            c->stalled = false;
            c->stall_target = NULL;
            c->stall_next = NULL;
            uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
            continue;
        }
        p = &c->stall_next;
    }
    if (b->stalled == NULL) {
        uv_timer_stop(&b->stall_timer);
    }
}

static void on_stall_timer(uv_timer_t *t)
{
    check_stalls(t->data);
}

/* c is going away: no publisher waits for it, and it waits for nobody. */
static void unstall(struct bconn *c)
{
    struct bus *b = c->b;
    struct bconn **p = &b->stalled;
    while (*p) {
        if (*p == c) {
            *p = c->stall_next;
            continue;
        }
        if ((*p)->stall_target == c) {
            (*p)->stall_target = NULL;
        }
        p = &(*p)->stall_next;
    }
    c->stalled = false;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct bconn *c = h->data;
    (void)hint;
    *buf = uv_buf_init((char *)c->b->rbuf, READ_BUF);
}

static int feed(struct bconn *c, const uint8_t *data, size_t len)
{
    int rv = bp_parse(c->parser, data, len);
    if (rv == BP_OK) {
        return 0;
    }
    if (rv != BP_STOPPED && c->state != C_CLOSING) {
        conn_close(c, bp_error_text(rv));
    }
    return -1;
}

static void send_info(struct bconn *c);

static void tls_input(struct bconn *c, const uint8_t *data, size_t len)
{
    if (BIO_write(c->rbio, data, (int)len) != (int)len) {
        conn_close(c, NULL);
        return;
    }
    if (c->state == C_TLS) {
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                drain_tls(c);
                queue_flush(c);
                return;
            }
            ub_info("bus", "client %llu (%s:%d): TLS handshake failed: %s",
                    (unsigned long long)c->cid, c->ip, c->port,
                    ERR_reason_error_string(ERR_peek_last_error())
                        ? ERR_reason_error_string(ERR_peek_last_error())
                        : "unknown");
            ERR_clear_error();
            drain_tls(c);
            conn_flush(c);
            conn_close(c, NULL);
            return;
        }
        c->state = C_CONNECT;
        drain_tls(c);
        queue_flush(c);
    }
    for (;;) {
        int n = SSL_read(c->ssl, c->b->tbuf, READ_BUF);
        if (n <= 0) {
            int e = SSL_get_error(c->ssl, n);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                ERR_clear_error();
                conn_close(c, NULL);
            }
            break;
        }
        if (feed(c, c->b->tbuf, (size_t)n) != 0) {
            return;
        }
    }
    if (c->state != C_CLOSING) {
        drain_tls(c);
        if (c->net.len) {
            queue_flush(c);
        }
    }
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct bconn *c = st->data;
    if (nread < 0) {
        conn_close(c, NULL);
        return;
    }
    if (nread == 0 || c->state == C_CLOSING) {
        return;
    }
    if (c->ssl) {
        tls_input(c, (const uint8_t *)buf->base, (size_t)nread);
    } else {
        feed(c, (const uint8_t *)buf->base, (size_t)nread);
    }
    if (c->stall_pending && c->state != C_CLOSING && !c->stalled) {
        struct bus *b = c->b;
        c->stall_pending = false;
        c->stalled = true;
        c->stall_start = uv_now(b->loop);
        c->stall_next = b->stalled;
        b->stalled = c;
        b->st.stalls++;
        uv_read_stop((uv_stream_t *)&c->tcp);
        if (!uv_is_active((uv_handle_t *)&b->stall_timer)) {
            uv_timer_start(&b->stall_timer, on_stall_timer, STALL_CHECK_MS,
                           STALL_CHECK_MS);
        }
    }
}

static void send_info(struct bconn *c)
{
    struct bus *b = c->b;
    json_t *j;
    char *s;
    uint8_t rnd[11];

    j = json_pack("{s:s,s:s,s:s,s:i,s:s,s:s,s:i,s:b,s:I,s:I,s:s}", "server_id",
                  b->server_id, "server_name", b->name, "version", BUS_VERSION,
                  "proto", 1, "go", "unibus " UB_VERSION, "host", b->host,
                  "port", b->port, "headers", 1, "max_payload",
                  (json_int_t)b->cfg.max_payload, "client_id",
                  (json_int_t)c->cid, "client_ip", c->ip);
    if (j == NULL) {
        conn_close(c, NULL);
        return;
    }
    if (b->cfg.auth != BUS_AUTH_OFF) {
        /* 11 random bytes, base64url: what nats-server sends. */
        if (RAND_bytes(rnd, sizeof rnd) != 1 ||
            nkey_b64url_encode(rnd, sizeof rnd, c->nonce, sizeof c->nonce) !=
                NKEY_OK) {
            json_decref(j);
            conn_close(c, NULL);
            return;
        }
        json_object_set_new(j, "nonce", json_string(c->nonce));
        json_object_set_new(j, "auth_required", json_true());
    }
    if (b->tls) {
        json_object_set_new(j, "tls_required", json_true());
        if (b->cfg.tls_ca) {
            json_object_set_new(j, "tls_verify", json_true());
        }
    }
    s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (s == NULL) {
        conn_close(c, NULL);
        return;
    }
    /* INFO goes out in plaintext even on a TLS connection. */
    if (c->ssl) {
        buf_add(&c->net, "INFO ", 5);
        buf_add(&c->net, s, strlen(s));
        buf_add(&c->net, "\r\n", 2);
        queue_flush(c);
    } else {
        conn_sendz(c, "INFO ");
        conn_sendz(c, s);
        conn_sendz(c, "\r\n");
    }
    free(s);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct bus *b = server->data;
    struct bconn *c;
    struct sockaddr_storage ss;
    int sl = sizeof ss;

    if (status < 0 || b->closing) {
        return;
    }
    c = calloc(1, sizeof *c);
    if (c == NULL) {
        return;
    }
    c->b = b;
    uv_tcp_init(b->loop, &c->tcp);
    c->tcp.data = c;
    b->open_handles++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        c->state = C_CLOSING;
        uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
        return;
    }
    c->cid = ++b->next_cid;
    c->next = b->conns;
    if (b->conns) {
        b->conns->prev = c;
    }
    b->conns = c;
    b->st.conns++;
    b->st.conns_total++;
    c->started = c->last_ping = c->last_progress = uv_now(b->loop);
    c->verbose = false;
    c->echo = true;
    c->acl.all = b->cfg.auth == BUS_AUTH_OFF;
    uv_tcp_nodelay(&c->tcp, 1);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *in = (struct sockaddr_in *)&ss;
            uv_ip4_name(in, c->ip, sizeof c->ip);
            c->port = ntohs(in->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
            uv_ip6_name(in6, c->ip, sizeof c->ip);
            c->port = ntohs(in6->sin6_port);
        }
    }
    if (b->st.conns > b->cfg.max_conns) {
        c->state = C_CONNECT;
        conn_close(c, "maximum connections exceeded");
        return;
    }
    c->parser = bp_parser_new(&callbacks, c, b->cfg.max_control,
                              b->cfg.max_payload);
    if (c->parser == NULL) {
        conn_close(c, NULL);
        return;
    }
    c->state = C_CONNECT;
    if (b->tls) {
        c->ssl = SSL_new(b->tls);
        c->rbio = BIO_new(BIO_s_mem());
        c->wbio = BIO_new(BIO_s_mem());
        if (c->ssl == NULL || c->rbio == NULL || c->wbio == NULL) {
            BIO_free(c->rbio);
            BIO_free(c->wbio);
            c->rbio = c->wbio = NULL;
            conn_close(c, NULL);
            return;
        }
        SSL_set_bio(c->ssl, c->rbio, c->wbio);
        SSL_set_accept_state(c->ssl);
        c->state = C_TLS;
    }
    send_info(c);
    if (c->state != C_CLOSING) {
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    }
}

/* Timeouts: authentication, TLS handshake, keepalive PINGs and stale
 * connections, and writes that make no progress. */
static void on_tick(uv_timer_t *t)
{
    struct bus *b = t->data;
    uint64_t now = uv_now(b->loop);
    struct bconn *c, *next;
    for (c = b->conns; c; c = next) {
        next = c->next;
        if (c->state == C_TLS && now - c->started >= b->cfg.auth_timeout_ms) {
            conn_close(c, NULL);
            continue;
        }
        /* Without authentication too: a client that never says CONNECT
         * would otherwise hold its socket forever (PINGs start at OPEN). */
        if (c->state == C_CONNECT &&
            now - c->started >= b->cfg.auth_timeout_ms) {
            b->st.auth_failures++;
            conn_close(c, "Authentication Timeout");
            continue;
        }
        if (c->writing && now - c->write_started >= b->cfg.write_deadline_ms) {
            b->st.slow_consumers++;
            ub_warn("bus", "client %llu (%s:%d): slow consumer, no write "
                           "progress in %u ms; closing it",
                    (unsigned long long)c->cid, c->ip, c->port,
                    b->cfg.write_deadline_ms);
            conn_close(c, NULL);
            continue;
        }
        if (c->state == C_OPEN &&
            now - c->last_ping >= b->cfg.ping_interval_ms) {
            if (c->pings_out >= b->cfg.max_pings_out) {
                conn_close(c, "Stale Connection");
                continue;
            }
            c->pings_out++;
            c->last_ping = now;
            conn_send(c, "PING\r\n", 6);
        }
    }
}

/* ------------------------------------------------------------------ */
/* Life cycle */

int bus_auth_parse(const char *s)
{
    if (s == NULL || strcmp(s, "enforce") == 0) {
        return BUS_AUTH_ENFORCE;
    }
    if (strcmp(s, "warn") == 0) {
        return BUS_AUTH_WARN;
    }
    if (strcmp(s, "off") == 0) {
        return BUS_AUTH_OFF;
    }
    return -1;
}

static int load_tls(struct bus *b, char *err, size_t errlen)
{
    b->tls = SSL_CTX_new(TLS_server_method());
    if (b->tls == NULL ||
        SSL_CTX_set_min_proto_version(b->tls, TLS1_2_VERSION) != 1 ||
        SSL_CTX_use_certificate_chain_file(b->tls, b->cfg.tls_cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(b->tls, b->cfg.tls_key, SSL_FILETYPE_PEM) !=
            1 ||
        SSL_CTX_check_private_key(b->tls) != 1) {
        char why[256];
        ERR_error_string_n(ERR_peek_last_error(), why, sizeof why);
        snprintf(err, errlen,
                 "bus TLS: cannot load --tls-cert %s / --tls-key %s: %s",
                 b->cfg.tls_cert, b->cfg.tls_key, why);
        ERR_clear_error();
        return -1;
    }
    if (b->cfg.tls_ca) {
        if (SSL_CTX_load_verify_locations(b->tls, b->cfg.tls_ca, NULL) != 1) {
            snprintf(err, errlen, "bus TLS: cannot load --tls-ca %s",
                     b->cfg.tls_ca);
            ERR_clear_error();
            return -1;
        }
        SSL_CTX_set_verify(b->tls,
                           SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                           NULL);
    }
    return 0;
}

static void bus_free_partial(struct bus *b)
{
    if (b->tls) {
        SSL_CTX_free(b->tls);
    }
    bdir_free(b->dir);
    bsys_close(b->sys);
    sl_index_free(b->index);
    free(b->listen);
    free(b->name);
    free(b);
}

int bus_create(uv_loop_t *loop, const struct bus_config *cfg, struct bus **out,
               char *err, size_t errlen)
{
    struct bus *b = calloc(1, sizeof *b);
    struct sockaddr_storage addr;
    uint8_t id[NKEY_KEY_LEN];
    int rv;

    if (b == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    b->loop = loop;
    b->cfg = *cfg;
    b->listen = strdup(cfg->listen);
    b->name = strdup(cfg->name ? cfg->name : "unibus");
    b->cfg.listen = b->listen;
    b->cfg.name = b->name;
#define DEFAULT(f, v) if (b->cfg.f == 0) b->cfg.f = (v)
    DEFAULT(max_payload, BP_DEFAULT_MAX_PAYLOAD);
    DEFAULT(max_control, BP_DEFAULT_MAX_CONTROL);
    DEFAULT(max_pending, 64 * 1024 * 1024);
    DEFAULT(max_conns, 65536);
    DEFAULT(max_subs, 65536);
    DEFAULT(auth_timeout_ms, 2000);
    DEFAULT(ping_interval_ms, 120000);
    DEFAULT(max_pings_out, 2);
    DEFAULT(write_deadline_ms, 10000);
#undef DEFAULT
    if (b->listen == NULL || b->name == NULL ||
        ub_split_hostport(b->listen, b->host, sizeof b->host, &b->port) != 0) {
        snprintf(err, errlen, "--bus-listen '%s' is not HOST:PORT",
                 cfg->listen);
        bus_free_partial(b);
        return -1;
    }
    if (RAND_bytes(id, sizeof id) != 1 ||
        nkey_encode_pub(NKEY_PREFIX_SERVER, id, b->server_id) != NKEY_OK) {
        snprintf(err, errlen, "no random source for the server id");
        bus_free_partial(b);
        return -1;
    }
    if ((cfg->tls_cert || cfg->tls_key) && load_tls(b, err, errlen) != 0) {
        bus_free_partial(b);
        return -1;
    }
    b->index = sl_index_new();
    b->sys = bsys_new(b, cfg->ctl);
    b->dir = cfg->kv ? bdir_new(cfg->kv, on_directory, b) : NULL;
    if (b->index == NULL || b->sys == NULL || (cfg->kv && b->dir == NULL)) {
        snprintf(err, errlen, "out of memory starting the bus");
        bus_free_partial(b);
        return -1;
    }
    if (cfg->kv == NULL && b->cfg.auth != BUS_AUTH_OFF) {
        snprintf(err, errlen, "bus authentication needs the member directory");
        bus_free_partial(b);
        return -1;
    }
    if (strcmp(b->host, "localhost") == 0) { /* as the HTTP listener does */
        snprintf(b->host, sizeof b->host, "127.0.0.1");
    }
    rv = uv_ip4_addr(b->host, b->port, (struct sockaddr_in *)&addr);
    if (rv != 0) {
        rv = uv_ip6_addr(b->host, b->port, (struct sockaddr_in6 *)&addr);
    }
    if (rv != 0) {
        snprintf(err, errlen, "--bus-listen host '%s' must be an IP address",
                 b->host);
        bus_free_partial(b);
        return -1;
    }
    uv_tcp_init(loop, &b->listener);
    b->listener.data = b;
    uv_prepare_init(loop, &b->flusher);
    b->flusher.data = b;
    uv_timer_init(loop, &b->tick);
    b->tick.data = b;
    uv_timer_init(loop, &b->stall_timer);
    b->stall_timer.data = b;
    b->open_handles = 4;
    if ((rv = uv_tcp_bind(&b->listener, (struct sockaddr *)&addr, 0)) != 0 ||
        (rv = uv_listen((uv_stream_t *)&b->listener, 511, on_connection)) !=
            0) {
        snprintf(err, errlen, "cannot listen on --bus-listen %s: %s",
                 b->listen, uv_strerror(rv));
        bus_close(b, NULL, NULL); /* the loop finishes closing */
        return -1;
    }
    {
        struct sockaddr_storage bound;
        int len = sizeof bound;
        if (uv_tcp_getsockname(&b->listener, (struct sockaddr *)&bound,
                               &len) == 0) {
            b->port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
        }
    }
    uv_prepare_start(&b->flusher, on_flush);
    uv_timer_start(&b->tick, on_tick, TICK_MS, TICK_MS);
    if (cfg->hub != NULL) {
        b->routes = brt_new(b, cfg->hub, cfg->peers, cfg->n_peers);
        if (b->routes == NULL) {
            snprintf(err, errlen, "out of memory starting bus routes");
            bus_close(b, NULL, NULL);
            return -1;
        }
    }
    *out = b;
    return 0;
}

void bus_add_route(struct bus *b, const char *address)
{
    if (b->routes != NULL) {
        brt_add_peer(b->routes, address);
    }
}

int bus_port(const struct bus *b)
{
    return b->port;
}

void bus_get_stats(const struct bus *b, struct bus_stats *out)
{
    *out = b->st;
    out->routes = b->routes ? brt_connected(b->routes) : 0;
}

static void on_handle_closed(uv_handle_t *h)
{
    handle_released(h->data);
}

static void routes_closed(void *arg)
{
    handle_released(arg);
}

void bus_close(struct bus *b, void (*cb)(void *arg), void *arg)
{
    b->closing = true;
    b->close_cb = cb;
    b->close_arg = arg;
    if (b->routes) {
        b->open_handles++; /* the routes count as one until they closed */
        brt_close(b->routes, routes_closed, b);
        b->routes = NULL;
    }
    while (b->conns) {
        conn_close(b->conns, NULL);
    }
    bdir_free(b->dir);
    b->dir = NULL;
    bsys_close(b->sys);
    b->sys = NULL;
    sl_index_free(b->index);
    b->index = NULL;
    if (b->tls) {
        SSL_CTX_free(b->tls);
        b->tls = NULL;
    }
    uv_close((uv_handle_t *)&b->listener, on_handle_closed);
    uv_close((uv_handle_t *)&b->flusher, on_handle_closed);
    uv_close((uv_handle_t *)&b->tick, on_handle_closed);
    uv_close((uv_handle_t *)&b->stall_timer, on_handle_closed);
}
