/* Integration tests of the route hub (src/route): mutual TLS + hello checks,
 * the socketpair relay, dial cancel/timeout, and three real libraft nodes
 * per group talking through rt_raft_transport, all on one uv loop.
 *
 * Certificates come from deploy/cluster/generate-cluster-certs.sh (run from
 * the source tree) plus bad ones made with the openssl command. Misbehaving
 * peers are played by tests/lib/route_rogue.c in their own threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <netinet/in.h>
#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

#include "lib/log.h"
#include "route/hello.h"
#include "route/hub.h"
#include "route/raft_transport.h"
#include "route_certs.h"
#include "route_rogue.h"

#ifndef UB_SOURCE_DIR
#error "UB_SOURCE_DIR must be defined"
#endif

#define N_HUBS 3
/* Hub handshake/dial limit in these tests; ROUTE_TEST_TIMEOUT_MS overrides
 * it (valgrind needs about 5000). */
static unsigned test_timeout_ms = 2000;
#define TEST_TIMEOUT_MS test_timeout_ms
#define DATA_SIZE (4u << 20)

static struct route_certs certs;
static const char *const names[N_HUBS] = { "a", "b", "c" };

/* ===== Fixture ========================================================== */

struct fixture {
    uv_loop_t loop;
    struct rt_hub *hub[N_HUBS];
    int hubs_closed;   /* close callbacks seen */
    int hubs_closing;  /* rt_hub_close calls made */
};

static const char *cert_path(const char *rel)
{
    static char buf[8][ROUTE_PATH_MAX];
    static int next;
    char *b = buf[next++ % 8];
    return route_certs_path(&certs, rel, b, ROUTE_PATH_MAX);
}

static void hub_config(struct rt_hub_config *cfg, const char *name)
{
    char rel[64];

    memset(cfg, 0, sizeof *cfg);
    cfg->name = name;
    cfg->listen_host = "127.0.0.1";
    cfg->listen_port = 0;
    snprintf(rel, sizeof rel, "%s/route.crt", name);
    cfg->cert_file = cert_path(rel);
    snprintf(rel, sizeof rel, "%s/route.key", name);
    cfg->key_file = cert_path(rel);
    cfg->ca_file = cert_path("cluster-ca.crt");
    cfg->secret = certs.secret;
    cfg->secret_len = certs.secret_len;
    cfg->timeout_ms = TEST_TIMEOUT_MS;
}

static struct rt_hub *make_hub(uv_loop_t *loop, const struct rt_hub_config *c)
{
    struct rt_hub *h = NULL;
    char err[512] = "";

    if (rt_hub_create(loop, c, &h, err, sizeof err) != 0) {
        fail_msg("rt_hub_create(%s): %s", c->name, err);
    }
    if (rt_hub_listen(h, err, sizeof err) != 0) {
        fail_msg("rt_hub_listen(%s): %s", c->name, err);
    }
    return h;
}

typedef int (*pred_fn)(void *arg);

static void tick_cb(uv_timer_t *t)
{
    (void)t; /* only wakes the loop up */
}

