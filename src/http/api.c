/* HTTP API handlers. Every write goes through meta_write (raft); every read
 * waits for meta_read (linearizable) unless the caller asks for ?stale=true.
 * Bad input is answered with a 4xx JSON error before anything is proposed. */
#include "api.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/records.h"

#include "ctl/ctl.h"
#include "kv/kv.h"
#include "lib/log.h"
#include "raft_glue/meta.h"
#include "bus/bus.h"
#include "bus/extprobe.h"
#include "raft_glue/node.h"
#include "route/hub.h"
#include "server.h"

#define LIST_DEFAULT 100
#define LIST_MAX 1000

struct api {
    struct meta *meta;
    struct ctl *ctl;
    struct api_posture posture;
    struct http_server *http;
    struct bus *bus;
    struct bxp *ext; /* --nats-url: the external server's probe */
    uint64_t writes;
    uint64_t reads;
};

/* A request waiting for raft. */
struct pending {
    struct api *a;
    struct http_req *r;
    enum { P_GET, P_LIST, P_PUT, P_DEL, P_CLUSTER, P_MEMBER } kind;
    char bucket[72];
    char key[1100];
    char prefix[1100];
    char after[1100];
    size_t limit;
};

static void respond_json(struct api *a, struct http_req *r, int status,
                         json_t *obj)
{
    (void)a;
    http_req_respond_json(r, status, obj);
}

#define ERR(a, r, status, code, ...)                        \
    do {                                                    \
        (void)(a);                                          \
        http_req_error((r), (status), (code), __VA_ARGS__); \
    } while (0)

/* One wording for failed meta requests everywhere: the control plane's. */
static void meta_error(struct api *a, struct http_req *r,
                       const struct meta_result *res)
{
    (void)a;
    ctl_meta_error(r, res);
}

static json_t *b64(const void *data, size_t len)
{
    size_t cap = 4 * ((len + 2) / 3) + 1;
    char *out = malloc(cap);
    json_t *j;
    if (out == NULL) {
        return NULL;
    }
    EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    j = json_string(out);
    free(out);
    return j;
}

static json_t *entry_json(const struct kv_entry *e)
{
    json_t *o = json_object();
    json_object_set_new(o, "bucket", json_string(e->bucket));
    json_object_set_new(o, "key", json_string(e->key));
    json_object_set_new(o, "value", b64(e->value, e->value_len));
    json_object_set_new(o, "revision", json_integer((json_int_t)e->revision));
    json_object_set_new(o, "create_revision",
                        json_integer((json_int_t)e->create_revision));
    if (e->expires_at) {
        json_object_set_new(o, "expires_at",
                            json_integer((json_int_t)e->expires_at));
    }
    return o;
}

/* Parses ?rev=N. Returns 0 and sets *has; -1 on a bad value. */
static int parse_rev(struct http_req *r, bool *has, uint64_t *rev)
{
    const char *v = http_req_param(r, "rev");
    char *end;
    *has = false;
    if (v == NULL) {
        return 0;
    }
    if (*v == '\0' || *v == '-' || *v == '+' || strlen(v) > 20) {
        return -1;
    }
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno || *end != '\0') {
        return -1;
    }
    *has = true;
    *rev = n;
    return 0;
}

/* ------------------------------------------------------------------ */
/* KV                                                                   */

static void do_get(struct pending *p)
{
    struct kv_entry e;
    int rv;
    memset(&e, 0, sizeof e);
    rv = kv_store_get(meta_kv(p->a->meta), p->bucket, p->key, &e);
    if (rv == KV_OK) {
        respond_json(p->a, p->r, 200, entry_json(&e));
    } else if (rv == KV_NOT_FOUND) {
        ERR(p->a, p->r, 404, "not_found", "no key '%s' in bucket '%s'",
            p->key, p->bucket);
    } else {
        ERR(p->a, p->r, 400, "invalid", "invalid bucket or key");
    }
    kv_entry_clear(&e);
}

struct list_ctx {
    json_t *arr;
    char last[1100];
};

static int list_cb(void *arg, const struct kv_entry *e)
{
    struct list_ctx *c = arg;
    json_array_append_new(c->arr, entry_json(e));
    snprintf(c->last, sizeof c->last, "%s", e->key);
    return 0;
}

