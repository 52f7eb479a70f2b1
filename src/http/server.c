/* libh2o adapter.
 *
 * Lifetime: h2o frees an h2o_req_t when its connection or stream dies, and
 * an HTTP/1 request whose handler has not answered is never timed out (see
 * H2O_NOTES.md §3). So every request handed out is an app-owned
 * `http_req` holding a guard allocated in the request's pool; the guard's
 * dispose callback clears our pointer when h2o frees the request, and the
 * respond functions then just release our record.
 *
 * Shutdown (H2O_NOTES.md §7): close listeners, request h2o's shutdown, wait
 * for pending answers, half-close idle keep-alive sockets so h2o closes them,
 * wait for h2o's one-second GOAWAY timer, then dispose the context. */
#include "server.h"

#include <h2o.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "lib/config.h"
#include "lib/log.h"

#define MAX_PARAMS 16
/* Past main's 5 s grace, so that requests still waiting get their 503
 * from the closing meta group before their connections are cut. */
#define DRAIN_DEADLINE_MS 8000

struct conn {
    uv_tcp_t tcp;
    struct http_server *srv;
    h2o_linklist_t link;
};

struct guard {
    struct http_req *r;
};

struct http_req {
    struct http_server *srv;
    h2o_req_t *req;  /* NULL once h2o disposed of the request */
    struct guard *guard;
    char *method;
    char *path;
    char *raw_path;
    char *query;
    unsigned n_headers;
    char *header_names[4];
    char *header_values[4];
    bool params_parsed;
    unsigned n_params;
    char *param_names[MAX_PARAMS];
    char *param_values[MAX_PARAMS];
    bool loopback;
    unsigned route;
};

struct http_server {
    uv_loop_t *loop;
    h2o_globalconf_t conf;
    h2o_context_t ctx;
    h2o_accept_ctx_t actx;
    SSL_CTX *ssl;
    uv_tcp_t listener;
    int port;
    http_handler handler;
    void *arg;
    h2o_linklist_t conns;
    unsigned n_conns;
    unsigned pending;
    uint64_t answered[HTTP_MAX_ROUTES][6]; /* [route][status / 100] */
    bool closing;
    bool rd_shutdown;
    bool forced;
    uv_timer_t drain;
    uint64_t drain_start;
    void (*close_cb)(void *);
    void *close_arg;
};

/* ------------------------------------------------------------------ */

static void guard_dispose(void *p)
{
    struct guard *g = p;
    if (g->r) {
        g->r->req = NULL;
        g->r->guard = NULL;
    }
}

static void req_free(struct http_req *r)
{
    for (unsigned i = 0; i < r->n_params; i++) {
        free(r->param_names[i]);
        free(r->param_values[i]);
    }
    for (unsigned i = 0; i < r->n_headers; i++) {
        free(r->header_names[i]);
        free(r->header_values[i]);
    }
    free(r->method);
    free(r->path);
    free(r->raw_path);
    free(r->query);
    r->srv->pending--;
    free(r);
}

static char *dup_iov(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    struct http_server *srv = *(struct http_server **)(self + 1);
    struct http_req *r;
    struct sockaddr_storage ss;
    socklen_t sl;

    if (srv->closing) {
        static const char body[] =
            "{\"error\":{\"code\":\"shutting_down\",\"message\":\"the node is "
            "stopping; retry on another node\"}}\n";
        req->res.status = 503;
        req->res.reason = "Service Unavailable";
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE,
                       NULL, H2O_STRLIT("application/json"));
        h2o_send_inline(req, body, sizeof body - 1);
        return 0;
    }
    for (size_t i = 0; i < req->path_normalized.len; i++) {
        /* A decoded NUL or control byte would cut or bend the path we see. */
        if ((unsigned char)req->path_normalized.base[i] < 0x20) {
            static const char body[] =
                "{\"error\":{\"code\":\"bad_path\",\"message\":\"control "
                "characters are not allowed in paths\"}}\n";
            req->res.status = 400;
            req->res.reason = "Bad Request";
            h2o_add_header(&req->pool, &req->res.headers,
                           H2O_TOKEN_CONTENT_TYPE, NULL,
                           H2O_STRLIT("application/json"));
            h2o_send_inline(req, body, sizeof body - 1);
            return 0;
        }
    }
    r = calloc(1, sizeof *r);
    if (r == NULL) {
        h2o_send_error_503(req, "Service Unavailable", "out of memory", 0);
        return 0;
    }
    r->srv = srv;
    srv->pending++;
    r->req = req;
    r->method = dup_iov(req->method.base, req->method.len);
    r->path = dup_iov(req->path_normalized.base, req->path_normalized.len);
    r->raw_path = dup_iov(req->path.base, req->path.len);
    if (req->query_at != SIZE_MAX) {
        r->query = dup_iov(req->path.base + req->query_at + 1,
                           req->path.len - req->query_at - 1);
    } else {
        r->query = dup_iov("", 0);
    }
    sl = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    if (sl > 0 && ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
        r->loopback = (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    } else if (sl > 0 && ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
        r->loopback = IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
    }
    if (r->method == NULL || r->path == NULL || r->query == NULL ||
        r->raw_path == NULL) {
        h2o_send_error_503(req, "Service Unavailable", "out of memory", 0);
        r->req = NULL;
        req_free(r);
        return 0;
    }
    r->guard = h2o_mem_alloc_shared(&req->pool, sizeof *r->guard,
                                    guard_dispose);
    r->guard->r = r;
    srv->handler(srv->arg, r);
    return 0;
}

