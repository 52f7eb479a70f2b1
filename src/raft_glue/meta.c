/* The meta group.
 *
 * Every request becomes an `op` that is attempted, and re-attempted on
 * retryable failures, until it succeeds or its deadline passes:
 *   leader   -> raft locally (apply, barrier, membership change);
 *   follower -> FORWARD channel to the leader over the route hub;
 *   no known leader -> wait for the retry sweep.
 * A write keeps its request id across attempts, so the KV applies it once
 * however many times it reaches the log (kv_store_apply deduplicates).
 *
 * Failure modes: the leader dies (forward channel closes: retry at the next
 * leader), leadership is lost with the entry in flight (LEADERSHIPLOST:
 * retry, dedup decides), the deadline passes (ETIMEOUT: outcome unknown for
 * a write, nothing was acknowledged), shutdown (ESHUTDOWN). */
#include "meta.h"

#include <inttypes.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "kv/fsm.h"
#include "lib/framed.h"
#include "lib/log.h"
#include "node.h"
#include "route.pb-c.h"
#include "route/hub.h"

#define META_GROUP 0
#define SWEEP_MS 5
#define RETRY_MS 20
#define WRITE_DEADLINE_MS 10000
#define READ_DEADLINE_MS 5000
#define MEMBER_DEADLINE_MS 60000
#define FORWARD_DEADLINE_MS 8000
#define MAX_FRAME (8u << 20)
#define HOUSEKEEPING_MS 2000
#define PURGE_EVERY_MS 30000
#define NODES_BUCKET "_nodes"

enum op_kind {
    OP_WRITE,
    OP_READ,
    OP_ADD,
    OP_JOIN,
    OP_REMOVE,
    OP_TRANSFER,
    OP_HEALTH,
};

struct fwd_conn;

struct op {
    struct meta *m;
    enum op_kind kind;
    uint64_t started_ns; /* uv_hrtime at creation */
    uint64_t deadline;
    bool local_only;    /* served for a follower: never forward again */
    bool inflight;      /* an attempt is running */
    bool forwarded;     /* waiting in the forward client's lists */
    bool sent;          /* reached raft or a leader at least once */
    bool waiting_apply; /* follower read: waiting until applied >= index */
    uint64_t next_try;  /* uv_now before which the sweep leaves it alone */
    void *buf;          /* encoded kv command (writes) */
    size_t len;
    uint8_t rid[KV_REQUEST_ID_LEN]; /* its request id: the key to its result */
    uint64_t id;        /* membership target */
    char address[256];
    char name[64];
    int role;
    struct meta_result res;
    meta_cb cb;
    void *arg;
    struct op *prev, *next; /* all live ops */
    /* Forward request bookkeeping (served side). */
    struct fwd_conn *reply_to;
    uint64_t reply_seq;
};

/* One inbound FORWARD connection on the leader side. */
struct fwd_conn {
    struct meta *m;
    struct ub_framed *f;
    unsigned refs;
    bool closed;
    struct fwd_conn *prev, *next; /* open connections, for shutdown */
};

/* Our outbound FORWARD connection to the current leader. */
struct fwd_pending {
    uint64_t seq;
    struct op *op;
    struct fwd_pending *next;
};

struct fwd_client {
    struct meta *m;
    uint64_t leader_id;
    struct rt_connect *dial;
    struct ub_framed *f;
    struct fwd_pending *pending;
    /* Requests written before the connection came up wait here. */
    struct fwd_pending *queued;
    bool dead;
};

#define DISC_MAX_CONFIG 16

struct disc_peer {
    struct meta *m;
    char route[256];
    bool answered;
    bool has_state;
    unsigned kv_replicas; /* its --kv-replicas */
    bool same_members;    /* it names the same set of nodes as we do */
    unsigned n_config; /* its configuration, sorted by id */
    struct rg_server config[DISC_MAX_CONFIG];
    char config_addr[DISC_MAX_CONFIG][256];
    uint64_t id;
    char address[256];
    char name[64];
    uint64_t leader_id;
    char leader_address[256];
    struct rt_connect *dial;
    struct ub_framed *f;
};

struct meta {
    uv_loop_t *loop;
    struct rt_hub *hub;
    struct kv_store *kv;
    struct raft_fsm fsm;
    struct rg_node *node;
    char name[64];
    uint64_t id;
    char advertise[256];
    char raft_dir[1024];
    unsigned kv_replicas;
    struct rg_node_config ncfg;
    enum { PH_NEW, PH_DISCOVER, PH_JOIN, PH_RUN, PH_CLOSING } phase;
    struct op ops; /* list head */
    uv_timer_t sweep;
    uv_timer_t housekeeping;
    uint64_t last_purge;
    uint64_t seq;
    struct fwd_client *client;
    struct fwd_conn conns; /* list head of inbound FORWARD connections */
    uint64_t hint_id;      /* leader hint for a joining node */
    char hint_addr[256];
    struct disc_peer *peers;
    unsigned n_peers;
    uint64_t disc_last_log;
    bool join_inflight;
    bool name_inflight;
    bool purge_inflight;
    bool changing; /* a local membership op holds raft's one change slot */
    bool unblocking; /* a barrier to commit a predecessor's change runs */
    char name_buf[64];
    struct meta_latency latency;
    unsigned handles_open;
    void (*close_cb)(void *);
    void *close_arg;
};

static const char *const err_codes[] = {
    "ok",       "no_leader", "timeout",  "shutting_down",
    "invalid",  "not_found", "internal",
};

const char *meta_err_code(int err)
{
    if (err < 0 || (size_t)err >= sizeof err_codes / sizeof err_codes[0]) {
        return "internal";
    }
    return err_codes[err];
}

static int64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static bool raft_retryable(int status)
{
    return status == RAFT_NOTLEADER || status == RAFT_LEADERSHIPLOST ||
           status == RAFT_NOCONNECTION || status == RAFT_CANTCHANGE ||
           status == RAFT_BUSY;
}

/* ------------------------------------------------------------------ */
/* op lifecycle                                                         */

static void attempt(struct op *op);
static void fwd_reply(struct op *op);

const double META_LAT_BOUNDS_MS[META_LAT_BUCKETS - 1] = {
    0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000,
};

static void record_latency(struct meta *m, double ms)
{
    unsigned i = 0;
    while (i < META_LAT_BUCKETS - 1 && ms > META_LAT_BOUNDS_MS[i]) {
        i++;
    }
    m->latency.buckets[i]++;
    m->latency.count++;
    m->latency.sum_ms += ms;
}

void meta_get_latency(const struct meta *m, struct meta_latency *out)
{
    *out = m->latency;
}

static void sweep_cb(uv_timer_t *t);
static void fwd_forget(struct op *op);

static struct op *op_new(struct meta *m, enum op_kind kind, unsigned ms,
                         meta_cb cb, void *arg)
{
    struct op *op = calloc(1, sizeof *op);
    if (op == NULL) {
        return NULL;
    }
    op->m = m;
    op->kind = kind;
    op->started_ns = uv_hrtime();
    op->deadline = uv_now(m->loop) + ms;
    op->cb = cb;
    op->arg = arg;
    if (m->ops.next == &m->ops && m->phase != PH_CLOSING) {
        /* The sweep runs only while requests are waiting. */
        uv_timer_start(&m->sweep, sweep_cb, SWEEP_MS, SWEEP_MS);
    }
    op->next = m->ops.next;
    op->prev = &m->ops;
    m->ops.next->prev = op;
    m->ops.next = op;
    return op;
}

static void op_finish(struct op *op, int err, const char *msg)
{
    op->res.err = err;
    if (err == META_OK) {
        op->res.message[0] = '\0';
    } else if (msg && msg != op->res.message) {
        snprintf(op->res.message, sizeof op->res.message, "%s", msg);
    }
    op->prev->next = op->next;
    op->next->prev = op->prev;
    if (op->kind == OP_WRITE && err == META_OK && op->reply_to == NULL) {
        record_latency(op->m, (double)(uv_hrtime() - op->started_ns) / 1e6);
    }
    if (op->reply_to) {
        fwd_reply(op);
    } else if (op->cb) {
        op->cb(op->arg, &op->res);
    }
    free(op->buf);
    free(op);
}