static void do_list(struct pending *p)
{
    struct list_ctx c;
    bool more = false;
    json_t *o;
    int rv;

    c.arr = json_array();
    c.last[0] = '\0';
    rv = kv_store_list(meta_kv(p->a->meta), p->bucket, p->prefix,
                       p->after[0] ? p->after : NULL, p->limit, list_cb, &c,
                       &more);
    if (rv != KV_OK) {
        json_decref(c.arr);
        ERR(p->a, p->r, 400, "invalid", "invalid bucket or prefix");
        return;
    }
    o = json_pack("{s:s,s:o,s:b}", "bucket", p->bucket, "entries", c.arr,
                  "more", more);
    if (more) {
        json_object_set_new(o, "next_after", json_string(c.last));
    }
    respond_json(p->a, p->r, 200, o);
}

static void read_done(void *arg, const struct meta_result *res)
{
    struct pending *p = arg;
    if (res->err != META_OK) {
        meta_error(p->a, p->r, res);
    } else if (p->kind == P_GET) {
        do_get(p);
    } else {
        do_list(p);
    }
    free(p);
}

static void write_done(void *arg, const struct meta_result *res)
{
    struct pending *p = arg;
    struct api *a = p->a;
    if (res->err != META_OK) {
        meta_error(a, p->r, res);
        free(p);
        return;
    }
    switch (res->kv.code) {
    case KV_OK:
        respond_json(a, p->r, 200,
                     json_pack("{s:I}", "revision",
                               (json_int_t)res->kv.revision));
        break;
    case KV_NOT_FOUND:
        ERR(a, p->r, 404, "not_found", "no key '%s' in bucket '%s'", p->key,
            p->bucket);
        break;
    case KV_NONCE_REUSED:
        ERR(a, p->r, 401, "nonce_reused",
            "this nonce was used already: sign every request with a fresh "
            "nonce");
        break;
    case KV_EXISTS:
    case KV_REVISION_MISMATCH:
        http_req_respond_json(
            p->r, 409,
            json_pack("{s:{s:s,s:s,s:I}}", "error", "code",
                      "revision_mismatch", "message",
                      "the key's current revision differs from ?rev",
                      "current_revision", (json_int_t)res->kv.revision));
        break;
    case KV_INVALID:
        ERR(a, p->r, 400, "invalid", "the state machine rejected the request");
        break;
    default:
        ERR(a, p->r, 409, kv_code_name(res->kv.code), "%s",
            kv_code_name(res->kv.code));
        break;
    }
    free(p);
}

static bool valid_user_bucket(const char *b)
{
    /* Buckets starting with '_' and the control plane's own hold records
     * whose invariants only the control plane keeps (deleting a nonce claim
     * would re-enable a replay): readable by admins, never writable here. */
    static const char *const reserved[] = {
        CTL_B_MEMBERS, CTL_B_NKEYS, CTL_B_ROOMS, CTL_B_SEALED,
        CTL_B_BLOBS,   CTL_B_BLOBDATA, KV_NONCE_BUCKET,
    };
    if (!kv_valid_bucket(b) || b[0] == '_') {
        return false;
    }
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++) {
        if (strcmp(b, reserved[i]) == 0) {
            return false;
        }
    }
    return true;
}

