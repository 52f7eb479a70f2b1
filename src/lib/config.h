/* membershipd's settings: one table drives the command line, the UNIBUS_*
 * environment variables and --help (DESIGN.md §1 is the contract). */
#ifndef UB_CONFIG_H
#define UB_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

struct ub_config {
    char *name;            /* node name, unique in the cluster */
    char *data_dir;        /* all writable state */
    char *http_listen;     /* HOST:PORT of the control plane */
    char *bus_listen;      /* HOST:PORT of the NATS data plane */
    char *route_listen;    /* HOST:PORT of the cluster routes */
    char *route_advertise; /* HOST:PORT the other nodes dial us at */
    char *routes;          /* comma-separated bare route URLs */
    char *cluster_pass_file;
    char *route_tls_cert, *route_tls_key, *route_tls_ca;
    char *tls_cert, *tls_key, *tls_ca;
    char *bus_auth;      /* off | warn | enforce */
    int kv_replicas;     /* 0 = default (1 alone, 3 with routes) */
    char *nats_url;
    char *bootstrap_admin;
    char *log_level;
    int election_timeout_ms;
    int heartbeat_ms;
    int snapshot_threshold;
    int snapshot_trailing;
    int auth_skew;     /* seconds */
    int blob_max_bytes;
    /* Derived. */
    char *cluster_pass; /* loaded from the file or the environment; never logged */
};

/* Fills defaults, then the environment, then argv. Returns 0 to run, 1 when
 * --help/--version was served (exit 0), -1 on bad input with a message in err
 * that tells the operator what to do. */
int ub_config_load(struct ub_config *c, int argc, char **argv, char *err,
                   size_t errlen);

void ub_config_free(struct ub_config *c);

/* Prints the flag reference; the same text backs docs/configuration.md. */
void ub_config_usage(const char *prog);

/* Splits "host:port" (IPv4, name, or [IPv6]) into parts; 0 or -1. */
int ub_split_hostport(const char *s, char *host, size_t hostlen, int *port);

#endif
