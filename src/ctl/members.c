/* /v1/members and /v1/me. Creating and deleting members is for admins; a
 * member may read its own record. Deleting a member takes it out of every
 * room (bumping each room's epoch) and removes its sealed keys, in one txn. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth/nkey.h"
#include "internal.h"

#define LIST_BATCH 1000

/* ------------------------------------------------------------------ */
/* list                                                                 */

struct list_ctx {
    json_t *arr;
    char last[CTL_NAME_MAX + 1];
    struct kv_store *kv;
};

static int list_cb(void *arg, const struct kv_entry *e)
{
    struct list_ctx *l = arg;
    struct ctl_member m;
    if (ctl_member_load(l->kv, e->key, &m) == 0) {
        json_array_append_new(l->arr, ctl_member_json(&m));
    }
    snprintf(l->last, sizeof l->last, "%s", e->key);
    return 0;
}

struct list_req {
    struct ctl *c;
    struct http_req *r;
    size_t limit;
    char after[CTL_NAME_MAX + 2];
};

static void list_read(void *arg, const struct meta_result *res)
{
    struct list_req *q = arg;
    struct list_ctx l;
    bool more = false;
    json_t *o;

    if (res->err != META_OK) {
        ctl_meta_error(q->r, res);
        free(q);
        return;
    }
    l.arr = json_array();
    l.last[0] = '\0';
    l.kv = meta_kv(q->c->meta);
    kv_store_list(l.kv, CTL_B_MEMBERS, "", q->after[0] ? q->after : NULL,
                  q->limit, list_cb, &l, &more);
    o = json_pack("{s:o,s:b}", "members", l.arr, "more", more);
    if (more) {
        json_object_set_new(o, "next_after", json_string(l.last));
    }
    http_req_respond_json(q->r, 200, o);
    free(q);
}

static void members_list(struct ctl *c, struct http_req *r,
                         const struct ctl_caller *who)
{
    struct list_req *q;
    const char *after;
    size_t limit;
    if (ctl_page(r, &limit, &after) != 0) {
        return;
    }
    q = calloc(1, sizeof *q);
    if (q == NULL) {
        http_req_error(r, 503, "internal", "out of memory");
        return;
    }
    q->c = c;
    q->r = r;
    q->limit = limit;
    snprintf(q->after, sizeof q->after, "%s", after ? after : "");
    if (ctl_read(c, who, list_read, q) != 0) {
        http_req_error(r, 503, "no_leader", "no leader is reachable");
        free(q);
    }
}

/* ------------------------------------------------------------------ */
/* get                                                                  */

static void get_read(void *arg, const struct meta_result *res)
{
    struct rmw *w = arg; /* used as a plain holder: no txn */
    struct ctl_member m;
    int rv;
    if (res->err != META_OK) {
        ctl_meta_error(w->r, res);
    } else if ((rv = ctl_member_load(meta_kv(w->c->meta), w->b, &m)) == 0) {
        http_req_respond_json(w->r, 200, ctl_member_json(&m));
    } else if (rv == 1) {
        http_req_error(w->r, 404, "not_found", "no member '%s'", w->b);
    } else {
        http_req_error(w->r, 500, "internal", "corrupt member record");
    }
    free(w);
}

static void member_get(struct ctl *c, struct http_req *r,
                       const struct ctl_caller *who, const char *handle)
{
    struct rmw *w = rmw_new(c, r, NULL, NULL, NULL);
    if (w == NULL) {
        return;
    }
    snprintf(w->b, sizeof w->b, "%s", handle);
    if (ctl_read(c, who, get_read, w) != 0) {
        http_req_error(r, 503, "no_leader", "no leader is reachable");
        free(w);
    }
}

void ctl_me(struct ctl *c, struct http_req *r, const struct ctl_caller *who)
{
    if (strcmp(http_req_method(r), "GET") != 0) {
        http_req_error(r, 405, "method_not_allowed", "use GET");
        return;
    }
    member_get(c, r, who, who->handle);
}

