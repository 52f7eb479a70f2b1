/* The external NATS probe (extprobe.h): resolve, connect, read the first
 * line, check it is INFO {json}, close; again every BXP_INTERVAL_MS. A
 * probe that takes longer than BXP_TIMEOUT_MS fails. */
#include "bus/extprobe.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BXP_INTERVAL_MS 5000
#define BXP_TIMEOUT_MS 3000
#define BXP_LINE_MAX 8192

struct bxp {
    uv_loop_t *loop;
    char *url;
    char host[256];
    char port[8];
    uv_timer_t timer;
    uv_getaddrinfo_t gai;
    uv_connect_t conn;
    uv_tcp_t *tcp; /* the probe's socket, NULL between probes */
    char line[BXP_LINE_MAX];
    size_t len;
    bool busy;     /* a probe is running */
    bool resolving;
    bool closing;
    unsigned handles; /* open: timer, plus tcp while probing */
    uint64_t started;
    struct bxp_status st;
    void (*close_cb)(void *arg);
    void *close_arg;
};

static void release(struct bxp *p)
{
    if (--p->handles == 0 && p->closing && !p->resolving) {
        void (*cb)(void *) = p->close_cb;
        void *arg = p->close_arg;
        free(p->url);
        free(p);
        if (cb) {
            cb(arg);
        }
    }
}

static void tcp_closed(uv_handle_t *h)
{
    struct bxp *p = h->data;
    free(h);
    release(p);
}

/* Ends the running probe with its outcome (error NULL: success). */
static void finish(struct bxp *p, const char *error)
{
    if (!p->busy) {
        return;
    }
    p->busy = false;
    p->st.checked_ms = uv_now(p->loop);
    p->st.reachable = error == NULL;
    snprintf(p->st.error, sizeof p->st.error, "%s", error ? error : "");
    if (error != NULL) { /* what answered before may be gone */
        p->st.server_name[0] = '\0';
        p->st.version[0] = '\0';
    }
    if (p->tcp) {
        uv_close((uv_handle_t *)p->tcp, tcp_closed);
        p->tcp = NULL;
    }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct bxp *p = h->data;
    (void)hint;
    *buf = uv_buf_init(p->line + p->len, (unsigned)(sizeof p->line - p->len - 1));
}

static void parse_info(struct bxp *p)
{
    json_error_t jerr;
    json_t *j;
    char *nl = memchr(p->line, '\n', p->len);
    if (nl == NULL) {
        if (p->len >= sizeof p->line - 1) {
            finish(p, "the first line is not a NATS INFO");
        }
        return;
    }
    if (p->len < 6 || strncmp(p->line, "INFO ", 5) != 0) {
        finish(p, "the server did not greet with a NATS INFO line");
        return;
    }
    j = json_loadb(p->line + 5, (size_t)(nl - p->line - 5), 0, &jerr);
    if (!json_is_object(j)) {
        json_decref(j);
        finish(p, "the INFO line is not JSON");
        return;
    }
    snprintf(p->st.server_name, sizeof p->st.server_name, "%s",
             json_string_value(json_object_get(j, "server_name"))
                 ? json_string_value(json_object_get(j, "server_name"))
                 : "");
    snprintf(p->st.version, sizeof p->st.version, "%s",
             json_string_value(json_object_get(j, "version"))
                 ? json_string_value(json_object_get(j, "version"))
                 : "");
    json_decref(j);
    finish(p, NULL);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct bxp *p = s->data;
    (void)buf;
    if (n < 0) {
        finish(p, n == UV_EOF ? "the server closed the connection"
                              : uv_strerror((int)n));
        return;
    }
    p->len += (size_t)n;
    parse_info(p);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct bxp *p = req->data;
    if (!p->busy || p->tcp == NULL) {
        return;
    }
    if (status != 0) {
        finish(p, uv_strerror(status));
        return;
    }
    uv_read_start((uv_stream_t *)p->tcp, on_alloc, on_read);
}

