/* A thin adapter over libh2o (HTTP/1.1, optional TLS) on our libuv loop.
 * The rest of the daemon sees only this header, so the HTTP library can be
 * swapped without touching the API handlers.
 *
 * A request is handed to the handler as a `struct http_req` that the
 * application owns until it calls one of the respond functions, exactly
 * once, possibly long after the handler returned (after a raft commit). If
 * the client went away meanwhile the answer is dropped silently. */
#ifndef HTTP_SERVER_H
#define HTTP_SERVER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct http_server;
struct http_req;

typedef void (*http_handler)(void *arg, struct http_req *r);

struct http_server_config {
    const char *listen;   /* HOST:PORT */
    const char *tls_cert; /* NULL: plain HTTP */
    const char *tls_key;
    size_t max_body;      /* larger bodies get 413 before they are read */
};

int http_server_create(uv_loop_t *loop, const struct http_server_config *cfg,
                       http_handler handler, void *arg,
                       struct http_server **out, char *err, size_t errlen);

/* Port actually bound (useful with port 0). */
int http_server_port(const struct http_server *s);

/* Stops accepting (new requests on open connections get 503), lets answers
 * in flight go out, closes idle connections (all connections after 5 s), and
 * calls cb once no request is pending and no connection is open. */
void http_server_close(struct http_server *s, void (*cb)(void *), void *arg);

/* Number of requests handed out and not answered yet. */
unsigned http_server_pending(const struct http_server *s);

#define HTTP_MAX_ROUTES 16

/* Requests of route (as tagged with http_req_set_route; untagged ones are
 * route 0) answered with a status of class cls (2 for 2xx, ..., 5). */
uint64_t http_server_answered(const struct http_server *s, unsigned route,
                              int cls);

/* Tags r with a route number < HTTP_MAX_ROUTES for the answer counters. */
void http_req_set_route(struct http_req *r, unsigned route);

/* Request accessors; strings are NUL-terminated copies owned by r. */
const char *http_req_method(const struct http_req *r);
const char *http_req_path(const struct http_req *r);  /* normalized, decoded */
const char *http_req_query(const struct http_req *r); /* after '?', or "" */
/* Value of query parameter name (decoded), or NULL. Borrowed from r. */
const char *http_req_param(struct http_req *r, const char *name);
/* The path with its query exactly as the client sent it (what request
 * signatures cover). */
const char *http_req_raw_path(const struct http_req *r);
/* Value of header name (lower-case), or NULL; copied into r, NUL-terminated.
 * A header whose value holds a NUL byte reads as absent. */
const char *http_req_header(struct http_req *r, const char *name);
const void *http_req_body(const struct http_req *r, size_t *len);
bool http_req_from_loopback(const struct http_req *r);

/* Answers and releases r. body is copied. */
void http_req_respond(struct http_req *r, int status, const char *ctype,
                      const void *body, size_t len);
/* Answers with the JSON object (the reference is stolen). */
void http_req_respond_json(struct http_req *r, int status, json_t *obj);
/* Answers {"error": {"code": code, "message": message}}. */
void http_req_error(struct http_req *r, int status, const char *code,
                    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
