/* raft_uv_transport over the route hub (see raft_transport.h).
 *
 * Happy path: raft calls init (id check), listen (accept_cb stored, the
 * group becomes reachable), then connect per peer: a hub dial whose success
 * hands the relayed stream to raft's connect callback.
 * Failure modes: a dial failure is reported as RAFT_NOCONNECTION (raft
 * retries after its connect retry delay); close cancels pending dials, which
 * then report RAFT_CANCELED, and fires raft's close callback from a later
 * loop iteration once every dial callback has fired.
 * Ownership: t->data belongs to raft's uv backend; our state lives in
 * t->impl (struct rtt). It is freed once rt_raft_transport_close() has run,
 * its defer timer has closed and no dial is pending. */
#include "route/raft_transport.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"

struct rtt;

/* The RT_KIND_RAFT accept handler of one hub: routes by group. */
struct rtt_demux {
    struct rt_hub *hub;
    struct rtt *list;                 /* registered transports */
    uint64_t last_warn_ms;            /* rate limit of "no such group" */
};

/* Peers retry every connect retry delay, so a group that is not (yet)
 * running here would otherwise log several warnings a second. */
#define NO_GROUP_WARN_INTERVAL_MS 10000

/* One raft connect request in flight. */
struct rtt_dial {
    struct rtt *r;
    struct raft_uv_connect *req;      /* raft's, borrowed */
    raft_uv_connect_cb cb;
    struct rt_connect *conn;          /* hub dial handle */
    struct rtt_dial *prev, *next;
};

struct rtt {
    struct raft_uv_transport *t;      /* NULL after rt_raft_transport_close */
    struct rt_hub *hub;               /* borrowed */
    struct rtt_demux *demux;
    struct rtt *next_in_demux;
    uint64_t group;
    raft_id id;
    raft_uv_accept_cb accept_cb;      /* set by listen, cleared by close */
    struct rtt_dial *dials;
    uv_timer_t defer;                 /* fires raft's close callback */
    bool defer_open;
    bool closing;                     /* close method called */
    raft_uv_transport_close_cb close_cb;
};

static void rtt_maybe_free(struct rtt *r)
{
    if (r->t == NULL && !r->defer_open && r->dials == NULL) {
        free(r);
    }
}

static void close_raft_stream_cb(uv_handle_t *handle)
{
    raft_free(handle);
}

static void drop_stream(uv_stream_t *stream)
{
    uv_close((uv_handle_t *)stream, close_raft_stream_cb);
}

/* --- inbound -------------------------------------------------------------*/

static void demux_accept(void *arg, const struct rt_peer *peer, uint64_t group,
                         uv_stream_t *stream)
{
    struct rtt_demux *d = arg;
    struct rtt *r;

    for (r = d->list; r != NULL; r = r->next_in_demux) {
        if (r->group == group) {
            break;
        }
    }
    if (r == NULL || r->accept_cb == NULL || r->closing || r->t == NULL) {
        uint64_t now = uv_now(rt_hub_loop(d->hub));
        if (d->last_warn_ms == 0 ||
            now - d->last_warn_ms >= NO_GROUP_WARN_INTERVAL_MS) {
            d->last_warn_ms = now;
            ub_warn("route", "raft connection from %s for group %" PRIu64
                    " which is not running here; closed (further ones "
                    "logged at debug level for %d s)",
                    peer->name, group, NO_GROUP_WARN_INTERVAL_MS / 1000);
        } else {
            ub_debug("route", "raft connection from %s for group %" PRIu64
                     " which is not running here; closed", peer->name, group);
        }
        drop_stream(stream);
        return;
    }
    r->accept_cb(r->t, peer->id, peer->address, stream);
}

