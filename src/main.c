/* membershipd: one unibus node. The only file that knows every module.
 *
 * Start: config -> posture checks -> route hub (with --routes) -> meta group
 * (raft + KV) -> bus -> HTTP -> ready. Stop (SIGTERM/SIGINT): the bus closes
 * its clients (they reconnect elsewhere) while HTTP stops accepting and
 * drains, then the meta group closes (pending requests fail cleanly), then
 * the hub, then the loop closes with no handle left. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>
#ifdef UB_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "bus/bus.h"
#include "bus/extprobe.h"
#include "ctl/ctl.h"
#include "http/api.h"
#include "http/server.h"
#include "kv/kv.h"
#include "lib/config.h"
#include "lib/fs.h"
#include "lib/log.h"
#include "migrate/migrate.h"
#include "raft_glue/meta.h"
#include "raft_glue/node.h"
#include "route/hub.h"

#define MAX_ROUTES 16

struct daemon {
    uv_loop_t loop;
    struct ub_config cfg;
    struct rt_hub *hub;
    struct meta *meta;
    struct ctl *ctl;
    struct api *api;
    struct http_server *http;
    struct bus *bus;
    struct bxp *ext;
    uv_signal_t sigterm, sigint;
    uv_timer_t stop_timer;
    uv_timer_t route_sync; /* bus routes follow the meta group */
    uint64_t stop_start;
    bool stopping;
    bool meta_closing;
    bool http_closed;
    bool bus_closed;
    bool meta_closed;
    int exit_code;
    char *routes[MAX_ROUTES];
    unsigned n_routes;
    char advertise[300];
};

static bool is_wildcard(const char *host)
{
    return strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0 ||
           *host == '\0';
}

/* Splits --routes into host:port entries, dropping our own address. */
static int parse_routes(struct daemon *d, char *err, size_t errlen)
{
    char *copy, *save = NULL, *tok;
    if (d->cfg.routes == NULL || *d->cfg.routes == '\0') {
        return 0;
    }
    copy = strdup(d->cfg.routes);
    if (copy == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char host[256];
        char hp[300];
        int port;
        while (*tok == ' ') {
            tok++;
        }
        if (*tok == '\0') {
            continue;
        }
        if (ub_split_hostport(tok, host, sizeof host, &port) != 0) {
            snprintf(err, errlen,
                     "--routes entry '%s' is not a URL like nats://host:6250",
                     tok);
            free(copy);
            return -1;
        }
        snprintf(hp, sizeof hp, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host,
                 port);
        if (strcmp(hp, d->advertise) == 0) {
            continue; /* listing every node, ourselves included, is fine */
        }
        if (d->n_routes == MAX_ROUTES) {
            snprintf(err, errlen, "--routes lists more than %d peers",
                     MAX_ROUTES);
            free(copy);
            return -1;
        }
        d->routes[d->n_routes++] = strdup(hp);
    }
    free(copy);
    return 0;
}

