/* The control plane's records in the KV and the transactions that change
 * them. Layout (buckets):
 *   members  HANDLE                 -> member JSON
 *   nkeys    SIGN_PUB               -> HANDLE (one member per signing key)
 *   rooms    ROOM                   -> room JSON
 *   sealed   ROOM/EPOCH/HANDLE      -> ciphertext bytes (opaque)
 *   blobs    SHA256                 -> blob JSON
 *   blobdata SHA256/NNNN            -> chunk bytes
 *   _ctl     bootstrapped           -> "1" once the first admin exists
 * Invariants are kept by txns whose compares pin every record they read. */
#ifndef CTL_RECORDS_H
#define CTL_RECORDS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kv/kv.h"

#define CTL_NAME_MAX 64
#define CTL_MAX_ROOM_MEMBERS 100
#define CTL_BLOB_CHUNK (512 * 1024)

#define CTL_B_MEMBERS "members"
#define CTL_B_NKEYS "nkeys"
#define CTL_B_ROOMS "rooms"
#define CTL_B_SEALED "sealed"
#define CTL_B_BLOBS "blobs"
#define CTL_B_BLOBDATA "blobdata"
#define CTL_B_META "_ctl"

struct ctl_member {
    char handle[CTL_NAME_MAX + 1];
    bool admin;
    char sign_pub[64];
    char box_pub[64]; /* empty for a bootstrap admin */
    int64_t created;  /* unix seconds */
    uint64_t revision;
};

struct ctl_room {
    char name[CTL_NAME_MAX + 1];
    char owner[CTL_NAME_MAX + 1];
    uint64_t epoch;
    int64_t created;
    unsigned n_members;
    char members[CTL_MAX_ROOM_MEMBERS][CTL_NAME_MAX + 1];
    uint64_t revision;
};

/* [a-z0-9][a-z0-9_-]{0,63} */
bool ctl_name_valid(const char *s);

/* 0 found, 1 absent, -1 corrupt record. */
int ctl_member_load(struct kv_store *kv, const char *handle,
                    struct ctl_member *out);
int ctl_room_load(struct kv_store *kv, const char *name, struct ctl_room *out);

json_t *ctl_member_json(const struct ctl_member *m);
json_t *ctl_room_json(const struct ctl_room *r);
/* Serialised record for the KV (malloc'd, NUL-terminated). */
char *ctl_member_dump(const struct ctl_member *m);
char *ctl_room_dump(const struct ctl_room *r);

int ctl_room_find_member(const struct ctl_room *r, const char *handle);

/* A txn under construction. Strings and values are copied in, so callers may
 * pass temporaries. */
struct ctl_txn;

struct ctl_txn *ctl_txn_new(void);
void ctl_txn_free(struct ctl_txn *t);
/* Pins bucket/key at revision (0 = absent). */
int ctl_txn_compare(struct ctl_txn *t, const char *bucket, const char *key,
                    uint64_t revision);
int ctl_txn_put(struct ctl_txn *t, const char *bucket, const char *key,
                const void *value, size_t len);
int ctl_txn_delete(struct ctl_txn *t, const char *bucket, const char *key);
size_t ctl_txn_ops(const struct ctl_txn *t);
/* Fills cmd (kind TXN) with pointers into t; valid while t lives. */
void ctl_txn_fill(struct ctl_txn *t, struct kv_cmd *cmd);

#endif
