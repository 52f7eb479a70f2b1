/* Shared by the files of src/ctl only. */
#ifndef CTL_INTERNAL_H
#define CTL_INTERNAL_H

#include <jansson.h>

#include "ctl.h"
#include "http/server.h"
#include "raft_glue/meta.h"
#include "records.h"

struct ctl {
    uv_loop_t *loop;
    struct meta *meta;
    struct ctl_config cfg;
    char bootstrap_handle[CTL_NAME_MAX + 1];
    char bootstrap_pub[64];
    bool bootstrap_done;
    bool bootstrap_inflight;
    uv_timer_t tick;
    struct ctl_stats stats;
};

/* A read-modify-write: linearizable read, build a txn pinning what was
 * read, propose it; when a compare fails (a concurrent writer won), start
 * over, up to a few times. */
struct rmw;
/* Reads the KV and fills t; returns 0, or answers r itself and returns -1. */
typedef int (*rmw_build_fn)(struct rmw *w, struct ctl_txn *t);
/* Answers r after the txn committed. */
typedef void (*rmw_done_fn)(struct rmw *w, const struct meta_result *res);

struct rmw {
    struct ctl *c;
    struct http_req *r;
    struct ctl_caller who;
    rmw_build_fn build;
    rmw_done_fn done;
    unsigned attempts;
    /* Request data the build function needs. */
    char a[CTL_NAME_MAX + 1]; /* e.g. room */
    char b[CTL_NAME_MAX + 1]; /* e.g. handle */
    uint64_t n;               /* e.g. epoch */
    json_t *body;             /* parsed JSON body, owned */
    void *data;               /* raw payload, owned */
    size_t len;
    void *ctx;                /* handler state, owned (free()) */
};

struct rmw *rmw_new(struct ctl *c, struct http_req *r,
                    const struct ctl_caller *who, rmw_build_fn build,
                    rmw_done_fn done);
void rmw_start(struct rmw *w);


/* Parses the body as a JSON object, or answers 400 and returns NULL. */
json_t *ctl_body_json(struct http_req *r);

/* Pagination: ?limit (1..1000, default 100) and ?after. Returns -1 after
 * answering 400. */
int ctl_page(struct http_req *r, size_t *limit, const char **after);

/* Removes handle from room (bumping its epoch) and drops its sealed keys in
 * that room, pinning everything it touches. Returns 0, or -1 when the txn
 * would grow too large. */
int ctl_room_drop_member(struct kv_store *kv, struct ctl_txn *t,
                         struct ctl_room *room, const char *handle);

/* Route handlers. Each answers r. */
void ctl_members_route(struct ctl *c, struct http_req *r,
                       const struct ctl_caller *who, const char *rest);
void ctl_me(struct ctl *c, struct http_req *r, const struct ctl_caller *who);
void ctl_rooms_route(struct ctl *c, struct http_req *r,
                     const struct ctl_caller *who, const char *rest);
void ctl_blobs_get(struct ctl *c, struct http_req *r,
                   const struct ctl_caller *who, const char *sha);
void ctl_blob_upload(struct ctl *c, struct http_req *r,
                     const struct ctl_caller *who, const char *room);

#endif
