/* The KV state machine of the meta group: buckets of keys with revisions,
 * kept in an in-memory sqlite database and changed only by applying raft
 * log entries (commands) in log order.
 *
 * Determinism: kv_store_apply() never reads clocks, random sources or files.
 * Time that matters (expiry, nonce lifetime, request-id pruning) travels in
 * the command, stamped by the proposer. Two stores fed the same entries hold
 * byte-identical databases and produce byte-identical snapshots.
 *
 * Threading: a store is not thread-safe; use it from one thread (the loop
 * thread that runs raft).
 *
 * Return values: functions returning an `enum kv_code` as int use KV_OK (0)
 * for success. Functions documented as "0 or -1" report a local fault (sqlite
 * error, out of memory) with -1 and leave a message in kv_store_errmsg(). */
#ifndef UB_KV_KV_H
#define UB_KV_KV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Limits. Everything a command carries is bounded; kv_cmd_encode() and the
 * decoder in kv_store_apply() reject anything beyond these. */
#define KV_MAX_BUCKET 64                /* bucket name bytes */
#define KV_MAX_KEY 1024                 /* key bytes */
#define KV_MAX_VALUE (1024 * 1024)      /* value bytes */
#define KV_MAX_TXN_OPS 128              /* each of compares, success, failure */
#define KV_MAX_TXN_VALUE (4 * 1024 * 1024) /* sum of value bytes in one txn */
#define KV_MAX_NONCE 192                /* nonce bytes (handle/nonce fits) */
#define KV_MAX_CMD_BYTES (8 * 1024 * 1024) /* encoded command size */
#define KV_MAX_LIST 10000               /* entries per kv_store_list call */
#define KV_PURGE_MAX 10000              /* keys deleted by one purge command */
/* How long request ids are kept: well past the longest time a proposer
 * retries one (meta: 60 s for membership, 10 s for writes). */
#define KV_REQUEST_TTL_MS (2 * 60 * 1000)
#define KV_REQUEST_ID_LEN 16
#define KV_NONCE_BUCKET "nonces"

struct kv_store; /* Opaque. */

/* Outcome of a command, a read or a validation. */
enum kv_code {
    KV_OK = 0,
    KV_NOT_FOUND,         /* key absent (or expired) */
    KV_EXISTS,            /* create of a live key */
    KV_REVISION_MISMATCH, /* update/delete/compare revision differs */
    KV_NONCE_REUSED,      /* nonce claimed while a live claim exists */
    KV_INVALID,           /* malformed command or argument */
    KV_TXN_FAILED,        /* an op of the chosen txn branch failed */
    KV_INTERNAL,          /* local fault (sqlite, memory) */
};

/* Stable lower-case name of a code ("ok", "not_found", "exists",
 * "revision_mismatch", "nonce_reused", "invalid", "txn_failed",
 * "internal"); "unknown" for values outside the enum. */
const char *kv_code_name(enum kv_code code);

/* Creates an empty store in *out (owned, free with kv_store_close). Returns 0,
 * or -1 with a message in err (which may be NULL). */
int kv_store_open(struct kv_store **out, char *err, size_t errlen);

/* Frees the store and every watch. NULL is ignored. */
void kv_store_close(struct kv_store *s);

/* Message of the last local fault of the store (never NULL). */
const char *kv_store_errmsg(const struct kv_store *s);

/* ------------------------------------------------------------------------ */
/* Commands (proposer side). */

enum kv_op_type {
    KV_OP_PUT = 1, /* unconditional write; revision must be 0 */
    KV_OP_CREATE,  /* fails KV_EXISTS if the key is live; revision must be 0 */
    KV_OP_UPDATE,  /* fails KV_REVISION_MISMATCH unless revision == current;
                      revision must be non-zero */
    KV_OP_DELETE,  /* revision 0: unconditional (absent: KV_NOT_FOUND); else
                      compare first (absent: KV_REVISION_MISMATCH, rev 0);
                      value must be empty */
};

/* One write. Strings are NUL-terminated; all pointers are borrowed. */
struct kv_op {
    enum kv_op_type type;
    const char *bucket;
    const char *key;
    const void *value; /* may be NULL when value_len == 0 */
    size_t value_len;
    uint64_t revision;  /* compare value for UPDATE / DELETE */
    int64_t expires_at; /* ms since the epoch; 0 = never; >= 0 */
};

/* A txn compare: the key's current revision must equal `revision`; 0 means
 * the key must be absent (or expired). */
struct kv_compare {
    const char *bucket;
    const char *key;
    uint64_t revision;
};

