/* Bus routes (internal.h): interest exchange and message forwarding between
 * the nodes of a cluster over the route hub (RT_KIND_BUS connections, frames
 * of route_codec.h inside ub_framed).
 *
 * Each pair of nodes has two one-way connections. A node dials ONE outbound
 * connection per configured peer and only ever writes to it: first the
 * whole local interest (every (pattern, queue) with a local subscription),
 * then each change (0 -> 1: INTEREST_ADD, 1 -> 0: INTEREST_DEL) and the
 * messages the peer has interest in. It reads the peers' interest and
 * messages from the inbound connections they dial to it, and keeps each
 * peer's interest in an sl_index of its own. Inbound and outbound are
 * matched by the authenticated node id (rt_peer.id).
 *
 * Publishing: for every peer with an open outbound connection and known
 * interest, one sl_match of the subject. A peer gets the message once if it
 * has a matching plain subscription, or if it was picked (at random among
 * the peers that have it) for a matching queue group that no local member
 * served; the frame lists the groups it must serve. A received message goes
 * to bus_deliver_remote() and never further, so a message crosses at most
 * one route hop.
 *
 * Failure modes:
 *   - a dial fails or an outbound connection ends: redial after 100 ms,
 *     doubling to 2 s (back to 100 ms after a connection that lived 2 s);
 *     the reconnect resends the whole interest, so the peer heals itself;
 *   - an inbound connection ends: everything that peer told us is dropped
 *     (it resends it when it reconnects); a newer inbound connection from
 *     the same node supersedes (closes) the older one;
 *   - a malformed frame, an INTEREST_ADD of something already known, an
 *     INTEREST_DEL of something unknown, or any byte on an outbound
 *     connection: warning naming the peer, connection closed (and so
 *     resynchronised by the reconnect);
 *   - more than BRT_MAX_PENDING bytes queued to a peer: its messages are
 *     dropped and counted, logged once per episode; interest frames are
 *     never dropped, but past BRT_HARD_PENDING the connection is closed;
 *   - the address of a peer turns out to be this node, or a node another
 *     address already reaches: that address is given up, with a log line.
 * Shutdown: brt_close() removes the accept handler, cancels dials, closes
 * every connection and timer, and calls back once all of them are done. */
#include <raft.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "bus/internal.h"
#include "bus/route_codec.h"
#include "bus/sublist.h"
#include "lib/framed.h"
#include "lib/log.h"
#include "route/hub.h"

#define MOD "bus"
#define BRT_BACKOFF_MIN_MS 100
#define BRT_BACKOFF_MAX_MS 2000
#define BRT_MAX_PENDING ((size_t)64 << 20)   /* drop messages above this */
#define BRT_HARD_PENDING ((size_t)128 << 20) /* close the connection */
#define BRT_OUT_MAX_FRAME 64 /* peers send nothing on our outbound */
#define BRT_ENC_KEEP (1u << 20) /* scratch kept between messages */
#define BRT_TOO_BIG_LOG_MS 10000
/* Outbound peers, allocated once: each holds a uv timer, so the array never
 * moves. --routes plus nodes that joined later (brt_add_peer). */
#define BRT_MAX_PEERS 32

/* ------------------------------------------------------------------ */
/* (pattern, queue) table */

/* One (pattern, queue): locally, the number of local subscriptions on it;
 * per inbound peer, one remote interest (also the opaque subscription
 * pointer in that peer's sl_index). */
struct ient {
    struct ient *next; /* hash chain */
    uint64_t hash;
    int64_t refs;
    size_t plen, qlen;
    char key[]; /* pattern, then queue */
};

struct itab {
    struct ient **b;
    size_t nb; /* power of two, or 0 */
    size_t n;
};

static uint64_t ihash(const char *p, size_t plen, const char *q, size_t qlen)
{
    return sl_hash(p, plen) * UINT64_C(0x9e3779b97f4a7c15) ^ sl_hash(q, qlen);
}

static struct ient *itab_find(const struct itab *t, const char *p,
                              size_t plen, const char *q, size_t qlen,
                              uint64_t h)
{
    struct ient *e;
    if (t->nb == 0) {
        return NULL;
    }
    for (e = t->b[h & (t->nb - 1)]; e != NULL; e = e->next) {
        if (e->hash == h && e->plen == plen && e->qlen == qlen &&
            memcmp(e->key, p, plen) == 0 &&
            (qlen == 0 || memcmp(e->key + plen, q, qlen) == 0)) {
            return e;
        }
    }
    return NULL;
}

