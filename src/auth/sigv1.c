/* UNIBUS-ED25519 request signatures; the format is described in sigv1.h. */
#include "auth/sigv1.h"

#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCHEME_LEN (sizeof SIGV1_SCHEME - 1)
#define TS_MAX INT64_C(999999999999) /* 12 digits */
#define HEX_LEN 64                   /* SHA-256 as hex */
/* Requests whose string to sign fits here are verified without malloc. */
#define STS_STACK 1024

const char *sigv1_code_name(int code)
{
    switch (code) {
    case SIGV1_OK:
        return "ok";
    case SIGV1_MISSING_AUTH:
        return "missing_auth";
    case SIGV1_BAD_AUTH_HEADER:
        return "bad_auth_header";
    case SIGV1_BAD_HANDLE:
        return "bad_handle";
    case SIGV1_BAD_TIMESTAMP:
        return "bad_timestamp";
    case SIGV1_BAD_NONCE:
        return "bad_nonce";
    case SIGV1_BAD_SIGNATURE_ENCODING:
        return "bad_signature_encoding";
    case SIGV1_STALE_TIMESTAMP:
        return "stale_timestamp";
    case SIGV1_BAD_SIGNATURE:
        return "bad_signature";
    case SIGV1_BAD_KEY:
        return "bad_key";
    case SIGV1_BAD_REQUEST:
        return "bad_request";
    case SIGV1_NO_SPACE:
        return "no_space";
    case SIGV1_INTERNAL:
        return "internal";
    default:
        return "unknown";
    }
}

static bool is_lower_digit(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
}

static bool is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

bool sigv1_handle_valid(const char *s, size_t len)
{
    if (s == NULL || len == 0 || len > SIGV1_HANDLE_MAX ||
        !is_lower_digit(s[0])) {
        return false;
    }
    for (size_t i = 1; i < len; i++) {
        if (!is_lower_digit(s[i]) && s[i] != '_' && s[i] != '-') {
            return false;
        }
    }
    return true;
}

bool sigv1_nonce_valid(const char *s, size_t len)
{
    if (s == NULL || len < SIGV1_NONCE_MIN || len > SIGV1_NONCE_MAX) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];

        if (!is_digit(ch) && !(ch >= 'a' && ch <= 'z') &&
            !(ch >= 'A' && ch <= 'Z') && ch != '_' && ch != '-') {
            return false;
        }
    }
    return true;
}

