/* Fuzz target: the decoders of src/auth/nkey.h, which read keys and
 * signatures that come from clients (CONNECT nkey/sig, member sign_pub and
 * box_pub, the sig of an Authorization header).
 *
 * Each input is one candidate string. The target runs every decoder on it:
 * base32, base64url, standard base64, the either-form decoder, the signature
 * decoder, the nkey public key and seed decoders for every key type, the user
 * key wrappers (on a NUL-terminated copy) and the box_pub decoder; then it
 * takes the first 32 bytes as a raw Ed25519 key. Invariants (abort on
 * violation), all from the strictness promised in nkey.h:
 *   - a failure is one of the documented codes;
 *   - every decoder is canonical: whatever decodes re-encodes to exactly the
 *     input bytes;
 *   - the either-form decoder agrees with base64url, or else with standard
 *     base64;
 *   - a smaller output buffer gives NKEY_NO_SPACE, never an overflow;
 *   - nkey_user_pub_decode accepts exactly what nkey_decode_pub accepts for
 *     the user type minus the weak keys. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/nkey.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Longest input worth decoding: keys and signatures are under 100 chars. */
#define FUZZ_NKEY_MAX 1024

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_nkey: invariant violated: %s\n", what);
        abort();
    }
}

typedef int (*decode_fn)(const char *in, size_t len, uint8_t *out,
                         size_t cap, size_t *out_len);
typedef int (*encode_fn)(const uint8_t *in, size_t len, char *out,
                         size_t cap);

/* Decodes with dec; on success checks the round trip through enc (when
 * given) and that one byte less of room is refused. Returns the code and
 * leaves the decoded bytes in out/out_len. */
static int codec_case(const char *in, size_t len, decode_fn dec,
                      encode_fn enc, uint8_t *out, size_t cap,
                      size_t *out_len, char *text, size_t text_cap,
                      const char *name)
{
    size_t n = 0;
    int rc = dec(in, len, out, cap, &n);

    if (rc != NKEY_OK) {
        check(rc == NKEY_BAD_ENCODING, name);
        return rc;
    }
    check(n <= cap && n <= len, name);
    if (enc != NULL) {
        check(enc(out, n, text, text_cap) == NKEY_OK, name);
        check(strlen(text) == len && memcmp(text, in, len) == 0, name);
    }
    if (n > 0) {
        /* Exactly n - 1 usable bytes, so ASan sees any write past them. */
        uint8_t *small = malloc(n - 1 > 0 ? n - 1 : 1);
        size_t m = 0;

        check(small != NULL, "malloc");
        check(dec(in, len, small, n - 1, &m) == NKEY_NO_SPACE, name);
        free(small);
    }
    *out_len = n;
    return rc;
}

static bool is_key_code(int rc)
{
    return rc == NKEY_BAD_LENGTH || rc == NKEY_BAD_ENCODING ||
           rc == NKEY_BAD_CRC || rc == NKEY_BAD_PREFIX;
}

