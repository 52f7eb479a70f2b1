#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum opt_type { OPT_STR, OPT_INT };

struct opt {
    const char *flag; /* without the leading dashes */
    enum opt_type type;
    size_t offset;
    const char *def;
    const char *help;
};

#define S(field) offsetof(struct ub_config, field)

static const struct opt opts[] = {
    { "name", OPT_STR, S(name), NULL, "node name, unique in the cluster (default: host name)" },
    { "data-dir", OPT_STR, S(data_dir), "local_files", "directory for all writable state" },
    { "http-listen", OPT_STR, S(http_listen), "0.0.0.0:8470", "control plane HOST:PORT" },
    { "bus-listen", OPT_STR, S(bus_listen), "0.0.0.0:4250", "NATS data plane HOST:PORT" },
    { "route-listen", OPT_STR, S(route_listen), "0.0.0.0:6250", "cluster routes HOST:PORT (only with --routes)" },
    { "route-advertise", OPT_STR, S(route_advertise), NULL, "HOST:PORT the other nodes reach our routes at (default: --route-listen, or host name and its port when that is a wildcard)" },
    { "routes", OPT_STR, S(routes), NULL, "the other nodes' route URLs, bare: nats://host:6250,..." },
    { "cluster-pass-file", OPT_STR, S(cluster_pass_file), NULL, "file holding the cluster secret (or set UNIBUS_CLUSTER_PASS)" },
    { "route-tls-cert", OPT_STR, S(route_tls_cert), NULL, "route certificate (signed by the cluster CA, naming this node)" },
    { "route-tls-key", OPT_STR, S(route_tls_key), NULL, "route private key" },
    { "route-tls-ca", OPT_STR, S(route_tls_ca), NULL, "the dedicated cluster CA" },
    { "tls-cert", OPT_STR, S(tls_cert), NULL, "data-plane and HTTP TLS certificate" },
    { "tls-key", OPT_STR, S(tls_key), NULL, "data-plane and HTTP TLS key" },
    { "tls-ca", OPT_STR, S(tls_ca), NULL, "CA that bus client certificates must chain to (needs --tls-cert)" },
    { "bus-auth", OPT_STR, S(bus_auth), "enforce", "bus authentication: off, warn or enforce" },
    { "kv-replicas", OPT_INT, S(kv_replicas), "0", "voters of the meta group: 1 or 3 (default 1 alone, 3 with routes)" },
    { "nats-url", OPT_STR, S(nats_url), NULL, "use an external NATS server instead of the embedded bus" },
    { "bootstrap-admin", OPT_STR, S(bootstrap_admin), NULL, "HANDLE=UPUBKEY: first admin, honoured only on an empty cluster" },
    { "log-level", OPT_STR, S(log_level), "info", "error, warn, info or debug" },
    { "auth-skew", OPT_INT, S(auth_skew), "60", "seconds a signed request's timestamp may differ from our clock" },
    { "blob-max-bytes", OPT_INT, S(blob_max_bytes), "16777216", "largest blob accepted (bytes)" },
    { "election-timeout-ms", OPT_INT, S(election_timeout_ms), "800", "raft election timeout (randomised 1x-2x)" },
    { "heartbeat-ms", OPT_INT, S(heartbeat_ms), "100", "raft heartbeat interval" },
    { "snapshot-threshold", OPT_INT, S(snapshot_threshold), "8192", "raft entries between snapshots" },
    { "snapshot-trailing", OPT_INT, S(snapshot_trailing), "1024", "raft entries kept after a snapshot" },
};

#define N_OPTS (sizeof opts / sizeof opts[0])

static int set_opt(struct ub_config *c, const struct opt *o, const char *v,
                   const char *origin, char *err, size_t errlen)
{
    char *p = (char *)c + o->offset;
    if (o->type == OPT_STR) {
        char **dst = (char **)p;
        free(*dst);
        *dst = strdup(v);
        if (*dst == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        return 0;
    }
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || n < 0 || n > 100000000) {
        snprintf(err, errlen, "%s --%s: '%s' is not a non-negative integer",
                 origin, o->flag, v);
        return -1;
    }
    *(int *)p = (int)n;
    return 0;
}

static void env_name(const char *flag, char *out, size_t outlen)
{
    size_t n = (size_t)snprintf(out, outlen, "UNIBUS_");
    for (; *flag && n + 1 < outlen; flag++) {
        out[n++] = *flag == '-' ? '_' : (char)toupper((unsigned char)*flag);
    }
    out[n] = '\0';
}

