/* The member directory of the bus (directory.h). Members and keys are read
 * straight from the KV replica (an in-memory sqlite lookup per connect);
 * room membership is indexed in memory because the ACL needs a member's
 * rooms, which the KV only stores the other way round (room -> members). */
#include "bus/directory.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bus/sublist.h"
#include "ctl/records.h"
#include "kv/kv.h"
#include "lib/log.h"

struct droom {
    struct droom *next; /* hash chain */
    char *name;
    char **members;
    size_t n;
};

struct bdir {
    struct kv_store *kv;
    bdir_change_cb cb;
    void *arg;
    uint64_t watch_rooms, watch_members;
    struct droom **tab;
    size_t cap; /* power of two */
    size_t n;
};

static void room_free(struct droom *r)
{
    if (r == NULL) {
        return;
    }
    bdir_rooms_free(r->members, r->n);
    free(r->name);
    free(r);
}

static struct droom **room_slot(struct bdir *d, const char *name)
{
    struct droom **p = &d->tab[sl_hash(name, strlen(name)) & (d->cap - 1)];
    while (*p && strcmp((*p)->name, name) != 0) {
        p = &(*p)->next;
    }
    return p;
}

static int grow(struct bdir *d)
{
    size_t ncap = d->cap * 2;
    struct droom **nt = calloc(ncap, sizeof *nt);
    if (nt == NULL) {
        return -1;
    }
    for (size_t i = 0; i < d->cap; i++) {
        struct droom *r = d->tab[i];
        while (r) {
            struct droom *next = r->next;
            size_t k = sl_hash(r->name, strlen(r->name)) & (ncap - 1);
            r->next = nt[k];
            nt[k] = r;
            r = next;
        }
    }
    free(d->tab);
    d->tab = nt;
    d->cap = ncap;
    return 0;
}

/* Parses the member list of a room record; NULL list for none. */
static int parse_members(const void *value, size_t len, char ***out, size_t *n)
{
    json_error_t jerr;
    json_t *j = json_loadb(value, len, 0, &jerr);
    json_t *arr = j ? json_object_get(j, "members") : NULL;
    size_t i, k = 0;
    *out = NULL;
    *n = 0;
    if (!json_is_array(arr)) {
        json_decref(j);
        return -1;
    }
    if (json_array_size(arr) > 0) {
        *out = calloc(json_array_size(arr), sizeof **out);
        if (*out == NULL) {
            json_decref(j);
            return -1;
        }
    }
    for (i = 0; i < json_array_size(arr); i++) {
        const char *h = json_string_value(json_array_get(arr, i));
        if (h != NULL && ((*out)[k] = strdup(h)) != NULL) {
            k++;
        }
    }
    *n = k;
    json_decref(j);
    return 0;
}

/* Replaces (or with value NULL removes) room name; reports every handle
 * that left or joined. */
static void room_set(struct bdir *d, const char *name, const void *value,
                     size_t len, bool notify)
{
    struct droom **slot = room_slot(d, name);
    struct droom *old = *slot, *nr = NULL;
    char **members = NULL;
    size_t n = 0, i, j;

    if (value != NULL && parse_members(value, len, &members, &n) == 0) {
        nr = calloc(1, sizeof *nr);
        if (nr == NULL || (nr->name = strdup(name)) == NULL) {
            free(nr);
            bdir_rooms_free(members, n);
            nr = NULL;
            ub_error("bus", "out of memory indexing room %s", name);
        } else {
            nr->members = members;
            nr->n = n;
        }
    } else if (value != NULL) {
        ub_warn("bus", "room record %s is not valid JSON; treated as empty",
                name);
    }
    if (old) {
        *slot = old->next;
        d->n--;
    }
    if (nr) {
        if (d->n + 1 > d->cap && grow(d) == 0) {
            slot = room_slot(d, name);
        }
        nr->next = *slot;
        *slot = nr;
        d->n++;
    }
    if (notify && d->cb) {
        /* Members that left, then members that joined. */
        for (i = 0; old && i < old->n; i++) {
            bool still = false;
            for (j = 0; nr && j < nr->n && !still; j++) {
                still = strcmp(old->members[i], nr->members[j]) == 0;
            }
            if (!still) {
                d->cb(d->arg, old->members[i]);
            }
        }
        for (j = 0; nr && j < nr->n; j++) {
            bool was = false;
            for (i = 0; old && i < old->n && !was; i++) {
                was = strcmp(old->members[i], nr->members[j]) == 0;
            }
            if (!was) {
                d->cb(d->arg, nr->members[j]);
            }
        }
    }
    room_free(old);
}

static void clear_rooms(struct bdir *d)
{
    for (size_t i = 0; i < d->cap; i++) {
        while (d->tab[i]) {
            struct droom *r = d->tab[i];
            d->tab[i] = r->next;
            room_free(r);
        }
    }
    d->n = 0;
}

