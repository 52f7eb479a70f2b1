/* The KV store as a raft state machine (struct raft_fsm, version 1): the
 * seam between libraft and src/kv, used by the production raft glue and by
 * the fixture tests alike. */
#ifndef UB_KV_FSM_H
#define UB_KV_FSM_H

#include <raft.h>

struct kv_store;

/* Fills *fsm (version 1: apply, snapshot, restore) around s, which stays
 * owned by the caller and must outlive the fsm. Allocates adapter state:
 * release it with kv_fsm_close after the raft instance closed. Returns 0 or
 * RAFT_NOMEM.
 *
 * apply() hands the entry to kv_store_apply() with index
 * raft_last_applied() + 1 (libraft advances last_applied only after apply
 * returned), so kv_fsm_set_raft must be called before raft_start. It sets
 * *result to NULL: the proposer reads the outcome with kv_store_result() and
 * its request id in the raft_apply callback. A local fault returns
 * RAFT_IOERR, which stops raft's apply loop at that entry (restart the node).
 * snapshot() returns one raft_malloc'd buffer (raft frees it). restore()
 * frees buf->base with raft_free on success only; a rejected snapshot leaves
 * the store unchanged and returns RAFT_CORRUPT. */
int kv_fsm_init(struct raft_fsm *fsm, struct kv_store *s);

/* Tells the adapter which raft instance drives it (borrowed). Call after
 * raft_init (or raft_fixture_grow) and before raft_start. */
void kv_fsm_set_raft(struct raft_fsm *fsm, struct raft *r);

/* The store the adapter wraps. */
struct kv_store *kv_fsm_store(const struct raft_fsm *fsm);

/* Frees the adapter state and zeroes *fsm; the store is not touched. */
void kv_fsm_close(struct raft_fsm *fsm);

#endif
