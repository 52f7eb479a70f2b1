/* One raft group member on the libuv backend: lifecycle (bootstrap, restart
 * from disk, join), proposals, batched barriers for linearizable reads,
 * membership changes, leadership tracking and a stall watchdog.
 *
 * Everything runs on the loop thread. The FSM is supplied by the caller. */
#ifndef RG_NODE_H
#define RG_NODE_H

#include <raft.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct rt_hub;
struct rg_node;

struct rg_node_config {
    uint64_t id;          /* our raft id (rt_node_id of the node name) */
    const char *address;  /* our advertised route address */
    const char *dir;      /* raft log and snapshots; created if missing */
    uint64_t group;       /* raft group on the route hub */
    unsigned election_ms; /* randomised 1x-2x by the library */
    unsigned heartbeat_ms;
    unsigned snapshot_threshold;
    unsigned snapshot_trailing;
};

struct rg_server {
    uint64_t id;
    const char *address;
    int role; /* RAFT_VOTER, RAFT_STANDBY or RAFT_SPARE */
};

/* Status callbacks carry 0 or a raft error code (RAFT_NOTLEADER, ...). */
typedef void (*rg_apply_cb)(void *arg, int status, void *result);
typedef void (*rg_done_cb)(void *arg, int status);
typedef void (*rg_event_cb)(void *arg);

/* With hub == NULL the node can only ever be a sole voter: it listens on no
 * port at all. */
int rg_node_create(uv_loop_t *loop, struct rt_hub *hub,
                   const struct rg_node_config *cfg, struct raft_fsm *fsm,
                   struct rg_node **out, char *err, size_t errlen);

/* True when dir holds raft state from an earlier run. */
bool rg_dir_has_state(const char *dir);

/* Starts the node. With n > 0 and a pristine directory the servers are
 * bootstrapped as the first configuration; otherwise the node restarts from
 * disk, or waits to be added by the leader (joining). */
int rg_node_start(struct rg_node *n, const struct rg_server *servers,
                  unsigned n_servers, char *err, size_t errlen);

/* Proposes buf (allocated with raft_malloc; ownership passes to the node in
 * every case). cb fires exactly once, with the FSM's result on success. A
 * status of RAFT_LEADERSHIPLOST means the outcome is unknown. */
int rg_node_apply(struct rg_node *n, void *buf, size_t len, rg_apply_cb cb,
                  void *arg);

/* Confirms leadership and that every entry committed before the call has
 * been applied locally. Callers arriving while a barrier is in flight share
 * the next one, so a burst of reads costs one log entry. On success index is
 * the barrier entry's index: every write committed before the call lies
 * below it (Leader Completeness), which makes index - 1 a safe read index
 * for followers (Raft thesis §6.4). */
typedef void (*rg_barrier_cb)(void *arg, int status, uint64_t index);
int rg_node_barrier(struct rg_node *n, rg_barrier_cb cb, void *arg);

/* Membership changes (leader only, one at a time, else RAFT_CANTCHANGE). */
int rg_node_add(struct rg_node *n, uint64_t id, const char *address,
                rg_done_cb cb, void *arg);
int rg_node_assign(struct rg_node *n, uint64_t id, int role, rg_done_cb cb,
                   void *arg);
int rg_node_remove(struct rg_node *n, uint64_t id, rg_done_cb cb, void *arg);
/* id 0 lets the library pick the most up-to-date voter. cb reports 0 when
 * leadership moved, RAFT_NOTLEADER-style codes otherwise. */
int rg_node_transfer(struct rg_node *n, uint64_t id, rg_done_cb cb, void *arg);

/* Called on every change of leader or of our own state. */
void rg_node_on_change(struct rg_node *n, rg_event_cb cb, void *arg);
/* Called when the watchdog sees the library stalled; the node is unusable. */
void rg_node_on_fatal(struct rg_node *n, rg_event_cb cb, void *arg);

/* Works around libraft 0.22 leaving configuration_uncommitted_index set on
 * a node that restarted, caught up on configuration changes and then became
 * leader: every change then fails with RAFT_CANTCHANGE, although the entry
 * is committed and applied. On a leader whose pending change index is at or
 * below the applied index, marks that configuration committed and returns
 * true; otherwise changes nothing and returns false. Found by tests/jepsen;
 * regression test in tests/integration/test_cluster.py. */
bool rg_node_repair_stale_change(struct rg_node *n);

bool rg_node_is_leader(struct rg_node *n);
/* Leader id and address (address borrowed until the next loop iteration),
 * 0/NULL when unknown. */
void rg_node_leader(struct rg_node *n, uint64_t *id, const char **address);
const char *rg_node_state_name(struct rg_node *n);
uint64_t rg_node_term(struct rg_node *n);
uint64_t rg_node_commit_index(struct rg_node *n);
uint64_t rg_node_applied_index(struct rg_node *n);
uint64_t rg_node_last_index(struct rg_node *n);
uint64_t rg_node_id(const struct rg_node *n);
uint64_t rg_node_leader_changes(const struct rg_node *n);
/* The raft instance (for FSM adapters that need it before start). */
struct raft *rg_node_raft(struct rg_node *n);
/* Current configuration (possibly uncommitted); borrowed. */
const struct raft_configuration *rg_node_configuration(struct rg_node *n);
unsigned rg_node_voters(struct rg_node *n);
/* Leader only: whether we heard from server id recently. */
bool rg_node_peer_healthy(struct rg_node *n, uint64_t id);

/* Fails pending requests (RAFT_LEADERSHIPLOST or RAFT_CANCELED), closes raft
 * and the transport; cb fires once every handle is closed. */
void rg_node_close(struct rg_node *n, rg_event_cb cb, void *arg);

#endif
