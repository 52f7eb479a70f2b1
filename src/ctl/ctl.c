/* Control plane core: authentication of signed requests, the first admin,
 * the read-modify-write machinery and routing.
 *
 * Authentication of one request:
 *   parse the header -> timestamp within the skew -> member known (a local
 *   read) -> signature verifies -> nonce claimed through raft (KV nonce
 *   claim, expiring after the skew window) -> handler.
 * The nonce claim comes last so that unauthenticated traffic never writes
 * to the log. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "auth/nkey.h"
#include "auth/sigv1.h"
#include "lib/log.h"
#include "raft_glue/node.h"

#define BOOTSTRAP_TICK_MS 500
#define RMW_ATTEMPTS 8
#define PAGE_DEFAULT 100
#define PAGE_MAX 1000

/* ------------------------------------------------------------------ */
/* helpers                                                              */

void ctl_meta_error(struct http_req *r, const struct meta_result *res)
{
    switch (res->err) {
    case META_ETIMEOUT:
        http_req_error(r, 504, "timeout",
                       "the cluster did not answer in time; a change it "
                       "carried may or may not have been applied (%s)",
                       res->message);
        break;
    case META_ENOLEADER:
        http_req_error(r, 503, "no_leader",
                       "no leader is reachable; nothing was applied (%s)",
                       res->message);
        break;
    case META_ESHUTDOWN:
        http_req_error(r, 503, "shutting_down",
                       "the node is stopping; retry on another node");
        break;
    case META_EINVALID:
        http_req_error(r, 400, "invalid", "%s", res->message);
        break;
    default:
        http_req_error(r, 500, "internal", "%s", res->message);
        break;
    }
}

json_t *ctl_body_json(struct http_req *r)
{
    size_t len;
    const char *body = http_req_body(r, &len);
    json_error_t jerr;
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL || !json_is_object(j)) {
        json_decref(j);
        http_req_error(r, 400, "bad_json", "the body must be a JSON object%s%s",
                       j ? "" : ": ", j ? "" : jerr.text);
        return NULL;
    }
    return j;
}

