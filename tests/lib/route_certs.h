/* Test fixture: a temporary directory of route certificates made by
 * deploy/cluster/generate-cluster-certs.sh for nodes a, b and c, plus bad
 * certificates made with the openssl command:
 *   bad/clientca-a.{crt,key}  CN=a, signed by the client CA (not the cluster CA)
 *   bad/rogue-ca.{crt,key}    an unknown self-signed CA
 *   bad/rogue-a.{crt,key}     CN=a, signed by that unknown CA
 * (b/route.crt presented by a process claiming "a" needs no extra file). */
#ifndef UB_TESTS_ROUTE_CERTS_H
#define UB_TESTS_ROUTE_CERTS_H

#include <stddef.h>
#include <stdint.h>

#define ROUTE_PATH_MAX 512

struct route_certs {
    char dir[ROUTE_PATH_MAX];  /* the temporary directory */
    uint8_t secret[128];       /* contents of cluster.pass, trimmed */
    size_t secret_len;
};

/* Creates the directory and every file; source_dir is the project root (for
 * the script). Returns 0, or -1 with a message on stderr. */
int route_certs_make(struct route_certs *rc, const char *source_dir);

/* Removes the directory. */
void route_certs_remove(struct route_certs *rc);

/* Writes rc->dir "/" rel to buf and returns buf. */
const char *route_certs_path(const struct route_certs *rc, const char *rel,
                             char *buf, size_t len);

#endif
