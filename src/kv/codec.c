/* Encoding and decoding of KV commands and snapshot headers (proto/kv.proto),
 * and the validation rules every command must pass. The encoder and the
 * decoder run the same validation, so a command that encodes also applies,
 * and an entry that bypassed the encoder is judged by the same rules. */
#include <stdlib.h>
#include <string.h>

#include "kv.pb-c.h"
#include "kv/internal.h"
#include "kv/kv.h"

/* Length prefix plus worst-case padding of the raft entry envelope. */
#define ENTRY_OVERHEAD 12

/* What kv_cmd_decode hands out: the public struct first, so that a
 * `struct kv_cmd *` converts back to its holder. */
struct decoded {
    struct kv_cmd cmd;
    Unibus__Kv__Command *msg; /* owned; strings and values point into it */
    struct kv_op *ops;        /* owned: success ops, then failure ops */
    struct kv_compare *cmps;  /* owned */
    ProtobufCAllocator pa;    /* unpacks msg and frees it */
    bool oom;                 /* an allocation of the unpacker failed */
};

const char *kv_code_name(enum kv_code code)
{
    switch (code) {
        case KV_OK:
            return "ok";
        case KV_NOT_FOUND:
            return "not_found";
        case KV_EXISTS:
            return "exists";
        case KV_REVISION_MISMATCH:
            return "revision_mismatch";
        case KV_NONCE_REUSED:
            return "nonce_reused";
        case KV_INVALID:
            return "invalid";
        case KV_TXN_FAILED:
            return "txn_failed";
        case KV_INTERNAL:
            return "internal";
    }
    return "unknown";
}

/* ------------------------------------------------------------------------ */
/* Validation. */

static bool is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '_' || c == '-';
}

static bool is_key_char(char c)
{
    return is_name_char(c) || c == '.' || c == '=' || c == ':' || c == '@' ||
           c == '/';
}

bool kv_valid_bucket(const char *b)
{
    size_t i;

    if (b == NULL) {
        return false;
    }
    for (i = 0; b[i] != '\0'; i++) {
        if (i >= KV_MAX_BUCKET || !is_name_char(b[i])) {
            return false;
        }
    }
    return i > 0;
}

bool kv_valid_key(const char *k, size_t len)
{
    size_t i;

    if (k == NULL || len == 0 || len > KV_MAX_KEY || k[0] == '/') {
        return false;
    }
    for (i = 0; i < len; i++) {
        if (!is_key_char(k[i])) {
            return false;
        }
        if (i > 0 && k[i] == '.' && k[i - 1] == '.') {
            return false;
        }
    }
    return true;
}

/* A NUL-terminated key of at most KV_MAX_KEY bytes that passes
 * kv_valid_key. */
static bool valid_key_str(const char *k)
{
    return k != NULL && kv_valid_key(k, strnlen(k, KV_MAX_KEY + 1));
}

static int validate_op(const struct kv_op *op, size_t *value_total)
{
    if (!kv_valid_bucket(op->bucket) || !valid_key_str(op->key)) {
        return KV_INVALID;
    }
    if (op->value_len > KV_MAX_VALUE ||
        (op->value == NULL && op->value_len > 0) || op->expires_at < 0) {
        return KV_INVALID;
    }
    switch (op->type) {
        case KV_OP_PUT:
        case KV_OP_CREATE:
            if (op->revision != 0) {
                return KV_INVALID;
            }
            break;
        case KV_OP_UPDATE:
            if (op->revision == 0) {
                return KV_INVALID;
            }
            break;
        case KV_OP_DELETE:
            if (op->value_len != 0 || op->expires_at != 0) {
                return KV_INVALID;
            }
            break;
        default:
            return KV_INVALID;
    }
    *value_total += op->value_len;
    return KV_OK;
}

static int validate_ops(const struct kv_op *ops, size_t n, size_t *total)
{
    size_t i;

    if (n > KV_MAX_TXN_OPS || (n > 0 && ops == NULL)) {
        return KV_INVALID;
    }
    for (i = 0; i < n; i++) {
        if (validate_op(&ops[i], total) != KV_OK) {
            return KV_INVALID;
        }
    }
    return KV_OK;
}

