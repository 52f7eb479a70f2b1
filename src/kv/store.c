/* The KV store: an in-memory sqlite database (memdb VFS) changed only by
 * kv_store_apply(), one sqlite transaction per raft entry.
 *
 * Apply, happy path: decode and validate the entry; BEGIN; look the request
 * id up (a duplicate gets its stored result and nothing else changes but the
 * applied index); run the body inside SAVEPOINT body; record the result
 * under the request id; prune request ids older than the entry's stamp minus
 * KV_REQUEST_TTL_MS; store the applied index; COMMIT; then fire watches.
 * Failure modes: an undecodable or invalid entry changes nothing (KV_INVALID);
 * a business failure (exists, mismatch, failed txn op) rolls the savepoint
 * back but still records the result; a sqlite or memory fault rolls the whole
 * transaction back and returns -1.
 *
 * Byte determinism: every connection uses the memdb VFS (so a restored image
 * and a store that replayed the log age the same way) with secure_delete on
 * (so free space inside pages is zeroed rather than left with whatever the
 * page cache held), and tables are WITHOUT ROWID, keyed by the data only. */
#include <inttypes.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "kv/internal.h"
#include "kv/kv.h"
#include "lib/log.h"

#define KV_APPLICATION_ID 0x55424b56 /* "UBKV" */
#define KV_SCHEMA_VERSION 1

static const char schema_sql[] =
    "PRAGMA application_id = 1430408022;" /* KV_APPLICATION_ID */
    "PRAGMA user_version = 1;"            /* KV_SCHEMA_VERSION */
    "CREATE TABLE kv ("
    "  bucket TEXT NOT NULL,"
    "  key TEXT NOT NULL,"
    "  value BLOB NOT NULL,"
    "  revision INTEGER NOT NULL,"
    "  create_revision INTEGER NOT NULL,"
    "  expires_at INTEGER NOT NULL,"
    "  PRIMARY KEY (bucket, key)"
    ") WITHOUT ROWID;"
    "CREATE INDEX kv_expiry ON kv (expires_at, bucket, key)"
    "  WHERE expires_at > 0;"
    "CREATE TABLE requests ("
    "  request_id BLOB NOT NULL PRIMARY KEY,"
    "  stamp INTEGER NOT NULL,"
    "  code INTEGER NOT NULL,"
    "  revision INTEGER NOT NULL,"
    "  txn_succeeded INTEGER NOT NULL,"
    "  purged INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE INDEX requests_stamp ON requests (stamp);"
    "CREATE TABLE meta ("
    "  name TEXT NOT NULL PRIMARY KEY,"
    "  value INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "INSERT INTO meta (name, value) VALUES ('applied_index', 0);";

/* Per-connection settings; none of them is stored in the image. */
static const char conn_sql[] =
    "PRAGMA journal_mode = MEMORY;"
    "PRAGMA secure_delete = ON;"
    "PRAGMA cell_size_check = ON;"
    "PRAGMA foreign_keys = OFF;"
    "PRAGMA recursive_triggers = OFF;";

enum {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_SAVEPOINT,
    ST_RELEASE,
    ST_ROLLBACK_TO,
    ST_ROW,
    ST_GET,
    ST_UPSERT,
    ST_DELETE,
    ST_PURGE_SCAN,
    ST_REQ_GET,
    ST_REQ_PUT,
    ST_REQ_PRUNE,
    ST_META_GET,
    ST_META_SET,
    ST_STATS,
    ST_NR
};

static const char *const stmt_sql[ST_NR] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_SAVEPOINT] = "SAVEPOINT body",
    [ST_RELEASE] = "RELEASE body",
    [ST_ROLLBACK_TO] = "ROLLBACK TO body",
    [ST_ROW] = "SELECT revision, create_revision, expires_at FROM kv"
               " WHERE bucket = ?1 AND key = ?2",
    [ST_GET] = "SELECT value, revision, create_revision, expires_at FROM kv"
               " WHERE bucket = ?1 AND key = ?2",
    [ST_UPSERT] =
        "INSERT INTO kv (bucket, key, value, revision, create_revision,"
        " expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
        " ON CONFLICT (bucket, key) DO UPDATE SET value = excluded.value,"
        " revision = excluded.revision,"
        " create_revision = excluded.create_revision,"
        " expires_at = excluded.expires_at",
    [ST_DELETE] = "DELETE FROM kv WHERE bucket = ?1 AND key = ?2",
    [ST_PURGE_SCAN] =
        "SELECT bucket, key, create_revision, expires_at FROM kv"
        " WHERE expires_at > 0 AND expires_at <= ?1"
        " ORDER BY expires_at, bucket, key LIMIT ?2",
    [ST_REQ_GET] = "SELECT code, revision, txn_succeeded, purged"
                   " FROM requests WHERE request_id = ?1",
    [ST_REQ_PUT] = "INSERT INTO requests (request_id, stamp, code, revision,"
                   " txn_succeeded, purged) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [ST_REQ_PRUNE] = "DELETE FROM requests WHERE stamp < ?1",
    [ST_META_GET] = "SELECT value FROM meta WHERE name = 'applied_index'",
    [ST_META_SET] = "UPDATE meta SET value = ?1 WHERE name = 'applied_index'",
    [ST_STATS] = "SELECT count(*), coalesce(sum(length(value)), 0) FROM kv",
};

/* One sqlite connection and its prepared statements. */
struct kv_db {
    sqlite3 *db;
    sqlite3_stmt *st[ST_NR];
};

struct watch {
    uint64_t id;
    char *bucket;     /* owned */
    char *prefix;     /* owned, "" = whole bucket */
    size_t prefix_len;
    kv_watch_cb cb;
    void *arg;
    bool removed;     /* unwatched while dispatching; swept afterwards */
};

/* A change waiting for its transaction to commit. Strings and value owned. */
struct event {
    struct kv_entry e;
    bool deleted;
};

