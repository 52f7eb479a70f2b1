/* Writes the seed corpus of the fuzz targets: valid inputs made with the
 * project's own encoders, so the fuzzers start past the first checks.
 *
 *   fuzz_gen_corpus tests/fuzz/corpus
 *
 * writes <dir>/{hello,kv_entry,kv_snapshot,route_frames,framed}/<seed>.
 * The output is deterministic (fixed ids, stamps and keys), so running it
 * again rewrites the same bytes. The files are kept in the tree; run this
 * only when a format changed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_common.h"
#include "kv/kv.h"
#include "route.pb-c.h"
#include "route/hello.h"

static const char *out_dir;

static void fail(const char *what)
{
    fprintf(stderr, "gen_corpus: %s\n", what);
    exit(1);
}

static void make_dir(const char *sub)
{
    char path[1024];

    snprintf(path, sizeof path, "%s/%s", out_dir, sub);
    if (mkdir(out_dir, 0755) != 0 && errno != EEXIST) {
        fail(out_dir);
    }
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        fail(path);
    }
}

static void put_file(const char *sub, const char *name, const void *buf,
                     size_t len)
{
    char path[1024];
    FILE *f;

    snprintf(path, sizeof path, "%s/%s/%s", out_dir, sub, name);
    f = fopen(path, "wb");
    if (f == NULL || fwrite(buf, 1, len, f) != len || fclose(f) != 0) {
        fail(path);
    }
}

/* ------------------------------------------------------------------------ */

static void gen_hello(void)
{
    static const uint8_t exporter[RT_EXPORTER_LEN] = UB_FUZZ_EXPORTER_INIT;
    static const uint8_t secret[sizeof UB_FUZZ_SECRET_INIT - 1] = {
        UB_FUZZ_SECRET_INIT
    };
    static const struct {
        const char *file;
        uint32_t kind;
        uint8_t role;
        uint64_t group;
        const char *name;
        const char *address;
    } seeds[] = {
        { "raft_dialer", 1, RT_ROLE_DIALER, 1, "node-1", "10.0.0.1:7401" },
        { "raft_acceptor", 1, RT_ROLE_ACCEPTOR, 1, "node-2",
          "[fd00::2]:7401" },
        { "discover", 2, RT_ROLE_DIALER, 0, "a", "" },
        { "forward", 3, RT_ROLE_ACCEPTOR, 0, "host.example_net-3",
          "host.example.net:7401" },
        { "kind_max", 15, RT_ROLE_DIALER, UINT64_MAX, "Z9", "x:1" },
        { "long_name", 1, RT_ROLE_DIALER, 7,
          "n123456789012345678901234567890123456789012345678901234567890x",
          "127.0.0.1:65535" },
    };
    struct rt_hello h;
    uint8_t buf[RT_HELLO_MAX];
    char addr[RT_ADDRESS_MAX + 1];

    make_dir("hello");
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
        int n;
        memset(&h, 0, sizeof h);
        h.kind = seeds[i].kind;
        h.role = seeds[i].role;
        h.group = seeds[i].group;
        snprintf(h.name, sizeof h.name, "%s", seeds[i].name);
        snprintf(h.address, sizeof h.address, "%s", seeds[i].address);
        h.id = rt_node_id(h.name);
        n = rt_hello_encode(&h, exporter, secret, sizeof secret, buf,
                            sizeof buf);
        if (n < 0) {
            fail("rt_hello_encode");
        }
        put_file("hello", seeds[i].file, buf, (size_t)n);
    }
    /* The longest address. */
    memset(addr, 'a', RT_ADDRESS_MAX);
    addr[RT_ADDRESS_MAX] = '\0';
    memset(&h, 0, sizeof h);
    h.kind = 2;
    h.role = RT_ROLE_ACCEPTOR;
    snprintf(h.name, sizeof h.name, "b");
    memcpy(h.address, addr, sizeof addr);
    h.id = rt_node_id(h.name);
    {
        int n = rt_hello_encode(&h, exporter, secret, sizeof secret, buf,
                                sizeof buf);
        if (n < 0) {
            fail("rt_hello_encode (long address)");
        }
        put_file("hello", "long_address", buf, (size_t)n);
    }
}

