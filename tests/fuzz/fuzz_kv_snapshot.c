/* Fuzz target: KV snapshots (kv_store_restore in src/kv/kv.h), which arrive
 * from the network through InstallSnapshot.
 *
 * Each input is one snapshot as received (4-byte big-endian header length,
 * protobuf SnapshotHeader, sqlite image). The target restores it into a
 * store, then restores a repaired copy: the same image (cut to a
 * multiple of 512 bytes) behind a header with format 1, the input header's
 * index (0 when it does not decode) and the image's real length and
 * SHA-256. Without the repair no mutation of the image would get past the
 * checksum, and the sqlite checks behind it would never be fuzzed.
 *
 * When a restore succeeds, the store is used the way a node would use it:
 * stats, lists and gets of what is there, a put, a txn, a nonce claim and a
 * purge of everything that expires, then a snapshot that must restore into
 * another fresh store. A restore that fails must leave the store as it was.
 * Any violation aborts. Seeds: kv_store_snapshot() outputs (gen_corpus.c). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "kv.pb-c.h"
#include "kv/kv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The restore code refuses longer headers; the repair keeps to it. */
#define MAX_HEADER 256

static volatile size_t sink;

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_kv_snapshot: invariant violated: %s\n", what);
        abort();
    }
}

static void touch_entry(const struct kv_entry *e)
{
    size_t sum = strlen(e->bucket) + strlen(e->key);
    const uint8_t *v = e->value;

    for (size_t i = 0; i < e->value_len; i++) {
        sum += v[i];
    }
    sink += sum;
}

static int reset_calls;

static void watch_cb(void *arg, const struct kv_entry *e, bool deleted)
{
    (void)arg;
    (void)deleted;
    if (e == NULL) {
        reset_calls++;
    } else {
        touch_entry(e);
    }
}

/* Keys a listing saw, to get them one by one afterwards. */
struct seen {
    char keys[8][KV_MAX_KEY + 1];
    size_t n;
};

static int list_cb(void *arg, const struct kv_entry *e)
{
    struct seen *seen = arg;

    touch_entry(e);
    if (seen->n < 8) {
        snprintf(seen->keys[seen->n++], sizeof seen->keys[0], "%s", e->key);
    }
    return 0;
}

/* Lists a bucket (also a prefixed and a paged listing), gets the keys. */
static void read_bucket(struct kv_store *s, const char *bucket)
{
    struct seen seen;
    bool more = false;
    int rv;

    seen.n = 0;
    rv = kv_store_list(s, bucket, NULL, NULL, 0, list_cb, &seen, &more);
    check(rv == KV_OK || rv == KV_INTERNAL, "list: no invalid argument");
    for (size_t i = 0; i < seen.n; i++) {
        struct kv_entry e;
        if (kv_store_get(s, bucket, seen.keys[i], &e) == KV_OK) {
            touch_entry(&e);
            kv_entry_clear(&e);
        }
    }
    if (seen.n > 0) {
        char prefix[2] = { seen.keys[0][0], '\0' };
        struct seen again;
        again.n = 0;
        kv_store_list(s, bucket, prefix, NULL, 2, list_cb, &again, &more);
        again.n = 0;
        kv_store_list(s, bucket, NULL, seen.keys[0], 1, list_cb, &again,
                      &more);
    }
}

/* Entries applied after a successful restore, encoded once. */
static struct {
    void *buf;
    size_t len;
} entries[5];

static void encode_entries(void)
{
    static const char value[] = "after restore";
    static const struct kv_compare cmp = { "b", "k1", 0 };
    static const struct kv_op txn_ops[2] = {
        { KV_OP_PUT, "b", "k1", "t", 1, 0, 0 },
        { KV_OP_DELETE, "b", "k2", NULL, 0, 0, 0 },
    };
    struct kv_cmd cmds[5];

    if (entries[0].buf != NULL) {
        return;
    }
    memset(cmds, 0, sizeof cmds);
    for (int i = 0; i < 5; i++) {
        memset(cmds[i].request_id, 0xf0 + i, KV_REQUEST_ID_LEN);
        cmds[i].stamp = 1700000000000;
    }
    cmds[0].kind = KV_CMD_OP;
    cmds[0].op = (struct kv_op){ KV_OP_PUT, "b", "fuzz/after", value,
                                 sizeof value - 1, 0, 1700000100000 };
    cmds[1].kind = KV_CMD_TXN;
    cmds[1].txn.compares = &cmp;
    cmds[1].txn.n_compares = 1;
    cmds[1].txn.success = &txn_ops[0];
    cmds[1].txn.n_success = 1;
    cmds[1].txn.failure = &txn_ops[1];
    cmds[1].txn.n_failure = 1;
    cmds[2].kind = KV_CMD_NONCE;
    cmds[2].nonce.nonce = "fuzz-nonce";
    cmds[2].nonce.expires_at = 1700000200000;
    cmds[3].kind = KV_CMD_PURGE;
    cmds[3].purge.now = INT64_MAX;
    cmds[4].kind = KV_CMD_OP;
    cmds[4].op = (struct kv_op){ KV_OP_DELETE, "b", "k1", NULL, 0, 0, 0 };
    for (int i = 0; i < 5; i++) {
        check(kv_cmd_encode(&cmds[i], malloc, &entries[i].buf,
                            &entries[i].len) == KV_OK,
              "encode a fixed entry");
    }
}

/* Stores live for the whole run: a restore either replaces everything or
 * changes nothing, so an input's outcome does not depend on the ones
 * before it, and opening stores (schema, prepared statements) would cost
 * more than most inputs. `target` receives the fuzzed snapshots, `other`
 * the round trip in use_store(). */