static void on_resolved(uv_getaddrinfo_t *req, int status,
                        struct addrinfo *res)
{
    struct bxp *p = req->data;
    p->resolving = false;
    if (p->closing) {
        uv_freeaddrinfo(res);
        release(p); /* the count bxp_close took for this request */
        return;
    }
    if (status != 0 || res == NULL) {
        uv_freeaddrinfo(res);
        finish(p, "cannot resolve the host");
        return;
    }
    p->tcp = malloc(sizeof *p->tcp);
    if (p->tcp == NULL) {
        uv_freeaddrinfo(res);
        finish(p, "out of memory");
        return;
    }
    uv_tcp_init(p->loop, p->tcp);
    p->tcp->data = p;
    p->handles++;
    p->len = 0;
    p->conn.data = p;
    if (uv_tcp_connect(&p->conn, p->tcp, res->ai_addr, on_connect) != 0) {
        finish(p, "cannot connect");
    }
    uv_freeaddrinfo(res);
}

static void on_tick(uv_timer_t *t)
{
    struct bxp *p = t->data;
    struct addrinfo hints;
    if (p->busy) {
        if (uv_now(p->loop) - p->started >= BXP_TIMEOUT_MS && !p->resolving) {
            finish(p, "no INFO line within 3 s");
        }
        return;
    }
    if (uv_now(p->loop) - p->started < BXP_INTERVAL_MS && p->started != 0) {
        return;
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    p->busy = true;
    p->resolving = true;
    p->started = uv_now(p->loop);
    p->gai.data = p;
    if (uv_getaddrinfo(p->loop, &p->gai, on_resolved, p->host, p->port,
                       &hints) != 0) {
        p->resolving = false;
        finish(p, "cannot resolve the host");
    }
}

int bxp_start(uv_loop_t *loop, const char *url, struct bxp **out, char *err,
              size_t errlen)
{
    const char *hp, *colon;
    struct bxp *p;
    long port;
    char *end;

    if (strncmp(url, "nats://", 7) == 0) {
        hp = url + 7;
    } else if (strncmp(url, "tls://", 6) == 0) {
        hp = url + 6;
    } else {
        snprintf(err, errlen, "--nats-url must look like nats://HOST:PORT");
        return -1;
    }
    if (strchr(hp, '@') != NULL) {
        snprintf(err, errlen,
                 "--nats-url must not carry credentials (they would be "
                 "visible in argv); configure the external server's "
                 "authorization instead");
        return -1;
    }
    colon = strrchr(hp, ':');
    port = colon ? strtol(colon + 1, &end, 10) : 0;
    if (colon == NULL || colon == hp || *end != '\0' || port < 1 ||
        port > 65535 || (size_t)(colon - hp) >= sizeof p->host) {
        snprintf(err, errlen, "--nats-url must look like nats://HOST:PORT");
        return -1;
    }
    p = calloc(1, sizeof *p);
    if (p == NULL || (p->url = strdup(url)) == NULL) {
        free(p);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    p->loop = loop;
    if (hp[0] == '[' && colon[-1] == ']') { /* [v6]:port */
        snprintf(p->host, sizeof p->host, "%.*s", (int)(colon - hp - 2),
                 hp + 1);
    } else {
        snprintf(p->host, sizeof p->host, "%.*s", (int)(colon - hp), hp);
    }
    snprintf(p->port, sizeof p->port, "%ld", port);
    snprintf(p->st.error, sizeof p->st.error, "not checked yet");
    uv_timer_init(loop, &p->timer);
    p->timer.data = p;
    p->handles = 1;
    uv_timer_start(&p->timer, on_tick, 0, 250);
    *out = p;
    return 0;
}

void bxp_get(const struct bxp *p, struct bxp_status *out)
{
    *out = p->st;
}

const char *bxp_url(const struct bxp *p)
{
    return p->url;
}

static void timer_closed(uv_handle_t *h)
{
    release(h->data);
}

void bxp_close(struct bxp *p, void (*cb)(void *arg), void *arg)
{
    p->closing = true;
    p->close_cb = cb;
    p->close_arg = arg;
    if (p->resolving) {
        uv_cancel((uv_req_t *)&p->gai);
        p->handles++; /* released when the resolve callback runs */
    }
    p->busy = true;
    finish(p, "stopped");
    uv_close((uv_handle_t *)&p->timer, timer_closed);
}