/* ------------------------------------------------------------------------ */

static void cmd_init(struct kv_cmd *c, enum kv_cmd_kind kind, uint8_t rid)
{
    memset(c, 0, sizeof *c);
    c->kind = kind;
    memset(c->request_id, rid, KV_REQUEST_ID_LEN);
    c->request_id[0] = 0x5e;
    c->stamp = 1700000000000 + rid;
}

static void encode_to(struct kv_cmd *c, const char *sub, const char *name)
{
    void *buf = NULL;
    size_t len = 0;

    if (kv_cmd_encode(c, malloc, &buf, &len) != KV_OK) {
        fail(name);
    }
    if (sub != NULL) {
        put_file(sub, name, buf, len);
    }
    free(buf);
}

/* The seeds of the entry target; also applied to the snapshot store. */
static void gen_entries(struct kv_store *s, const char *sub)
{
    static const uint8_t bin[] = { 0, 1, 2, 0xff, 0x80, '\n', 0 };
    static const struct kv_compare cmps[2] = {
        { "b", "k1", 1 },
        { "b", "dir/k2", 0 },
    };
    static const struct kv_op succ[3] = {
        { KV_OP_PUT, "b", "k1", "one", 3, 0, 0 },
        { KV_OP_CREATE, "b", "dir/k2", "two", 3, 0, 1700000009000 },
        { KV_OP_DELETE, "other", "gone", NULL, 0, 0, 0 },
    };
    static const struct kv_op fail_ops[1] = {
        { KV_OP_UPDATE, "b", "k1", "x", 1, 7, 0 },
    };
    struct {
        const char *name;
        struct kv_cmd c;
    } e[12];
    size_t n = 0;
    uint64_t index = 0;

    cmd_init(&e[n].c, KV_CMD_OP, 1);
    e[n].c.op = (struct kv_op){ KV_OP_PUT, "b", "k1", "v1", 2, 0, 0 };
    e[n++].name = "put";
    cmd_init(&e[n].c, KV_CMD_OP, 2);
    e[n].c.op = (struct kv_op){ KV_OP_CREATE, "b", "a/b.c=d:e@f_g-h",
                                bin, sizeof bin, 0, 1700000005000 };
    e[n++].name = "create_expiring";
    cmd_init(&e[n].c, KV_CMD_OP, 3);
    e[n].c.op = (struct kv_op){ KV_OP_UPDATE, "b", "k1", "v2", 2, 1, 0 };
    e[n++].name = "update";
    cmd_init(&e[n].c, KV_CMD_OP, 4);
    e[n].c.op = (struct kv_op){ KV_OP_PUT, "cfg", "empty", NULL, 0, 0, 0 };
    e[n++].name = "put_empty";
    cmd_init(&e[n].c, KV_CMD_TXN, 5);
    e[n].c.txn.compares = cmps;
    e[n].c.txn.n_compares = 2;
    e[n].c.txn.success = succ;
    e[n].c.txn.n_success = 3;
    e[n].c.txn.failure = fail_ops;
    e[n].c.txn.n_failure = 1;
    e[n++].name = "txn";
    cmd_init(&e[n].c, KV_CMD_TXN, 6);
    e[n++].name = "txn_empty";
    cmd_init(&e[n].c, KV_CMD_NONCE, 7);
    e[n].c.nonce.nonce = "n0nce-1";
    e[n].c.nonce.expires_at = 1700000060000;
    e[n++].name = "nonce";
    cmd_init(&e[n].c, KV_CMD_OP, 8);
    e[n].c.op = (struct kv_op){ KV_OP_DELETE, "b", "k1", NULL, 0, 0, 0 };
    e[n++].name = "delete";
    cmd_init(&e[n].c, KV_CMD_OP, 9);
    e[n].c.op = (struct kv_op){ KV_OP_DELETE, "b", "dir/k2", NULL, 0, 5, 0 };
    e[n++].name = "delete_rev";
    cmd_init(&e[n].c, KV_CMD_OP, 10);
    e[n].c.op = (struct kv_op){ KV_OP_PUT, "b", "k3", "keep", 4, 0, 0 };
    e[n++].name = "put_k3";
    cmd_init(&e[n].c, KV_CMD_PURGE, 11);
    e[n].c.purge.now = 1700000006000;
    e[n++].name = "purge";
    cmd_init(&e[n].c, KV_CMD_NOOP, 12);
    e[n++].name = "noop";

    for (size_t i = 0; i < n; i++) {
        encode_to(&e[i].c, sub, e[i].name);
        if (s != NULL) {
            void *buf = NULL;
            size_t len = 0;
            struct kv_result res;
            if (kv_cmd_encode(&e[i].c, malloc, &buf, &len) != KV_OK ||
                kv_store_apply(s, ++index, buf, len, &res) != 0) {
                fail("apply a seed entry");
            }
            free(buf);
        }
    }
}