static int validate_claim(const struct kv_cmd *cmd)
{
    if (cmd->claim.nonce == NULL) {
        return KV_OK;
    }
    if (strnlen(cmd->claim.nonce, KV_MAX_NONCE + 1) > KV_MAX_NONCE ||
        !valid_key_str(cmd->claim.nonce) || cmd->claim.expires_at <= 0) {
        return KV_INVALID;
    }
    return KV_OK;
}

static int validate_body(const struct kv_cmd *cmd);

int kv_cmd_validate(const struct kv_cmd *cmd)
{
    if (cmd == NULL || validate_claim(cmd) != KV_OK) {
        return KV_INVALID;
    }
    return validate_body(cmd);
}

static int validate_body(const struct kv_cmd *cmd)
{
    size_t total = 0;
    size_t i;

    if (cmd == NULL || cmd->stamp < 0) {
        return KV_INVALID;
    }
    switch (cmd->kind) {
        case KV_CMD_OP:
            return validate_op(&cmd->op, &total);
        case KV_CMD_TXN:
            if (cmd->txn.n_compares > KV_MAX_TXN_OPS ||
                (cmd->txn.n_compares > 0 && cmd->txn.compares == NULL)) {
                return KV_INVALID;
            }
            for (i = 0; i < cmd->txn.n_compares; i++) {
                const struct kv_compare *c = &cmd->txn.compares[i];
                if (!kv_valid_bucket(c->bucket) || !valid_key_str(c->key)) {
                    return KV_INVALID;
                }
            }
            if (validate_ops(cmd->txn.success, cmd->txn.n_success, &total) !=
                    KV_OK ||
                validate_ops(cmd->txn.failure, cmd->txn.n_failure, &total) !=
                    KV_OK ||
                total > KV_MAX_TXN_VALUE) {
                return KV_INVALID;
            }
            return KV_OK;
        case KV_CMD_NONCE:
            if (cmd->nonce.nonce == NULL ||
                strnlen(cmd->nonce.nonce, KV_MAX_NONCE + 1) > KV_MAX_NONCE ||
                !valid_key_str(cmd->nonce.nonce) ||
                cmd->nonce.expires_at <= 0) {
                return KV_INVALID;
            }
            return KV_OK;
        case KV_CMD_PURGE:
            return cmd->purge.now > 0 ? KV_OK : KV_INVALID;
        case KV_CMD_NOOP:
            return KV_OK;
    }
    return KV_INVALID;
}

/* ------------------------------------------------------------------------ */
/* Encoding. */

static void op_to_msg(const struct kv_op *op, Unibus__Kv__Op *m)
{
    unibus__kv__op__init(m);
    m->type = (Unibus__Kv__OpType)op->type;
    /* protobuf-c only reads these while packing. */
    m->bucket = (char *)op->bucket;
    m->key = (char *)op->key;
    m->value.len = op->value_len;
    m->value.data = (uint8_t *)op->value;
    m->revision = op->revision;
    m->expires_at = op->expires_at;
}

/* Scratch space for the txn body: the message structs and the pointer arrays
 * protobuf-c wants. One allocation, freed after packing. */
struct txn_scratch {
    Unibus__Kv__Compare *cmps;
    Unibus__Kv__Compare **cmp_ptrs;
    Unibus__Kv__Op *ops;
    Unibus__Kv__Op **op_ptrs;
};

static void *txn_scratch_alloc(const struct kv_cmd *cmd, Unibus__Kv__Txn *txn,
                               struct txn_scratch *sc)
{
    size_t nc = cmd->txn.n_compares;
    size_t no = cmd->txn.n_success + cmd->txn.n_failure;
    size_t i;
    char *mem;

    mem = malloc(nc * (sizeof *sc->cmps + sizeof *sc->cmp_ptrs) +
                 no * (sizeof *sc->ops + sizeof *sc->op_ptrs) + 1);
    if (mem == NULL) {
        return NULL;
    }
    sc->cmps = (Unibus__Kv__Compare *)(void *)mem;
    sc->ops = (Unibus__Kv__Op *)(void *)(sc->cmps + nc);
    sc->cmp_ptrs = (Unibus__Kv__Compare **)(void *)(sc->ops + no);
    sc->op_ptrs = (Unibus__Kv__Op **)(void *)(sc->cmp_ptrs + nc);

