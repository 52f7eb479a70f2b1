/* Shared between the bus's server (server.c) and its routes (routes.c).
 * Not for other modules. */
#ifndef UB_BUS_INTERNAL_H
#define UB_BUS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bus;
struct brt;
struct rt_hub;

/* A message as it travels inside the node. data holds hdr_len bytes of
 * headers (NATS/1.0 block, 0 when none) followed by the payload. */
struct bmsg {
    const char *subject;
    size_t subject_len;
    const char *reply; /* NULL when none */
    size_t reply_len;
    const uint8_t *data;
    size_t hdr_len;
    size_t total_len;
};

/* Delivers a message that arrived from another node to the local
 * subscribers. queues lists the queue groups (names, nq of them) the sender
 * chose this node to serve; plain subscribers always get it. Returns the
 * number of deliveries. */
size_t bus_deliver_remote(struct bus *b, const struct bmsg *m,
                          const char *const *queues, const size_t *queue_lens,
                          size_t nq);

/* Publishes a message made by the node itself (service answers) to local
 * subscribers and the routes. */
void bus_publish_internal(struct bus *b, const char *subject, size_t len,
                          const void *data, size_t dlen);

/* The node's services under $UB.API. (sysapi.c). */
struct bsys;
struct ctl;
struct bsys *bsys_new(struct bus *b, struct ctl *ctl);
/* Answers still pending from the control plane are dropped. */
void bsys_close(struct bsys *s);
/* A request published to $UB.API.> by handle (an admin or not). */
void bsys_request(struct bsys *s, const char *handle, bool admin,
                  const struct bmsg *m);

/* Routes (routes.c): interest exchange and forwarding. */
struct brt *brt_new(struct bus *b, struct rt_hub *hub,
                    const char *const *peers, unsigned n_peers);
void brt_close(struct brt *r, void (*cb)(void *arg), void *arg);
/* A local subscription on (pattern, queue) appeared (delta +1) or went away
 * (delta -1). */
void brt_interest(struct brt *r, const char *pattern, size_t plen,
                  const char *queue, size_t qlen, int delta);
/* Forwards a locally published message to the nodes with interest; queue
 * groups with no local member (local_queues lists the ones served locally)
 * are given to one remote node each. Returns the number of nodes sent to. */
size_t brt_publish(struct brt *r, const struct bmsg *m,
                   const char *const *local_queues, const size_t *local_lens,
                   size_t n_local);
/* Also routes to address (a node that joined the cluster after start).
 * 1 when added, 0 when known already, -1 when full or closing. */
int brt_add_peer(struct brt *r, const char *address);
/* Route peers connected now. */
unsigned brt_connected(const struct brt *r);

#endif