/* Hands the op back to the sweep, which retries it after a short back-off
 * or ends it at its deadline. Never finishes another op than the one the
 * caller is handling, except at shutdown, so the sweep's iteration stays
 * valid. */
static void op_retry(struct op *op, const char *why)
{
    op->inflight = false;
    op->next_try = uv_now(op->m->loop) + RETRY_MS;
    snprintf(op->res.message, sizeof op->res.message, "%s", why ? why : "");
    if (op->m->phase == PH_CLOSING) {
        op_finish(op, META_ESHUTDOWN, "the node is shutting down");
    } else if (op->local_only) {
        /* Served for a follower: it retries, at whoever leads now. */
        op_finish(op, META_ENOLEADER, why);
    }
}

static void sweep_cb(uv_timer_t *t)
{
    struct meta *m = t->data;
    uint64_t now = uv_now(m->loop);
    struct op *op = m->ops.next;
    while (op != &m->ops) {
        struct op *next = op->next;
        if (op->waiting_apply) {
            if (m->node && rg_node_applied_index(m->node) >= op->res.index) {
                op->waiting_apply = false;
                op_finish(op, META_OK, NULL);
            } else if (now >= op->deadline) {
                op_finish(op, META_ETIMEOUT, "timed out catching up to read");
            }
        } else if (op->inflight && op->forwarded && now >= op->deadline) {
            /* The leader took it and never answered (stopped, partitioned):
             * the outcome of a write is unknown. */
            fwd_forget(op);
            op_finish(op, META_ETIMEOUT, "the leader did not answer in time");
        } else if (!op->inflight) {
            if (now < op->next_try) {
                /* Backing off after a failed attempt. */
            } else if (now >= op->deadline) {
                /* Never handed to a leader: it certainly did not happen. */
                op_finish(op, op->sent ? META_ETIMEOUT : META_ENOLEADER,
                          op->res.message[0]
                              ? op->res.message
                              : "no leader could take the request in time");
            } else {
                attempt(op);
            }
        }
        op = next;
    }
    if (m->ops.next == &m->ops) {
        uv_timer_stop(t);
    }
}

/* ------------------------------------------------------------------ */
/* local (leader) execution                                             */

static void local_apply_cb(void *arg, int status, void *result)
{
    struct op *op = arg;
    (void)result;
    if (status == 0) {
        /* The FSM records each request id's result; ours is there now. */
        if (kv_store_result(op->m->kv, op->rid, &op->res.kv) != KV_OK) {
            op_finish(op, META_EINTERNAL, "applied entry has no result");
            return;
        }
        op_finish(op, META_OK, NULL);
        return;
    }
    if (raft_retryable(status) || status == RAFT_SHUTDOWN) {
        op_retry(op, raft_strerror(status));
        return;
    }
    op_finish(op, META_EINTERNAL, raft_strerror(status));
}

static void local_barrier_cb(void *arg, int status, uint64_t index)
{
    struct op *op = arg;
    if (status == 0) {
        /* Locally everything up to the barrier is applied; a follower needs
         * only what precedes it, which it usually has already. */
        op->res.index = index > 0 ? index - 1 : 0;
        op_finish(op, META_OK, NULL);
        return;
    }
    op_retry(op, raft_strerror(status));
}

static const struct raft_server *find_server(struct meta *m, uint64_t id)
{
    const struct raft_configuration *c = rg_node_configuration(m->node);
    for (unsigned i = 0; i < c->n; i++) {
        if (c->servers[i].id == id) {
            return &c->servers[i];
        }
    }
    return NULL;
}

static void local_change_cb(void *arg, int status);

static void unblock_done(void *arg, int status, uint64_t index)
{
    struct meta *m = arg;
    m->unblocking = false;
    if (status == 0 && rg_node_repair_stale_change(m->node)) {
        ub_warn("meta", "libraft still counted a committed configuration "
                        "change as pending (index below %" PRIu64 "); "
                        "marked it committed so changes can proceed",
                index);
    }
}

/* raft refuses a change while the last configuration entry is not
 * committed. A leader elected with such an entry from an earlier term
 * commits it only with an entry of its own term, and an idle cluster
 * proposes none; and libraft 0.22 can keep a change it caught up on as a
 * restarted follower counted as pending forever (rg_node.h). A barrier
 * commits an entry of this term; after it, a pending index at or below the
 * applied index is stale and is repaired. Either way the retry that follows
 * finds the slot free. Found by tests/jepsen (membership workload). */
static void unblock_changes(struct meta *m, int rv)
{
    if (rv == RAFT_CANTCHANGE && !m->unblocking && m->node != NULL &&
        rg_node_is_leader(m->node) &&
        rg_node_barrier(m->node, unblock_done, m) == 0) {
        m->unblocking = true;
    }
}

/* One step of add/promote; re-reads the configuration every time so a retry
 * (here or on a new leader) picks up where the last attempt stopped. */
static void member_step(struct op *op)
{
    struct meta *m = op->m;
    const struct raft_server *s = find_server(m, op->id);
    int rv;

    if (op->kind == OP_JOIN && op->role < 0) {
        op->role = rg_node_voters(m->node) < m->kv_replicas ? RAFT_VOTER
                                                            : RAFT_STANDBY;
    }
    if (s == NULL) {
        ub_info("meta", "adding %s (%016" PRIx64 ") at %s as spare",
                op->name, op->id, op->address);
        rv = rg_node_add(m->node, op->id, op->address, local_change_cb, op);
    } else if (s->role == op->role) {
        m->changing = false;
        op_finish(op, META_OK, NULL);
        return;
    } else if (s->role == RAFT_SPARE && op->role == RAFT_VOTER) {
        ub_info("meta", "making %016" PRIx64 " a standby", op->id);
        rv = rg_node_assign(m->node, op->id, RAFT_STANDBY, local_change_cb, op);
    } else {
        ub_info("meta", "assigning %016" PRIx64 " role %s%s", op->id,
                raft_role_name(op->role),
                op->role == RAFT_VOTER ? " (after catch-up)" : "");
        rv = rg_node_assign(m->node, op->id, op->role, local_change_cb, op);
    }
    if (rv != 0) {
        m->changing = false;
        unblock_changes(m, rv);
        if (raft_retryable(rv)) {
            op_retry(op, raft_strerror(rv));
        } else {
            op_finish(op, META_EINVALID, raft_strerror(rv));
        }
    }
}

static void local_change_cb(void *arg, int status)
{
    struct op *op = arg;
    struct meta *m = op->m;
    if (status != 0) {
        m->changing = false;
        unblock_changes(m, status);
        ub_warn("meta", "membership change for %016" PRIx64 ": %s", op->id,
                raft_strerror(status));
        op_retry(op, raft_strerror(status));
        return;
    }
    if (op->kind == OP_REMOVE) {
        m->changing = false;
        op_finish(op, META_OK, NULL);
        return;
    }
    if (!rg_node_is_leader(m->node)) {
        m->changing = false;
        op_retry(op, "leadership moved during the change");
        return;
    }
    member_step(op);
}

static void local_transfer_cb(void *arg, int status)
{
    struct op *op = arg;
    if (status == 0) {
        op_finish(op, META_OK, NULL);
    } else {
        op_finish(op, META_ENOLEADER, "leadership did not move in time");
    }
}

