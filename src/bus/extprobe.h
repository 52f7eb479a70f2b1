/* Watching an external NATS server (--nats-url): the embedded bus is not
 * started, so the node only checks, every few seconds, that the URL answers
 * with a NATS INFO line, and reports what it saw in /healthz. */
#ifndef UB_BUS_EXTPROBE_H
#define UB_BUS_EXTPROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct bxp;

struct bxp_status {
    bool reachable;       /* the last probe read an INFO line */
    uint64_t checked_ms;  /* uv_now() of the last finished probe, 0 = none */
    char server_name[128];
    char version[32];
    char error[160];      /* why the last probe failed */
};

/* Parses url (nats://HOST:PORT or tls://HOST:PORT; credentials refused:
 * they would sit in argv) and starts probing. Returns 0, or -1 with a
 * message in err. */
int bxp_start(uv_loop_t *loop, const char *url, struct bxp **out, char *err,
              size_t errlen);
void bxp_get(const struct bxp *p, struct bxp_status *out);
/* The URL as given (it carries no secret). */
const char *bxp_url(const struct bxp *p);
/* Stops probing; cb(arg) after every handle closed. */
void bxp_close(struct bxp *p, void (*cb)(void *arg), void *arg);

#endif