/* Runs the loop until pred(arg) holds or timeout_ms pass. */
static int run_until(uv_loop_t *loop, pred_fn pred, void *arg,
                     unsigned timeout_ms)
{
    uv_timer_t tick;
    uint64_t deadline;
    int ok;

    uv_update_time(loop);
    deadline = uv_now(loop) + timeout_ms;
    uv_timer_init(loop, &tick);
    tick.data = (void *)tick_cb; /* marks it for loop_idle */
    uv_timer_start(&tick, tick_cb, 5, 5);
    while (!(ok = pred(arg)) && uv_now(loop) < deadline) {
        uv_run(loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return ok;
}

static int never(void *arg)
{
    (void)arg;
    return 0;
}

static void run_for(uv_loop_t *loop, unsigned ms)
{
    run_until(loop, never, NULL, ms);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    struct rt_hub_config cfg;

    assert_non_null(f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    for (int i = 0; i < N_HUBS; i++) {
        hub_config(&cfg, names[i]);
        f->hub[i] = make_hub(&f->loop, &cfg);
    }
    *state = f;
    return 0;
}

static void hub_closed_cb(void *arg)
{
    struct fixture *f = arg;
    f->hubs_closed++;
}

static int all_hubs_closed(void *arg)
{
    struct fixture *f = arg;
    return f->hubs_closed == f->hubs_closing;
}

/* Closes hub i; with wait, runs the loop until it is gone. */
static void close_hub(struct fixture *f, int i, int wait)
{
    rt_hub_close(f->hub[i], hub_closed_cb, f);
    f->hub[i] = NULL;
    f->hubs_closing++;
    if (wait) {
        assert_true(run_until(&f->loop, all_hubs_closed, f, 5000));
    }
}

static void count_handle(uv_handle_t *h, void *arg)
{
    if (h->type == UV_TIMER && h->data == (void *)tick_cb) {
        return; /* run_until's own tick */
    }
    ++*(int *)arg;
}

/* True when no handle but run_until's tick is left on the loop. */
static int loop_idle(void *arg)
{
    int n = 0;
    uv_walk(arg, count_handle, &n);
    return n == 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    for (int i = 0; i < N_HUBS; i++) {
        if (f->hub[i] != NULL) {
            close_hub(f, i, 0);
        }
    }
    assert_true(run_until(&f->loop, all_hubs_closed, f, 5000));
    assert_true(run_until(&f->loop, loop_idle, &f->loop, 5000));
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

static void get_stats(struct rt_hub *h, struct rt_hub_stats *s)
{
    rt_hub_get_stats(h, s);
}

/* ===== Endpoints: the application side of a relayed stream ============== */

struct endpoint {
    uv_stream_t *stream;
    struct rt_peer peer;
    uint64_t group;
    uint8_t seed;         /* pattern the peer sends us */
    size_t received;
    size_t expect;        /* bytes to receive, 0 = just watch for EOF */
    int corrupt;
    int eof;
    int error;
    int closed;
    size_t written;       /* bytes whose write completed */
};

static uint8_t pattern(uint8_t seed, size_t i)
{
    uint32_t x = (uint32_t)i * 2654435761u;
    return (uint8_t)((x >> 13) ^ seed);
}

static void ep_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    buf->base = malloc(65536);
    buf->len = buf->base != NULL ? 65536 : 0;
}

static void ep_read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct endpoint *e = s->data;

    if (n > 0) {
        for (ssize_t i = 0; i < n; i++) {
            if ((uint8_t)buf->base[i] != pattern(e->seed, e->received + (size_t)i)) {
                e->corrupt = 1;
            }
        }
        e->received += (size_t)n;
    } else if (n == UV_EOF) {
        e->eof = 1;
    } else if (n < 0) {
        e->error = (int)n;
    }
    free(buf->base);
}

static void ep_closed_cb(uv_handle_t *h)
{
    struct endpoint *e = h->data;
    e->closed = 1;
    raft_free(h);
}

static void ep_close(struct endpoint *e)
{
    if (e->stream != NULL) {
        uv_close((uv_handle_t *)e->stream, ep_closed_cb);
        e->stream = NULL;
    }
}

static void ep_attach(struct endpoint *e, const struct rt_peer *peer,
                      uv_stream_t *s)
{
    e->stream = s;
    e->peer = *peer;
    s->data = e;
    assert_int_equal(uv_read_start(s, ep_alloc, ep_read_cb), 0);
}

struct write_job {
    uv_write_t req;
    struct endpoint *e;
    size_t len;
};

static void ep_write_cb(uv_write_t *req, int status)
{
    struct write_job *w = (struct write_job *)req;
    if (status == 0) {
        w->e->written += w->len;
    }
    free(w);
}

/* Queues size bytes of the pattern with seed; buf stays alive until the
 * writes complete (owned by the caller). */
static void ep_send(struct endpoint *e, uint8_t *buf, size_t size, uint8_t seed)
{
    for (size_t i = 0; i < size; i++) {
        buf[i] = pattern(seed, i);
    }
    for (size_t off = 0; off < size; off += 65536) {
        struct write_job *w = calloc(1, sizeof *w);
        size_t len = size - off < 65536 ? size - off : 65536;
        uv_buf_t b = uv_buf_init((char *)buf + off, (unsigned)len);
        assert_non_null(w);
        w->e = e;
        w->len = len;
        assert_int_equal(uv_write(&w->req, e->stream, &b, 1, ep_write_cb), 0);
    }
}

/* A dial's outcome. */
struct dial {
    int calls;
    int status;
    struct endpoint ep;
};

static void dial_cb(void *arg, int status, const struct rt_peer *peer,
                    uv_stream_t *stream)
{
    struct dial *d = arg;
    d->calls++;
    d->status = status;
    if (status == 0) {
        ep_attach(&d->ep, peer, stream);
    } else {
        assert_null(stream);
        assert_null(peer);
    }
}

static int dial_done(void *arg)
{
    return ((struct dial *)arg)->calls > 0;
}

/* Inbound side: keeps the last accepted stream. */
struct inbound {
    int calls;
    int close_at_once;
    struct endpoint ep;
};

static void inbound_cb(void *arg, const struct rt_peer *peer, uint64_t group,
                       uv_stream_t *stream)
{
    struct inbound *in = arg;
    in->calls++;
    if (in->ep.stream != NULL) {
        ep_close(&in->ep); /* keep one at a time */
    }
    memset(&in->ep, 0, sizeof in->ep);
    in->ep.group = group;
    ep_attach(&in->ep, peer, stream);
    if (in->close_at_once) {
        ep_close(&in->ep);
    }
}

static int dial_once(struct fixture *f, struct rt_hub *h, const char *address,
                     uint64_t expect, uint32_t kind, uint64_t group,
                     struct dial *d)
{
    memset(d, 0, sizeof *d);
    assert_int_equal(rt_hub_connect(h, address, expect, kind, group, dial_cb,
                                    d, NULL),
                     0);
    assert_true(run_until(&f->loop, dial_done, d, 4 * TEST_TIMEOUT_MS));
    assert_int_equal(d->calls, 1);
    return d->status;
}

static void assert_contains(const char *haystack, const char *needle)
{
    if (strstr(haystack, needle) == NULL) {
        fail_msg("expected \"%s\" in \"%s\"", needle, haystack);
    }
}

/* ===== Hello codec ====================================================== */

static void test_hello_codec(void **state)
{
    uint8_t exporter[RT_EXPORTER_LEN], frame[RT_HELLO_MAX];
    struct rt_hello h, out;
    const char *why;
    int n;

    (void)state;
    memset(exporter, 7, sizeof exporter);
    memset(&h, 0, sizeof h);
    h.kind = RT_KIND_RAFT;
    h.role = RT_ROLE_DIALER;
    h.group = 42;
    h.id = rt_node_id("node-1");
    strcpy(h.name, "node-1");
    strcpy(h.address, "10.0.0.1:6250");
    n = rt_hello_encode(&h, exporter, certs.secret, certs.secret_len, frame,
                        sizeof frame);
    assert_true(n > 0 && n <= RT_HELLO_MAX);
    assert_int_equal(rt_hello_frame_len(frame, 7), 0);
    assert_int_equal(rt_hello_frame_len(frame, 8), n);
    assert_int_equal(rt_hello_decode(frame, (size_t)n, exporter, certs.secret,
                                     certs.secret_len, &out, &why),
                     0);
    assert_int_equal(out.kind, RT_KIND_RAFT);
    assert_int_equal(out.group, 42);
    assert_string_equal(out.name, "node-1");
    assert_string_equal(out.address, "10.0.0.1:6250");

    /* Another session (exporter) or secret: bad authenticator. */
    exporter[0] ^= 1;
    assert_int_equal(rt_hello_decode(frame, (size_t)n, exporter, certs.secret,
                                     certs.secret_len, &out, &why),
                     -1);
    assert_contains(why, "authenticator");
    exporter[0] ^= 1;
    frame[20] ^= 1; /* tampered group */
    assert_int_equal(rt_hello_decode(frame, (size_t)n, exporter, certs.secret,
                                     certs.secret_len, &out, &why),
                     -1);
    frame[20] ^= 1;
    /* Oversize length is refused before anything else. */
    frame[6] = 0x10;
    assert_int_equal(rt_hello_frame_len(frame, 8), -1);

    /* Node ids: deterministic, top bit clear, never 0. */
    assert_true(rt_node_id("a") != rt_node_id("b"));
    assert_int_equal(rt_node_id("a") >> 63, 0);
    assert_true(rt_node_id("") != 0);
    assert_false(rt_name_valid("-x"));
    assert_false(rt_name_valid("a b"));
    assert_true(rt_name_valid("node-1.example"));
}

/* ===== Own certificate refused at creation ============================== */

static void expect_create_fails(const char *name, const char *crt,
                                const char *key, const char *needle)
{
    uv_loop_t loop;
    struct rt_hub_config cfg;
    struct rt_hub *h = NULL;
    char err[512] = "";

    assert_int_equal(uv_loop_init(&loop), 0);
    hub_config(&cfg, name);
    cfg.cert_file = cert_path(crt);
    cfg.key_file = cert_path(key);
    assert_int_not_equal(rt_hub_create(&loop, &cfg, &h, err, sizeof err), 0);
    assert_null(h);
    assert_contains(err, needle);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_create_refuses_bad_own_cert(void **state)
{
    uv_loop_t loop;
    struct rt_hub_config cfg;
    struct rt_hub *h = NULL;
    char err[512] = "";

    (void)state;
    expect_create_fails("a", "bad/clientca-a.crt", "bad/clientca-a.key",
                        "cluster CA");
    expect_create_fails("a", "bad/rogue-a.crt", "bad/rogue-a.key",
                        "cluster CA");
    expect_create_fails("a", "b/route.crt", "b/route.key", "not this node 'a'");
    expect_create_fails("a", "server.crt", "server.key", "cluster CA");
    expect_create_fails("a", "a/route.crt", "b/route.key", "does not match");

    assert_int_equal(uv_loop_init(&loop), 0);
    hub_config(&cfg, "a");
    cfg.secret_len = 8;
    assert_int_not_equal(rt_hub_create(&loop, &cfg, &h, err, sizeof err), 0);
    assert_contains(err, "secret");
    hub_config(&cfg, "bad name");
    assert_int_not_equal(rt_hub_create(&loop, &cfg, &h, err, sizeof err), 0);
    assert_contains(err, "invalid node name");
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ===== Good dial, data both ways, EOF =================================== */

struct xfer {
    struct endpoint *x, *y;
    size_t size;
};

static int xfer_done(void *arg)
{
    struct xfer *t = arg;
    return (t->x->received >= t->size && t->y->received >= t->size &&
            t->x->written >= t->size && t->y->written >= t->size) ||
           t->x->error || t->y->error || t->x->eof || t->y->eof;
}

static int ep_eof(void *arg)
{
    struct endpoint *e = arg;
    return e->eof || e->error;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_good_dial(void **state)
{
    struct fixture *f = *state;
    struct inbound in = { 0 };
    struct dial d;
    struct rt_hub_stats sa, sb;
    struct xfer t;
    uint8_t *buf_a = malloc(DATA_SIZE), *buf_b = malloc(DATA_SIZE);
    double t0, secs;

    assert_non_null(buf_a);
    assert_non_null(buf_b);
    rt_hub_set_accept(f->hub[1], RT_KIND_FORWARD, inbound_cb, &in);
    assert_int_equal(dial_once(f, f->hub[0], rt_hub_advertise(f->hub[1]),
                               rt_node_id("b"), RT_KIND_FORWARD, 7, &d),
                     0);
    /* The acceptor's handler ran before the dialer heard back. */
    assert_int_equal(in.calls, 1);
    assert_string_equal(d.ep.peer.name, "b");
    assert_int_equal(d.ep.peer.id, rt_node_id("b"));
    assert_string_equal(d.ep.peer.address, rt_hub_advertise(f->hub[1]));
    assert_string_equal(in.ep.peer.name, "a");
    assert_int_equal(in.ep.peer.id, rt_node_id("a"));
    assert_string_equal(in.ep.peer.address, rt_hub_advertise(f->hub[0]));
    assert_int_equal(in.ep.group, 7);

    /* 4 MiB each way at once. */
    d.ep.seed = 0xb1;  /* what b sends */
    in.ep.seed = 0xa1; /* what a sends */
    t0 = now_s();
    ep_send(&d.ep, buf_a, DATA_SIZE, 0xa1);
    ep_send(&in.ep, buf_b, DATA_SIZE, 0xb1);
    t.x = &d.ep;
    t.y = &in.ep;
    t.size = DATA_SIZE;
    assert_true(run_until(&f->loop, xfer_done, &t, 20000));
    secs = now_s() - t0;
    assert_int_equal(d.ep.received, DATA_SIZE);
    assert_int_equal(in.ep.received, DATA_SIZE);
    assert_false(d.ep.corrupt);
    assert_false(in.ep.corrupt);
    print_message("relay: 2 x %u MiB both ways in %.3f s (%.0f MiB/s "
                  "aggregate)\n",
                  DATA_SIZE >> 20, secs, 2.0 * (DATA_SIZE >> 20) / secs);

    get_stats(f->hub[0], &sa);
    get_stats(f->hub[1], &sb);
    assert_int_equal(sa.dialed, 1);
    assert_int_equal(sb.accepted, 1);
    assert_int_equal(sa.relays, 1);
    assert_int_equal(sb.relays, 1);
    assert_int_equal(sa.bytes_out, DATA_SIZE);
    assert_int_equal(sb.bytes_in, DATA_SIZE);

    /* Closing a's stream gives EOF on b's; then b closes too. */
    ep_close(&d.ep);
    assert_true(run_until(&f->loop, ep_eof, &in.ep, 5000));
    assert_true(in.ep.eof);
    ep_close(&in.ep);
    run_for(&f->loop, 50);
    get_stats(f->hub[0], &sa);
    get_stats(f->hub[1], &sb);
    assert_int_equal(sa.relays, 0);
    assert_int_equal(sb.relays, 0);
    assert_int_equal(sa.refused + sb.refused, 0);

    /* And the other way round: the acceptor closes first. */
    assert_int_equal(dial_once(f, f->hub[0], rt_hub_advertise(f->hub[1]), 0,
                               RT_KIND_FORWARD, 8, &d),
                     0);
    ep_close(&in.ep);
    assert_true(run_until(&f->loop, ep_eof, &d.ep, 5000));
    assert_true(d.ep.eof);
    ep_close(&d.ep);
    run_for(&f->loop, 50);
    free(buf_a);
    free(buf_b);
}

/* Optional: ROUTE_BENCH_MB=N measures one-way relay throughput. */
static void test_bench(void **state)
{
    struct fixture *f = *state;
    const char *env = getenv("ROUTE_BENCH_MB");
    size_t size = env != NULL ? (size_t)atoi(env) << 20 : 0;
    struct inbound in = { 0 };
    struct endpoint idle = { 0 };
    struct dial d;
    uint8_t *buf;
    double t0, secs;
    struct xfer t;

    if (size == 0) {
        skip();
    }
    buf = malloc(size);
    assert_non_null(buf);
    rt_hub_set_accept(f->hub[1], RT_KIND_FORWARD, inbound_cb, &in);
    assert_int_equal(dial_once(f, f->hub[0], rt_hub_advertise(f->hub[1]), 0,
                               RT_KIND_FORWARD, 1, &d),
                     0);
    in.ep.seed = 0x5a;
    t0 = now_s();
    ep_send(&d.ep, buf, size, 0x5a);
    idle.received = size; /* nothing flows the other way */
    idle.written = size;
    t.x = &in.ep;
    t.y = &idle;
    t.size = size;
    while (in.ep.received < size && !in.ep.error) {
        run_until(&f->loop, xfer_done, &t, 1000);
    }
    secs = now_s() - t0;
    assert_int_equal(in.ep.received, size);
    assert_false(in.ep.corrupt);
    print_message("relay bench: %zu MiB one way in %.3f s = %.0f MiB/s\n",
                  size >> 20, secs, (double)(size >> 20) / secs);
    ep_close(&d.ep);
    ep_close(&in.ep);
    run_for(&f->loop, 50);
    free(buf);
}

/* ===== Bad dialers: the acceptor refuses ================================ */

static int rogue_done(void *arg)
{
    return atomic_load(&((struct route_rogue *)arg)->done);
}

/* Runs a rogue dialer against hub b; returns its result after checking the
 * hub's refusal count moved by `refused`. */
static void rogue_dial_case(struct fixture *f, struct inbound *in,
                            const char *crt, const char *key,
                            const char *claim, uint64_t claim_id,
                            const uint8_t *secret, size_t secret_len,
                            enum route_rogue_hello hello, int expect_ok,
                            const char *needle)
{
    struct route_rogue r;
    struct route_rogue_cfg cfg;
    struct rt_hub_stats before, after;
    int calls = in->calls;

    get_stats(f->hub[1], &before);
    memset(&cfg, 0, sizeof cfg);
    cfg.cert = cert_path(crt);
    cfg.key = cert_path(key);
    cfg.name = claim;
    cfg.id = claim_id;
    cfg.secret = secret;
    cfg.secret_len = secret_len;
    cfg.kind = RT_KIND_FORWARD;
    cfg.group = 3;
    cfg.hello = hello;
    cfg.port = rt_hub_port(f->hub[1]);
    assert_int_equal(route_rogue_dial(&r, &cfg), 0);
    assert_true(run_until(&f->loop, rogue_done, &r, 4 * TEST_TIMEOUT_MS));
    route_rogue_join(&r);
    run_for(&f->loop, 20);
    get_stats(f->hub[1], &after);
    if (expect_ok) {
        assert_int_equal(r.got_hello, 1);
        assert_int_equal(in->calls, calls + 1);
        assert_int_equal(after.refused, before.refused);
        return;
    }
    if (r.got_hello || in->calls != calls ||
        after.refused != before.refused + 1) {
        fail_msg("rogue dialer %s claiming '%s' was not refused: got_hello "
                 "%d, accepted %d, refused %llu -> %llu (%s)",
                 crt, claim, r.got_hello, in->calls - calls,
                 (unsigned long long)before.refused,
                 (unsigned long long)after.refused, r.detail);
    }
    assert_true(r.hub_closed);
    assert_contains(after.last_error, needle);
}

static void test_acceptor_refuses_bad_dialers(void **state)
{
    struct fixture *f = *state;
    static const uint8_t wrong[] = "0123456789abcdef0123456789abcdef";
    struct inbound in = { 0 };
    const uint8_t *s = certs.secret;
    size_t sl = certs.secret_len;

    in.close_at_once = 1;
    rt_hub_set_accept(f->hub[1], RT_KIND_FORWARD, inbound_cb, &in);

    /* Control: the rogue with a proper identity is accepted. */
    rogue_dial_case(f, &in, "c/route.crt", "c/route.key", "c", 0, s, sl,
                    ROUTE_ROGUE_HELLO_GOOD, 1, NULL);
    /* Certificate from the client CA. */
    rogue_dial_case(f, &in, "bad/clientca-a.crt", "bad/clientca-a.key", "a",
                    0, s, sl, ROUTE_ROGUE_HELLO_GOOD, 0, "TLS");
    /* Certificate from an unknown CA. */
    rogue_dial_case(f, &in, "bad/rogue-a.crt", "bad/rogue-a.key", "a", 0, s,
                    sl, ROUTE_ROGUE_HELLO_GOOD, 0, "TLS");
    /* Valid cluster certificate of b, claiming to be a. */
    rogue_dial_case(f, &in, "b/route.crt", "b/route.key", "a", 0, s, sl,
                    ROUTE_ROGUE_HELLO_GOOD, 0,
                    "claims node 'a' but its certificate names 'b'");
    /* Wrong cluster secret. */
    rogue_dial_case(f, &in, "c/route.crt", "c/route.key", "c", 0, wrong,
                    sizeof wrong - 1, ROUTE_ROGUE_HELLO_GOOD, 0,
                    "authenticator");
    /* Right name, id of another node. */
    rogue_dial_case(f, &in, "c/route.crt", "c/route.key", "c",
                    rt_node_id("a"), s, sl, ROUTE_ROGUE_HELLO_GOOD, 0,
                    "does not match the node name");
    /* Not a hello at all. */
    rogue_dial_case(f, &in, "c/route.crt", "c/route.key", "c", 0, s, sl,
                    ROUTE_ROGUE_HELLO_GARBAGE, 0, "malformed hello");
    /* No hello: cut at the timeout. */
    rogue_dial_case(f, &in, "c/route.crt", "c/route.key", "c", 0, s, sl,
                    ROUTE_ROGUE_HELLO_NONE, 0, "timed out");
    /* Nobody serves this kind here. */
    {
        struct dial d;
        struct rt_hub_stats sb;
        assert_true(dial_once(f, f->hub[0], rt_hub_advertise(f->hub[1]), 0,
                              RT_KIND_DISCOVER, 0, &d) < 0);
        get_stats(f->hub[1], &sb);
        assert_contains(sb.last_error, "nothing here serves");
    }
    ep_close(&in.ep);
    run_for(&f->loop, 20);
}

/* ===== Bad acceptors: the dialer refuses ================================ */

static void rogue_accept_case(struct fixture *f, const char *crt,
                              const char *key, const char *claim,
                              const uint8_t *secret, size_t secret_len,
                              enum route_rogue_hello hello, uint64_t expect,
                              int expect_ok, const char *needle)
{
    struct route_rogue r;
    struct route_rogue_cfg cfg;
    struct rt_hub_stats before, after;
    char address[64];
    struct dial d;
    int status;

    get_stats(f->hub[1], &before);
    memset(&cfg, 0, sizeof cfg);
    cfg.cert = cert_path(crt);
    cfg.key = cert_path(key);
    cfg.name = claim;
    cfg.secret = secret;
    cfg.secret_len = secret_len;
    cfg.hello = hello;
    assert_int_equal(route_rogue_accept(&r, &cfg), 0);
    snprintf(address, sizeof address, "127.0.0.1:%d", r.port);
    status = dial_once(f, f->hub[1], address, expect, RT_KIND_RAFT, 5, &d);
    if (expect_ok) {
        assert_int_equal(status, 0);
        assert_string_equal(d.ep.peer.name, claim);
        ep_close(&d.ep); /* the rogue waits for our close */
    }
    assert_true(run_until(&f->loop, rogue_done, &r, 4 * TEST_TIMEOUT_MS));
    route_rogue_join(&r);
    run_for(&f->loop, 20);
    get_stats(f->hub[1], &after);
    if (expect_ok) {
        assert_int_equal(after.refused, before.refused);
        assert_true(r.hub_closed);
        return;
    }
    if (status != UV_EPROTO || after.refused != before.refused + 1) {
        fail_msg("rogue acceptor %s claiming '%s' was not refused: status "
                 "%d (%s), refused %llu -> %llu, rogue: %s",
                 crt, claim, status, uv_err_name(status),
                 (unsigned long long)before.refused,
                 (unsigned long long)after.refused, r.detail);
    }
    assert_contains(after.last_error, needle);
}

static void test_dialer_refuses_bad_acceptors(void **state)
{
    struct fixture *f = *state;
    static const uint8_t wrong[] = "0123456789abcdef0123456789abcdef";
    const uint8_t *s = certs.secret;
    size_t sl = certs.secret_len;

    /* Control: a proper acceptor is fine. */
    rogue_accept_case(f, "c/route.crt", "c/route.key", "c", s, sl,
                      ROUTE_ROGUE_HELLO_GOOD, rt_node_id("c"), 1, NULL);
    rogue_accept_case(f, "bad/clientca-a.crt", "bad/clientca-a.key", "a", s,
                      sl, ROUTE_ROGUE_HELLO_GOOD, rt_node_id("a"), 0,
                      "TLS handshake failed");
    rogue_accept_case(f, "bad/rogue-a.crt", "bad/rogue-a.key", "a", s, sl,
                      ROUTE_ROGUE_HELLO_GOOD, 0, 0, "TLS handshake failed");
    /* b's certificate claiming a: caught by the certificate check when we
     * expect a, by the hello check when we take anyone. */
    rogue_accept_case(f, "b/route.crt", "b/route.key", "a", s, sl,
                      ROUTE_ROGUE_HELLO_GOOD, rt_node_id("a"), 0,
                      "certificate names 'b', not node id");
    rogue_accept_case(f, "b/route.crt", "b/route.key", "a", s, sl,
                      ROUTE_ROGUE_HELLO_GOOD, 0, 0,
                      "claims node 'a' but its certificate names 'b'");
    rogue_accept_case(f, "c/route.crt", "c/route.key", "c", wrong,
                      sizeof wrong - 1, ROUTE_ROGUE_HELLO_GOOD, 0, 0,
                      "authenticator");
    rogue_accept_case(f, "c/route.crt", "c/route.key", "c", s, sl,
                      ROUTE_ROGUE_HELLO_GARBAGE, 0, 0, "malformed hello");
}

/* ===== Wrong secret between real hubs, expect_id mismatch =============== */

static void test_wrong_secret_and_expect_id(void **state)
{
    struct fixture *f = *state;
    static const uint8_t wrong[] = "fedcba9876543210fedcba9876543210";
    struct inbound in = { 0 };
    struct rt_hub_config cfg;
    struct rt_hub_stats sa, sb, sc;
    struct dial d;

    in.close_at_once = 1;
    rt_hub_set_accept(f->hub[1], RT_KIND_FORWARD, inbound_cb, &in);

    /* Replace c by a c with the wrong secret. */
    close_hub(f, 2, 1);
    hub_config(&cfg, "c");
    cfg.secret = wrong;
    cfg.secret_len = sizeof wrong - 1;
    f->hub[2] = make_hub(&f->loop, &cfg);
    rt_hub_set_accept(f->hub[2], RT_KIND_FORWARD, inbound_cb, &in);

    /* c -> b: b refuses c's hello. */
    assert_int_equal(dial_once(f, f->hub[2], rt_hub_advertise(f->hub[1]), 0,
                               RT_KIND_FORWARD, 1, &d),
                     UV_EPROTO);
    run_for(&f->loop, 20);
    get_stats(f->hub[1], &sb);
    assert_int_equal(sb.refused, 1);
    assert_contains(sb.last_error, "authenticator");
    /* b -> c: c refuses b's hello, b sees it close. */
    assert_int_equal(dial_once(f, f->hub[1], rt_hub_advertise(f->hub[2]),
                               rt_node_id("c"), RT_KIND_FORWARD, 1, &d),
                     UV_EPROTO);
    run_for(&f->loop, 20);
    get_stats(f->hub[2], &sc);
    assert_contains(sc.last_error, "authenticator");
    assert_int_equal(in.calls, 0);

    /* a -> b expecting c: refused by a before its hello. */
    assert_int_equal(dial_once(f, f->hub[0], rt_hub_advertise(f->hub[1]),
                               rt_node_id("c"), RT_KIND_FORWARD, 1, &d),
                     UV_EPROTO);
    get_stats(f->hub[0], &sa);
    assert_contains(sa.last_error, "not node id");
    assert_int_equal(in.calls, 0);
    run_for(&f->loop, 20);
}

/* ===== Dial failures, timeout and cancel ================================ */

static int silent_listener(int *port)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof sin;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    assert_int_equal(listen(fd, 16), 0); /* never accepted, never answers */
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    *port = ntohs(sin.sin_port);
    return fd;
}

static void test_dial_cancel_timeout(void **state)
{
    struct fixture *f = *state;
    struct rt_connect *c = NULL;
    struct dial d, d2;
    char address[64];
    int port, fd = silent_listener(&port);

    snprintf(address, sizeof address, "127.0.0.1:%d", port);

    /* Cancel while the TLS handshake is pending. */
    memset(&d, 0, sizeof d);
    assert_int_equal(rt_hub_connect(f->hub[0], address, 0, RT_KIND_RAFT, 1,
                                    dial_cb, &d, &c),
                     0);
    run_for(&f->loop, 200);
    assert_int_equal(d.calls, 0);
    rt_connect_cancel(c);
    assert_int_equal(d.calls, 0); /* never from inside cancel */
    assert_true(run_until(&f->loop, dial_done, &d, 2000));
    run_for(&f->loop, 100);
    assert_int_equal(d.calls, 1);
    assert_int_equal(d.status, UV_ECANCELED);

    /* Nobody answers: timeout. */
    assert_int_equal(dial_once(f, f->hub[0], address, 0, RT_KIND_RAFT, 1, &d),
                     UV_ETIMEDOUT);

    /* Closed port: connection refused. */
    {
        int p2, fd2 = silent_listener(&p2);
        char a2[64];
        close(fd2);
        snprintf(a2, sizeof a2, "127.0.0.1:%d", p2);
        assert_int_equal(dial_once(f, f->hub[0], a2, 0, RT_KIND_RAFT, 1, &d),
                         UV_ECONNREFUSED);
    }

    /* Bad addresses fail at once, without a callback. */
    assert_int_equal(rt_hub_connect(f->hub[0], "nonsense", 0, RT_KIND_RAFT, 1,
                                    dial_cb, &d, NULL),
                     UV_EINVAL);
    assert_int_equal(rt_hub_connect(f->hub[0], "::1:80", 0, RT_KIND_RAFT, 1,
                                    dial_cb, &d, NULL),
                     UV_EINVAL);

    /* Cancel while resolving, then closing the hub cancels the rest. */
    memset(&d, 0, sizeof d);
    memset(&d2, 0, sizeof d2);
    assert_int_equal(rt_hub_connect(f->hub[0], "localhost:1", 0,
                                    RT_KIND_RAFT, 1, dial_cb, &d, &c),
                     0);
    rt_connect_cancel(c);
    assert_int_equal(rt_hub_connect(f->hub[0], address, 0, RT_KIND_RAFT, 1,
                                    dial_cb, &d2, NULL),
                     0);
    run_for(&f->loop, 50);
    close_hub(f, 0, 0);
    assert_true(run_until(&f->loop, dial_done, &d2, 2000));
    assert_true(run_until(&f->loop, dial_done, &d, 2000));
    assert_int_equal(d.calls, 1);
    assert_int_equal(d.status, UV_ECANCELED);
    assert_int_equal(d2.calls, 1);
    assert_int_equal(d2.status, UV_ECANCELED);
    close(fd);
}

/* ===== Raft over the hub ================================================ */

#define N_GROUPS 2
#define N_ENTRIES 50

struct rnode {
    struct raft_uv_transport transport;
    struct raft_io io;
    struct raft_fsm fsm;
    struct raft raft;
    uint64_t count;
    char dir[ROUTE_PATH_MAX];
    int closed;
};

struct rgroup {
    uint64_t id;
    struct rnode node[N_HUBS];
    struct raft_apply req[N_ENTRIES];
    int applied_ok, applied_failed;
};

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf,
                     void **result)
{
    struct rnode *n = fsm->data;
    uint64_t v;

    if (buf->len != sizeof v) {
        return RAFT_MALFORMED;
    }
    memcpy(&v, buf->base, sizeof v);
    n->count += v;
    *result = NULL;
    return 0;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[],
                        unsigned *n_bufs)
{
    struct rnode *n = fsm->data;

    *bufs = raft_malloc(sizeof **bufs);
    if (*bufs == NULL) {
        return RAFT_NOMEM;
    }
    (*bufs)[0].len = sizeof n->count;
    (*bufs)[0].base = raft_malloc(sizeof n->count);
    if ((*bufs)[0].base == NULL) {
        raft_free(*bufs);
        return RAFT_NOMEM;
    }
    memcpy((*bufs)[0].base, &n->count, sizeof n->count);
    *n_bufs = 1;
    return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    struct rnode *n = fsm->data;

    if (buf->len != sizeof n->count) {
        return RAFT_MALFORMED;
    }
    memcpy(&n->count, buf->base, sizeof n->count);
    raft_free(buf->base);
    return 0;
}

static void node_start(struct fixture *f, struct rgroup *g, int i)
{
    struct rnode *n = &g->node[i];
    struct raft_configuration conf;
    char rel[64];
    int rv;

    snprintf(rel, sizeof rel, "raft-%llu-%s", (unsigned long long)g->id,
             names[i]);
    route_certs_path(&certs, rel, n->dir, sizeof n->dir);
    assert_int_equal(mkdir(n->dir, 0700), 0);
    rv = rt_raft_transport_init(&n->transport, f->hub[i], g->id);
    if (rv != 0) {
        fail_msg("rt_raft_transport_init: %s", n->transport.errmsg);
    }
    rv = raft_uv_init(&n->io, &f->loop, n->dir, &n->transport);
    if (rv != 0) {
        fail_msg("raft_uv_init: %s", n->io.errmsg);
    }
    /* Keep the default 8 MiB segments: with segments under 4 MiB the
     * legacy capacity check of libraft 0.22 fails raft_apply with
     * RAFT_NOSPACE. */
    raft_uv_set_connect_retry_delay(&n->io, 100);
    n->fsm.version = 1;
    n->fsm.data = n;
    n->fsm.apply = fsm_apply;
    n->fsm.snapshot = fsm_snapshot;
    n->fsm.restore = fsm_restore;
    rv = raft_init(&n->raft, &n->io, &n->fsm, rt_node_id(names[i]),
                   rt_hub_advertise(f->hub[i]));
    if (rv != 0) {
        fail_msg("raft_init: %s", raft_errmsg(&n->raft));
    }
    n->raft.data = n;
    raft_set_election_timeout(&n->raft, 1000);
    raft_set_heartbeat_timeout(&n->raft, 100);
    raft_set_pre_vote(&n->raft, true);
    raft_set_snapshot_threshold(&n->raft, 1024);
    raft_set_snapshot_trailing(&n->raft, 128);

    raft_configuration_init(&conf);
    for (int j = 0; j < N_HUBS; j++) {
        assert_int_equal(raft_configuration_add(&conf, rt_node_id(names[j]),
                                                rt_hub_advertise(f->hub[j]),
                                                RAFT_VOTER),
                         0);
    }
    rv = raft_bootstrap(&n->raft, &conf);
    raft_configuration_close(&conf);
    if (rv != 0) {
        fail_msg("raft_bootstrap: %s", raft_errmsg(&n->raft));
    }
    rv = raft_start(&n->raft);
    if (rv != 0) {
        fail_msg("raft_start: %s", raft_errmsg(&n->raft));
    }
}

static struct rnode *group_leader(struct rgroup *g)
{
    for (int i = 0; i < N_HUBS; i++) {
        if (raft_state(&g->node[i].raft) == RAFT_LEADER) {
            return &g->node[i];
        }
    }
    return NULL;
}

static int leaders_elected(void *arg)
{
    struct rgroup *groups = arg;
    for (int k = 0; k < N_GROUPS; k++) {
        if (group_leader(&groups[k]) == NULL) {
            return 0;
        }
    }
    return 1;
}

static void apply_cb(struct raft_apply *req, int status, void *result)
{
    struct rgroup *g = req->data;

    (void)result;
    if (status == 0) {
        g->applied_ok++;
    } else {
        g->applied_failed++;
        print_message("raft_apply failed: %s\n", raft_strerror(status));
    }
}

static int all_applied(void *arg)
{
    struct rgroup *groups = arg;
    for (int k = 0; k < N_GROUPS; k++) {
        struct rgroup *g = &groups[k];
        if (g->applied_failed) {
            return 1;
        }
        if (g->applied_ok < N_ENTRIES) {
            return 0;
        }
        for (int i = 0; i < N_HUBS; i++) {
            if (g->node[i].count != N_ENTRIES * g->id) {
                return 0;
            }
        }
    }
    return 1;
}

static void raft_closed_cb(struct raft *r)
{
    struct rnode *n = r->data;

    raft_uv_close(&n->io);
    rt_raft_transport_close(&n->transport);
    n->closed = 1;
}

static int all_rafts_closed(void *arg)
{
    struct rgroup *groups = arg;
    for (int k = 0; k < N_GROUPS; k++) {
        for (int i = 0; i < N_HUBS; i++) {
            if (!groups[k].node[i].closed) {
                return 0;
            }
        }
    }
    return 1;
}

static void test_raft_over_hub(void **state)
{
    struct fixture *f = *state;
    struct rgroup *groups = calloc(N_GROUPS, sizeof *groups);
    struct raft_uv_transport dup;
    struct dial d;
    double t0 = now_s();

    assert_non_null(groups);
    for (int k = 0; k < N_GROUPS; k++) {
        groups[k].id = (uint64_t)k + 1;
        for (int i = 0; i < N_HUBS; i++) {
            node_start(f, &groups[k], i);
        }
    }
    /* One transport per group and hub. */
    assert_int_equal(rt_raft_transport_init(&dup, f->hub[0], 1),
                     RAFT_INVALID);
    assert_contains(dup.errmsg, "already has a transport");

    assert_true(run_until(&f->loop, leaders_elected, groups, 15000));
    print_message("raft: leaders of %d groups elected after %.2f s\n",
                  N_GROUPS, now_s() - t0);

    for (int k = 0; k < N_GROUPS; k++) {
        struct rgroup *g = &groups[k];
        struct rnode *leader = group_leader(g);
        for (int e = 0; e < N_ENTRIES; e++) {
            struct raft_buffer buf;
            uint64_t v = g->id;
            buf.len = sizeof v;
            buf.base = raft_malloc(buf.len);
            assert_non_null(buf.base);
            memcpy(buf.base, &v, sizeof v);
            g->req[e].data = g;
            assert_int_equal(raft_apply(&leader->raft, &g->req[e], &buf, 1,
                                        apply_cb),
                             0);
        }
    }
    assert_true(run_until(&f->loop, all_applied, groups, 15000));
    for (int k = 0; k < N_GROUPS; k++) {
        assert_int_equal(groups[k].applied_failed, 0);
        assert_int_equal(groups[k].applied_ok, N_ENTRIES);
        for (int i = 0; i < N_HUBS; i++) {
            assert_int_equal(groups[k].node[i].count,
                             N_ENTRIES * groups[k].id);
        }
    }
    print_message("raft: %d x %d entries committed and applied on all nodes "
                  "after %.2f s\n",
                  N_GROUPS, N_ENTRIES, now_s() - t0);

    /* A raft connection for a group nobody runs is accepted by the hub and
     * then closed by the transport: the dialer reads EOF. */
    assert_int_equal(dial_once(f, f->hub[0], rt_hub_advertise(f->hub[1]),
                               rt_node_id("b"), RT_KIND_RAFT, 99, &d),
                     0);
    assert_true(run_until(&f->loop, ep_eof, &d.ep, 3000));
    ep_close(&d.ep);

    for (int k = 0; k < N_GROUPS; k++) {
        for (int i = 0; i < N_HUBS; i++) {
            raft_close(&groups[k].node[i].raft, raft_closed_cb);
        }
    }
    assert_true(run_until(&f->loop, all_rafts_closed, groups, 10000));
    free(groups);
}

/* ===== Runner =========================================================== */

static int group_setup(void **state)
{
    (void)state;
    if (getenv("ROUTE_TEST_TIMEOUT_MS") != NULL) {
        test_timeout_ms = (unsigned)atoi(getenv("ROUTE_TEST_TIMEOUT_MS"));
    }
    if (getenv("ROUTE_TEST_DEBUG") != NULL) {
        ub_log_set_level("debug");
    }
    return route_certs_make(&certs, UB_SOURCE_DIR);
}

static int group_teardown(void **state)
{
    (void)state;
    if (getenv("ROUTE_TEST_KEEP") == NULL) {
        route_certs_remove(&certs);
    }
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hello_codec),
        cmocka_unit_test(test_create_refuses_bad_own_cert),
        cmocka_unit_test_setup_teardown(test_good_dial, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bench, setup, teardown),
        cmocka_unit_test_setup_teardown(test_acceptor_refuses_bad_dialers,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_dialer_refuses_bad_acceptors,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_secret_and_expect_id, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_dial_cancel_timeout, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_raft_over_hub, setup, teardown),
    };
    return cmocka_run_group_tests_name("route", tests, group_setup,
                                       group_teardown);
}