/* DESIGN.md §6: refuse insecure cluster configurations, saying what to do. */
static int check_posture(struct daemon *d, char *err, size_t errlen)
{
    struct ub_config *c = &d->cfg;
    if (d->n_routes == 0) {
        if (c->kv_replicas == 3) {
            snprintf(err, errlen,
                     "--kv-replicas 3 needs three nodes: give the other two "
                     "with --routes nats://host:6250,...");
            return -1;
        }
        return 0;
    }
    if (strcmp(c->bus_auth, "enforce") != 0) {
        snprintf(err, errlen,
                 "a clustered node must run --bus-auth enforce (every node of "
                 "a cluster has the same posture); drop --bus-auth %s",
                 c->bus_auth);
        return -1;
    }
    if (!c->route_tls_cert || !c->route_tls_key || !c->route_tls_ca) {
        snprintf(err, errlen,
                 "routes run only over mutual TLS: give --route-tls-cert, "
                 "--route-tls-key and --route-tls-ca (the dedicated cluster "
                 "CA); deploy/cluster/generate-cluster-certs.sh makes them");
        return -1;
    }
    if (c->tls_ca && strcmp(c->tls_ca, c->route_tls_ca) == 0) {
        snprintf(err, errlen,
                 "--route-tls-ca must be a dedicated cluster CA, not the "
                 "client CA given to --tls-ca; generate-cluster-certs.sh "
                 "makes both");
        return -1;
    }
    if (c->cluster_pass == NULL) {
        snprintf(err, errlen,
                 "a cluster needs a shared secret: write it to a file (mode "
                 "0600) and pass --cluster-pass-file FILE, or set "
                 "UNIBUS_CLUSTER_PASS");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* shutdown                                                             */

static void handle_closed_noop(uv_handle_t *h)
{
    (void)h;
}

static void finish_stop(struct daemon *d)
{
    uv_close((uv_handle_t *)&d->sigterm, handle_closed_noop);
    uv_close((uv_handle_t *)&d->sigint, handle_closed_noop);
    uv_close((uv_handle_t *)&d->stop_timer, handle_closed_noop);
    uv_close((uv_handle_t *)&d->route_sync, handle_closed_noop);
}

static void hub_closed(void *arg)
{
    struct daemon *d = arg;
    d->hub = NULL;
    finish_stop(d);
}

static void maybe_close_hub(struct daemon *d)
{
    if (!d->http_closed || !d->meta_closed || !d->bus_closed) {
        return;
    }
    if (d->hub) {
        rt_hub_close(d->hub, hub_closed, d);
    } else {
        finish_stop(d);
    }
}

static void meta_closed(void *arg)
{
    struct daemon *d = arg;
    d->meta = NULL;
    ctl_close(d->ctl);
    d->ctl = NULL;
    d->meta_closed = true;
    maybe_close_hub(d);
}

static void http_closed(void *arg)
{
    struct daemon *d = arg;
    d->http = NULL;
    d->http_closed = true;
    maybe_close_hub(d);
}

static void bus_closed(void *arg)
{
    struct daemon *d = arg;
    d->bus_closed = true;
    maybe_close_hub(d);
}

static void stop_tick(uv_timer_t *t)
{
    struct daemon *d = t->data;
    uint64_t elapsed = uv_now(&d->loop) - d->stop_start;
    /* Let in-flight requests finish through raft for up to 5 s, then close
     * the meta group, which fails what is left with a clean 503. */
    if (!d->meta_closing &&
        (d->http == NULL || http_server_pending(d->http) == 0 ||
         elapsed > 5000)) {
        d->meta_closing = true;
        uv_timer_stop(t);
        meta_close(d->meta, meta_closed, d);
    }
}

static void begin_stop(struct daemon *d, const char *why)
{
    if (d->stopping) {
        return;
    }
    d->stopping = true;
    ub_info("main", "%s: stopping (draining HTTP, then raft)", why);
#ifdef UB_HAVE_SYSTEMD
    sd_notify(0, "STOPPING=1");
#endif
    d->stop_start = uv_now(&d->loop);
    if (d->http) {
        http_server_close(d->http, http_closed, d);
    } else {
        d->http_closed = true;
    }
    uv_timer_stop(&d->route_sync);
    if (d->bus) {
        api_set_bus(d->api, NULL);
        bus_close(d->bus, bus_closed, d);
        d->bus = NULL;
    } else if (d->ext) {
        api_set_external_bus(d->api, NULL);
        bxp_close(d->ext, bus_closed, d);
        d->ext = NULL;
    } else {
        d->bus_closed = true;
    }
    uv_timer_start(&d->stop_timer, stop_tick, 0, 20);
}

/* A node that joined after start is in no --routes list: route the bus to
 * every member of the meta group's configuration. */
static void route_sync_tick(uv_timer_t *t)
{
    struct daemon *d = t->data;
    struct rg_node *n = d->meta && d->bus ? meta_node(d->meta) : NULL;
    const struct raft_configuration *cfg = n ? rg_node_configuration(n) : NULL;
    for (unsigned i = 0; cfg && i < cfg->n; i++) {
        if (cfg->servers[i].id != rg_node_id(n) && cfg->servers[i].address) {
            bus_add_route(d->bus, cfg->servers[i].address);
        }
    }
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct daemon *d = s->data;
    begin_stop(d, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* ------------------------------------------------------------------ */

static int run(struct daemon *d)
{
    struct ub_config *c = &d->cfg;
    char err[512];
    char host[256];
    char raft_dir[1200];
    int port;
    struct meta_config mc;
    struct http_server_config hc;
    struct api_posture posture;

    if (ub_split_hostport(c->route_listen, host, sizeof host, &port) != 0) {
        ub_error("main", "--route-listen '%s' is not HOST:PORT", c->route_listen);
        return 2;
    }
    if (c->route_advertise) {
        snprintf(d->advertise, sizeof d->advertise, "%s", c->route_advertise);
    } else if (!is_wildcard(host)) {
        snprintf(d->advertise, sizeof d->advertise,
                 strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    } else {
        char hn[256];
        if (gethostname(hn, sizeof hn) != 0) {
            snprintf(hn, sizeof hn, "localhost");
        }
        hn[sizeof hn - 1] = '\0';
        snprintf(d->advertise, sizeof d->advertise, "%s:%d", hn, port);
    }
    if (parse_routes(d, err, sizeof err) != 0 ||
        check_posture(d, err, sizeof err) != 0) {
        ub_error("main", "%s", err);
        return 2;
    }
    if (c->kv_replicas == 0) {
        c->kv_replicas = d->n_routes > 0 ? 3 : 1;
    }
    if (ub_mkdir_p(c->data_dir) != 0) {
        ub_error("main", "cannot create --data-dir %s: %s", c->data_dir,
                 strerror(errno));
        return 2;
    }
    snprintf(raft_dir, sizeof raft_dir, "%s/raft/meta", c->data_dir);

    uv_loop_init(&d->loop);
    if (d->n_routes > 0) {
        struct rt_hub_config rc;
        memset(&rc, 0, sizeof rc);
        rc.name = c->name;
        rc.listen_host = host;
        rc.listen_port = port;
        rc.advertise = d->advertise;
        rc.cert_file = c->route_tls_cert;
        rc.key_file = c->route_tls_key;
        rc.ca_file = c->route_tls_ca;
        rc.secret = (const uint8_t *)c->cluster_pass;
        rc.secret_len = strlen(c->cluster_pass);
        if (rt_hub_create(&d->loop, &rc, &d->hub, err, sizeof err) != 0 ||
            rt_hub_listen(d->hub, err, sizeof err) != 0) {
            ub_error("main", "routes: %s", err);
            return 2;
        }
        ub_info("main", "routes: mutual TLS on %s, advertised as %s, %u peers",
                c->route_listen, d->advertise, d->n_routes);
    }

    memset(&mc, 0, sizeof mc);
    mc.name = c->name;
    mc.advertise = d->advertise;
    mc.raft_dir = raft_dir;
    mc.routes = (const char *const *)d->routes;
    mc.n_routes = d->n_routes;
    mc.kv_replicas = (unsigned)c->kv_replicas;
    mc.election_ms = (unsigned)c->election_timeout_ms;
    mc.heartbeat_ms = (unsigned)c->heartbeat_ms;
    mc.snapshot_threshold = (unsigned)c->snapshot_threshold;
    mc.snapshot_trailing = (unsigned)c->snapshot_trailing;
    if (meta_create(&d->loop, d->hub, &mc, &d->meta, err, sizeof err) != 0) {
        ub_error("main", "%s", err);
        return 2;
    }

    {
        struct ctl_config cc;
        memset(&cc, 0, sizeof cc);
        cc.skew_s = (unsigned)c->auth_skew;
        cc.blob_max = (size_t)c->blob_max_bytes;
        cc.bootstrap_admin = c->bootstrap_admin;
        /* A lone node with no admin given makes one a newcomer can use. */
        cc.auto_admin_dir =
            d->n_routes == 0 && c->bootstrap_admin == NULL ? c->data_dir
                                                            : NULL;
        d->ctl = ctl_create(&d->loop, d->meta, &cc);
        if (d->ctl == NULL) {
            return 2;
        }
        if (d->n_routes > 0 && c->bootstrap_admin == NULL) {
            ub_info("main", "no --bootstrap-admin: an empty cluster stays "
                            "without members until a node is given one");
        }
    }
    if (c->nats_url == NULL) {
        struct bus_config bc;
        memset(&bc, 0, sizeof bc);
        bc.listen = c->bus_listen;
        bc.name = c->name;
        bc.auth = (enum bus_auth_mode)bus_auth_parse(c->bus_auth);
        bc.tls_cert = c->tls_cert;
        bc.tls_key = c->tls_key;
        bc.tls_ca = c->tls_ca;
        bc.kv = meta_kv(d->meta);
        bc.ctl = d->ctl;
        bc.hub = d->hub;
        bc.peers = (const char *const *)d->routes;
        bc.n_peers = d->n_routes;
        if (bus_create(&d->loop, &bc, &d->bus, err, sizeof err) != 0) {
            ub_error("main", "%s", err);
            return 2;
        }
        ub_info("main", "bus: NATS protocol on %s%s, auth %s", c->bus_listen,
                c->tls_cert ? " (TLS)" : "", c->bus_auth);
    } else {
        if (bxp_start(&d->loop, c->nats_url, &d->ext, err, sizeof err) != 0) {
            ub_error("main", "%s", err);
            return 2;
        }
        ub_info("main", "bus: external NATS at %s; the embedded bus is not "
                        "started. The control plane keeps serving; the "
                        "allowlist is not applied to that server: configure "
                        "its authorization there. /healthz reports whether it "
                        "answers.",
                c->nats_url);
    }
    memset(&posture, 0, sizeof posture);
    posture.bus_auth = c->nats_url ? "external" : c->bus_auth;
    posture.acl = d->bus != NULL && strcmp(c->bus_auth, "enforce") == 0;
    posture.tls = c->tls_cert != NULL;
    posture.route_tls = d->hub != NULL;
    posture.kv_replicas = (unsigned)c->kv_replicas;
    d->api = api_create(d->meta, d->ctl, &posture);
    memset(&hc, 0, sizeof hc);
    hc.listen = c->http_listen;
    hc.tls_cert = c->tls_cert;
    hc.tls_key = c->tls_key;
    hc.max_body = (size_t)c->blob_max_bytes > KV_MAX_VALUE
                      ? (size_t)c->blob_max_bytes + 4096
                      : KV_MAX_VALUE + 4096;
    if (d->api == NULL || http_server_create(&d->loop, &hc, api_handle, d->api,
                                             &d->http, err, sizeof err) != 0) {
        ub_error("main", "HTTP: %s", err);
        return 2;
    }
    api_set_server(d->api, d->http);
    api_set_bus(d->api, d->bus);
    api_set_external_bus(d->api, d->ext);
    /* Raft starts last: a bad HTTP flag or a busy port must be reported
     * before any raft state is written. */
    if (meta_start(d->meta, err, sizeof err) != 0) {
        ub_error("main", "%s", err);
        return 2;
    }
    ub_info("main", "membershipd %s: node %s, HTTP on %s%s, data in %s",
            UB_VERSION, c->name, c->http_listen, c->tls_cert ? " (TLS)" : "",
            c->data_dir);
    if (c->kv_replicas < 3) {
        ub_warn("main", "R1: the meta group has one voter; this node is not "
                        "highly available");
    }

    uv_signal_init(&d->loop, &d->sigterm);
    d->sigterm.data = d;
    uv_signal_start(&d->sigterm, on_signal, SIGTERM);
    uv_signal_init(&d->loop, &d->sigint);
    d->sigint.data = d;
    uv_signal_start(&d->sigint, on_signal, SIGINT);
    uv_timer_init(&d->loop, &d->stop_timer);
    d->stop_timer.data = d;
    uv_timer_init(&d->loop, &d->route_sync);
    d->route_sync.data = d;
    if (d->hub != NULL && d->bus != NULL) {
        uv_timer_start(&d->route_sync, route_sync_tick, 2000, 2000);
    }
#ifdef UB_HAVE_SYSTEMD
    sd_notify(0, "READY=1");
#endif

    uv_run(&d->loop, UV_RUN_DEFAULT);

    api_destroy(d->api);
    if (uv_loop_close(&d->loop) != 0) {
        ub_error("main", "handles still open at exit (a bug)");
        return 1;
    }
    ub_info("main", "stopped cleanly");
    return 0;
}

int main(int argc, char **argv)
{
    static struct daemon d;
    char err[512];
    int rv;

    if (argc > 1 && strcmp(argv[1], "migrate-to-kv") == 0) {
        return migrate_main(argc - 1, argv + 1);
    }
    signal(SIGPIPE, SIG_IGN);
    rv = ub_config_load(&d.cfg, argc, argv, err, sizeof err);
    if (rv != 0) {
        if (rv < 0) {
            fprintf(stderr, "membershipd: %s\n", err);
        }
        ub_config_free(&d.cfg);
        return rv < 0 ? 2 : 0;
    }
    if (ub_log_set_level(d.cfg.log_level) != 0) {
        fprintf(stderr, "membershipd: --log-level must be error, warn, info "
                        "or debug\n");
        ub_config_free(&d.cfg);
        return 2;
    }
    ub_log_set_tag(d.cfg.name);
    rv = run(&d);
    for (unsigned i = 0; i < d.n_routes; i++) {
        free(d.routes[i]);
    }
    ub_config_free(&d.cfg);
    return rv;
}