static void handle_kv(struct api *a, struct http_req *r, const char *rest,
                      const struct ctl_caller *who)
{
    const char *method = http_req_method(r);
    const char *slash = strchr(rest, '/');
    struct pending *p;
    size_t blen = slash ? (size_t)(slash - rest) : strlen(rest);
    const char *stale = http_req_param(r, "stale");
    int rv;

    p = calloc(1, sizeof *p);
    if (p == NULL) {
        ERR(a, r, 503, "internal", "out of memory");
        return;
    }
    p->a = a;
    p->r = r;
    if (blen == 0 || blen >= sizeof p->bucket) {
        ERR(a, r, 400, "invalid_bucket",
            "bucket names are 1 to 64 characters of [A-Za-z0-9_-]");
        goto out_free;
    }
    memcpy(p->bucket, rest, blen);
    p->bucket[blen] = '\0';
    if (!kv_valid_bucket(p->bucket)) {
        ERR(a, r, 400, "invalid_bucket",
            "bucket names are 1 to 64 characters of [A-Za-z0-9_-]");
        goto out_free;
    }

    if (slash == NULL || slash[1] == '\0') {
        /* Collection: list by prefix. */
        const char *prefix = http_req_param(r, "prefix");
        const char *after = http_req_param(r, "after");
        const char *limit = http_req_param(r, "limit");
        if (strcmp(method, "GET") != 0) {
            ERR(a, r, 405, "method_not_allowed",
                "a bucket supports GET (list) only");
            goto out_free;
        }
        if ((prefix && strlen(prefix) >= sizeof p->prefix) ||
            (after && strlen(after) >= sizeof p->after)) {
            ERR(a, r, 400, "invalid_key", "prefix or after too long");
            goto out_free;
        }
        snprintf(p->prefix, sizeof p->prefix, "%s", prefix ? prefix : "");
        snprintf(p->after, sizeof p->after, "%s", after ? after : "");
        p->limit = LIST_DEFAULT;
        if (limit) {
            char *end;
            long n = strtol(limit, &end, 10);
            if (*limit == '\0' || *end != '\0' || n < 1 || n > LIST_MAX) {
                ERR(a, r, 400, "invalid_limit", "limit must be 1 to %d",
                    LIST_MAX);
                goto out_free;
            }
            p->limit = (size_t)n;
        }
        p->kind = P_LIST;
    } else {
        const char *key = slash + 1;
        if (!kv_valid_key(key, strlen(key)) || strlen(key) >= sizeof p->key) {
            ERR(a, r, 400, "invalid_key",
                "keys are 1 to 1024 bytes of [A-Za-z0-9_.=:@/-], without "
                "'..' or a leading '/'");
            goto out_free;
        }
        snprintf(p->key, sizeof p->key, "%s", key);
        if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0) {
            p->kind = P_GET;
        } else if (strcmp(method, "PUT") == 0) {
            p->kind = P_PUT;
        } else if (strcmp(method, "DELETE") == 0) {
            p->kind = P_DEL;
        } else {
            ERR(a, r, 405, "method_not_allowed",
                "a key supports GET, PUT and DELETE");
            goto out_free;
        }
    }

    if (p->kind == P_GET || p->kind == P_LIST) {
        a->reads++;
        if (stale && strcmp(stale, "true") == 0) {
            struct meta_result ok;
            memset(&ok, 0, sizeof ok);
            read_done(p, &ok);
            return;
        }
        rv = ctl_read(a->ctl, who, read_done, p);
    } else {
        struct kv_cmd cmd;
        bool has_rev;
        uint64_t rev = 0;
        size_t len = 0;
        const void *body = http_req_body(r, &len);

        if (!valid_user_bucket(p->bucket)) {
            ERR(a, r, 403, "reserved_bucket",
                "this bucket belongs to the control plane or the cluster: "
                "change it through its own endpoints");
            goto out_free;
        }
        if (parse_rev(r, &has_rev, &rev) != 0) {
            ERR(a, r, 400, "bad_revision",
                "rev must be a non-negative integer");
            goto out_free;
        }
        if (p->kind == P_PUT && len > KV_MAX_VALUE) {
            ERR(a, r, 413, "value_too_large", "values are at most %d bytes",
                KV_MAX_VALUE);
            goto out_free;
        }
        memset(&cmd, 0, sizeof cmd);
        cmd.kind = KV_CMD_OP;
        cmd.op.bucket = p->bucket;
        cmd.op.key = p->key;
        if (p->kind == P_PUT) {
            cmd.op.type = !has_rev    ? KV_OP_PUT
                          : rev == 0 ? KV_OP_CREATE
                                     : KV_OP_UPDATE;
            cmd.op.value = body;
            cmd.op.value_len = len;
            cmd.op.revision = rev;
        } else {
            if (has_rev && rev == 0) {
                ERR(a, r, 400, "bad_revision",
                    "DELETE takes rev >= 1 (or no rev)");
                goto out_free;
            }
            cmd.op.type = KV_OP_DELETE;
            cmd.op.revision = has_rev ? rev : 0;
        }
        if (who->claim_pending) {
            /* The request's nonce rides in the write itself. */
            cmd.claim.nonce = who->claim_key;
            cmd.claim.expires_at = who->claim_expires;
        }
        a->writes++;
        rv = meta_write(a->meta, &cmd, write_done, p);
    }
    if (rv != 0) {
        struct meta_result res;
        memset(&res, 0, sizeof res);
        res.err = rv;
        snprintf(res.message, sizeof res.message, "request refused");
        meta_error(a, r, &res);
        goto out_free;
    }
    return;

