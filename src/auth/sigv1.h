/* UNIBUS-ED25519: the signature on control-plane HTTP requests (DESIGN.md 4).
 * Pure functions, no I/O; the nonce-replay check (raft) belongs to the caller.
 *
 * Header value (what follows "Authorization:"):
 *
 *   UNIBUS-ED25519 handle="<handle>",ts="<unix seconds>",nonce="<nonce>",sig="<sig>"
 *
 * Accepted grammar (OWS = any run of SP or HTAB, possibly empty):
 *
 *   value  = OWS "UNIBUS-ED25519" 1*SP param *(OWS "," OWS param) OWS
 *   param  = name "=" DQUOTE *(any byte but DQUOTE) DQUOTE
 *   name   = "handle" / "ts" / "nonce" / "sig"
 *
 * - The scheme and the names are matched exactly (case-sensitive).
 * - Each of the four params appears exactly once, in any order.
 * - Tolerated whitespace: leading/trailing OWS, one or more SP after the
 *   scheme, OWS on either side of each comma. Nothing else: no whitespace
 *   around '=', no HTAB after the scheme, no empty list elements (",,"), no
 *   trailing comma, no unquoted or token68 values, no backslash escapes.
 * - The whole value is at most SIGV1_HEADER_MAX bytes.
 * - handle: [a-z0-9][a-z0-9_-]{0,63}.
 * - ts: 1 to 12 decimal digits, no sign, no leading zero (except "0"), so
 *   the text is exactly what the signer formatted.
 * - nonce: 16 to 64 chars of [A-Za-z0-9_-].
 * - sig: the 64-byte Ed25519 signature as base64url without padding
 *   (86 chars) or, like NATS, standard padded base64 (88 chars).
 *
 * String to sign (UTF-8, '\n' separated, no trailing newline):
 *
 *   UNIBUS-ED25519\n<METHOD>\n<path with query, as sent>\n<ts>\n<nonce>\n<hex>
 *
 * where <ts> is the decimal timestamp, <hex> the lowercase hex SHA-256 of the
 * body (of the empty string when there is none). METHOD must be 1 to
 * SIGV1_METHOD_MAX token chars (RFC 9110 tchar) and the path 1 or more bytes
 * none of which is a control char, SP or DEL, so no field can contain the
 * separator.
 *
 * Return values: functions returning int return an enum sigv1_code; SIGV1_OK
 * (0) is success. Every code but SIGV1_INTERNAL and SIGV1_NO_SPACE on the
 * verifying side is a 401 with the code name as the JSON error code. */
#ifndef UB_AUTH_SIGV1_H
#define UB_AUTH_SIGV1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/nkey.h"

#define SIGV1_SCHEME "UNIBUS-ED25519"
#define SIGV1_HANDLE_MAX 64   /* chars of a handle */
#define SIGV1_TS_DIGITS_MAX 12
#define SIGV1_NONCE_MIN 16
#define SIGV1_NONCE_MAX 64
#define SIGV1_METHOD_MAX 32
#define SIGV1_HEADER_MAX 512  /* longest header value accepted */
#define SIGV1_HEADER_SIZE (SIGV1_HEADER_MAX + 1) /* always fits sigv1_sign */
#define SIGV1_SKEW_DEFAULT 60 /* seconds */
#define SIGV1_NONCE_GEN_LEN 22 /* sigv1_nonce_generate: 16 random bytes */

enum sigv1_code {
    SIGV1_OK = 0,
    SIGV1_MISSING_AUTH,           /* no header, or only whitespace */
    SIGV1_BAD_AUTH_HEADER,        /* scheme, syntax, params, size */
    SIGV1_BAD_HANDLE,             /* handle param not a valid handle */
    SIGV1_BAD_TIMESTAMP,          /* ts param not 1..12 canonical digits */
    SIGV1_BAD_NONCE,              /* nonce param length or alphabet */
    SIGV1_BAD_SIGNATURE_ENCODING, /* sig param not base64 of 64 bytes */
    SIGV1_STALE_TIMESTAMP,        /* ts outside now +- skew */
    SIGV1_BAD_SIGNATURE,          /* signature does not verify */
    SIGV1_BAD_KEY,                /* member key or signing seed unusable */
    SIGV1_BAD_REQUEST,            /* method or path cannot be signed */
    SIGV1_NO_SPACE,               /* caller buffer too small */
    SIGV1_INTERNAL,               /* OpenSSL, random source or memory */
};