static void snapshot_to(struct kv_store *s, const char *name)
{
    void *buf = NULL;
    size_t len = 0;

    if (kv_store_snapshot(s, malloc, &buf, &len) != 0) {
        fail("kv_store_snapshot");
    }
    put_file("kv_snapshot", name, buf, len);
    free(buf);
}

static void gen_kv(void)
{
    struct kv_store *s = NULL;
    struct kv_cmd c;

    make_dir("kv_entry");
    gen_entries(NULL, "kv_entry");

    make_dir("kv_snapshot");
    if (kv_store_open(&s, NULL, 0) != 0) {
        fail("kv_store_open");
    }
    /* Every seed entry, then a few keys left behind: live, expiring, in
     * another bucket. */
    gen_entries(s, NULL);
    cmd_init(&c, KV_CMD_OP, 20);
    c.op = (struct kv_op){ KV_OP_PUT, "b", "later", "soon gone", 9, 0,
                           1800000000000 };
    {
        void *buf = NULL;
        size_t len = 0;
        struct kv_result res;
        if (kv_cmd_encode(&c, malloc, &buf, &len) != KV_OK ||
            kv_store_apply(s, kv_store_applied_index(s) + 1, buf, len,
                           &res) != 0) {
            fail("apply");
        }
        free(buf);
    }
    snapshot_to(s, "small");
    kv_store_close(s);
}

/* ------------------------------------------------------------------------ */

static void pack_to(const ProtobufCMessage *m, const char *name)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);

    if (buf == NULL) {
        fail("memory");
    }
    protobuf_c_message_pack(m, buf);
    put_file("route_frames", name, buf, n);
    free(buf);
}