out_free:
    free(p);
}

/* ------------------------------------------------------------------ */
/* cluster                                                              */

static const char *role_name(int role)
{
    return role == RAFT_VOTER     ? "voter"
           : role == RAFT_STANDBY ? "standby"
                                  : "spare";
}

static bool in_list(const struct meta_result *h, uint64_t id)
{
    for (unsigned i = 0; h && i < h->n_healthy; i++) {
        if (h->healthy[i] == id) {
            return true;
        }
    }
    return false;
}

/* health: the leader's view of its members, or NULL when unknown. */
static json_t *cluster_json(struct api *a, const struct meta_result *health)
{
    struct meta *m = a->meta;
    struct rg_node *n = meta_node(m);
    json_t *members = json_array();
    uint64_t lid = 0;
    const char *laddr = NULL;
    const char *lname = NULL;
    json_t *o;
    unsigned voters = 0;

    if (n) {
        const struct raft_configuration *c = rg_node_configuration(n);
        rg_node_leader(n, &lid, &laddr);
        for (unsigned i = 0; i < c->n; i++) {
            const struct raft_server *s = &c->servers[i];
            const char *name = meta_node_name(m, s->id);
            char idhex[20];
            snprintf(idhex, sizeof idhex, "%016" PRIx64, (uint64_t)s->id);
            voters += s->role == RAFT_VOTER;
            json_array_append_new(
                members,
                json_pack("{s:s,s:s,s:s,s:s,s:b}", "name", name ? name : "",
                          "id", idhex, "address", s->address, "role",
                          role_name(s->role), "healthy",
                          health ? in_list(health, s->id)
                                 : rg_node_peer_healthy(n, s->id)));
        }
        if (lid) {
            lname = meta_node_name(m, lid);
        }
    }
    o = json_pack("{s:s?,s:I,s:I,s:I,s:o,s:b,s:i,s:s}", "leader", lname,
                  "term", (json_int_t)(n ? rg_node_term(n) : 0),
                  "commit_index", (json_int_t)(n ? rg_node_commit_index(n) : 0),
                  "applied_index",
                  (json_int_t)(n ? rg_node_applied_index(n) : 0), "members",
                  members, "ha", voters >= 3, "voters", (int)voters, "node",
                  meta_name(m));
    if (lid) {
        char idhex[20];
        snprintf(idhex, sizeof idhex, "%016" PRIx64, lid);
        json_object_set_new(o, "leader_id", json_string(idhex));
    }
    if (voters < 3) {
        json_object_set_new(
            o, "warning",
            json_string("fewer than 3 voters: this cluster is not highly "
                        "available; losing a voter can stop it"));
    }
    return o;
}

static void cluster_read_done(void *arg, const struct meta_result *res)
{
    struct pending *p = arg;
    /* The configuration is answered even without a leader (health then
     * comes from what this node knows): that is when an operator needs it
     * most. */
    respond_json(p->a, p->r, 200,
                 cluster_json(p->a, res && res->err == META_OK ? res : NULL));
    free(p);
}

static void member_done(void *arg, const struct meta_result *res)
{
    struct pending *p = arg;
    if (res->err != META_OK) {
        meta_error(p->a, p->r, res);
        free(p);
        return;
    }
    /* Answer with the leader's view of member health. */
    if (meta_health(p->a->meta, cluster_read_done, p) != 0) {
        cluster_read_done(p, NULL);
    }
}

/* Finds a member's id by name (recorded names) or by 16-hex-digit id. */
static uint64_t member_id(struct api *a, const char *name)
{
    struct rg_node *n = meta_node(a->meta);
    if (n == NULL) {
        return 0;
    }
    const struct raft_configuration *c = rg_node_configuration(n);
    for (unsigned i = 0; i < c->n; i++) {
        const char *nm = meta_node_name(a->meta, c->servers[i].id);
        char idhex[20];
        snprintf(idhex, sizeof idhex, "%016" PRIx64, (uint64_t)c->servers[i].id);
        if ((nm && strcmp(nm, name) == 0) || strcmp(idhex, name) == 0) {
            return c->servers[i].id;
        }
    }
    /* Not recorded yet: the id is derived from the name. */
    uint64_t id = rt_node_id(name);
    for (unsigned i = 0; i < c->n; i++) {
        if (c->servers[i].id == id) {
            return id;
        }
    }
    return 0;
}

