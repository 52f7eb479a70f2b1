/* The bus's view of the allowlist: who a signing key belongs to, its role,
 * and the rooms each member is in, read from the node's replica of the meta
 * KV (records.h layout) and kept current by KV watches.
 *
 * The replica may lag the leader by the replication delay; that is the
 * point: every node answers from memory and a change reaches every node's
 * connections as soon as that node applies it (well under a second).
 *
 * Changes are reported through the change callback with the handle whose
 * rights may have changed (NULL: re-check everyone, after a snapshot
 * restore). The callback runs inside raft's apply; it must not propose. */
#ifndef UB_BUS_DIRECTORY_H
#define UB_BUS_DIRECTORY_H

#include <stdbool.h>
#include <stddef.h>

struct kv_store;
struct bdir;

typedef void (*bdir_change_cb)(void *arg, const char *handle);

/* Loads the rooms index and installs the watches. NULL when out of memory
 * or the KV refuses the watch. */
struct bdir *bdir_new(struct kv_store *kv, bdir_change_cb cb, void *arg);
void bdir_free(struct bdir *d);

/* Identity of a member: 0 and *admin set when upub ("U...") is a current
 * member's signing key (handle gets the handle, NUL-terminated, cap >= 65);
 * -1 otherwise. */
int bdir_lookup_key(struct bdir *d, const char *upub, char *handle, size_t cap,
                    bool *admin);

/* 0 with *admin when handle is a member whose signing key is still upub;
 * -1 when it was removed or its key changed. */
int bdir_check_member(struct bdir *d, const char *handle, const char *upub,
                      bool *admin);

/* The rooms of handle, sorted (strcmp), as a malloc'd array of malloc'd
 * strings in *rooms (NULL when none) with the count in *n. 0, or -1 when out
 * of memory. Free with bdir_rooms_free. */
int bdir_rooms_of(struct bdir *d, const char *handle, char ***rooms, size_t *n);
void bdir_rooms_free(char **rooms, size_t n);

#endif
