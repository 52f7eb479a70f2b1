/* The KV state machine on raft's deterministic in-memory fixture: every
 * server runs src/kv/fsm.c around its own kv_store. Each scenario runs with
 * 3 and with 5 servers; election timeouts come from a fixed seed, so a
 * failure replays exactly. Set FIXTURE_TRACE=1 to see raft's trace. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <raft.h>
#include <raft/fixture.h>

#include "kv/fsm.h"
#include "kv/kv.h"

#define MAX_N 5
#define MAX_PROPS 512
#define BUCKET "t"
#define SNAPSHOT_THRESHOLD 32
#define SNAPSHOT_TRAILING 8
#define SEED 0x5eed1234u

/* ------------------------------------------------------------------------ */
/* Fixture. */

struct cluster;

/* One proposal and what its raft_apply callback saw. */
struct prop {
    struct raft_apply req;
    struct cluster *c;
    unsigned server; /* where it was proposed */
    uint8_t id[KV_REQUEST_ID_LEN];
    bool done;
    int status;
    int lookup;      /* kv_store_result() in the callback */
    struct kv_result res;
};

struct cluster {
    struct raft_fixture f;
    unsigned n;
    struct kv_store *stores[MAX_N];
    struct raft_fsm fsms[MAX_N];
    unsigned resets[MAX_N]; /* restores seen by a watch on each store */
    struct prop props[MAX_PROPS]; /* outlive the fixture: close may fire cbs */
    unsigned n_props;
    uint64_t ids;
    int64_t stamp;
};

static uint32_t seed_state;

static uint32_t seeded(void)
{
    seed_state = seed_state * 1103515245u + 12345u;
    return seed_state >> 8;
}

static void reset_cb(void *arg, const struct kv_entry *e, bool deleted)
{
    unsigned *resets = arg;

    (void)deleted;
    if (e == NULL) {
        (*resets)++;
    }
}