enum kv_cmd_kind {
    KV_CMD_OP = 1,
    KV_CMD_TXN,
    KV_CMD_NONCE,
    KV_CMD_PURGE,
    KV_CMD_NOOP,
};

/* One raft log entry. Exactly one body, selected by `kind`; the others are
 * ignored by the encoder. All pointers are borrowed. */
struct kv_cmd {
    enum kv_cmd_kind kind;
    uint8_t request_id[KV_REQUEST_ID_LEN]; /* random; applied once */
    int64_t stamp;                         /* proposer's clock, ms, >= 0 */
    struct kv_op op;
    struct {
        const struct kv_compare *compares;
        size_t n_compares;
        const struct kv_op *success;
        size_t n_success;
        const struct kv_op *failure;
        size_t n_failure;
    } txn;
    struct {
        const char *nonce;  /* a valid key of at most KV_MAX_NONCE bytes */
        int64_t expires_at; /* ms, > 0 */
    } nonce;
    struct {
        int64_t now; /* ms, > 0: keys with 0 < expires_at <= now are deleted */
    } purge;
    /* Optional, with any body: a nonce claimed first, in the same entry (a
     * signed write costs one entry, not two). nonce NULL: none. A live claim
     * ends the command with KV_NONCE_REUSED without running the body. */
    struct {
        const char *nonce;
        int64_t expires_at;
    } claim;
};

/* Checks every name, size and field rule of a command without encoding it.
 * Returns KV_OK or KV_INVALID. */
int kv_cmd_validate(const struct kv_cmd *cmd);

/* Validates, then encodes cmd into a buffer obtained from alloc (raft_malloc
 * in production; owned by the caller afterwards). The buffer is a raft entry:
 * a 4-byte little-endian length, the protobuf Command, and zero padding to a
 * multiple of 8 bytes (libraft's uv backend refuses other lengths). Returns
 * KV_OK, KV_INVALID (bad input; nothing allocated) or KV_INTERNAL (allocation
 * failed). */
int kv_cmd_encode(const struct kv_cmd *cmd, void *(*alloc)(size_t), void **buf,
                  size_t *len);

/* Decodes and validates an encoded command into *out (owned, free with
 * kv_cmd_free; its pointers reference memory inside that object). Returns
 * KV_OK, KV_INVALID (undecodable or invalid) or KV_INTERNAL (no memory). */
int kv_cmd_decode(const void *buf, size_t len, struct kv_cmd **out);

/* Frees a command returned by kv_cmd_decode. NULL is ignored. */
void kv_cmd_free(struct kv_cmd *cmd);

/* ------------------------------------------------------------------------ */
/* Apply (FSM side). */

/* Result of one applied command.
 * - op: KV_OK with revision = index, or the failure code with the key's
 *   current revision (0 if absent) in `revision`.
 * - txn: compares are evaluated first (txn_succeeded = all held), then every
 *   op of the chosen branch runs in order, each seeing the previous ones'
 *   writes. All ops succeed: KV_OK, revision = index (0 when the branch
 *   has no op). Any op fails: nothing
 *   of the txn is written, code KV_TXN_FAILED, revision = the failing key's
 *   current revision. A failed compare is not an error (KV_OK, the failure
 *   branch ran, txn_succeeded = false).
 * - nonce: KV_OK with revision = index, or KV_NONCE_REUSED with the live
 *   claim's revision.
 * - purge: KV_OK, purged = number of keys deleted (at most KV_PURGE_MAX, the
 *   earliest expiries first; propose again if it hit the limit), revision =
 *   index when purged > 0.
 * - noop: KV_OK.
 * - invalid entry: KV_INVALID, nothing changed (not even the applied index). */
struct kv_result {
    enum kv_code code;
    uint64_t revision;
    bool txn_succeeded;
    uint64_t purged;
};

/* Applies the entry at raft index `index` (> kv_store_applied_index()) in one
 * sqlite transaction. Keys whose 0 < expires_at <= the entry's stamp count
 * as absent for every op, compare and nonce claim. A request id seen within
 * KV_REQUEST_TTL_MS (by entry stamps) is not applied again: *res gets the
 * stored result. Watches fire after the transaction commits. Never fails on
 * bad input (see kv_result). Returns 0, or -1 on a local fault (res->code =
 * KV_INTERNAL, nothing changed). Must not be called from a watch callback. */
int kv_store_apply(struct kv_store *s, uint64_t index, const void *buf,
                   size_t len, struct kv_result *res);

/* The stored result of a request id applied within the last
 * KV_REQUEST_TTL_MS. This is how the proposer's raft apply callback learns
 * the outcome (the FSM adapter passes no result pointer). Returns KV_OK,
 * KV_NOT_FOUND or KV_INTERNAL. */