static json_t *parse_body_json(struct http_req *r, struct api *a)
{
    size_t len;
    const char *body = http_req_body(r, &len);
    json_error_t jerr;
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL || !json_is_object(j)) {
        json_decref(j);
        ERR(a, r, 400, "bad_json", "the body must be a JSON object: %s",
            j ? "not an object" : jerr.text);
        return NULL;
    }
    return j;
}

static void handle_cluster(struct api *a, struct http_req *r, const char *rest)
{
    const char *method = http_req_method(r);
    struct pending *p = calloc(1, sizeof *p);
    int rv = 0;

    if (p == NULL) {
        ERR(a, r, 503, "internal", "out of memory");
        return;
    }
    p->a = a;
    p->r = r;
    if (*rest == '\0') {
        if (strcmp(method, "GET") != 0) {
            ERR(a, r, 405, "method_not_allowed", "use GET");
            goto out_free;
        }
        if (meta_node(a->meta) == NULL ||
            meta_health(a->meta, cluster_read_done, p) != 0) {
            cluster_read_done(p, NULL);
        }
        return;
    }
    if (strcmp(rest, "/members") == 0 && strcmp(method, "POST") == 0) {
        json_t *j = parse_body_json(r, a);
        const char *name = NULL, *address = NULL, *role = "voter";
        int rl;
        if (j == NULL) {
            goto out_free;
        }
        if (json_unpack(j, "{s:s,s:s,s?s!}", "name", &name, "address",
                        &address, "role", &role) != 0 ||
            strlen(name) == 0 || strlen(name) > 63 || strlen(address) == 0 ||
            strlen(address) > 255) {
            json_decref(j);
            ERR(a, r, 400, "bad_request",
                "expected {\"name\": str, \"address\": \"host:port\", "
                "\"role\": \"voter|standby|spare\"} and nothing else");
            goto out_free;
        }
        rl = strcmp(role, "voter") == 0     ? RAFT_VOTER
             : strcmp(role, "standby") == 0 ? RAFT_STANDBY
             : strcmp(role, "spare") == 0   ? RAFT_SPARE
                                            : -1;
        if (rl < 0) {
            json_decref(j);
            ERR(a, r, 400, "bad_request", "role must be voter, standby or spare");
            goto out_free;
        }
        rv = meta_member_add(a->meta, name, address, rl, member_done, p);
        json_decref(j);
    } else if (strncmp(rest, "/members/", 9) == 0 &&
               strcmp(method, "DELETE") == 0) {
        uint64_t id = member_id(a, rest + 9);
        if (id == 0) {
            ERR(a, r, 404, "not_found", "no member named '%s'", rest + 9);
            goto out_free;
        }
        rv = meta_member_remove(a->meta, id, member_done, p);
    } else if (strcmp(rest, "/transfer") == 0 && strcmp(method, "POST") == 0) {
        const char *to = http_req_param(r, "to");
        uint64_t id = 0;
        if (to && *to) {
            id = member_id(a, to);
            if (id == 0) {
                ERR(a, r, 404, "not_found", "no member named '%s'", to);
                goto out_free;
            }
        }
        rv = meta_transfer(a->meta, id, member_done, p);
    } else {
        ERR(a, r, 404, "not_found", "no such cluster endpoint");
        goto out_free;
    }
    if (rv != 0) {
        struct meta_result res;
        memset(&res, 0, sizeof res);
        res.err = rv;
        snprintf(res.message, sizeof res.message, "%s",
                 rv == META_EINVALID
                     ? "membership changes need a node started with --routes"
                     : "the request was refused");
        meta_error(a, r, &res);
        goto out_free;
    }
    return;
out_free:
    free(p);
}

/* ------------------------------------------------------------------ */
/* health and metrics                                                   */

