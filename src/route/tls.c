/* Route TLS context and certificate identity checks (see tls.h). */
#include "route/tls.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "lib/log.h"
#include "route/hello.h"

/* Calls fn for the subject CN and every DNS SAN of cert, stopping when fn
 * returns true. Names with embedded NUL bytes are skipped. */
typedef bool (*name_fn)(const char *name, size_t len, void *arg);

static bool each_name(X509 *cert, name_fn fn, void *arg)
{
    X509_NAME *subject = X509_get_subject_name(cert);
    GENERAL_NAMES *sans;
    bool found = false;
    int idx = -1;

    while (subject != NULL && !found) {
        X509_NAME_ENTRY *e;
        unsigned char *utf8 = NULL;
        int n;

        idx = X509_NAME_get_index_by_NID(subject, NID_commonName, idx);
        if (idx < 0) {
            break;
        }
        e = X509_NAME_get_entry(subject, idx);
        n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(e));
        if (n > 0 && memchr(utf8, '\0', (size_t)n) == NULL) {
            found = fn((const char *)utf8, (size_t)n, arg);
        }
        OPENSSL_free(utf8);
    }

    sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; sans != NULL && !found && i < sk_GENERAL_NAME_num(sans);
         i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        const unsigned char *data;
        int n;

        if (g->type != GEN_DNS) {
            continue;
        }
        data = ASN1_STRING_get0_data(g->d.dNSName);
        n = ASN1_STRING_length(g->d.dNSName);
        if (n > 0 && memchr(data, '\0', (size_t)n) == NULL) {
            found = fn((const char *)data, (size_t)n, arg);
        }
    }
    GENERAL_NAMES_free(sans);
    return found;
}

static bool name_equals(const char *name, size_t len, void *arg)
{
    const char *want = arg;
    return strlen(want) == len && strncasecmp(name, want, len) == 0;
}

bool rt_tls_cert_names(X509 *cert, const char *name)
{
    return cert != NULL && name != NULL && name[0] != '\0' &&
           each_name(cert, name_equals, (void *)name);
}

static bool name_has_id(const char *name, size_t len, void *arg)
{
    const uint64_t *id = arg;
    char buf[RT_NAME_MAX + 1];

    if (len > RT_NAME_MAX) {
        return false;
    }
    memcpy(buf, name, len);
    buf[len] = '\0';
    return rt_name_valid(buf) && rt_node_id(buf) == *id;
}

bool rt_tls_cert_has_id(X509 *cert, uint64_t id)
{
    return cert != NULL && each_name(cert, name_has_id, &id);
}

struct label_arg {
    char *buf;
    size_t len;
};

static bool name_copy(const char *name, size_t len, void *arg)
{
    struct label_arg *l = arg;
    size_t n = len < l->len - 1 ? len : l->len - 1;

    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)name[i];
        l->buf[i] = (ch > 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    l->buf[n] = '\0';
    return true;
}

void rt_tls_cert_label(X509 *cert, char *buf, size_t len)
{
    struct label_arg l = { buf, len };

    if (len == 0) {
        return;
    }
    snprintf(buf, len, "?");
    if (cert != NULL) {
        each_name(cert, name_copy, &l);
    }
}

int rt_tls_exporter(SSL *ssl, uint8_t *out)
{
    static const char label[] = RT_EXPORTER_LABEL;

    if (!SSL_is_init_finished(ssl)) {
        return -1;
    }
    return SSL_export_keying_material(ssl, out, RT_EXPORTER_LEN, label,
                                      sizeof label - 1, NULL, 0, 0) == 1
               ? 0
               : -1;
}

void rt_tls_error(SSL *ssl, char *buf, size_t len)
{
    unsigned long e;
    long vr = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;

    if (vr != X509_V_OK) {
        snprintf(buf, len, "peer certificate rejected: %s",
                 X509_verify_cert_error_string(vr));
        ERR_clear_error();
        return;
    }
    e = ERR_peek_error();
    if (e != 0) {
        const char *r = ERR_reason_error_string(e);
        if (r != NULL) {
            snprintf(buf, len, "%s", r);
        } else {
            ERR_error_string_n(e, buf, len);
        }
    } else {
        snprintf(buf, len, "TLS protocol error");
    }
    ERR_clear_error();
}

static void openssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e != 0 ? ERR_reason_error_string(e) : NULL;

    snprintf(buf, len, "%s", r != NULL ? r : "unknown OpenSSL error");
    ERR_clear_error();
}