/* ------------------------------------------------------------------ */
/* accessors                                                            */

const char *http_req_method(const struct http_req *r)
{
    return r->method;
}

const char *http_req_path(const struct http_req *r)
{
    return r->path;
}

const char *http_req_query(const struct http_req *r)
{
    return r->query;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* Percent-decodes p[0..n) into a new string; NULL on bad escapes or NUL. */
static char *url_decode(const char *p, size_t n)
{
    char *out = malloc(n + 1);
    size_t o = 0;
    if (out == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '%') {
            int hi, lo;
            if (i + 2 >= n) {
                free(out);
                return NULL;
            }
            hi = hexval((unsigned char)p[i + 1]);
            lo = hexval((unsigned char)p[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                free(out);
                return NULL;
            }
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else if (p[i] == '+') {
            out[o++] = ' ';
        } else {
            out[o++] = p[i];
        }
    }
    out[o] = '\0';
    return out;
}

static void parse_params(struct http_req *r)
{
    const char *p = r->query;
    r->params_parsed = true;
    while (*p && r->n_params < MAX_PARAMS) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        size_t nl = eq ? (size_t)(eq - p) : len;
        char *name = url_decode(p, nl);
        char *value = eq ? url_decode(eq + 1, len - nl - 1) : strdup("");
        if (name && value) {
            r->param_names[r->n_params] = name;
            r->param_values[r->n_params++] = value;
        } else {
            free(name);
            free(value);
        }
        if (amp == NULL) {
            break;
        }
        p = amp + 1;
    }
}

const char *http_req_param(struct http_req *r, const char *name)
{
    if (!r->params_parsed) {
        parse_params(r);
    }
    for (unsigned i = 0; i < r->n_params; i++) {
        if (strcmp(r->param_names[i], name) == 0) {
            return r->param_values[i];
        }
    }
    return NULL;
}

const char *http_req_raw_path(const struct http_req *r)
{
    return r->raw_path;
}

const char *http_req_header(struct http_req *r, const char *name)
{
    ssize_t i;
    h2o_iovec_t v;
    for (unsigned k = 0; k < r->n_headers; k++) {
        if (strcmp(r->header_names[k], name) == 0) {
            return r->header_values[k];
        }
    }
    if (r->req == NULL || r->n_headers == sizeof r->header_names /
                                               sizeof r->header_names[0]) {
        return NULL;
    }
    i = h2o_find_header_by_str(&r->req->headers, name, strlen(name), -1);
    if (i < 0) {
        return NULL;
    }
    v = r->req->headers.entries[i].value;
    if (memchr(v.base, '\0', v.len) != NULL) {
        return NULL;
    }
    r->header_names[r->n_headers] = strdup(name);
    r->header_values[r->n_headers] = dup_iov(v.base, v.len);
    if (r->header_names[r->n_headers] == NULL ||
        r->header_values[r->n_headers] == NULL) {
        free(r->header_names[r->n_headers]);
        free(r->header_values[r->n_headers]);
        return NULL;
    }
    return r->header_values[r->n_headers++];
}

const void *http_req_body(const struct http_req *r, size_t *len)
{
    if (r->req == NULL || r->req->entity.base == NULL) {
        *len = 0;
        return "";
    }
    *len = r->req->entity.len;
    return r->req->entity.base;
}

bool http_req_from_loopback(const struct http_req *r)
{
    return r->loopback;
}

/* ------------------------------------------------------------------ */
/* responses                                                            */

void http_req_respond(struct http_req *r, int status, const char *ctype,
                      const void *body, size_t len)
{
    h2o_req_t *req = r->req;
    if (status >= 100 && status < 600) {
        r->srv->answered[r->route][status / 100]++;
    }
    if (req != NULL) {
        /* Detach first: sending may dispose the request synchronously. */
        r->guard->r = NULL;
        r->req = NULL;
        req->res.status = status;
        req->res.reason = status < 300   ? "OK"
                          : status < 500 ? "Client Error"
                                         : "Server Error";
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE,
                       NULL, ctype, strlen(ctype));
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL,
                       NULL, H2O_STRLIT("no-store"));
        /* h2o_send_inline leaves the length unset; without it h2o 2.2 can
         * frame only a 200 as chunked and closes the connection after any
         * other status (every 4xx used to cost the client a reconnect). */
        req->res.content_length = len;
        h2o_send_inline(req, body, len);
    }
    req_free(r);
}