    for (i = 0; i < nc; i++) {
        const struct kv_compare *c = &cmd->txn.compares[i];
        unibus__kv__compare__init(&sc->cmps[i]);
        sc->cmps[i].bucket = (char *)c->bucket;
        sc->cmps[i].key = (char *)c->key;
        sc->cmps[i].revision = c->revision;
        sc->cmp_ptrs[i] = &sc->cmps[i];
    }
    for (i = 0; i < no; i++) {
        const struct kv_op *op = i < cmd->txn.n_success
                                     ? &cmd->txn.success[i]
                                     : &cmd->txn.failure[i - cmd->txn.n_success];
        op_to_msg(op, &sc->ops[i]);
        sc->op_ptrs[i] = &sc->ops[i];
    }
    txn->n_compares = nc;
    txn->compares = nc > 0 ? sc->cmp_ptrs : NULL;
    txn->n_success = cmd->txn.n_success;
    txn->success = cmd->txn.n_success > 0 ? sc->op_ptrs : NULL;
    txn->n_failure = cmd->txn.n_failure;
    txn->failure =
        cmd->txn.n_failure > 0 ? sc->op_ptrs + cmd->txn.n_success : NULL;
    return mem;
}

int kv_cmd_encode(const struct kv_cmd *cmd, void *(*alloc)(size_t), void **buf,
                  size_t *len)
{
    Unibus__Kv__Command msg = UNIBUS__KV__COMMAND__INIT;
    Unibus__Kv__Op op = UNIBUS__KV__OP__INIT;
    Unibus__Kv__Txn txn = UNIBUS__KV__TXN__INIT;
    Unibus__Kv__NonceClaim nonce = UNIBUS__KV__NONCE_CLAIM__INIT;
    Unibus__Kv__Purge purge = UNIBUS__KV__PURGE__INIT;
    Unibus__Kv__Noop noop = UNIBUS__KV__NOOP__INIT;
    Unibus__Kv__NonceClaim claim = UNIBUS__KV__NONCE_CLAIM__INIT;
    struct txn_scratch sc;
    void *scratch = NULL;
    size_t size, padded;
    void *out;
    uint8_t *p;
    int rv;

    if (alloc == NULL || buf == NULL || len == NULL) {
        return KV_INVALID;
    }
    rv = kv_cmd_validate(cmd);
    if (rv != KV_OK) {
        return rv;
    }

    msg.request_id.len = KV_REQUEST_ID_LEN;
    msg.request_id.data = (uint8_t *)cmd->request_id;
    msg.stamp = cmd->stamp;
    if (cmd->claim.nonce != NULL) {
        claim.nonce = (char *)cmd->claim.nonce;
        claim.expires_at = cmd->claim.expires_at;
        msg.claim = &claim;
    }
    switch (cmd->kind) {
        case KV_CMD_OP:
            op_to_msg(&cmd->op, &op);
            msg.body_case = UNIBUS__KV__COMMAND__BODY_OP;
            msg.op = &op;
            break;
        case KV_CMD_TXN:
            scratch = txn_scratch_alloc(cmd, &txn, &sc);
            if (scratch == NULL) {
                return KV_INTERNAL;
            }
            msg.body_case = UNIBUS__KV__COMMAND__BODY_TXN;
            msg.txn = &txn;
            break;
        case KV_CMD_NONCE:
            nonce.nonce = (char *)cmd->nonce.nonce;
            nonce.expires_at = cmd->nonce.expires_at;
            msg.body_case = UNIBUS__KV__COMMAND__BODY_NONCE;
            msg.nonce = &nonce;
            break;
        case KV_CMD_PURGE:
            purge.now = cmd->purge.now;
            msg.body_case = UNIBUS__KV__COMMAND__BODY_PURGE;
            msg.purge = &purge;
            break;
        case KV_CMD_NOOP:
            msg.body_case = UNIBUS__KV__COMMAND__BODY_NOOP;
            msg.noop = &noop;
            break;
    }

    size = unibus__kv__command__get_packed_size(&msg);
    if (size > KV_MAX_CMD_BYTES - ENTRY_OVERHEAD) {
        free(scratch);
        return KV_INVALID;
    }
    /* Entry envelope: libraft's disk format wants payloads in multiples of
     * 8 bytes, so a 4-byte little-endian length precedes the message and
     * zero bytes pad it. */
    padded = (4 + size + 7) & ~(size_t)7;
    out = alloc(padded);
    if (out == NULL) {
        free(scratch);
        return KV_INTERNAL;
    }
    p = out;
    p[0] = (uint8_t)size;
    p[1] = (uint8_t)(size >> 8);
    p[2] = (uint8_t)(size >> 16);
    p[3] = (uint8_t)(size >> 24);
    unibus__kv__command__pack(&msg, p + 4);
    memset(p + 4 + size, 0, padded - 4 - size);
    free(scratch);
    *buf = out;
    *len = padded;
    return KV_OK;
}