static void handle_healthz(struct api *a, struct http_req *r)
{
    struct meta *m = a->meta;
    struct rg_node *n = meta_node(m);
    uint64_t lid = 0;
    const char *laddr = NULL;
    const char *lname = NULL;
    unsigned voters = 0;
    bool serving;
    json_t *o;

    if (n) {
        rg_node_leader(n, &lid, &laddr);
        voters = rg_node_voters(n);
        if (lid) {
            lname = meta_node_name(m, lid);
        }
    }
    serving = n != NULL && lid != 0;
    o = json_pack(
        "{s:s,s:s,s:s,s:s?,s:{s:s,s:b,s:b,s:b},s:b,s:i,s:I,s:I,s:I}",
        "status", serving ? "ok" : "unavailable", "node", meta_name(m),
        "role", meta_phase(m), "leader", lname, "posture", "bus_auth",
        a->posture.bus_auth, "acl", a->posture.acl, "tls", a->posture.tls,
        "route_tls", a->posture.route_tls, "ha", voters >= 3, "voters",
        (int)voters, "term", (json_int_t)(n ? rg_node_term(n) : 0),
        "commit_index", (json_int_t)(n ? rg_node_commit_index(n) : 0),
        "applied_index", (json_int_t)(n ? rg_node_applied_index(n) : 0));
    if (a->bus) {
        struct bus_stats bs;
        bus_get_stats(a->bus, &bs);
        json_object_set_new(
            o, "bus",
            json_pack("{s:I,s:I,s:I}", "connections", (json_int_t)bs.conns,
                      "subscriptions", (json_int_t)bs.subs, "routes",
                      (json_int_t)bs.routes));
    }
    if (a->ext) {
        struct bxp_status xs;
        bxp_get(a->ext, &xs);
        json_object_set_new(
            o, "bus",
            json_pack("{s:s,s:b,s:s,s:s,s:s}", "external", bxp_url(a->ext),
                      "reachable", xs.reachable, "server_name", xs.server_name,
                      "version", xs.version, "error", xs.error));
    }
    if (voters < 3) {
        json_object_set_new(o, "ha_warning",
                            json_string("not HA: the meta group has fewer "
                                        "than 3 voters"));
    }
    respond_json(a, r, serving ? 200 : 503, o);
}

enum route {
    R_OTHER = 0,
    R_HEALTHZ,
    R_METRICS,
    R_KV,
    R_CLUSTER,
    R_MEMBERS,
    R_ME,
    R_ROOMS,
    R_BLOBS,
    R_NR,
};

static const char *const route_names[R_NR] = {
    "other", "healthz", "metrics", "kv",    "cluster",
    "members", "me",    "rooms",   "blobs",
};

static enum route route_of(const char *path)
{
    static const struct {
        const char *prefix;
        enum route r;
    } table[] = {
        { "/healthz", R_HEALTHZ },     { "/metrics", R_METRICS },
        { "/v1/kv/", R_KV },           { "/v1/cluster", R_CLUSTER },
        { "/v1/members", R_MEMBERS },  { "/v1/me", R_ME },
        { "/v1/rooms", R_ROOMS },      { "/v1/blobs/", R_BLOBS },
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (strncmp(path, table[i].prefix, strlen(table[i].prefix)) == 0) {
            return table[i].r;
        }
    }
    return R_OTHER;
}

struct sum_ctx {
    uint64_t n;
    uint64_t bytes;
};

static int count_cb(void *arg, const struct kv_entry *e)
{
    struct sum_ctx *c = arg;
    json_t *j;
    c->n++;
    j = json_loadb(e->value, e->value_len, 0, NULL);
    if (j) {
        c->bytes += (uint64_t)json_integer_value(json_object_get(j, "size"));
        json_decref(j);
    }
    return 0;
}

struct sum_page {
    struct sum_ctx *c;
    char last[1100];
};

static int count_page_cb(void *arg, const struct kv_entry *e)
{
    struct sum_page *p = arg;
    snprintf(p->last, sizeof p->last, "%s", e->key);
    return count_cb(p->c, e);
}

/* Counts a bucket page by page (the KV returns bounded pages). */
static struct sum_ctx count_bucket(struct api *a, const char *bucket)
{
    struct sum_ctx c = { 0, 0 };
    struct sum_page p = { &c, "" };
    bool more = true;
    while (more) {
        more = false;
        if (kv_store_list(meta_kv(a->meta), bucket, "",
                          p.last[0] ? p.last : NULL, KV_MAX_LIST,
                          count_page_cb, &p, &more) != KV_OK) {
            break;
        }
    }
    return c;
}