static void attempt_local(struct op *op)
{
    struct meta *m = op->m;
    int rv = 0;
    void *copy;

    switch (op->kind) {
    case OP_WRITE:
        copy = raft_malloc(op->len);
        if (copy == NULL) {
            op_retry(op, "out of memory");
            return;
        }
        memcpy(copy, op->buf, op->len);
        op->inflight = true;
        rv = rg_node_apply(m->node, copy, op->len, local_apply_cb, op);
        op->sent = op->sent || rv == 0;
        break;
    case OP_READ:
        op->inflight = true;
        rv = rg_node_barrier(m->node, local_barrier_cb, op);
        break;
    case OP_ADD:
    case OP_JOIN:
        if (m->changing) {
            return; /* one change at a time: wait for the sweep */
        }
        m->changing = true;
        op->inflight = true;
        op->sent = true;
        member_step(op);
        return;
    case OP_REMOVE:
        if (m->changing) {
            return;
        }
        if (find_server(m, op->id) == NULL) {
            op_finish(op, META_ENOTFOUND, "no such member");
            return;
        }
        if (op->id == m->id) {
            /* Hand leadership over first; the new leader removes us. */
            rv = rg_node_transfer(m->node, 0, NULL, NULL);
            op_retry(op, rv ? raft_strerror(rv) : "handing leadership over");
            return;
        }
        m->changing = true;
        op->inflight = true;
        ub_info("meta", "removing %016" PRIx64, op->id);
        rv = rg_node_remove(m->node, op->id, local_change_cb, op);
        if (rv != 0) {
            m->changing = false;
            unblock_changes(m, rv);
        }
        break;
    case OP_HEALTH: {
        const struct raft_configuration *c = rg_node_configuration(m->node);
        for (unsigned i = 0; i < c->n && op->res.n_healthy < 16; i++) {
            if (rg_node_peer_healthy(m->node, c->servers[i].id)) {
                op->res.healthy[op->res.n_healthy++] = c->servers[i].id;
            }
        }
        op_finish(op, META_OK, NULL);
        return;
    }
    case OP_TRANSFER:
        if (op->id != 0 && find_server(m, op->id) == NULL) {
            op_finish(op, META_ENOTFOUND, "no such member");
            return;
        }
        if (op->id == m->id) {
            op_finish(op, META_OK, NULL);
            return;
        }
        op->inflight = true;
        rv = rg_node_transfer(m->node, op->id, local_transfer_cb, op);
        break;
    }
    if (rv != 0) {
        if (raft_retryable(rv) || rv == RAFT_SHUTDOWN) {
            op_retry(op, raft_strerror(rv));
        } else if (op->kind == OP_TRANSFER && rv == RAFT_NOTFOUND) {
            op_finish(op, META_EINVALID,
                      "no other voter is up to date enough to take over");
        } else if (rv == RAFT_BADID || rv == RAFT_NOTFOUND) {
            op_finish(op, META_EINVALID, raft_strerror(rv));
        } else {
            op_finish(op, META_EINTERNAL, raft_strerror(rv));
        }
    }
}

/* ------------------------------------------------------------------ */
/* forwarding: client side                                              */

static void fwd_client_kill(struct fwd_client *c);

static void free_stream(void *p)
{
    raft_free(p);
}

static void close_free_cb(uv_handle_t *h)
{
    raft_free(h);
}

static void client_frame_cb(struct ub_framed *f, const uint8_t *buf,
                            size_t len)
{
    struct fwd_client *c = ub_framed_data(f);
    Unibus__Route__ForwardResponse *r;
    struct fwd_pending **pp;

    r = unibus__route__forward_response__unpack(NULL, len, buf);
    if (r == NULL) {
        ub_warn("meta", "undecodable forward response; dropping the channel");
        ub_framed_close(f);
        return;
    }
    for (pp = &c->pending; *pp; pp = &(*pp)->next) {
        if ((*pp)->seq == r->seq) {
            struct fwd_pending *p = *pp;
            struct op *op = p->op;
            *pp = p->next;
            free(p);
            op->inflight = false;
            op->forwarded = false;
            if (r->err == META_OK) {
                op->res.kv.code = (enum kv_code)r->kv_code;
                op->res.kv.revision = r->revision;
                op->res.kv.txn_succeeded = r->txn_succeeded;
                op->res.index = r->index;
                for (size_t i = 0; i < r->n_healthy && i < 16; i++) {
                    op->res.healthy[op->res.n_healthy++] = r->healthy[i];
                }
                if (op->kind == OP_READ &&
                    rg_node_applied_index(c->m->node) < op->res.index) {
                    /* Linearizable once we applied what the leader had;
                     * the sweep finishes it. */
                    op->waiting_apply = true;
                } else {
                    op_finish(op, META_OK, NULL);
                }
            } else if (r->err == META_ENOLEADER) {
                if (r->leader_id && r->leader_address[0]) {
                    c->m->hint_id = r->leader_id;
                    snprintf(c->m->hint_addr, sizeof c->m->hint_addr, "%s",
                             r->leader_address);
                }
                op_retry(op, r->message);
            } else {
                op_finish(op, r->err, r->message);
            }
            break;
        }
    }
    unibus__route__forward_response__free_unpacked(r, NULL);
}

static void fail_pending(struct fwd_pending *p)
{
    while (p) {
        struct fwd_pending *next = p->next;
        p->op->forwarded = false;
        op_retry(p->op, "lost the connection to the leader");
        free(p);
        p = next;
    }
}

static void client_close_cb(struct ub_framed *f)
{
    struct fwd_client *c = ub_framed_data(f);
    if (c == NULL) {
        return;
    }
    c->f = NULL;
    fwd_client_kill(c);
}

static int client_send(struct fwd_client *c, struct fwd_pending *p);

static void client_connect_cb(void *arg, int status, const struct rt_peer *peer,
                              uv_stream_t *stream)
{
    struct fwd_client *c = arg;
    struct fwd_pending *q;
    (void)peer;
    c->dial = NULL;
    if (status != 0 || c->dead) {
        if (stream) {
            uv_close((uv_handle_t *)stream, close_free_cb);
        }
        fwd_client_kill(c);
        return;
    }
    c->f = ub_framed_start(stream, free_stream, MAX_FRAME, client_frame_cb,
                           client_close_cb, c);
    if (c->f == NULL) {
        uv_close((uv_handle_t *)stream, close_free_cb);
        fwd_client_kill(c);
        return;
    }
    q = c->queued;
    c->queued = NULL;
    while (q) {
        struct fwd_pending *next = q->next;
        q->next = NULL;
        q->op->sent = true;
        if (client_send(c, q) != 0) {
            q->op->forwarded = false;
            op_retry(q->op, "forward channel failed");
            free(q);
        }
        q = next;
    }
}

/* Marks the client dead, fails its requests into retry and frees it once no
 * handle refers to it. */
static void fwd_client_kill(struct fwd_client *c)
{
    struct meta *m = c->m;
    if (m->client == c) {
        m->client = NULL;
    }
    c->dead = true;
    fail_pending(c->pending);
    c->pending = NULL;
    fail_pending(c->queued);
    c->queued = NULL;
    if (c->dial) {
        rt_connect_cancel(c->dial); /* connect cb fires, then we free */
        return;
    }
    if (c->f) {
        ub_framed_set_data(c->f, NULL);
        ub_framed_close(c->f);
        c->f = NULL;
    }
    free(c);
}