/* Inserts e; 0, or -1 when out of memory (e not inserted). */
static int itab_add(struct itab *t, struct ient *e)
{
    if (t->n >= t->nb) {
        size_t nb = t->nb ? t->nb * 2 : 16;
        struct ient **b = calloc(nb, sizeof *b);
        if (b == NULL) {
            if (t->nb == 0) {
                return -1;
            }
        } else {
            for (size_t i = 0; i < t->nb; i++) {
                struct ient *x = t->b[i], *next;
                for (; x != NULL; x = next) {
                    next = x->next;
                    x->next = b[x->hash & (nb - 1)];
                    b[x->hash & (nb - 1)] = x;
                }
            }
            free(t->b);
            t->b = b;
            t->nb = nb;
        }
    }
    e->next = t->b[e->hash & (t->nb - 1)];
    t->b[e->hash & (t->nb - 1)] = e;
    t->n++;
    return 0;
}

static void itab_del(struct itab *t, struct ient *e)
{
    struct ient **pp = &t->b[e->hash & (t->nb - 1)];
    while (*pp != e) {
        pp = &(*pp)->next;
    }
    *pp = e->next;
    t->n--;
}

/* Frees the table and every entry in it. */
static void itab_free(struct itab *t)
{
    for (size_t i = 0; i < t->nb; i++) {
        struct ient *e = t->b[i], *next;
        for (; e != NULL; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(t->b);
    memset(t, 0, sizeof *t);
}

static struct ient *ient_new(const char *p, size_t plen, const char *q,
                             size_t qlen, uint64_t h)
{
    struct ient *e = malloc(sizeof *e + plen + qlen);
    if (e == NULL) {
        return NULL;
    }
    e->next = NULL;
    e->hash = h;
    e->refs = 0;
    e->plen = plen;
    e->qlen = qlen;
    memcpy(e->key, p, plen);
    if (qlen > 0) {
        memcpy(e->key + plen, q, qlen);
    }
    return e;
}

static const char *ient_queue(const struct ient *e)
{
    return e->qlen ? e->key + e->plen : NULL;
}

/* ------------------------------------------------------------------ */
/* State */

struct brt;

/* An inbound connection: a peer's interest and messages. */
struct brt_in {
    struct brt *r;
    struct brt_in *prev, *next;
    uint64_t id;
    char name[64];
    struct ub_framed *f;
    struct sl_index *index; /* its interest; subs are its itab entries */
    struct itab interest;
    bool closing; /* closed or superseded: its interest is not used */
    struct brc_frame fr; /* decoding scratch (holds the queue arrays) */
};

/* The outbound connection to one configured peer address. */
struct brt_out {
    struct brt *r;
    char *address;
    uint64_t id;       /* the node at address, once a dial succeeded */
    char name[64];     /* its name, or the address before that */
    struct rt_connect *dial;  /* in flight */
    struct ub_framed *f;      /* open connection */
    bool f_closing;           /* ub_framed_close called, close cb pending */
    struct brt_in *in;        /* the same node's current interest */
    uv_timer_t timer;         /* redial */
    unsigned backoff_ms;
    uint64_t up_since;
    bool disabled;  /* this node, or a node another address reaches */
    bool failing;   /* a dial failure logged; quiet until success */
    bool congested; /* dropping messages over BRT_MAX_PENDING */
    uint64_t dropped; /* in the current congestion episode */
};

struct qname {
    const char *s;
    size_t len;
};

struct brt {
    struct bus *bus;
    struct rt_hub *hub;
    uv_loop_t *loop;
    struct brt_out *outs;
    unsigned n_out;
    struct brt_in *ins;
    struct itab local;
    struct brc_buf enc;
    /* brt_publish scratch, n_out entries (queues: BRC_MAX_QUEUES each) */
    const struct sl_result **res;
    size_t *nq;
    const char **q;
    size_t *ql;
    struct qname *decided;
    size_t n_decided, decided_cap;
    uint64_t rng;
    uint64_t dropped;  /* messages dropped over a pending limit */
    uint64_t too_big;  /* messages that cannot be framed */
    uint64_t too_big_logged;
    uv_timer_t anchor; /* makes the close callback asynchronous */
    unsigned handles;  /* uv handles not closed yet */
    bool closing;
    void (*close_cb)(void *arg);
    void *close_arg;
};

static void out_retry(struct brt_out *o);
static void maybe_finish(struct brt *r);

static uint64_t rnd(struct brt *r)
{
    /* xorshift64*: load spreading, not security. */
    r->rng ^= r->rng >> 12;
    r->rng ^= r->rng << 25;
    r->rng ^= r->rng >> 27;
    return r->rng * UINT64_C(0x2545f4914f6cdd1d);
}

static void close_free_cb(uv_handle_t *h)
{
    raft_free(h);
}

static bool out_open(const struct brt_out *o)
{
    return o->f != NULL && !o->f_closing;
}

static void out_kill(struct brt_out *o)
{
    if (out_open(o)) {
        o->f_closing = true;
        ub_framed_close(o->f);
    }
}

/* Points every outbound peer at the current inbound connection of the same
 * node (its interest), if any. */
static void relink(struct brt *r)
{
    for (unsigned i = 0; i < r->n_out; i++) {
        struct brt_out *o = &r->outs[i];
        struct brt_in *in;
        o->in = NULL;
        if (o->id == 0) {
            continue;
        }
        for (in = r->ins; in != NULL; in = in->next) {
            if (!in->closing && in->id == o->id) {
                o->in = in;
                break;
            }
        }
    }
}

/* ------------------------------------------------------------------ */
/* Inbound: the peers' interest and messages */

static void in_kill(struct brt_in *in)
{
    if (!in->closing) {
        in->closing = true;
        ub_framed_close(in->f);
        relink(in->r);
    }
}

static void in_protocol_error(struct brt_in *in, const char *why)
{
    ub_warn(MOD, "bus route from %s: %s; closing the connection", in->name,
            why);
    in_kill(in);
}

static void in_interest(struct brt_in *in, const struct brc_frame *fr)
{
    struct brc_interest it;
    size_t pos = 0;

    while (!in->closing && brc_interest_next(fr, &pos, &it)) {
        uint64_t h = ihash(it.pattern, it.plen, it.queue, it.qlen);
        struct ient *e =
            itab_find(&in->interest, it.pattern, it.plen, it.queue, it.qlen, h);
        if (fr->type == BRC_INTEREST_ADD) {
            if (e != NULL) {
                in_protocol_error(in, "interest added twice");
                return;
            }
            e = ient_new(it.pattern, it.plen, it.queue, it.qlen, h);
            if (e == NULL || itab_add(&in->interest, e) != 0) {
                free(e);
                in_protocol_error(in, "out of memory for its interest");
                return;
            }
            e->refs = 1;
            if (sl_insert(in->index, it.pattern, it.plen, it.queue, it.qlen,
                          e) != 0) {
                itab_del(&in->interest, e);
                free(e);
                in_protocol_error(in, "cannot index its interest");
                return;
            }
        } else {
            if (e == NULL) {
                in_protocol_error(in, "removal of unknown interest");
                return;
            }
            sl_remove(in->index, it.pattern, it.plen, it.queue, it.qlen, e);
            itab_del(&in->interest, e);
            free(e);
        }
    }
}

static void in_frame_cb(struct ub_framed *f, const uint8_t *buf, size_t len)
{
    struct brt_in *in = ub_framed_data(f);
    struct brc_frame *fr = &in->fr;
    const char *why = NULL;

    if (in->closing) {
        return;
    }
    if (brc_decode(buf, len, fr, &why) != 0) {
        char reason[128];
        snprintf(reason, sizeof reason, "malformed frame (%s)", why);
        in_protocol_error(in, reason);
    } else if (fr->type == BRC_MSG) {
        bus_deliver_remote(in->r->bus, &fr->msg, fr->queues, fr->queue_lens,
                           fr->nq);
    } else {
        in_interest(in, fr);
    }
}

static void in_close_cb(struct ub_framed *f)
{
    struct brt_in *in = ub_framed_data(f);
    struct brt *r = in->r;

    ub_debug(MOD, "bus route from %s closed; dropping its interest (%zu)",
             in->name, in->interest.n);
    in->closing = true;
    if (in->prev) {
        in->prev->next = in->next;
    } else {
        r->ins = in->next;
    }
    if (in->next) {
        in->next->prev = in->prev;
    }
    relink(r);
    sl_index_free(in->index);
    itab_free(&in->interest);
    free(in);
    maybe_finish(r);
}

static void accept_cb(void *arg, const struct rt_peer *peer, uint64_t group,
                      uv_stream_t *stream)
{
    struct brt *r = arg;
    struct brt_in *in, *old;

    if (r->closing) {
        uv_close((uv_handle_t *)stream, close_free_cb);
        return;
    }
    if (peer->id == rt_hub_id(r->hub)) {
        /* Our own dial to an address that is us; it gives itself up. */
        uv_close((uv_handle_t *)stream, close_free_cb);
        return;
    }
    if (group != 0) {
        ub_warn(MOD, "bus route from %s (%s): unsupported group %llu; "
                     "closing the connection",
                peer->name, peer->address, (unsigned long long)group);
        uv_close((uv_handle_t *)stream, close_free_cb);
        return;
    }
    in = calloc(1, sizeof *in);
    if (in == NULL || (in->index = sl_index_new()) == NULL) {
        ub_warn(MOD, "bus route from %s: out of memory", peer->name);
        free(in);
        uv_close((uv_handle_t *)stream, close_free_cb);
        return;
    }
    in->r = r;
    in->id = peer->id;
    snprintf(in->name, sizeof in->name, "%s", peer->name);
    in->f = ub_framed_start(stream, raft_free, BRC_MAX_FRAME, in_frame_cb,
                            in_close_cb, in);
    if (in->f == NULL) {
        ub_warn(MOD, "bus route from %s: out of memory", peer->name);
        sl_index_free(in->index);
        free(in);
        uv_close((uv_handle_t *)stream, close_free_cb);
        return;
    }
    /* The peer dials one connection at a time: an older one from the same
     * node is dead even if its end has not reached us yet. */
    for (old = r->ins; old != NULL; old = old->next) {
        if (old->id == in->id && !old->closing) {
            ub_debug(MOD, "bus route from %s: superseded", old->name);
            in_kill(old);
        }
    }
    in->next = r->ins;
    if (r->ins) {
        r->ins->prev = in;
    }
    r->ins = in;
    relink(r);
    ub_debug(MOD, "bus route from %s (%s) accepted", peer->name,
             peer->address);
}

/* ------------------------------------------------------------------ */
/* Outbound: our interest and messages */

/* Sends the frame in r->enc to o; on failure closes the connection (the
 * reconnect resynchronises the peer). Returns 0 or -1. */
static int out_send_enc(struct brt_out *o)
{
    struct brt *r = o->r;
    if (ub_framed_send(o->f, r->enc.p, r->enc.len) != 0) {
        ub_warn(MOD, "bus route to %s: cannot queue a frame; reconnecting",
                o->name);
        out_kill(o);
        return -1;
    }
    return 0;
}

static void enc_trim(struct brt *r)
{
    r->enc.len = 0;
    if (r->enc.cap > BRT_ENC_KEEP) {
        brc_buf_free(&r->enc);
    }
}

/* Interest frames are never dropped: a peer too far behind is reconnected
 * (and so resynchronised) instead. */
static int out_send_interest(struct brt_out *o)
{
    if (ub_framed_pending(o->f) > BRT_HARD_PENDING) {
        ub_warn(MOD, "bus route to %s: over %zu bytes queued; reconnecting",
                o->name, BRT_HARD_PENDING);
        out_kill(o);
        return -1;
    }
    return out_send_enc(o);
}

/* The whole local interest, in batches, first thing on a new connection. */
static int out_send_snapshot(struct brt_out *o)
{
    struct brt *r = o->r;
    size_t n = 0;

    r->enc.len = 0;
    for (size_t i = 0; i < r->local.nb; i++) {
        for (struct ient *e = r->local.b[i]; e != NULL; e = e->next) {
            if (r->enc.len > 0 &&
                r->enc.len + brc_interest_entry_size(e->plen, e->qlen) >
                    BRC_INTEREST_BATCH) {
                if (out_send_interest(o) != 0) {
                    return -1;
                }
                r->enc.len = 0;
            }
            if (brc_put_interest(&r->enc, BRC_INTEREST_ADD, e->key, e->plen,
                                 ient_queue(e), e->qlen) != 0) {
                ub_warn(MOD, "bus route to %s: out of memory; reconnecting",
                        o->name);
                out_kill(o);
                return -1;
            }
            n++;
        }
    }
    if (r->enc.len > 0 && out_send_interest(o) != 0) {
        return -1;
    }
    enc_trim(r);
    ub_debug(MOD, "bus route to %s: sent %zu interests", o->name, n);
    return 0;
}

static void out_frame_cb(struct ub_framed *f, const uint8_t *buf, size_t len)
{
    struct brt_out *o = ub_framed_data(f);
    (void)buf;
    (void)len;
    ub_warn(MOD, "bus route to %s: the peer wrote on our one-way connection; "
                 "closing it",
            o->name);
    out_kill(o);
}

static void out_end_congestion(struct brt_out *o)
{
    if (o->congested) {
        ub_warn(MOD, "bus route to %s: %llu messages dropped while its "
                     "queue was full",
                o->name, (unsigned long long)o->dropped);
        o->congested = false;
        o->dropped = 0;
    }
}

static void out_close_cb(struct ub_framed *f)
{
    struct brt_out *o = ub_framed_data(f);
    struct brt *r = o->r;

    o->f = NULL;
    o->f_closing = false;
    relink(r);
    out_end_congestion(o);
    if (r->closing) {
        maybe_finish(r);
        return;
    }
    ub_info(MOD, "bus route to %s lost; reconnecting", o->name);
    if (uv_now(r->loop) - o->up_since >= BRT_BACKOFF_MAX_MS) {
        o->backoff_ms = BRT_BACKOFF_MIN_MS;
    }
    out_retry(o);
}

static void out_connect_cb(void *arg, int status, const struct rt_peer *peer,
                           uv_stream_t *stream)
{
    struct brt_out *o = arg;
    struct brt *r = o->r;

    o->dial = NULL;
    if (r->closing) {
        if (stream) {
            uv_close((uv_handle_t *)stream, close_free_cb);
        }
        maybe_finish(r);
        return;
    }
    if (status != 0) {
        if (!o->failing) {
            ub_info(MOD, "bus route to %s: %s; retrying", o->address,
                    uv_strerror(status));
            o->failing = true;
        }
        out_retry(o);
        return;
    }
    if (peer->id == rt_hub_id(r->hub)) {
        ub_info(MOD, "bus route address %s is this node; not routing to it",
                o->address);
        o->disabled = true;
        uv_close((uv_handle_t *)stream, close_free_cb);
        return;
    }
    for (unsigned i = 0; i < r->n_out; i++) {
        struct brt_out *p = &r->outs[i];
        if (p != o && p->id == peer->id && !p->disabled) {
            ub_warn(MOD, "bus route addresses %s and %s both reach node %s; "
                         "using only %s",
                    p->address, o->address, peer->name, p->address);
            o->disabled = true;
            uv_close((uv_handle_t *)stream, close_free_cb);
            return;
        }
    }
    o->f = ub_framed_start(stream, raft_free, BRT_OUT_MAX_FRAME, out_frame_cb,
                           out_close_cb, o);
    if (o->f == NULL) {
        uv_close((uv_handle_t *)stream, close_free_cb);
        out_retry(o);
        return;
    }
    o->id = peer->id;
    snprintf(o->name, sizeof o->name, "%s", peer->name);
    o->up_since = uv_now(r->loop);
    o->failing = false;
    ub_info(MOD, "bus route to %s (%s) up", o->name, o->address);
    relink(r);
    out_send_snapshot(o);
}

static void out_dial(struct brt_out *o)
{
    struct brt *r = o->r;
    int rv = rt_hub_connect(r->hub, o->address, 0, RT_KIND_BUS, 0,
                            out_connect_cb, o, &o->dial);
    if (rv == UV_EINVAL) {
        ub_warn(MOD, "bus route to %s: not a usable address; giving it up",
                o->address);
        o->disabled = true;
    } else if (rv != 0) {
        o->dial = NULL;
        if (!o->failing) {
            ub_info(MOD, "bus route to %s: %s; retrying", o->address,
                    uv_strerror(rv));
            o->failing = true;
        }
        out_retry(o);
    }
}

static void timer_cb(uv_timer_t *t)
{
    struct brt_out *o = t->data;
    if (!o->r->closing && !o->disabled && o->dial == NULL && o->f == NULL) {
        out_dial(o);
    }
}

static void out_retry(struct brt_out *o)
{
    uv_timer_start(&o->timer, timer_cb, o->backoff_ms, 0);
    o->backoff_ms = o->backoff_ms * 2 > BRT_BACKOFF_MAX_MS
                        ? BRT_BACKOFF_MAX_MS
                        : o->backoff_ms * 2;
}

/* ------------------------------------------------------------------ */
/* API */

static void brt_free(struct brt *r)
{
    for (unsigned i = 0; i < r->n_out; i++) {
        free(r->outs[i].address);
    }
    free(r->outs);
    itab_free(&r->local);
    brc_buf_free(&r->enc);
    free(r->res);
    free(r->nq);
    free(r->q);
    free(r->ql);
    free(r->decided);
    free(r);
}

struct brt *brt_new(struct bus *b, struct rt_hub *hub,
                    const char *const *peers, unsigned n_peers)
{
    struct brt *r = calloc(1, sizeof *r);
    size_t n = BRT_MAX_PEERS;

    if (r == NULL) {
        return NULL;
    }
    if (n_peers > BRT_MAX_PEERS) {
        n_peers = BRT_MAX_PEERS;
    }
    r->bus = b;
    r->hub = hub;
    r->loop = rt_hub_loop(hub);
    r->n_out = n_peers;
    r->outs = calloc(n, sizeof *r->outs);
    r->res = calloc(n, sizeof *r->res);
    r->nq = calloc(n, sizeof *r->nq);
    r->q = calloc(n * BRC_MAX_QUEUES, sizeof *r->q);
    r->ql = calloc(n * BRC_MAX_QUEUES, sizeof *r->ql);
    if (!r->outs || !r->res || !r->nq || !r->q || !r->ql) {
        r->n_out = 0;
        brt_free(r);
        return NULL;
    }
    for (unsigned i = 0; i < n_peers; i++) {
        r->outs[i].address = strdup(peers[i]);
        if (r->outs[i].address == NULL) {
            brt_free(r);
            return NULL;
        }
    }
    r->rng = uv_hrtime() ^ (uint64_t)(uintptr_t)r;
    if (r->rng == 0) {
        r->rng = 1;
    }
    uv_timer_init(r->loop, &r->anchor);
    r->anchor.data = r;
    r->handles = 1;
    for (unsigned i = 0; i < n_peers; i++) {
        struct brt_out *o = &r->outs[i];
        o->r = r;
        snprintf(o->name, sizeof o->name, "%s", o->address);
        o->backoff_ms = BRT_BACKOFF_MIN_MS;
        uv_timer_init(r->loop, &o->timer);
        o->timer.data = o;
        r->handles++;
    }
    rt_hub_set_accept(hub, RT_KIND_BUS, accept_cb, r);
    for (unsigned i = 0; i < n_peers; i++) {
        out_dial(&r->outs[i]);
    }
    return r;
}

int brt_add_peer(struct brt *r, const char *address)
{
    struct brt_out *o;
    if (r->closing) {
        return -1;
    }
    for (unsigned i = 0; i < r->n_out; i++) {
        if (strcmp(r->outs[i].address, address) == 0) {
            return 0;
        }
    }
    if (r->n_out == BRT_MAX_PEERS) {
        return -1;
    }
    o = &r->outs[r->n_out];
    memset(o, 0, sizeof *o);
    o->address = strdup(address);
    if (o->address == NULL) {
        return -1;
    }
    o->r = r;
    snprintf(o->name, sizeof o->name, "%s", o->address);
    o->backoff_ms = BRT_BACKOFF_MIN_MS;
    uv_timer_init(r->loop, &o->timer);
    o->timer.data = o;
    r->handles++;
    r->n_out++;
    ub_info(MOD, "bus route to %s: a cluster member not in --routes; "
                 "routing to it too",
            address);
    out_dial(o);
    return 1;
}

static void maybe_finish(struct brt *r)
{
    if (!r->closing || r->handles > 0 || r->ins != NULL) {
        return;
    }
    for (unsigned i = 0; i < r->n_out; i++) {
        if (r->outs[i].dial != NULL || r->outs[i].f != NULL) {
            return;
        }
    }
    if (r->close_cb) {
        r->close_cb(r->close_arg);
    }
    brt_free(r);
}

static void anchor_closed_cb(uv_handle_t *h)
{
    struct brt *r = h->data;
    r->handles--;
    maybe_finish(r);
}

static void timer_closed_cb(uv_handle_t *h)
{
    struct brt_out *o = h->data;
    o->r->handles--;
    maybe_finish(o->r);
}

void brt_close(struct brt *r, void (*cb)(void *arg), void *arg)
{
    rt_accept_cb acb;
    void *aarg;

    if (r->closing) {
        return;
    }
    r->closing = true;
    r->close_cb = cb;
    r->close_arg = arg;
    rt_hub_get_accept(r->hub, RT_KIND_BUS, &acb, &aarg);
    if (acb == accept_cb && aarg == r) {
        rt_hub_set_accept(r->hub, RT_KIND_BUS, NULL, NULL);
    }
    for (unsigned i = 0; i < r->n_out; i++) {
        struct brt_out *o = &r->outs[i];
        uv_close((uv_handle_t *)&o->timer, timer_closed_cb);
        if (o->dial != NULL) {
            rt_connect_cancel(o->dial); /* the callback clears it */
        }
        out_kill(o);
    }
    for (struct brt_in *in = r->ins; in != NULL; in = in->next) {
        if (!in->closing) {
            in->closing = true;
            ub_framed_close(in->f);
        }
    }
    relink(r);
    uv_close((uv_handle_t *)&r->anchor, anchor_closed_cb);
}

void brt_interest(struct brt *r, const char *pattern, size_t plen,
                  const char *queue, size_t qlen, int delta)
{
    uint64_t h;
    struct ient *e;
    enum brc_type type;

    if (r->closing || delta == 0) {
        return;
    }
    if (qlen == 0) {
        queue = NULL;
    }
    h = ihash(pattern, plen, queue, qlen);
    e = itab_find(&r->local, pattern, plen, queue, qlen, h);
    if (delta > 0) {
        if (e != NULL) {
            e->refs += delta;
            return;
        }
        if (!brc_interest_ok(pattern, plen, queue, qlen)) {
            ub_warn(MOD, "subscription on '%.*s' not announced to routes: "
                         "pattern or queue too long",
                    (int)(plen > 64 ? 64 : plen), pattern);
            return;
        }
        e = ient_new(pattern, plen, queue, qlen, h);
        if (e == NULL || itab_add(&r->local, e) != 0) {
            free(e);
            ub_error(MOD, "out of memory recording interest in '%.*s'",
                     (int)(plen > 64 ? 64 : plen), pattern);
            return;
        }
        e->refs = delta;
        type = BRC_INTEREST_ADD;
    } else {
        if (e == NULL) {
            return; /* never announced (see above) */
        }
        e->refs += delta;
        if (e->refs > 0) {
            return;
        }
        itab_del(&r->local, e);
        type = BRC_INTEREST_DEL;
    }
    r->enc.len = 0;
    if (brc_put_interest(&r->enc, type, e->key, e->plen, ient_queue(e),
                         e->qlen) != 0) {
        /* Out of memory: the peers can no longer be trusted to match ours;
         * reconnecting resends everything. */
        for (unsigned i = 0; i < r->n_out; i++) {
            out_kill(&r->outs[i]);
        }
    } else {
        for (unsigned i = 0; i < r->n_out; i++) {
            if (out_open(&r->outs[i])) {
                out_send_interest(&r->outs[i]);
            }
        }
    }
    enc_trim(r);
    if (type == BRC_INTEREST_DEL) {
        free(e);
    }
}

static bool qname_in(const char *s, size_t len, const char *const *names,
                     const size_t *lens, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (lens[i] == len && memcmp(names[i], s, len) == 0) {
            return true;
        }
    }
    return false;
}

/* The group of r named (s, len) with members, or NULL. */
static const struct sl_group *result_group(const struct sl_result *res,
                                           const char *s, size_t len)
{
    for (size_t i = 0; i < res->ngroups; i++) {
        const struct sl_group *g = &res->groups[i];
        if (g->n > 0 && g->queue_len == len &&
            memcmp(g->queue, s, len) == 0) {
            return g;
        }
    }
    return NULL;
}

/* Marks (s, len) as assigned; false when it already was (or no memory). */
static bool decide(struct brt *r, const char *s, size_t len)
{
    for (size_t i = 0; i < r->n_decided; i++) {
        if (r->decided[i].len == len && memcmp(r->decided[i].s, s, len) == 0) {
            return false;
        }
    }
    if (r->n_decided == r->decided_cap) {
        size_t nc = r->decided_cap ? r->decided_cap * 2 : 16;
        struct qname *nd = realloc(r->decided, nc * sizeof *nd);
        if (nd == NULL) {
            return false;
        }
        r->decided = nd;
        r->decided_cap = nc;
    }
    r->decided[r->n_decided].s = s;
    r->decided[r->n_decided].len = len;
    r->n_decided++;
    return true;
}

/* Gives queue group (s, len) to one of the peers from `from` on whose
 * result has it, at random. */
static void assign_group(struct brt *r, unsigned from, const char *s,
                         size_t len)
{
    unsigned cands = 0, k;

    for (unsigned j = from; j < r->n_out; j++) {
        if (r->res[j] && result_group(r->res[j], s, len)) {
            cands++;
        }
    }
    if (cands == 0) {
        return;
    }
    k = (unsigned)(rnd(r) % cands);
    for (unsigned j = from; j < r->n_out; j++) {
        if (r->res[j] && result_group(r->res[j], s, len) && k-- == 0) {
            if (r->nq[j] < BRC_MAX_QUEUES) {
                r->q[j * BRC_MAX_QUEUES + r->nq[j]] = s;
                r->ql[j * BRC_MAX_QUEUES + r->nq[j]] = len;
                r->nq[j]++;
            } else {
                ub_debug(MOD, "bus route to %s: over %d queue groups for one "
                              "message; '%.*s' not served",
                         r->outs[j].name, BRC_MAX_QUEUES, (int)len, s);
            }
            return;
        }
    }
}

size_t brt_publish(struct brt *r, const struct bmsg *m,
                   const char *const *local_queues, const size_t *local_lens,
                   size_t n_local)
{
    size_t sent = 0;
    bool have = false;
    bool enc_plain = false; /* r->enc holds the frame without queues */

    if (r->closing) {
        return 0;
    }
    for (unsigned i = 0; i < r->n_out; i++) {
        struct brt_out *o = &r->outs[i];
        const struct sl_result *res = NULL;
        r->nq[i] = 0;
        if (out_open(o) && o->in != NULL) {
            res = sl_match(o->in->index, m->subject, m->subject_len);
            if (res != NULL && res->n == 0 && res->ngroups == 0) {
                res = NULL;
            }
        }
        r->res[i] = res;
        have = have || res != NULL;
    }
    if (!have) {
        return 0;
    }

    /* Queue groups nobody here served: one peer each. */
    r->n_decided = 0;
    for (unsigned i = 0; i < r->n_out; i++) {
        const struct sl_result *res = r->res[i];
        for (size_t k = 0; res != NULL && k < res->ngroups; k++) {
            const struct sl_group *g = &res->groups[k];
            if (g->n == 0 ||
                qname_in(g->queue, g->queue_len, local_queues, local_lens,
                         n_local) ||
                !decide(r, g->queue, g->queue_len)) {
                continue;
            }
            assign_group(r, i, g->queue, g->queue_len);
        }
    }

    r->enc.len = 0;
    for (unsigned i = 0; i < r->n_out; i++) {
        struct brt_out *o = &r->outs[i];
        int rv;
        if (r->res[i] == NULL || (r->res[i]->n == 0 && r->nq[i] == 0)) {
            continue;
        }
        if (ub_framed_pending(o->f) > BRT_MAX_PENDING) {
            if (!o->congested) {
                ub_warn(MOD, "bus route to %s: over %zu bytes queued; "
                             "dropping messages to it",
                        o->name, BRT_MAX_PENDING);
                o->congested = true;
            }
            o->dropped++;
            r->dropped++;
            continue;
        }
        out_end_congestion(o);
        if (r->nq[i] == 0 && enc_plain) {
            rv = 0; /* the frame of the previous peer fits this one too */
        } else {
            rv = brc_put_msg(&r->enc, m, r->q + i * BRC_MAX_QUEUES,
                             r->ql + i * BRC_MAX_QUEUES, r->nq[i]);
            enc_plain = rv == 0 && r->nq[i] == 0;
        }
        if (rv == -1) {
            uint64_t now = uv_now(r->loop);
            r->too_big++;
            if (r->too_big_logged == 0 ||
                now - r->too_big_logged >= BRT_TOO_BIG_LOG_MS) {
                ub_warn(MOD, "message on '%.*s' (%zu bytes) cannot cross a "
                             "route (limits: subject %d, headers %u, payload "
                             "%u); not forwarded (%llu so far)",
                        (int)(m->subject_len > 64 ? 64 : m->subject_len),
                        m->subject, m->total_len, BRC_MAX_SUBJECT,
                        BRC_MAX_HEADERS, BRC_MAX_PAYLOAD,
                        (unsigned long long)r->too_big);
                r->too_big_logged = now ? now : 1;
            }
            break;
        }
        if (rv != 0) {
            r->dropped++;
            continue;
        }
        if (out_send_enc(o) == 0) {
            sent++;
        }
    }
    enc_trim(r);
    return sent;
}

unsigned brt_connected(const struct brt *r)
{
    unsigned n = 0;
    for (unsigned i = 0; i < r->n_out; i++) {
        n += out_open(&r->outs[i]);
    }
    return n;
}
