/* The HTTP API (DESIGN.md §3-§4): /healthz and /metrics without
 * authentication; everything under /v1/ signed (src/ctl): the control
 * plane's members, rooms, keys and blobs, and for admins the KV and the
 * cluster endpoints. */
#ifndef HTTP_API_H
#define HTTP_API_H

#include <stdbool.h>

struct http_req;
struct meta;
struct ctl;

struct api_posture {
    const char *bus_auth; /* off | warn | enforce */
    bool acl;
    bool tls;
    bool route_tls;
    unsigned kv_replicas;
};

struct api;

struct api *api_create(struct meta *meta, struct ctl *ctl,
                       const struct api_posture *posture);
void api_destroy(struct api *a);

/* The server whose answer counters /metrics reports. */
struct http_server;
void api_set_server(struct api *a, struct http_server *s);

/* The bus whose counters /healthz and /metrics report (NULL: none). */
struct bus;
void api_set_bus(struct api *a, struct bus *b);
/* With --nats-url: the probe of the external server (NULL: none). */
struct bxp;
void api_set_external_bus(struct api *a, struct bxp *p);

/* The http_handler to give the server (arg = struct api *). */
void api_handle(void *arg, struct http_req *r);

#endif
