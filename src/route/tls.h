/* OpenSSL pieces of the route layer: the mutual-TLS context built from the
 * cluster CA, and the certificate identity checks. Loop-free and blocking
 * only on file reads at context creation. */
#ifndef UB_ROUTE_TLS_H
#define UB_ROUTE_TLS_H

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Builds the TLS context shared by the listener and the dialers: TLS 1.3
 * only, our certificate chain and key, peer verification required in both
 * directions against ca_file ONLY (no system store). Also refuses a
 * certificate that does not name node `name` (CN or DNS SAN), that does not
 * verify against ca_file (for instance one from the client CA), or that may
 * not serve as both TLS client and server. Returns NULL and writes a message
 * naming the file to err on failure. The caller owns the context. */
SSL_CTX *rt_tls_ctx_create(const char *cert_file, const char *key_file,
                           const char *ca_file, const char *name, char *err,
                           size_t errlen);

/* True when the certificate names `name`: its subject CN or one of its DNS
 * subjectAltNames equals it (ASCII case-insensitive). */
bool rt_tls_cert_names(X509 *cert, const char *name);

/* True when some name in the certificate (CN or DNS SAN) has node id `id`. */
bool rt_tls_cert_has_id(X509 *cert, uint64_t id);

/* Writes the first name of the certificate (CN, else first DNS SAN) to buf
 * for log messages; "?" when it has none. */
void rt_tls_cert_label(X509 *cert, char *buf, size_t len);

/* Fills out with the session's route exporter value (RT_EXPORTER_LEN bytes).
 * Returns 0, or -1 when the handshake is not complete. */
int rt_tls_exporter(SSL *ssl, uint8_t *out);

/* Describes why the last OpenSSL call on ssl failed: the peer verification
 * result when that failed, else the first error of the thread's OpenSSL
 * error queue, which is then cleared. Never contains key material. */
void rt_tls_error(SSL *ssl, char *buf, size_t len);

#endif