void ub_config_usage(const char *prog)
{
    printf("usage: %s [FLAGS]\n"
           "       %s migrate-to-kv --db FILE --nats-url URL [--ca FILE] "
           "(see migrate-to-kv --help)\n"
           "       %s --version | --help\n\n"
           "membershipd runs one unibus node: the HTTP control plane, the KV\n"
           "state machine replicated through raft, the NATS-protocol bus and\n"
           "the cluster routes.\n"
           "Every flag may also come from UNIBUS_<FLAG> in the environment\n"
           "(e.g. UNIBUS_DATA_DIR); flags win.\n\nFlags:\n",
           prog, prog, prog);
    for (size_t i = 0; i < N_OPTS; i++) {
        char env[64];
        env_name(opts[i].flag, env, sizeof env);
        printf("  --%-22s %s\n", opts[i].flag, opts[i].help);
        if (opts[i].def && strcmp(opts[i].def, "0") != 0) {
            printf("  %-24s default: %s\n", "", opts[i].def);
        }
    }
    printf("\nSecrets never go in argv: the cluster secret comes from\n"
           "--cluster-pass-file or UNIBUS_CLUSTER_PASS.\n");
}

static int load_pass(struct ub_config *c, char *err, size_t errlen)
{
    const char *env = getenv("UNIBUS_CLUSTER_PASS");
    if (c->cluster_pass_file) {
        FILE *f = fopen(c->cluster_pass_file, "r");
        char buf[1100];
        size_t n;
        if (f == NULL) {
            snprintf(err, errlen, "cannot read --cluster-pass-file %s: %s",
                     c->cluster_pass_file, strerror(errno));
            return -1;
        }
        n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) {
            n--;
        }
        if (n > 1024) {
            snprintf(err, errlen, "the cluster secret in %s is longer than "
                                  "1024 bytes", c->cluster_pass_file);
            return -1;
        }
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' ||
                         buf[n - 1] == ' ')) {
            buf[--n] = '\0';
        }
        if (n < 16) {
            snprintf(err, errlen,
                     "the cluster secret in %s is shorter than 16 characters; "
                     "generate one with deploy/cluster/generate-cluster-certs.sh",
                     c->cluster_pass_file);
            return -1;
        }
        c->cluster_pass = strdup(buf);
        memset(buf, 0, sizeof buf);
    } else if (env && *env) {
        if (strlen(env) < 16) {
            snprintf(err, errlen, "UNIBUS_CLUSTER_PASS is shorter than 16 "
                                  "characters; use a longer secret");
            return -1;
        }
        c->cluster_pass = strdup(env);
    }
    return 0;
}

