/* Fuzz target: the protobuf frames of proto/route.proto that
 * src/raft_glue/meta.c decodes from route channels (ForwardRequest on the
 * leader, ForwardResponse and Discover on followers).
 *
 * Each input is one frame body (what ub_framed hands to the frame callback).
 * It is unpacked as each of the three messages; every decoded message is
 * walked completely through its protobuf-c descriptor (so fields added to
 * the .proto later are covered without changing this file), the fields
 * meta.c reads are read the way it reads them (a propose body goes through
 * kv_cmd_decode), and the message must pass protobuf_c_message_check and,
 * without unknown fields, survive pack -> unpack -> pack unchanged. Any
 * violation aborts. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv/kv.h"
#include "route.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile size_t sink;

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_route_frames: invariant violated: %s\n", what);
        abort();
    }
}

static void walk(const ProtobufCMessage *m, unsigned depth);

/* Reads one value of a field of type t at p. */
static void walk_value(const ProtobufCFieldDescriptor *f, const void *p,
                       unsigned depth)
{
    size_t sum = 0;

    switch (f->type) {
        case PROTOBUF_C_TYPE_STRING: {
            const char *s = *(char *const *)p;
            check(s != NULL || f->label != PROTOBUF_C_LABEL_REPEATED,
                  "a repeated string is never NULL");
            if (s != NULL) {
                sum += strlen(s);
            }
            break;
        }
        case PROTOBUF_C_TYPE_BYTES: {
            const ProtobufCBinaryData *b = p;
            check(b->len == 0 || b->data != NULL, "bytes have data");
            for (size_t i = 0; i < b->len; i++) {
                sum += b->data[i];
            }
            break;
        }
        case PROTOBUF_C_TYPE_MESSAGE: {
            const ProtobufCMessage *sub = *(ProtobufCMessage *const *)p;
            if (sub != NULL) {
                check(sub->descriptor == f->descriptor,
                      "a sub-message has its descriptor");
                walk(sub, depth + 1);
            }
            break;
        }
        case PROTOBUF_C_TYPE_BOOL:
            sum += *(const protobuf_c_boolean *)p != 0;
            break;
        case PROTOBUF_C_TYPE_INT32:
        case PROTOBUF_C_TYPE_SINT32:
        case PROTOBUF_C_TYPE_SFIXED32:
        case PROTOBUF_C_TYPE_UINT32:
        case PROTOBUF_C_TYPE_FIXED32:
        case PROTOBUF_C_TYPE_FLOAT:
        case PROTOBUF_C_TYPE_ENUM: {
            uint32_t v;
            memcpy(&v, p, sizeof v);
            sum += v;
            break;
        }
        case PROTOBUF_C_TYPE_INT64:
        case PROTOBUF_C_TYPE_SINT64:
        case PROTOBUF_C_TYPE_SFIXED64:
        case PROTOBUF_C_TYPE_UINT64:
        case PROTOBUF_C_TYPE_FIXED64:
        case PROTOBUF_C_TYPE_DOUBLE: {
            uint64_t v;
            memcpy(&v, p, sizeof v);
            sum += (size_t)v;
            break;
        }
    }
    sink += sum;
}

/* Element size of a repeated field's array. */
static size_t elem_size(ProtobufCType t)
{
    switch (t) {
        case PROTOBUF_C_TYPE_INT64:
        case PROTOBUF_C_TYPE_SINT64:
        case PROTOBUF_C_TYPE_SFIXED64:
        case PROTOBUF_C_TYPE_UINT64:
        case PROTOBUF_C_TYPE_FIXED64:
        case PROTOBUF_C_TYPE_DOUBLE:
            return 8;
        case PROTOBUF_C_TYPE_STRING:
        case PROTOBUF_C_TYPE_MESSAGE:
            return sizeof(void *);
        case PROTOBUF_C_TYPE_BYTES:
            return sizeof(ProtobufCBinaryData);
        case PROTOBUF_C_TYPE_BOOL:
            return sizeof(protobuf_c_boolean);
        default:
            return 4;
    }
}

/* Visits every field of m that is set, recursively. */
static void walk(const ProtobufCMessage *m, unsigned depth)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *base = (const char *)m;

    check(depth < 64, "messages nest boundedly");
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const void *p = base + f->offset;

        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(const void *)(base +
                                                       f->quantifier_offset);
            const char *arr = *(char *const *)p;
            check(n == 0 || arr != NULL, "a repeated field has its array");
            for (size_t j = 0; j < n; j++) {
                walk_value(f, arr + j * elem_size(f->type), depth);
            }
            continue;
        }
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t which = *(const uint32_t *)(const void *)(base +
                                                    f->quantifier_offset);
            if (which != f->id) {
                continue;
            }
        }
        walk_value(f, p, depth);
    }
}

