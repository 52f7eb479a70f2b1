/* NKeys, base32/base64 and the Ed25519/X25519 helpers; see nkey.h. */
#include "auth/nkey.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdint.h>
#include <string.h>

#define NKEY_PUB_RAW 35  /* prefix, key, crc */
#define NKEY_SEED_RAW 36 /* two prefix bytes, seed, crc */

const char *nkey_code_name(int code)
{
    switch (code) {
    case NKEY_OK:
        return "ok";
    case NKEY_BAD_LENGTH:
        return "bad_length";
    case NKEY_BAD_ENCODING:
        return "bad_encoding";
    case NKEY_BAD_CRC:
        return "bad_crc";
    case NKEY_BAD_PREFIX:
        return "bad_prefix";
    case NKEY_WEAK_KEY:
        return "weak_key";
    case NKEY_BAD_SIGNATURE:
        return "bad_signature";
    case NKEY_NO_SPACE:
        return "no_space";
    case NKEY_INTERNAL:
        return "internal";
    default:
        return "unknown";
    }
}

/* ------------------------------------------------------------------------ */
/* CRC and encodings. */

uint16_t nkey_crc16(const uint8_t *buf, size_t len)
{
    uint16_t crc = 0;

    /* Bitwise form: the inputs are a few dozen bytes, so a table buys
     * nothing and this is easy to check against the definition. */
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)(buf[i] << 8);
        for (int bit = 0; bit < 8; bit++) {
            if (crc & 0x8000) {
                crc = (uint16_t)((crc << 1) ^ 0x1021);
            } else {
                crc = (uint16_t)(crc << 1);
            }
        }
    }
    return crc;
}

static const char b32_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
static const char b64std_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Largest input length whose encodings cannot overflow size_t. */
#define ENCODE_INPUT_MAX (SIZE_MAX / 8 - 8)

int nkey_base32_encode(const uint8_t *in, size_t len, char *out, size_t cap)
{
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t o = 0;

    if (len > ENCODE_INPUT_MAX || cap < NKEY_BASE32_ENCODED_LEN(len) + 1) {
        return NKEY_NO_SPACE;
    }
    for (size_t i = 0; i < len; i++) {
        acc = (acc << 8) | in[i];
        bits += 8;
        while (bits >= 5) {
            bits -= 5;
            out[o++] = b32_alphabet[(acc >> bits) & 31];
        }
        acc &= (1u << bits) - 1;
    }
    if (bits > 0) {
        out[o++] = b32_alphabet[(acc << (5 - bits)) & 31];
    }
    out[o] = '\0';
    return NKEY_OK;
}

static int b32_value(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z') {
        return ch - 'A';
    }
    if (ch >= '2' && ch <= '7') {
        return ch - '2' + 26;
    }
    return -1;
}

int nkey_base32_decode(const char *in, size_t len, uint8_t *out, size_t cap,
                       size_t *out_len)
{
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t o = 0;

    /* Lengths 1, 3 and 6 modulo 8 leave five or more bits over: no
     * encoder produces them. */
    switch (len % 8) {
    case 1:
    case 3:
    case 6:
        return NKEY_BAD_ENCODING;
    default:
        break;
    }
    if (len / 8 * 5 + (len % 8) * 5 / 8 > cap) {
        return NKEY_NO_SPACE;
    }
    for (size_t i = 0; i < len; i++) {
        int v = b32_value((unsigned char)in[i]);

        if (v < 0) {
            return NKEY_BAD_ENCODING;
        }
        acc = (acc << 5) | (uint32_t)v;
        bits += 5;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) {
        return NKEY_BAD_ENCODING; /* unused low bits must be zero */
    }
    *out_len = o;
    return NKEY_OK;
}

static int b64_encode(const uint8_t *in, size_t len, char *out, size_t cap,
                      const char *alphabet, bool pad)
{
    size_t need;
    size_t o = 0;
    size_t i = 0;

    if (len > ENCODE_INPUT_MAX) {
        return NKEY_NO_SPACE;
    }
    need = pad ? NKEY_B64STD_ENCODED_LEN(len) : NKEY_B64URL_ENCODED_LEN(len);
    if (cap < need + 1) {
        return NKEY_NO_SPACE;
    }
    for (; i + 3 <= len; i += 3) {
        uint32_t v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8) |
                     in[i + 2];
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
        out[o++] = alphabet[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
        if (pad) {
            out[o++] = '=';
            out[o++] = '=';
        }
    } else if (len - i == 2) {
        uint32_t v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8);
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
        if (pad) {
            out[o++] = '=';
        }
    }
    out[o] = '\0';
    return NKEY_OK;
}

