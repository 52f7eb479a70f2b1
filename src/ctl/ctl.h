/* The control plane (DESIGN.md §4): signed, replay-proof requests and the
 * members, rooms, sealed keys and blobs kept in the replicated KV. */
#ifndef CTL_CTL_H
#define CTL_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct ctl;
struct http_req;
struct meta;
struct meta_result;

struct ctl_config {
    unsigned skew_s;             /* accepted clock skew of signed requests */
    size_t blob_max;             /* largest blob accepted */
    const char *bootstrap_admin; /* "HANDLE=UPUBKEY" or NULL */
    /* With no member and no bootstrap admin, a lone node creates an admin
     * key in this directory (NULL: never). */
    const char *auto_admin_dir;
};

/* The authenticated caller of a request. */
struct ctl_caller {
    char handle[65];
    bool admin;
    uint64_t claim_index; /* index just below the request's nonce claim */
    /* With ctl_authenticate_deferred: the nonce claim the caller must put
     * into its own write (kv_cmd.claim), so that it costs no extra entry. */
    bool claim_pending;
    char claim_key[200];
    int64_t claim_expires;
};

/* A linearizable read for an authenticated request: it waits only until the
 * local KV has applied what preceded the request's nonce claim (see
 * meta_read_at). */
int ctl_read(struct ctl *c, const struct ctl_caller *who,
             void (*cb)(void *arg, const struct meta_result *res), void *arg);

struct ctl *ctl_create(uv_loop_t *loop, struct meta *meta,
                       const struct ctl_config *cfg);
void ctl_close(struct ctl *c);

/* Called once the caller is authenticated; failures were answered already. */
typedef void (*ctl_authed_cb)(void *arg, struct http_req *r,
                              const struct ctl_caller *who);

/* Verifies the UNIBUS-ED25519 signature, the timestamp window and the
 * member, then claims the nonce through raft (a replay on any node fails
 * with 401 nonce_reused), then calls cb. */
void ctl_authenticate(struct ctl *c, struct http_req *r, ctl_authed_cb cb,
                      void *arg);

/* As ctl_authenticate, but the nonce is not claimed: who->claim_pending is
 * set and the caller must attach the claim to the one write it proposes
 * (and answer 401 nonce_reused when that write reports KV_NONCE_REUSED). */
void ctl_authenticate_deferred(struct ctl *c, struct http_req *r,
                               ctl_authed_cb cb, void *arg);

/* Serves /v1/me, /v1/members..., /v1/rooms..., /v1/blobs... for an
 * authenticated caller; false when the path is not the control plane's. */
bool ctl_route(struct ctl *c, struct http_req *r, const struct ctl_caller *who);

/* Answers a failed meta request: 503 no_leader (nothing applied), 504
 * timeout (outcome unknown), 503 shutting_down, 400 invalid or 500. */
void ctl_meta_error(struct http_req *r, const struct meta_result *res);

/* Imports a member unless one exists (migrate-to-kv): creates it, or
 * reports an identical member as unchanged, or a different one (or the key
 * held by another handle) as a conflict; never overwrites. cb fires once
 * with a result and a short message. Returns 0 (cb will fire), -1 for an
 * invalid handle or sign_pub, -2 when the node cannot take it now. */
enum ctl_import_result {
    CTL_IMPORT_CREATED = 0,
    CTL_IMPORT_UNCHANGED,
    CTL_IMPORT_CONFLICT,
    CTL_IMPORT_ERROR,
};
typedef void (*ctl_import_cb)(void *arg, int result, const char *message);
int ctl_import_member(struct ctl *c, const char *handle, bool admin,
                      const char *sign_pub, ctl_import_cb cb, void *arg);

/* Counters for /metrics. */
struct ctl_stats {
    uint64_t auth_ok, auth_failed, nonce_reused;
    uint64_t blob_bytes; /* bytes of blobs stored (from the KV) */
    uint64_t members, rooms;
};
void ctl_get_stats(struct ctl *c, struct ctl_stats *out);

#endif
