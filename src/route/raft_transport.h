/* libraft 0.22 transport (struct raft_uv_transport, version 1) over the route
 * hub: every raft group of the node shares the hub's one mutual-TLS port.
 *
 * Outbound: connect(id, address) dials address with kind RT_KIND_RAFT and
 * the transport's group, requiring the acceptor to be node `id`.
 * Inbound: the hub's RT_KIND_RAFT handler (installed by the first transport
 * on a hub) hands each authenticated connection to the transport of its
 * group, as accept_cb(t, peer id, peer advertised address, stream). A
 * connection for a group nobody listens to is closed.
 *
 * Raft ids must be rt_node_id(node name): the transport's init method
 * refuses any other id, because peers check the id against the name in the
 * certificate. Raft addresses are the nodes' advertised route addresses. */
#ifndef UB_ROUTE_RAFT_TRANSPORT_H
#define UB_ROUTE_RAFT_TRANSPORT_H

#include <raft.h>
#include <raft/uv.h>
#include <stdint.h>

#include "route/hub.h"

/* Fills t (version 1 and the four methods) for raft group `group` on hub.
 * The hub is borrowed and must outlive the transport. At most one
 * transport per group and hub. Returns 0, RAFT_NOMEM, or RAFT_INVALID (the
 * group is taken, or the RT_KIND_RAFT handler belongs to someone else) with
 * a message in t->errmsg. Pass t to raft_uv_init() afterwards. */
int rt_raft_transport_init(struct raft_uv_transport *t, struct rt_hub *hub,
                           uint64_t group);

/* Releases what rt_raft_transport_init() allocated, like raft_uv_tcp_close():
 * call it after raft's close callback (or when raft was never started). No
 * transport callback fires afterwards; memory is freed asynchronously on
 * the hub's loop, so t itself may be reused or freed right away. */
void rt_raft_transport_close(struct raft_uv_transport *t);

#endif