int ub_config_load(struct ub_config *c, int argc, char **argv, char *err,
                   size_t errlen)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < N_OPTS; i++) {
        if (opts[i].def && set_opt(c, &opts[i], opts[i].def, "default", err,
                                   errlen) != 0) {
            return -1;
        }
    }
    for (size_t i = 0; i < N_OPTS; i++) {
        char env[64];
        const char *v;
        env_name(opts[i].flag, env, sizeof env);
        v = getenv(env);
        if (v && *v && set_opt(c, &opts[i], v, env, err, errlen) != 0) {
            return -1;
        }
    }
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        const char *val = NULL;
        char name[64];
        const struct opt *o = NULL;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            ub_config_usage(argv[0]);
            return 1;
        }
        if (strcmp(arg, "--version") == 0) {
            printf("membershipd %s\n", UB_VERSION);
            return 1;
        }
        if (strncmp(arg, "--", 2) != 0) {
            snprintf(err, errlen, "unexpected argument '%s' (see --help)", arg);
            return -1;
        }
        const char *eq = strchr(arg, '=');
        size_t nl = eq ? (size_t)(eq - arg - 2) : strlen(arg + 2);
        if (nl >= sizeof name) {
            nl = sizeof name - 1;
        }
        memcpy(name, arg + 2, nl);
        name[nl] = '\0';
        if (strcmp(name, "cluster-pass") == 0) {
            /* Do not echo the value: it is a secret. */
            snprintf(err, errlen,
                     "--cluster-pass would put the cluster secret in argv, "
                     "where every local user can read it; write it to a file "
                     "(mode 0600) and pass --cluster-pass-file FILE, or set "
                     "UNIBUS_CLUSTER_PASS");
            return -1;
        }
        for (size_t i = 0; i < N_OPTS; i++) {
            if (strcmp(opts[i].flag, name) == 0) {
                o = &opts[i];
            }
        }
        if (o == NULL) {
            snprintf(err, errlen, "unknown flag --%s (see --help)", name);
            return -1;
        }
        if (eq) {
            val = eq + 1;
        } else if (a + 1 < argc) {
            val = argv[++a];
        } else {
            snprintf(err, errlen, "--%s needs a value", name);
            return -1;
        }
        if (set_opt(c, o, val, "flag", err, errlen) != 0) {
            return -1;
        }
    }
    if (c->routes && strchr(c->routes, '@')) {
        snprintf(err, errlen,
                 "--routes must list bare URLs (nats://host:6250): credentials "
                 "in a URL end up in argv and logs; put the secret in "
                 "--cluster-pass-file or UNIBUS_CLUSTER_PASS instead");
        return -1;
    }
    if (c->name == NULL) {
        char host[256];
        if (gethostname(host, sizeof host) != 0) {
            snprintf(host, sizeof host, "unibus");
        }
        host[sizeof host - 1] = '\0';
        c->name = strdup(host);
    }
    if (c->kv_replicas != 0 && c->kv_replicas != 1 && c->kv_replicas != 3) {
        snprintf(err, errlen, "--kv-replicas must be 1 or 3, not %d",
                 c->kv_replicas);
        return -1;
    }
    if (strcmp(c->bus_auth, "off") != 0 && strcmp(c->bus_auth, "warn") != 0 &&
        strcmp(c->bus_auth, "enforce") != 0) {
        snprintf(err, errlen, "--bus-auth must be off, warn or enforce");
        return -1;
    }
    if (c->heartbeat_ms < 10 || c->election_timeout_ms < 5 * c->heartbeat_ms) {
        snprintf(err, errlen, "--election-timeout-ms must be at least five "
                              "--heartbeat-ms, and the heartbeat at least 10 ms");
        return -1;
    }
    if (c->auth_skew < 1 || c->auth_skew > 3600) {
        snprintf(err, errlen, "--auth-skew must be 1 to 3600 seconds");
        return -1;
    }
    if (c->blob_max_bytes < 1024 || c->blob_max_bytes > 64 * 1024 * 1024) {
        snprintf(err, errlen, "--blob-max-bytes must be 1024 to 67108864");
        return -1;
    }
    if ((c->tls_cert == NULL) != (c->tls_key == NULL)) {
        snprintf(err, errlen, "--tls-cert and --tls-key go together: give "
                              "both or neither");
        return -1;
    }
    if (c->tls_ca != NULL && c->tls_cert == NULL) {
        snprintf(err, errlen, "--tls-ca verifies client certificates of the "
                              "bus's TLS: give --tls-cert and --tls-key too");
        return -1;
    }
    if (c->snapshot_threshold < 16 || c->snapshot_trailing < 16) {
        snprintf(err, errlen, "--snapshot-threshold and --snapshot-trailing "
                              "must be at least 16");
        return -1;
    }
    return load_pass(c, err, errlen);
}

void ub_config_free(struct ub_config *c)
{
    for (size_t i = 0; i < N_OPTS; i++) {
        if (opts[i].type == OPT_STR) {
            char **p = (char **)((char *)c + opts[i].offset);
            free(*p);
            *p = NULL;
        }
    }
    if (c->cluster_pass) {
        memset(c->cluster_pass, 0, strlen(c->cluster_pass));
        free(c->cluster_pass);
        c->cluster_pass = NULL;
    }
}

int ub_split_hostport(const char *s, char *host, size_t hostlen, int *port)
{
    const char *colon;
    const char *h = s;
    size_t hl;
    char *end;
    long p;

    if (strncmp(s, "nats://", 7) == 0) {
        h = s + 7;
    } else if (strncmp(s, "tls://", 6) == 0) {
        h = s + 6;
    }
    if (*h == '[') {
        const char *rb = strchr(h, ']');
        if (rb == NULL || rb[1] != ':') {
            return -1;
        }
        hl = (size_t)(rb - h - 1);
        h++;
        colon = rb + 1;
    } else {
        colon = strrchr(h, ':');
        if (colon == NULL) {
            return -1;
        }
        hl = (size_t)(colon - h);
    }
    if (hl == 0 || hl >= hostlen) {
        return -1;
    }
    errno = 0;
    p = strtol(colon + 1, &end, 10);
    if (errno || *end != '\0' || p <= 0 || p > 65535) {
        return -1;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (int)p;
    return 0;
}
