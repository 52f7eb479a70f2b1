/* A raft transport that connects nowhere and listens on no port: the
 * transport of a node that runs alone (R1 without --routes), so that a single
 * node never exposes an unauthenticated raft port. */
#ifndef RG_NULL_TRANSPORT_H
#define RG_NULL_TRANSPORT_H

#include <raft/uv.h>

int rg_null_transport_init(struct raft_uv_transport *t);
void rg_null_transport_close(struct raft_uv_transport *t);

#endif