static int client_send(struct fwd_client *c, struct fwd_pending *p)
{
    struct op *op = p->op;
    Unibus__Route__ForwardRequest req;
    Unibus__Route__Member mem;
    uint8_t *buf;
    size_t len;
    int rv;

    unibus__route__forward_request__init(&req);
    unibus__route__member__init(&mem);
    req.seq = p->seq;
    switch (op->kind) {
    case OP_WRITE:
        req.body_case = UNIBUS__ROUTE__FORWARD_REQUEST__BODY_PROPOSE;
        req.propose.data = op->buf;
        req.propose.len = op->len;
        break;
    case OP_READ:
        req.body_case = UNIBUS__ROUTE__FORWARD_REQUEST__BODY_READ_INDEX;
        req.read_index = 1;
        break;
    case OP_ADD:
    case OP_JOIN:
        mem.id = op->id;
        mem.address = op->address;
        mem.name = op->name;
        mem.role = op->role == RAFT_STANDBY ? UNIBUS__ROUTE__ROLE__ROLE_STANDBY
                   : op->role == RAFT_SPARE ? UNIBUS__ROUTE__ROLE__ROLE_SPARE
                                            : UNIBUS__ROUTE__ROLE__ROLE_VOTER;
        if (op->kind == OP_JOIN) {
            req.body_case = UNIBUS__ROUTE__FORWARD_REQUEST__BODY_JOIN;
            req.join = &mem;
        } else {
            req.body_case = UNIBUS__ROUTE__FORWARD_REQUEST__BODY_ADD;
            req.add = &mem;
        }
        break;
    case OP_REMOVE:
        req.body_case = UNIBUS__ROUTE__FORWARD_REQUEST__BODY_REMOVE;
        req.remove = op->id;
        break;
    case OP_TRANSFER:
        req.body_case = UNIBUS__ROUTE__FORWARD_REQUEST__BODY_TRANSFER;
        req.transfer = op->id;
        break;
    case OP_HEALTH:
        req.body_case = UNIBUS__ROUTE__FORWARD_REQUEST__BODY_HEALTH;
        req.health = 1;
        break;
    }
    len = unibus__route__forward_request__get_packed_size(&req);
    buf = malloc(len);
    if (buf == NULL) {
        return -1;
    }
    unibus__route__forward_request__pack(&req, buf);
    rv = ub_framed_send(c->f, buf, len);
    free(buf);
    if (rv != 0) {
        return -1;
    }
    p->next = c->pending;
    c->pending = p;
    return 0;
}

static void attempt_forward(struct op *op, uint64_t leader_id,
                            const char *leader_addr)
{
    struct meta *m = op->m;
    struct fwd_client *c = m->client;
    struct fwd_pending *p;
    int rv;

    if (c && c->leader_id != leader_id) {
        fwd_client_kill(c);
        c = NULL;
    }
    if (c == NULL) {
        c = calloc(1, sizeof *c);
        if (c == NULL) {
            return;
        }
        c->m = m;
        c->leader_id = leader_id;
        rv = rt_hub_connect(m->hub, leader_addr, leader_id, RT_KIND_FORWARD,
                            META_GROUP, client_connect_cb, c, &c->dial);
        if (rv != 0) {
            free(c);
            return;
        }
        m->client = c;
    }
    p = calloc(1, sizeof *p);
    if (p == NULL) {
        return;
    }
    p->seq = ++m->seq;
    p->op = op;
    op->inflight = true;
    op->forwarded = true;
    if (c->f == NULL) {
        p->next = c->queued;
        c->queued = p;
        return;
    }
    if (client_send(c, p) != 0) {
        free(p);
        op->forwarded = false;
        op_retry(op, "forward channel failed");
        return;
    }
    op->sent = true;
}

/* Takes a forwarded op out of the client's lists (its answer, should it
 * come, is then ignored). */
static void fwd_forget(struct op *op)
{
    struct fwd_client *c = op->m->client;
    struct fwd_pending **lists[2];
    if (c == NULL) {
        return;
    }
    lists[0] = &c->pending;
    lists[1] = &c->queued;
    for (int i = 0; i < 2; i++) {
        for (struct fwd_pending **pp = lists[i]; *pp; pp = &(*pp)->next) {
            if ((*pp)->op == op) {
                struct fwd_pending *p = *pp;
                *pp = p->next;
                free(p);
                op->forwarded = false;
                return;
            }
        }
    }
}

static void attempt(struct op *op)
{
    struct meta *m = op->m;
    uint64_t lid = 0;
    const char *laddr = NULL;

    if (op->inflight) {
        return;
    }
    if (m->phase == PH_CLOSING) {
        op_finish(op, META_ESHUTDOWN, "the node is shutting down");
        return;
    }
    if (m->node == NULL || m->phase == PH_DISCOVER) {
        return; /* not started yet: the sweep retries */
    }
    if (rg_node_is_leader(m->node)) {
        attempt_local(op);
        return;
    }
    if (op->local_only) {
        op_finish(op, META_ENOLEADER, "not the leader");
        return;
    }
    rg_node_leader(m->node, &lid, &laddr);
    if (lid == 0 && m->hint_id != 0) {
        /* A joining node hears of no leader until it is added. */
        lid = m->hint_id;
        laddr = m->hint_addr;
    }
    if (lid != 0 && lid != m->id && laddr && m->hub) {
        attempt_forward(op, lid, laddr);
    }
}

/* ------------------------------------------------------------------ */
/* forwarding: server side (we are, or were, the leader)                */

static void conn_unref(struct fwd_conn *fc)
{
    if (--fc->refs == 0) {
        free(fc);
    }
}

static void fwd_reply(struct op *op)
{
    struct fwd_conn *fc = op->reply_to;
    Unibus__Route__ForwardResponse r;
    uint8_t *buf;
    size_t len;
    uint64_t lid = 0;
    const char *laddr = NULL;

    if (!fc->closed) {
        unibus__route__forward_response__init(&r);
        r.seq = op->reply_seq;
        r.err = op->res.err;
        r.kv_code = (uint32_t)op->res.kv.code;
        r.revision = op->res.kv.revision;
        r.txn_succeeded = op->res.kv.txn_succeeded;
        r.index = op->res.index;
        r.message = op->res.message;
        if (op->m->node) {
            rg_node_leader(op->m->node, &lid, &laddr);
        }
        r.leader_id = lid;
        r.leader_address = (char *)(laddr ? laddr : "");
        r.n_healthy = op->res.n_healthy;
        r.healthy = op->res.healthy;
        len = unibus__route__forward_response__get_packed_size(&r);
        buf = malloc(len);
        if (buf) {
            unibus__route__forward_response__pack(&r, buf);
            ub_framed_send(fc->f, buf, len);
            free(buf);
        }
    }
    op->reply_to = NULL;
    conn_unref(fc);
}

static void server_frame_cb(struct ub_framed *f, const uint8_t *buf,
                            size_t len)
{
    struct fwd_conn *fc = ub_framed_data(f);
    struct meta *m = fc->m;
    Unibus__Route__ForwardRequest *req;
    Unibus__Route__Member *mem = NULL;
    struct op *op = NULL;
    enum op_kind kind;

    req = unibus__route__forward_request__unpack(NULL, len, buf);
    if (req == NULL) {
        ub_warn("meta", "undecodable forward request; closing the channel");
        ub_framed_close(f);
        return;
    }
    switch (req->body_case) {
    case UNIBUS__ROUTE__FORWARD_REQUEST__BODY_PROPOSE:
        kind = OP_WRITE;
        break;
    case UNIBUS__ROUTE__FORWARD_REQUEST__BODY_READ_INDEX:
        kind = OP_READ;
        break;
    case UNIBUS__ROUTE__FORWARD_REQUEST__BODY_JOIN:
        kind = OP_JOIN;
        mem = req->join;
        break;
    case UNIBUS__ROUTE__FORWARD_REQUEST__BODY_ADD:
        kind = OP_ADD;
        mem = req->add;
        break;
    case UNIBUS__ROUTE__FORWARD_REQUEST__BODY_REMOVE:
        kind = OP_REMOVE;
        break;
    case UNIBUS__ROUTE__FORWARD_REQUEST__BODY_TRANSFER:
        kind = OP_TRANSFER;
        break;
    case UNIBUS__ROUTE__FORWARD_REQUEST__BODY_HEALTH:
        kind = OP_HEALTH;
        break;
    default:
        goto out;
    }
    op = op_new(m, kind,
                kind == OP_ADD || kind == OP_JOIN ? MEMBER_DEADLINE_MS
                                                  : FORWARD_DEADLINE_MS,
                NULL, NULL);
    if (op == NULL) {
        goto out;
    }
    op->local_only = true;
    op->reply_to = fc;
    op->reply_seq = req->seq;
    fc->refs++;
    if (kind == OP_WRITE) {
        struct kv_cmd *cmd = NULL;
        if (kv_cmd_decode(req->propose.data, req->propose.len, &cmd) != 0) {
            op_finish(op, META_EINVALID, "undecodable command");
            goto out;
        }
        memcpy(op->rid, cmd->request_id, sizeof op->rid);
        kv_cmd_free(cmd);
        op->buf = malloc(req->propose.len ? req->propose.len : 1);
        if (op->buf == NULL) {
            op_finish(op, META_EINTERNAL, "out of memory");
            goto out;
        }
        memcpy(op->buf, req->propose.data, req->propose.len);
        op->len = req->propose.len;
    } else if (mem) {
        op->id = mem->id;
        snprintf(op->address, sizeof op->address, "%s", mem->address);
        snprintf(op->name, sizeof op->name, "%s", mem->name);
        op->role = kind == OP_JOIN ? -1
                   : mem->role == UNIBUS__ROUTE__ROLE__ROLE_STANDBY ? RAFT_STANDBY
                   : mem->role == UNIBUS__ROUTE__ROLE__ROLE_SPARE   ? RAFT_SPARE
                                                                    : RAFT_VOTER;
        if (op->id == 0 || op->address[0] == '\0') {
            op_finish(op, META_EINVALID, "member needs an id and an address");
            goto out;
        }
    } else if (kind == OP_REMOVE) {
        op->id = req->remove;
    } else if (kind == OP_TRANSFER) {
        op->id = req->transfer;
    }
    attempt(op);
out:
    unibus__route__forward_request__free_unpacked(req, NULL);
}

