/* Fuzz target: raft entries of the meta group (src/kv/kv.h), which arrive
 * from the network through AppendEntries and are applied on every node.
 *
 * Each input is one entry as libraft hands it to the FSM (4-byte
 * little-endian length, protobuf Command, zero padding to 8 bytes). The
 * target checks it twice: as given, and with the envelope repaired (the
 * announced message bytes re-framed with a correct length and padding), so
 * that mutations of the protobuf body are not all stopped by the envelope
 * check. For each of the two entries:
 *   - kv_cmd_decode(); a decoded command validates, re-encodes, and its
 *     re-encoding decodes and re-encodes to the same bytes;
 *   - kv_store_apply() at index 1 on a fresh store with a watch: never a
 *     local fault; an undecodable entry gives KV_INVALID and changes
 *     nothing; a decodable one moves the applied index; applying it again
 *     (index 2) returns the stored result of its request id; a single
 *     successful write is visible through kv_store_get();
 *   - after a successful apply, the snapshot restores into a fresh store and
 *     the restored store snapshots to the same bytes.
 * Any violation aborts. Seeds: kv_cmd_encode() outputs (gen_corpus.c). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv/kv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile size_t sink;

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_kv_entry: invariant violated: %s\n", what);
        abort();
    }
}

/* Touches every byte a watch or list callback is handed. */
static void touch_entry(const struct kv_entry *e)
{
    size_t sum = strlen(e->bucket) + strlen(e->key);
    const uint8_t *v = e->value;

    for (size_t i = 0; i < e->value_len; i++) {
        sum += v[i];
    }
    sink += sum;
}

static void watch_cb(void *arg, const struct kv_entry *e, bool deleted)
{
    (void)arg;
    if (e != NULL) {
        check(!deleted || e->value == NULL, "a delete event has no value");
        touch_entry(e);
    }
}

static int list_cb(void *arg, const struct kv_entry *e)
{
    size_t *n = arg;
    touch_entry(e);
    (*n)++;
    return 0;
}

static bool same_result(const struct kv_result *a, const struct kv_result *b)
{
    return a->code == b->code && a->revision == b->revision &&
           a->txn_succeeded == b->txn_succeeded && a->purged == b->purged;
}

/* Encodes cmd; checks that the encoding decodes and re-encodes to itself. */
static void check_roundtrip(const struct kv_cmd *cmd)
{
    void *e1 = NULL;
    void *e2 = NULL;
    size_t l1 = 0;
    size_t l2 = 0;
    struct kv_cmd *again = NULL;

    check(kv_cmd_validate(cmd) == KV_OK, "a decoded command validates");
    check(kv_cmd_encode(cmd, malloc, &e1, &l1) == KV_OK,
          "a decoded command encodes");
    check(l1 >= 8 && l1 % 8 == 0, "an encoding is padded to 8 bytes");
    check(kv_cmd_decode(e1, l1, &again) == KV_OK, "an encoding decodes");
    check(kv_cmd_encode(again, malloc, &e2, &l2) == KV_OK,
          "a re-decoded command encodes");
    check(l1 == l2 && memcmp(e1, e2, l1) == 0, "encoding is stable");
    kv_cmd_free(again);
    free(e1);
    free(e2);
}

/* After a successful single write, the key reads back as written. */
static void check_op_visible(struct kv_store *s, const struct kv_cmd *cmd,
                             const struct kv_result *res)
{
    const struct kv_op *op = &cmd->op;
    struct kv_entry e;
    int rv;

    if (cmd->kind != KV_CMD_OP || res->code != KV_OK) {
        return;
    }
    rv = kv_store_get(s, op->bucket, op->key, &e);
    if (op->type == KV_OP_DELETE) {
        check(rv == KV_NOT_FOUND, "a deleted key is gone");
        return;
    }
    check(rv == KV_OK, "a written key is there");
    check(e.revision == res->revision && e.expires_at == op->expires_at &&
              e.value_len == op->value_len &&
              (op->value_len == 0 ||
               memcmp(e.value, op->value, op->value_len) == 0),
          "a written key reads back as written");
    kv_entry_clear(&e);
}