/* ------------------------------------------------------------------ */
/* create                                                               */

static int create_build(struct rmw *w, struct ctl_txn *t)
{
    struct kv_store *kv = meta_kv(w->c->meta);
    struct ctl_member m, existing;
    struct kv_entry e;
    const char *role = NULL, *sp = NULL, *bp = NULL;
    char *rec;
    bool taken;
    int rv;

    /* Validated by members_create. */
    json_unpack(w->body, "{s:s,s:s,s:s}", "role", &role, "sign_pub", &sp,
                "box_pub", &bp);
    memset(&m, 0, sizeof m);
    snprintf(m.handle, sizeof m.handle, "%s", w->b);
    m.admin = strcmp(role, "admin") == 0;
    snprintf(m.sign_pub, sizeof m.sign_pub, "%s", sp);
    snprintf(m.box_pub, sizeof m.box_pub, "%s", bp);
    m.created = (int64_t)time(NULL);

    rv = ctl_member_load(kv, m.handle, &existing);
    if (rv != 1) {
        http_req_error(w->r, 409, "exists", "member '%s' exists already",
                       m.handle);
        return -1;
    }
    memset(&e, 0, sizeof e);
    taken = kv_store_get(kv, CTL_B_NKEYS, m.sign_pub, &e) == KV_OK;
    kv_entry_clear(&e);
    if (taken) {
        http_req_error(w->r, 409, "key_in_use",
                       "another member has this sign_pub");
        return -1;
    }
    rec = ctl_member_dump(&m);
    if (rec == NULL || ctl_txn_compare(t, CTL_B_MEMBERS, m.handle, 0) != 0 ||
        ctl_txn_compare(t, CTL_B_NKEYS, m.sign_pub, 0) != 0 ||
        ctl_txn_put(t, CTL_B_MEMBERS, m.handle, rec, strlen(rec)) != 0 ||
        ctl_txn_put(t, CTL_B_NKEYS, m.sign_pub, m.handle, strlen(m.handle)) !=
            0) {
        free(rec);
        http_req_error(w->r, 503, "internal", "out of memory");
        return -1;
    }
    free(rec);
    return 0;
}

static void create_done(struct rmw *w, const struct meta_result *res)
{
    struct ctl_member m;
    (void)res;
    if (ctl_member_load(meta_kv(w->c->meta), w->b, &m) == 0) {
        http_req_respond_json(w->r, 201, ctl_member_json(&m));
    } else {
        /* Committed, but this node has not applied it yet. */
        http_req_respond_json(w->r, 201,
                              json_pack("{s:s}", "handle", w->b));
    }
}

static void members_create(struct ctl *c, struct http_req *r,
                           const struct ctl_caller *who)
{
    json_t *j = ctl_body_json(r);
    const char *handle = NULL, *role = NULL, *sp = NULL, *bp = NULL;
    uint8_t key[NKEY_KEY_LEN];
    struct rmw *w;

    if (j == NULL) {
        return;
    }
    if (json_unpack(j, "{s:s,s:s,s:s,s:s!}", "handle", &handle, "role", &role,
                    "sign_pub", &sp, "box_pub", &bp) != 0) {
        json_decref(j);
        http_req_error(r, 400, "bad_request",
                       "expected {\"handle\", \"role\", \"sign_pub\", "
                       "\"box_pub\"} (strings) and nothing else");
        return;
    }
    if (!ctl_name_valid(handle)) {
        json_decref(j);
        http_req_error(r, 400, "invalid_handle",
                       "handles match [a-z0-9][a-z0-9_-]{0,63}");
        return;
    }
    if (strcmp(role, "admin") != 0 && strcmp(role, "member") != 0) {
        json_decref(j);
        http_req_error(r, 400, "invalid_role", "role is admin or member");
        return;
    }
    if (nkey_user_pub_decode(sp, key) != 0) {
        json_decref(j);
        http_req_error(r, 400, "invalid_sign_pub",
                       "sign_pub must be a NATS user nkey (U..., 56 chars)");
        return;
    }
    if (!nkey_box_pub_valid(bp)) {
        json_decref(j);
        http_req_error(r, 400, "invalid_box_pub",
                       "box_pub must be standard base64 of a 32-byte X25519 "
                       "public key");
        return;
    }
    w = rmw_new(c, r, who, create_build, create_done);
    if (w == NULL) {
        json_decref(j);
        return;
    }
    w->body = j;
    snprintf(w->b, sizeof w->b, "%s", handle);
    rmw_start(w);
}

