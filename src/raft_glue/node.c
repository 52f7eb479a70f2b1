/* Raft group member on libuv.
 *
 * Happy path: create -> start (bootstrap | restart | join) -> apply/barrier
 * requests complete from raft callbacks -> close.
 *
 * Failure modes handled here:
 * - a request made while not leader fails at once with RAFT_NOTLEADER;
 * - losing leadership fails in-flight requests with RAFT_LEADERSHIPLOST
 *   (outcome unknown: callers retry with the same request id);
 * - the Debian build of libraft compiles its asserts out, so a failed disk
 *   write leaves the node silently stalled (RAFT_NOTES.md §5.3). The watchdog
 *   notices a leader whose commit index does not move while entries wait, and
 *   raises on_fatal so the process can restart from disk. */
#include "node.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <raft/uv.h>

#include "lib/fs.h"
#include "lib/log.h"
#include "null_transport.h"
#include "route/hub.h"
#include "route/raft_transport.h"

#if RAFT_VERSION_NUMBER < 2200
#error "unibus needs libraft 0.22 (bookworm-backports): see scripts/setup.sh"
#endif

#define WATCHDOG_MS 1000
#define STALL_MS 15000

struct apply_req {
    struct raft_apply req;
    rg_apply_cb cb;
    void *arg;
};

struct waiter {
    rg_barrier_cb cb;
    void *arg;
    struct waiter *next;
};

struct barrier_req {
    struct raft_barrier req;
    struct waiter *waiters;
    struct rg_node *node;
};

struct change_req {
    struct raft_change req;
    rg_done_cb cb;
    void *arg;
};

struct transfer_req {
    struct raft_transfer req;
    struct rg_node *node;
    uint64_t target;
    rg_done_cb cb;
    void *arg;
};

struct rg_node {
    uv_loop_t *loop;
    struct rt_hub *hub;
    struct raft_uv_transport transport;
    struct raft_io io;
    struct raft raft;
    struct raft_fsm *fsm;
    char dir[1024];
    char address[256];
    uint64_t id;
    unsigned election_ms;
    bool started;
    bool raft_inited;
    bool closing;
    /* Barrier batching: one in flight, the rest wait for the next. */
    struct barrier_req *barrier_inflight;
    struct waiter *barrier_next;
    struct waiter **barrier_next_tail;
    /* Change tracking. */
    unsigned short last_state;
    uint64_t last_leader;
    uint64_t leader_changes;
    rg_event_cb change_cb;
    void *change_arg;
    rg_event_cb fatal_cb;
    void *fatal_arg;
    /* Watchdog. */
    uv_timer_t watchdog;
    uint64_t wd_commit;
    uint64_t wd_since;
    bool fatal;
    uv_timer_t close_timer;
    unsigned closing_handles;
    rg_event_cb close_cb;
    void *close_arg;
};

bool rg_dir_has_state(const char *dir)
{
    char path[1100];
    struct stat st;
    snprintf(path, sizeof path, "%s/metadata1", dir);
    if (stat(path, &st) == 0) {
        return true;
    }
    snprintf(path, sizeof path, "%s/metadata2", dir);
    return stat(path, &st) == 0;
}

static const char *state_name(int s)
{
    const char *name = raft_state_name(s);
    return name ? name : "none";
}

static void notify_change(struct rg_node *n)
{
    unsigned short s = (unsigned short)raft_state(&n->raft);
    raft_id lid = 0;
    const char *laddr = NULL;
    raft_leader(&n->raft, &lid, &laddr);
    if (s == n->last_state && lid == n->last_leader) {
        return;
    }
    if (lid != n->last_leader && lid != 0) {
        n->leader_changes++;
    }
    ub_info("raft", "state %s -> %s, term %llu, leader %016llx",
            state_name(n->last_state), state_name(s),
            (unsigned long long)raft_current_term(&n->raft),
            (unsigned long long)lid);
    n->last_state = s;
    n->last_leader = lid;
    if (n->change_cb) {
        n->change_cb(n->change_arg);
    }
}

static void step_cb(struct raft *r)
{
    notify_change(r->data);
}