struct kv_store {
    struct kv_db d;
    uint64_t applied;       /* mirror of meta.applied_index */
    bool busy;              /* inside apply or restore */
    unsigned dispatching;   /* depth of watch callbacks on the stack */
    struct watch *watches;  /* owned array */
    size_t n_watches;
    size_t cap_watches;
    uint64_t next_watch_id;
    struct event *events;   /* owned array, pending for the current apply */
    size_t n_events;
    size_t cap_events;
    char errmsg[256];
};

/* ------------------------------------------------------------------------ */
/* Errors. */

__attribute__((format(printf, 2, 3))) static void set_err(struct kv_store *s,
                                                          const char *fmt,
                                                          ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(s->errmsg, sizeof s->errmsg, fmt, ap);
    va_end(ap);
}

static void set_db_err(struct kv_store *s, const char *what)
{
    set_err(s, "%s: %s", what, sqlite3_errmsg(s->d.db));
}

__attribute__((format(printf, 3, 4))) static void put_err(char *err,
                                                          size_t errlen,
                                                          const char *fmt,
                                                          ...)
{
    va_list ap;

    if (err == NULL || errlen == 0) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

const char *kv_store_errmsg(const struct kv_store *s)
{
    return s->errmsg;
}

/* ------------------------------------------------------------------------ */
/* Connections. */

static void db_close(struct kv_db *d)
{
    size_t i;

    for (i = 0; i < ST_NR; i++) {
        sqlite3_finalize(d->st[i]);
        d->st[i] = NULL;
    }
    sqlite3_close(d->db);
    d->db = NULL;
}

/* Opens a private, empty memdb connection with our settings. */
static int db_open_raw(struct kv_db *d, char *err, size_t errlen)
{
    int rv;

    memset(d, 0, sizeof *d);
    /* A memdb name that does not start with '/' is private to the
     * connection. */
    rv = sqlite3_open_v2("file:ubkv?vfs=memdb", &d->db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                             SQLITE_OPEN_URI,
                         NULL);
    if (rv != SQLITE_OK) {
        put_err(err, errlen, "open sqlite: %s",
                d->db != NULL ? sqlite3_errmsg(d->db) : sqlite3_errstr(rv));
        goto err_after_open;
    }
    sqlite3_extended_result_codes(d->db, 1);
    sqlite3_db_config(d->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
    sqlite3_db_config(d->db, SQLITE_DBCONFIG_ENABLE_TRIGGER, 0, NULL);
    sqlite3_db_config(d->db, SQLITE_DBCONFIG_ENABLE_VIEW, 0, NULL);
    sqlite3_db_config(d->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);
    return 0;

err_after_open:
    sqlite3_close(d->db);
    d->db = NULL;
    return -1;
}

/* Applies the per-connection pragmas and prepares every statement. */
static int db_prepare(struct kv_db *d, char *err, size_t errlen)
{
    size_t i;

    if (sqlite3_exec(d->db, conn_sql, NULL, NULL, NULL) != SQLITE_OK) {
        put_err(err, errlen, "configure sqlite: %s", sqlite3_errmsg(d->db));
        return -1;
    }
    for (i = 0; i < ST_NR; i++) {
        if (sqlite3_prepare_v3(d->db, stmt_sql[i], -1,
                               SQLITE_PREPARE_PERSISTENT, &d->st[i],
                               NULL) != SQLITE_OK) {
            put_err(err, errlen, "prepare: %s", sqlite3_errmsg(d->db));
            return -1;
        }
    }
    return 0;
}

/* Steps a statement that returns no row, then resets it. */
static int step_done(struct kv_store *s, sqlite3_stmt *st, const char *what)
{
    int rv = sqlite3_step(st);

    sqlite3_reset(st);
    if (rv != SQLITE_DONE) {
        set_db_err(s, what);
        return -1;
    }
    return 0;
}

static int meta_applied(sqlite3_stmt *st, uint64_t *index)
{
    int rv = sqlite3_step(st);

    if (rv == SQLITE_ROW) {
        *index = (uint64_t)sqlite3_column_int64(st, 0);
    }
    sqlite3_reset(st);
    return rv == SQLITE_ROW ? 0 : -1;
}

int kv_store_open(struct kv_store **out, char *err, size_t errlen)
{
    struct kv_store *s;

    *out = NULL;
    s = calloc(1, sizeof *s);
    if (s == NULL) {
        put_err(err, errlen, "out of memory");
        return -1;
    }
    s->next_watch_id = 1;
    if (db_open_raw(&s->d, err, errlen) != 0) {
        goto err_after_alloc;
    }
    if (sqlite3_exec(s->d.db, schema_sql, NULL, NULL, NULL) != SQLITE_OK) {
        put_err(err, errlen, "create schema: %s", sqlite3_errmsg(s->d.db));
        goto err_after_db;
    }
    if (db_prepare(&s->d, err, errlen) != 0) {
        goto err_after_db;
    }
    *out = s;
    return 0;

err_after_db:
    db_close(&s->d);
err_after_alloc:
    free(s);
    return -1;
}

static void watch_free(struct watch *w)
{
    free(w->bucket);
    free(w->prefix);
}

static void events_clear(struct kv_store *s)
{
    size_t i;

    for (i = 0; i < s->n_events; i++) {
        free(s->events[i].e.bucket);
        free(s->events[i].e.key);
        free(s->events[i].e.value);
    }
    s->n_events = 0;
}

void kv_store_close(struct kv_store *s)
{
    size_t i;

    if (s == NULL) {
        return;
    }
    events_clear(s);
    free(s->events);
    for (i = 0; i < s->n_watches; i++) {
        watch_free(&s->watches[i]);
    }
    free(s->watches);
    db_close(&s->d);
    free(s);
}

uint64_t kv_store_applied_index(const struct kv_store *s)
{
    return s->applied;
}

/* ------------------------------------------------------------------------ */
/* Watches. */

static bool watch_matches(const struct watch *w, const char *bucket,
                          const char *key)
{
    return !w->removed && strcmp(w->bucket, bucket) == 0 &&
           strncmp(w->prefix, key, w->prefix_len) == 0;
}

static bool watched(const struct kv_store *s, const char *bucket,
                    const char *key)
{
    size_t i;

    for (i = 0; i < s->n_watches; i++) {
        if (watch_matches(&s->watches[i], bucket, key)) {
            return true;
        }
    }
    return false;
}

/* Prefixes of lists and watches: key characters only, possibly empty. A
 * prefix need not be a valid key itself ("a." is a fine prefix). */
static bool valid_prefix(const char *p)
{
    size_t i;

    if (p == NULL) {
        return true;
    }
    for (i = 0; p[i] != '\0'; i++) {
        /* Probe the character alone: a one-byte key is valid exactly when
         * the byte is a key character other than '/'. */
        if (i >= KV_MAX_KEY || (p[i] != '/' && !kv_valid_key(&p[i], 1))) {
            return false;
        }
    }
    return true;
}

int kv_store_watch(struct kv_store *s, const char *bucket, const char *prefix,
                   kv_watch_cb cb, void *arg, uint64_t *id)
{
    struct watch w;

    if (cb == NULL || id == NULL || !kv_valid_bucket(bucket) ||
        !valid_prefix(prefix)) {
        return KV_INVALID;
    }
    if (prefix == NULL) {
        prefix = "";
    }
    if (s->n_watches == s->cap_watches) {
        size_t cap = s->cap_watches == 0 ? 4 : s->cap_watches * 2;
        struct watch *ws = realloc(s->watches, cap * sizeof *ws);
        if (ws == NULL) {
            return KV_INTERNAL;
        }
        s->watches = ws;
        s->cap_watches = cap;
    }
    memset(&w, 0, sizeof w);
    w.bucket = strdup(bucket);
    w.prefix = strdup(prefix);
    if (w.bucket == NULL || w.prefix == NULL) {
        watch_free(&w);
        return KV_INTERNAL;
    }
    w.prefix_len = strlen(prefix);
    w.cb = cb;
    w.arg = arg;
    w.id = s->next_watch_id++;
    s->watches[s->n_watches++] = w;
    *id = w.id;
    return KV_OK;
}

static void watches_sweep(struct kv_store *s)
{
    size_t i;
    size_t j = 0;

    for (i = 0; i < s->n_watches; i++) {
        if (s->watches[i].removed) {
            watch_free(&s->watches[i]);
        } else {
            s->watches[j++] = s->watches[i];
        }
    }
    s->n_watches = j;
}

void kv_store_unwatch(struct kv_store *s, uint64_t id)
{
    size_t i;

    for (i = 0; i < s->n_watches; i++) {
        if (s->watches[i].id == id) {
            s->watches[i].removed = true;
        }
    }
    if (s->dispatching == 0) {
        watches_sweep(s);
    }
}

/* Copies a change for the watches, if any watch cares. */
static int event_add(struct kv_store *s, const char *bucket, const char *key,
                     const void *value, size_t value_len, uint64_t revision,
                     uint64_t create_revision, int64_t expires_at,
                     bool deleted)
{
    struct event *ev;

    if (!watched(s, bucket, key)) {
        return 0;
    }
    if (s->n_events == s->cap_events) {
        size_t cap = s->cap_events == 0 ? 8 : s->cap_events * 2;
        struct event *evs = realloc(s->events, cap * sizeof *evs);
        if (evs == NULL) {
            set_err(s, "out of memory");
            return -1;
        }
        s->events = evs;
        s->cap_events = cap;
    }
    ev = &s->events[s->n_events];
    memset(ev, 0, sizeof *ev);
    ev->e.bucket = strdup(bucket);
    ev->e.key = strdup(key);
    if (!deleted) {
        ev->e.value = malloc(value_len > 0 ? value_len : 1);
        if (ev->e.value != NULL && value_len > 0) {
            memcpy(ev->e.value, value, value_len);
        }
    }
    if (ev->e.bucket == NULL || ev->e.key == NULL ||
        (!deleted && ev->e.value == NULL)) {
        free(ev->e.bucket);
        free(ev->e.key);
        free(ev->e.value);
        set_err(s, "out of memory");
        return -1;
    }
    ev->e.value_len = deleted ? 0 : value_len;
    ev->e.revision = revision;
    ev->e.create_revision = create_revision;
    ev->e.expires_at = expires_at;
    ev->deleted = deleted;
    s->n_events++;
    return 0;
}

/* Fires the pending events (or, with reset, one NULL call per watch). */
static void dispatch(struct kv_store *s, bool reset)
{
    size_t i;
    size_t w;

    s->dispatching++;
    if (reset) {
        /* Index loop and fresh lookups: callbacks may add or remove watches
         * and so move the array. */
        size_t n = s->n_watches;
        for (w = 0; w < n && w < s->n_watches; w++) {
            if (!s->watches[w].removed) {
                s->watches[w].cb(s->watches[w].arg, NULL, false);
            }
        }
    }
    for (i = 0; i < s->n_events; i++) {
        const struct event *ev = &s->events[i];
        for (w = 0; w < s->n_watches; w++) {
            if (watch_matches(&s->watches[w], ev->e.bucket, ev->e.key)) {
                s->watches[w].cb(s->watches[w].arg, &ev->e, ev->deleted);
            }
        }
    }
    s->dispatching--;
    events_clear(s);
    if (s->dispatching == 0) {
        watches_sweep(s);
    }
}

/* ------------------------------------------------------------------------ */
/* Apply. */

/* The stored state of one key. */
struct row {
    bool present;
    uint64_t revision;
    uint64_t create_revision;
    int64_t expires_at;
};

/* Absent, or expired by the entry's stamp. */
static bool row_live(const struct row *r, int64_t stamp)
{
    return r->present && !(r->expires_at > 0 && r->expires_at <= stamp);
}

static int row_get(struct kv_store *s, const char *bucket, const char *key,
                   struct row *r)
{
    sqlite3_stmt *st = s->d.st[ST_ROW];
    int rv;

    memset(r, 0, sizeof *r);
    sqlite3_bind_text(st, 1, bucket, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    rv = sqlite3_step(st);
    if (rv == SQLITE_ROW) {
        r->present = true;
        r->revision = (uint64_t)sqlite3_column_int64(st, 0);
        r->create_revision = (uint64_t)sqlite3_column_int64(st, 1);
        r->expires_at = sqlite3_column_int64(st, 2);
    }
    sqlite3_reset(st);
    if (rv != SQLITE_ROW && rv != SQLITE_DONE) {
        set_db_err(s, "read key");
        return -1;
    }
    return 0;
}

static int key_write(struct kv_store *s, const struct kv_op *op,
                     uint64_t index, uint64_t create_revision)
{
    sqlite3_stmt *st = s->d.st[ST_UPSERT];

    sqlite3_bind_text(st, 1, op->bucket, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, op->key, -1, SQLITE_STATIC);
    /* A non-NULL pointer: a NULL one would bind SQL NULL, not an empty
     * blob. */
    sqlite3_bind_blob64(st, 3, op->value_len > 0 ? op->value : "",
                        op->value_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)index);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)create_revision);
    sqlite3_bind_int64(st, 6, op->expires_at);
    if (step_done(s, st, "write key") != 0) {
        return -1;
    }
    return event_add(s, op->bucket, op->key, op->value, op->value_len, index,
                     create_revision, op->expires_at, false);
}

