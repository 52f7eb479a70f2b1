/* Blobs: content addressed by SHA-256, bound to rooms, replicated through
 * raft to every voter (the chunks are ordinary KV entries), so losing any
 * one node loses no blob.
 *
 * Upload: chunks of CTL_BLOB_CHUNK bytes are written one entry each
 * (blobdata/SHA/NNNN; idempotent, so a retried upload just rewrites them),
 * then one txn records the blob and binds it to the room, pinning the room
 * (the uploader must still be in it). A crash between the two leaves
 * unreferenced chunks that the next upload of the same content reuses.
 * Download: members of any room the blob is bound to, or admins. */
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct upload {
    struct rmw *w; /* a = room, b = caller, data/len = the blob */
    char sha[65];
    unsigned chunks;
    unsigned next;
};

static void hex(const uint8_t *in, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[in[i] >> 4];
        out[2 * i + 1] = d[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static bool sha_valid(const char *s)
{
    if (strlen(s) != 64) {
        return false;
    }
    for (; *s; s++) {
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f'))) {
            return false;
        }
    }
    return true;
}

static json_t *blob_load(struct kv_store *kv, const char *sha, uint64_t *rev)
{
    struct kv_entry e;
    json_t *j = NULL;
    memset(&e, 0, sizeof e);
    if (kv_store_get(kv, CTL_B_BLOBS, sha, &e) == KV_OK) {
        j = json_loadb(e.value, e.value_len, 0, NULL);
        *rev = e.revision;
    }
    kv_entry_clear(&e);
    if (j && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

/* ------------------------------------------------------------------ */
/* upload                                                               */

static int bind_build(struct rmw *w, struct ctl_txn *t)
{
    struct upload *u = w->ctx;
    struct kv_store *kv = meta_kv(w->c->meta);
    struct ctl_room rm;
    uint64_t rev = 0;
    json_t *j, *rooms;
    char *rec;
    bool found = false;
    size_t i;
    json_t *v;

    if (ctl_room_load(kv, w->a, &rm) != 0) {
        http_req_error(w->r, 404, "not_found", "no room '%s'", w->a);
        return -1;
    }
    if (!w->who.admin && ctl_room_find_member(&rm, w->who.handle) < 0) {
        http_req_error(w->r, 403, "forbidden", "you are not in room '%s'",
                       w->a);
        return -1;
    }
    j = blob_load(kv, u->sha, &rev);
    if (j == NULL) {
        j = json_pack("{s:s,s:I,s:i,s:[]}", "sha256", u->sha, "size",
                      (json_int_t)w->len, "chunks", (int)u->chunks, "rooms");
        rev = 0;
    }
    rooms = json_object_get(j, "rooms");
    if (!json_is_array(rooms)) {
        json_decref(j);
        http_req_error(w->r, 500, "internal", "corrupt blob record");
        return -1;
    }
    json_array_foreach(rooms, i, v)
    {
        found = found || (json_is_string(v) &&
                          strcmp(json_string_value(v), w->a) == 0);
    }
    if (!found) {
        json_array_append_new(rooms, json_string(w->a));
    }
    rec = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    if (rec == NULL ||
        ctl_txn_compare(t, CTL_B_ROOMS, rm.name, rm.revision) != 0 ||
        ctl_txn_compare(t, CTL_B_BLOBS, u->sha, rev) != 0 ||
        ctl_txn_put(t, CTL_B_BLOBS, u->sha, rec, strlen(rec)) != 0) {
        free(rec);
        http_req_error(w->r, 503, "internal", "out of memory");
        return -1;
    }
    free(rec);
    return 0;
}

static void bind_done(struct rmw *w, const struct meta_result *res)
{
    struct upload *u = w->ctx;
    (void)res;
    w->c->stats.blob_bytes += w->len;
    http_req_respond_json(w->r, 201,
                          json_pack("{s:s,s:I,s:s}", "sha256", u->sha, "size",
                                    (json_int_t)w->len, "room", w->a));
}

static void write_next_chunk(struct upload *u);

static void chunk_written(void *arg, const struct meta_result *res)
{
    struct upload *u = arg;
    struct rmw *w = u->w;
    if (res->err != META_OK || res->kv.code != KV_OK) {
        if (res->err != META_OK) {
            ctl_meta_error(w->r, res);
        } else {
            http_req_error(w->r, 500, "internal", "chunk write refused (%s)",
                           kv_code_name(res->kv.code));
        }
        free(u);
        free(w->data);
        free(w);
        return;
    }
    u->next++;
    write_next_chunk(u);
}

static void write_next_chunk(struct upload *u)
{
    struct rmw *w = u->w;
    struct kv_cmd cmd;
    char key[80];
    size_t off = (size_t)u->next * CTL_BLOB_CHUNK;

    if (u->next == u->chunks) {
        /* Every chunk is in the log: record and bind the blob; the rmw owns
         * the upload from here on. */
        w->ctx = u;
        rmw_start(w);
        return;
    }
    snprintf(key, sizeof key, "%s/%04u", u->sha, u->next);
    memset(&cmd, 0, sizeof cmd);
    cmd.kind = KV_CMD_OP;
    cmd.op.type = KV_OP_PUT;
    cmd.op.bucket = CTL_B_BLOBDATA;
    cmd.op.key = key;
    cmd.op.value = (const uint8_t *)w->data + off;
    cmd.op.value_len =
        w->len - off < CTL_BLOB_CHUNK ? w->len - off : CTL_BLOB_CHUNK;
    if (meta_write(w->c->meta, &cmd, chunk_written, u) != 0) {
        http_req_error(w->r, 503, "no_leader", "no leader is reachable");
        free(u);
        free(w->data);
        free(w);
    }
}

static void upload_checked(void *arg, const struct meta_result *res)
{
    struct upload *u = arg;
    struct rmw *w = u->w;
    struct kv_store *kv = meta_kv(w->c->meta);
    struct ctl_room rm;
    uint64_t rev;
    json_t *existing;

    if (res->err != META_OK) {
        ctl_meta_error(w->r, res);
        goto fail;
    }
    if (ctl_room_load(kv, w->a, &rm) != 0) {
        http_req_error(w->r, 404, "not_found", "no room '%s'", w->a);
        goto fail;
    }
    if (!w->who.admin && ctl_room_find_member(&rm, w->who.handle) < 0) {
        http_req_error(w->r, 403, "forbidden", "you are not in room '%s'",
                       w->a);
        goto fail;
    }
    existing = blob_load(kv, u->sha, &rev);
    if (existing) {
        /* Same content stored already: only bind it to this room. */
        json_decref(existing);
        u->next = u->chunks;
    }
    write_next_chunk(u);
    return;
fail:
    free(u);
    free(w->data);
    free(w);
}

void ctl_blob_upload(struct ctl *c, struct http_req *r,
                     const struct ctl_caller *who, const char *room)
{
    size_t len;
    const void *body = http_req_body(r, &len);
    uint8_t digest[32];
    unsigned dl = 0;
    struct upload *u;
    struct rmw *w;

    if (len == 0) {
        http_req_error(r, 400, "empty_blob", "the body is the blob; it is "
                                             "empty");
        return;
    }
    if (len > c->cfg.blob_max) {
        http_req_error(r, 413, "blob_too_large", "blobs are at most %zu bytes",
                       c->cfg.blob_max);
        return;
    }
    u = calloc(1, sizeof *u);
    w = rmw_new(c, r, who, bind_build, bind_done);
    if (u == NULL || w == NULL) {
        free(u);
        free(w);
        return;
    }
    w->data = malloc(len);
    if (w->data == NULL ||
        EVP_Digest(body, len, digest, &dl, EVP_sha256(), NULL) != 1) {
        http_req_error(r, 503, "internal", "out of memory");
        free(w->data);
        free(u);
        free(w);
        return;
    }
    memcpy(w->data, body, len);
    w->len = len;
    snprintf(w->a, sizeof w->a, "%s", room);
    hex(digest, sizeof digest, u->sha);
    u->w = w;
    u->chunks = (unsigned)((len + CTL_BLOB_CHUNK - 1) / CTL_BLOB_CHUNK);
    if (ctl_read(c, who, upload_checked, u) != 0) {
        http_req_error(r, 503, "no_leader", "no leader is reachable");
        free(w->data);
        free(u);
        free(w);
    }
}

/* ------------------------------------------------------------------ */
/* download                                                             */

static void download_read(void *arg, const struct meta_result *res)
{
    struct rmw *w = arg;
    struct kv_store *kv = meta_kv(w->c->meta);
    json_int_t size = 0;
    int chunks = 0;
    json_t *j, *rooms = NULL, *v;
    uint64_t rev;
    bool allowed = w->who.admin;
    uint8_t *buf = NULL;
    size_t off = 0, i;

    if (res->err != META_OK) {
        ctl_meta_error(w->r, res);
        free(w);
        return;
    }
    j = blob_load(kv, w->b, &rev);
    if (j == NULL ||
        json_unpack(j, "{s:I,s:i,s:o}", "size", &size, "chunks", &chunks,
                    "rooms", &rooms) != 0 ||
        size < 0 || chunks < 0) {
        json_decref(j);
        http_req_error(w->r, 404, "not_found", "no blob %s", w->b);
        free(w);
        return;
    }
    json_array_foreach(rooms, i, v)
    {
        struct ctl_room rm;
        if (!allowed && json_is_string(v) &&
            ctl_room_load(kv, json_string_value(v), &rm) == 0 &&
            ctl_room_find_member(&rm, w->who.handle) >= 0) {
            allowed = true;
        }
    }
    if (!allowed) {
        json_decref(j);
        http_req_error(w->r, 403, "forbidden",
                       "only members of the blob's rooms read it");
        free(w);
        return;
    }
    buf = malloc((size_t)size ? (size_t)size : 1);
    for (int c = 0; buf && c < chunks; c++) {
        struct kv_entry e;
        char key[80];
        snprintf(key, sizeof key, "%s/%04d", w->b, c);
        memset(&e, 0, sizeof e);
        if (kv_store_get(kv, CTL_B_BLOBDATA, key, &e) != KV_OK ||
            off + e.value_len > (size_t)size) {
            kv_entry_clear(&e);
            free(buf);
            buf = NULL;
            break;
        }
        memcpy(buf + off, e.value, e.value_len);
        off += e.value_len;
        kv_entry_clear(&e);
    }
    json_decref(j);
    if (buf == NULL || off != (size_t)size) {
        http_req_error(w->r, 500, "internal", "blob %s is incomplete", w->b);
    } else {
        http_req_respond(w->r, 200, "application/octet-stream", buf, off);
    }
    free(buf);
    free(w);
}

void ctl_blobs_get(struct ctl *c, struct http_req *r,
                   const struct ctl_caller *who, const char *sha)
{
    struct rmw *w;
    if (strcmp(http_req_method(r), "GET") != 0) {
        http_req_error(r, 405, "method_not_allowed", "use GET");
        return;
    }
    if (!sha_valid(sha)) {
        http_req_error(r, 400, "invalid_sha256",
                       "blobs are named by 64 lower-case hex digits");
        return;
    }
    w = rmw_new(c, r, who, NULL, NULL);
    if (w == NULL) {
        return;
    }
    snprintf(w->b, sizeof w->b, "%s", sha);
    if (ctl_read(c, who, download_read, w) != 0) {
        http_req_error(r, 503, "no_leader", "no leader is reachable");
        free(w);
    }
}
