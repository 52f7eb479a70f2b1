/* Fuzz target: the UNIBUS-ED25519 Authorization header (src/auth/sigv1.h),
 * which every control-plane request but /healthz and /metrics carries.
 *
 * Each input is one header value as it would arrive. The target
 *   1. parses it; on success formats the result, parses that again and
 *      checks the fields survive, and checks sigv1_verify() against a fixed
 *      key with the input as the body gives only ok or bad_signature;
 *      then signs a request with the fixed seed using the parsed handle, ts
 *      and nonce and checks the new header parses and verifies, and that a
 *      one-byte change of the body does not;
 *   2. splits the input at its first '\n' into a method and a path (the
 *      rest), builds the string to sign from them and, if they are
 *      signable, checks its layout and a sign/verify round trip.
 * Invariants (abort on violation): every code is a named one; an
 * all-whitespace input is missing_auth; a parsed header has valid fields and
 * formats canonically; what is signed verifies and what is changed does not.
 * The seed key is the public NATS_WIRE.md test vector. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/nkey.h"
#include "auth/sigv1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_SEED "SUAKYRHVIOREXV7EUZTBHUHL7NUMHPMAS7QMDU3GTIUWEI5LDNOXD43IZY"
#define FUZZ_PUB "UD466L6EBCM3YY5HEGHJANNTN4LSKTSUXTH7RILHCKEQMQHTBNLHJJXT"
#define FUZZ_NONCE "fuzz-nonce-0123456789"
/* Inputs are header values or method/path pairs: a few KB is plenty. */
#define FUZZ_SIGV1_MAX 8192

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_sigv1_header: invariant violated: %s\n", what);
        abort();
    }
}

static bool all_ows(const uint8_t *data, size_t size)
{
    for (size_t i = 0; i < size; i++) {
        if (data[i] != ' ' && data[i] != '\t') {
            return false;
        }
    }
    return true;
}

static bool same_fields(const struct sigv1_auth *a, const struct sigv1_auth *b)
{
    return strcmp(a->handle, b->handle) == 0 &&
           strcmp(a->nonce, b->nonce) == 0 && a->ts == b->ts &&
           memcmp(a->sig, b->sig, NKEY_SIG_LEN) == 0;
}

static void header_case(const uint8_t *data, size_t size)
{
    struct sigv1_auth a, b;
    char hdr[SIGV1_HEADER_SIZE];
    char again[SIGV1_HEADER_SIZE];
    int rc = sigv1_parse((const char *)data, size, &a);

    check(strcmp(sigv1_code_name(rc), "unknown") != 0, "named code");
    check(rc <= SIGV1_BAD_SIGNATURE_ENCODING, "parse code");
    check((rc == SIGV1_MISSING_AUTH) == all_ows(data, size), "missing");
    if (rc != SIGV1_OK) {
        return;
    }
    check(sigv1_handle_valid(a.handle, strlen(a.handle)), "handle");
    check(sigv1_nonce_valid(a.nonce, strlen(a.nonce)), "nonce");
    check(a.ts >= 0 && a.ts <= INT64_C(999999999999), "ts");
    check(size <= SIGV1_HEADER_MAX, "size");

    check(sigv1_format(&a, hdr, sizeof hdr) == SIGV1_OK, "format");
    check(sigv1_parse(hdr, strlen(hdr), &b) == SIGV1_OK, "reparse");
    check(same_fields(&a, &b), "reparse fields");
    check(sigv1_format(&b, again, sizeof again) == SIGV1_OK, "format again");
    check(strcmp(hdr, again) == 0, "format canonical");

    rc = sigv1_verify(&a, "POST", "/v1/fuzz", data, size, FUZZ_PUB, a.ts, 0);
    check(rc == SIGV1_OK || rc == SIGV1_BAD_SIGNATURE, "verify code");

    /* A genuine signature with the parsed fields. */
    rc = sigv1_sign(FUZZ_SEED, a.handle, "POST", "/v1/fuzz", data, size,
                    a.ts, a.nonce, hdr, sizeof hdr);
    check(rc == SIGV1_OK, "sign");
    check(sigv1_parse(hdr, strlen(hdr), &b) == SIGV1_OK, "parse signed");
    check(strcmp(a.handle, b.handle) == 0 && strcmp(a.nonce, b.nonce) == 0 &&
              a.ts == b.ts,
          "signed fields");
    check(sigv1_verify(&b, "POST", "/v1/fuzz", data, size, FUZZ_PUB, b.ts,
                       0) == SIGV1_OK,
          "signed verifies");
    {
        uint8_t *copy = malloc(size);

        check(copy != NULL, "malloc");
        memcpy(copy, data, size);
        copy[size / 2] ^= 0x20;
        check(sigv1_verify(&b, "POST", "/v1/fuzz", copy, size, FUZZ_PUB,
                           b.ts, 0) == SIGV1_BAD_SIGNATURE,
              "changed body fails");
        free(copy);
    }
}

static void request_case(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t mlen = nl != NULL ? (size_t)(nl - data) : size;
    size_t plen = nl != NULL ? size - mlen - 1 : 0;
    char *method = malloc(mlen + 1);
    char *path = malloc(plen + 1);
    char *sts = NULL;
    size_t n = 0;
    int rc;

    check(method != NULL && path != NULL, "malloc");
    memcpy(method, data, mlen);
    method[mlen] = '\0';
    if (plen > 0) {
        memcpy(path, nl + 1, plen);
    }
    path[plen] = '\0';

    rc = sigv1_string_to_sign_alloc(method, path, data, size, 1700000000,
                                    FUZZ_NONCE, &sts, &n);
    check(strcmp(sigv1_code_name(rc), "unknown") != 0, "sts code");
    if (rc == SIGV1_OK) {
        size_t ml = strlen(method);
        size_t pl = strlen(path);

        check(strlen(sts) == n, "sts length");
        check(n == 15 + ml + 1 + pl + 1 + 10 + 1 + strlen(FUZZ_NONCE) + 1 + 64,
              "sts layout");
        check(memcmp(sts, "UNIBUS-ED25519\n", 15) == 0, "sts scheme");
        check(memcmp(sts + 15, method, ml) == 0 && sts[15 + ml] == '\n',
              "sts method");
        check(memcmp(sts + 16 + ml, path, pl) == 0, "sts path");
        free(sts);
        {
            char hdr[SIGV1_HEADER_SIZE];
            struct sigv1_auth a;

            check(sigv1_sign(FUZZ_SEED, "fuzz", method, path, NULL, 0, 42,
                             FUZZ_NONCE, hdr, sizeof hdr) == SIGV1_OK,
                  "request sign");
            check(sigv1_parse(hdr, strlen(hdr), &a) == SIGV1_OK,
                  "request parse");
            check(sigv1_verify(&a, method, path, NULL, 0, FUZZ_PUB, 42, 0) ==
                      SIGV1_OK,
                  "request verify");
            check(sigv1_verify(&a, method, "/other", NULL, 0, FUZZ_PUB, 42,
                               0) == (strcmp(path, "/other") == 0
                                          ? SIGV1_OK
                                          : SIGV1_BAD_SIGNATURE),
                  "request other path");
        }
    } else {
        check(sts == NULL, "sts NULL on failure");
        check(rc == SIGV1_BAD_REQUEST, "sts failure is the request");
    }
    free(path);
    free(method);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FUZZ_SIGV1_MAX) {
        return 0;
    }
    header_case(data, size);
    request_case(data, size);
    return 0;
}
