/* Subject permissions of a bus connection (DESIGN.md §5):
 *   room.<room>.>      publish and subscribe, for each room of the member
 *   member.<handle>.>  publish and subscribe, its own
 *   _INBOX.<handle>.>  subscribe (replies to its requests)
 * Reply subjects of its publishes must lie under its own _INBOX.<handle>. or
 * member.<handle>. prefix. Admins may publish and subscribe anywhere. The
 * one-response grant for requests a member received is kept by the
 * connection (server.c), not here. */
#ifndef UB_BUS_ACL_H
#define UB_BUS_ACL_H

#include <stdbool.h>
#include <stddef.h>

struct bacl {
    bool all;      /* admin, or authentication off */
    char handle[65];
    size_t handle_len;
    char **rooms;  /* sorted (strcmp) */
    size_t n_rooms;
};

bool bacl_can_publish(const struct bacl *a, const char *subj, size_t len);
/* pattern: a valid subscription subject (wildcards allowed). */
bool bacl_can_subscribe(const struct bacl *a, const char *pattern, size_t len);
bool bacl_can_reply_to(const struct bacl *a, const char *reply, size_t len);

/* Whether pattern lies inside room.<room>.> (for dropping the
 * subscriptions of a room the member left). */
bool bacl_in_room(const char *pattern, size_t len, const char *room);

#endif