/* ------------------------------------------------------------------ */
/* delete                                                               */

struct scan {
    struct kv_store *kv;
    struct ctl_txn *t;
    const char *handle;
    int err;
    unsigned admins;
    const char *suffix;
    size_t suffix_len;
};

static int sealed_cb(void *arg, const struct kv_entry *e)
{
    struct scan *s = arg;
    size_t kl = strlen(e->key);
    if (kl > s->suffix_len &&
        strcmp(e->key + kl - s->suffix_len, s->suffix) == 0) {
        if (ctl_txn_compare(s->t, CTL_B_SEALED, e->key, e->revision) != 0 ||
            ctl_txn_delete(s->t, CTL_B_SEALED, e->key) != 0) {
            s->err = 1;
            return 1;
        }
    }
    return 0;
}

int ctl_room_drop_member(struct kv_store *kv, struct ctl_txn *t,
                         struct ctl_room *room, const char *handle)
{
    int idx = ctl_room_find_member(room, handle);
    char prefix[CTL_NAME_MAX + 2];
    char suffix[CTL_NAME_MAX + 2];
    struct scan s;
    char *rec;
    bool more = false;

    if (idx >= 0) {
        memmove(room->members[idx], room->members[idx + 1],
                (room->n_members - (unsigned)idx - 1) *
                    sizeof room->members[0]);
        room->n_members--;
    }
    room->epoch++;
    rec = ctl_room_dump(room);
    if (rec == NULL ||
        ctl_txn_compare(t, CTL_B_ROOMS, room->name, room->revision) != 0 ||
        ctl_txn_put(t, CTL_B_ROOMS, room->name, rec, strlen(rec)) != 0) {
        free(rec);
        return -1;
    }
    free(rec);
    snprintf(prefix, sizeof prefix, "%s/", room->name);
    snprintf(suffix, sizeof suffix, "/%s", handle);
    memset(&s, 0, sizeof s);
    s.kv = kv;
    s.t = t;
    s.suffix = suffix;
    s.suffix_len = strlen(suffix);
    kv_store_list(kv, CTL_B_SEALED, prefix, NULL, LIST_BATCH, sealed_cb, &s,
                  &more);
    return s.err || more ? -1 : 0;
}

struct rooms_scan {
    struct kv_store *kv;
    struct ctl_txn *t;
    const char *handle;
    int err;
};

static int rooms_cb(void *arg, const struct kv_entry *e)
{
    struct rooms_scan *s = arg;
    struct ctl_room room;
    if (ctl_room_load(s->kv, e->key, &room) != 0) {
        return 0;
    }
    if (ctl_room_find_member(&room, s->handle) < 0) {
        return 0;
    }
    if (ctl_room_drop_member(s->kv, s->t, &room, s->handle) != 0) {
        s->err = 1;
        return 1;
    }
    return 0;
}

static int admin_cb(void *arg, const struct kv_entry *e)
{
    struct scan *s = arg;
    struct ctl_member m;
    if (ctl_member_load(s->kv, e->key, &m) == 0 && m.admin) {
        s->admins++;
    }
    return 0;
}

