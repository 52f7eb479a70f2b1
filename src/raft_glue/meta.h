/* The meta group: the cluster-wide raft group whose state machine is the KV.
 *
 * It decides how the node starts (restart from disk, bootstrap one identical
 * configuration with the peers named by --routes, or join a running cluster),
 * runs every write through raft with retries that keep a request applied
 * once (the request id travels in the entry), gives linearizable reads on any
 * node (barrier on the leader, read index from the leader on a follower), and
 * carries follower requests to the leader over the route hub. */
#ifndef RG_META_H
#define RG_META_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "kv/kv.h"

struct meta;
struct rg_node;
struct rt_hub;

enum meta_err {
    META_OK = 0,
    META_ENOLEADER,  /* no leader reachable before the deadline */
    META_ETIMEOUT,   /* deadline passed: a write's outcome is unknown */
    META_ESHUTDOWN,  /* the node is stopping */
    META_EINVALID,   /* the request itself is wrong */
    META_ENOTFOUND,  /* no such cluster member */
    META_EINTERNAL,
};

const char *meta_err_code(int err); /* stable snake_case code for APIs */

struct meta_result {
    int err;              /* enum meta_err */
    char message[160];    /* detail for operators, may be empty */
    struct kv_result kv;  /* writes: the FSM's answer */
    uint64_t index;       /* reads: the index the read is at */
    uint64_t healthy[16]; /* meta_health: members the leader hears from */
    unsigned n_healthy;
};

typedef void (*meta_cb)(void *arg, const struct meta_result *res);

struct meta_config {
    const char *name;        /* node name; id = rt_node_id(name) */
    const char *advertise;   /* our route address, "host:port" */
    const char *raft_dir;
    const char *const *routes; /* peers' route addresses, "host:port" */
    unsigned n_routes;
    unsigned kv_replicas;    /* target number of voters */
    unsigned election_ms, heartbeat_ms;
    unsigned snapshot_threshold, snapshot_trailing;
};

/* hub is NULL for a node without routes (a sole voter). */
int meta_create(uv_loop_t *loop, struct rt_hub *hub,
                const struct meta_config *cfg, struct meta **out, char *err,
                size_t errlen);

/* Starts raft at once when the directory has state or there are no routes;
 * otherwise first asks every peer whether a cluster exists (discovery). */
int meta_start(struct meta *m, char *err, size_t errlen);

struct kv_store *meta_kv(struct meta *m);
/* NULL while discovery is still running. */
struct rg_node *meta_node(struct meta *m);
const char *meta_name(const struct meta *m);
uint64_t meta_id(const struct meta *m);
/* "discovering", "joining" or the raft state name. */
const char *meta_phase(struct meta *m);

/* Proposes cmd (request id and stamp are filled in when zero). cb fires once,
 * on the loop, within the deadline. */
int meta_write(struct meta *m, struct kv_cmd *cmd, meta_cb cb, void *arg);

/* Completes when a read of the local KV is linearizable. */
int meta_read(struct meta *m, meta_cb cb, void *arg);

/* As meta_read for a request that already committed an entry at index after
 * it arrived (its nonce claim): once the local KV has applied that index, a
 * read is linearizable without another barrier (every write committed
 * before the request precedes the entry in the log). May call cb before
 * returning. index 0 falls back to meta_read. */
int meta_read_at(struct meta *m, uint64_t index, meta_cb cb, void *arg);

/* Membership, any node (forwarded to the leader). role is RAFT_VOTER,
 * RAFT_STANDBY or RAFT_SPARE; a voter is added as spare, made standby, then
 * promoted after catching up. */
int meta_member_add(struct meta *m, const char *name, const char *address,
                    int role, meta_cb cb, void *arg);
int meta_member_remove(struct meta *m, uint64_t id, meta_cb cb, void *arg);
int meta_transfer(struct meta *m, uint64_t id, meta_cb cb, void *arg);

/* Asks the leader which members it hears from (only the leader knows). */
int meta_health(struct meta *m, meta_cb cb, void *arg);

/* Node name recorded in the KV for id, or NULL. Borrowed until the next
 * call. */
const char *meta_node_name(struct meta *m, uint64_t id);

/* Latency of committed writes (proposal to answer), as a histogram with
 * upper bounds META_LAT_BOUNDS_MS (the last bucket is +Inf). */
#define META_LAT_BUCKETS 14
extern const double META_LAT_BOUNDS_MS[META_LAT_BUCKETS - 1];
struct meta_latency {
    uint64_t buckets[META_LAT_BUCKETS]; /* not cumulative */
    uint64_t count;
    double sum_ms;
};
void meta_get_latency(const struct meta *m, struct meta_latency *out);

void meta_close(struct meta *m, void (*cb)(void *arg), void *arg);

#endif