static int demux_register(struct rtt *r, char *errmsg, size_t errlen)
{
    rt_accept_cb cb;
    void *arg;
    struct rtt_demux *d;

    rt_hub_get_accept(r->hub, RT_KIND_RAFT, &cb, &arg);
    if (cb != NULL && cb != demux_accept) {
        snprintf(errmsg, errlen,
                 "the hub's raft connection handler is taken by another user");
        return RAFT_INVALID;
    }
    d = arg;
    if (d == NULL) {
        d = calloc(1, sizeof *d);
        if (d == NULL) {
            snprintf(errmsg, errlen, "out of memory");
            return RAFT_NOMEM;
        }
        d->hub = r->hub;
        rt_hub_set_accept(r->hub, RT_KIND_RAFT, demux_accept, d);
    }
    for (struct rtt *o = d->list; o != NULL; o = o->next_in_demux) {
        if (o->group == r->group) {
            snprintf(errmsg, errlen,
                     "raft group %" PRIu64 " already has a transport on "
                     "this hub", r->group);
            return RAFT_INVALID;
        }
    }
    r->demux = d;
    r->next_in_demux = d->list;
    d->list = r;
    return 0;
}

static void demux_unregister(struct rtt *r)
{
    struct rtt_demux *d = r->demux;
    struct rtt **pp;

    if (d == NULL) {
        return;
    }
    for (pp = &d->list; *pp != NULL; pp = &(*pp)->next_in_demux) {
        if (*pp == r) {
            *pp = r->next_in_demux;
            break;
        }
    }
    r->demux = NULL;
    if (d->list == NULL) {
        rt_hub_set_accept(d->hub, RT_KIND_RAFT, NULL, NULL);
        free(d);
    }
}

/* --- close ---------------------------------------------------------------*/

static void rtt_defer_cb(uv_timer_t *timer)
{
    struct rtt *r = timer->data;
    raft_uv_transport_close_cb cb = r->close_cb;

    r->close_cb = NULL;
    if (cb != NULL && r->t != NULL) {
        cb(r->t);
    }
}

/* Schedules raft's close callback once closing and no dial is pending. */
static void rtt_maybe_fire_close(struct rtt *r)
{
    if (r->closing && r->close_cb != NULL && r->dials == NULL &&
        r->defer_open) {
        uv_timer_start(&r->defer, rtt_defer_cb, 0, 0);
    }
}

/* --- methods -------------------------------------------------------------*/

static int rtt_init(struct raft_uv_transport *t, raft_id id,
                    const char *address)
{
    struct rtt *r = t->impl;

    if (id != rt_hub_id(r->hub)) {
        snprintf(t->errmsg, sizeof t->errmsg,
                 "raft id %llu is not this node's id %" PRIu64
                 " (rt_node_id of '%s')",
                 id, rt_hub_id(r->hub), rt_hub_name(r->hub));
        return RAFT_INVALID;
    }
    r->id = id;
    if (address != NULL && strcmp(address, rt_hub_advertise(r->hub)) != 0) {
        ub_warn("route", "raft group %" PRIu64 " uses address %s but the "
                "route hub advertises %s", r->group, address,
                rt_hub_advertise(r->hub));
    }
    return 0;
}

static int rtt_listen(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
    struct rtt *r = t->impl;

    if (r->closing) {
        return RAFT_CANCELED;
    }
    r->accept_cb = cb;
    return 0;
}

static void rtt_dial_cb(void *arg, int status, const struct rt_peer *peer,
                        uv_stream_t *stream)
{
    struct rtt_dial *d = arg;
    struct rtt *r = d->r;
    struct raft_uv_connect *req = d->req;
    raft_uv_connect_cb cb = d->cb;
    int rv;

    (void)peer;
    if (d->prev != NULL) {
        d->prev->next = d->next;
    } else {
        r->dials = d->next;
    }
    if (d->next != NULL) {
        d->next->prev = d->prev;
    }
    free(d);

    if (r->t == NULL) {
        /* Released without the close method: nobody to tell. */
        if (stream != NULL) {
            drop_stream(stream);
        }
        rtt_maybe_free(r);
        return;
    }
    if (status == 0 && r->closing) {
        drop_stream(stream);
        stream = NULL;
        status = UV_ECANCELED;
    }
    if (status == 0) {
        rv = 0;
    } else if (status == UV_ECANCELED) {
        rv = RAFT_CANCELED;
    } else {
        rv = RAFT_NOCONNECTION;
    }
    cb(req, stream, rv);
    rtt_maybe_fire_close(r);
}