static int delete_build(struct rmw *w, struct ctl_txn *t)
{
    struct kv_store *kv = meta_kv(w->c->meta);
    struct ctl_member m;
    struct kv_entry e;
    struct rooms_scan rs;
    bool more = false;
    int rv = ctl_member_load(kv, w->b, &m);

    if (rv == 1) {
        http_req_error(w->r, 404, "not_found", "no member '%s'", w->b);
        return -1;
    }
    if (rv != 0) {
        http_req_error(w->r, 500, "internal", "corrupt member record");
        return -1;
    }
    if (m.admin) {
        struct scan s;
        memset(&s, 0, sizeof s);
        s.kv = kv;
        kv_store_list(kv, CTL_B_MEMBERS, "", NULL, 100000, admin_cb, &s,
                      &more);
        if (s.admins <= 1) {
            http_req_error(w->r, 409, "last_admin",
                           "'%s' is the last admin; create another admin "
                           "first",
                           w->b);
            return -1;
        }
    }
    memset(&e, 0, sizeof e);
    if (kv_store_get(kv, CTL_B_NKEYS, m.sign_pub, &e) == KV_OK) {
        if (ctl_txn_compare(t, CTL_B_NKEYS, m.sign_pub, e.revision) != 0 ||
            ctl_txn_delete(t, CTL_B_NKEYS, m.sign_pub) != 0) {
            kv_entry_clear(&e);
            goto too_big;
        }
    }
    kv_entry_clear(&e);
    if (ctl_txn_compare(t, CTL_B_MEMBERS, m.handle, m.revision) != 0 ||
        ctl_txn_delete(t, CTL_B_MEMBERS, m.handle) != 0) {
        goto too_big;
    }
    memset(&rs, 0, sizeof rs);
    rs.kv = kv;
    rs.t = t;
    rs.handle = m.handle;
    kv_store_list(kv, CTL_B_ROOMS, "", NULL, 100000, rooms_cb, &rs, &more);
    if (rs.err) {
        goto too_big;
    }
    return 0;

too_big:
    http_req_error(w->r, 409, "too_large",
                   "the member is in too many rooms or has too many sealed "
                   "keys to delete at once; take it out of some rooms first");
    return -1;
}

static void delete_done(struct rmw *w, const struct meta_result *res)
{
    (void)res;
    http_req_respond_json(w->r, 200,
                          json_pack("{s:s,s:b}", "handle", w->b, "deleted",
                                    1));
}

/* ------------------------------------------------------------------ */

void ctl_members_route(struct ctl *c, struct http_req *r,
                       const struct ctl_caller *who, const char *rest)
{
    const char *method = http_req_method(r);
    if (*rest == '\0') {
        if (!who->admin) {
            http_req_error(r, 403, "forbidden", "only admins manage members");
        } else if (strcmp(method, "GET") == 0) {
            members_list(c, r, who);
        } else if (strcmp(method, "POST") == 0) {
            members_create(c, r, who);
        } else {
            http_req_error(r, 405, "method_not_allowed", "use GET or POST");
        }
        return;
    }
    rest++; /* skip '/' */
    if (!ctl_name_valid(rest)) {
        http_req_error(r, 400, "invalid_handle",
                       "handles match [a-z0-9][a-z0-9_-]{0,63}");
        return;
    }
    if (strcmp(method, "GET") == 0) {
        if (!who->admin && strcmp(who->handle, rest) != 0) {
            http_req_error(r, 403, "forbidden",
                           "members may read only their own record");
            return;
        }
        member_get(c, r, who, rest);
    } else if (strcmp(method, "DELETE") == 0) {
        struct rmw *w;
        if (!who->admin) {
            http_req_error(r, 403, "forbidden", "only admins delete members");
            return;
        }
        w = rmw_new(c, r, who, delete_build, delete_done);
        if (w) {
            snprintf(w->b, sizeof w->b, "%s", rest);
            rmw_start(w);
        }
    } else {
        http_req_error(r, 405, "method_not_allowed", "use GET or DELETE");
    }
}