int kv_store_result(struct kv_store *s,
                    const uint8_t request_id[KV_REQUEST_ID_LEN],
                    struct kv_result *res);

/* Raft index of the last applied valid entry (0 for a new store). */
uint64_t kv_store_applied_index(const struct kv_store *s);

/* ------------------------------------------------------------------------ */
/* Reads. The caller guarantees linearizability (leader + barrier). Reads do
 * not know the time: an expired key is returned until a purge deletes it;
 * callers compare expires_at with their clock when it matters. */

/* One key. Owned by whoever filled it: free with kv_entry_clear when it came
 * from kv_store_get; borrowed for the duration of a list/watch callback. */
struct kv_entry {
    char *bucket;
    char *key;
    void *value;
    size_t value_len;
    uint64_t revision;        /* index of the last change (of the delete for
                                 a delete event) */
    uint64_t create_revision; /* index of the change that created it */
    int64_t expires_at;       /* ms, 0 = never */
};

/* Reads one key into *out (zeroed first). Returns KV_OK, KV_NOT_FOUND,
 * KV_INVALID (bad bucket/key) or KV_INTERNAL. */
int kv_store_get(struct kv_store *s, const char *bucket, const char *key,
                 struct kv_entry *out);

/* Frees what kv_store_get put into e and zeroes it. */
void kv_entry_clear(struct kv_entry *e);

/* Lists keys of `bucket` starting with `prefix` (NULL or "" = all) and
 * greater than `start_after` (NULL = from the start), in key byte order, at
 * most `limit` (0 or more than KV_MAX_LIST means KV_MAX_LIST). cb is called
 * per entry with an entry borrowed for the call; a non-zero return stops the
 * listing early. *more (may be NULL) is set when entries remain past the last
 * one delivered. Returns KV_OK, KV_INVALID or KV_INTERNAL. */
int kv_store_list(struct kv_store *s, const char *bucket, const char *prefix,
                  const char *start_after, size_t limit,
                  int (*cb)(void *arg, const struct kv_entry *e), void *arg,
                  bool *more);

/* Watch callback: e (borrowed) is the key after the change; deleted is true
 * for deletes and purges (then e->value is NULL and e->revision the delete's
 * index). After kv_store_restore replaced the whole state, every watch is
 * called once with e == NULL: re-read what you need. */
typedef void (*kv_watch_cb)(void *arg, const struct kv_entry *e, bool deleted);

/* Registers cb for every change applied to `bucket` whose key starts with
 * `prefix` (NULL or "" = the whole bucket). Fires after the entry's sqlite
 * transaction committed, in op order. The callback may call reads and
 * kv_store_unwatch, never kv_store_apply/restore. Returns KV_OK with *id
 * (never 0), KV_INVALID or KV_INTERNAL. */
int kv_store_watch(struct kv_store *s, const char *bucket, const char *prefix,
                   kv_watch_cb cb, void *arg, uint64_t *id);

/* Removes a watch; unknown ids are ignored. Safe inside a watch callback. */
void kv_store_unwatch(struct kv_store *s, uint64_t id);

/* Number of stored keys (expired ones included until purged) and the sum of
 * their value sizes. Zeroes on a local fault. */
void kv_store_stats(struct kv_store *s, uint64_t *n_keys,
                    uint64_t *value_bytes);

/* ------------------------------------------------------------------------ */
/* Snapshots. Layout: 4-byte big-endian length L, L bytes of a protobuf
 * SnapshotHeader {format 1, applied index, sha256 of the image, image_len},
 * then the image (sqlite3_serialize of the database). */

/* Writes a snapshot into a buffer obtained from alloc (owned by the caller).
 * Returns 0, or -1 on a local fault. */
int kv_store_snapshot(struct kv_store *s, void *(*alloc)(size_t), void **buf,
                      size_t *len);

/* Validates the snapshot in buf (borrowed) completely (framing, format,
 * length, checksum, sqlite integrity, schema, applied index) and replaces the
 * whole state with it; or changes nothing and returns -1 with a message in
 * err (may be NULL). Returns 0 on success; watches then get the reset call. */
int kv_store_restore(struct kv_store *s, const void *buf, size_t len,
                     char *err, size_t errlen);

/* ------------------------------------------------------------------------ */
/* Validation helpers (also used by the HTTP layer). */

/* Bucket names: [A-Za-z0-9_-]{1,64}. NULL is invalid. */
bool kv_valid_bucket(const char *b);

/* Keys: 1..1024 bytes of [A-Za-z0-9_.=:@/-], not starting with '/', without
 * "..". NULL is invalid. */
bool kv_valid_key(const char *k, size_t len);

#endif