static struct kv_store *target;
static struct kv_store *other;

/* Uses a freshly restored store the way a node would. */
static void use_store(struct kv_store *s)
{
    uint64_t n_keys = 0;
    uint64_t bytes = 0;
    uint64_t applied = kv_store_applied_index(s);
    void *snap = NULL;
    size_t snap_len = 0;
    char err[256];

    kv_store_stats(s, &n_keys, &bytes);
    read_bucket(s, "b");
    read_bucket(s, KV_NONCE_BUCKET);

    encode_entries();
    for (int i = 0; i < 5 && applied < (uint64_t)INT64_MAX; i++) {
        struct kv_result res;
        applied++;
        if (kv_store_apply(s, applied, entries[i].buf, entries[i].len,
                           &res) != 0) {
            fprintf(stderr, "fuzz_kv_snapshot: apply: %s\n",
                    kv_store_errmsg(s));
            check(false, "apply after a restore: no local fault");
        }
        check(res.code != KV_INVALID && res.code != KV_INTERNAL,
              "apply after a restore: a valid result");
        check(kv_store_applied_index(s) == applied,
              "apply after a restore moves the index");
    }
    read_bucket(s, "b");

    check(kv_store_snapshot(s, malloc, &snap, &snap_len) == 0,
          "snapshot a restored store");
    if (kv_store_restore(other, snap, snap_len, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_kv_snapshot: restore: %s\n", err);
        check(false, "the snapshot of a restored store restores");
    }
    check(kv_store_applied_index(other) == kv_store_applied_index(s),
          "the applied index survives a snapshot");
    free(snap);
}

static void open_stores(void)
{
    struct kv_result res;
    void *noop = NULL;
    size_t noop_len = 0;
    struct kv_cmd cmd;
    uint64_t wid;

    if (target != NULL) {
        return;
    }
    check(kv_store_open(&target, NULL, 0) == 0, "open a store");
    check(kv_store_open(&other, NULL, 0) == 0, "open a second store");
    check(kv_store_watch(target, "b", NULL, watch_cb, NULL, &wid) == KV_OK,
          "watch");
    /* Something to lose: index 1 applied before any restore. */
    memset(&cmd, 0, sizeof cmd);
    cmd.kind = KV_CMD_NOOP;
    check(kv_cmd_encode(&cmd, malloc, &noop, &noop_len) == KV_OK,
          "encode a noop");
    check(kv_store_apply(target, 1, noop, noop_len, &res) == 0,
          "apply a noop");
    free(noop);
}

static void restore_one(const uint8_t *buf, size_t len)
{
    uint64_t before;
    uint64_t keys_before;
    uint64_t bytes_before;
    uint64_t keys;
    uint64_t bytes;
    char err[256];
    int rv;

    open_stores();
    before = kv_store_applied_index(target);
    kv_store_stats(target, &keys_before, &bytes_before);
    reset_calls = 0;
    err[0] = '\0';
    rv = kv_store_restore(target, buf, len, err, sizeof err);
    if (rv != 0) {
        check(rv == -1, "restore returns 0 or -1");
        check(err[0] != '\0', "a failed restore says why");
        check(reset_calls == 0, "a failed restore fires no watch");
        kv_store_stats(target, &keys, &bytes);
        check(kv_store_applied_index(target) == before &&
                  keys == keys_before && bytes == bytes_before,
              "a failed restore changes nothing");
    } else {
        check(reset_calls == 1, "a restore resets every watch once");
        use_store(target);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Unibus__Kv__SnapshotHeader h = UNIBUS__KV__SNAPSHOT_HEADER__INIT;
    Unibus__Kv__SnapshotHeader *in = NULL;
    uint8_t digest[SHA256_DIGEST_LENGTH];
    const uint8_t *image;
    size_t image_len;
    size_t hlen;
    size_t total;
    uint8_t *fixed;

    restore_one(data, size);

    /* Repair: same image, correct header. */
    if (size < 4) {
        return 0;
    }
    hlen = (size_t)data[0] << 24 | (size_t)data[1] << 16 |
           (size_t)data[2] << 8 | data[3];
    if (hlen <= MAX_HEADER && hlen <= size - 4) {
        in = unibus__kv__snapshot_header__unpack(NULL, hlen, data + 4);
    } else {
        hlen = 0;
    }
    image = data + 4 + hlen;
    image_len = (size - 4 - hlen) & ~(size_t)511;
    if (image_len == 0) {
        unibus__kv__snapshot_header__free_unpacked(in, NULL);
        return 0;
    }
    SHA256(image, image_len, digest);
    h.format = 1;
    h.index = in != NULL ? in->index : 0;
    h.sha256.data = digest;
    h.sha256.len = sizeof digest;
    h.image_len = image_len;
    unibus__kv__snapshot_header__free_unpacked(in, NULL);

    hlen = unibus__kv__snapshot_header__get_packed_size(&h);
    total = 4 + hlen + image_len;
    fixed = malloc(total);
    if (fixed == NULL) {
        abort();
    }
    fixed[0] = (uint8_t)(hlen >> 24);
    fixed[1] = (uint8_t)(hlen >> 16);
    fixed[2] = (uint8_t)(hlen >> 8);
    fixed[3] = (uint8_t)hlen;
    unibus__kv__snapshot_header__pack(&h, fixed + 4);
    memcpy(fixed + 4 + hlen, image, image_len);
    if (total != size || memcmp(fixed, data, size) != 0) {
        restore_one(fixed, total);
    }
    free(fixed);
    return 0;
}