static void gen_route_frames(void)
{
    Unibus__Route__ForwardRequest req;
    Unibus__Route__ForwardResponse rsp;
    Unibus__Route__Discover d;
    Unibus__Route__Member mem;
    struct kv_cmd c;
    void *entry = NULL;
    size_t entry_len = 0;

    make_dir("route_frames");

    cmd_init(&c, KV_CMD_OP, 30);
    c.op = (struct kv_op){ KV_OP_PUT, "b", "fwd", "val", 3, 0, 0 };
    if (kv_cmd_encode(&c, malloc, &entry, &entry_len) != KV_OK) {
        fail("encode");
    }
    unibus__route__forward_request__init(&req);
    req.seq = 1;
    req.body_case = UNIBUS__ROUTE__FORWARD_REQUEST__BODY_PROPOSE;
    req.propose.data = entry;
    req.propose.len = entry_len;
    pack_to(&req.base, "req_propose");
    free(entry);

    unibus__route__forward_request__init(&req);
    req.seq = 2;
    req.body_case = UNIBUS__ROUTE__FORWARD_REQUEST__BODY_READ_INDEX;
    req.read_index = 1;
    pack_to(&req.base, "req_read_index");

    unibus__route__member__init(&mem);
    mem.id = 0x1234567890abcdefULL;
    mem.address = "10.0.0.3:7401";
    mem.name = "node-3";
    mem.role = UNIBUS__ROUTE__ROLE__ROLE_STANDBY;
    unibus__route__forward_request__init(&req);
    req.seq = 3;
    req.body_case = UNIBUS__ROUTE__FORWARD_REQUEST__BODY_JOIN;
    req.join = &mem;
    pack_to(&req.base, "req_join");
    req.seq = 4;
    req.body_case = UNIBUS__ROUTE__FORWARD_REQUEST__BODY_ADD;
    req.add = &mem;
    pack_to(&req.base, "req_add");

    unibus__route__forward_request__init(&req);
    req.seq = 5;
    req.body_case = UNIBUS__ROUTE__FORWARD_REQUEST__BODY_REMOVE;
    req.remove = 42;
    pack_to(&req.base, "req_remove");
    req.seq = 6;
    req.body_case = UNIBUS__ROUTE__FORWARD_REQUEST__BODY_TRANSFER;
    req.transfer = 0;
    pack_to(&req.base, "req_transfer");

    unibus__route__forward_response__init(&rsp);
    rsp.seq = 1;
    rsp.kv_code = KV_OK;
    rsp.revision = 17;
    rsp.txn_succeeded = 1;
    rsp.index = 17;
    pack_to(&rsp.base, "rsp_ok");
    unibus__route__forward_response__init(&rsp);
    rsp.seq = 2;
    rsp.err = 3;
    rsp.message = "not the leader";
    rsp.leader_id = 99;
    rsp.leader_address = "10.0.0.9:7401";
    pack_to(&rsp.base, "rsp_not_leader");

    unibus__route__discover__init(&d);
    d.has_state = 1;
    d.leader_id = 7;
    d.leader_address = "leader.example:7401";
    pack_to(&d.base, "discover");
}

/* ------------------------------------------------------------------------ */

/* Appends a frame (4-byte big-endian length, body) to buf at *len. */
static void frame(uint8_t *buf, size_t *len, const void *body, size_t n)
{
    buf[(*len)++] = (uint8_t)(n >> 24);
    buf[(*len)++] = (uint8_t)(n >> 16);
    buf[(*len)++] = (uint8_t)(n >> 8);
    buf[(*len)++] = (uint8_t)n;
    memcpy(buf + *len, body, n);
    *len += n;
}

static void gen_framed(void)
{
    static uint8_t big[UB_FUZZ_FRAMED_MAX];
    uint8_t buf[2 * UB_FUZZ_FRAMED_MAX];
    size_t len;

    make_dir("framed");
    for (size_t i = 0; i < sizeof big; i++) {
        big[i] = (uint8_t)(i * 7);
    }
    /* Control byte: chunk size 3, echo. */
    len = 0;
    buf[len++] = 0x0a;
    frame(buf, &len, "hello", 5);
    frame(buf, &len, "", 0);
    frame(buf, &len, "world", 5);
    put_file("framed", "three_echo", buf, len);

    /* Byte by byte, a partial frame at the end. */
    len = 0;
    buf[len++] = 0x00;
    frame(buf, &len, "abc", 3);
    memcpy(buf + len, "\0\0\0\x10partial", 11);
    len += 11;
    put_file("framed", "partial_tail", buf, len);

    /* The largest frame, all at once, then ended by the framed side. */
    len = 0;
    buf[len++] = 0x1f;
    frame(buf, &len, big, sizeof big);
    put_file("framed", "max_frame_end", buf, len);

    /* One byte too large: closed before the body. */
    len = 0;
    buf[len++] = 0x04;
    frame(buf, &len, "ok", 2);
    frame(buf, &len, big, sizeof big);
    buf[1 + 4 + 2 + 3] = 0x01; /* length 1024 -> 1025 */
    put_file("framed", "oversize", buf, len);

    /* Closed from the frame callback. */
    len = 0;
    buf[len++] = 0x2d;
    frame(buf, &len, "first", 5);
    frame(buf, &len, "\xcc stop", 6);
    frame(buf, &len, "never", 5);
    put_file("framed", "close_in_callback", buf, len);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUTPUT_DIR\n", argv[0]);
        return 2;
    }
    out_dir = argv[1];
    gen_hello();
    gen_kv();
    gen_route_frames();
    gen_framed();
    return 0;
}
