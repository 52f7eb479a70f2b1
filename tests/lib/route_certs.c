#include "route_certs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *route_certs_path(const struct route_certs *rc, const char *rel,
                             char *buf, size_t len)
{
    if (snprintf(buf, len, "%s/%s", rc->dir, rel) >= (int)len) {
        fprintf(stderr, "route_certs: path too long: %s/%s\n", rc->dir, rel);
    }
    return buf;
}

static int run(const char *cmd)
{
    int rv = system(cmd);
    if (rv != 0) {
        fprintf(stderr, "route_certs: command failed (%d): %s\n", rv, cmd);
        return -1;
    }
    return 0;
}

/* Shell steps for the bad certificates; $D is the output directory. */
static const char bad_certs_script[] =
    "set -e; cd \"$D\"; mkdir -p bad; umask 077;"
    "printf '[ req ]\\ndistinguished_name = dn\\nprompt = no\\n[ dn ]\\n"
    "[ ca ]\\nbasicConstraints = critical, CA:TRUE\\n"
    "keyUsage = critical, keyCertSign, cRLSign\\n' > bad/req.cnf;"
    "printf 'basicConstraints = CA:FALSE\\n"
    "extendedKeyUsage = serverAuth, clientAuth\\n"
    "subjectAltName = DNS:a, DNS:localhost, IP:127.0.0.1\\n' > bad/leaf.ext;"
    /* cert for "a" from the client CA */
    "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 "
    "  -out bad/clientca-a.key 2>/dev/null;"
    "openssl req -new -key bad/clientca-a.key -subj /CN=a -config bad/req.cnf"
    "  -out bad/clientca-a.csr;"
    "openssl x509 -req -days 30 -in bad/clientca-a.csr -CA client-ca.crt"
    "  -CAkey client-ca.key -set_serial 101 -extfile bad/leaf.ext"
    "  -out bad/clientca-a.crt 2>/dev/null;"
    /* unknown CA and a cert for "a" from it */
    "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 "
    "  -out bad/rogue-ca.key 2>/dev/null;"
    "openssl req -new -x509 -days 30 -key bad/rogue-ca.key -subj /CN=rogue-ca"
    "  -config bad/req.cnf -extensions ca -out bad/rogue-ca.crt;"
    "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 "
    "  -out bad/rogue-a.key 2>/dev/null;"
    "openssl req -new -key bad/rogue-a.key -subj /CN=a -config bad/req.cnf"
    "  -out bad/rogue-a.csr;"
    "openssl x509 -req -days 30 -in bad/rogue-a.csr -CA bad/rogue-ca.crt"
    "  -CAkey bad/rogue-ca.key -set_serial 102 -extfile bad/leaf.ext"
    "  -out bad/rogue-a.crt 2>/dev/null;";

int route_certs_make(struct route_certs *rc, const char *source_dir)
{
    char cmd[4096];
    char path[ROUTE_PATH_MAX];
    FILE *f;
    size_t n;

    memset(rc, 0, sizeof *rc);
    snprintf(rc->dir, sizeof rc->dir, "/tmp/ub-route-test.XXXXXX");
    if (mkdtemp(rc->dir) == NULL) {
        perror("route_certs: mkdtemp");
        return -1;
    }
    snprintf(cmd, sizeof cmd,
             "bash '%s/deploy/cluster/generate-cluster-certs.sh' --out '%s' "
             "a b c >/dev/null",
             source_dir, rc->dir);
    if (run(cmd) != 0) {
        return -1;
    }
    snprintf(cmd, sizeof cmd, "D='%s'; %s", rc->dir, bad_certs_script);
    if (run(cmd) != 0) {
        return -1;
    }
    f = fopen(route_certs_path(rc, "cluster.pass", path, sizeof path), "r");
    if (f == NULL) {
        perror("route_certs: cluster.pass");
        return -1;
    }
    n = fread(rc->secret, 1, sizeof rc->secret, f);
    fclose(f);
    while (n > 0 && (rc->secret[n - 1] == '\n' || rc->secret[n - 1] == '\r' ||
                     rc->secret[n - 1] == ' ')) {
        n--;
    }
    rc->secret_len = n;
    if (n < 16) {
        fprintf(stderr, "route_certs: cluster.pass too short\n");
        return -1;
    }
    return 0;
}

void route_certs_remove(struct route_certs *rc)
{
    char cmd[ROUTE_PATH_MAX + 32];

    if (rc->dir[0] == '\0' || strncmp(rc->dir, "/tmp/", 5) != 0) {
        return;
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", rc->dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "route_certs: cannot remove %s\n", rc->dir);
    }
}