static void handle_metrics(struct api *a, struct http_req *r)
{
    struct rg_node *n = meta_node(a->meta);
    uint64_t keys = 0, bytes = 0;
    struct meta_latency lat;
    struct ctl_stats cs;
    struct sum_ctx members, rooms, blobs;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    uint64_t cum = 0;

    if (f == NULL) {
        http_req_error(r, 500, "internal", "out of memory");
        return;
    }
    kv_store_stats(meta_kv(a->meta), &keys, &bytes);
    meta_get_latency(a->meta, &lat);
    ctl_get_stats(a->ctl, &cs);
    members = count_bucket(a, "members");
    rooms = count_bucket(a, "rooms");
    blobs = count_bucket(a, "blobs");

    fprintf(f, "# HELP unibus_http_requests_total HTTP requests answered, by "
               "route and status class.\n"
               "# TYPE unibus_http_requests_total counter\n");
    for (unsigned rt = 0; rt < R_NR; rt++) {
        for (int cls = 2; cls <= 5; cls++) {
            uint64_t v = a->http ? http_server_answered(a->http, rt, cls) : 0;
            if (v) {
                fprintf(f,
                        "unibus_http_requests_total{route=\"%s\",status=\"%dxx\"}"
                        " %" PRIu64 "\n",
                        route_names[rt], cls, v);
            }
        }
    }
    fprintf(f,
            "# TYPE unibus_auth_total counter\n"
            "unibus_auth_total{result=\"ok\"} %" PRIu64 "\n"
            "unibus_auth_total{result=\"failed\"} %" PRIu64 "\n"
            "unibus_auth_total{result=\"nonce_reused\"} %" PRIu64 "\n",
            cs.auth_ok, cs.auth_failed, cs.nonce_reused);
    fprintf(f,
            "# TYPE unibus_raft_term gauge\nunibus_raft_term %" PRIu64 "\n"
            "# TYPE unibus_raft_commit_index gauge\n"
            "unibus_raft_commit_index %" PRIu64 "\n"
            "# TYPE unibus_raft_applied_index gauge\n"
            "unibus_raft_applied_index %" PRIu64 "\n"
            "# TYPE unibus_raft_leader gauge\nunibus_raft_leader %d\n"
            "# TYPE unibus_raft_leader_changes_total counter\n"
            "unibus_raft_leader_changes_total %" PRIu64 "\n"
            "# TYPE unibus_raft_voters gauge\nunibus_raft_voters %u\n",
            n ? rg_node_term(n) : 0, n ? rg_node_commit_index(n) : 0,
            n ? rg_node_applied_index(n) : 0,
            n && rg_node_is_leader(n) ? 1 : 0,
            n ? rg_node_leader_changes(n) : 0, n ? rg_node_voters(n) : 0);
    fprintf(f, "# HELP unibus_proposal_seconds Writes from proposal to "
               "commit, as seen by this node.\n"
               "# TYPE unibus_proposal_seconds histogram\n");
    for (unsigned i = 0; i < META_LAT_BUCKETS; i++) {
        cum += lat.buckets[i];
        if (i < META_LAT_BUCKETS - 1) {
            fprintf(f, "unibus_proposal_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
                    META_LAT_BOUNDS_MS[i] / 1000.0, cum);
        } else {
            fprintf(f, "unibus_proposal_seconds_bucket{le=\"+Inf\"} %" PRIu64
                       "\n",
                    cum);
        }
    }
    fprintf(f,
            "unibus_proposal_seconds_sum %g\n"
            "unibus_proposal_seconds_count %" PRIu64 "\n",
            lat.sum_ms / 1000.0, lat.count);
    fprintf(f,
            "# TYPE unibus_kv_keys gauge\nunibus_kv_keys %" PRIu64 "\n"
            "# TYPE unibus_kv_value_bytes gauge\nunibus_kv_value_bytes %" PRIu64
            "\n"
            "# TYPE unibus_members gauge\nunibus_members %" PRIu64 "\n"
            "# TYPE unibus_rooms gauge\nunibus_rooms %" PRIu64 "\n"
            "# TYPE unibus_blobs gauge\nunibus_blobs %" PRIu64 "\n"
            "# TYPE unibus_blob_bytes gauge\nunibus_blob_bytes %" PRIu64 "\n",
            keys, bytes, members.n, rooms.n, blobs.n, blobs.bytes);
    if (a->bus) {
        struct bus_stats bs;
        bus_get_stats(a->bus, &bs);
        const struct {
            const char *name, *type;
            uint64_t v;
        } *m, bm[] = {
            {"connections", "gauge", bs.conns},
            {"connections_total", "counter", bs.conns_total},
            {"subscriptions", "gauge", bs.subs},
            {"msgs_in_total", "counter", bs.msgs_in},
            {"bytes_in_total", "counter", bs.bytes_in},
            {"msgs_out_total", "counter", bs.msgs_out},
            {"bytes_out_total", "counter", bs.bytes_out},
            {"slow_consumers_total", "counter", bs.slow_consumers},
            {"publisher_stalls_total", "counter", bs.stalls},
            {"auth_failures_total", "counter", bs.auth_failures},
            {"permission_denials_total", "counter", bs.permission_denials},
            {"route_msgs_in_total", "counter", bs.route_msgs_in},
            {"route_msgs_out_total", "counter", bs.route_msgs_out},
            {"routes", "gauge", bs.routes},
        };
        for (m = bm; m < bm + sizeof bm / sizeof bm[0]; m++) {
            fprintf(f, "# TYPE unibus_bus_%s %s\nunibus_bus_%s %" PRIu64 "\n",
                    m->name, m->type, m->name, m->v);
        }
    }
    fclose(f);
    http_req_respond(r, 200, "text/plain; version=0.0.4", buf, len);
    free(buf);
}