static int key_delete(struct kv_store *s, const char *bucket, const char *key,
                      uint64_t index, uint64_t create_revision,
                      int64_t expires_at)
{
    sqlite3_stmt *st = s->d.st[ST_DELETE];

    sqlite3_bind_text(st, 1, bucket, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    if (step_done(s, st, "delete key") != 0) {
        return -1;
    }
    return event_add(s, bucket, key, NULL, 0, index, create_revision,
                     expires_at, true);
}

/* Runs one op. Returns -1 on a local fault, else 0 with res->code set. */
static int exec_op(struct kv_store *s, const struct kv_op *op, uint64_t index,
                   int64_t stamp, struct kv_result *res)
{
    struct row r;
    bool live;
    uint64_t cur;

    if (row_get(s, op->bucket, op->key, &r) != 0) {
        return -1;
    }
    live = row_live(&r, stamp);
    cur = live ? r.revision : 0;
    res->code = KV_OK;
    res->revision = index;
    switch (op->type) {
        case KV_OP_PUT:
            return key_write(s, op, index, live ? r.create_revision : index);
        case KV_OP_CREATE:
            if (live) {
                res->code = KV_EXISTS;
                res->revision = cur;
                return 0;
            }
            return key_write(s, op, index, index);
        case KV_OP_UPDATE:
            if (op->revision != cur) {
                res->code = KV_REVISION_MISMATCH;
                res->revision = cur;
                return 0;
            }
            return key_write(s, op, index, r.create_revision);
        case KV_OP_DELETE:
            if (!live || (op->revision != 0 && op->revision != cur)) {
                res->code = !live && op->revision == 0 ? KV_NOT_FOUND
                                                       : KV_REVISION_MISMATCH;
                res->revision = cur;
                return 0;
            }
            return key_delete(s, op->bucket, op->key, index, r.create_revision,
                              r.expires_at);
    }
    /* Unreachable: the decoder validated the type. */
    res->code = KV_INVALID;
    res->revision = 0;
    return 0;
}

static int exec_txn(struct kv_store *s, const struct kv_cmd *cmd,
                    uint64_t index, struct kv_result *res)
{
    const struct kv_op *ops;
    size_t n;
    size_t i;
    bool ok = true;

    for (i = 0; i < cmd->txn.n_compares && ok; i++) {
        const struct kv_compare *c = &cmd->txn.compares[i];
        struct row r;
        if (row_get(s, c->bucket, c->key, &r) != 0) {
            return -1;
        }
        ok = (row_live(&r, cmd->stamp) ? r.revision : 0) == c->revision;
    }
    res->txn_succeeded = ok;
    ops = ok ? cmd->txn.success : cmd->txn.failure;
    n = ok ? cmd->txn.n_success : cmd->txn.n_failure;
    for (i = 0; i < n; i++) {
        struct kv_result op_res;
        if (exec_op(s, &ops[i], index, cmd->stamp, &op_res) != 0) {
            return -1;
        }
        if (op_res.code != KV_OK) {
            /* The caller rolls the savepoint back: nothing of the txn
             * stays. */
            res->code = KV_TXN_FAILED;
            res->revision = op_res.revision;
            return 0;
        }
    }
    res->code = KV_OK;
    res->revision = n > 0 ? index : 0;
    return 0;
}

static int exec_nonce(struct kv_store *s, const struct kv_cmd *cmd,
                      uint64_t index, struct kv_result *res)
{
    struct kv_op op;

    memset(&op, 0, sizeof op);
    op.type = KV_OP_CREATE;
    op.bucket = KV_NONCE_BUCKET;
    op.key = cmd->nonce.nonce;
    op.expires_at = cmd->nonce.expires_at;
    if (exec_op(s, &op, index, cmd->stamp, res) != 0) {
        return -1;
    }
    if (res->code == KV_EXISTS) {
        res->code = KV_NONCE_REUSED;
    }
    return 0;
}

/* A copy of a text column, or NULL when sqlite is out of memory. */
static char *dup_column_text(sqlite3_stmt *st, int col)
{
    const unsigned char *t = sqlite3_column_text(st, col);

    return t != NULL ? strdup((const char *)t) : NULL;
}

/* A key selected for purging. */
struct victim {
    char *bucket;
    char *key;
    uint64_t create_revision;
    int64_t expires_at;
};

static int exec_purge(struct kv_store *s, const struct kv_cmd *cmd,
                      uint64_t index, struct kv_result *res)
{
    sqlite3_stmt *st = s->d.st[ST_PURGE_SCAN];
    struct victim *v = NULL;
    size_t n = 0;
    size_t cap = 0;
    size_t i;
    int rv;
    int ret = -1;

    /* Collect first, then delete: no writes while the scan is open. */
    sqlite3_bind_int64(st, 1, cmd->purge.now);
    sqlite3_bind_int64(st, 2, KV_PURGE_MAX);
    while ((rv = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            size_t ncap = cap == 0 ? 16 : cap * 2;
            struct victim *nv = realloc(v, ncap * sizeof *nv);
            if (nv == NULL) {
                set_err(s, "out of memory");
                goto out;
            }
            v = nv;
            cap = ncap;
        }
        v[n].bucket = dup_column_text(st, 0);
        v[n].key = dup_column_text(st, 1);
        v[n].create_revision = (uint64_t)sqlite3_column_int64(st, 2);
        v[n].expires_at = sqlite3_column_int64(st, 3);
        n++;
        if (v[n - 1].bucket == NULL || v[n - 1].key == NULL) {
            set_err(s, "out of memory");
            goto out;
        }
    }
    if (rv != SQLITE_DONE) {
        set_db_err(s, "purge scan");
        goto out;
    }
    sqlite3_reset(st);
    for (i = 0; i < n; i++) {
        if (key_delete(s, v[i].bucket, v[i].key, index, v[i].create_revision,
                       v[i].expires_at) != 0) {
            goto out;
        }
    }
    res->code = KV_OK;
    res->purged = n;
    res->revision = n > 0 ? index : 0;
    ret = 0;

out:
    sqlite3_reset(st);
    for (i = 0; i < n; i++) {
        free(v[i].bucket);
        free(v[i].key);
    }
    free(v);
    return ret;
}

static int exec_body(struct kv_store *s, const struct kv_cmd *cmd,
                     uint64_t index, struct kv_result *res)
{
    switch (cmd->kind) {
        case KV_CMD_OP:
            return exec_op(s, &cmd->op, index, cmd->stamp, res);
        case KV_CMD_TXN:
            return exec_txn(s, cmd, index, res);
        case KV_CMD_NONCE:
            return exec_nonce(s, cmd, index, res);
        case KV_CMD_PURGE:
            return exec_purge(s, cmd, index, res);
        case KV_CMD_NOOP:
            res->code = KV_OK;
            return 0;
    }
    res->code = KV_INVALID;
    return 0;
}

/* Looks the request id up. Returns -1 on a fault, else 0 with *found. */
static int request_get(struct kv_store *s, const uint8_t *id,
                       struct kv_result *res, bool *found)
{
    sqlite3_stmt *st = s->d.st[ST_REQ_GET];
    int rv;

    *found = false;
    sqlite3_bind_blob(st, 1, id, KV_REQUEST_ID_LEN, SQLITE_STATIC);
    rv = sqlite3_step(st);
    if (rv == SQLITE_ROW) {
        *found = true;
        memset(res, 0, sizeof *res);
        res->code = (enum kv_code)sqlite3_column_int(st, 0);
        res->revision = (uint64_t)sqlite3_column_int64(st, 1);
        res->txn_succeeded = sqlite3_column_int(st, 2) != 0;
        res->purged = (uint64_t)sqlite3_column_int64(st, 3);
    }
    sqlite3_reset(st);
    if (rv != SQLITE_ROW && rv != SQLITE_DONE) {
        set_db_err(s, "read request id");
        return -1;
    }
    return 0;
}

static int request_put(struct kv_store *s, const struct kv_cmd *cmd,
                       const struct kv_result *res)
{
    sqlite3_stmt *st = s->d.st[ST_REQ_PUT];

    sqlite3_bind_blob(st, 1, cmd->request_id, KV_REQUEST_ID_LEN,
                      SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, cmd->stamp);
    sqlite3_bind_int(st, 3, (int)res->code);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)res->revision);
    sqlite3_bind_int(st, 5, res->txn_succeeded ? 1 : 0);
    sqlite3_bind_int64(st, 6, (sqlite3_int64)res->purged);
    return step_done(s, st, "record request id");
}