static int b64_value(unsigned char ch, bool url)
{
    if (ch >= 'A' && ch <= 'Z') {
        return ch - 'A';
    }
    if (ch >= 'a' && ch <= 'z') {
        return ch - 'a' + 26;
    }
    if (ch >= '0' && ch <= '9') {
        return ch - '0' + 52;
    }
    if (ch == (url ? '-' : '+')) {
        return 62;
    }
    if (ch == (url ? '_' : '/')) {
        return 63;
    }
    return -1;
}

/* Decodes unpadded base64 of either alphabet. */
static int b64_decode_raw(const char *in, size_t len, uint8_t *out,
                          size_t cap, size_t *out_len, bool url)
{
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t o = 0;

    if (len % 4 == 1) {
        return NKEY_BAD_ENCODING;
    }
    if (len / 4 * 3 + (len % 4) * 3 / 4 > cap) {
        return NKEY_NO_SPACE;
    }
    for (size_t i = 0; i < len; i++) {
        int v = b64_value((unsigned char)in[i], url);

        if (v < 0) {
            return NKEY_BAD_ENCODING;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) {
        return NKEY_BAD_ENCODING;
    }
    *out_len = o;
    return NKEY_OK;
}

int nkey_b64url_encode(const uint8_t *in, size_t len, char *out, size_t cap)
{
    return b64_encode(in, len, out, cap, b64url_alphabet, false);
}

int nkey_b64url_decode(const char *in, size_t len, uint8_t *out, size_t cap,
                       size_t *out_len)
{
    return b64_decode_raw(in, len, out, cap, out_len, true);
}

int nkey_b64std_encode(const uint8_t *in, size_t len, char *out, size_t cap)
{
    return b64_encode(in, len, out, cap, b64std_alphabet, true);
}

int nkey_b64std_decode(const char *in, size_t len, uint8_t *out, size_t cap,
                       size_t *out_len)
{
    size_t pad = 0;

    if (len % 4 != 0) {
        return NKEY_BAD_ENCODING;
    }
    while (pad < 2 && pad < len && in[len - 1 - pad] == '=') {
        pad++;
    }
    /* A third '=' (or one anywhere else) fails the alphabet check below;
     * the unused-bits check rejects "xx=" style single-char groups. */
    return b64_decode_raw(in, len - pad, out, cap, out_len, false);
}

int nkey_b64any_decode(const char *in, size_t len, uint8_t *out, size_t cap,
                       size_t *out_len)
{
    int rc = nkey_b64url_decode(in, len, out, cap, out_len);

    if (rc != NKEY_BAD_ENCODING) {
        return rc;
    }
    return nkey_b64std_decode(in, len, out, cap, out_len);
}

int nkey_sig_decode(const char *in, size_t len, uint8_t sig[NKEY_SIG_LEN])
{
    uint8_t tmp[NKEY_B64_DECODED_MAX(NKEY_SIG_B64STD_LEN)];
    size_t n = 0;
    int rc;

    if (in == NULL ||
        (len != NKEY_SIG_B64URL_LEN && len != NKEY_SIG_B64STD_LEN)) {
        return NKEY_BAD_LENGTH;
    }
    rc = nkey_b64any_decode(in, len, tmp, sizeof tmp, &n);
    if (rc != NKEY_OK) {
        return rc;
    }
    if (n != NKEY_SIG_LEN) {
        return NKEY_BAD_LENGTH;
    }
    memcpy(sig, tmp, NKEY_SIG_LEN);
    return NKEY_OK;
}

/* ------------------------------------------------------------------------ */
/* NKey strings. */

static bool prefix_is_public(uint8_t prefix)
{
    switch (prefix) {
    case NKEY_PREFIX_ACCOUNT:
    case NKEY_PREFIX_CLUSTER:
    case NKEY_PREFIX_SERVER:
    case NKEY_PREFIX_OPERATOR:
    case NKEY_PREFIX_USER:
    case NKEY_PREFIX_CURVE:
        return true;
    default:
        return false;
    }
}

static void put_crc(uint8_t *raw, size_t body)
{
    uint16_t crc = nkey_crc16(raw, body);

    raw[body] = (uint8_t)(crc & 0xff);
    raw[body + 1] = (uint8_t)(crc >> 8);
}

static bool crc_ok(const uint8_t *raw, size_t body)
{
    uint16_t want = (uint16_t)(raw[body] | (raw[body + 1] << 8));

    return nkey_crc16(raw, body) == want;
}

int nkey_encode_pub(uint8_t prefix, const uint8_t key[NKEY_KEY_LEN],
                    char out[NKEY_PUB_SIZE])
{
    uint8_t raw[NKEY_PUB_RAW];

    if (!prefix_is_public(prefix)) {
        return NKEY_BAD_PREFIX;
    }
    raw[0] = prefix;
    memcpy(raw + 1, key, NKEY_KEY_LEN);
    put_crc(raw, 1 + NKEY_KEY_LEN);
    return nkey_base32_encode(raw, sizeof raw, out, NKEY_PUB_SIZE);
}

int nkey_decode_pub(const char *in, size_t len, uint8_t prefix,
                    uint8_t key[NKEY_KEY_LEN])
{
    uint8_t raw[NKEY_PUB_RAW];
    size_t n = 0;

    if (in == NULL || len != NKEY_PUB_LEN) {
        return NKEY_BAD_LENGTH;
    }
    if (nkey_base32_decode(in, len, raw, sizeof raw, &n) != NKEY_OK ||
        n != sizeof raw) {
        return NKEY_BAD_ENCODING;
    }
    if (!crc_ok(raw, 1 + NKEY_KEY_LEN)) {
        return NKEY_BAD_CRC;
    }
    if (!prefix_is_public(prefix) || raw[0] != prefix) {
        return NKEY_BAD_PREFIX;
    }
    memcpy(key, raw + 1, NKEY_KEY_LEN);
    return NKEY_OK;
}

int nkey_encode_seed(uint8_t prefix, const uint8_t seed[NKEY_KEY_LEN],
                     char out[NKEY_SEED_SIZE])
{
    uint8_t raw[NKEY_SEED_RAW];
    int rc;

    if (!prefix_is_public(prefix)) {
        return NKEY_BAD_PREFIX;
    }
    raw[0] = (uint8_t)(NKEY_PREFIX_SEED | (prefix >> 5));
    raw[1] = (uint8_t)((prefix & 31) << 3);
    memcpy(raw + 2, seed, NKEY_KEY_LEN);
    put_crc(raw, 2 + NKEY_KEY_LEN);
    rc = nkey_base32_encode(raw, sizeof raw, out, NKEY_SEED_SIZE);
    OPENSSL_cleanse(raw, sizeof raw);
    return rc;
}

int nkey_decode_seed(const char *in, size_t len, uint8_t prefix,
                     uint8_t seed[NKEY_KEY_LEN])
{
    uint8_t raw[NKEY_SEED_RAW];
    size_t n = 0;
    int rc = NKEY_OK;

    if (in == NULL || len != NKEY_SEED_LEN) {
        return NKEY_BAD_LENGTH;
    }
    if (nkey_base32_decode(in, len, raw, sizeof raw, &n) != NKEY_OK ||
        n != sizeof raw) {
        rc = NKEY_BAD_ENCODING;
    } else if (!crc_ok(raw, 2 + NKEY_KEY_LEN)) {
        rc = NKEY_BAD_CRC;
    } else if ((raw[0] & 0xf8) != NKEY_PREFIX_SEED || (raw[1] & 7) != 0 ||
               !prefix_is_public(prefix) ||
               (uint8_t)(((raw[0] & 7) << 5) | (raw[1] >> 3)) != prefix) {
        rc = NKEY_BAD_PREFIX;
    } else {
        memcpy(seed, raw + 2, NKEY_KEY_LEN);
    }
    OPENSSL_cleanse(raw, sizeof raw);
    return rc;
}

int nkey_user_pub_encode(const uint8_t pub[NKEY_KEY_LEN],
                         char out[NKEY_PUB_SIZE])
{
    return nkey_encode_pub(NKEY_PREFIX_USER, pub, out);
}

int nkey_user_pub_decode(const char *in, uint8_t pub[NKEY_KEY_LEN])
{
    uint8_t key[NKEY_KEY_LEN];
    int rc;

    if (in == NULL) {
        return NKEY_BAD_LENGTH;
    }
    rc = nkey_decode_pub(in, strlen(in), NKEY_PREFIX_USER, key);
    if (rc != NKEY_OK) {
        return rc;
    }
    if (nkey_ed25519_pub_is_weak(key)) {
        return NKEY_WEAK_KEY;
    }
    memcpy(pub, key, NKEY_KEY_LEN);
    return NKEY_OK;
}

int nkey_user_seed_encode(const uint8_t seed[NKEY_KEY_LEN],
                          char out[NKEY_SEED_SIZE])
{
    return nkey_encode_seed(NKEY_PREFIX_USER, seed, out);
}

int nkey_user_seed_decode(const char *in, uint8_t seed[NKEY_KEY_LEN])
{
    if (in == NULL) {
        return NKEY_BAD_LENGTH;
    }
    return nkey_decode_seed(in, strlen(in), NKEY_PREFIX_USER, seed);
}

/* y coordinates (little-endian, sign bit clear) of the eight points of small
 * order on edwards25519: y = 1 (identity), y = p - 1 (order 2), y = 0 (the two
 * points of order 4) and the two y values shared by the four points of order
 * 8. Computed from the curve equation (d*y^4 + 2*y^2 - 1 = 0 for order 8). */
static const uint8_t ed25519_small_order_y[5][NKEY_KEY_LEN] = {
    { 0 },
    { 1 },
    { 0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
      0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
      0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f },
    { 0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4,
      0x89, 0xf2, 0xef, 0x98, 0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6,
      0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53, 0xfc, 0x05 },
    { 0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b,
      0x76, 0x0d, 0x10, 0x67, 0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39,
      0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac, 0x03, 0x7a },
};

bool nkey_ed25519_pub_is_weak(const uint8_t pub[NKEY_KEY_LEN])
{
    uint8_t y[NKEY_KEY_LEN];
    bool all_ff = true;

    memcpy(y, pub, sizeof y);
    y[31] &= 0x7f; /* drop the sign of x */
    /* p = 2^255 - 19 is ed ff .. ff 7f little-endian: y >= p exactly when
     * the top byte is 7f, the middle bytes ff and the low byte >= ed. */
    for (int i = 1; i < 31; i++) {
        all_ff = all_ff && y[i] == 0xff;
    }
    if (all_ff && y[31] == 0x7f && y[0] >= 0xed) {
        return true;
    }
    for (size_t i = 0; i < sizeof ed25519_small_order_y / sizeof y; i++) {
        if (memcmp(y, ed25519_small_order_y[i], sizeof y) == 0) {
            return true;
        }
    }
    return false;
}

/* ------------------------------------------------------------------------ */
/* Ed25519. */

static const uint8_t empty_msg[1] = { 0 };

/* Derives the raw public key of a raw private key of the given type. */
static int raw_pub_from_priv(int type, const uint8_t priv[NKEY_KEY_LEN],
                             uint8_t pub[NKEY_KEY_LEN])
{
    EVP_PKEY *pkey;
    size_t n = NKEY_KEY_LEN;
    int rc = NKEY_OK;

    pkey = EVP_PKEY_new_raw_private_key(type, NULL, priv, NKEY_KEY_LEN);
    if (pkey == NULL) {
        ERR_clear_error();
        return NKEY_INTERNAL;
    }
    if (EVP_PKEY_get_raw_public_key(pkey, pub, &n) != 1 ||
        n != NKEY_KEY_LEN) {
        ERR_clear_error();
        rc = NKEY_INTERNAL;
    }
    EVP_PKEY_free(pkey);
    return rc;
}

int nkey_keypair_from_seed(const char *seed, uint8_t pub[NKEY_KEY_LEN],
                           uint8_t priv[NKEY_KEY_LEN])
{
    uint8_t raw[NKEY_KEY_LEN];
    uint8_t key[NKEY_KEY_LEN];
    int rc;

    rc = nkey_user_seed_decode(seed, raw);
    if (rc == NKEY_OK && pub != NULL) {
        rc = raw_pub_from_priv(EVP_PKEY_ED25519, raw, key);
        if (rc == NKEY_OK) {
            memcpy(pub, key, NKEY_KEY_LEN);
        }
    }
    if (rc == NKEY_OK && priv != NULL) {
        memcpy(priv, raw, NKEY_KEY_LEN);
    }
    OPENSSL_cleanse(raw, sizeof raw);
    return rc;
}

int nkey_generate_user(char seed[NKEY_SEED_SIZE], char pub[NKEY_PUB_SIZE])
{
    uint8_t priv[NKEY_KEY_LEN];
    uint8_t key[NKEY_KEY_LEN];
    int rc;

    if (RAND_bytes(priv, sizeof priv) != 1) {
        ERR_clear_error();
        return NKEY_INTERNAL;
    }
    rc = raw_pub_from_priv(EVP_PKEY_ED25519, priv, key);
    if (rc == NKEY_OK) {
        rc = nkey_user_seed_encode(priv, seed);
    }
    if (rc == NKEY_OK) {
        rc = nkey_user_pub_encode(key, pub);
    }
    OPENSSL_cleanse(priv, sizeof priv);
    return rc;
}

int nkey_sign_raw(const uint8_t priv[NKEY_KEY_LEN], const void *msg,
                  size_t len, uint8_t sig[NKEY_SIG_LEN])
{
    EVP_PKEY *pkey;
    EVP_MD_CTX *ctx;
    size_t n = NKEY_SIG_LEN;
    int rc = NKEY_INTERNAL;

    pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, priv,
                                        NKEY_KEY_LEN);
    if (pkey == NULL) {
        ERR_clear_error();
        return NKEY_INTERNAL;
    }
    ctx = EVP_MD_CTX_new();
    if (ctx != NULL && EVP_DigestSignInit(ctx, NULL, NULL, NULL, pkey) == 1 &&
        EVP_DigestSign(ctx, sig, &n, len > 0 ? msg : empty_msg, len) == 1 &&
        n == NKEY_SIG_LEN) {
        rc = NKEY_OK;
    } else {
        ERR_clear_error();
    }
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pkey);
    return rc;
}

