/* Tests of src/bus/routes.c over three real route hubs (mutual TLS on
 * loopback, one uv loop) with a fake bus: bus_deliver_remote() below records
 * what each node received. Covers connection set-up (a node listing itself
 * among its peers included), interest propagation with reference counts,
 * message contents, queue groups served exactly once cluster-wide with the
 * local preference, a peer restart healing by itself, a malformed frame
 * closing only its connection, and shutdown while dials fail.
 *
 * Interest travels asynchronously, so tests synchronise with
 * sync_interest(): the receiving node announces a fresh "sync.<n>" subject
 * and the sender publishes on it until it is forwarded; frames on a
 * connection are ordered, so every interest change announced before has
 * arrived too. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <raft.h>
#include <uv.h>

#include "bus/internal.h"
#include "lib/framed.h"
#include "lib/log.h"
#include "route/hub.h"
#include "route_certs.h"

#ifndef UB_SOURCE_DIR
#error "UB_SOURCE_DIR must be defined"
#endif

#define N_NODES 3
#define WAIT_MS 10000

static struct route_certs certs;
static const char *const names[N_NODES] = { "a", "b", "c" };

/* ===== The fake bus ===================================================== */

struct bus {
    unsigned sync_max;   /* the highest n of the "sync.<n>" received */
    unsigned msgs;       /* other messages received */
    unsigned served_w;   /* of them, with queue group "w" to serve */
    unsigned queues;     /* queue groups listed, in total */
    /* the last message */
    char subject[256];
    char reply[256];
    bool has_reply;
    uint8_t *data;
    size_t hdr_len, total_len;
};

size_t bus_deliver_remote(struct bus *b, const struct bmsg *m,
                          const char *const *queues, const size_t *queue_lens,
                          size_t nq)
{
    if (m->subject_len > 5 && memcmp(m->subject, "sync.", 5) == 0) {
        unsigned n = (unsigned)strtoul(m->subject + 5, NULL, 10);
        if (n > b->sync_max) {
            b->sync_max = n;
        }
        return 1;
    }
    b->msgs++;
    b->queues += (unsigned)nq;
    for (size_t i = 0; i < nq; i++) {
        if (queue_lens[i] == 1 && queues[i][0] == 'w') {
            b->served_w++;
        }
    }
    assert_true(m->subject_len < sizeof b->subject);
    memcpy(b->subject, m->subject, m->subject_len);
    b->subject[m->subject_len] = '\0';
    b->has_reply = m->reply != NULL;
    if (m->reply) {
        assert_true(m->reply_len < sizeof b->reply);
        memcpy(b->reply, m->reply, m->reply_len);
        b->reply[m->reply_len] = '\0';
    }
    free(b->data);
    b->data = malloc(m->total_len + 1);
    assert_non_null(b->data);
    memcpy(b->data, m->data, m->total_len);
    b->hdr_len = m->hdr_len;
    b->total_len = m->total_len;
    return 1;
}

/* ===== Fixture ========================================================== */

struct node {
    struct rt_hub *hub;
    struct brt *brt;
    struct bus bus;
    int port;
    char addr[64];
    bool brt_closed, hub_closed;
};

struct fixture {
    uv_loop_t loop;
    struct node n[N_NODES];
    unsigned next_sync;
};

static const char *cert_path(const char *rel)
{
    static char buf[8][ROUTE_PATH_MAX];
    static int next;
    char *b = buf[next++ % 8];
    return route_certs_path(&certs, rel, b, ROUTE_PATH_MAX);
}

typedef bool (*pred_fn)(struct fixture *f, void *arg);

static void tick_cb(uv_timer_t *t)
{
    (void)t; /* only wakes the loop up */
}

