/* /v1/rooms: rooms, their members and the sealed room keys.
 *
 * Who may do what: any member creates a room and owns it; the owner or an
 * admin changes its membership or deletes it; members of a room read it and
 * seal the current epoch's key for each other; a member reads only the keys
 * sealed for itself. Taking a member out bumps the epoch and drops the keys
 * sealed for it (ctl_room_drop_member), in the same txn. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth/nkey.h"
#include "internal.h"

#define SEALED_MAX (64 * 1024)

static bool can_manage(const struct ctl_caller *who, const struct ctl_room *rm)
{
    return who->admin || strcmp(who->handle, rm->owner) == 0;
}

static bool can_read(const struct ctl_caller *who, const struct ctl_room *rm)
{
    return can_manage(who, rm) || ctl_room_find_member(rm, who->handle) >= 0;
}

/* Loads w->a as a room or answers 404/500. */
static int load_room(struct rmw *w, struct ctl_room *rm)
{
    int rv = ctl_room_load(meta_kv(w->c->meta), w->a, rm);
    if (rv == 1) {
        http_req_error(w->r, 404, "not_found", "no room '%s'", w->a);
        return -1;
    }
    if (rv != 0) {
        http_req_error(w->r, 500, "internal", "corrupt room record");
        return -1;
    }
    return 0;
}

static int put_room(struct ctl_txn *t, const struct ctl_room *rm)
{
    char *rec = ctl_room_dump(rm);
    int rv = rec == NULL ||
             ctl_txn_compare(t, CTL_B_ROOMS, rm->name, rm->revision) != 0 ||
             ctl_txn_put(t, CTL_B_ROOMS, rm->name, rec, strlen(rec)) != 0;
    free(rec);
    return rv ? -1 : 0;
}

static void respond_room(struct rmw *w, int status)
{
    struct ctl_room rm;
    if (ctl_room_load(meta_kv(w->c->meta), w->a, &rm) == 0) {
        http_req_respond_json(w->r, status, ctl_room_json(&rm));
    } else {
        http_req_respond_json(w->r, status, json_pack("{s:s}", "name", w->a));
    }
}

/* ------------------------------------------------------------------ */
/* create / delete                                                      */

static int create_build(struct rmw *w, struct ctl_txn *t)
{
    struct ctl_room rm;
    struct ctl_member me;
    if (ctl_member_load(meta_kv(w->c->meta), w->who.handle, &me) != 0) {
        http_req_error(w->r, 403, "unknown_member", "you are not a member");
        return -1;
    }
    if (ctl_room_load(meta_kv(w->c->meta), w->a, &rm) != 1) {
        http_req_error(w->r, 409, "exists", "room '%s' exists already", w->a);
        return -1;
    }
    memset(&rm, 0, sizeof rm);
    snprintf(rm.name, sizeof rm.name, "%s", w->a);
    snprintf(rm.owner, sizeof rm.owner, "%s", w->who.handle);
    rm.epoch = 1;
    rm.created = (int64_t)time(NULL);
    rm.n_members = 1;
    snprintf(rm.members[0], sizeof rm.members[0], "%s", w->who.handle);
    /* revision 0 pins "absent"; the creator's record is pinned too, as it
     * becomes the first member. */
    if (put_room(t, &rm) != 0 ||
        ctl_txn_compare(t, CTL_B_MEMBERS, w->who.handle, me.revision) != 0) {
        http_req_error(w->r, 503, "internal", "out of memory");
        return -1;
    }
    return 0;
}

static void create_done(struct rmw *w, const struct meta_result *res)
{
    (void)res;
    respond_room(w, 201);
}

struct drop_scan {
    struct ctl_txn *t;
    int err;
};

static int drop_key_cb(void *arg, const struct kv_entry *e)
{
    struct drop_scan *s = arg;
    if (ctl_txn_compare(s->t, CTL_B_SEALED, e->key, e->revision) != 0 ||
        ctl_txn_delete(s->t, CTL_B_SEALED, e->key) != 0) {
        s->err = 1;
        return 1;
    }
    return 0;
}