int nkey_sign(const char *seed, const void *msg, size_t len,
              uint8_t sig[NKEY_SIG_LEN])
{
    uint8_t priv[NKEY_KEY_LEN];
    int rc = nkey_user_seed_decode(seed, priv);

    if (rc == NKEY_OK) {
        rc = nkey_sign_raw(priv, msg, len, sig);
    }
    OPENSSL_cleanse(priv, sizeof priv);
    return rc;
}

int nkey_verify_raw(const uint8_t pub[NKEY_KEY_LEN], const void *msg,
                    size_t len, const uint8_t sig[NKEY_SIG_LEN])
{
    EVP_PKEY *pkey;
    EVP_MD_CTX *ctx;
    int rc = NKEY_INTERNAL;

    if (nkey_ed25519_pub_is_weak(pub)) {
        return NKEY_WEAK_KEY;
    }
    pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub,
                                       NKEY_KEY_LEN);
    if (pkey == NULL) {
        ERR_clear_error();
        return NKEY_INTERNAL;
    }
    ctx = EVP_MD_CTX_new();
    if (ctx != NULL && EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pkey) == 1) {
        /* 0 for a wrong signature; < 0 for malformed input (a point that
         * does not decode, S >= L): both mean "does not verify". */
        int v = EVP_DigestVerify(ctx, sig, NKEY_SIG_LEN,
                                 len > 0 ? msg : empty_msg, len);
        rc = v == 1 ? NKEY_OK : NKEY_BAD_SIGNATURE;
    }
    ERR_clear_error();
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pkey);
    return rc;
}

