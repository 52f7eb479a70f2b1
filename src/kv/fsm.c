/* struct raft_fsm adapter around struct kv_store. Every callback runs on the
 * raft loop thread; see fsm.h for the contracts. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "kv/fsm.h"
#include "kv/kv.h"
#include "lib/log.h"

struct kv_fsm {
    struct kv_store *store; /* borrowed */
    struct raft *raft;      /* borrowed; source of the entry index */
};

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf,
                     void **result)
{
    struct kv_fsm *f = fsm->data;
    struct kv_result res;
    uint64_t index;

    *result = NULL;
    if (f->raft == NULL) {
        ub_error("kv", "fsm apply without a raft instance");
        return RAFT_INVALID;
    }
    /* libraft sets last_applied to the entry's index only after apply
     * returned, so the entry being applied is the next one. */
    index = (uint64_t)raft_last_applied(f->raft) + 1;
    if (kv_store_apply(f->store, index, buf->base, buf->len, &res) != 0) {
        return RAFT_IOERR;
    }
    if (res.code == KV_INVALID) {
        ub_warn("kv", "entry %" PRIu64 " is not a valid command; skipped",
                index);
    }
    return 0;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[],
                        unsigned *n_bufs)
{
    struct kv_fsm *f = fsm->data;
    void *data;
    size_t len;

    if (kv_store_snapshot(f->store, raft_malloc, &data, &len) != 0) {
        ub_error("kv", "snapshot: %s", kv_store_errmsg(f->store));
        return RAFT_NOMEM;
    }
    *bufs = raft_malloc(sizeof **bufs);
    if (*bufs == NULL) {
        raft_free(data);
        return RAFT_NOMEM;
    }
    (*bufs)[0].base = data;
    (*bufs)[0].len = len;
    *n_bufs = 1;
    return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    struct kv_fsm *f = fsm->data;
    char err[256];

    if (kv_store_restore(f->store, buf->base, buf->len, err, sizeof err) !=
        0) {
        ub_error("kv", "restore rejected: %s", err);
        return RAFT_CORRUPT;
    }
    ub_info("kv", "restored snapshot at applied index %" PRIu64,
            kv_store_applied_index(f->store));
    raft_free(buf->base);
    return 0;
}

int kv_fsm_init(struct raft_fsm *fsm, struct kv_store *s)
{
    struct kv_fsm *f = calloc(1, sizeof *f);

    if (f == NULL) {
        return RAFT_NOMEM;
    }
    f->store = s;
    memset(fsm, 0, sizeof *fsm);
    fsm->version = 1;
    fsm->data = f;
    fsm->apply = fsm_apply;
    fsm->snapshot = fsm_snapshot;
    fsm->restore = fsm_restore;
    return 0;
}

void kv_fsm_set_raft(struct raft_fsm *fsm, struct raft *r)
{
    struct kv_fsm *f = fsm->data;

    f->raft = r;
}

struct kv_store *kv_fsm_store(const struct raft_fsm *fsm)
{
    const struct kv_fsm *f = fsm->data;

    return f->store;
}

void kv_fsm_close(struct raft_fsm *fsm)
{
    free(fsm->data);
    memset(fsm, 0, sizeof *fsm);
}