/* ------------------------------------------------------------------------ */
/* Decoding. */

static int op_from_msg(const Unibus__Kv__Op *m, struct kv_op *op)
{
    if (m == NULL) {
        return KV_INVALID;
    }
    if (m->type < UNIBUS__KV__OP_TYPE__OP_PUT ||
        m->type > UNIBUS__KV__OP_TYPE__OP_DELETE) {
        return KV_INVALID;
    }
    op->type = (enum kv_op_type)m->type;
    op->bucket = m->bucket;
    op->key = m->key;
    op->value = m->value.len > 0 ? m->value.data : NULL;
    op->value_len = m->value.len;
    op->revision = m->revision;
    op->expires_at = m->expires_at;
    return KV_OK;
}

static int txn_from_msg(struct decoded *d, const Unibus__Kv__Txn *t)
{
    size_t no;
    size_t i;

    if (t == NULL || t->n_compares > KV_MAX_TXN_OPS ||
        t->n_success > KV_MAX_TXN_OPS || t->n_failure > KV_MAX_TXN_OPS) {
        return KV_INVALID;
    }
    no = t->n_success + t->n_failure;
    d->cmps = calloc(t->n_compares + 1, sizeof *d->cmps);
    d->ops = calloc(no + 1, sizeof *d->ops);
    if (d->cmps == NULL || d->ops == NULL) {
        return KV_INTERNAL;
    }
    for (i = 0; i < t->n_compares; i++) {
        if (t->compares[i] == NULL) {
            return KV_INVALID;
        }
        d->cmps[i].bucket = t->compares[i]->bucket;
        d->cmps[i].key = t->compares[i]->key;
        d->cmps[i].revision = t->compares[i]->revision;
    }
    for (i = 0; i < t->n_success; i++) {
        if (op_from_msg(t->success[i], &d->ops[i]) != KV_OK) {
            return KV_INVALID;
        }
    }
    for (i = 0; i < t->n_failure; i++) {
        if (op_from_msg(t->failure[i], &d->ops[t->n_success + i]) != KV_OK) {
            return KV_INVALID;
        }
    }
    d->cmd.txn.compares = d->cmps;
    d->cmd.txn.n_compares = t->n_compares;
    d->cmd.txn.success = d->ops;
    d->cmd.txn.n_success = t->n_success;
    d->cmd.txn.failure = d->ops + t->n_success;
    d->cmd.txn.n_failure = t->n_failure;
    return KV_OK;
}

static int body_from_msg(struct decoded *d)
{
    const Unibus__Kv__Command *m = d->msg;

    switch (m->body_case) {
        case UNIBUS__KV__COMMAND__BODY_OP:
            d->cmd.kind = KV_CMD_OP;
            return op_from_msg(m->op, &d->cmd.op);
        case UNIBUS__KV__COMMAND__BODY_TXN:
            d->cmd.kind = KV_CMD_TXN;
            return txn_from_msg(d, m->txn);
        case UNIBUS__KV__COMMAND__BODY_NONCE:
            if (m->nonce == NULL) {
                return KV_INVALID;
            }
            d->cmd.kind = KV_CMD_NONCE;
            d->cmd.nonce.nonce = m->nonce->nonce;
            d->cmd.nonce.expires_at = m->nonce->expires_at;
            return KV_OK;
        case UNIBUS__KV__COMMAND__BODY_PURGE:
            if (m->purge == NULL) {
                return KV_INVALID;
            }
            d->cmd.kind = KV_CMD_PURGE;
            d->cmd.purge.now = m->purge->now;
            return KV_OK;
        case UNIBUS__KV__COMMAND__BODY_NOOP:
            d->cmd.kind = KV_CMD_NOOP;
            return KV_OK;
        default:
            return KV_INVALID;
    }
}

/* protobuf-c returns NULL both for malformed input and for a failed
 * allocation. The two must not be confused: malformed input is rejected the
 * same way on every node, a local allocation failure is a local fault. */
static void *pb_alloc(void *data, size_t size)
{
    struct decoded *d = data;
    void *p = malloc(size);

    if (p == NULL) {
        d->oom = true;
    }
    return p;
}