int nkey_verify(const char *upub, const void *msg, size_t len,
                const uint8_t sig[NKEY_SIG_LEN])
{
    uint8_t pub[NKEY_KEY_LEN];
    int rc = nkey_user_pub_decode(upub, pub);

    if (rc != NKEY_OK) {
        return rc;
    }
    return nkey_verify_raw(pub, msg, len, sig);
}

/* ------------------------------------------------------------------------ */
/* X25519. */

int nkey_x25519_pub_from_priv(const uint8_t priv[NKEY_KEY_LEN],
                              uint8_t pub[NKEY_KEY_LEN])
{
    return raw_pub_from_priv(EVP_PKEY_X25519, priv, pub);
}

int nkey_x25519_generate(uint8_t priv[NKEY_KEY_LEN],
                         uint8_t pub[NKEY_KEY_LEN])
{
    uint8_t key[NKEY_KEY_LEN];
    int rc;

    if (RAND_bytes(key, sizeof key) != 1) {
        ERR_clear_error();
        return NKEY_INTERNAL;
    }
    rc = nkey_x25519_pub_from_priv(key, pub);
    if (rc == NKEY_OK) {
        memcpy(priv, key, NKEY_KEY_LEN);
    }
    OPENSSL_cleanse(key, sizeof key);
    return rc;
}