/* A snapshot of s restores into a fresh store, which snapshots the same. */
static void check_snapshot(struct kv_store *s)
{
    struct kv_store *r = NULL;
    void *a = NULL;
    void *b = NULL;
    size_t la = 0;
    size_t lb = 0;
    char err[256];

    check(kv_store_snapshot(s, malloc, &a, &la) == 0, "snapshot");
    check(kv_store_open(&r, NULL, 0) == 0, "open a second store");
    if (kv_store_restore(r, a, la, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_kv_entry: restore: %s\n", err);
        check(false, "a snapshot restores");
    }
    check(kv_store_applied_index(r) == kv_store_applied_index(s),
          "restore keeps the applied index");
    check(kv_store_snapshot(r, malloc, &b, &lb) == 0, "snapshot again");
    check(la == lb && memcmp(a, b, la) == 0, "snapshots are deterministic");
    kv_store_close(r);
    free(a);
    free(b);
}

/* A fresh store with two watches. An invalid entry changes nothing, so the
 * store is kept for the next input until an entry applies (opening a store
 * costs more than most inputs). */
static struct kv_store *pristine;

static struct kv_store *fresh_store(void)
{
    struct kv_store *s = pristine;
    uint64_t wid = 0;

    pristine = NULL;
    if (s != NULL) {
        return s;
    }
    check(kv_store_open(&s, NULL, 0) == 0, "open a store");
    check(kv_store_watch(s, "b", NULL, watch_cb, NULL, &wid) == KV_OK,
          "watch");
    check(kv_store_watch(s, KV_NONCE_BUCKET, "", watch_cb, NULL, &wid) ==
              KV_OK,
          "watch nonces");
    return s;
}

static void check_entry(const uint8_t *buf, size_t len)
{
    struct kv_cmd *cmd = NULL;
    struct kv_store *s;
    struct kv_result res;
    struct kv_result res2;
    size_t listed = 0;
    uint64_t n_keys = 0;
    uint64_t bytes = 0;
    int dec;

    dec = kv_cmd_decode(buf, len, &cmd);
    check(dec == KV_OK || dec == KV_INVALID, "decode: ok or invalid");
    check((dec == KV_OK) == (cmd != NULL), "decode output set on success");
    if (cmd != NULL) {
        check_roundtrip(cmd);
    }

    s = fresh_store();
    check(kv_store_apply(s, 1, buf, len, &res) == 0, "apply: no fault");
    if (dec != KV_OK) {
        check(res.code == KV_INVALID, "an undecodable entry is invalid");
        check(kv_store_applied_index(s) == 0,
              "an invalid entry changes nothing");
        pristine = s;
    } else {
        check(res.code != KV_INTERNAL, "apply: no internal error");
        check(kv_store_applied_index(s) == 1, "apply moves the index");
        check_op_visible(s, cmd, &res);
        /* The same request again: the stored result, nothing else. */
        check(kv_store_apply(s, 2, buf, len, &res2) == 0,
              "apply again: no fault");
        check(same_result(&res, &res2), "a repeated request id is deduped");
        check(kv_store_result(s, cmd->request_id, &res2) == KV_OK &&
                  same_result(&res, &res2),
              "the result is stored");
        check(kv_store_list(s, "b", NULL, NULL, 0, list_cb, &listed, NULL) ==
                  KV_OK,
              "list");
        kv_store_stats(s, &n_keys, &bytes);
        check(listed <= n_keys, "stats count every listed key");
        check_snapshot(s);
        kv_store_close(s);
    }
    kv_cmd_free(cmd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t n;
    size_t padded;
    uint8_t *fixed;

    if (size > KV_MAX_CMD_BYTES) {
        return 0;
    }
    check_entry(data, size);

    /* The same message bytes in a correct envelope. */
    if (size < 4) {
        return 0;
    }
    n = (size_t)data[0] | (size_t)data[1] << 8 | (size_t)data[2] << 16 |
        (size_t)data[3] << 24;
    if (n > size - 4) {
        n = size - 4;
    }
    padded = (4 + n + 7) & ~(size_t)7;
    fixed = calloc(1, padded);
    if (fixed == NULL) {
        abort();
    }
    fixed[0] = (uint8_t)n;
    fixed[1] = (uint8_t)(n >> 8);
    fixed[2] = (uint8_t)(n >> 16);
    fixed[3] = (uint8_t)(n >> 24);
    memcpy(fixed + 4, data + 4, n);
    if (padded != size || memcmp(fixed, data, size) != 0) {
        check_entry(fixed, padded);
    }
    free(fixed);
    return 0;
}