/* Verifies our own chain against the cluster CA for one TLS purpose. */
static int verify_own(SSL_CTX *ctx, X509 *leaf, int purpose, char *why,
                      size_t whylen)
{
    STACK_OF(X509) *chain = NULL;
    X509_STORE_CTX *sctx = X509_STORE_CTX_new();
    int ok = 0;

    if (sctx == NULL) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    SSL_CTX_get0_chain_certs(ctx, &chain);
    if (X509_STORE_CTX_init(sctx, SSL_CTX_get_cert_store(ctx), leaf, chain) ==
            1 &&
        X509_STORE_CTX_set_purpose(sctx, purpose) == 1) {
        ok = X509_verify_cert(sctx) == 1;
        if (!ok) {
            snprintf(why, whylen, "%s",
                     X509_verify_cert_error_string(
                         X509_STORE_CTX_get_error(sctx)));
        }
    } else {
        openssl_reason(why, whylen);
    }
    X509_STORE_CTX_free(sctx);
    ERR_clear_error();
    return ok ? 0 : -1;
}

SSL_CTX *rt_tls_ctx_create(const char *cert_file, const char *key_file,
                           const char *ca_file, const char *name, char *err,
                           size_t errlen)
{
    char why[256];
    STACK_OF(X509_NAME) *ca_names;
    SSL_CTX *ctx;
    struct stat st;
    X509 *leaf;

    if (cert_file == NULL || key_file == NULL || ca_file == NULL) {
        snprintf(err, errlen,
                 "route TLS needs a certificate, a key and the cluster CA "
                 "(--route-tls-cert, --route-tls-key, --route-tls-ca)");
        return NULL;
    }
    ERR_clear_error();
    ctx = SSL_CTX_new(TLS_method());
    if (ctx == NULL) {
        openssl_reason(why, sizeof why);
        snprintf(err, errlen, "cannot create a TLS context: %s", why);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);

    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        openssl_reason(why, sizeof why);
        snprintf(err, errlen, "cannot load route certificate %s: %s",
                 cert_file, why);
        goto err_after_ctx;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        openssl_reason(why, sizeof why);
        snprintf(err, errlen,
                 "cannot load route key %s, or it does not match certificate "
                 "%s: %s",
                 key_file, cert_file, why);
        goto err_after_ctx;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        openssl_reason(why, sizeof why);
        snprintf(err, errlen, "route key %s does not match certificate %s",
                 key_file, cert_file);
        goto err_after_ctx;
    }
    if (stat(key_file, &st) == 0 && (st.st_mode & 077) != 0) {
        ub_warn("route", "route key %s is readable by group or others "
                "(mode %03o); chmod 600 it", key_file,
                (unsigned)(st.st_mode & 0777));
    }
    /* Only the cluster CA: SSL_CTX_set_default_verify_paths is never called,
     * so the system store plays no part. */
    if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
        openssl_reason(why, sizeof why);
        snprintf(err, errlen, "cannot load cluster CA %s: %s", ca_file, why);
        goto err_after_ctx;
    }
    ca_names = SSL_load_client_CA_file(ca_file);
    if (ca_names != NULL) {
        SSL_CTX_set_client_CA_list(ctx, ca_names);
    }
    ERR_clear_error();
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                       NULL);
    SSL_CTX_set_verify_depth(ctx, 4);

    leaf = SSL_CTX_get0_certificate(ctx);
    if (!rt_tls_cert_names(leaf, name)) {
        char label[80];
        rt_tls_cert_label(leaf, label, sizeof label);
        snprintf(err, errlen,
                 "route certificate %s names '%s', not this node '%s' (its "
                 "CN or a DNS SAN must equal --name)",
                 cert_file, label, name);
        goto err_after_ctx;
    }
    if (verify_own(ctx, leaf, X509_PURPOSE_SSL_SERVER, why, sizeof why) != 0 ||
        verify_own(ctx, leaf, X509_PURPOSE_SSL_CLIENT, why, sizeof why) != 0) {
        snprintf(err, errlen,
                 "route certificate %s does not verify against the cluster "
                 "CA %s as a TLS client and server certificate: %s (route "
                 "certificates must come from the cluster CA, never the "
                 "client CA)",
                 cert_file, ca_file, why);
        goto err_after_ctx;
    }
    return ctx;

err_after_ctx:
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return NULL;
}