static void pb_free(void *data, void *p)
{
    (void)data;
    free(p);
}

int kv_cmd_decode(const void *buf, size_t len, struct kv_cmd **out)
{
    struct decoded *d;
    int rv;

    *out = NULL;
    if (buf == NULL || len < 8 || len % 8 != 0 || len > KV_MAX_CMD_BYTES) {
        return KV_INVALID;
    }
    {
        const uint8_t *b = buf;
        size_t n = (size_t)b[0] | (size_t)b[1] << 8 | (size_t)b[2] << 16 |
                   (size_t)b[3] << 24;
        /* The envelope must be exact: length, message, fewer than 8 zero
         * bytes of padding. */
        if (n == 0 || n > len - 4 || len - 4 - n >= 8) {
            return KV_INVALID;
        }
        for (size_t i = 4 + n; i < len; i++) {
            if (b[i] != 0) {
                return KV_INVALID;
            }
        }
        buf = b + 4;
        len = n;
    }
    d = calloc(1, sizeof *d);
    if (d == NULL) {
        return KV_INTERNAL;
    }
    d->pa.alloc = pb_alloc;
    d->pa.free = pb_free;
    d->pa.allocator_data = d;
    d->msg = unibus__kv__command__unpack(&d->pa, len, buf);
    if (d->msg == NULL) {
        rv = d->oom ? KV_INTERNAL : KV_INVALID;
        goto err_after_alloc;
    }
    if (d->msg->request_id.len != KV_REQUEST_ID_LEN) {
        rv = KV_INVALID;
        goto err_after_alloc;
    }
    memcpy(d->cmd.request_id, d->msg->request_id.data, KV_REQUEST_ID_LEN);
    if (d->msg->claim != NULL) {
        d->cmd.claim.nonce = d->msg->claim->nonce;
        d->cmd.claim.expires_at = d->msg->claim->expires_at;
    }
    d->cmd.stamp = d->msg->stamp;
    rv = body_from_msg(d);
    if (rv != KV_OK) {
        goto err_after_alloc;
    }
    rv = kv_cmd_validate(&d->cmd);
    if (rv != KV_OK) {
        goto err_after_alloc;
    }
    *out = &d->cmd;
    return KV_OK;

err_after_alloc:
    kv_cmd_free(&d->cmd);
    return rv;
}

void kv_cmd_free(struct kv_cmd *cmd)
{
    struct decoded *d = (struct decoded *)(void *)cmd;

    if (d == NULL) {
        return;
    }
    if (d->msg != NULL) {
        unibus__kv__command__free_unpacked(d->msg, &d->pa);
    }
    free(d->ops);
    free(d->cmps);
    free(d);
}

/* ------------------------------------------------------------------------ */
/* Snapshot header. */

static void header_to_msg(const struct kv__snapshot_header *h,
                          Unibus__Kv__SnapshotHeader *m)
{
    unibus__kv__snapshot_header__init(m);
    m->format = h->format;
    m->index = h->index;
    m->sha256.len = KV__SHA256_LEN;
    m->sha256.data = (uint8_t *)h->sha256;
    m->image_len = h->image_len;
}

size_t kv__snapshot_header_size(const struct kv__snapshot_header *h)
{
    Unibus__Kv__SnapshotHeader m;

    header_to_msg(h, &m);
    return unibus__kv__snapshot_header__get_packed_size(&m);
}

void kv__snapshot_header_pack(const struct kv__snapshot_header *h,
                              uint8_t *out)
{
    Unibus__Kv__SnapshotHeader m;

    header_to_msg(h, &m);
    unibus__kv__snapshot_header__pack(&m, out);
}

int kv__snapshot_header_unpack(const void *buf, size_t len,
                               struct kv__snapshot_header *h)
{
    Unibus__Kv__SnapshotHeader *m;
    int rv = -1;

    m = unibus__kv__snapshot_header__unpack(NULL, len, buf);
    if (m == NULL) {
        return -1;
    }
    if (m->sha256.len == KV__SHA256_LEN) {
        h->format = m->format;
        h->index = m->index;
        memcpy(h->sha256, m->sha256.data, KV__SHA256_LEN);
        h->image_len = m->image_len;
        rv = 0;
    }
    unibus__kv__snapshot_header__free_unpacked(m, NULL);
    return rv;
}