/* Parses a canonical ts: 1..12 digits, no leading zero unless just "0". */
static bool ts_parse(const char *s, size_t len, int64_t *out)
{
    int64_t v = 0;

    if (len == 0 || len > SIGV1_TS_DIGITS_MAX || (len > 1 && s[0] == '0')) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (!is_digit(s[i])) {
            return false;
        }
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

/* ------------------------------------------------------------------------ */
/* Header parsing. */

enum param { P_HANDLE, P_TS, P_NONCE, P_SIG, P_COUNT };

static const char *const param_names[P_COUNT] = { "handle", "ts", "nonce",
                                                  "sig" };

static bool is_ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

int sigv1_parse(const char *value, size_t len, struct sigv1_auth *out)
{
    struct {
        const char *p;
        size_t n;
        bool seen;
    } f[P_COUNT];
    struct sigv1_auth a;
    size_t i = 0;
    size_t end = len;

    if (value == NULL) {
        return SIGV1_MISSING_AUTH;
    }
    while (i < end && is_ows(value[i])) {
        i++;
    }
    while (end > i && is_ows(value[end - 1])) {
        end--;
    }
    if (i == end) {
        return SIGV1_MISSING_AUTH;
    }
    if (len > SIGV1_HEADER_MAX) {
        return SIGV1_BAD_AUTH_HEADER;
    }
    if (end - i < SCHEME_LEN + 1 ||
        memcmp(value + i, SIGV1_SCHEME, SCHEME_LEN) != 0 ||
        value[i + SCHEME_LEN] != ' ') {
        return SIGV1_BAD_AUTH_HEADER;
    }
    i += SCHEME_LEN;
    while (i < end && value[i] == ' ') {
        i++;
    }

    memset(f, 0, sizeof f);
    for (;;) {
        size_t start = i;
        int which = -1;

        while (i < end && value[i] >= 'a' && value[i] <= 'z') {
            i++;
        }
        for (int k = 0; k < P_COUNT; k++) {
            if (strlen(param_names[k]) == i - start &&
                memcmp(param_names[k], value + start, i - start) == 0) {
                which = k;
            }
        }
        if (which < 0 || f[which].seen) {
            return SIGV1_BAD_AUTH_HEADER; /* unknown, empty or repeated */
        }
        if (end - i < 2 || value[i] != '=' || value[i + 1] != '"') {
            return SIGV1_BAD_AUTH_HEADER;
        }
        i += 2;
        start = i;
        while (i < end && value[i] != '"') {
            i++;
        }
        if (i == end) {
            return SIGV1_BAD_AUTH_HEADER; /* unterminated quote */
        }
        f[which].p = value + start;
        f[which].n = i - start;
        f[which].seen = true;
        i++;

        while (i < end && is_ows(value[i])) {
            i++;
        }
        if (i == end) {
            break;
        }
        if (value[i] != ',') {
            return SIGV1_BAD_AUTH_HEADER;
        }
        i++;
        while (i < end && is_ows(value[i])) {
            i++;
        }
        if (i == end) {
            return SIGV1_BAD_AUTH_HEADER; /* trailing comma */
        }
    }
    for (int k = 0; k < P_COUNT; k++) {
        if (!f[k].seen) {
            return SIGV1_BAD_AUTH_HEADER;
        }
    }

    memset(&a, 0, sizeof a);
    if (!sigv1_handle_valid(f[P_HANDLE].p, f[P_HANDLE].n)) {
        return SIGV1_BAD_HANDLE;
    }
    memcpy(a.handle, f[P_HANDLE].p, f[P_HANDLE].n);
    if (!ts_parse(f[P_TS].p, f[P_TS].n, &a.ts)) {
        return SIGV1_BAD_TIMESTAMP;
    }
    if (!sigv1_nonce_valid(f[P_NONCE].p, f[P_NONCE].n)) {
        return SIGV1_BAD_NONCE;
    }
    memcpy(a.nonce, f[P_NONCE].p, f[P_NONCE].n);
    if (nkey_sig_decode(f[P_SIG].p, f[P_SIG].n, a.sig) != NKEY_OK) {
        return SIGV1_BAD_SIGNATURE_ENCODING;
    }
    *out = a;
    return SIGV1_OK;
}

int sigv1_format(const struct sigv1_auth *a, char *out, size_t cap)
{
    char sig[NKEY_SIG_B64URL_LEN + 1];
    size_t hlen = strnlen(a->handle, sizeof a->handle);
    size_t nlen = strnlen(a->nonce, sizeof a->nonce);
    int n;

    if (!sigv1_handle_valid(a->handle, hlen)) {
        return SIGV1_BAD_HANDLE;
    }
    if (a->ts < 0 || a->ts > TS_MAX) {
        return SIGV1_BAD_TIMESTAMP;
    }
    if (!sigv1_nonce_valid(a->nonce, nlen)) {
        return SIGV1_BAD_NONCE;
    }
    if (nkey_b64url_encode(a->sig, NKEY_SIG_LEN, sig, sizeof sig) !=
        NKEY_OK) {
        return SIGV1_INTERNAL;
    }
    n = snprintf(out, cap,
                 SIGV1_SCHEME " handle=\"%.*s\",ts=\"%" PRId64
                              "\",nonce=\"%.*s\",sig=\"%s\"",
                 (int)hlen, a->handle, a->ts, (int)nlen, a->nonce, sig);
    if (n < 0 || (size_t)n >= cap) {
        return SIGV1_NO_SPACE;
    }
    return SIGV1_OK;
}

/* ------------------------------------------------------------------------ */
/* String to sign. */

/* Validated pieces of a string to sign. */
struct sts {
    const char *method;
    size_t method_len;
    const char *path;
    size_t path_len;
    char ts[SIGV1_TS_DIGITS_MAX + 1];
    size_t ts_len;
    const char *nonce;
    size_t nonce_len;
    char hex[HEX_LEN + 1];
    size_t total; /* length without the NUL */
};

/* RFC 9110 tchar. */
static bool is_tchar(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           is_digit(ch) || (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch));
}