/* Runs the loop until pred holds or timeout_ms pass. */
static bool run_until(struct fixture *f, pred_fn pred, void *arg,
                      unsigned timeout_ms)
{
    uv_timer_t tick;
    uint64_t deadline;
    bool ok;

    uv_update_time(&f->loop);
    deadline = uv_now(&f->loop) + timeout_ms;
    uv_timer_init(&f->loop, &tick);
    tick.data = (void *)tick_cb; /* marks it for loop_idle */
    uv_timer_start(&tick, tick_cb, 5, 5);
    while (!(ok = pred(f, arg)) && uv_now(&f->loop) < deadline) {
        uv_run(&f->loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    return ok;
}

static bool never(struct fixture *f, void *arg)
{
    (void)f;
    (void)arg;
    return false;
}

static void run_for(struct fixture *f, unsigned ms)
{
    run_until(f, never, NULL, ms);
}

static void start_hub(struct fixture *f, int i, int port)
{
    struct rt_hub_config cfg;
    char rel[64], crt[ROUTE_PATH_MAX], key[ROUTE_PATH_MAX];
    char err[512] = "";
    struct node *n = &f->n[i];

    memset(&cfg, 0, sizeof cfg);
    cfg.name = names[i];
    cfg.listen_host = "127.0.0.1";
    cfg.listen_port = port;
    snprintf(rel, sizeof rel, "%s/route.crt", names[i]);
    snprintf(crt, sizeof crt, "%s", cert_path(rel));
    snprintf(rel, sizeof rel, "%s/route.key", names[i]);
    snprintf(key, sizeof key, "%s", cert_path(rel));
    cfg.cert_file = crt;
    cfg.key_file = key;
    cfg.ca_file = cert_path("cluster-ca.crt");
    cfg.secret = certs.secret;
    cfg.secret_len = certs.secret_len;
    cfg.timeout_ms = 2000;
    if (rt_hub_create(&f->loop, &cfg, &n->hub, err, sizeof err) != 0 ||
        rt_hub_listen(n->hub, err, sizeof err) != 0) {
        fail_msg("hub %s: %s", names[i], err);
    }
    n->hub_closed = false;
    n->port = rt_hub_port(n->hub);
    snprintf(n->addr, sizeof n->addr, "127.0.0.1:%d", n->port);
}

/* Node i routes to every other node; node 0 also lists itself, as an
 * operator giving the same --routes to every node would. */
static void start_routes(struct fixture *f, int i)
{
    const char *peers[N_NODES];
    unsigned np = 0;

    for (int j = 0; j < N_NODES; j++) {
        if (j != i || i == 0) {
            peers[np++] = f->n[j].addr;
        }
    }
    f->n[i].brt_closed = false;
    f->n[i].brt = brt_new(&f->n[i].bus, f->n[i].hub, peers, np);
    assert_non_null(f->n[i].brt);
}

static void brt_closed_cb(void *arg)
{
    struct node *n = arg;
    assert_false(n->brt_closed);
    n->brt_closed = true;
}

static void hub_closed_cb(void *arg)
{
    struct node *n = arg;
    n->hub_closed = true;
}

static bool node_closed(struct fixture *f, void *arg)
{
    struct node *n = &f->n[*(int *)arg];
    return n->brt_closed && n->hub_closed;
}

/* Closes node i's routes, then its hub, and waits for both. */
static void stop_node(struct fixture *f, int i)
{
    struct node *n = &f->n[i];
    brt_close(n->brt, brt_closed_cb, n);
    n->brt = NULL;
    assert_false(n->brt_closed); /* the callback is never synchronous */
    rt_hub_close(n->hub, hub_closed_cb, n);
    n->hub = NULL;
    assert_true(run_until(f, node_closed, &i, WAIT_MS));
}

static bool all_connected(struct fixture *f, void *arg)
{
    (void)arg;
    for (int i = 0; i < N_NODES; i++) {
        if (f->n[i].brt == NULL || brt_connected(f->n[i].brt) != N_NODES - 1) {
            return false;
        }
    }
    return true;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);

    assert_non_null(f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    for (int i = 0; i < N_NODES; i++) {
        start_hub(f, i, 0);
    }
    for (int i = 0; i < N_NODES; i++) {
        start_routes(f, i);
    }
    assert_true(run_until(f, all_connected, NULL, WAIT_MS));
    *state = f;
    return 0;
}

static void count_handle(uv_handle_t *h, void *arg)
{
    if (h->type == UV_TIMER && h->data == (void *)tick_cb) {
        return; /* run_until's own tick */
    }
    ++*(int *)arg;
}

static bool loop_idle(struct fixture *f, void *arg)
{
    int n = 0;
    (void)arg;
    uv_walk(&f->loop, count_handle, &n);
    return n == 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    for (int i = 0; i < N_NODES; i++) {
        if (f->n[i].brt != NULL) {
            stop_node(f, i);
        }
        free(f->n[i].bus.data);
    }
    assert_true(run_until(f, loop_idle, NULL, WAIT_MS));
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

/* ===== Helpers ========================================================== */

static size_t publish(struct fixture *f, int from, const char *subject,
                      const char *const *local, const size_t *local_lens,
                      size_t n_local)
{
    struct bmsg m;
    memset(&m, 0, sizeof m);
    m.subject = subject;
    m.subject_len = strlen(subject);
    m.data = (const uint8_t *)"x";
    m.total_len = 1;
    return brt_publish(f->n[from].brt, &m, local, local_lens, n_local);
}

static void interest(struct fixture *f, int i, const char *pattern,
                     const char *queue, int delta)
{
    brt_interest(f->n[i].brt, pattern, strlen(pattern), queue,
                 queue ? strlen(queue) : 0, delta);
}

struct sync_arg {
    int from, to;
    char subject[32];
    unsigned n;
};

static bool sync_pred(struct fixture *f, void *arg)
{
    struct sync_arg *s = arg;
    if (f->n[s->to].bus.sync_max >= s->n) {
        return true;
    }
    publish(f, s->from, s->subject, NULL, NULL, 0);
    return false;
}

/* Waits until everything node `to` announced so far is known to `from`. */
static void sync_interest(struct fixture *f, int from, int to)
{
    struct sync_arg s = { .from = from, .to = to };
    s.n = ++f->next_sync;
    snprintf(s.subject, sizeof s.subject, "sync.%u", s.n);
    interest(f, to, s.subject, NULL, +1);
    assert_true(run_until(f, sync_pred, &s, WAIT_MS));
    interest(f, to, s.subject, NULL, -1);
}

struct count_arg {
    unsigned *counter;
    unsigned want;
};

static bool count_reached(struct fixture *f, void *arg)
{
    struct count_arg *c = arg;
    (void)f;
    return *c->counter >= c->want;
}

static void wait_msgs(struct fixture *f, int i, unsigned want)
{
    struct count_arg c = { &f->n[i].bus.msgs, want };
    assert_true(run_until(f, count_reached, &c, WAIT_MS));
}

/* ===== Tests ============================================================ */

/* Node a lists itself: it connects to the two others only. */
static void test_connect(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < N_NODES; i++) {
        assert_int_equal(brt_connected(f->n[i].brt), N_NODES - 1);
    }
    /* Nothing is forwarded without interest. */
    assert_int_equal(publish(f, 0, "foo.bar", NULL, NULL, 0), 0);
}

static void test_plain_interest(void **state)
{
    struct fixture *f = *state;
    static const char hdr[] = "NATS/1.0\r\nK: v\r\n\r\n";
    size_t big = 1u << 20;
    uint8_t *data = malloc(sizeof hdr - 1 + big);
    struct bmsg m;

    assert_non_null(data);
    memcpy(data, hdr, sizeof hdr - 1);
    for (size_t i = 0; i < big; i++) {
        data[sizeof hdr - 1 + i] = (uint8_t)(i * 7);
    }
    interest(f, 1, "foo.*", NULL, +1);
    sync_interest(f, 0, 1);

    /* Contents cross intact: subject, reply, headers, a 1 MiB payload. */
    memset(&m, 0, sizeof m);
    m.subject = "foo.bar";
    m.subject_len = 7;
    m.reply = "_INBOX.a.1";
    m.reply_len = 10;
    m.data = data;
    m.hdr_len = sizeof hdr - 1;
    m.total_len = sizeof hdr - 1 + big;
    assert_int_equal(brt_publish(f->n[0].brt, &m, NULL, NULL, 0), 1);
    wait_msgs(f, 1, 1);
    assert_string_equal(f->n[1].bus.subject, "foo.bar");
    assert_true(f->n[1].bus.has_reply);
    assert_string_equal(f->n[1].bus.reply, "_INBOX.a.1");
    assert_int_equal(f->n[1].bus.hdr_len, sizeof hdr - 1);
    assert_int_equal(f->n[1].bus.total_len, m.total_len);
    assert_memory_equal(f->n[1].bus.data, data, m.total_len);
    assert_int_equal(f->n[1].bus.queues, 0);
    free(data);

    /* Only matching subjects; no reply stays no reply. */
    assert_int_equal(publish(f, 0, "foo.bar.baz", NULL, NULL, 0), 0);
    assert_int_equal(publish(f, 0, "foo.x", NULL, NULL, 0), 1);
    wait_msgs(f, 1, 2);
    assert_false(f->n[1].bus.has_reply);
    assert_int_equal(f->n[2].bus.msgs, 0);

    /* Interest is reference counted: two local subscriptions, one gone,
     * still interest; both gone, none. */
    interest(f, 1, "bar", NULL, +1);
    interest(f, 1, "bar", NULL, +1);
    interest(f, 1, "bar", NULL, -1);
    sync_interest(f, 0, 1);
    assert_int_equal(publish(f, 0, "bar", NULL, NULL, 0), 1);
    interest(f, 1, "bar", NULL, -1);
    interest(f, 1, "foo.*", NULL, -1);
    sync_interest(f, 0, 1);
    assert_int_equal(publish(f, 0, "bar", NULL, NULL, 0), 0);
    assert_int_equal(publish(f, 0, "foo.x", NULL, NULL, 0), 0);
    /* A removal of something never announced is ignored. */
    interest(f, 1, "never", NULL, -1);

    /* Both other nodes interested: one send each. */
    interest(f, 1, "all.>", NULL, +1);
    interest(f, 2, "all.*", NULL, +1);
    interest(f, 2, "all.x", NULL, +1); /* two matches on c: still one send */
    sync_interest(f, 0, 1);
    sync_interest(f, 0, 2);
    assert_int_equal(publish(f, 0, "all.x", NULL, NULL, 0), 2);
    wait_msgs(f, 1, 3);
    wait_msgs(f, 2, 1);
    run_for(f, 50);
    assert_int_equal(f->n[2].bus.msgs, 1);
}

static bool msgs_sum_is(struct fixture *f, void *arg)
{
    return f->n[1].bus.msgs + f->n[2].bus.msgs >= *(unsigned *)arg;
}

static void test_queue_groups(void **state)
{
    struct fixture *f = *state;
    const char *local[1] = { "w" };
    size_t local_len[1] = { 1 };
    unsigned total;

    interest(f, 1, "work", "w", +1);
    interest(f, 2, "work.>", NULL, +1); /* no match on "work" */
    interest(f, 2, "work", "w", +1);
    interest(f, 2, "*", "w", +1); /* same name, other pattern: one group */
    sync_interest(f, 0, 1);
    sync_interest(f, 0, 2);

    /* Each message goes to exactly one node, both get a share. */
    for (int i = 0; i < 200; i++) {
        assert_int_equal(publish(f, 0, "work", NULL, NULL, 0), 1);
    }
    total = 200;
    assert_true(run_until(f, msgs_sum_is, &total, WAIT_MS));
    run_for(f, 50);
    assert_int_equal(f->n[1].bus.msgs + f->n[2].bus.msgs, total);
    assert_int_equal(f->n[1].bus.served_w + f->n[2].bus.served_w, total);
    assert_int_equal(f->n[1].bus.queues + f->n[2].bus.queues, total);
    assert_true(f->n[1].bus.served_w > 20);
    assert_true(f->n[2].bus.served_w > 20);

    /* Served locally: no node gets it. */
    assert_int_equal(publish(f, 0, "work", local, local_len, 1), 0);

    /* b also has a plain subscription: it gets every message, and the group
     * is still served exactly once (by b in the same frame, or by c). */
    interest(f, 1, "work", NULL, +1);
    sync_interest(f, 0, 1);
    {
        unsigned b0 = f->n[1].bus.msgs, w0 = f->n[1].bus.served_w +
                                             f->n[2].bus.served_w;
        unsigned c0 = f->n[2].bus.msgs;
        size_t sent = 0;
        for (int i = 0; i < 100; i++) {
            sent += publish(f, 0, "work", NULL, NULL, 0);
        }
        wait_msgs(f, 1, b0 + 100);
        wait_msgs(f, 2, c0 + (unsigned)(sent - 100));
        run_for(f, 50);
        assert_int_equal(f->n[1].bus.msgs - b0, 100);
        assert_int_equal(f->n[2].bus.msgs - c0, sent - 100);
        assert_int_equal(f->n[1].bus.served_w + f->n[2].bus.served_w - w0,
                         100);
        /* With the group served locally only b's plain interest is left. */
        assert_int_equal(publish(f, 0, "work", local, local_len, 1), 1);
    }
}

struct conn_arg {
    int node;
    unsigned want;
};

static bool connected_is(struct fixture *f, void *arg)
{
    struct conn_arg *c = arg;
    return brt_connected(f->n[c->node].brt) == c->want;
}

struct pub_arg {
    int from;
    const char *subject;
    size_t want;
};

static bool publish_gives(struct fixture *f, void *arg)
{
    struct pub_arg *p = arg;
    return publish(f, p->from, p->subject, NULL, NULL, 0) == p->want;
}

/* c restarts (same address, fresh state): what it had announced is dropped,
 * and both directions heal without help. */
static void test_peer_restart(void **state)
{
    struct fixture *f = *state;
    struct conn_arg ca = { 0, 1 };
    struct pub_arg pa = { 0, "old.x", 0 };
    int port = f->n[2].port;

    interest(f, 2, "old.x", NULL, +1);
    interest(f, 0, "from.a", NULL, +1);
    sync_interest(f, 0, 2);
    sync_interest(f, 2, 0);
    assert_int_equal(publish(f, 0, "old.x", NULL, NULL, 0), 1);

    stop_node(f, 2);
    assert_true(run_until(f, connected_is, &ca, WAIT_MS));
    ca.node = 1;
    assert_true(run_until(f, connected_is, &ca, WAIT_MS));
    /* a dropped c's interest when c's connection ended. */
    assert_true(run_until(f, publish_gives, &pa, WAIT_MS));

    free(f->n[2].bus.data);
    memset(&f->n[2].bus, 0, sizeof f->n[2].bus);
    start_hub(f, 2, port);
    start_routes(f, 2);
    assert_true(run_until(f, all_connected, NULL, WAIT_MS));

    /* The new c's interest reaches a; the old one is gone for good. */
    interest(f, 2, "new.x", NULL, +1);
    sync_interest(f, 0, 2);
    assert_int_equal(publish(f, 0, "new.x", NULL, NULL, 0), 1);
    assert_int_equal(publish(f, 0, "old.x", NULL, NULL, 0), 0);
    /* a re-sent its interest to the new c. */
    sync_interest(f, 2, 0);
    assert_int_equal(publish(f, 2, "from.a", NULL, NULL, 0), 1);
    wait_msgs(f, 0, 1);
}

/* A peer that sends garbage: a closes that connection. (It is played by
 * b's hub, so it also supersedes b's real connection to a; b notices the
 * end of it, redials and announces its interest again.) */
struct rogue {
    struct ub_framed *fr;
    int status;
    bool connected, closed;
};

static void rogue_frame_cb(struct ub_framed *fr, const uint8_t *buf,
                           size_t len)
{
    (void)fr;
    (void)buf;
    (void)len;
    fail_msg("a route peer wrote on an inbound connection");
}

static void rogue_close_cb(struct ub_framed *fr)
{
    struct rogue *r = ub_framed_data(fr);
    r->closed = true;
}

static void rogue_connect_cb(void *arg, int status, const struct rt_peer *peer,
                             uv_stream_t *stream)
{
    struct rogue *r = arg;
    (void)peer;
    r->status = status;
    r->connected = true;
    if (status == 0) {
        r->fr = ub_framed_start(stream, raft_free, 64, rogue_frame_cb,
                                rogue_close_cb, r);
        assert_non_null(r->fr);
    }
}

static bool rogue_done(struct fixture *f, void *arg)
{
    struct rogue *r = arg;
    (void)f;
    return r->closed;
}

static bool rogue_connected(struct fixture *f, void *arg)
{
    struct rogue *r = arg;
    (void)f;
    return r->connected;
}

static void test_malformed_frame(void **state)
{
    struct fixture *f = *state;
    struct rogue r = { 0 };
    struct pub_arg pa = { 0, "heal.x", 1 };
    static const uint8_t bad[] = { 3, 0, 0, 1, 0, 0, 0, 0, 0, 0, '*' };

    interest(f, 1, "heal.x", NULL, +1);
    sync_interest(f, 0, 1);
    assert_int_equal(rt_hub_connect(f->n[1].hub, f->n[0].addr, 0, RT_KIND_BUS,
                                    0, rogue_connect_cb, &r, NULL),
                     0);
    assert_true(run_until(f, rogue_connected, &r, WAIT_MS));
    assert_int_equal(r.status, 0);
    assert_int_equal(ub_framed_send(r.fr, bad, sizeof bad), 0);
    assert_true(run_until(f, rogue_done, &r, WAIT_MS));

    /* b's interest is back at a, and messages flow again. */
    assert_true(run_until(f, publish_gives, &pa, WAIT_MS));
    assert_true(run_until(f, all_connected, NULL, WAIT_MS));
    wait_msgs(f, 1, 1);
}

/* A node whose peers never answer keeps redialling with backoff, and closes
 * cleanly in the middle of it. */
static bool brt_closed_pred(struct fixture *f, void *arg)
{
    struct node *n = arg;
    (void)f;
    return n->brt_closed;
}

static void test_close_while_dialing(void **state)
{
    struct fixture *f = *state;
    const char *peers[2] = { "127.0.0.1:1", "not an address" };
    struct node *n = &f->n[0];

    brt_close(n->brt, brt_closed_cb, n);
    assert_true(run_until(f, brt_closed_pred, n, WAIT_MS));
    n->brt_closed = false;
    n->brt = brt_new(&n->bus, n->hub, peers, 2);
    assert_non_null(n->brt);
    run_for(f, 700);
    assert_int_equal(brt_connected(n->brt), 0);
    assert_int_equal(publish(f, 0, "x", NULL, NULL, 0), 0);
    interest(f, 0, "x", NULL, +1);
    stop_node(f, 0);
}

static int group_setup(void **state)
{
    (void)state;
    /* Quiet unless asked: ROUTE_TEST_DEBUG=1 shows every route event. */
    ub_log_set_level(getenv("ROUTE_TEST_DEBUG") != NULL ? "debug" : "warn");
    return route_certs_make(&certs, UB_SOURCE_DIR);
}

static int group_teardown(void **state)
{
    (void)state;
    route_certs_remove(&certs);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_connect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plain_interest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_groups, setup, teardown),
        cmocka_unit_test_setup_teardown(test_peer_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_frame, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_close_while_dialing, setup,
                                        teardown),
    };
    return cmocka_run_group_tests_name("bus_routes", tests, group_setup,
                                       group_teardown);
}