struct load_ctx {
    struct bdir *d;
    char last[KV_MAX_KEY + 1];
};

static int load_one(void *arg, const struct kv_entry *e)
{
    struct load_ctx *l = arg;
    room_set(l->d, e->key, e->value, e->value_len, false);
    snprintf(l->last, sizeof l->last, "%s", e->key);
    return 0;
}

/* Indexes every room, a page at a time. */
static int load_all(struct bdir *d)
{
    struct load_ctx l = {.d = d};
    bool more = true;
    while (more) {
        if (kv_store_list(d->kv, CTL_B_ROOMS, NULL, l.last[0] ? l.last : NULL,
                          1000, load_one, &l, &more) != KV_OK) {
            return -1;
        }
    }
    return 0;
}

static void on_rooms(void *arg, const struct kv_entry *e, bool deleted)
{
    struct bdir *d = arg;
    if (e == NULL) { /* snapshot restore: everything may have changed */
        clear_rooms(d);
        if (load_all(d) != 0) {
            ub_error("bus", "cannot reload rooms after a snapshot: %s",
                     kv_store_errmsg(d->kv));
        }
        if (d->cb) {
            d->cb(d->arg, NULL);
        }
        return;
    }
    room_set(d, e->key, deleted ? NULL : e->value, e->value_len, true);
}

static void on_members(void *arg, const struct kv_entry *e, bool deleted)
{
    struct bdir *d = arg;
    (void)deleted;
    if (e != NULL && d->cb) { /* the reset is handled by the rooms watch */
        d->cb(d->arg, e->key);
    }
}

struct bdir *bdir_new(struct kv_store *kv, bdir_change_cb cb, void *arg)
{
    struct bdir *d = calloc(1, sizeof *d);
    if (d == NULL) {
        return NULL;
    }
    d->kv = kv;
    d->cap = 64;
    d->tab = calloc(d->cap, sizeof *d->tab);
    if (d->tab == NULL || load_all(d) != 0 ||
        kv_store_watch(kv, CTL_B_ROOMS, NULL, on_rooms, d, &d->watch_rooms) !=
            KV_OK ||
        kv_store_watch(kv, CTL_B_MEMBERS, NULL, on_members, d,
                       &d->watch_members) != KV_OK) {
        bdir_free(d);
        return NULL;
    }
    d->cb = cb;
    d->arg = arg;
    return d;
}

void bdir_free(struct bdir *d)
{
    if (d == NULL) {
        return;
    }
    if (d->watch_rooms) {
        kv_store_unwatch(d->kv, d->watch_rooms);
    }
    if (d->watch_members) {
        kv_store_unwatch(d->kv, d->watch_members);
    }
    if (d->tab) {
        clear_rooms(d);
    }
    free(d->tab);
    free(d);
}

int bdir_check_member(struct bdir *d, const char *handle, const char *upub,
                      bool *admin)
{
    struct ctl_member m;
    if (ctl_member_load(d->kv, handle, &m) != 0 ||
        strcmp(m.sign_pub, upub) != 0) {
        return -1;
    }
    *admin = m.admin;
    return 0;
}

int bdir_lookup_key(struct bdir *d, const char *upub, char *handle, size_t cap,
                    bool *admin)
{
    struct kv_entry e;
    int rv = -1;
    if (!kv_valid_key(upub, strlen(upub)) ||
        kv_store_get(d->kv, CTL_B_NKEYS, upub, &e) != KV_OK) {
        return -1;
    }
    if (e.value_len > 0 && e.value_len < cap) {
        memcpy(handle, e.value, e.value_len);
        handle[e.value_len] = '\0';
        rv = bdir_check_member(d, handle, upub, admin);
    }
    kv_entry_clear(&e);
    return rv;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int bdir_rooms_of(struct bdir *d, const char *handle, char ***rooms, size_t *n)
{
    size_t cap = 0;
    *rooms = NULL;
    *n = 0;
    for (size_t i = 0; i < d->cap; i++) {
        for (struct droom *r = d->tab[i]; r; r = r->next) {
            for (size_t j = 0; j < r->n; j++) {
                if (strcmp(r->members[j], handle) != 0) {
                    continue;
                }
                if (*n == cap) {
                    size_t nc = cap ? cap * 2 : 8;
                    char **nr = realloc(*rooms, nc * sizeof *nr);
                    if (nr == NULL) {
                        goto oom;
                    }
                    *rooms = nr;
                    cap = nc;
                }
                if (((*rooms)[*n] = strdup(r->name)) == NULL) {
                    goto oom;
                }
                (*n)++;
                break;
            }
        }
    }
    if (*n > 1) {
        qsort(*rooms, *n, sizeof **rooms, cmp_str);
    }
    return 0;
oom:
    bdir_rooms_free(*rooms, *n);
    *rooms = NULL;
    *n = 0;
    return -1;
}

void bdir_rooms_free(char **rooms, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(rooms[i]);
    }
    free(rooms);
}