int ctl_page(struct http_req *r, size_t *limit, const char **after)
{
    const char *l = http_req_param(r, "limit");
    *after = http_req_param(r, "after");
    *limit = PAGE_DEFAULT;
    if (l) {
        char *end;
        long n = strtol(l, &end, 10);
        if (*l == '\0' || *end != '\0' || n < 1 || n > PAGE_MAX) {
            http_req_error(r, 400, "invalid_limit", "limit must be 1 to %d",
                           PAGE_MAX);
            return -1;
        }
        *limit = (size_t)n;
    }
    if (*after && strlen(*after) > 1024) {
        http_req_error(r, 400, "invalid_after", "after is too long");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* read-modify-write                                                    */

static void rmw_free(struct rmw *w)
{
    json_decref(w->body);
    free(w->data);
    free(w->ctx);
    free(w);
}

struct rmw *rmw_new(struct ctl *c, struct http_req *r,
                    const struct ctl_caller *who, rmw_build_fn build,
                    rmw_done_fn done)
{
    struct rmw *w = calloc(1, sizeof *w);
    if (w == NULL) {
        http_req_error(r, 503, "internal", "out of memory");
        return NULL;
    }
    w->c = c;
    w->r = r;
    if (who) {
        w->who = *who;
    }
    w->build = build;
    w->done = done;
    return w;
}

static void rmw_written(void *arg, const struct meta_result *res)
{
    struct rmw *w = arg;
    if (res->err != META_OK) {
        ctl_meta_error(w->r, res);
        rmw_free(w);
        return;
    }
    if (res->kv.code == KV_OK && !res->kv.txn_succeeded) {
        /* Someone changed what we read: read again and rebuild. */
        if (++w->attempts < RMW_ATTEMPTS) {
            rmw_start(w);
            return;
        }
        http_req_error(w->r, 409, "conflict",
                       "too many concurrent changes; retry");
        rmw_free(w);
        return;
    }
    if (res->kv.code != KV_OK) {
        http_req_error(w->r, 409, "conflict", "the change was refused (%s)",
                       kv_code_name(res->kv.code));
        rmw_free(w);
        return;
    }
    w->done(w, res);
    rmw_free(w);
}

static void rmw_read(void *arg, const struct meta_result *res)
{
    struct rmw *w = arg;
    struct ctl_txn *t;
    struct kv_cmd cmd;
    int rv;

    if (res->err != META_OK) {
        ctl_meta_error(w->r, res);
        rmw_free(w);
        return;
    }
    t = ctl_txn_new();
    if (t == NULL) {
        http_req_error(w->r, 503, "internal", "out of memory");
        rmw_free(w);
        return;
    }
    if (w->build(w, t) != 0) {
        ctl_txn_free(t);
        rmw_free(w);
        return;
    }
    ctl_txn_fill(t, &cmd);
    rv = meta_write(w->c->meta, &cmd, rmw_written, w);
    ctl_txn_free(t); /* encoded by meta_write */
    if (rv != 0) {
        struct meta_result e;
        memset(&e, 0, sizeof e);
        e.err = rv;
        snprintf(e.message, sizeof e.message, "the change is too large");
        ctl_meta_error(w->r, &e);
        rmw_free(w);
    }
}

int ctl_read(struct ctl *c, const struct ctl_caller *who,
             void (*cb)(void *arg, const struct meta_result *res), void *arg)
{
    return meta_read_at(c->meta, who ? who->claim_index : 0, cb, arg);
}

void rmw_start(struct rmw *w)
{
    /* The first attempt reads at the request's own nonce claim; a retry
     * after a lost compare needs a fresh barrier. */
    int rv = w->attempts == 0 ? ctl_read(w->c, &w->who, rmw_read, w)
                              : meta_read(w->c->meta, rmw_read, w);
    if (rv != 0) {
        struct meta_result e;
        memset(&e, 0, sizeof e);
        e.err = rv;
        ctl_meta_error(w->r, &e);
        rmw_free(w);
    }
}

/* ------------------------------------------------------------------ */
/* authentication                                                       */

struct auth {
    struct ctl *c;
    struct http_req *r;
    ctl_authed_cb cb;
    void *arg;
    bool defer; /* the handler claims the nonce in its own write */
    struct sigv1_auth sa;
    struct ctl_caller who;
};

static void auth_fail(struct auth *a, int status, const char *code,
                      const char *msg)
{
    a->c->stats.auth_failed++;
    http_req_error(a->r, status, code, "%s", msg);
    free(a);
}

static void nonce_claimed(void *arg, const struct meta_result *res)
{
    struct auth *a = arg;
    if (res->err != META_OK) {
        a->c->stats.auth_failed++;
        ctl_meta_error(a->r, res);
        free(a);
        return;
    }
    if (res->kv.code == KV_NONCE_REUSED) {
        a->c->stats.nonce_reused++;
        auth_fail(a, 401, "nonce_reused",
                  "this nonce was used already: sign every request with a "
                  "fresh nonce");
        return;
    }
    if (res->kv.code != KV_OK) {
        auth_fail(a, 401, "bad_nonce", "the nonce could not be claimed");
        return;
    }
    a->c->stats.auth_ok++;
    /* The claim entry was appended after the request arrived, so every
     * write committed before it lies below it: reading at the index before
     * the claim is linearizable, and a follower usually has that applied
     * already (the claim's own commit it would learn only from the next
     * heartbeat). */
    a->who.claim_index = res->kv.revision > 1 ? res->kv.revision - 1 : 0;
    a->cb(a->arg, a->r, &a->who);
    free(a);
}

/* Whether the local KV can speak for the cluster about who is a member: a
 * leader is known and the node has applied every entry of its own log. A
 * node that just restarted replays its log first; during that time an
 * unknown handle proves nothing (tests/jepsen saw 401s for about 0.1 s
 * after restarts). Checked locally: unauthenticated requests cause no log
 * write. */
static bool caught_up(struct ctl *c)
{
    struct rg_node *n = meta_node(c->meta);
    uint64_t leader = 0;
    const char *addr = NULL;
    if (n == NULL) {
        return false;
    }
    rg_node_leader(n, &leader, &addr);
    return leader != 0 &&
           rg_node_applied_index(n) >= rg_node_commit_index(n);
}

static void auth_check_member(struct auth *a)
{
    struct ctl *c = a->c;
    struct ctl_member m;
    size_t blen;
    const void *body = http_req_body(a->r, &blen);
    int rv = ctl_member_load(meta_kv(c->meta), a->sa.handle, &m);
    char key[CTL_NAME_MAX + SIGV1_NONCE_MAX + 2];
    struct kv_cmd cmd;

    /* A local read only: a request that is not yet authenticated must not
     * cause a log write. A member created moments ago may not have reached
     * a lagging follower yet; its nonce was not consumed, so the client can
     * simply retry. */
    if (rv != 0) {
        if (!caught_up(c)) {
            auth_fail(a, 503, "unavailable",
                      "this node is still catching up with the cluster; "
                      "retry (here or on another node)");
            return;
        }
        auth_fail(a, 401, "unknown_member",
                  "no member with this handle (on this node, as of now)");
        return;
    }
    rv = sigv1_verify(&a->sa, http_req_method(a->r), http_req_raw_path(a->r),
                      body, blen, m.sign_pub, (int64_t)time(NULL),
                      c->cfg.skew_s);
    if (rv != SIGV1_OK) {
        auth_fail(a, rv == SIGV1_INTERNAL ? 500 : 401, sigv1_code_name(rv),
                  rv == SIGV1_STALE_TIMESTAMP
                      ? "the timestamp is outside the accepted clock skew"
                      : "the signature does not verify for this member");
        return;
    }
    snprintf(a->who.handle, sizeof a->who.handle, "%s", m.handle);
    a->who.admin = m.admin;
    snprintf(key, sizeof key, "%s/%s", a->sa.handle, a->sa.nonce);
    memset(&cmd, 0, sizeof cmd);
    cmd.kind = KV_CMD_NONCE;
    cmd.nonce.nonce = key;
    /* A claim must outlive the window in which the request is acceptable;
     * expiry travels in the entry so every replica agrees. */
    cmd.nonce.expires_at = (a->sa.ts + (int64_t)c->cfg.skew_s + 1) * 1000;
    if (a->defer) {
        a->who.claim_pending = true;
        snprintf(a->who.claim_key, sizeof a->who.claim_key, "%s", key);
        a->who.claim_expires = cmd.nonce.expires_at;
        c->stats.auth_ok++;
        a->cb(a->arg, a->r, &a->who);
        free(a);
        return;
    }
    rv = meta_write(c->meta, &cmd, nonce_claimed, a);
    if (rv != 0) {
        auth_fail(a, rv == META_EINVALID ? 401 : 503,
                  rv == META_EINVALID ? "bad_nonce" : "unavailable",
                  "the nonce could not be claimed");
    }
}

static void authenticate(struct ctl *c, struct http_req *r, ctl_authed_cb cb,
                         void *arg, bool defer);

void ctl_authenticate(struct ctl *c, struct http_req *r, ctl_authed_cb cb,
                      void *arg)
{
    authenticate(c, r, cb, arg, false);
}

void ctl_authenticate_deferred(struct ctl *c, struct http_req *r,
                               ctl_authed_cb cb, void *arg)
{
    authenticate(c, r, cb, arg, true);
}

static void authenticate(struct ctl *c, struct http_req *r, ctl_authed_cb cb,
                         void *arg, bool defer)
{
    const char *h = http_req_header(r, "authorization");
    struct auth *a = calloc(1, sizeof *a);
    int rv;
    int64_t now = (int64_t)time(NULL);

    if (a == NULL) {
        http_req_error(r, 503, "internal", "out of memory");
        return;
    }
    a->c = c;
    a->r = r;
    a->cb = cb;
    a->arg = arg;
    a->defer = defer;
    rv = sigv1_parse(h, h ? strlen(h) : 0, &a->sa);
    if (rv != SIGV1_OK) {
        auth_fail(a, 401, sigv1_code_name(rv),
                  rv == SIGV1_MISSING_AUTH
                      ? "sign the request: Authorization: UNIBUS-ED25519 "
                        "handle=...,ts=...,nonce=...,sig=... (docs/signing.md)"
                      : "malformed Authorization header (docs/signing.md)");
        return;
    }
    if (a->sa.ts > now + (int64_t)c->cfg.skew_s ||
        a->sa.ts < now - (int64_t)c->cfg.skew_s) {
        auth_fail(a, 401, "stale_timestamp",
                  "the timestamp is outside the accepted clock skew");
        return;
    }
    auth_check_member(a);
}

/* ------------------------------------------------------------------ */
/* the first admin                                                      */

static int write_admin_key(struct ctl *c, char pub[NKEY_PUB_SIZE])
{
    char path[1200];
    char seed[NKEY_SEED_SIZE];
    uint8_t p32[NKEY_KEY_LEN], s32[NKEY_KEY_LEN];
    int fd;
    ssize_t n;

    snprintf(path, sizeof path, "%s/admin.nk", c->cfg.auto_admin_dir);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        /* Reuse the key of an earlier start (e.g. a crash before commit). */
        n = read(fd, seed, sizeof seed - 1);
        close(fd);
        if (n <= 0) {
            ub_error("ctl", "cannot read %s", path);
            return -1;
        }
        seed[n] = '\0';
        seed[strcspn(seed, "\r\n")] = '\0';
        if (nkey_keypair_from_seed(seed, p32, s32) != 0 ||
            nkey_user_pub_encode(p32, pub) != 0) {
            ub_error("ctl", "%s does not hold a user nkey seed", path);
            return -1;
        }
        memset(seed, 0, sizeof seed);
        memset(s32, 0, sizeof s32);
        return 0;
    }
    if (nkey_generate_user(seed, pub) != 0) {
        return -1;
    }
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        ub_error("ctl", "cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    n = write(fd, seed, strlen(seed));
    if (n != (ssize_t)strlen(seed) || write(fd, "\n", 1) != 1 ||
        fsync(fd) != 0) {
        close(fd);
        ub_error("ctl", "cannot write %s", path);
        return -1;
    }
    close(fd);
    memset(seed, 0, sizeof seed);
    ub_info("ctl", "created an admin signing key in %s (mode 0600). Use it: "
                   "unibusctl --handle admin --seed-file %s members list",
            path, path);
    return 0;
}

static void bootstrap_done(void *arg, const struct meta_result *res)
{
    struct ctl *c = arg;
    c->bootstrap_inflight = false;
    if (res->err != META_OK) {
        return; /* retried by the tick */
    }
    c->bootstrap_done = true;
    uv_timer_stop(&c->tick);
    if (res->kv.code == KV_OK && res->kv.txn_succeeded) {
        ub_info("ctl", "first admin '%s' created", c->bootstrap_handle);
    } else {
        ub_info("ctl", "the cluster already has members: --bootstrap-admin "
                       "ignored");
    }
}

static void bootstrap_propose(struct ctl *c)
{
    struct ctl_member m;
    struct ctl_txn *t = ctl_txn_new();
    struct kv_cmd cmd;
    char *rec;

    if (t == NULL) {
        return;
    }
    memset(&m, 0, sizeof m);
    snprintf(m.handle, sizeof m.handle, "%s", c->bootstrap_handle);
    snprintf(m.sign_pub, sizeof m.sign_pub, "%s", c->bootstrap_pub);
    m.admin = true;
    m.created = (int64_t)time(NULL);
    rec = ctl_member_dump(&m);
    if (rec == NULL ||
        ctl_txn_compare(t, CTL_B_META, "bootstrapped", 0) != 0 ||
        ctl_txn_compare(t, CTL_B_MEMBERS, m.handle, 0) != 0 ||
        ctl_txn_compare(t, CTL_B_NKEYS, m.sign_pub, 0) != 0 ||
        ctl_txn_put(t, CTL_B_META, "bootstrapped", "1", 1) != 0 ||
        ctl_txn_put(t, CTL_B_MEMBERS, m.handle, rec, strlen(rec)) != 0 ||
        ctl_txn_put(t, CTL_B_NKEYS, m.sign_pub, m.handle, strlen(m.handle)) !=
            0) {
        free(rec);
        ctl_txn_free(t);
        return;
    }
    free(rec);
    ctl_txn_fill(t, &cmd);
    c->bootstrap_inflight = true;
    if (meta_write(c->meta, &cmd, bootstrap_done, c) != 0) {
        c->bootstrap_inflight = false;
    }
    ctl_txn_free(t);
}

static void tick_cb(uv_timer_t *t)
{
    struct ctl *c = t->data;
    struct kv_entry e;
    bool done;

    if (c->bootstrap_done || c->bootstrap_inflight ||
        meta_node(c->meta) == NULL) {
        return;
    }
    memset(&e, 0, sizeof e);
    done = kv_store_get(meta_kv(c->meta), CTL_B_META, "bootstrapped", &e) ==
           KV_OK;
    kv_entry_clear(&e);
    if (done) {
        if (c->bootstrap_handle[0]) {
            ub_info("ctl", "the cluster already has members: "
                           "--bootstrap-admin ignored");
        }
        c->bootstrap_done = true;
        uv_timer_stop(t);
        return;
    }
    if (c->bootstrap_handle[0] == '\0') {
        char pub[NKEY_PUB_SIZE];
        if (c->cfg.auto_admin_dir == NULL) {
            return; /* an admin must come from --bootstrap-admin */
        }
        if (!rg_node_is_leader(meta_node(c->meta))) {
            return;
        }
        if (write_admin_key(c, pub) != 0) {
            c->cfg.auto_admin_dir = NULL;
            return;
        }
        snprintf(c->bootstrap_handle, sizeof c->bootstrap_handle, "admin");
        snprintf(c->bootstrap_pub, sizeof c->bootstrap_pub, "%s", pub);
    }
    bootstrap_propose(c);
}

struct ctl *ctl_create(uv_loop_t *loop, struct meta *meta,
                       const struct ctl_config *cfg)
{
    struct ctl *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return NULL;
    }
    c->loop = loop;
    c->meta = meta;
    c->cfg = *cfg;
    if (c->cfg.skew_s == 0) {
        c->cfg.skew_s = SIGV1_SKEW_DEFAULT;
    }
    if (cfg->bootstrap_admin) {
        const char *eq = strchr(cfg->bootstrap_admin, '=');
        uint8_t pub[NKEY_KEY_LEN];
        size_t hl = eq ? (size_t)(eq - cfg->bootstrap_admin) : 0;
        if (eq == NULL || hl == 0 || hl > CTL_NAME_MAX) {
            ub_error("ctl", "--bootstrap-admin must be HANDLE=UPUBKEY");
            free(c);
            return NULL;
        }
        memcpy(c->bootstrap_handle, cfg->bootstrap_admin, hl);
        c->bootstrap_handle[hl] = '\0';
        snprintf(c->bootstrap_pub, sizeof c->bootstrap_pub, "%s", eq + 1);
        if (!ctl_name_valid(c->bootstrap_handle) ||
            nkey_user_pub_decode(c->bootstrap_pub, pub) != 0) {
            ub_error("ctl", "--bootstrap-admin: the handle must match "
                            "[a-z0-9][a-z0-9_-]{0,63} and the key must be a "
                            "user nkey (U..., 56 characters; `unibusctl keygen` "
                            "makes one)");
            free(c);
            return NULL;
        }
    }
    uv_timer_init(loop, &c->tick);
    c->tick.data = c;
    uv_timer_start(&c->tick, tick_cb, 100, BOOTSTRAP_TICK_MS);
    return c;
}

static void tick_closed(uv_handle_t *h)
{
    free(h->data);
}

void ctl_close(struct ctl *c)
{
    uv_close((uv_handle_t *)&c->tick, tick_closed);
}

void ctl_get_stats(struct ctl *c, struct ctl_stats *out)
{
    *out = c->stats;
}

/* ------------------------------------------------------------------ */

bool ctl_route(struct ctl *c, struct http_req *r, const struct ctl_caller *who)
{
    const char *path = http_req_path(r);
    if (strcmp(path, "/v1/me") == 0) {
        ctl_me(c, r, who);
        return true;
    }
    if (strcmp(path, "/v1/members") == 0 ||
        strncmp(path, "/v1/members/", 12) == 0) {
        ctl_members_route(c, r, who, path + 11);
        return true;
    }
    if (strcmp(path, "/v1/rooms") == 0 ||
        strncmp(path, "/v1/rooms/", 10) == 0) {
        ctl_rooms_route(c, r, who, path + 9);
        return true;
    }
    if (strncmp(path, "/v1/blobs/", 10) == 0) {
        ctl_blobs_get(c, r, who, path + 10);
        return true;
    }
    return false;
}