int nkey_box_pub_encode(const uint8_t pub[NKEY_KEY_LEN],
                        char out[NKEY_BOX_PUB_SIZE])
{
    return nkey_b64std_encode(pub, NKEY_KEY_LEN, out, NKEY_BOX_PUB_SIZE);
}

/* Fixed private scalar used only to probe peer keys; clamping makes every
 * scalar a multiple of the cofactor, so a small-order peer gives the all-zero
 * shared secret, which OpenSSL refuses to return. */
static const uint8_t x25519_probe_priv[NKEY_KEY_LEN] = {
    0x75, 0x6e, 0x69, 0x62, 0x75, 0x73, 0x2d, 0x62, 0x6f, 0x78, 0x2d,
    0x70, 0x72, 0x6f, 0x62, 0x65, 0x2d, 0x73, 0x63, 0x61, 0x6c, 0x61,
    0x72, 0x2d, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37,
};

/* NKEY_OK, NKEY_WEAK_KEY or NKEY_INTERNAL. */
static int x25519_check_peer(const uint8_t pub[NKEY_KEY_LEN])
{
    EVP_PKEY *mine;
    EVP_PKEY *peer;
    EVP_PKEY_CTX *ctx = NULL;
    uint8_t secret[NKEY_KEY_LEN];
    size_t n = sizeof secret;
    int rc = NKEY_INTERNAL;

    mine = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL,
                                        x25519_probe_priv, NKEY_KEY_LEN);
    peer = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, pub,
                                       NKEY_KEY_LEN);
    if (mine != NULL && peer != NULL) {
        ctx = EVP_PKEY_CTX_new(mine, NULL);
    }
    if (ctx != NULL && EVP_PKEY_derive_init(ctx) == 1) {
        uint8_t acc = 0;

        if (EVP_PKEY_derive_set_peer(ctx, peer) == 1 &&
            EVP_PKEY_derive(ctx, secret, &n) == 1 && n == sizeof secret) {
            for (size_t i = 0; i < n; i++) {
                acc |= secret[i];
            }
        }
        rc = acc != 0 ? NKEY_OK : NKEY_WEAK_KEY;
    }
    ERR_clear_error();
    OPENSSL_cleanse(secret, sizeof secret);
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(peer);
    EVP_PKEY_free(mine);
    return rc;
}

int nkey_box_pub_decode(const char *in, size_t len,
                        uint8_t pub[NKEY_KEY_LEN])
{
    uint8_t raw[NKEY_B64_DECODED_MAX(NKEY_BOX_PUB_LEN)];
    size_t n = 0;
    int rc;

    if (in == NULL || len != NKEY_BOX_PUB_LEN) {
        return NKEY_BAD_LENGTH;
    }
    rc = nkey_b64std_decode(in, len, raw, sizeof raw, &n);
    if (rc != NKEY_OK) {
        return rc;
    }
    if (n != NKEY_KEY_LEN) {
        return NKEY_BAD_LENGTH;
    }
    rc = x25519_check_peer(raw);
    if (rc == NKEY_OK) {
        memcpy(pub, raw, NKEY_KEY_LEN);
    }
    return rc;
}

bool nkey_box_pub_valid(const char *in)
{
    uint8_t pub[NKEY_KEY_LEN];

    return in != NULL &&
           nkey_box_pub_decode(in, strlen(in), pub) == NKEY_OK;
}