static void server_close_cb(struct ub_framed *f)
{
    struct fwd_conn *fc = ub_framed_data(f);
    fc->closed = true;
    fc->prev->next = fc->next;
    fc->next->prev = fc->prev;
    conn_unref(fc);
}

static void forward_accept_cb(void *arg, const struct rt_peer *peer,
                              uint64_t group, uv_stream_t *stream)
{
    struct meta *m = arg;
    struct fwd_conn *fc;
    (void)group;
    fc = calloc(1, sizeof *fc);
    if (fc == NULL) {
        uv_close((uv_handle_t *)stream, close_free_cb);
        return;
    }
    fc->m = m;
    fc->refs = 1;
    ub_debug("meta", "forward channel from %s", peer->name);
    fc->f = ub_framed_start(stream, free_stream, MAX_FRAME, server_frame_cb,
                            server_close_cb, fc);
    if (fc->f == NULL) {
        free(fc);
        uv_close((uv_handle_t *)stream, close_free_cb);
        return;
    }
    fc->next = m->conns.next;
    fc->prev = &m->conns;
    m->conns.next->prev = fc;
    m->conns.next = fc;
}

/* ------------------------------------------------------------------ */
/* discovery                                                            */

static bool node_has_state(struct meta *m)
{
    if (m->node && m->phase == PH_RUN) {
        return rg_node_configuration(m->node)->n > 0;
    }
    return rg_dir_has_state(m->raft_dir);
}

static void ignore_frame(struct ub_framed *f, const uint8_t *buf, size_t len)
{
    (void)buf;
    (void)len;
    ub_framed_close(f); /* the dialer has nothing to say on DISCOVER */
}

static void ignore_close(struct ub_framed *f)
{
    (void)f;
}

static void discover_accept_cb(void *arg, const struct rt_peer *peer,
                               uint64_t group, uv_stream_t *stream)
{
    struct meta *m = arg;
    Unibus__Route__Discover d;
    struct ub_framed *f;
    uint8_t buf[8192];
    size_t len;
    uint64_t lid = 0;
    const char *laddr = NULL;
    (void)group;
    (void)peer;

    Unibus__Route__Member members[DISC_MAX_CONFIG];
    Unibus__Route__Member *mptrs[DISC_MAX_CONFIG];

    unibus__route__discover__init(&d);
    d.has_state = node_has_state(m);
    if (m->node && m->phase == PH_RUN) {
        const struct raft_configuration *c = rg_node_configuration(m->node);
        rg_node_leader(m->node, &lid, &laddr);
        for (unsigned i = 0; i < c->n && i < DISC_MAX_CONFIG; i++) {
            unibus__route__member__init(&members[i]);
            members[i].id = c->servers[i].id;
            members[i].address = c->servers[i].address;
            members[i].role =
                c->servers[i].role == RAFT_VOTER     ? UNIBUS__ROUTE__ROLE__ROLE_VOTER
                : c->servers[i].role == RAFT_STANDBY ? UNIBUS__ROUTE__ROLE__ROLE_STANDBY
                                                     : UNIBUS__ROUTE__ROLE__ROLE_SPARE;
            mptrs[i] = &members[i];
            d.n_config++;
        }
        d.config = mptrs;
    }
    d.leader_id = lid;
    d.leader_address = (char *)(laddr ? laddr : "");
    d.kv_replicas = m->kv_replicas;
    {
        char *names[DISC_MAX_CONFIG + 1];
        unsigned k = 0;
        names[k++] = m->advertise;
        for (unsigned i = 0; i < m->n_peers && k <= DISC_MAX_CONFIG; i++) {
            names[k++] = m->peers[i].route;
        }
        d.members = names;
        d.n_members = k;
        len = unibus__route__discover__get_packed_size(&d);
        if (len <= sizeof buf) {
            unibus__route__discover__pack(&d, buf);
        }
    }
    f = ub_framed_start(stream, free_stream, 64, ignore_frame, ignore_close,
                        NULL);
    if (f == NULL) {
        uv_close((uv_handle_t *)stream, close_free_cb);
        return;
    }
    if (len <= sizeof buf) {
        ub_framed_send(f, buf, len);
    }
    ub_framed_end(f);
}

static void start_raft(struct meta *m, bool bootstrap);
static int cmp_server(const void *a, const void *b);

/* True when names (a peer's own address and its routes) is the same set as
 * ours (our advertised address and our routes). */
static bool same_member_set(struct meta *m, const char *const *names,
                            size_t n)
{
    if (n != (size_t)m->n_peers + 1) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        bool found = strcmp(names[i], m->advertise) == 0;
        for (unsigned j = 0; !found && j < m->n_peers; j++) {
            found = strcmp(names[i], m->peers[j].route) == 0;
        }
        if (!found) {
            return false;
        }
    }
    return true;
}

static void disc_frame_cb(struct ub_framed *f, const uint8_t *buf, size_t len)
{
    struct disc_peer *p = ub_framed_data(f);
    Unibus__Route__Discover *d;
    if (p == NULL) {
        return;
    }
    d = unibus__route__discover__unpack(NULL, len, buf);
    if (d) {
        p->answered = true;
        p->has_state = d->has_state;
        p->leader_id = d->leader_id;
        snprintf(p->leader_address, sizeof p->leader_address, "%s",
                 d->leader_address);
        p->kv_replicas = d->kv_replicas;
        p->same_members = p->m && same_member_set(p->m, (const char *const *)d->members,
                                                  d->n_members);
        p->n_config = 0;
        for (size_t i = 0; i < d->n_config && i < DISC_MAX_CONFIG; i++) {
            const Unibus__Route__Member *mm = d->config[i];
            snprintf(p->config_addr[i], sizeof p->config_addr[i], "%s",
                     mm->address);
            p->config[i].id = mm->id;
            p->config[i].address = p->config_addr[i];
            p->config[i].role =
                mm->role == UNIBUS__ROUTE__ROLE__ROLE_STANDBY ? RAFT_STANDBY
                : mm->role == UNIBUS__ROUTE__ROLE__ROLE_SPARE ? RAFT_SPARE
                                                              : RAFT_VOTER;
            p->n_config++;
        }
        qsort(p->config, p->n_config, sizeof p->config[0], cmp_server);
        if (d->leader_id != 0 && d->leader_address[0] && p->m) {
            p->m->hint_id = d->leader_id;
            snprintf(p->m->hint_addr, sizeof p->m->hint_addr, "%s",
                     d->leader_address);
        }
        unibus__route__discover__free_unpacked(d, NULL);
    }
    ub_framed_close(f);
}