/* Prunes old request ids and stores the applied index. */
static int finish_entry(struct kv_store *s, const struct kv_cmd *cmd,
                        uint64_t index)
{
    sqlite3_stmt *st = s->d.st[ST_REQ_PRUNE];

    /* stamp >= 0 (validated), so this cannot overflow. */
    sqlite3_bind_int64(st, 1, cmd->stamp - KV_REQUEST_TTL_MS);
    if (step_done(s, st, "prune request ids") != 0) {
        return -1;
    }
    st = s->d.st[ST_META_SET];
    sqlite3_bind_int64(st, 1, (sqlite3_int64)index);
    return step_done(s, st, "store applied index");
}

int kv_store_apply(struct kv_store *s, uint64_t index, const void *buf,
                   size_t len, struct kv_result *res)
{
    struct kv_cmd *cmd = NULL;
    bool dup;
    int rv;

    memset(res, 0, sizeof *res);
    res->code = KV_INTERNAL;
    if (s->busy || s->dispatching > 0) {
        set_err(s, "apply called re-entrantly");
        return -1;
    }
    if (index <= s->applied || index > (uint64_t)INT64_MAX) {
        set_err(s, "apply index %" PRIu64 " not after applied index %" PRIu64,
                index, s->applied);
        return -1;
    }
    rv = kv_cmd_decode(buf, len, &cmd);
    if (rv == KV_INVALID) {
        res->code = KV_INVALID;
        return 0;
    }
    if (rv != KV_OK) {
        set_err(s, "decode entry: out of memory");
        return -1;
    }
    s->busy = true;

    if (step_done(s, s->d.st[ST_BEGIN], "begin") != 0) {
        goto err_after_decode;
    }
    if (request_get(s, cmd->request_id, res, &dup) != 0) {
        goto err_after_begin;
    }
    if (!dup && cmd->claim.nonce != NULL) {
        /* The claim lands outside the body's savepoint: it stays consumed
         * whatever the body does. */
        struct kv_cmd claim = *cmd;
        claim.kind = KV_CMD_NONCE;
        claim.nonce.nonce = cmd->claim.nonce;
        claim.nonce.expires_at = cmd->claim.expires_at;
        memset(res, 0, sizeof *res);
        if (exec_nonce(s, &claim, index, res) != 0) {
            goto err_after_begin;
        }
        if (res->code != KV_OK) {
            /* Reused (or refused): the body does not run. */
            if (request_put(s, cmd, res) != 0) {
                goto err_after_begin;
            }
            dup = true;
        }
    }
    if (!dup) {
        memset(res, 0, sizeof *res);
        if (step_done(s, s->d.st[ST_SAVEPOINT], "savepoint") != 0 ||
            exec_body(s, cmd, index, res) != 0) {
            goto err_after_begin;
        }
        if (res->code != KV_OK) {
            /* Business failure: undo the body, keep the record. */
            events_clear(s);
            if (step_done(s, s->d.st[ST_ROLLBACK_TO], "rollback to") != 0) {
                goto err_after_begin;
            }
        }
        if (step_done(s, s->d.st[ST_RELEASE], "release") != 0 ||
            request_put(s, cmd, res) != 0) {
            goto err_after_begin;
        }
    }
    if (finish_entry(s, cmd, index) != 0 ||
        step_done(s, s->d.st[ST_COMMIT], "commit") != 0) {
        goto err_after_begin;
    }
    s->applied = index;
    kv_cmd_free(cmd);
    s->busy = false;
    dispatch(s, false);
    return 0;

err_after_begin:
    /* The statement that failed may have rolled back already; a failing
     * ROLLBACK then changes nothing. */
    sqlite3_step(s->d.st[ST_ROLLBACK]);
    sqlite3_reset(s->d.st[ST_ROLLBACK]);
err_after_decode:
    events_clear(s);
    kv_cmd_free(cmd);
    s->busy = false;
    memset(res, 0, sizeof *res);
    res->code = KV_INTERNAL;
    ub_error("kv", "apply of index %" PRIu64 " failed: %s", index, s->errmsg);
    return -1;
}