static int setup(void **state)
{
    unsigned n = *(unsigned *)*state;
    struct raft_configuration conf;
    struct cluster *c;
    char err[256];
    uint64_t wid;
    unsigned i;

    c = calloc(1, sizeof *c); /* zeroes the fixture too */
    assert_non_null(c);
    c->n = n;
    c->stamp = 1700000000000;
    seed_state = SEED + n;
    assert_int_equal(raft_fixture_initialize(&c->f), 0);
    for (i = 0; i < n; i++) {
        struct raft *r;
        assert_int_equal(kv_store_open(&c->stores[i], err, sizeof err), 0);
        assert_int_equal(kv_store_watch(c->stores[i], BUCKET, NULL, reset_cb,
                                        &c->resets[i], &wid),
                         KV_OK);
        assert_int_equal(kv_fsm_init(&c->fsms[i], c->stores[i]), 0);
        assert_int_equal(raft_fixture_grow(&c->f, &c->fsms[i]), 0);
        r = raft_fixture_get(&c->f, i);
        if (getenv("FIXTURE_TRACE") == NULL) {
            r->tracer = NULL;
        }
        kv_fsm_set_raft(&c->fsms[i], r);
        assert_ptr_equal(kv_fsm_store(&c->fsms[i]), c->stores[i]);
        raft_set_snapshot_threshold(r, SNAPSHOT_THRESHOLD);
        raft_set_snapshot_trailing(r, SNAPSHOT_TRAILING);
        /* Server 0 keeps the shortest timeout so it wins the first election;
         * the others get seeded values. */
        raft_fixture_set_randomized_election_timeout(
            &c->f, i, i == 0 ? 1000 : 1100 + seeded() % 900);
    }
    assert_int_equal(raft_fixture_configuration(&c->f, n, &conf), 0);
    assert_int_equal(raft_fixture_bootstrap(&c->f, &conf), 0);
    raft_configuration_close(&conf);
    assert_int_equal(raft_fixture_start(&c->f), 0);
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    struct cluster *c = *state;
    unsigned i;

    raft_fixture_close(&c->f);
    for (i = 0; i < c->n; i++) {
        kv_fsm_close(&c->fsms[i]);
        kv_store_close(c->stores[i]);
    }
    free(c);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Helpers. */

static struct raft *srv(struct cluster *c, unsigned i)
{
    return raft_fixture_get(&c->f, i);
}

static void apply_cb(struct raft_apply *req, int status, void *result)
{
    struct prop *p = req->data;

    assert_null(result);
    assert_false(p->done); /* exactly once */
    p->done = true;
    p->status = status;
    if (status == 0) {
        p->lookup = kv_store_result(p->c->stores[p->server], p->id, &p->res);
    }
}

/* Proposes cmd on server i (request id and stamp filled in unless the
 * caller set keep_id). Returns the proposal; raft_apply's return value in
 * *rv. */
static struct prop *propose_cmd(struct cluster *c, unsigned i,
                                struct kv_cmd *cmd, bool keep_id, int *rv)
{
    struct prop *p;
    struct raft_buffer buf;
    uint64_t n;

    assert_true(c->n_props < MAX_PROPS);
    p = &c->props[c->n_props++];
    memset(p, 0, sizeof *p);
    p->c = c;
    p->server = i;
    p->req.data = p;
    if (!keep_id) {
        n = ++c->ids;
        memset(cmd->request_id, 0x3c, KV_REQUEST_ID_LEN);
        memcpy(cmd->request_id, &n, sizeof n);
        cmd->stamp = (c->stamp += 10);
    }
    memcpy(p->id, cmd->request_id, KV_REQUEST_ID_LEN);
    assert_int_equal(kv_cmd_encode(cmd, raft_malloc, &buf.base, &buf.len),
                     KV_OK);
    *rv = raft_apply(srv(c, i), &p->req, &buf, 1, apply_cb);
    if (*rv != 0) {
        raft_free(buf.base);
    }
    return p;
}

static struct kv_cmd op_cmd(enum kv_op_type type, const char *key,
                            const char *value)
{
    struct kv_cmd cmd;

    memset(&cmd, 0, sizeof cmd);
    cmd.kind = KV_CMD_OP;
    cmd.op.type = type;
    cmd.op.bucket = BUCKET;
    cmd.op.key = key;
    cmd.op.value = value;
    cmd.op.value_len = value != NULL ? strlen(value) : 0;
    return cmd;
}

static bool prop_done(struct raft_fixture *f, void *arg)
{
    (void)f;
    return ((struct prop *)arg)->done;
}

/* Proposes on server i and steps until the callback fired. */
static struct prop *write_wait(struct cluster *c, unsigned i,
                               enum kv_op_type type, const char *key,
                               const char *value)
{
    struct kv_cmd cmd = op_cmd(type, key, value);
    struct prop *p;
    int rv;

    p = propose_cmd(c, i, &cmd, false, &rv);
    assert_int_equal(rv, 0);
    assert_true(raft_fixture_step_until(&c->f, prop_done, p, 10000));
    return p;
}

/* Asserts a committed, successful write at the proposal's own index. */
static void assert_committed(const struct prop *p)
{
    assert_true(p->done);
    assert_int_equal(p->status, 0);
    assert_int_equal(p->lookup, KV_OK);
    assert_int_equal(p->res.code, KV_OK);
    assert_int_equal(p->res.revision, p->req.index);
}

/* A killed leader keeps its LEADER state: wait for a live, different one. */
struct not_leader {
    unsigned old;
};

static bool new_live_leader(struct raft_fixture *f, void *arg)
{
    unsigned old = ((struct not_leader *)arg)->old;
    unsigned l = raft_fixture_leader_index(f);

    return l < raft_fixture_n(f) && l != old && raft_fixture_alive(f, l);
}

static unsigned wait_new_leader(struct cluster *c, unsigned old)
{
    struct not_leader nl = { old };

    assert_true(raft_fixture_step_until(&c->f, new_live_leader, &nl, 20000));
    return raft_fixture_leader_index(&c->f);
}

static void cut(struct cluster *c, unsigned i)
{
    unsigned j;

    for (j = 0; j < c->n; j++) {
        if (j != i) {
            raft_fixture_saturate(&c->f, i, j);
            raft_fixture_saturate(&c->f, j, i);
        }
    }
}

static void heal(struct cluster *c, unsigned i)
{
    unsigned j;

    for (j = 0; j < c->n; j++) {
        if (j != i) {
            raft_fixture_desaturate(&c->f, i, j);
            raft_fixture_desaturate(&c->f, j, i);
        }
    }
}

/* Revision of key on server i, 0 when absent; checks the value if given. */
static uint64_t key_rev(struct cluster *c, unsigned i, const char *key,
                        const char *value)
{
    struct kv_entry e;
    uint64_t rev;
    int rv = kv_store_get(c->stores[i], BUCKET, key, &e);

    if (rv == KV_NOT_FOUND) {
        return 0;
    }
    assert_int_equal(rv, KV_OK);
    if (value != NULL) {
        assert_int_equal(e.value_len, strlen(value));
        assert_memory_equal(e.value, value, e.value_len);
    }
    rev = e.revision;
    kv_entry_clear(&e);
    return rev;
}

/* Steps until every server applied the leader's last entry, then asserts
 * that all stores agree byte for byte. */
static void assert_converged(struct cluster *c)
{
    void *ref = NULL;
    size_t ref_len = 0;
    unsigned l;
    unsigned i;

    /* A revived ex-leader may still believe it leads for a moment. */
    assert_true(raft_fixture_step_until_has_leader(&c->f, 10000));
    l = raft_fixture_leader_index(&c->f);
    assert_true(l < c->n);
    assert_true(raft_fixture_step_until_applied(
        &c->f, c->n, raft_last_index(srv(c, l)), 20000));
    for (i = 0; i < c->n; i++) {
        void *buf = NULL;
        size_t len = 0;
        assert_int_equal(kv_store_applied_index(c->stores[i]),
                         kv_store_applied_index(c->stores[0]));
        assert_int_equal(kv_store_snapshot(c->stores[i], malloc, &buf, &len),
                         0);
        if (i == 0) {
            ref = buf;
            ref_len = len;
            continue;
        }
        assert_int_equal(len, ref_len);
        assert_memory_equal(buf, ref, len);
        free(buf);
    }
    free(ref);
}

/* ------------------------------------------------------------------------ */
/* Scenarios. */

static void test_replicate(void **state)
{
    struct cluster *c = *state;
    struct prop *p[20];
    struct prop *q;
    char key[16];
    char val[32];
    unsigned i;
    unsigned k;

    raft_fixture_elect(&c->f, 0);
    assert_int_equal(raft_fixture_leader_index(&c->f), 0);
    for (k = 0; k < 20; k++) {
        snprintf(key, sizeof key, "k%02u", k);
        snprintf(val, sizeof val, "v%u", k * 31);
        p[k] = write_wait(c, 0, KV_OP_PUT, key, val);
        assert_committed(p[k]);
    }
    /* A business failure travels back through the result table. */
    q = write_wait(c, 0, KV_OP_CREATE, "k03", "again");
    assert_int_equal(q->status, 0);
    assert_int_equal(q->lookup, KV_OK);
    assert_int_equal(q->res.code, KV_EXISTS);
    assert_int_equal(q->res.revision, p[3]->req.index);

    assert_true(raft_fixture_step_until_applied(&c->f, c->n, q->req.index,
                                                10000));
    for (i = 0; i < c->n; i++) {
        for (k = 0; k < 20; k++) {
            snprintf(key, sizeof key, "k%02u", k);
            snprintf(val, sizeof val, "v%u", k * 31);
            assert_int_equal(key_rev(c, i, key, val), p[k]->req.index);
        }
    }
    /* A follower refuses proposals. */
    {
        struct kv_cmd cmd = op_cmd(KV_OP_PUT, "x", "y");
        int rv;
        propose_cmd(c, 1, &cmd, false, &rv);
        assert_int_equal(rv, RAFT_NOTLEADER);
    }
    assert_converged(c);
}

static void test_leader_crash(void **state)
{
    struct cluster *c = *state;
    struct prop *a;
    struct prop *b;
    unsigned l;

    raft_fixture_elect(&c->f, 0);
    a = write_wait(c, 0, KV_OP_PUT, "before", "1");
    assert_committed(a);

    raft_fixture_kill(&c->f, 0);
    l = wait_new_leader(c, 0);
    assert_true(l != 0);
    b = write_wait(c, l, KV_OP_PUT, "after", "2");
    assert_committed(b);
    assert_true(b->req.index > a->req.index);
    if (c->n == 5) {
        /* Five servers survive a second failure. */
        unsigned l2;
        raft_fixture_kill(&c->f, l);
        l2 = wait_new_leader(c, l);
        assert_committed(write_wait(c, l2, KV_OP_PUT, "after2", "3"));
        raft_fixture_revive(&c->f, l);
        l = l2;
    }

    raft_fixture_revive(&c->f, 0);
    assert_committed(write_wait(c, l, KV_OP_PUT, "revived", "4"));
    assert_converged(c);
    assert_int_equal(key_rev(c, 0, "before", "1"), a->req.index);
    assert_int_equal(key_rev(c, 0, "after", "2"), b->req.index);
}

struct two_props {
    struct prop *a;
    struct prop *b;
};

static bool both_done(struct raft_fixture *f, void *arg)
{
    struct two_props *t = arg;

    (void)f;
    return t->a->done && t->b->done;
}

static void test_partition(void **state)
{
    struct cluster *c = *state;
    struct kv_cmd cmd;
    struct two_props both;
    struct prop *old;
    struct prop *fresh;
    unsigned l;
    unsigned i;
    int rv;

    raft_fixture_elect(&c->f, 0);
    assert_committed(write_wait(c, 0, KV_OP_PUT, "base", "0"));

    /* Isolate the leader, then hand it a write it cannot commit. */
    cut(c, 0);
    cmd = op_cmd(KV_OP_PUT, "old", "lost");
    old = propose_cmd(c, 0, &cmd, false, &rv);
    assert_int_equal(rv, 0);

    l = wait_new_leader(c, 0);
    assert_true(l != 0);
    cmd = op_cmd(KV_OP_PUT, "new", "kept");
    fresh = propose_cmd(c, l, &cmd, false, &rv);
    assert_int_equal(rv, 0);
    both.a = old;
    both.b = fresh;
    assert_true(raft_fixture_step_until(&c->f, both_done, &both, 20000));
    assert_committed(fresh);
    /* The cut-off leader stepped down and failed its pending write. */
    assert_int_equal(old->status, RAFT_LEADERSHIPLOST);
    assert_int_not_equal(raft_state(srv(c, 0)), RAFT_LEADER);

    heal(c, 0);
    assert_committed(write_wait(c, l, KV_OP_PUT, "healed", "1"));
    assert_converged(c);
    for (i = 0; i < c->n; i++) {
        assert_int_equal(key_rev(c, i, "old", NULL), 0);
        assert_int_equal(key_rev(c, i, "new", "kept"), fresh->req.index);
    }
}

static void test_retried_proposal(void **state)
{
    struct cluster *c = *state;
    struct kv_cmd cmd;
    struct two_props both;
    struct prop *third;
    unsigned l;
    unsigned i;
    int rv;

    raft_fixture_elect(&c->f, 0);
    /* The same request (same id, same bytes) proposed twice: the second
     * entry returns the first's result instead of KV_EXISTS. */
    cmd = op_cmd(KV_OP_CREATE, "once", "v");
    both.a = propose_cmd(c, 0, &cmd, false, &rv);
    assert_int_equal(rv, 0);
    both.b = propose_cmd(c, 0, &cmd, true, &rv);
    assert_int_equal(rv, 0);
    assert_true(raft_fixture_step_until(&c->f, both_done, &both, 10000));
    assert_committed(both.a);
    assert_int_equal(both.b->status, 0);
    assert_true(both.b->req.index > both.a->req.index);
    assert_int_equal(both.b->res.code, KV_OK);
    assert_int_equal(both.b->res.revision, both.a->req.index);

    /* Retried again through another leader after a crash. */
    raft_fixture_kill(&c->f, 0);
    l = wait_new_leader(c, 0);
    third = propose_cmd(c, l, &cmd, true, &rv);
    assert_int_equal(rv, 0);
    assert_true(raft_fixture_step_until(&c->f, prop_done, third, 10000));
    assert_int_equal(third->status, 0);
    assert_int_equal(third->res.code, KV_OK);
    assert_int_equal(third->res.revision, both.a->req.index);

    /* A different request id for the same create does fail. */
    assert_int_equal(write_wait(c, l, KV_OP_CREATE, "once", "w")->res.code,
                     KV_EXISTS);

    raft_fixture_revive(&c->f, 0);
    assert_converged(c);
    for (i = 0; i < c->n; i++) {
        assert_int_equal(key_rev(c, i, "once", "v"), both.a->req.index);
    }
}

static void test_install_snapshot(void **state)
{
    struct cluster *c = *state;
    const unsigned lag = 1;
    struct prop *p[100];
    struct prop *early;
    char key[16];
    unsigned k;
    unsigned i;

    raft_fixture_elect(&c->f, 0);
    early = write_wait(c, 0, KV_OP_PUT, "early", "e");
    assert_committed(early);
    assert_true(raft_fixture_step_until_applied(&c->f, lag,
                                                raft_last_index(srv(c, 0)),
                                                5000));
    raft_fixture_kill(&c->f, lag);

    /* Far more entries than threshold + trailing: the leader compacts past
     * what the lagging server has. Mix in deletes and a txn. */
    for (k = 0; k < 100; k++) {
        snprintf(key, sizeof key, "s%03u", k % 60);
        p[k] = write_wait(c, 0, k % 7 == 6 ? KV_OP_DELETE : KV_OP_PUT, key,
                          k % 7 == 6 ? NULL : key);
        assert_int_equal(p[k]->status, 0);
    }
    assert_int_equal(c->resets[lag], 0);

    raft_fixture_revive(&c->f, lag);
    assert_committed(write_wait(c, 0, KV_OP_PUT, "late", "l"));
    assert_converged(c);
    /* The lagging server caught up through our restore, not the log. */
    assert_true(c->resets[lag] >= 1);
    for (i = 0; i < c->n; i++) {
        if (i != lag) {
            assert_int_equal(c->resets[i], 0);
        }
        assert_int_equal(key_rev(c, i, "early", "e"), early->req.index);
        assert_int_equal(key_rev(c, i, "s059", "s059"), p[59]->req.index);
    }
}

/* The adapter's callbacks called directly: bad input never wedges raft, a
 * bad snapshot is refused without taking ownership. */
static void test_fsm_direct(void **state)
{
    struct raft_fixture f;
    struct raft_configuration conf;
    struct raft_fsm fsm;
    struct raft_buffer *bufs = NULL;
    struct raft_buffer b;
    struct kv_store *s;
    unsigned n_bufs = 0;
    void *result = &f;
    char err[256];

    (void)state;
    memset(&f, 0, sizeof f);
    assert_int_equal(kv_store_open(&s, err, sizeof err), 0);
    assert_int_equal(kv_fsm_init(&fsm, s), 0);
    assert_int_equal(fsm.version, 1);
    /* Without a raft instance the adapter cannot know the index. */
    b.base = "x";
    b.len = 1;
    assert_int_not_equal(fsm.apply(&fsm, &b, &result), 0);

    assert_int_equal(raft_fixture_initialize(&f), 0);
    assert_int_equal(raft_fixture_grow(&f, &fsm), 0);
    raft_fixture_get(&f, 0)->tracer = NULL;
    kv_fsm_set_raft(&fsm, raft_fixture_get(&f, 0));
    assert_int_equal(raft_fixture_configuration(&f, 1, &conf), 0);
    assert_int_equal(raft_fixture_bootstrap(&f, &conf), 0);
    raft_configuration_close(&conf);
    assert_int_equal(raft_fixture_start(&f), 0);

    /* Garbage is applied as KV_INVALID: apply succeeds, nothing changes. */
    assert_int_equal(fsm.apply(&fsm, &b, &result), 0);
    assert_null(result);
    assert_int_equal(kv_store_applied_index(s), 0);

    /* Snapshot, then a corrupted copy is refused and not freed. */
    assert_int_equal(fsm.snapshot(&fsm, &bufs, &n_bufs), 0);
    assert_int_equal(n_bufs, 1);
    ((uint8_t *)bufs[0].base)[bufs[0].len - 1] ^= 1;
    assert_int_equal(fsm.restore(&fsm, &bufs[0]), RAFT_CORRUPT);
    ((uint8_t *)bufs[0].base)[bufs[0].len - 1] ^= 1;
    /* The intact one is taken over (freed by the adapter). */
    assert_int_equal(fsm.restore(&fsm, &bufs[0]), 0);
    raft_free(bufs);

    raft_fixture_close(&f);
    kv_fsm_close(&fsm);
    kv_store_close(s);
}

static unsigned three = 3;
static unsigned five = 5;

#define T(f, n)                                                        \
    cmocka_unit_test_prestate_setup_teardown(f, setup, teardown, &(n))

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fsm_direct),
        T(test_replicate, three),        T(test_replicate, five),
        T(test_leader_crash, three),     T(test_leader_crash, five),
        T(test_partition, three),        T(test_partition, five),
        T(test_retried_proposal, three), T(test_retried_proposal, five),
        T(test_install_snapshot, three), T(test_install_snapshot, five),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