void http_req_respond_json(struct http_req *r, int status, json_t *obj)
{
    char *s = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (s == NULL) {
        static const char oom[] =
            "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";
        http_req_respond(r, 500, "application/json", oom, sizeof oom - 1);
        return;
    }
    size_t n = strlen(s);
    /* Trailing newline: friendlier for curl users. */
    char *t = realloc(s, n + 2);
    if (t) {
        s = t;
        s[n++] = '\n';
        s[n] = '\0';
    }
    http_req_respond(r, status, "application/json", s, n);
    free(s);
}

void http_req_error(struct http_req *r, int status, const char *code,
                    const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    http_req_respond_json(
        r, status,
        json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg));
}

/* ------------------------------------------------------------------ */
/* accepting                                                            */

static void conn_closed(uv_handle_t *h)
{
    struct conn *c = (struct conn *)h;
    h2o_linklist_unlink(&c->link);
    c->srv->n_conns--;
    free(c);
}

static void on_accept(uv_stream_t *l, int status)
{
    struct http_server *srv = l->data;
    struct conn *c;
    h2o_socket_t *sock;
    if (status != 0 || srv->closing) {
        return;
    }
    c = calloc(1, sizeof *c);
    if (c == NULL) {
        return;
    }
    c->srv = srv;
    uv_tcp_init(srv->loop, &c->tcp);
    h2o_linklist_insert(&srv->conns, &c->link);
    srv->n_conns++;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, conn_closed);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    sock = h2o_uv_socket_create((uv_stream_t *)&c->tcp, conn_closed);
    h2o_accept(&srv->actx, sock);
}