int kv_store_result(struct kv_store *s,
                    const uint8_t request_id[KV_REQUEST_ID_LEN],
                    struct kv_result *res)
{
    bool found;

    memset(res, 0, sizeof *res);
    if (request_get(s, request_id, res, &found) != 0) {
        res->code = KV_INTERNAL;
        return KV_INTERNAL;
    }
    return found ? KV_OK : KV_NOT_FOUND;
}

/* ------------------------------------------------------------------------ */
/* Reads. */

int kv_store_get(struct kv_store *s, const char *bucket, const char *key,
                 struct kv_entry *out)
{
    sqlite3_stmt *st = s->d.st[ST_GET];
    size_t n;
    int rv;
    int ret = KV_INTERNAL;

    memset(out, 0, sizeof *out);
    if (!kv_valid_bucket(bucket) || key == NULL ||
        !kv_valid_key(key, strnlen(key, KV_MAX_KEY + 1))) {
        return KV_INVALID;
    }
    sqlite3_bind_text(st, 1, bucket, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    rv = sqlite3_step(st);
    if (rv == SQLITE_DONE) {
        ret = KV_NOT_FOUND;
        goto out;
    }
    if (rv != SQLITE_ROW) {
        set_db_err(s, "get");
        goto out;
    }
    n = (size_t)sqlite3_column_bytes(st, 0);
    out->bucket = strdup(bucket);
    out->key = strdup(key);
    out->value = malloc(n > 0 ? n : 1);
    if (out->bucket == NULL || out->key == NULL || out->value == NULL) {
        kv_entry_clear(out);
        goto out;
    }
    if (n > 0) {
        memcpy(out->value, sqlite3_column_blob(st, 0), n);
    }
    out->value_len = n;
    out->revision = (uint64_t)sqlite3_column_int64(st, 1);
    out->create_revision = (uint64_t)sqlite3_column_int64(st, 2);
    out->expires_at = sqlite3_column_int64(st, 3);
    ret = KV_OK;

out:
    sqlite3_reset(st);
    return ret;
}

void kv_entry_clear(struct kv_entry *e)
{
    free(e->bucket);
    free(e->key);
    free(e->value);
    memset(e, 0, sizeof *e);
}

int kv_store_list(struct kv_store *s, const char *bucket, const char *prefix,
                  const char *start_after, size_t limit,
                  int (*cb)(void *arg, const struct kv_entry *e), void *arg,
                  bool *more)
{
    char sql[256];
    char upper[KV_MAX_KEY + 1];
    bool after;
    size_t plen;
    size_t delivered = 0;
    sqlite3_stmt *st = NULL;
    int rv;
    int ret = KV_INTERNAL;

    if (more != NULL) {
        *more = false;
    }
    if (cb == NULL || !kv_valid_bucket(bucket) || !valid_prefix(prefix) ||
        (start_after != NULL &&
         strnlen(start_after, KV_MAX_KEY + 1) > KV_MAX_KEY)) {
        return KV_INVALID;
    }
    if (prefix == NULL) {
        prefix = "";
    }
    if (limit == 0 || limit > KV_MAX_LIST) {
        limit = KV_MAX_LIST;
    }
    plen = strlen(prefix);
    /* Keys use characters below 0x7f, so the prefix with its last byte
     * incremented bounds the range from above. */
    memcpy(upper, prefix, plen + 1);
    if (plen > 0) {
        upper[plen - 1]++;
    }
    after = start_after != NULL && strcmp(start_after, prefix) >= 0;
    snprintf(sql, sizeof sql,
             "SELECT key, value, revision, create_revision, expires_at"
             " FROM kv WHERE bucket = ?1 AND key %s ?2%s"
             " ORDER BY key LIMIT ?4",
             after ? ">" : ">=", plen > 0 ? " AND key < ?3" : "");
    /* A statement of its own: callbacks may read, even list, re-entrantly. */
    if (sqlite3_prepare_v2(s->d.db, sql, -1, &st, NULL) != SQLITE_OK) {
        set_db_err(s, "prepare list");
        return KV_INTERNAL;
    }
    sqlite3_bind_text(st, 1, bucket, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, after ? start_after : prefix, -1, SQLITE_STATIC);
    if (plen > 0) {
        sqlite3_bind_text(st, 3, upper, -1, SQLITE_STATIC);
    }
    sqlite3_bind_int64(st, 4, (sqlite3_int64)limit + 1);
    while ((rv = sqlite3_step(st)) == SQLITE_ROW) {
        struct kv_entry e;
        if (delivered == limit) {
            if (more != NULL) {
                *more = true;
            }
            break;
        }
        /* Borrowed from sqlite for the duration of the callback. */
        e.bucket = (char *)bucket;
        e.key = (char *)sqlite3_column_text(st, 0);
        e.value = (void *)sqlite3_column_blob(st, 1);
        e.value_len = (size_t)sqlite3_column_bytes(st, 1);
        e.revision = (uint64_t)sqlite3_column_int64(st, 2);
        e.create_revision = (uint64_t)sqlite3_column_int64(st, 3);
        e.expires_at = sqlite3_column_int64(st, 4);
        if (e.key == NULL) {
            set_err(s, "list: out of memory");
            goto out;
        }
        delivered++;
        if (cb(arg, &e) != 0) {
            /* Stopped early: tell whether anything follows. */
            rv = sqlite3_step(st);
            if (rv == SQLITE_ROW && more != NULL) {
                *more = true;
            }
            break;
        }
    }
    if (rv != SQLITE_ROW && rv != SQLITE_DONE) {
        set_db_err(s, "list");
        goto out;
    }
    ret = KV_OK;

out:
    sqlite3_finalize(st);
    return ret;
}

void kv_store_stats(struct kv_store *s, uint64_t *n_keys,
                    uint64_t *value_bytes)
{
    sqlite3_stmt *st = s->d.st[ST_STATS];

    *n_keys = 0;
    *value_bytes = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        *n_keys = (uint64_t)sqlite3_column_int64(st, 0);
        *value_bytes = (uint64_t)sqlite3_column_int64(st, 1);
    }
    sqlite3_reset(st);
}

