/* Fuzz target: the control plane's record decoding. Arbitrary bytes stored
 * as a member and a room record (as a peer's snapshot or a corrupted entry
 * could leave them) must load as a record or be refused, never crash, and a
 * loaded record must dump back into something that loads the same. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/records.h"
#include "kv/kv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct kv_store *store;
static uint64_t idx;

static void put(const char *bucket, const char *key, const void *v, size_t n)
{
    struct kv_cmd cmd;
    struct kv_result res;
    void *buf;
    size_t len;
    memset(&cmd, 0, sizeof cmd);
    cmd.kind = KV_CMD_OP;
    cmd.request_id[0] = 1;
    memcpy(cmd.request_id + 1, &idx, sizeof idx);
    cmd.stamp = 1;
    cmd.op.type = KV_OP_PUT;
    cmd.op.bucket = bucket;
    cmd.op.key = key;
    cmd.op.value = v;
    cmd.op.value_len = n;
    if (kv_cmd_encode(&cmd, malloc, &buf, &len) != KV_OK) {
        return;
    }
    kv_store_apply(store, ++idx, buf, len, &res);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ctl_member m, m2;
    struct ctl_room r, r2;
    char err[128];

    if (size > KV_MAX_VALUE) {
        return 0;
    }
    if (store == NULL && kv_store_open(&store, err, sizeof err) != 0) {
        abort();
    }
    put(CTL_B_MEMBERS, "alice", data, size);
    put(CTL_B_ROOMS, "ops", data, size);
    if (ctl_member_load(store, "alice", &m) == 0) {
        char *d = ctl_member_dump(&m);
        if (d == NULL) {
            abort();
        }
        put(CTL_B_MEMBERS, "alice", d, strlen(d));
        if (ctl_member_load(store, "alice", &m2) != 0 || m.admin != m2.admin ||
            strcmp(m.sign_pub, m2.sign_pub) != 0 ||
            strcmp(m.box_pub, m2.box_pub) != 0 || m.created != m2.created) {
            abort(); /* a record that loads must survive a round trip */
        }
        free(d);
    }
    if (ctl_room_load(store, "ops", &r) == 0) {
        char *d = ctl_room_dump(&r);
        if (d == NULL) {
            abort();
        }
        put(CTL_B_ROOMS, "ops", d, strlen(d));
        if (ctl_room_load(store, "ops", &r2) != 0 || r.epoch != r2.epoch ||
            r.n_members != r2.n_members || strcmp(r.owner, r2.owner) != 0) {
            abort();
        }
        for (unsigned i = 0; i < r.n_members; i++) {
            (void)ctl_room_find_member(&r, r.members[i]);
        }
        free(d);
    }
    return 0;
}