/* ------------------------------------------------------------------ */

static void authed(void *arg, struct http_req *r, const struct ctl_caller *who)
{
    struct api *a = arg;
    const char *path = http_req_path(r);

    if (ctl_route(a->ctl, r, who)) {
        return;
    }
    if (strncmp(path, "/v1/kv/", 7) == 0 || strcmp(path, "/v1/cluster") == 0 ||
        strncmp(path, "/v1/cluster/", 12) == 0) {
        if (!who->admin) {
            ERR(a, r, 403, "forbidden", "the KV and cluster endpoints are for "
                                        "admins");
            return;
        }
        if (path[4] == 'k') {
            handle_kv(a, r, path + 7, who);
        } else {
            handle_cluster(a, r, path + 11);
        }
        return;
    }
    ERR(a, r, 404, "not_found", "no endpoint %s %s", http_req_method(r), path);
}

void api_handle(void *arg, struct http_req *r)
{
    struct api *a = arg;
    const char *path = http_req_path(r);
    const char *method = http_req_method(r);

    http_req_set_route(r, route_of(path));
    if (strcmp(path, "/healthz") == 0) {
        if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
            ERR(a, r, 405, "method_not_allowed", "use GET");
            return;
        }
        handle_healthz(a, r);
        return;
    }
    if (strcmp(path, "/metrics") == 0) {
        handle_metrics(a, r);
        return;
    }
    if (strncmp(path, "/v1/kv/", 7) == 0 &&
        (strcmp(method, "PUT") == 0 || strcmp(method, "DELETE") == 0)) {
        /* One write: its nonce claim goes into the same raft entry. */
        ctl_authenticate_deferred(a->ctl, r, authed, a);
        return;
    }
    if (strncmp(path, "/v1/", 4) == 0) {
        ctl_authenticate(a->ctl, r, authed, a);
        return;
    }
    ERR(a, r, 404, "not_found", "no endpoint %s %s", method, path);
}

struct api *api_create(struct meta *meta, struct ctl *ctl,
                       const struct api_posture *posture)
{
    struct api *a = calloc(1, sizeof *a);
    if (a) {
        a->meta = meta;
        a->ctl = ctl;
        a->posture = *posture;
    }
    return a;
}

void api_set_bus(struct api *a, struct bus *b)
{
    a->bus = b;
}

void api_set_external_bus(struct api *a, struct bxp *p)
{
    a->ext = p;
}

void api_set_server(struct api *a, struct http_server *s)
{
    a->http = s;
}

void api_destroy(struct api *a)
{
    free(a);
}
