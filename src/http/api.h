/* The HTTP API of the replicated core (DESIGN.md §3-§4): /healthz,
 * /metrics, /v1/kv/..., /v1/cluster. Until signed requests exist (the
 * control-plane issue) /v1/ answers only clients on loopback. */
#ifndef HTTP_API_H
#define HTTP_API_H

#include <stdbool.h>

struct http_req;
struct meta;

struct api_posture {
    const char *bus_auth; /* off | warn | enforce */
    bool acl;
    bool tls;
    bool route_tls;
    unsigned kv_replicas;
};

struct api;

struct api *api_create(struct meta *meta, const struct api_posture *posture);
void api_destroy(struct api *a);

/* The http_handler to give the server (arg = struct api *). */
void api_handle(void *arg, struct http_req *r);

#endif
