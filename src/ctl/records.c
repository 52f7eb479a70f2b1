#include "records.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool ctl_name_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > CTL_NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '_' && c != '-'))) {
            return false;
        }
    }
    return true;
}

static json_t *load_json(struct kv_store *kv, const char *bucket,
                         const char *key, uint64_t *rev, int *rc)
{
    struct kv_entry e;
    json_t *j = NULL;
    memset(&e, 0, sizeof e);
    switch (kv_store_get(kv, bucket, key, &e)) {
    case KV_OK:
        j = json_loadb(e.value, e.value_len, 0, NULL);
        *rev = e.revision;
        *rc = j && json_is_object(j) ? 0 : -1;
        break;
    case KV_NOT_FOUND:
        *rc = 1;
        break;
    default:
        *rc = -1;
        break;
    }
    kv_entry_clear(&e);
    if (*rc != 0) {
        json_decref(j);
        return NULL;
    }
    return j;
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

int ctl_member_load(struct kv_store *kv, const char *handle,
                    struct ctl_member *out)
{
    int rc;
    const char *role = NULL, *sp = NULL;
    json_t *bp = NULL;
    json_int_t created = 0;
    json_t *j;

    memset(out, 0, sizeof *out);
    if (!ctl_name_valid(handle)) {
        return 1;
    }
    j = load_json(kv, CTL_B_MEMBERS, handle, &out->revision, &rc);
    if (j == NULL) {
        return rc;
    }
    /* box_pub is null for a bootstrap admin. */
    if (json_unpack(j, "{s:s,s:s,s?o,s:I}", "role", &role, "sign_pub", &sp,
                    "box_pub", &bp, "created", &created) != 0 ||
        (bp && !json_is_string(bp) && !json_is_null(bp))) {
        json_decref(j);
        return -1;
    }
    copy_str(out->handle, sizeof out->handle, handle);
    out->admin = strcmp(role, "admin") == 0;
    copy_str(out->sign_pub, sizeof out->sign_pub, sp);
    copy_str(out->box_pub, sizeof out->box_pub,
             json_is_string(bp) ? json_string_value(bp) : "");
    out->created = created;
    json_decref(j);
    return 0;
}

int ctl_room_load(struct kv_store *kv, const char *name, struct ctl_room *out)
{
    int rc;
    const char *owner = NULL;
    json_int_t epoch = 0, created = 0;
    json_t *j, *members, *m;
    size_t i;

    memset(out, 0, sizeof *out);
    if (!ctl_name_valid(name)) {
        return 1;
    }
    j = load_json(kv, CTL_B_ROOMS, name, &out->revision, &rc);
    if (j == NULL) {
        return rc;
    }
    if (json_unpack(j, "{s:s,s:I,s:I,s:o}", "owner", &owner, "epoch", &epoch,
                    "created", &created, "members", &members) != 0 ||
        !json_is_array(members) ||
        json_array_size(members) > CTL_MAX_ROOM_MEMBERS) {
        json_decref(j);
        return -1;
    }
    copy_str(out->name, sizeof out->name, name);
    copy_str(out->owner, sizeof out->owner, owner);
    out->epoch = (uint64_t)epoch;
    out->created = created;
    json_array_foreach(members, i, m)
    {
        if (!json_is_string(m)) {
            json_decref(j);
            return -1;
        }
        copy_str(out->members[out->n_members++], CTL_NAME_MAX + 1,
                 json_string_value(m));
    }
    json_decref(j);
    return 0;
}

json_t *ctl_member_json(const struct ctl_member *m)
{
    json_t *o = json_pack("{s:s,s:s,s:s,s:I}", "handle", m->handle, "role",
                          m->admin ? "admin" : "member", "sign_pub",
                          m->sign_pub, "created", (json_int_t)m->created);
    json_object_set_new(o, "box_pub",
                        m->box_pub[0] ? json_string(m->box_pub) : json_null());
    return o;
}

json_t *ctl_room_json(const struct ctl_room *r)
{
    json_t *members = json_array();
    for (unsigned i = 0; i < r->n_members; i++) {
        json_array_append_new(members, json_string(r->members[i]));
    }
    return json_pack("{s:s,s:s,s:I,s:I,s:o}", "name", r->name, "owner",
                     r->owner, "epoch", (json_int_t)r->epoch, "created",
                     (json_int_t)r->created, "members", members);
}

static char *dump(json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(j);
    return s;
}

char *ctl_member_dump(const struct ctl_member *m)
{
    return dump(ctl_member_json(m));
}

char *ctl_room_dump(const struct ctl_room *r)
{
    return dump(ctl_room_json(r));
}

int ctl_room_find_member(const struct ctl_room *r, const char *handle)
{
    for (unsigned i = 0; i < r->n_members; i++) {
        if (strcmp(r->members[i], handle) == 0) {
            return (int)i;
        }
    }
    return -1;
}

/* ------------------------------------------------------------------ */

#define TXN_MAX 128

struct ctl_txn {
    struct kv_compare cmp[TXN_MAX];
    size_t n_cmp;
    struct kv_op ops[TXN_MAX];
    size_t n_ops;
    void *owned[3 * TXN_MAX * 2];
    size_t n_owned;
};

struct ctl_txn *ctl_txn_new(void)
{
    return calloc(1, sizeof(struct ctl_txn));
}

void ctl_txn_free(struct ctl_txn *t)
{
    if (t == NULL) {
        return;
    }
    for (size_t i = 0; i < t->n_owned; i++) {
        free(t->owned[i]);
    }
    free(t);
}

static const char *own(struct ctl_txn *t, const void *p, size_t len)
{
    char *c;
    if (t->n_owned == sizeof t->owned / sizeof t->owned[0]) {
        return NULL;
    }
    c = malloc(len + 1);
    if (c == NULL) {
        return NULL;
    }
    if (len) {
        memcpy(c, p, len);
    }
    c[len] = '\0';
    t->owned[t->n_owned++] = c;
    return c;
}

int ctl_txn_compare(struct ctl_txn *t, const char *bucket, const char *key,
                    uint64_t revision)
{
    struct kv_compare *c;
    if (t->n_cmp == TXN_MAX) {
        return -1;
    }
    c = &t->cmp[t->n_cmp];
    c->bucket = own(t, bucket, strlen(bucket));
    c->key = own(t, key, strlen(key));
    c->revision = revision;
    if (c->bucket == NULL || c->key == NULL) {
        return -1;
    }
    t->n_cmp++;
    return 0;
}

static int add_op(struct ctl_txn *t, enum kv_op_type type, const char *bucket,
                  const char *key, const void *value, size_t len)
{
    struct kv_op *o;
    if (t->n_ops == TXN_MAX) {
        return -1;
    }
    o = &t->ops[t->n_ops];
    memset(o, 0, sizeof *o);
    o->type = type;
    o->bucket = own(t, bucket, strlen(bucket));
    o->key = own(t, key, strlen(key));
    if (type == KV_OP_PUT) {
        o->value = own(t, value, len);
        o->value_len = len;
        if (o->value == NULL) {
            return -1;
        }
    }
    if (o->bucket == NULL || o->key == NULL) {
        return -1;
    }
    t->n_ops++;
    return 0;
}

int ctl_txn_put(struct ctl_txn *t, const char *bucket, const char *key,
                const void *value, size_t len)
{
    return add_op(t, KV_OP_PUT, bucket, key, value, len);
}

int ctl_txn_delete(struct ctl_txn *t, const char *bucket, const char *key)
{
    /* Delete in a txn must not fail on an absent key (that would abort the
     * whole txn): callers only delete keys they saw, pinned by a compare. */
    return add_op(t, KV_OP_DELETE, bucket, key, NULL, 0);
}

size_t ctl_txn_ops(const struct ctl_txn *t)
{
    return t->n_ops;
}

void ctl_txn_fill(struct ctl_txn *t, struct kv_cmd *cmd)
{
    memset(cmd, 0, sizeof *cmd);
    cmd->kind = KV_CMD_TXN;
    cmd->txn.compares = t->cmp;
    cmd->txn.n_compares = t->n_cmp;
    cmd->txn.success = t->ops;
    cmd->txn.n_success = t->n_ops;
}