static int sts_prepare(struct sts *s, const char *method, const char *path,
                       const void *body, size_t body_len, int64_t ts,
                       const char *nonce)
{
    static const char hexdigits[] = "0123456789abcdef";
    static const uint8_t empty[1] = { 0 };
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    if (method == NULL || path == NULL) {
        return SIGV1_BAD_REQUEST;
    }
    s->method = method;
    s->method_len = strnlen(method, SIGV1_METHOD_MAX + 1);
    if (s->method_len == 0 || s->method_len > SIGV1_METHOD_MAX) {
        return SIGV1_BAD_REQUEST;
    }
    for (size_t i = 0; i < s->method_len; i++) {
        if (!is_tchar(method[i])) {
            return SIGV1_BAD_REQUEST;
        }
    }
    s->path = path;
    s->path_len = strlen(path);
    if (s->path_len == 0 || s->path_len > SIZE_MAX / 2) {
        return SIGV1_BAD_REQUEST;
    }
    for (size_t i = 0; i < s->path_len; i++) {
        unsigned char ch = (unsigned char)path[i];

        if (ch <= 0x20 || ch == 0x7f) {
            return SIGV1_BAD_REQUEST;
        }
    }
    if (ts < 0 || ts > TS_MAX) {
        return SIGV1_BAD_TIMESTAMP;
    }
    s->ts_len = (size_t)snprintf(s->ts, sizeof s->ts, "%" PRId64, ts);
    if (nonce == NULL) {
        return SIGV1_BAD_NONCE;
    }
    s->nonce = nonce;
    s->nonce_len = strnlen(nonce, SIGV1_NONCE_MAX + 1);
    if (!sigv1_nonce_valid(nonce, s->nonce_len)) {
        return SIGV1_BAD_NONCE;
    }
    if (EVP_Digest(body_len > 0 ? body : empty, body_len, md, &mdlen,
                   EVP_sha256(), NULL) != 1 ||
        mdlen * 2 != HEX_LEN) {
        ERR_clear_error();
        return SIGV1_INTERNAL;
    }
    for (unsigned i = 0; i < mdlen; i++) {
        s->hex[2 * i] = hexdigits[md[i] >> 4];
        s->hex[2 * i + 1] = hexdigits[md[i] & 15];
    }
    s->hex[HEX_LEN] = '\0';
    s->total = SCHEME_LEN + 1 + s->method_len + 1 + s->path_len + 1 +
               s->ts_len + 1 + s->nonce_len + 1 + HEX_LEN;
    return SIGV1_OK;
}

/* Writes the prepared string; out has room for s->total + 1 bytes. */
static void sts_emit(const struct sts *s, char *out)
{
    char *p = out;

#define PUT(ptr, n)              \
    do {                         \
        memcpy(p, (ptr), (n));   \
        p += (n);                \
    } while (0)
    PUT(SIGV1_SCHEME "\n", SCHEME_LEN + 1);
    PUT(s->method, s->method_len);
    PUT("\n", 1);
    PUT(s->path, s->path_len);
    PUT("\n", 1);
    PUT(s->ts, s->ts_len);
    PUT("\n", 1);
    PUT(s->nonce, s->nonce_len);
    PUT("\n", 1);
    PUT(s->hex, HEX_LEN);
#undef PUT
    *p = '\0';
}

int sigv1_string_to_sign(const char *method, const char *path,
                         const void *body, size_t body_len, int64_t ts,
                         const char *nonce, char *out, size_t cap,
                         size_t *out_len)
{
    struct sts s;
    int rc = sts_prepare(&s, method, path, body, body_len, ts, nonce);

    if (rc != SIGV1_OK) {
        return rc;
    }
    if (cap < s.total + 1) {
        return SIGV1_NO_SPACE;
    }
    sts_emit(&s, out);
    if (out_len != NULL) {
        *out_len = s.total;
    }
    return SIGV1_OK;
}

int sigv1_string_to_sign_alloc(const char *method, const char *path,
                               const void *body, size_t body_len,
                               int64_t ts, const char *nonce, char **out,
                               size_t *out_len)
{
    struct sts s;
    int rc = sts_prepare(&s, method, path, body, body_len, ts, nonce);

    *out = NULL;
    if (rc != SIGV1_OK) {
        return rc;
    }
    *out = malloc(s.total + 1);
    if (*out == NULL) {
        return SIGV1_INTERNAL;
    }
    sts_emit(&s, *out);
    if (out_len != NULL) {
        *out_len = s.total;
    }
    return SIGV1_OK;
}

/* Builds the string to sign in stack (STS_STACK bytes) when it fits, else
 * in a malloc'd buffer stored in *heap (free it). */
static int sts_build(const char *method, const char *path, const void *body,
                     size_t body_len, int64_t ts, const char *nonce,
                     char *stack, char **heap, const char **str,
                     size_t *len)
{
    struct sts s;
    int rc = sts_prepare(&s, method, path, body, body_len, ts, nonce);

    *heap = NULL;
    if (rc != SIGV1_OK) {
        return rc;
    }
    if (s.total + 1 <= STS_STACK) {
        sts_emit(&s, stack);
        *str = stack;
    } else {
        *heap = malloc(s.total + 1);
        if (*heap == NULL) {
            return SIGV1_INTERNAL;
        }
        sts_emit(&s, *heap);
        *str = *heap;
    }
    *len = s.total;
    return SIGV1_OK;
}