static int delete_build(struct rmw *w, struct ctl_txn *t)
{
    struct ctl_room rm;
    struct drop_scan s = { t, 0 };
    char prefix[CTL_NAME_MAX + 2];
    bool more = false;

    if (load_room(w, &rm) != 0) {
        return -1;
    }
    if (!can_manage(&w->who, &rm)) {
        http_req_error(w->r, 403, "forbidden",
                       "only the room's owner or an admin deletes it");
        return -1;
    }
    if (ctl_txn_compare(t, CTL_B_ROOMS, rm.name, rm.revision) != 0 ||
        ctl_txn_delete(t, CTL_B_ROOMS, rm.name) != 0) {
        s.err = 1;
    }
    snprintf(prefix, sizeof prefix, "%s/", rm.name);
    kv_store_list(meta_kv(w->c->meta), CTL_B_SEALED, prefix, NULL, 60,
                  drop_key_cb, &s, &more);
    if (s.err || more) {
        http_req_error(w->r, 409, "too_large",
                       "the room has too many sealed keys to delete at once; "
                       "take members out first");
        return -1;
    }
    return 0;
}

static void deleted_done(struct rmw *w, const struct meta_result *res)
{
    (void)res;
    http_req_respond_json(w->r, 200,
                          json_pack("{s:s,s:b}", "name", w->a, "deleted", 1));
}

/* ------------------------------------------------------------------ */
/* membership                                                           */

static int add_member_build(struct rmw *w, struct ctl_txn *t)
{
    struct ctl_room rm;
    struct ctl_member m;
    int rv;

    if (load_room(w, &rm) != 0) {
        return -1;
    }
    if (!can_manage(&w->who, &rm)) {
        http_req_error(w->r, 403, "forbidden",
                       "only the room's owner or an admin adds members");
        return -1;
    }
    rv = ctl_member_load(meta_kv(w->c->meta), w->b, &m);
    if (rv != 0) {
        http_req_error(w->r, 404, "unknown_member", "no member '%s'", w->b);
        return -1;
    }
    if (ctl_room_find_member(&rm, w->b) >= 0) {
        respond_room(w, 200); /* already in: nothing to write */
        return -1;
    }
    if (rm.n_members == CTL_MAX_ROOM_MEMBERS) {
        http_req_error(w->r, 409, "room_full", "a room holds at most %d "
                                               "members",
                       CTL_MAX_ROOM_MEMBERS);
        return -1;
    }
    snprintf(rm.members[rm.n_members++], sizeof rm.members[0], "%s", w->b);
    /* Pin the member record: a concurrent delete of the member wins or
     * loses as a whole. */
    if (put_room(t, &rm) != 0 ||
        ctl_txn_compare(t, CTL_B_MEMBERS, w->b, m.revision) != 0) {
        http_req_error(w->r, 503, "internal", "out of memory");
        return -1;
    }
    return 0;
}

static void member_done(struct rmw *w, const struct meta_result *res)
{
    (void)res;
    respond_room(w, 200);
}