/* ------------------------------------------------------------------------ */
/* Snapshots. */

#define FRAME_LEN 4 /* big-endian header length */

static int sha256(const void *data, size_t len, uint8_t out[KV__SHA256_LEN])
{
    unsigned int n = 0;

    if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) != 1 ||
        n != KV__SHA256_LEN) {
        return -1;
    }
    return 0;
}

int kv_store_snapshot(struct kv_store *s, void *(*alloc)(size_t), void **buf,
                      size_t *len)
{
    struct kv__snapshot_header h;
    sqlite3_int64 isz = 0;
    unsigned char *image;
    unsigned char *owned = NULL; /* only when sqlite had to copy */
    size_t hlen;
    size_t total;
    uint8_t *out;
    int ret = -1;

    if (s->busy) {
        set_err(s, "snapshot during apply");
        return -1;
    }
    /* memdb keeps the whole image in one buffer: borrow it (no copy) and
     * copy it once, into the snapshot itself, before anything can change
     * it (this runs on the loop, between two applies). */
    image = sqlite3_serialize(s->d.db, "main", &isz, SQLITE_SERIALIZE_NOCOPY);
    if (image == NULL) {
        /* Not contiguous in memory: fall back to a copy sqlite makes. */
        image = sqlite3_serialize(s->d.db, "main", &isz, 0);
        owned = image;
    }
    if (image == NULL || isz <= 0) {
        set_db_err(s, "serialize");
        goto out;
    }
    memset(&h, 0, sizeof h);
    h.format = KV__SNAPSHOT_FORMAT;
    h.index = s->applied;
    h.image_len = (uint64_t)isz;
    if (sha256(image, (size_t)isz, h.sha256) != 0) {
        set_err(s, "sha256 failed");
        goto out;
    }
    hlen = kv__snapshot_header_size(&h);
    total = FRAME_LEN + hlen + (size_t)isz;
    out = alloc(total);
    if (out == NULL) {
        set_err(s, "snapshot: out of memory");
        goto out;
    }
    out[0] = (uint8_t)(hlen >> 24);
    out[1] = (uint8_t)(hlen >> 16);
    out[2] = (uint8_t)(hlen >> 8);
    out[3] = (uint8_t)hlen;
    kv__snapshot_header_pack(&h, out + FRAME_LEN);
    memcpy(out + FRAME_LEN + hlen, image, (size_t)isz);
    *buf = out;
    *len = total;
    ret = 0;

out:
    sqlite3_free(owned);
    return ret;
}