static void watchdog_cb(uv_timer_t *t)
{
    struct rg_node *n = t->data;
    uint64_t now = uv_now(n->loop);
    uint64_t commit = raft_commit_index(&n->raft);
    bool waiting = raft_state(&n->raft) == RAFT_LEADER &&
                   raft_last_index(&n->raft) > commit;

    notify_change(n); /* poll fallback in case a transition had no step */
    if (!waiting || commit != n->wd_commit) {
        n->wd_commit = commit;
        n->wd_since = now;
        return;
    }
    if (!n->fatal && now - n->wd_since > STALL_MS) {
        n->fatal = true;
        ub_error("raft",
                 "stalled: leader with entries up to %llu has not committed "
                 "past %llu for %d s (likely a failed disk write in %s); "
                 "restarting from disk is the remedy",
                 (unsigned long long)raft_last_index(&n->raft),
                 (unsigned long long)commit, STALL_MS / 1000, n->dir);
        if (n->fatal_cb) {
            n->fatal_cb(n->fatal_arg);
        }
    }
}

int rg_node_create(uv_loop_t *loop, struct rt_hub *hub,
                   const struct rg_node_config *cfg, struct raft_fsm *fsm,
                   struct rg_node **out, char *err, size_t errlen)
{
    struct rg_node *n = calloc(1, sizeof *n);
    int rv;