static void nkey_strings(const char *in, size_t len, const char *cstr)
{
    static const uint8_t prefixes[] = {
        NKEY_PREFIX_ACCOUNT,  NKEY_PREFIX_CLUSTER, NKEY_PREFIX_SERVER,
        NKEY_PREFIX_OPERATOR, NKEY_PREFIX_USER,    NKEY_PREFIX_CURVE,
    };
    uint8_t key[NKEY_KEY_LEN];
    uint8_t user[NKEY_KEY_LEN];
    char text[NKEY_SEED_SIZE];
    int user_rc = -1;
    int accepted = 0;

    for (size_t i = 0; i < sizeof prefixes; i++) {
        int rc = nkey_decode_pub(in, len, prefixes[i], key);

        if (rc == NKEY_OK) {
            accepted++;
            check(nkey_encode_pub(prefixes[i], key, text) == NKEY_OK,
                  "pub encode");
            check(len == NKEY_PUB_LEN && memcmp(text, in, len) == 0,
                  "pub round trip");
        } else {
            check(is_key_code(rc), "pub code");
        }
        if (prefixes[i] == NKEY_PREFIX_USER) {
            user_rc = rc;
        }
        rc = nkey_decode_seed(in, len, prefixes[i], key);
        if (rc == NKEY_OK) {
            accepted++;
            check(nkey_encode_seed(prefixes[i], key, text) == NKEY_OK,
                  "seed encode");
            check(len == NKEY_SEED_LEN && memcmp(text, in, len) == 0,
                  "seed round trip");
        } else {
            check(is_key_code(rc), "seed code");
        }
    }
    check(accepted <= 1, "one string, one type");

    /* The NUL-terminated wrappers see the input up to its first NUL. */
    if (strlen(cstr) == len) {
        int rc = nkey_user_pub_decode(cstr, user);

        if (user_rc == NKEY_OK) {
            nkey_decode_pub(in, len, NKEY_PREFIX_USER, key);
            check(rc == (nkey_ed25519_pub_is_weak(key) ? NKEY_WEAK_KEY
                                                       : NKEY_OK),
                  "user pub = pub minus weak");
        } else {
            check(rc == user_rc, "user pub code");
        }
        rc = nkey_user_seed_decode(cstr, key);
        check(rc == nkey_decode_seed(in, len, NKEY_PREFIX_USER, user),
              "user seed code");
        if (rc == NKEY_OK) {
            uint8_t pub[NKEY_KEY_LEN];
            uint8_t sig[NKEY_SIG_LEN];

            check(nkey_keypair_from_seed(cstr, pub, NULL) == NKEY_OK,
                  "keypair");
            check(nkey_sign(cstr, in, len, sig) == NKEY_OK, "sign");
            check(nkey_verify_raw(pub, in, len, sig) == NKEY_OK, "verify");
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    size_t cap = size + 1;
    uint8_t *out;
    uint8_t *out2;
    char *text;
    char *cstr;
    size_t text_cap = 2 * size + 8;
    size_t n = 0;
    size_t n2 = 0;
    int url_rc, std_rc, any_rc;

    if (size > FUZZ_NKEY_MAX) {
        return 0;
    }
    out = malloc(cap);
    out2 = malloc(cap);
    text = malloc(text_cap);
    cstr = malloc(size + 1);
    check(out != NULL && out2 != NULL && text != NULL && cstr != NULL,
          "malloc");
    memcpy(cstr, data, size);
    cstr[size] = '\0';

    codec_case(in, size, nkey_base32_decode, nkey_base32_encode, out, cap,
               &n, text, text_cap, "base32");
    url_rc = codec_case(in, size, nkey_b64url_decode, nkey_b64url_encode,
                        out, cap, &n, text, text_cap, "b64url");
    std_rc = codec_case(in, size, nkey_b64std_decode, nkey_b64std_encode,
                        out2, cap, &n2, text, text_cap, "b64std");
    check(url_rc != NKEY_OK || std_rc != NKEY_OK || size == 0 ||
              size % 4 == 0,
          "both forms only for padding-free lengths");
    {
        uint8_t *any = malloc(cap);
        size_t na = 0;

        check(any != NULL, "malloc");
        any_rc = codec_case(in, size, nkey_b64any_decode, NULL, any, cap,
                            &na, text, text_cap, "b64any");
        if (url_rc == NKEY_OK) {
            check(any_rc == NKEY_OK && na == n && memcmp(any, out, n) == 0,
                  "any = url");
        } else if (std_rc == NKEY_OK) {
            check(any_rc == NKEY_OK && na == n2 &&
                      memcmp(any, out2, n2) == 0,
                  "any = std");
        } else {
            check(any_rc == NKEY_BAD_ENCODING, "any fails");
        }
        free(any);
    }
    {
        uint8_t sig[NKEY_SIG_LEN];
        int rc = nkey_sig_decode(in, size, sig);

        if (rc == NKEY_OK) {
            check(any_rc == NKEY_OK, "sig implies any");
            check(size == NKEY_SIG_B64URL_LEN || size == NKEY_SIG_B64STD_LEN,
                  "sig length");
        } else {
            check(rc == NKEY_BAD_LENGTH || rc == NKEY_BAD_ENCODING,
                  "sig code");
        }
    }
    nkey_strings(in, size, cstr);
    {
        uint8_t pub[NKEY_KEY_LEN];
        char box[NKEY_BOX_PUB_SIZE];
        int rc = nkey_box_pub_decode(in, size, pub);

        if (rc == NKEY_OK) {
            check(nkey_box_pub_encode(pub, box) == NKEY_OK, "box encode");
            check(size == NKEY_BOX_PUB_LEN && memcmp(box, in, size) == 0,
                  "box round trip");
            check(nkey_box_pub_valid(cstr) == (strlen(cstr) == size),
                  "box valid");
        } else {
            check(rc == NKEY_BAD_LENGTH || rc == NKEY_BAD_ENCODING ||
                      rc == NKEY_WEAK_KEY,
                  "box code");
        }
    }
    /* The first 32 bytes as a raw Ed25519 public key. */
    if (size >= NKEY_KEY_LEN) {
        char upub[NKEY_PUB_SIZE];
        uint8_t back[NKEY_KEY_LEN];
        uint8_t sig[NKEY_SIG_LEN] = { 0 };
        bool weak = nkey_ed25519_pub_is_weak(data);
        int rc;

        check(nkey_user_pub_encode(data, upub) == NKEY_OK, "raw encode");
        rc = nkey_user_pub_decode(upub, back);
        check(rc == (weak ? NKEY_WEAK_KEY : NKEY_OK), "raw weak");
        if (size >= NKEY_KEY_LEN + NKEY_SIG_LEN) {
            memcpy(sig, data + NKEY_KEY_LEN, NKEY_SIG_LEN);
        }
        rc = nkey_verify_raw(data, data, size, sig);
        check(rc != NKEY_OK || !weak, "weak key never verifies");
        check(rc == NKEY_OK || rc == NKEY_BAD_SIGNATURE ||
                  rc == NKEY_WEAK_KEY,
              "verify code");
    }
    free(cstr);
    free(text);
    free(out2);
    free(out);
    return 0;
}