static int rtt_connect(struct raft_uv_transport *t,
                       struct raft_uv_connect *req, raft_id id,
                       const char *address, raft_uv_connect_cb cb)
{
    struct rtt *r = t->impl;
    struct rtt_dial *d;
    int rv;

    if (r->closing) {
        snprintf(t->errmsg, sizeof t->errmsg, "transport is closing");
        return RAFT_CANCELED;
    }
    d = calloc(1, sizeof *d);
    if (d == NULL) {
        snprintf(t->errmsg, sizeof t->errmsg, "out of memory");
        return RAFT_NOMEM;
    }
    d->r = r;
    d->req = req;
    d->cb = cb;
    rv = rt_hub_connect(r->hub, address, id, RT_KIND_RAFT, r->group,
                        rtt_dial_cb, d, &d->conn);
    if (rv != 0) {
        free(d);
        snprintf(t->errmsg, sizeof t->errmsg, "dial %s: %s", address,
                 uv_strerror(rv));
        return RAFT_NOCONNECTION;
    }
    d->next = r->dials;
    if (r->dials != NULL) {
        r->dials->prev = d;
    }
    r->dials = d;
    return 0;
}

static void rtt_close(struct raft_uv_transport *t,
                      raft_uv_transport_close_cb cb)
{
    struct rtt *r = t->impl;

    r->closing = true;
    r->accept_cb = NULL;
    r->close_cb = cb;
    /* Each cancelled dial calls back later with RAFT_CANCELED; the last one
     * schedules the close callback. */
    for (struct rtt_dial *d = r->dials; d != NULL; d = d->next) {
        rt_connect_cancel(d->conn);
    }
    rtt_maybe_fire_close(r);
}

/* --- public --------------------------------------------------------------*/

int rt_raft_transport_init(struct raft_uv_transport *t, struct rt_hub *hub,
                           uint64_t group)
{
    struct rtt *r;
    int rv;

    memset(t, 0, sizeof *t);
    t->version = 1;
    r = calloc(1, sizeof *r);
    if (r == NULL) {
        snprintf(t->errmsg, sizeof t->errmsg, "out of memory");
        return RAFT_NOMEM;
    }
    r->t = t;
    r->hub = hub;
    r->group = group;
    rv = demux_register(r, t->errmsg, sizeof t->errmsg);
    if (rv != 0) {
        free(r);
        return rv;
    }
    uv_timer_init(rt_hub_loop(hub), &r->defer);
    r->defer.data = r;
    r->defer_open = true;
    t->impl = r;
    t->init = rtt_init;
    t->listen = rtt_listen;
    t->connect = rtt_connect;
    t->close = rtt_close;
    return 0;
}

static void rtt_defer_closed(uv_handle_t *handle)
{
    struct rtt *r = handle->data;

    r->defer_open = false;
    rtt_maybe_free(r);
}

void rt_raft_transport_close(struct raft_uv_transport *t)
{
    struct rtt *r = t->impl;

    if (r == NULL) {
        return;
    }
    t->impl = NULL;
    demux_unregister(r);
    r->t = NULL;
    r->accept_cb = NULL;
    r->close_cb = NULL;
    for (struct rtt_dial *d = r->dials; d != NULL; d = d->next) {
        rt_connect_cancel(d->conn);
    }
    uv_close((uv_handle_t *)&r->defer, rtt_defer_closed);
}