/* Runs a one-value query and compares its integer or text result. */
static bool query_is(sqlite3 *db, const char *sql, sqlite3_int64 want_int,
                     const char *want_text)
{
    sqlite3_stmt *st = NULL;
    bool ok = false;

    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        return false;
    }
    if (sqlite3_step(st) == SQLITE_ROW) {
        if (want_text != NULL) {
            const unsigned char *t = sqlite3_column_text(st, 0);
            ok = t != NULL && strcmp((const char *)t, want_text) == 0 &&
                 sqlite3_step(st) == SQLITE_DONE;
        } else {
            ok = sqlite3_column_int64(st, 0) == want_int;
        }
    }
    sqlite3_finalize(st);
    return ok;
}

/* True when both databases hold exactly the same schema objects (no extra
 * table, index, trigger or view can come in through a snapshot). */
static bool same_schema(sqlite3 *a, sqlite3 *b)
{
    static const char sql[] =
        "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_schema"
        " ORDER BY type, name";
    sqlite3_stmt *sa = NULL;
    sqlite3_stmt *sb = NULL;
    bool same = false;
    int ra;
    int rb;
    int c;

    if (sqlite3_prepare_v2(a, sql, -1, &sa, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(b, sql, -1, &sb, NULL) != SQLITE_OK) {
        goto out;
    }
    for (;;) {
        ra = sqlite3_step(sa);
        rb = sqlite3_step(sb);
        if (ra != rb) {
            goto out;
        }
        if (ra == SQLITE_DONE) {
            break;
        }
        if (ra != SQLITE_ROW) {
            goto out;
        }
        for (c = 0; c < 4; c++) {
            const unsigned char *ta = sqlite3_column_text(sa, c);
            const unsigned char *tb = sqlite3_column_text(sb, c);
            if (ta == NULL || tb == NULL ||
                strcmp((const char *)ta, (const char *)tb) != 0) {
                goto out;
            }
        }
    }
    same = true;

out:
    sqlite3_finalize(sa);
    sqlite3_finalize(sb);
    return same;
}

int kv_store_restore(struct kv_store *s, const void *buf, size_t len,
                     char *err, size_t errlen)
{
    const uint8_t *p = buf;
    struct kv__snapshot_header h;
    uint8_t digest[KV__SHA256_LEN];
    struct kv_db nd;
    unsigned char *copy;
    uint64_t index = 0;
    size_t hlen;
    size_t ilen;

    if (s->busy || s->dispatching > 0) {
        put_err(err, errlen, "restore called re-entrantly");
        return -1;
    }
    if (p == NULL || len < FRAME_LEN) {
        put_err(err, errlen, "snapshot too short");
        return -1;
    }
    hlen = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 |
           (size_t)p[3];
    if (hlen == 0 || hlen > KV__SNAPSHOT_MAX_HEADER ||
        hlen > len - FRAME_LEN) {
        put_err(err, errlen, "snapshot header length %zu invalid", hlen);
        return -1;
    }
    if (kv__snapshot_header_unpack(p + FRAME_LEN, hlen, &h) != 0) {
        put_err(err, errlen, "snapshot header does not decode");
        return -1;
    }
    if (h.format != KV__SNAPSHOT_FORMAT) {
        put_err(err, errlen, "snapshot format %" PRIu32 " unsupported",
                h.format);
        return -1;
    }
    ilen = len - FRAME_LEN - hlen;
    if (h.image_len != ilen || ilen == 0 || ilen % 512 != 0) {
        put_err(err, errlen,
                "snapshot image length %zu does not match header %" PRIu64,
                ilen, h.image_len);
        return -1;
    }
    if (sha256(p + FRAME_LEN + hlen, ilen, digest) != 0 ||
        memcmp(digest, h.sha256, KV__SHA256_LEN) != 0) {
        put_err(err, errlen, "snapshot checksum mismatch");
        return -1;
    }

    /* File-format read/write versions (header bytes 18 and 19) other than
     * 1 would open the image read-only: every later apply would fail. */
    if (ilen < 100 || p[FRAME_LEN + hlen + 18] != 1 ||
        p[FRAME_LEN + hlen + 19] != 1) {
        put_err(err, errlen, "snapshot image has an unsupported file format");
        return -1;
    }
    if (db_open_raw(&nd, err, errlen) != 0) {
        return -1;
    }
    copy = sqlite3_malloc64(ilen);
    if (copy == NULL) {
        put_err(err, errlen, "out of memory");
        goto err_after_open;
    }
    memcpy(copy, p + FRAME_LEN + hlen, ilen);
    /* sqlite owns copy from here on, even when this fails. */
    if (sqlite3_deserialize(nd.db, "main", copy, (sqlite3_int64)ilen,
                            (sqlite3_int64)ilen,
                            SQLITE_DESERIALIZE_FREEONCLOSE |
                                SQLITE_DESERIALIZE_RESIZEABLE) != SQLITE_OK) {
        put_err(err, errlen, "load image: %s", sqlite3_errmsg(nd.db));
        goto err_after_open;
    }
    /* integrity_check, not quick_check: an index that disagrees with its
     * table passes quick_check and makes later writes fail. */
    if (!query_is(nd.db, "PRAGMA integrity_check", 0, "ok")) {
        put_err(err, errlen, "snapshot image fails the integrity check");
        goto err_after_open;
    }
    if (!query_is(nd.db, "PRAGMA application_id", KV_APPLICATION_ID, NULL) ||
        !query_is(nd.db, "PRAGMA user_version", KV_SCHEMA_VERSION, NULL) ||
        !same_schema(nd.db, s->d.db)) {
        put_err(err, errlen, "snapshot image has a foreign schema");
        goto err_after_open;
    }
    if (db_prepare(&nd, err, errlen) != 0) {
        goto err_after_open;
    }
    if (meta_applied(nd.st[ST_META_GET], &index) != 0 || index != h.index) {
        put_err(err, errlen,
                "snapshot image index %" PRIu64 " does not match header %"
                PRIu64, index, h.index);
        goto err_after_open;
    }

    /* Everything checked: swap wholesale. */
    db_close(&s->d);
    s->d = nd;
    s->applied = index;
    dispatch(s, true);
    return 0;

err_after_open:
    db_close(&nd);
    return -1;
}