    if (n == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    n->loop = loop;
    n->hub = hub;
    n->fsm = fsm;
    n->id = cfg->id;
    n->election_ms = cfg->election_ms;
    n->barrier_next_tail = &n->barrier_next;
    snprintf(n->dir, sizeof n->dir, "%s", cfg->dir);
    snprintf(n->address, sizeof n->address, "%s", cfg->address);
    if (ub_mkdir_p(n->dir) != 0) {
        snprintf(err, errlen, "cannot create raft directory %s: %s", n->dir,
                 strerror(errno));
        goto err_after_alloc;
    }
    n->transport.version = 1;
    rv = hub ? rt_raft_transport_init(&n->transport, hub, cfg->group)
             : rg_null_transport_init(&n->transport);
    if (rv != 0) {
        snprintf(err, errlen, "raft transport: %s", raft_strerror(rv));
        goto err_after_alloc;
    }
    rv = raft_uv_init(&n->io, loop, n->dir, &n->transport);
    if (rv != 0) {
        snprintf(err, errlen, "raft storage in %s: %s", n->dir, n->io.errmsg);
        goto err_after_transport;
    }
    raft_uv_set_connect_retry_delay(&n->io, 200);
    rv = raft_init(&n->raft, &n->io, fsm, n->id, n->address);
    if (rv != 0) {
        snprintf(err, errlen, "raft_init: %s", raft_errmsg(&n->raft));
        goto err_after_io;
    }
    n->raft_inited = true;
    n->raft.data = n;
    n->raft.legacy.step_cb = step_cb;
    raft_set_election_timeout(&n->raft, cfg->election_ms);
    raft_set_heartbeat_timeout(&n->raft, cfg->heartbeat_ms);
    raft_set_pre_vote(&n->raft, true);
    raft_set_snapshot_threshold(&n->raft, cfg->snapshot_threshold);
    raft_set_snapshot_trailing(&n->raft, cfg->snapshot_trailing);
    raft_set_max_catch_up_round_duration(&n->raft, 2000);
    uv_timer_init(loop, &n->watchdog);
    n->watchdog.data = n;
    uv_timer_init(loop, &n->close_timer);
    n->close_timer.data = n;
    *out = n;
    return 0;

err_after_io:
    raft_uv_close(&n->io);
err_after_transport:
    if (hub) {
        rt_raft_transport_close(&n->transport);
    } else {
        rg_null_transport_close(&n->transport);
    }
err_after_alloc:
    free(n);
    return -1;
}

int rg_node_start(struct rg_node *n, const struct rg_server *servers,
                  unsigned n_servers, char *err, size_t errlen)
{
    int rv;
    if (n_servers > 0) {
        struct raft_configuration conf;
        raft_configuration_init(&conf);
        for (unsigned i = 0; i < n_servers; i++) {
            rv = raft_configuration_add(&conf, servers[i].id,
                                        servers[i].address, servers[i].role);
            if (rv != 0) {
                raft_configuration_close(&conf);
                snprintf(err, errlen, "bad bootstrap configuration: %s",
                         raft_strerror(rv));
                return -1;
            }
        }
        rv = raft_bootstrap(&n->raft, &conf);
        raft_configuration_close(&conf);
        if (rv == 0) {
            ub_info("raft", "bootstrapped a configuration of %u servers",
                    n_servers);
        } else if (rv != RAFT_CANTBOOTSTRAP) {
            snprintf(err, errlen, "raft_bootstrap: %s", raft_strerror(rv));
            return -1;
        }
    }
    rv = raft_start(&n->raft);
    if (rv != 0) {
        snprintf(err, errlen, "raft_start in %s: %s", n->dir,
                 raft_errmsg(&n->raft));
        return -1;
    }
    n->started = true;
    n->wd_since = uv_now(n->loop);
    uv_timer_start(&n->watchdog, watchdog_cb, WATCHDOG_MS, WATCHDOG_MS);
    notify_change(n);
    return 0;
}

static void apply_cb(struct raft_apply *req, int status, void *result)
{
    struct apply_req *a = req->data;
    a->cb(a->arg, status, result);
    free(a);
}

int rg_node_apply(struct rg_node *n, void *buf, size_t len, rg_apply_cb cb,
                  void *arg)
{
    struct apply_req *a;
    struct raft_buffer b = { .base = buf, .len = len };
    int rv;

    if (n->closing || !n->started) {
        raft_free(buf);
        return RAFT_SHUTDOWN;
    }
    if (raft_state(&n->raft) != RAFT_LEADER) {
        raft_free(buf);
        return RAFT_NOTLEADER;
    }
    a = calloc(1, sizeof *a);
    if (a == NULL) {
        raft_free(buf);
        return RAFT_NOMEM;
    }
    a->cb = cb;
    a->arg = arg;
    a->req.data = a;
    rv = raft_apply(&n->raft, &a->req, &b, 1, apply_cb);
    if (rv != 0) {
        ub_warn("raft", "raft_apply: %s (%s)", raft_strerror(rv),
                raft_errmsg(&n->raft));
        /* libraft 0.22 keeps the buffer when it refuses before appending
         * (not leader, no memory) but frees it with the log entry when the
         * storage refuses it afterwards: free only in the first case. */
        if (rv == RAFT_NOTLEADER || rv == RAFT_NOMEM) {
            raft_free(buf);
        }
        free(a);
    }
    return rv;
}

static void fire_waiters(struct waiter *w, int status, uint64_t index)
{
    while (w) {
        struct waiter *next = w->next;
        w->cb(w->arg, status, index);
        free(w);
        w = next;
    }
}

static void start_next_barrier(struct rg_node *n);

static void barrier_cb(struct raft_barrier *req, int status)
{
    struct barrier_req *b = req->data;
    struct rg_node *n = b->node;
    n->barrier_inflight = NULL;
    fire_waiters(b->waiters, status, req->index);
    free(b);
    start_next_barrier(n);
}

static void start_next_barrier(struct rg_node *n)
{
    struct barrier_req *b;
    int rv;
    if (n->barrier_inflight || n->barrier_next == NULL) {
        return;
    }
    b = calloc(1, sizeof *b);
    if (b == NULL) {
        struct waiter *w = n->barrier_next;
        n->barrier_next = NULL;
        n->barrier_next_tail = &n->barrier_next;
        fire_waiters(w, RAFT_NOMEM, 0);
        return;
    }
    b->node = n;
    b->waiters = n->barrier_next;
    b->req.data = b;
    n->barrier_next = NULL;
    n->barrier_next_tail = &n->barrier_next;
    if (n->closing) {
        rv = RAFT_SHUTDOWN;
    } else if (raft_state(&n->raft) != RAFT_LEADER) {
        rv = RAFT_NOTLEADER;
    } else {
        rv = raft_barrier(&n->raft, &b->req, barrier_cb);
    }
    if (rv != 0) {
        fire_waiters(b->waiters, rv, 0);
        free(b);
        return;
    }
    n->barrier_inflight = b;
}

int rg_node_barrier(struct rg_node *n, rg_barrier_cb cb, void *arg)
{
    struct waiter *w;
    if (n->closing || !n->started) {
        return RAFT_SHUTDOWN;
    }
    if (raft_state(&n->raft) != RAFT_LEADER) {
        return RAFT_NOTLEADER;
    }
    w = calloc(1, sizeof *w);
    if (w == NULL) {
        return RAFT_NOMEM;
    }
    w->cb = cb;
    w->arg = arg;
    *n->barrier_next_tail = w;
    n->barrier_next_tail = &w->next;
    start_next_barrier(n);
    return 0;
}

bool rg_node_repair_stale_change(struct rg_node *n)
{
    struct raft *r = &n->raft;
    struct raft_configuration copy;
    raft_index idx = r->configuration_uncommitted_index;

    if (raft_state(r) != RAFT_LEADER || idx == 0 || idx > r->last_applied ||
        idx > r->commit_index) {
        return false;
    }
    /* The entry is committed and applied, so raft's own bookkeeping (what
     * applying it does) is simply behind: bring it up to date. */
    raft_configuration_init(&copy);
    for (unsigned i = 0; i < r->configuration.n; i++) {
        const struct raft_server *s = &r->configuration.servers[i];
        if (raft_configuration_add(&copy, s->id, s->address, s->role) != 0) {
            raft_configuration_close(&copy);
            return false;
        }
    }
    raft_configuration_close(&r->configuration_committed);
    r->configuration_committed = copy;
    r->configuration_committed_index = idx;
    r->configuration_uncommitted_index = 0;
    return true;
}

static void change_cb(struct raft_change *req, int status)
{
    struct change_req *c = req->data;
    if (c->cb) {
        c->cb(c->arg, status);
    }
    free(c);
}

static struct change_req *change_new(rg_done_cb cb, void *arg)
{
    struct change_req *c = calloc(1, sizeof *c);
    if (c) {
        c->cb = cb;
        c->arg = arg;
        c->req.data = c;
    }
    return c;
}

#define CHANGE_CALL(n, call)                            \
    do {                                                \
        struct change_req *c;                           \
        int rv;                                         \
        if ((n)->closing) {                             \
            return RAFT_SHUTDOWN;                       \
        }                                               \
        if ((c = change_new(cb, arg)) == NULL) {        \
            return RAFT_NOMEM;                          \
        }                                               \
        rv = (call);                                    \
        if (rv != 0) {                                  \
            free(c);                                    \
        }                                               \
        return rv;                                      \
    } while (0)

int rg_node_add(struct rg_node *n, uint64_t id, const char *address,
                rg_done_cb cb, void *arg)
{
    CHANGE_CALL(n, raft_add(&n->raft, &c->req, id, address, change_cb));
}

int rg_node_assign(struct rg_node *n, uint64_t id, int role, rg_done_cb cb,
                   void *arg)
{
    CHANGE_CALL(n, raft_assign(&n->raft, &c->req, id, role, change_cb));
}

int rg_node_remove(struct rg_node *n, uint64_t id, rg_done_cb cb, void *arg)
{
    CHANGE_CALL(n, raft_remove(&n->raft, &c->req, id, change_cb));
}

static void transfer_cb(struct raft_transfer *req)
{
    struct transfer_req *t = req->data;
    raft_id lid = 0;
    const char *addr = NULL;
    int status;
    raft_leader(&t->node->raft, &lid, &addr);
    status = (lid != 0 && lid != t->node->id &&
              (t->target == 0 || lid == t->target))
                 ? 0
                 : RAFT_NOTLEADER;
    if (t->cb) {
        t->cb(t->arg, status);
    }
    free(t);
}

int rg_node_transfer(struct rg_node *n, uint64_t id, rg_done_cb cb, void *arg)
{
    struct transfer_req *t;
    int rv;
    if (n->closing) {
        return RAFT_SHUTDOWN;
    }
    t = calloc(1, sizeof *t);
    if (t == NULL) {
        return RAFT_NOMEM;
    }
    t->node = n;
    t->target = id;
    t->cb = cb;
    t->arg = arg;
    t->req.data = t;
    rv = raft_transfer(&n->raft, &t->req, id, transfer_cb);
    if (rv != 0) {
        free(t);
    }
    return rv;
}

void rg_node_on_change(struct rg_node *n, rg_event_cb cb, void *arg)
{
    n->change_cb = cb;
    n->change_arg = arg;
}

void rg_node_on_fatal(struct rg_node *n, rg_event_cb cb, void *arg)
{
    n->fatal_cb = cb;
    n->fatal_arg = arg;
}

bool rg_node_is_leader(struct rg_node *n)
{
    return n->started && !n->closing && raft_state(&n->raft) == RAFT_LEADER;
}

void rg_node_leader(struct rg_node *n, uint64_t *id, const char **address)
{
    raft_id lid = 0;
    const char *addr = NULL;
    if (n->started) {
        raft_leader(&n->raft, &lid, &addr);
    }
    *id = lid;
    *address = addr;
}

const char *rg_node_state_name(struct rg_node *n)
{
    return n->started ? raft_state_name(raft_state(&n->raft)) : "starting";
}

uint64_t rg_node_term(struct rg_node *n)
{
    return raft_current_term(&n->raft);
}

uint64_t rg_node_commit_index(struct rg_node *n)
{
    return raft_commit_index(&n->raft);
}

uint64_t rg_node_applied_index(struct rg_node *n)
{
    return raft_last_applied(&n->raft);
}

uint64_t rg_node_last_index(struct rg_node *n)
{
    return raft_last_index(&n->raft);
}

uint64_t rg_node_id(const struct rg_node *n)
{
    return n->id;
}

uint64_t rg_node_leader_changes(const struct rg_node *n)
{
    return n->leader_changes;
}

struct raft *rg_node_raft(struct rg_node *n)
{
    return &n->raft;
}

const struct raft_configuration *rg_node_configuration(struct rg_node *n)
{
    return &n->raft.configuration;
}

unsigned rg_node_voters(struct rg_node *n)
{
    unsigned v = 0;
    for (unsigned i = 0; i < n->raft.configuration.n; i++) {
        if (n->raft.configuration.servers[i].role == RAFT_VOTER) {
            v++;
        }
    }
    return v;
}

bool rg_node_peer_healthy(struct rg_node *n, uint64_t id)
{
    raft_index match = 0;
    if (id == n->id) {
        return n->started && !n->fatal;
    }
    if (!rg_node_is_leader(n)) {
        return id == n->last_leader;
    }
    if (raft_match_index(&n->raft, id, &match) != 0) {
        return false;
    }
    /* Heard from within an election timeout (heartbeats answer every
     * heartbeat interval), and not more than a snapshot interval behind. */
    if (n->hub) {
        uint64_t heard = rt_hub_last_heard(n->hub, id);
        if (heard == 0 || uv_now(n->loop) - heard > n->election_ms) {
            return false;
        }
    }
    return match + n->raft.legacy.snapshot_threshold >=
           raft_last_index(&n->raft);
}

static void close_handle_cb(uv_handle_t *h)
{
    struct rg_node *n = h->data;
    /* libuv runs close callbacks in no promised order: count them. */
    if (--n->closing_handles == 0) {
        rg_event_cb cb = n->close_cb;
        void *arg = n->close_arg;
        free(n);
        if (cb) {
            cb(arg);
        }
    }
}

static void raft_closed_cb(struct raft *r)
{
    struct rg_node *n = r->data;
    raft_uv_close(&n->io);
    if (n->hub) {
        rt_raft_transport_close(&n->transport);
    } else {
        rg_null_transport_close(&n->transport);
    }
    n->closing_handles = 2;
    uv_close((uv_handle_t *)&n->watchdog, close_handle_cb);
    uv_close((uv_handle_t *)&n->close_timer, close_handle_cb);
}

static void deferred_close_cb(uv_timer_t *t)
{
    struct rg_node *n = t->data;
    struct waiter *w = n->barrier_next;
    n->barrier_next = NULL;
    n->barrier_next_tail = &n->barrier_next;
    fire_waiters(w, RAFT_SHUTDOWN, 0);
    /* raft_close fails every pending apply/barrier with LEADERSHIPLOST. */
    raft_close(&n->raft, raft_closed_cb);
}

void rg_node_close(struct rg_node *n, rg_event_cb cb, void *arg)
{
    if (n->closing) {
        return;
    }
    n->closing = true;
    n->close_cb = cb;
    n->close_arg = arg;
    uv_timer_stop(&n->watchdog);
    /* Deferred by one iteration: never close raft from inside its own
     * callbacks (RAFT_NOTES.md §1). */
    uv_timer_start(&n->close_timer, deferred_close_cb, 0, 0);
}