/* pack -> unpack -> pack gives the same bytes, and m passes the library's
 * own consistency check. */
static void check_repack(const ProtobufCMessage *m)
{
    size_t n1 = protobuf_c_message_get_packed_size(m);
    uint8_t *b1 = malloc(n1 ? n1 : 1);
    uint8_t *b2;
    ProtobufCMessage *again;
    size_t n2;

    check(protobuf_c_message_check(m), "an unpacked message checks");
    check(b1 != NULL, "memory");
    if (m->n_unknown_fields > 0) {
        /* protobuf-c 1.4 keeps unknown fields verbatim, including field
         * number 0 when its tag is an overlong varint (80 00), and then
         * packs a tag it refuses to unpack. Not our concern: only known
         * fields are compared. */
        free(b1);
        return;
    }
    check(protobuf_c_message_pack(m, b1) == n1, "pack writes its size");
    again = protobuf_c_message_unpack(m->descriptor, NULL, n1, b1);
    check(again != NULL, "a packed message unpacks");
    n2 = protobuf_c_message_get_packed_size(again);
    b2 = malloc(n2 ? n2 : 1);
    check(b2 != NULL, "memory");
    check(protobuf_c_message_pack(again, b2) == n2, "pack writes its size");
    check(n1 == n2 && memcmp(b1, b2, n1) == 0, "repacking is stable");
    protobuf_c_message_free_unpacked(again, NULL);
    free(b1);
    free(b2);
}

/* What meta.c reads of a member (op->address, op->name via "%s"). */
static void read_member(const Unibus__Route__Member *mem)
{
    char buf[300];

    check(mem != NULL, "a join/add body has its member");
    snprintf(buf, sizeof buf, "%s %s %d %llu", mem->address, mem->name,
             (int)mem->role, (unsigned long long)mem->id);
    sink += strlen(buf);
}

static void forward_request(const uint8_t *data, size_t size)
{
    Unibus__Route__ForwardRequest *req;
    struct kv_cmd *cmd = NULL;

    req = unibus__route__forward_request__unpack(NULL, size, data);
    if (req == NULL) {
        return;
    }
    walk(&req->base, 0);
    switch (req->body_case) {
        case UNIBUS__ROUTE__FORWARD_REQUEST__BODY_PROPOSE:
            if (kv_cmd_decode(req->propose.data, req->propose.len, &cmd) ==
                KV_OK) {
                sink += cmd->request_id[0];
                kv_cmd_free(cmd);
            }
            break;
        case UNIBUS__ROUTE__FORWARD_REQUEST__BODY_JOIN:
            read_member(req->join);
            break;
        case UNIBUS__ROUTE__FORWARD_REQUEST__BODY_ADD:
            read_member(req->add);
            break;
        case UNIBUS__ROUTE__FORWARD_REQUEST__BODY_REMOVE:
            sink += (size_t)req->remove;
            break;
        case UNIBUS__ROUTE__FORWARD_REQUEST__BODY_TRANSFER:
            sink += (size_t)req->transfer;
            break;
        default:
            break;
    }
    check_repack(&req->base);
    unibus__route__forward_request__free_unpacked(req, NULL);
}

static void forward_response(const uint8_t *data, size_t size)
{
    Unibus__Route__ForwardResponse *r;
    char hint[300];

    r = unibus__route__forward_response__unpack(NULL, size, data);
    if (r == NULL) {
        return;
    }
    walk(&r->base, 0);
    if (r->leader_id && r->leader_address[0]) {
        snprintf(hint, sizeof hint, "%s", r->leader_address);
        sink += strlen(hint);
    }
    sink += strlen(r->message) + (size_t)r->err + r->kv_code;
    check_repack(&r->base);
    unibus__route__forward_response__free_unpacked(r, NULL);
}

static void discover(const uint8_t *data, size_t size)
{
    Unibus__Route__Discover *d;
    char hint[300];

    d = unibus__route__discover__unpack(NULL, size, data);
    if (d == NULL) {
        return;
    }
    walk(&d->base, 0);
    snprintf(hint, sizeof hint, "%s", d->leader_address);
    sink += strlen(hint) + (d->has_state != 0) + (size_t)d->leader_id;
    check_repack(&d->base);
    unibus__route__discover__free_unpacked(d, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    forward_request(data, size);
    forward_response(data, size);
    discover(data, size);
    return 0;
}