/* A parsed header. Strings are NUL-terminated copies. */
struct sigv1_auth {
    char handle[SIGV1_HANDLE_MAX + 1];
    char nonce[SIGV1_NONCE_MAX + 1];
    int64_t ts;                /* 0 .. 999999999999 */
    uint8_t sig[NKEY_SIG_LEN]; /* raw Ed25519 signature */
};

/* Stable snake_case name of a code: "ok", "missing_auth",
 * "bad_auth_header", "bad_handle", "bad_timestamp", "bad_nonce",
 * "bad_signature_encoding", "stale_timestamp", "bad_signature", "bad_key",
 * "bad_request", "no_space", "internal"; "unknown" for anything else. */
const char *sigv1_code_name(int code);

/* True for len chars matching [a-z0-9][a-z0-9_-]{0,63} (also the rule for
 * room names). s may be NULL only when len is 0 (then false). */
bool sigv1_handle_valid(const char *s, size_t len);

/* True for SIGV1_NONCE_MIN..SIGV1_NONCE_MAX chars of [A-Za-z0-9_-]. */
bool sigv1_nonce_valid(const char *s, size_t len);

/* Parses a header value of len bytes (value need not be NUL-terminated and
 * may be NULL when len is 0) into *out. Structural faults give
 * SIGV1_BAD_AUTH_HEADER; once the structure is sound the fields are checked
 * in the order handle, ts, nonce, sig, and the first bad one decides the
 * code. *out is only meaningful on SIGV1_OK. */
int sigv1_parse(const char *value, size_t len, struct sigv1_auth *out);

/* Writes the canonical header value of a (sig as base64url) into out, NUL
 * terminated; cap >= SIGV1_HEADER_SIZE always suffices. Fails with the
 * field's code if a holds an invalid handle, nonce or ts. */
int sigv1_format(const struct sigv1_auth *a, char *out, size_t cap);

/* Builds the string to sign into out (cap bytes, NUL-terminated; the length
 * without the NUL goes to *out_len, which may be NULL). method and path are
 * NUL-terminated; body may be NULL when body_len is 0. Codes:
 * SIGV1_BAD_REQUEST, SIGV1_BAD_TIMESTAMP, SIGV1_BAD_NONCE, SIGV1_NO_SPACE,
 * SIGV1_INTERNAL. */
int sigv1_string_to_sign(const char *method, const char *path,
                         const void *body, size_t body_len, int64_t ts,
                         const char *nonce, char *out, size_t cap,
                         size_t *out_len);

/* As sigv1_string_to_sign(), into a malloc'd buffer stored in *out (owned by
 * the caller, free()); *out is NULL on failure. */
int sigv1_string_to_sign_alloc(const char *method, const char *path,
                               const void *body, size_t body_len,
                               int64_t ts, const char *nonce, char **out,
                               size_t *out_len);

/* Checks a parsed header against the request and the member's public key
 * (upub, "U..."): SIGV1_STALE_TIMESTAMP if |now_s - ts| > skew_s (checked
 * first, before any crypto), SIGV1_BAD_KEY if upub does not decode or is a
 * weak key, SIGV1_BAD_REQUEST if method/path cannot be signed,
 * SIGV1_BAD_SIGNATURE if the signature does not verify, else SIGV1_OK.
 * The handle in *parsed is not checked here: the caller looked up upub by it.
 * The nonce is not claimed here either. */
int sigv1_verify(const struct sigv1_auth *parsed, const char *method,
                 const char *path, const void *body, size_t body_len,
                 const char *upub, int64_t now_s, unsigned skew_s);

/* Signs a request with a user seed ("SU...") and writes the header value
 * (without "Authorization: ") into header_out. nonce may be NULL: a fresh
 * one is generated. Codes: SIGV1_BAD_KEY (seed), SIGV1_BAD_HANDLE,
 * SIGV1_BAD_TIMESTAMP (ts < 0 or more than 12 digits), SIGV1_BAD_NONCE,
 * SIGV1_BAD_REQUEST, SIGV1_NO_SPACE, SIGV1_INTERNAL. */
int sigv1_sign(const char *seed, const char *handle, const char *method,
               const char *path, const void *body, size_t body_len,
               int64_t ts, const char *nonce, char *header_out, size_t cap);

/* Writes a fresh nonce (16 bytes from RAND_bytes as base64url, 22 chars)
 * into out. */
int sigv1_nonce_generate(char out[SIGV1_NONCE_GEN_LEN + 1]);

#endif