/* ------------------------------------------------------------------------ */
/* Verify and sign. */

static bool ts_within(int64_t ts, int64_t now, unsigned skew)
{
    /* The unsigned difference is exact for any two int64 values. */
    uint64_t diff = ts >= now ? (uint64_t)ts - (uint64_t)now
                              : (uint64_t)now - (uint64_t)ts;

    return diff <= skew;
}

int sigv1_verify(const struct sigv1_auth *parsed, const char *method,
                 const char *path, const void *body, size_t body_len,
                 const char *upub, int64_t now_s, unsigned skew_s)
{
    uint8_t pub[NKEY_KEY_LEN];
    char stack[STS_STACK];
    char *heap = NULL;
    const char *str = NULL;
    size_t len = 0;
    char nonce[SIGV1_NONCE_MAX + 1];
    int rc;

    if (parsed == NULL) {
        return SIGV1_MISSING_AUTH;
    }
    if (!ts_within(parsed->ts, now_s, skew_s)) {
        return SIGV1_STALE_TIMESTAMP;
    }
    if (nkey_user_pub_decode(upub, pub) != NKEY_OK) {
        return SIGV1_BAD_KEY;
    }
    /* parsed->nonce may lack its NUL if the caller filled it by hand. */
    memcpy(nonce, parsed->nonce, sizeof nonce);
    nonce[SIGV1_NONCE_MAX] = '\0';
    rc = sts_build(method, path, body, body_len, parsed->ts, nonce, stack,
                   &heap, &str, &len);
    if (rc != SIGV1_OK) {
        return rc;
    }
    switch (nkey_verify_raw(pub, str, len, parsed->sig)) {
    case NKEY_OK:
        rc = SIGV1_OK;
        break;
    case NKEY_BAD_SIGNATURE:
        rc = SIGV1_BAD_SIGNATURE;
        break;
    case NKEY_WEAK_KEY:
        rc = SIGV1_BAD_KEY;
        break;
    default:
        rc = SIGV1_INTERNAL;
        break;
    }
    free(heap);
    return rc;
}

int sigv1_nonce_generate(char out[SIGV1_NONCE_GEN_LEN + 1])
{
    uint8_t raw[16];

    if (RAND_bytes(raw, sizeof raw) != 1) {
        ERR_clear_error();
        return SIGV1_INTERNAL;
    }
    if (nkey_b64url_encode(raw, sizeof raw, out, SIGV1_NONCE_GEN_LEN + 1) !=
        NKEY_OK) {
        return SIGV1_INTERNAL;
    }
    return SIGV1_OK;
}

int sigv1_sign(const char *seed, const char *handle, const char *method,
               const char *path, const void *body, size_t body_len,
               int64_t ts, const char *nonce, char *header_out, size_t cap)
{
    uint8_t priv[NKEY_KEY_LEN];
    char fresh[SIGV1_NONCE_GEN_LEN + 1];
    char stack[STS_STACK];
    char *heap = NULL;
    const char *str = NULL;
    size_t len = 0;
    size_t hlen;
    struct sigv1_auth a;
    int rc;

    if (nkey_user_seed_decode(seed, priv) != NKEY_OK) {
        return SIGV1_BAD_KEY;
    }
    hlen = handle == NULL ? 0 : strnlen(handle, SIGV1_HANDLE_MAX + 1);
    if (!sigv1_handle_valid(handle, hlen)) {
        rc = SIGV1_BAD_HANDLE;
        goto out;
    }
    if (nonce == NULL) {
        rc = sigv1_nonce_generate(fresh);
        if (rc != SIGV1_OK) {
            goto out;
        }
        nonce = fresh;
    }
    rc = sts_build(method, path, body, body_len, ts, nonce, stack, &heap,
                   &str, &len);
    if (rc != SIGV1_OK) {
        goto out;
    }
    memset(&a, 0, sizeof a);
    memcpy(a.handle, handle, hlen);
    memcpy(a.nonce, nonce, strlen(nonce)); /* validated: <= 64 chars */
    a.ts = ts;
    if (nkey_sign_raw(priv, str, len, a.sig) != NKEY_OK) {
        rc = SIGV1_INTERNAL;
        goto out;
    }
    rc = sigv1_format(&a, header_out, cap);
out:
    free(heap);
    OPENSSL_cleanse(priv, sizeof priv);
    return rc;
}