static void disc_close_cb(struct ub_framed *f)
{
    struct disc_peer *p = ub_framed_data(f);
    if (p) {
        p->f = NULL;
    }
}

static void disc_connect_cb(void *arg, int status, const struct rt_peer *peer,
                            uv_stream_t *stream)
{
    struct disc_peer *p = arg;
    p->dial = NULL;
    if (status != 0) {
        return;
    }
    p->id = peer->id;
    snprintf(p->address, sizeof p->address, "%s", peer->address);
    snprintf(p->name, sizeof p->name, "%s", peer->name);
    p->f = ub_framed_start(stream, free_stream, 16384, disc_frame_cb,
                           disc_close_cb, p);
    if (p->f == NULL) {
        uv_close((uv_handle_t *)stream, close_free_cb);
    }
}

static int cmp_server(const void *a, const void *b)
{
    const struct rg_server *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* The configuration this node would bootstrap: itself and every peer,
 * sorted by id, the first kv_replicas voters. Every node of one static
 * bootstrap computes the same one. servers must hold n_peers + 1. */
static unsigned bootstrap_config(struct meta *m, struct rg_server *servers)
{
    unsigned n = 0;
    servers[n].id = m->id;
    servers[n++].address = m->advertise;
    for (unsigned i = 0; i < m->n_peers; i++) {
        servers[n].id = m->peers[i].id;
        servers[n++].address = m->peers[i].address;
    }
    qsort(servers, n, sizeof *servers, cmp_server);
    for (unsigned i = 0; i < n; i++) {
        servers[i].role = i < m->kv_replicas ? RAFT_VOTER : RAFT_STANDBY;
    }
    return n;
}

static bool same_config(const struct rg_server *a, unsigned na,
                        const struct rg_server *b, unsigned nb)
{
    if (na != nb) {
        return false;
    }
    for (unsigned i = 0; i < na; i++) {
        if (a[i].id != b[i].id || a[i].role != b[i].role ||
            strcmp(a[i].address, b[i].address) != 0) {
            return false;
        }
    }
    return true;
}

static bool config_has(const struct disc_peer *p, uint64_t id)
{
    for (unsigned i = 0; i < p->n_config; i++) {
        if (p->config[i].id == id) {
            return true;
        }
    }
    return false;
}

/* Runs from the housekeeping timer while discovering. A node with an empty
 * directory bootstraps when every peer has answered and each one either has
 * no state or has exactly the configuration this node would bootstrap (it
 * bootstrapped in the same round, moments earlier). A peer with any other
 * state means a running cluster: join it. */
static void discover_tick(struct meta *m)
{
    unsigned answered = 0;
    bool foreign_state = false;
    uint64_t now = uv_now(m->loop);

    for (unsigned i = 0; i < m->n_peers; i++) {
        struct disc_peer *p = &m->peers[i];
        if (p->answered) {
            answered++;
            /* A cluster that does not list us: we are new to it. */
            foreign_state =
                foreign_state || (p->has_state && !config_has(p, m->id));
        } else if (p->dial == NULL && p->f == NULL) {
            rt_hub_connect(m->hub, p->route, 0, RT_KIND_DISCOVER, META_GROUP,
                           disc_connect_cb, p, &p->dial);
        }
    }
    if (foreign_state) {
        ub_info("meta", "a cluster already exists: joining it");
        start_raft(m, false);
        return;
    }
    if (answered == m->n_peers) {
        struct rg_server *mine;
        unsigned n;
        bool same = true;
        for (unsigned i = 0; i < m->n_peers; i++) {
            struct disc_peer *p = &m->peers[i];
            if (!p->has_state &&
                (!p->same_members || p->kv_replicas != m->kv_replicas)) {
                if (now - m->disc_last_log >= 5000) {
                    m->disc_last_log = now;
                    if (!p->same_members) {
                        ub_error("meta",
                                 "not bootstrapping: peer %s lists other "
                                 "nodes in --routes than we do; every node "
                                 "of a new cluster must name the same nodes",
                                 p->route);
                    } else {
                        ub_error("meta",
                                 "not bootstrapping: peer %s runs "
                                 "--kv-replicas %u, we run %u; give every "
                                 "node the same value",
                                 p->route, p->kv_replicas, m->kv_replicas);
                    }
                }
                /* Ask again: the operator may fix and restart it. */
                for (unsigned k = 0; k < m->n_peers; k++) {
                    m->peers[k].answered = false;
                }
                return;
            }
        }
        mine = calloc(m->n_peers + 1, sizeof *mine);
        if (mine == NULL) {
            return;
        }
        n = bootstrap_config(m, mine);
        for (unsigned i = 0; i < m->n_peers; i++) {
            struct disc_peer *p = &m->peers[i];
            if (p->has_state &&
                !same_config(mine, n, p->config, p->n_config)) {
                same = false;
            }
        }
        free(mine);
        if (!same) {
            ub_info("meta", "a peer's configuration differs from the one we "
                            "would bootstrap: joining the running cluster");
        }
        start_raft(m, same);
        return;
    }
    if (now - m->disc_last_log >= 5000) {
        m->disc_last_log = now;
        for (unsigned i = 0; i < m->n_peers; i++) {
            if (!m->peers[i].answered) {
                ub_info("meta", "waiting for peer %s to answer before "
                                "bootstrapping (%u of %u answered)",
                        m->peers[i].route, answered, m->n_peers);
            }
        }
    }
}

static void on_node_change(void *arg);

static void on_node_fatal(void *arg)
{
    struct meta *m = arg;
    (void)m;
    ub_error("meta", "raft is stalled; exiting so the service manager "
                     "restarts the node from disk");
    exit(70);
}

static void start_raft(struct meta *m, bool bootstrap)
{
    char err[256];
    struct rg_server *servers = NULL;
    unsigned n = 0;

    for (unsigned i = 0; i < m->n_peers; i++) {
        struct disc_peer *p = &m->peers[i];
        if (p->dial) {
            rt_connect_cancel(p->dial);
        }
        if (p->f) {
            ub_framed_set_data(p->f, NULL);
            ub_framed_close(p->f);
            p->f = NULL;
        }
    }
    if (bootstrap) {
        servers = calloc(m->n_peers + 1, sizeof *servers);
        if (servers == NULL) {
            ub_error("meta", "out of memory bootstrapping");
            exit(70);
        }
        /* Every node sorts the same set the same way: identical configs. */
        n = bootstrap_config(m, servers);
        for (unsigned i = 1; i < n; i++) {
            if (servers[i].id == servers[i - 1].id) {
                ub_error("meta", "two route addresses lead to the node with "
                                 "id %016" PRIx64 ": either two nodes share "
                                 "a --name, or --routes lists this node "
                                 "under another address than its "
                                 "--route-advertise",
                         servers[i].id);
                exit(78);
            }
        }
    }
    m->phase = bootstrap || rg_dir_has_state(m->raft_dir) || m->n_peers == 0
                   ? PH_RUN
                   : PH_JOIN;
    if (rg_node_start(m->node, servers, n, err, sizeof err) != 0) {
        ub_error("meta", "%s", err);
        exit(70);
    }
    free(servers);
}

/* ------------------------------------------------------------------ */
/* housekeeping: join, node names, purge                                */

static void join_done(void *arg, const struct meta_result *r)
{
    struct meta *m = arg;
    m->join_inflight = false;
    if (r->err == META_OK) {
        ub_info("meta", "joined the cluster");
        m->phase = PH_RUN;
    } else {
        ub_warn("meta", "join not done yet: %s %s", meta_err_code(r->err),
                r->message);
    }
}

static void name_done(void *arg, const struct meta_result *r)
{
    struct meta *m = arg;
    m->name_inflight = false;
    if (r->err != META_OK) {
        ub_debug("meta", "recording the node name: %s", meta_err_code(r->err));
    }
}

static void purge_done(void *arg, const struct meta_result *r)
{
    struct meta *m = arg;
    (void)r;
    m->purge_inflight = false;
}

static void ensure_name_recorded(struct meta *m)
{
    char key[32];
    struct kv_entry e;
    struct kv_cmd cmd;
    bool ok;

    snprintf(key, sizeof key, "%016" PRIx64, m->id);
    memset(&e, 0, sizeof e);
    ok = kv_store_get(m->kv, NODES_BUCKET, key, &e) == KV_OK &&
         e.value_len == strlen(m->name) &&
         memcmp(e.value, m->name, e.value_len) == 0;
    kv_entry_clear(&e);
    if (ok) {
        return;
    }
    memset(&cmd, 0, sizeof cmd);
    cmd.kind = KV_CMD_OP;
    cmd.op.type = KV_OP_PUT;
    cmd.op.bucket = NODES_BUCKET;
    cmd.op.key = key;
    cmd.op.value = m->name;
    cmd.op.value_len = strlen(m->name);
    m->name_inflight = true;
    if (meta_write(m, &cmd, name_done, m) != 0) {
        m->name_inflight = false;
    }
}

static void housekeeping_cb(uv_timer_t *t)
{
    struct meta *m = t->data;
    uint64_t lid = 0;
    const char *laddr = NULL;
    uint64_t now = uv_now(m->loop);

    if (m->phase == PH_DISCOVER) {
        discover_tick(m);
        return;
    }
    if (m->phase == PH_CLOSING || m->node == NULL) {
        return;
    }
    if (m->phase == PH_JOIN) {
        if (find_server(m, m->id) != NULL) {
            m->phase = PH_RUN;
        } else {
            rg_node_leader(m->node, &lid, &laddr);
            if (lid == 0 && m->hint_id == 0) {
                /* Ask the peers again who leads. */
                for (unsigned i = 0; i < m->n_peers; i++) {
                    struct disc_peer *p = &m->peers[i];
                    if (p->dial == NULL && p->f == NULL) {
                        rt_hub_connect(m->hub, p->route, 0, RT_KIND_DISCOVER,
                                       META_GROUP, disc_connect_cb, p,
                                       &p->dial);
                    }
                }
            }
            if (!m->join_inflight) {
                struct op *op =
                    op_new(m, OP_JOIN, MEMBER_DEADLINE_MS, join_done, m);
                if (op == NULL) {
                    return;
                }
                op->id = m->id;
                op->role = -1;
                snprintf(op->address, sizeof op->address, "%s", m->advertise);
                snprintf(op->name, sizeof op->name, "%s", m->name);
                m->join_inflight = true;
                attempt(op);
            }
        }
    }
    if (!rg_node_is_leader(m->node)) {
        rg_node_leader(m->node, &lid, &laddr);
        if (lid == 0 || find_server(m, m->id) == NULL) {
            return;
        }
    }
    if (!m->name_inflight) {
        ensure_name_recorded(m);
    }
    if (rg_node_is_leader(m->node) && !m->purge_inflight &&
        now - m->last_purge >= PURGE_EVERY_MS) {
        struct kv_cmd cmd;
        memset(&cmd, 0, sizeof cmd);
        cmd.kind = KV_CMD_PURGE;
        cmd.purge.now = wall_ms();
        m->last_purge = now;
        m->purge_inflight = true;
        if (meta_write(m, &cmd, purge_done, m) != 0) {
            m->purge_inflight = false;
        }
    }
}

static void on_node_change(void *arg)
{
    struct meta *m = arg;
    /* A new leader or a lost one: pending forwarded work is retried by the
     * sweep; nothing to do eagerly except dropping a stale channel. */
    if (m->client && m->node) {
        uint64_t lid = 0;
        const char *laddr = NULL;
        rg_node_leader(m->node, &lid, &laddr);
        if (lid != m->client->leader_id) {
            fwd_client_kill(m->client);
        }
    }
}

/* ------------------------------------------------------------------ */
/* public API                                                           */

int meta_create(uv_loop_t *loop, struct rt_hub *hub,
                const struct meta_config *cfg, struct meta **out, char *err,
                size_t errlen)
{
    struct meta *m = calloc(1, sizeof *m);
    char kerr[256];

    if (m == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    m->loop = loop;
    m->hub = hub;
    m->ops.next = m->ops.prev = &m->ops;
    m->conns.next = m->conns.prev = &m->conns;
    snprintf(m->name, sizeof m->name, "%s", cfg->name);
    snprintf(m->advertise, sizeof m->advertise, "%s", cfg->advertise);
    snprintf(m->raft_dir, sizeof m->raft_dir, "%s", cfg->raft_dir);
    m->id = rt_node_id(cfg->name);
    m->kv_replicas = cfg->kv_replicas ? cfg->kv_replicas : 1;
    if (kv_store_open(&m->kv, kerr, sizeof kerr) != 0) {
        snprintf(err, errlen, "kv store: %s", kerr);
        goto err_after_alloc;
    }
    if (kv_fsm_init(&m->fsm, m->kv) != 0) {
        snprintf(err, errlen, "kv fsm init failed");
        goto err_after_kv;
    }
    if (cfg->n_routes > 0) {
        m->peers = calloc(cfg->n_routes, sizeof *m->peers);
        if (m->peers == NULL) {
            snprintf(err, errlen, "out of memory");
            goto err_after_kv;
        }
        m->n_peers = cfg->n_routes;
        for (unsigned i = 0; i < cfg->n_routes; i++) {
            snprintf(m->peers[i].route, sizeof m->peers[i].route, "%s",
                     cfg->routes[i]);
            m->peers[i].m = m;
        }
    }
    m->ncfg.id = m->id;
    m->ncfg.address = m->advertise;
    m->ncfg.dir = m->raft_dir;
    m->ncfg.group = META_GROUP;
    m->ncfg.election_ms = cfg->election_ms;
    m->ncfg.heartbeat_ms = cfg->heartbeat_ms;
    m->ncfg.snapshot_threshold = cfg->snapshot_threshold;
    m->ncfg.snapshot_trailing = cfg->snapshot_trailing;
    if (rg_node_create(loop, hub, &m->ncfg, &m->fsm, &m->node, err, errlen) !=
        0) {
        goto err_after_peers;
    }
    kv_fsm_set_raft(&m->fsm, rg_node_raft(m->node));
    rg_node_on_change(m->node, on_node_change, m);
    rg_node_on_fatal(m->node, on_node_fatal, m);
    uv_timer_init(loop, &m->sweep);
    m->sweep.data = m;
    uv_timer_init(loop, &m->housekeeping);
    m->housekeeping.data = m;
    m->handles_open = 2;
    *out = m;
    return 0;

err_after_peers:
    free(m->peers);
err_after_kv:
    kv_store_close(m->kv);
err_after_alloc:
    free(m);
    return -1;
}

int meta_start(struct meta *m, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    if (m->hub) {
        rt_hub_set_accept(m->hub, RT_KIND_DISCOVER, discover_accept_cb, m);
        rt_hub_set_accept(m->hub, RT_KIND_FORWARD, forward_accept_cb, m);
    }
    uv_timer_start(&m->housekeeping, housekeeping_cb, 200, 500);
    if (rg_dir_has_state(m->raft_dir)) {
        ub_info("meta", "restarting from the raft state in %s", m->raft_dir);
        start_raft(m, false);
    } else if (m->n_peers == 0) {
        ub_info("meta", "no routes: bootstrapping a single-node cluster "
                        "(R1, not HA)");
        start_raft(m, true);
    } else {
        ub_info("meta", "empty data directory: asking %u peers whether a "
                        "cluster exists",
                m->n_peers);
        m->phase = PH_DISCOVER;
        m->disc_last_log = uv_now(m->loop);
        discover_tick(m);
    }
    return 0;
}

struct kv_store *meta_kv(struct meta *m)
{
    return m->kv;
}

struct rg_node *meta_node(struct meta *m)
{
    return m->phase == PH_DISCOVER || m->phase == PH_NEW ? NULL : m->node;
}

const char *meta_name(const struct meta *m)
{
    return m->name;
}

uint64_t meta_id(const struct meta *m)
{
    return m->id;
}

const char *meta_phase(struct meta *m)
{
    switch (m->phase) {
    case PH_NEW:
    case PH_DISCOVER:
        return "discovering";
    case PH_JOIN:
        return "joining";
    case PH_CLOSING:
        return "stopping";
    default:
        return rg_node_state_name(m->node);
    }
}

int meta_write(struct meta *m, struct kv_cmd *cmd, meta_cb cb, void *arg)
{
    static const uint8_t zero[16];
    struct op *op;
    void *buf = NULL;
    size_t len = 0;
    int rv;

    if (m->phase == PH_CLOSING) {
        return META_ESHUTDOWN;
    }
    if (memcmp(cmd->request_id, zero, sizeof zero) == 0 &&
        RAND_bytes(cmd->request_id, sizeof cmd->request_id) != 1) {
        return META_EINTERNAL;
    }
    if (cmd->stamp == 0) {
        cmd->stamp = wall_ms();
    }
    rv = kv_cmd_encode(cmd, malloc, &buf, &len);
    if (rv != 0) {
        return META_EINVALID;
    }
    op = op_new(m, OP_WRITE, WRITE_DEADLINE_MS, cb, arg);
    if (op == NULL) {
        free(buf);
        return META_EINTERNAL;
    }
    op->buf = buf;
    op->len = len;
    memcpy(op->rid, cmd->request_id, sizeof op->rid);
    attempt(op);
    return 0;
}

int meta_read(struct meta *m, meta_cb cb, void *arg)
{
    struct op *op;
    if (m->phase == PH_CLOSING) {
        return META_ESHUTDOWN;
    }
    op = op_new(m, OP_READ, READ_DEADLINE_MS, cb, arg);
    if (op == NULL) {
        return META_EINTERNAL;
    }
    attempt(op);
    return 0;
}

int meta_read_at(struct meta *m, uint64_t index, meta_cb cb, void *arg)
{
    struct op *op;
    struct meta_result res;
    if (index == 0) {
        return meta_read(m, cb, arg);
    }
    if (m->phase == PH_CLOSING) {
        return META_ESHUTDOWN;
    }
    if (m->node && rg_node_applied_index(m->node) >= index) {
        memset(&res, 0, sizeof res);
        res.index = index;
        cb(arg, &res);
        return 0;
    }
    op = op_new(m, OP_READ, READ_DEADLINE_MS, cb, arg);
    if (op == NULL) {
        return META_EINTERNAL;
    }
    op->res.index = index;
    op->waiting_apply = true;
    return 0;
}

int meta_member_add(struct meta *m, const char *name, const char *address,
                    int role, meta_cb cb, void *arg)
{
    struct op *op;
    if (m->phase == PH_CLOSING) {
        return META_ESHUTDOWN;
    }
    if (name == NULL || *name == '\0' || strlen(name) >= 64 ||
        address == NULL || *address == '\0' || strlen(address) >= 256 ||
        m->hub == NULL) {
        /* Without --routes there is no way to reach another node. */
        return META_EINVALID;
    }
    op = op_new(m, OP_ADD, MEMBER_DEADLINE_MS, cb, arg);
    if (op == NULL) {
        return META_EINTERNAL;
    }
    op->id = rt_node_id(name);
    op->role = role;
    snprintf(op->name, sizeof op->name, "%s", name);
    snprintf(op->address, sizeof op->address, "%s", address);
    attempt(op);
    return 0;
}

int meta_member_remove(struct meta *m, uint64_t id, meta_cb cb, void *arg)
{
    struct op *op;
    if (m->phase == PH_CLOSING) {
        return META_ESHUTDOWN;
    }
    if (m->hub == NULL) {
        return META_EINVALID;
    }
    op = op_new(m, OP_REMOVE, MEMBER_DEADLINE_MS, cb, arg);
    if (op == NULL) {
        return META_EINTERNAL;
    }
    op->id = id;
    attempt(op);
    return 0;
}

int meta_health(struct meta *m, meta_cb cb, void *arg)
{
    struct op *op;
    if (m->phase == PH_CLOSING) {
        return META_ESHUTDOWN;
    }
    op = op_new(m, OP_HEALTH, 2000, cb, arg);
    if (op == NULL) {
        return META_EINTERNAL;
    }
    attempt(op);
    return 0;
}

int meta_transfer(struct meta *m, uint64_t id, meta_cb cb, void *arg)
{
    struct op *op;
    if (m->phase == PH_CLOSING) {
        return META_ESHUTDOWN;
    }
    if (m->hub == NULL) {
        return META_EINVALID;
    }
    op = op_new(m, OP_TRANSFER, READ_DEADLINE_MS, cb, arg);
    if (op == NULL) {
        return META_EINTERNAL;
    }
    op->id = id;
    attempt(op);
    return 0;
}

const char *meta_node_name(struct meta *m, uint64_t id)
{
    char key[32];
    struct kv_entry e;
    const char *out = NULL;
    snprintf(key, sizeof key, "%016" PRIx64, id);
    if (id == m->id) {
        return m->name;
    }
    memset(&e, 0, sizeof e);
    if (kv_store_get(m->kv, NODES_BUCKET, key, &e) == KV_OK &&
        e.value_len < sizeof m->name_buf) {
        memcpy(m->name_buf, e.value, e.value_len);
        m->name_buf[e.value_len] = '\0';
        out = m->name_buf;
    }
    kv_entry_clear(&e);
    return out;
}

static void meta_handle_closed(uv_handle_t *h)
{
    struct meta *m = h->data;
    if (--m->handles_open == 0) {
        void (*cb)(void *) = m->close_cb;
        void *arg = m->close_arg;
        kv_fsm_close(&m->fsm);
        kv_store_close(m->kv);
        free(m->peers);
        free(m);
        if (cb) {
            cb(arg);
        }
    }
}

static void node_closed(void *arg)
{
    struct meta *m = arg;
    m->node = NULL;
    uv_close((uv_handle_t *)&m->sweep, meta_handle_closed);
    uv_close((uv_handle_t *)&m->housekeeping, meta_handle_closed);
}

void meta_close(struct meta *m, void (*cb)(void *arg), void *arg)
{
    struct op *op;
    if (m->phase == PH_CLOSING) {
        return;
    }
    m->phase = PH_CLOSING;
    m->close_cb = cb;
    m->close_arg = arg;
    if (m->hub) {
        /* The hub outlives us: no more inbound channels for a freed meta. */
        rt_hub_set_accept(m->hub, RT_KIND_DISCOVER, NULL, NULL);
        rt_hub_set_accept(m->hub, RT_KIND_FORWARD, NULL, NULL);
    }
    uv_timer_stop(&m->sweep);
    uv_timer_stop(&m->housekeeping);
    if (m->client) {
        fwd_client_kill(m->client);
    }
    for (unsigned i = 0; i < m->n_peers; i++) {
        if (m->peers[i].dial) {
            rt_connect_cancel(m->peers[i].dial);
        }
        if (m->peers[i].f) {
            ub_framed_set_data(m->peers[i].f, NULL);
            ub_framed_close(m->peers[i].f);
        }
    }
    while (m->conns.next != &m->conns) {
        struct fwd_conn *fc = m->conns.next;
        fc->prev->next = fc->next;
        fc->next->prev = fc->prev;
        fc->next = fc->prev = fc;
        ub_framed_close(fc->f); /* server_close_cb unlinks a self-loop */
    }
    /* Ops not in flight end now; in-flight ones end from raft's callbacks
     * when it closes (LEADERSHIPLOST -> ESHUTDOWN through op_retry). */
    op = m->ops.next;
    while (op != &m->ops) {
        struct op *next = op->next;
        if (!op->inflight) {
            op_finish(op, META_ESHUTDOWN, "the node is shutting down");
        }
        op = next;
    }
    rg_node_close(m->node, node_closed, m);
}