static SSL_CTX *make_ssl(const char *cert, const char *key, char *err,
                         size_t errlen)
{
    SSL_CTX *s = SSL_CTX_new(TLS_server_method());
    if (s == NULL) {
        snprintf(err, errlen, "cannot create a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(s, TLS1_2_VERSION);
    SSL_CTX_set_options(s, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    if (SSL_CTX_use_certificate_chain_file(s, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(s, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(s) != 1) {
        char e[256];
        ERR_error_string_n(ERR_get_error(), e, sizeof e);
        snprintf(err, errlen, "cannot load --tls-cert %s / --tls-key %s: %s",
                 cert, key, e);
        SSL_CTX_free(s);
        return NULL;
    }
    /* No ALPN h2: HTTP/1.1 only keeps h2o 2.2's HTTP/2 surface closed. */
    return s;
}

int http_server_create(uv_loop_t *loop, const struct http_server_config *cfg,
                       http_handler handler, void *arg,
                       struct http_server **out, char *err, size_t errlen)
{
    struct http_server *srv = calloc(1, sizeof *srv);
    h2o_hostconf_t *host;
    h2o_pathconf_t *path;
    h2o_handler_t *h;
    char hostname[256];
    int port, rv;
    struct sockaddr_storage ss;
    int namelen = sizeof ss;

    if (srv == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (ub_split_hostport(cfg->listen, hostname, sizeof hostname, &port) != 0) {
        snprintf(err, errlen, "--http-listen '%s' is not HOST:PORT",
                 cfg->listen);
        goto err_after_alloc;
    }
    srv->loop = loop;
    srv->handler = handler;
    srv->arg = arg;
    h2o_linklist_init_anchor(&srv->conns);
    if (cfg->tls_cert) {
        srv->ssl = make_ssl(cfg->tls_cert, cfg->tls_key, err, errlen);
        if (srv->ssl == NULL) {
            goto err_after_alloc;
        }
    }
    h2o_config_init(&srv->conf);
    srv->conf.max_request_entity_size = cfg->max_body;
    srv->conf.http1.req_timeout = 10000;
    srv->conf.http1.upgrade_to_http2 = 0;
    host = h2o_config_register_host(&srv->conf,
                                    h2o_iovec_init(H2O_STRLIT("default")),
                                    65535);
    path = h2o_config_register_path(host, "/", 0);
    h = h2o_create_handler(path, sizeof *h + sizeof srv);
    h->on_req = on_req;
    *(struct http_server **)(h + 1) = srv;
    h2o_context_init(&srv->ctx, loop, &srv->conf);
    srv->actx.ctx = &srv->ctx;
    srv->actx.hosts = srv->conf.hosts;
    srv->actx.ssl_ctx = srv->ssl;

    uv_tcp_init(loop, &srv->listener);
    srv->listener.data = srv;
    {
        struct sockaddr_in a4;
        struct sockaddr_in6 a6;
        const struct sockaddr *sa;
        if (strcmp(hostname, "localhost") == 0) {
            snprintf(hostname, sizeof hostname, "127.0.0.1");
        }
        if (uv_ip4_addr(hostname, port, &a4) == 0) {
            sa = (const struct sockaddr *)&a4;
        } else if (uv_ip6_addr(hostname, port, &a6) == 0) {
            sa = (const struct sockaddr *)&a6;
        } else {
            snprintf(err, errlen,
                     "--http-listen host '%s' must be an IP address", hostname);
            goto err_after_listener;
        }
        rv = uv_tcp_bind(&srv->listener, sa, 0);
        if (rv == 0) {
            rv = uv_listen((uv_stream_t *)&srv->listener, 511, on_accept);
        }
        if (rv != 0) {
            snprintf(err, errlen, "cannot listen on %s: %s", cfg->listen,
                     uv_strerror(rv));
            goto err_after_listener;
        }
    }
    uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&ss, &namelen);
    srv->port = ss.ss_family == AF_INET6
                    ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                    : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    uv_timer_init(loop, &srv->drain);
    srv->drain.data = srv;
    *out = srv;
    return 0;

err_after_listener:
    uv_close((uv_handle_t *)&srv->listener, NULL);
    /* The context stays half-initialised; this path ends the process. */
    return -1;
err_after_alloc:
    free(srv);
    return -1;
}

int http_server_port(const struct http_server *s)
{
    return s->port;
}

unsigned http_server_pending(const struct http_server *s)
{
    return s->pending;
}

uint64_t http_server_answered(const struct http_server *s, unsigned route,
                              int cls)
{
    return cls >= 1 && cls <= 5 && route < HTTP_MAX_ROUTES
               ? s->answered[route][cls]
               : 0;
}

void http_req_set_route(struct http_req *r, unsigned route)
{
    r->route = route < HTTP_MAX_ROUTES ? route : 0;
}

static void drain_closed(uv_handle_t *h)
{
    struct http_server *srv = h->data;
    void (*cb)(void *) = srv->close_cb;
    void *arg = srv->close_arg;
    /* h2o_context_dispose runs the loop once itself; safe here because we
     * are in a close callback, not inside one of h2o's own callbacks. */
    h2o_context_dispose(&srv->ctx);
    h2o_config_dispose(&srv->conf);
    if (srv->ssl) {
        SSL_CTX_free(srv->ssl);
    }
    free(srv);
    if (cb) {
        cb(arg);
    }
}

static void drain_tick(uv_timer_t *t)
{
    struct http_server *srv = t->data;
    uint64_t elapsed = uv_now(srv->loop) - srv->drain_start;
    bool h2_timer = h2o_timeout_is_linked(
        &srv->ctx.http2._graceful_shutdown_timeout);

    if (srv->pending == 0 && !srv->rd_shutdown) {
        for (h2o_linklist_t *n = srv->conns.next; n != &srv->conns;
             n = n->next) {
            struct conn *c = H2O_STRUCT_FROM_MEMBER(struct conn, link, n);
            uv_os_fd_t fd;
            if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0) {
                shutdown(fd, SHUT_RD);
            }
        }
        srv->rd_shutdown = true;
    }
    if (elapsed > DRAIN_DEADLINE_MS && !srv->forced) {
        ub_warn("http", "drain deadline: closing %u connections with %u "
                        "answers pending",
                srv->n_conns, srv->pending);
        for (h2o_linklist_t *n = srv->conns.next; n != &srv->conns;
             n = n->next) {
            struct conn *c = H2O_STRUCT_FROM_MEMBER(struct conn, link, n);
            uv_os_fd_t fd;
            if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0) {
                shutdown(fd, SHUT_RDWR);
            }
        }
        srv->forced = true;
    }
    /* Pending records point at srv: never free it before they are gone. */
    if (srv->pending == 0 && srv->n_conns == 0 && !h2_timer) {
        uv_timer_stop(t);
        uv_close((uv_handle_t *)t, drain_closed);
    }
}

void http_server_close(struct http_server *s, void (*cb)(void *), void *arg)
{
    if (s->closing) {
        return;
    }
    s->closing = true;
    s->close_cb = cb;
    s->close_arg = arg;
    s->drain_start = uv_now(s->loop);
    uv_close((uv_handle_t *)&s->listener, NULL);
    h2o_context_request_shutdown(&s->ctx);
    uv_timer_start(&s->drain, drain_tick, 0, 20);
}