static int remove_member_build(struct rmw *w, struct ctl_txn *t)
{
    struct ctl_room rm;
    if (load_room(w, &rm) != 0) {
        return -1;
    }
    /* Members may leave on their own. */
    if (!can_manage(&w->who, &rm) && strcmp(w->who.handle, w->b) != 0) {
        http_req_error(w->r, 403, "forbidden",
                       "only the room's owner or an admin removes members");
        return -1;
    }
    if (ctl_room_find_member(&rm, w->b) < 0) {
        http_req_error(w->r, 404, "not_a_member", "'%s' is not in room '%s'",
                       w->b, w->a);
        return -1;
    }
    if (ctl_room_drop_member(meta_kv(w->c->meta), t, &rm, w->b) != 0) {
        http_req_error(w->r, 409, "too_large",
                       "too many sealed keys to drop at once");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* sealed keys                                                          */

static int put_key_build(struct rmw *w, struct ctl_txn *t)
{
    struct ctl_room rm;
    struct ctl_member m;
    char key[3 * (CTL_NAME_MAX + 1) + 24];

    if (load_room(w, &rm) != 0) {
        return -1;
    }
    if (!can_read(&w->who, &rm)) {
        http_req_error(w->r, 403, "forbidden",
                       "only members of the room seal keys for it");
        return -1;
    }
    if (w->n != rm.epoch) {
        http_req_error(w->r, 409, "stale_epoch",
                       "the room is at epoch %" PRIu64 "; seal that epoch's "
                       "key",
                       rm.epoch);
        return -1;
    }
    if (ctl_room_find_member(&rm, w->b) < 0 ||
        ctl_member_load(meta_kv(w->c->meta), w->b, &m) != 0) {
        http_req_error(w->r, 409, "not_a_member",
                       "keys are sealed only for current members of the room");
        return -1;
    }
    snprintf(key, sizeof key, "%s/%" PRIu64 "/%s", rm.name, rm.epoch, w->b);
    if (ctl_txn_compare(t, CTL_B_ROOMS, rm.name, rm.revision) != 0 ||
        ctl_txn_compare(t, CTL_B_MEMBERS, w->b, m.revision) != 0 ||
        ctl_txn_put(t, CTL_B_SEALED, key, w->data, w->len) != 0) {
        http_req_error(w->r, 503, "internal", "out of memory");
        return -1;
    }
    return 0;
}

static void put_key_done(struct rmw *w, const struct meta_result *res)
{
    http_req_respond_json(w->r, 200,
                          json_pack("{s:s,s:I,s:s,s:I}", "room", w->a, "epoch",
                                    (json_int_t)w->n, "handle", w->b,
                                    "revision", (json_int_t)res->kv.revision));
}

static void get_key_read(void *arg, const struct meta_result *res)
{
    struct rmw *w = arg;
    struct ctl_room rm;
    struct kv_entry e;
    char key[3 * (CTL_NAME_MAX + 1) + 24];
    char *b64;

    if (res->err != META_OK) {
        ctl_meta_error(w->r, res);
        free(w);
        return;
    }
    if (load_room(w, &rm) != 0) {
        free(w);
        return;
    }
    if (ctl_room_find_member(&rm, w->b) < 0) {
        http_req_error(w->r, 403, "forbidden", "you are not in room '%s'",
                       w->a);
        free(w);
        return;
    }
    snprintf(key, sizeof key, "%s/%" PRIu64 "/%s", w->a, w->n, w->b);
    memset(&e, 0, sizeof e);
    if (kv_store_get(meta_kv(w->c->meta), CTL_B_SEALED, key, &e) != KV_OK) {
        http_req_error(w->r, 404, "not_found",
                       "no key sealed for you at epoch %" PRIu64, w->n);
        free(w);
        return;
    }
    b64 = malloc(4 * ((e.value_len + 2) / 3) + 1);
    if (b64 == NULL ||
        nkey_b64std_encode(e.value, e.value_len, b64,
                           4 * ((e.value_len + 2) / 3) + 1) < 0) {
        http_req_error(w->r, 500, "internal", "out of memory");
    } else {
        http_req_respond_json(
            w->r, 200,
            json_pack("{s:s,s:I,s:s,s:s,s:I}", "room", w->a, "epoch",
                      (json_int_t)w->n, "handle", w->b, "ciphertext", b64,
                      "current_epoch", (json_int_t)rm.epoch));
    }
    free(b64);
    kv_entry_clear(&e);
    free(w);
}

static void keys_route(struct ctl *c, struct http_req *r,
                       const struct ctl_caller *who, const char *room,
                       const char *rest)
{
    const char *method = http_req_method(r);
    char epoch_s[24];
    const char *slash = strchr(rest, '/');
    char *end;
    unsigned long long epoch;
    struct rmw *w;

    if (slash == NULL || (size_t)(slash - rest) >= sizeof epoch_s ||
        slash == rest) {
        http_req_error(r, 404, "not_found",
                       "use /v1/rooms/ROOM/keys/EPOCH/HANDLE");
        return;
    }
    memcpy(epoch_s, rest, (size_t)(slash - rest));
    epoch_s[slash - rest] = '\0';
    epoch = strtoull(epoch_s, &end, 10);
    if (*end != '\0' || epoch_s[0] == '-' || epoch == 0) {
        http_req_error(r, 400, "invalid_epoch", "epochs are integers >= 1");
        return;
    }
    if (!ctl_name_valid(slash + 1)) {
        http_req_error(r, 400, "invalid_handle",
                       "handles match [a-z0-9][a-z0-9_-]{0,63}");
        return;
    }
    if (strcmp(method, "GET") == 0) {
        if (strcmp(who->handle, slash + 1) != 0) {
            http_req_error(r, 403, "forbidden",
                           "a member reads only the keys sealed for itself");
            return;
        }
        w = rmw_new(c, r, who, NULL, NULL);
        if (w == NULL) {
            return;
        }
        snprintf(w->a, sizeof w->a, "%s", room);
        snprintf(w->b, sizeof w->b, "%s", slash + 1);
        w->n = epoch;
        if (ctl_read(c, who, get_key_read, w) != 0) {
            http_req_error(r, 503, "no_leader", "no leader is reachable");
            free(w);
        }
        return;
    }
    if (strcmp(method, "PUT") == 0) {
        json_t *j = ctl_body_json(r);
        const char *ct = NULL;
        uint8_t *raw;
        size_t rawlen = 0;
        if (j == NULL) {
            return;
        }
        if (json_unpack(j, "{s:s!}", "ciphertext", &ct) != 0 ||
            strlen(ct) > 4 * (SEALED_MAX / 3) + 4) {
            json_decref(j);
            http_req_error(r, 400, "bad_request",
                           "expected {\"ciphertext\": base64} of at most %d "
                           "bytes",
                           SEALED_MAX);
            return;
        }
        raw = malloc(strlen(ct) + 1);
        if (raw == NULL ||
            nkey_b64std_decode(ct, strlen(ct), raw, strlen(ct) + 1, &rawlen) !=
                0 ||
            rawlen == 0) {
            free(raw);
            json_decref(j);
            http_req_error(r, 400, "invalid_base64",
                           "ciphertext must be non-empty standard base64");
            return;
        }
        json_decref(j);
        w = rmw_new(c, r, who, put_key_build, put_key_done);
        if (w == NULL) {
            free(raw);
            return;
        }
        snprintf(w->a, sizeof w->a, "%s", room);
        snprintf(w->b, sizeof w->b, "%s", slash + 1);
        w->n = epoch;
        w->data = raw;
        w->len = rawlen;
        rmw_start(w);
        return;
    }
    http_req_error(r, 405, "method_not_allowed", "use GET or PUT");
}

/* ------------------------------------------------------------------ */
/* reads                                                                */

static void get_room_read(void *arg, const struct meta_result *res)
{
    struct rmw *w = arg;
    struct ctl_room rm;
    if (res->err != META_OK) {
        ctl_meta_error(w->r, res);
    } else if (load_room(w, &rm) == 0) {
        if (can_read(&w->who, &rm)) {
            http_req_respond_json(w->r, 200, ctl_room_json(&rm));
        } else {
            http_req_error(w->r, 403, "forbidden", "you are not in room '%s'",
                           w->a);
        }
    }
    free(w);
}

struct list_ctx {
    struct kv_store *kv;
    const struct ctl_caller *who;
    json_t *arr;
    char last[CTL_NAME_MAX + 1];
};

static int list_cb(void *arg, const struct kv_entry *e)
{
    struct list_ctx *l = arg;
    struct ctl_room rm;
    snprintf(l->last, sizeof l->last, "%s", e->key);
    if (ctl_room_load(l->kv, e->key, &rm) == 0 && can_read(l->who, &rm)) {
        json_array_append_new(l->arr, ctl_room_json(&rm));
    }
    return 0;
}

static void list_read(void *arg, const struct meta_result *res)
{
    struct rmw *w = arg;
    struct list_ctx l;
    bool more = false;
    json_t *o;

    if (res->err != META_OK) {
        ctl_meta_error(w->r, res);
        free(w);
        return;
    }
    l.kv = meta_kv(w->c->meta);
    l.who = &w->who;
    l.arr = json_array();
    l.last[0] = '\0';
    kv_store_list(l.kv, CTL_B_ROOMS, "", w->a[0] ? w->a : NULL, w->len,
                  list_cb, &l, &more);
    o = json_pack("{s:o,s:b}", "rooms", l.arr, "more", more);
    if (more) {
        json_object_set_new(o, "next_after", json_string(l.last));
    }
    http_req_respond_json(w->r, 200, o);
    free(w);
}

/* ------------------------------------------------------------------ */

void ctl_rooms_route(struct ctl *c, struct http_req *r,
                     const struct ctl_caller *who, const char *rest)
{
    const char *method = http_req_method(r);
    char room[CTL_NAME_MAX + 1];
    const char *slash;
    size_t n;
    struct rmw *w;

    if (*rest == '\0') {
        if (strcmp(method, "GET") == 0) {
            const char *after;
            size_t limit;
            if (ctl_page(r, &limit, &after) != 0) {
                return;
            }
            w = rmw_new(c, r, who, NULL, NULL);
            if (w == NULL) {
                return;
            }
            snprintf(w->a, sizeof w->a, "%s", after ? after : "");
            w->len = limit;
            if (ctl_read(c, who, list_read, w) != 0) {
                http_req_error(r, 503, "no_leader", "no leader is reachable");
                free(w);
            }
        } else if (strcmp(method, "POST") == 0) {
            json_t *j = ctl_body_json(r);
            const char *name = NULL;
            if (j == NULL) {
                return;
            }
            if (json_unpack(j, "{s:s!}", "name", &name) != 0 ||
                !ctl_name_valid(name)) {
                json_decref(j);
                http_req_error(r, 400, "invalid_room",
                               "expected {\"name\": ...}; room names match "
                               "[a-z0-9][a-z0-9_-]{0,63}");
                return;
            }
            w = rmw_new(c, r, who, create_build, create_done);
            if (w == NULL) {
                json_decref(j);
                return;
            }
            snprintf(w->a, sizeof w->a, "%s", name);
            json_decref(j);
            rmw_start(w);
        } else {
            http_req_error(r, 405, "method_not_allowed", "use GET or POST");
        }
        return;
    }
    rest++;
    slash = strchr(rest, '/');
    n = slash ? (size_t)(slash - rest) : strlen(rest);
    if (n > CTL_NAME_MAX) {
        http_req_error(r, 400, "invalid_room",
                       "room names match [a-z0-9][a-z0-9_-]{0,63}");
        return;
    }
    memcpy(room, rest, n);
    room[n] = '\0';
    if (!ctl_name_valid(room)) {
        http_req_error(r, 400, "invalid_room",
                       "room names match [a-z0-9][a-z0-9_-]{0,63}");
        return;
    }
    if (slash == NULL) {
        if (strcmp(method, "GET") == 0) {
            w = rmw_new(c, r, who, NULL, NULL);
            if (w == NULL) {
                return;
            }
            snprintf(w->a, sizeof w->a, "%s", room);
            if (ctl_read(c, who, get_room_read, w) != 0) {
                http_req_error(r, 503, "no_leader", "no leader is reachable");
                free(w);
            }
        } else if (strcmp(method, "DELETE") == 0) {
            w = rmw_new(c, r, who, delete_build, deleted_done);
            if (w) {
                snprintf(w->a, sizeof w->a, "%s", room);
                rmw_start(w);
            }
        } else {
            http_req_error(r, 405, "method_not_allowed", "use GET or DELETE");
        }
        return;
    }
    rest = slash + 1;
    if (strncmp(rest, "members/", 8) == 0) {
        const char *h = rest + 8;
        bool put = strcmp(method, "PUT") == 0;
        if (!ctl_name_valid(h)) {
            http_req_error(r, 400, "invalid_handle",
                           "handles match [a-z0-9][a-z0-9_-]{0,63}");
            return;
        }
        if (!put && strcmp(method, "DELETE") != 0) {
            http_req_error(r, 405, "method_not_allowed", "use PUT or DELETE");
            return;
        }
        w = rmw_new(c, r, who, put ? add_member_build : remove_member_build,
                    member_done);
        if (w) {
            snprintf(w->a, sizeof w->a, "%s", room);
            snprintf(w->b, sizeof w->b, "%s", h);
            rmw_start(w);
        }
        return;
    }
    if (strncmp(rest, "keys/", 5) == 0) {
        keys_route(c, r, who, room, rest + 5);
        return;
    }
    if (strcmp(rest, "blobs") == 0) {
        if (strcmp(method, "POST") != 0) {
            http_req_error(r, 405, "method_not_allowed", "use POST");
            return;
        }
        ctl_blob_upload(c, r, who, room);
        return;
    }
    http_req_error(r, 404, "not_found", "no such room endpoint");
}
