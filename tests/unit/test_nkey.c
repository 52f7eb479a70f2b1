/* Unit tests of src/auth/nkey.h: CRC-16/XMODEM, base32 and base64 codecs,
 * the NATS_WIRE.md 4.2 nkey test vectors, every rejection of user keys and
 * seeds, weak Ed25519 keys, signatures, and X25519 box keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "auth/nkey.h"

/* ------------------------------------------------------------------------ */
/* Vectors. */

/* NATS_WIRE.md 4.2 (nats-io/nkeys README), re-derived with Python's base64,
 * binascii.crc_hqx and the cryptography package. */
#define V_SEED "SUAKYRHVIOREXV7EUZTBHUHL7NUMHPMAS7QMDU3GTIUWEI5LDNOXD43IZY"
#define V_PUB "UD466L6EBCM3YY5HEGHJANNTN4LSKTSUXTH7RILHCKEQMQHTBNLHJJXT"
#define V_SEED32 "ac44f543a24bd7e4a66613d0ebfb68c3bd8097e0c1d3669a296223ab1b5d71f3"
#define V_PUB32 "f9ef2fc40899bc63a7218e9035b36f17254e54bccff8a16712890640f30b5674"
#define V_NONCE "PXoWU7zWAMt75FY"
#define V_SIG_URL                                                   \
    "Q7NJw8_tdpboin6l4FenR7icGxNUSaae6dgxOc11QNoD33vfRfG2CFWjqpnEbLOVOQ" \
    "JjNBlkJT4n9AJ_OG4kDQ"
#define V_SIG_STD                                                   \
    "Q7NJw8/tdpboin6l4FenR7icGxNUSaae6dgxOc11QNoD33vfRfG2CFWjqpnEbLOVOQ" \
    "JjNBlkJT4n9AJ/OG4kDQ=="
/* The same key material typed as an account ("A...", "SA..."). */
#define V_ACCOUNT_PUB "AD466L6EBCM3YY5HEGHJANNTN4LSKTSUXTH7RILHCKEQMQHTBNLHINEM"
#define V_ACCOUNT_SEED \
    "SAAKYRHVIOREXV7EUZTBHUHL7NUMHPMAS7QMDU3GTIUWEI5LDNOXD443AI"

/* X25519: public key of the private key 00 01 .. 1f (RFC 7748 clamping
 * applies), computed with Python's cryptography package. */
#define X_PUB_OF_0_31 "j0DFrbaPJWJK5bIU6nZ6bslNgp09e14a0bpvPiE4KF8="
/* Small-order X25519 u coordinates as box_pub strings: 0, 1, p - 1 and a
 * point of order 8 (u = (1 + y) / (1 - y) of an Edwards order-8 point). */
static const char *const x_weak[] = {
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    "7P///////////////////////////////////////38=",
    "X5yVvKNQjCSx0LFVnIPvWwREXMRYHI6G2CJO3dCfEVc=",
};

/* ------------------------------------------------------------------------ */
/* Helpers. */

static void hex_decode(const char *hex, uint8_t *out, size_t n)
{
    assert_int_equal(strlen(hex), 2 * n);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
        out[i] = (uint8_t)v;
    }
}

/* Decodes a NUL-terminated base32 string; returns the code. */
static int b32_dec(const char *s, uint8_t *out, size_t cap, size_t *n)
{
    return nkey_base32_decode(s, strlen(s), out, cap, n);
}

/* ------------------------------------------------------------------------ */
/* CRC and base32. */

static void test_crc16(void **state)
{
    (void)state;
    assert_int_equal(nkey_crc16((const uint8_t *)"123456789", 9), 0x31c3);
    assert_int_equal(nkey_crc16(NULL, 0), 0);
    assert_int_equal(nkey_crc16((const uint8_t *)"A", 1), 0x58e5);
}

/* RFC 4648 section 10, without padding. */
static const struct {
    const char *plain;
    const char *b32;
    const char *b64std;
    const char *b64url;
} rfc4648[] = {
    { "", "", "", "" },
    { "f", "MY", "Zg==", "Zg" },
    { "fo", "MZXQ", "Zm8=", "Zm8" },
    { "foo", "MZXW6", "Zm9v", "Zm9v" },
    { "foob", "MZXW6YQ", "Zm9vYg==", "Zm9vYg" },
    { "fooba", "MZXW6YTB", "Zm9vYmE=", "Zm9vYmE" },
    { "foobar", "MZXW6YTBOI", "Zm9vYmFy", "Zm9vYmFy" },
};

static void test_base32_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof rfc4648 / sizeof rfc4648[0]; i++) {
        const char *p = rfc4648[i].plain;
        char enc[32];
        uint8_t dec[16];
        size_t n = 99;

        assert_int_equal(nkey_base32_encode((const uint8_t *)p, strlen(p),
                                            enc, sizeof enc),
                         NKEY_OK);
        assert_string_equal(enc, rfc4648[i].b32);
        assert_int_equal(strlen(enc), NKEY_BASE32_ENCODED_LEN(strlen(p)));
        assert_int_equal(b32_dec(enc, dec, sizeof dec, &n), NKEY_OK);
        assert_int_equal(n, strlen(p));
        assert_memory_equal(dec, p, n);
    }
}

static void test_base32_round_trip(void **state)
{
    uint8_t in[40];
    char enc[80];
    uint8_t dec[40];
    size_t n;

    (void)state;
    for (size_t i = 0; i < sizeof in; i++) {
        in[i] = (uint8_t)(i * 37 + 11);
    }
    for (size_t len = 0; len <= sizeof in; len++) {
        assert_int_equal(nkey_base32_encode(in, len, enc, sizeof enc),
                         NKEY_OK);
        assert_int_equal(b32_dec(enc, dec, sizeof dec, &n), NKEY_OK);
        assert_int_equal(n, len);
        assert_memory_equal(dec, in, len);
    }
}

static void test_base32_rejects(void **state)
{
    static const char *const bad[] = {
        "mzxw6",      /* lower case */
        "MZXw6",      /* one lower-case char */
        "MY======",   /* padding */
        "MY=",        /* partial padding */
        "MZ1W",       /* '1' is not in the alphabet */
        "MZ0W",       /* nor '0' */
        "MZ8W",       /* nor '8' */
        "M",          /* 1 char: 5 bits, no byte */
        "MZX",        /* 3 chars */
        "MZXW6Y",     /* 6 chars */
        "MZ",         /* unused low bits not zero ("MY" is canonical) */
        "MZXW7",      /* same, 5 chars */
        " MY",        /* whitespace is not skipped */
        "MY\n",
        "MZ-W",
    };
    uint8_t dec[16];
    size_t n;
    char enc[8];

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = b32_dec(bad[i], dec, sizeof dec, &n);
        if (rc != NKEY_BAD_ENCODING) {
            fail_msg("base32 \"%s\": %s", bad[i], nkey_code_name(rc));
        }
    }
    /* An embedded NUL is just another bad byte. */
    assert_int_equal(nkey_base32_decode("M\0", 2, dec, sizeof dec, &n),
                     NKEY_BAD_ENCODING);
    /* Capacity. */
    assert_int_equal(b32_dec("MZXW6", dec, 2, &n), NKEY_NO_SPACE);
    assert_int_equal(b32_dec("MZXW6", dec, 3, &n), NKEY_OK);
    assert_int_equal(nkey_base32_encode((const uint8_t *)"foo", 3, enc, 5),
                     NKEY_NO_SPACE); /* 5 chars need 6 bytes */
    assert_int_equal(nkey_base32_encode((const uint8_t *)"foo", 3, enc, 6),
                     NKEY_OK);
}

/* ------------------------------------------------------------------------ */
/* base64. */

static void test_base64_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof rfc4648 / sizeof rfc4648[0]; i++) {
        const char *p = rfc4648[i].plain;
        size_t len = strlen(p);
        char enc[32];
        uint8_t dec[16];
        size_t n;

        assert_int_equal(nkey_b64std_encode((const uint8_t *)p, len, enc,
                                            sizeof enc),
                         NKEY_OK);
        assert_string_equal(enc, rfc4648[i].b64std);
        assert_int_equal(strlen(enc), NKEY_B64STD_ENCODED_LEN(len));
        assert_int_equal(nkey_b64url_encode((const uint8_t *)p, len, enc,
                                            sizeof enc),
                         NKEY_OK);
        assert_string_equal(enc, rfc4648[i].b64url);
        assert_int_equal(strlen(enc), NKEY_B64URL_ENCODED_LEN(len));

        const char *forms[2] = { rfc4648[i].b64std, rfc4648[i].b64url };
        n = 99;
        assert_int_equal(nkey_b64std_decode(forms[0], strlen(forms[0]), dec,
                                            sizeof dec, &n),
                         NKEY_OK);
        assert_int_equal(n, len);
        assert_memory_equal(dec, p, len);
        n = 99;
        assert_int_equal(nkey_b64url_decode(forms[1], strlen(forms[1]), dec,
                                            sizeof dec, &n),
                         NKEY_OK);
        assert_int_equal(n, len);
        assert_memory_equal(dec, p, len);
        for (int f = 0; f < 2; f++) {
            n = 99;
            assert_int_equal(nkey_b64any_decode(forms[f], strlen(forms[f]),
                                                dec, sizeof dec, &n),
                             NKEY_OK);
            assert_int_equal(n, len);
            assert_memory_equal(dec, p, len);
        }
    }
}

static void test_base64_alphabets(void **state)
{
    static const uint8_t in[] = { 0xfb, 0xff, 0xbf };
    char enc[8];
    uint8_t dec[4];
    size_t n;

    (void)state;
    assert_int_equal(nkey_b64std_encode(in, 3, enc, sizeof enc), NKEY_OK);
    assert_string_equal(enc, "+/+/");
    assert_int_equal(nkey_b64url_encode(in, 3, enc, sizeof enc), NKEY_OK);
    assert_string_equal(enc, "-_-_");
    /* Each decoder refuses the other's alphabet... */
    assert_int_equal(nkey_b64std_decode("-_-_", 4, dec, sizeof dec, &n),
                     NKEY_BAD_ENCODING);
    assert_int_equal(nkey_b64url_decode("+/+/", 4, dec, sizeof dec, &n),
                     NKEY_BAD_ENCODING);
    /* ...the "any" decoder takes both, but never a mix. */
    assert_int_equal(nkey_b64any_decode("+/+/", 4, dec, sizeof dec, &n),
                     NKEY_OK);
    assert_memory_equal(dec, in, 3);
    assert_int_equal(nkey_b64any_decode("-_-_", 4, dec, sizeof dec, &n),
                     NKEY_OK);
    assert_memory_equal(dec, in, 3);
    assert_int_equal(nkey_b64any_decode("-/+_", 4, dec, sizeof dec, &n),
                     NKEY_BAD_ENCODING);
}

static void test_base64_rejects(void **state)
{
    static const char *const bad_url[] = {
        "Zg==",  /* padding */
        "Zg=",   /* partial padding */
        "Zh",    /* unused bits not zero */
        "Zm9vY", /* 5 chars: 1 mod 4 */
        "Z",     /* 1 char */
        "Zm+v",  /* std alphabet */
        "Zm9v\n",
        " Zm9v",
        "Zm9v YmFy",
        "Zm.v",
    };
    static const char *const bad_std[] = {
        "Zg",    /* padding missing */
        "Zm8",   /* padding missing */
        "Zh==",  /* unused bits not zero */
        "Zm9=",  /* unused bits not zero */
        "Z===",  /* three '=' */
        "====",
        "=Zg=",  /* '=' not at the end */
        "Zg=a",
        "Zg==Zg==", /* padding in the middle */
        "Zm-v",  /* url alphabet */
        "Zm9v\n",
        "Zm9vY===",
    };
    uint8_t dec[16];
    size_t n;
    char enc[8];

    (void)state;
    for (size_t i = 0; i < sizeof bad_url / sizeof bad_url[0]; i++) {
        int rc = nkey_b64url_decode(bad_url[i], strlen(bad_url[i]), dec,
                                    sizeof dec, &n);
        if (rc != NKEY_BAD_ENCODING) {
            fail_msg("b64url \"%s\": %s", bad_url[i], nkey_code_name(rc));
        }
    }
    for (size_t i = 0; i < sizeof bad_std / sizeof bad_std[0]; i++) {
        int rc = nkey_b64std_decode(bad_std[i], strlen(bad_std[i]), dec,
                                    sizeof dec, &n);
        if (rc != NKEY_BAD_ENCODING) {
            fail_msg("b64std \"%s\": %s", bad_std[i], nkey_code_name(rc));
        }
        /* "any" fails too, unless the input is valid base64url. */
        int url = nkey_b64url_decode(bad_std[i], strlen(bad_std[i]), dec,
                                     sizeof dec, &n);
        rc = nkey_b64any_decode(bad_std[i], strlen(bad_std[i]), dec,
                                sizeof dec, &n);
        if (rc != (url == NKEY_OK ? NKEY_OK : NKEY_BAD_ENCODING)) {
            fail_msg("b64any \"%s\": %s", bad_std[i], nkey_code_name(rc));
        }
    }
    assert_int_equal(nkey_b64url_decode("Zm9vYmFy", 8, dec, 5, &n),
                     NKEY_NO_SPACE);
    assert_int_equal(nkey_b64std_decode("Zm9vYg==", 8, dec, 3, &n),
                     NKEY_NO_SPACE);
    assert_int_equal(nkey_b64std_decode("Zm9vYg==", 8, dec, 4, &n),
                     NKEY_OK);
    assert_int_equal(nkey_b64std_encode((const uint8_t *)"f", 1, enc, 4),
                     NKEY_NO_SPACE);
    assert_int_equal(nkey_b64url_encode((const uint8_t *)"f", 1, enc, 2),
                     NKEY_NO_SPACE);
    assert_int_equal(nkey_b64url_encode((const uint8_t *)"f", 1, enc, 3),
                     NKEY_OK);
}

static void test_sig_decode(void **state)
{
    uint8_t a[NKEY_SIG_LEN];
    uint8_t b[NKEY_SIG_LEN];
    char buf[NKEY_SIG_B64STD_LEN + 8];

    (void)state;
    assert_int_equal(strlen(V_SIG_URL), NKEY_SIG_B64URL_LEN);
    assert_int_equal(strlen(V_SIG_STD), NKEY_SIG_B64STD_LEN);
    assert_int_equal(nkey_sig_decode(V_SIG_URL, strlen(V_SIG_URL), a),
                     NKEY_OK);
    assert_int_equal(nkey_sig_decode(V_SIG_STD, strlen(V_SIG_STD), b),
                     NKEY_OK);
    assert_memory_equal(a, b, NKEY_SIG_LEN);

    assert_int_equal(nkey_sig_decode(V_SIG_URL, 85, a), NKEY_BAD_LENGTH);
    assert_int_equal(nkey_sig_decode(V_SIG_STD, 87, a), NKEY_BAD_LENGTH);
    assert_int_equal(nkey_sig_decode(NULL, 0, a), NKEY_BAD_LENGTH);
    /* Standard alphabet without padding (86 chars): neither form. */
    memcpy(buf, V_SIG_STD, 86);
    assert_int_equal(nkey_sig_decode(buf, 86, a), NKEY_BAD_ENCODING);
    /* URL alphabet with padding. */
    memcpy(buf, V_SIG_URL, 86);
    memcpy(buf + 86, "==", 2);
    assert_int_equal(nkey_sig_decode(buf, 88, a), NKEY_BAD_ENCODING);
    /* Bad character. */
    memcpy(buf, V_SIG_URL, 86);
    buf[10] = '!';
    assert_int_equal(nkey_sig_decode(buf, 86, a), NKEY_BAD_ENCODING);
    /* Non-zero unused bits in the last char ('Q' -> 'R'). */
    memcpy(buf, V_SIG_URL, 86);
    assert_int_equal(buf[85], 'Q');
    buf[85] = 'R';
    assert_int_equal(nkey_sig_decode(buf, 86, a), NKEY_BAD_ENCODING);
    /* 88 url chars decode to 66 bytes: the wrong size. */
    memset(buf, 'A', 88);
    assert_int_equal(nkey_sig_decode(buf, 88, a), NKEY_BAD_LENGTH);
}

/* ------------------------------------------------------------------------ */
/* NATS_WIRE.md test vectors. */

static void test_vector_seed_to_pub(void **state)
{
    uint8_t pub[NKEY_KEY_LEN], priv[NKEY_KEY_LEN];
    uint8_t want_pub[NKEY_KEY_LEN], want_priv[NKEY_KEY_LEN];
    char str[NKEY_PUB_SIZE];
    char seed[NKEY_SEED_SIZE];

    (void)state;
    hex_decode(V_PUB32, want_pub, sizeof want_pub);
    hex_decode(V_SEED32, want_priv, sizeof want_priv);
    assert_int_equal(nkey_keypair_from_seed(V_SEED, pub, priv), NKEY_OK);
    assert_memory_equal(pub, want_pub, NKEY_KEY_LEN);
    assert_memory_equal(priv, want_priv, NKEY_KEY_LEN);
    assert_int_equal(nkey_user_pub_encode(pub, str), NKEY_OK);
    assert_string_equal(str, V_PUB);
    assert_int_equal(nkey_user_seed_encode(priv, seed), NKEY_OK);
    assert_string_equal(seed, V_SEED);
    /* Either output may be omitted. */
    memset(pub, 0, sizeof pub);
    assert_int_equal(nkey_keypair_from_seed(V_SEED, pub, NULL), NKEY_OK);
    assert_memory_equal(pub, want_pub, NKEY_KEY_LEN);
    assert_int_equal(nkey_keypair_from_seed(V_SEED, NULL, priv), NKEY_OK);
}

static void test_vector_decode(void **state)
{
    uint8_t pub[NKEY_KEY_LEN], seed[NKEY_KEY_LEN], want[NKEY_KEY_LEN];
    uint8_t raw[40];
    size_t n;

    (void)state;
    hex_decode(V_PUB32, want, sizeof want);
    assert_int_equal(nkey_user_pub_decode(V_PUB, pub), NKEY_OK);
    assert_memory_equal(pub, want, NKEY_KEY_LEN);
    /* Layout: prefix 0xa0, key, CRC 0xf3a6 stored little-endian (a6 f3;
     * NATS_WIRE.md's "CRC bytes (LE) f3 a6" is the value, not the bytes:
     * the public key string, the ground truth, needs a6 f3). */
    assert_int_equal(b32_dec(V_PUB, raw, sizeof raw, &n), NKEY_OK);
    assert_int_equal(n, 35);
    assert_int_equal(raw[0], 0xa0);
    assert_int_equal(raw[33], 0xa6);
    assert_int_equal(raw[34], 0xf3);
    assert_int_equal(nkey_crc16(raw, 33), 0xf3a6);

    hex_decode(V_SEED32, want, sizeof want);
    assert_int_equal(nkey_user_seed_decode(V_SEED, seed), NKEY_OK);
    assert_memory_equal(seed, want, NKEY_KEY_LEN);
    assert_int_equal(b32_dec(V_SEED, raw, sizeof raw, &n), NKEY_OK);
    assert_int_equal(n, 36);
    assert_int_equal(raw[0], 0x95);
    assert_int_equal(raw[1], 0x00);
}

static void test_vector_signature(void **state)
{
    uint8_t sig[NKEY_SIG_LEN], mine[NKEY_SIG_LEN];
    uint8_t pub[NKEY_KEY_LEN], priv[NKEY_KEY_LEN];
    char nonce[] = V_NONCE;

    (void)state;
    assert_int_equal(nkey_sig_decode(V_SIG_URL, strlen(V_SIG_URL), sig),
                     NKEY_OK);
    assert_int_equal(nkey_verify(V_PUB, nonce, strlen(nonce), sig), NKEY_OK);
    /* Ed25519 is deterministic: signing gives the same bytes. */
    assert_int_equal(nkey_sign(V_SEED, nonce, strlen(nonce), mine), NKEY_OK);
    assert_memory_equal(mine, sig, NKEY_SIG_LEN);
    assert_int_equal(nkey_keypair_from_seed(V_SEED, pub, priv), NKEY_OK);
    assert_int_equal(nkey_sign_raw(priv, nonce, strlen(nonce), mine),
                     NKEY_OK);
    assert_memory_equal(mine, sig, NKEY_SIG_LEN);
    assert_int_equal(nkey_verify_raw(pub, nonce, strlen(nonce), sig),
                     NKEY_OK);

    /* Every single-bit flip of the signature fails. */
    for (size_t bit = 0; bit < NKEY_SIG_LEN * 8; bit++) {
        memcpy(mine, sig, NKEY_SIG_LEN);
        mine[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        assert_int_equal(nkey_verify(V_PUB, nonce, strlen(nonce), mine),
                         NKEY_BAD_SIGNATURE);
    }
    /* So does a flipped bit of the message, or a shorter message. */
    nonce[3] ^= 0x01;
    assert_int_equal(nkey_verify(V_PUB, nonce, strlen(nonce), sig),
                     NKEY_BAD_SIGNATURE);
    nonce[3] ^= 0x01;
    assert_int_equal(nkey_verify(V_PUB, nonce, strlen(nonce) - 1, sig),
                     NKEY_BAD_SIGNATURE);
    /* The signature must be over the nonce's ASCII, not its decoding. */
    {
        uint8_t dec[16];
        size_t n;
        assert_int_equal(nkey_b64url_decode(nonce, strlen(nonce), dec,
                                            sizeof dec, &n),
                         NKEY_OK);
        assert_int_equal(nkey_verify(V_PUB, dec, n, sig), NKEY_BAD_SIGNATURE);
    }
    /* The account key with the same bytes is not a user key. */
    assert_int_equal(nkey_verify(V_ACCOUNT_PUB, nonce, strlen(nonce), sig),
                     NKEY_BAD_PREFIX);
    /* The standard-base64 form of the signature is the same signature. */
    assert_int_equal(nkey_sig_decode(V_SIG_STD, strlen(V_SIG_STD), mine),
                     NKEY_OK);
    assert_int_equal(nkey_verify(V_PUB, nonce, strlen(nonce), mine),
                     NKEY_OK);
}

/* ------------------------------------------------------------------------ */
/* Rejections. */

struct reject {
    const char *in;
    int code;
    const char *why;
};

static void test_pub_rejects(void **state)
{
    /* Built from V_PUB by editing single chars. */
    static char crc_last[] = V_PUB;
    static char crc_mid[] = V_PUB;
    static char lower[] = V_PUB;
    static char pad_end[] = V_PUB;
    static char bad_digit[] = V_PUB;
    static char bad_eight[] = V_PUB;
    static char long_[] = V_PUB "A";
    static char padded[] = V_PUB "========";
    uint8_t pub[NKEY_KEY_LEN];

    (void)state;
    crc_last[55] = crc_last[55] == 'A' ? 'B' : 'A';
    crc_mid[20] = crc_mid[20] == 'A' ? 'B' : 'A';
    lower[0] = 'u';
    pad_end[55] = '=';
    bad_digit[30] = '1';
    bad_eight[30] = '8';
    const struct reject cases[] = {
        { crc_last, NKEY_BAD_CRC, "last char changed" },
        { crc_mid, NKEY_BAD_CRC, "key char changed" },
        { V_ACCOUNT_PUB, NKEY_BAD_PREFIX, "account key as user" },
        { V_SEED, NKEY_BAD_LENGTH, "seed as public key" },
        { V_ACCOUNT_SEED, NKEY_BAD_LENGTH, "account seed" },
        { "UD466L6EBCM3YY5HEGHJANNTN4LSKTSUXTH7RILHCKEQMQHTBNLHJJX",
          NKEY_BAD_LENGTH, "55 chars" },
        { long_, NKEY_BAD_LENGTH, "57 chars" },
        { padded, NKEY_BAD_LENGTH, "padding appended" },
        { "", NKEY_BAD_LENGTH, "empty" },
        { "U", NKEY_BAD_LENGTH, "one char" },
        { lower, NKEY_BAD_ENCODING, "lower-case prefix" },
        { "ud466l6ebcm3yy5heghjanntn4lsktsuxth7rilhckeqmqhtbnlhjjxt",
          NKEY_BAD_ENCODING, "all lower-case" },
        { pad_end, NKEY_BAD_ENCODING, "'=' inside 56 chars" },
        { bad_digit, NKEY_BAD_ENCODING, "'1' not in alphabet" },
        { bad_eight, NKEY_BAD_ENCODING, "'8' not in alphabet" },
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = nkey_user_pub_decode(cases[i].in, pub);
        if (rc != cases[i].code) {
            fail_msg("%s: got %s, want %s", cases[i].why,
                     nkey_code_name(rc), nkey_code_name(cases[i].code));
        }
        uint8_t sig[NKEY_SIG_LEN] = { 0 };
        assert_int_equal(nkey_verify(cases[i].in, "x", 1, sig),
                         cases[i].code);
    }
    assert_int_equal(nkey_user_pub_decode(NULL, pub), NKEY_BAD_LENGTH);
    /* An embedded NUL shortens the string. */
    assert_int_equal(nkey_decode_pub(V_PUB "\0", 57, NKEY_PREFIX_USER, pub),
                     NKEY_BAD_LENGTH);
    {
        char nul[] = V_PUB;
        nul[10] = '\0';
        assert_int_equal(nkey_decode_pub(nul, 56, NKEY_PREFIX_USER, pub),
                         NKEY_BAD_ENCODING);
    }
    /* The generic decoder accepts the account key as an account key. */
    assert_int_equal(nkey_decode_pub(V_ACCOUNT_PUB, 56, NKEY_PREFIX_ACCOUNT,
                                     pub),
                     NKEY_OK);
}

static void test_seed_rejects(void **state)
{
    static char crc_last[] = V_SEED;
    static char lower[] = V_SEED;
    static char low_bits[] = V_SEED;
    static char bad_alpha[] = V_SEED;
    static char padded[] = V_SEED "======";
    uint8_t seed[NKEY_KEY_LEN];

    (void)state;
    crc_last[56] = crc_last[56] == 'A' ? 'B' : 'A';
    lower[1] = 'u';
    /* 58 chars carry 2 unused bits: 'Y' (24) -> 'Z' (25) sets one. */
    assert_int_equal(low_bits[57], 'Y');
    low_bits[57] = 'Z';
    bad_alpha[40] = '0';
    const struct reject cases[] = {
        { crc_last, NKEY_BAD_CRC, "CRC char changed" },
        { V_ACCOUNT_SEED, NKEY_BAD_PREFIX, "account seed as user" },
        { V_PUB, NKEY_BAD_LENGTH, "public key as seed" },
        { padded, NKEY_BAD_LENGTH, "padding appended" },
        { "SUAKYRHVIOREXV7EUZTBHUHL7NUMHPMAS7QMDU3GTIUWEI5LDNOXD43IZ",
          NKEY_BAD_LENGTH, "57 chars" },
        { "", NKEY_BAD_LENGTH, "empty" },
        { lower, NKEY_BAD_ENCODING, "lower-case" },
        { low_bits, NKEY_BAD_ENCODING, "unused bits set" },
        { bad_alpha, NKEY_BAD_ENCODING, "'0' not in alphabet" },
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = nkey_user_seed_decode(cases[i].in, seed);
        if (rc != cases[i].code) {
            fail_msg("%s: got %s, want %s", cases[i].why,
                     nkey_code_name(rc), nkey_code_name(cases[i].code));
        }
        uint8_t sig[NKEY_SIG_LEN];
        assert_int_equal(nkey_sign(cases[i].in, "x", 1, sig), cases[i].code);
        assert_int_equal(nkey_keypair_from_seed(cases[i].in, NULL, NULL),
                         cases[i].code);
    }
    assert_int_equal(nkey_user_seed_decode(NULL, seed), NKEY_BAD_LENGTH);

    /* Seed type bits wrong, or b2's low bits set, with a valid CRC. */
    {
        uint8_t raw[36];
        size_t n;
        char str[NKEY_SEED_SIZE];
        uint16_t crc;

        assert_int_equal(b32_dec(V_SEED, raw, sizeof raw, &n), NKEY_OK);
        raw[1] |= 0x01;
        crc = nkey_crc16(raw, 34);
        raw[34] = (uint8_t)crc;
        raw[35] = (uint8_t)(crc >> 8);
        assert_int_equal(nkey_base32_encode(raw, 36, str, sizeof str),
                         NKEY_OK);
        assert_int_equal(nkey_user_seed_decode(str, seed), NKEY_BAD_PREFIX);

        assert_int_equal(b32_dec(V_SEED, raw, sizeof raw, &n), NKEY_OK);
        raw[0] = (uint8_t)(NKEY_PREFIX_PRIVATE | (raw[0] & 7));
        crc = nkey_crc16(raw, 34);
        raw[34] = (uint8_t)crc;
        raw[35] = (uint8_t)(crc >> 8);
        assert_int_equal(nkey_base32_encode(raw, 36, str, sizeof str),
                         NKEY_OK);
        assert_int_equal(nkey_user_seed_decode(str, seed), NKEY_BAD_PREFIX);
    }
}

static void test_prefixes(void **state)
{
    static const struct {
        uint8_t prefix;
        char pub0;
        char seed1;
    } types[] = {
        { NKEY_PREFIX_ACCOUNT, 'A', 'A' }, { NKEY_PREFIX_CLUSTER, 'C', 'C' },
        { NKEY_PREFIX_SERVER, 'N', 'N' },  { NKEY_PREFIX_OPERATOR, 'O', 'O' },
        { NKEY_PREFIX_USER, 'U', 'U' },    { NKEY_PREFIX_CURVE, 'X', 'X' },
    };
    uint8_t key[NKEY_KEY_LEN], out[NKEY_KEY_LEN];
    char pub[NKEY_PUB_SIZE], seed[NKEY_SEED_SIZE];

    (void)state;
    for (size_t i = 0; i < sizeof key; i++) {
        key[i] = (uint8_t)(0xff - i);
    }
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        uint8_t p = types[i].prefix;

        assert_int_equal(nkey_encode_pub(p, key, pub), NKEY_OK);
        assert_int_equal(strlen(pub), NKEY_PUB_LEN);
        assert_int_equal(pub[0], types[i].pub0);
        assert_int_equal(nkey_decode_pub(pub, strlen(pub), p, out), NKEY_OK);
        assert_memory_equal(out, key, sizeof key);
        assert_int_equal(nkey_encode_seed(p, key, seed), NKEY_OK);
        assert_int_equal(strlen(seed), NKEY_SEED_LEN);
        assert_int_equal(seed[0], 'S');
        assert_int_equal(seed[1], types[i].seed1);
        assert_int_equal(nkey_decode_seed(seed, strlen(seed), p, out),
                         NKEY_OK);
        assert_memory_equal(out, key, sizeof key);
        /* Any other type is refused. */
        for (size_t j = 0; j < sizeof types / sizeof types[0]; j++) {
            if (j != i) {
                assert_int_equal(nkey_decode_pub(pub, strlen(pub),
                                                 types[j].prefix, out),
                                 NKEY_BAD_PREFIX);
                assert_int_equal(nkey_decode_seed(seed, strlen(seed),
                                                  types[j].prefix, out),
                                 NKEY_BAD_PREFIX);
            }
        }
    }
    /* SEED and PRIVATE are not public prefixes, nor is 0x08. */
    assert_int_equal(nkey_encode_pub(NKEY_PREFIX_SEED, key, pub),
                     NKEY_BAD_PREFIX);
    assert_int_equal(nkey_encode_pub(NKEY_PREFIX_PRIVATE, key, pub),
                     NKEY_BAD_PREFIX);
    assert_int_equal(nkey_encode_seed(0x08, key, seed), NKEY_BAD_PREFIX);
    assert_int_equal(nkey_decode_pub(V_PUB, 56, NKEY_PREFIX_SEED, out),
                     NKEY_BAD_PREFIX);
}

/* ------------------------------------------------------------------------ */
/* Weak keys. */

static void test_weak_ed25519_keys(void **state)
{
    /* y values of the small-order points (see nkey.c), then y = p, p + 1
     * and 2^255 - 1 (non-canonical). */
    static const char *const weak_hex[] = {
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    };
    uint8_t key[NKEY_KEY_LEN], out[NKEY_KEY_LEN];
    uint8_t forged[NKEY_SIG_LEN];
    char pub[NKEY_PUB_SIZE];

    (void)state;
    for (size_t i = 0; i < sizeof weak_hex / sizeof weak_hex[0]; i++) {
        for (int sign = 0; sign < 2; sign++) {
            hex_decode(weak_hex[i], key, sizeof key);
            key[31] |= (uint8_t)(sign << 7);
            assert_true(nkey_ed25519_pub_is_weak(key));
            assert_int_equal(nkey_user_pub_encode(key, pub), NKEY_OK);
            /* The encoding is fine; the key is not. */
            assert_int_equal(nkey_decode_pub(pub, strlen(pub),
                                             NKEY_PREFIX_USER, out),
                             NKEY_OK);
            assert_int_equal(nkey_user_pub_decode(pub, out), NKEY_WEAK_KEY);
            /* The classic forgery (R = identity, S = 0) is refused. */
            memset(forged, 0, sizeof forged);
            forged[0] = 1;
            assert_int_equal(nkey_verify(pub, "any", 3, forged),
                             NKEY_WEAK_KEY);
            assert_int_equal(nkey_verify_raw(key, "any", 3, forged),
                             NKEY_WEAK_KEY);
        }
    }
    /* y = p - 2 is canonical and not small order: not weak. */
    hex_decode("ebffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
               key, sizeof key);
    assert_false(nkey_ed25519_pub_is_weak(key));
    hex_decode(V_PUB32, key, sizeof key);
    assert_false(nkey_ed25519_pub_is_weak(key));
}

/* ------------------------------------------------------------------------ */
/* Generation and signing round trips. */

static void test_generate_round_trip(void **state)
{
    char seed[NKEY_SEED_SIZE], pub[NKEY_PUB_SIZE];
    char seed2[NKEY_SEED_SIZE], pub2[NKEY_PUB_SIZE];
    char again[NKEY_SEED_SIZE];
    uint8_t k1[NKEY_KEY_LEN], k2[NKEY_KEY_LEN], priv[NKEY_KEY_LEN];
    uint8_t sig[NKEY_SIG_LEN];
    uint8_t msg[300];

    (void)state;
    assert_int_equal(nkey_generate_user(seed, pub), NKEY_OK);
    assert_int_equal(nkey_generate_user(seed2, pub2), NKEY_OK);
    assert_string_not_equal(seed, seed2);
    assert_string_not_equal(pub, pub2);
    assert_int_equal(strlen(seed), NKEY_SEED_LEN);
    assert_int_equal(strlen(pub), NKEY_PUB_LEN);
    assert_memory_equal(seed, "SU", 2);
    assert_int_equal(pub[0], 'U');

    assert_int_equal(nkey_user_pub_decode(pub, k1), NKEY_OK);
    assert_int_equal(nkey_keypair_from_seed(seed, k2, priv), NKEY_OK);
    assert_memory_equal(k1, k2, NKEY_KEY_LEN);
    assert_int_equal(nkey_user_seed_encode(priv, again), NKEY_OK);
    assert_string_equal(again, seed);

    for (size_t len = 0; len < sizeof msg; len += 37) {
        for (size_t i = 0; i < len; i++) {
            msg[i] = (uint8_t)(i ^ len);
        }
        assert_int_equal(nkey_sign(seed, msg, len, sig), NKEY_OK);
        assert_int_equal(nkey_verify(pub, msg, len, sig), NKEY_OK);
        assert_int_equal(nkey_verify(pub2, msg, len, sig),
                         NKEY_BAD_SIGNATURE);
    }
    /* The empty message, with a NULL pointer. */
    assert_int_equal(nkey_sign(seed, NULL, 0, sig), NKEY_OK);
    assert_int_equal(nkey_verify(pub, "", 0, sig), NKEY_OK);
    assert_int_equal(nkey_verify(pub, NULL, 0, sig), NKEY_OK);
}

/* ------------------------------------------------------------------------ */
/* X25519 box keys. */

static void test_x25519(void **state)
{
    uint8_t priv[NKEY_KEY_LEN], pub[NKEY_KEY_LEN], pub2[NKEY_KEY_LEN];
    uint8_t priv2[NKEY_KEY_LEN], out[NKEY_KEY_LEN];
    char box[NKEY_BOX_PUB_SIZE];

    (void)state;
    assert_int_equal(nkey_x25519_generate(priv, pub), NKEY_OK);
    assert_int_equal(nkey_x25519_generate(priv2, pub2), NKEY_OK);
    assert_memory_not_equal(pub, pub2, NKEY_KEY_LEN);
    assert_int_equal(nkey_x25519_pub_from_priv(priv, out), NKEY_OK);
    assert_memory_equal(out, pub, NKEY_KEY_LEN);
    assert_int_equal(nkey_box_pub_encode(pub, box), NKEY_OK);
    assert_int_equal(strlen(box), NKEY_BOX_PUB_LEN);
    assert_int_equal(box[43], '=');
    assert_int_equal(nkey_box_pub_decode(box, strlen(box), out), NKEY_OK);
    assert_memory_equal(out, pub, NKEY_KEY_LEN);
    assert_true(nkey_box_pub_valid(box));

    /* Known answer. */
    for (size_t i = 0; i < sizeof priv; i++) {
        priv[i] = (uint8_t)i;
    }
    assert_int_equal(nkey_x25519_pub_from_priv(priv, pub), NKEY_OK);
    assert_int_equal(nkey_box_pub_encode(pub, box), NKEY_OK);
    assert_string_equal(box, X_PUB_OF_0_31);
}

static void test_box_pub_rejects(void **state)
{
    static char url[] = X_PUB_OF_0_31;
    static char bits[] = X_PUB_OF_0_31;
    static char tab[] = X_PUB_OF_0_31;
    uint8_t out[NKEY_KEY_LEN];

    (void)state;
    url[1] = '-';  /* url alphabet */
    /* '8' (60) before '=' has its two unused bits clear; '9' sets one. */
    assert_int_equal(bits[42], '8');
    bits[42] = '9';
    tab[0] = '\t';
    const struct reject cases[] = {
        { "j0DFrbaPJWJK5bIU6nZ6bslNgp09e14a0bpvPiE4KF8", NKEY_BAD_LENGTH,
          "no padding" },
        { "j0DFrbaPJWJK5bIU6nZ6bslNgp09e14a0bpvPiE4KF8==", NKEY_BAD_LENGTH,
          "45 chars" },
        { "j0DFrbaPJWJK5bIU6nZ6bslNgp09e14a0bpvPiE4KA==", NKEY_BAD_LENGTH,
          "31 bytes" },
        { "j0DFrbaPJWJK5bIU6nZ6bslNgp09e14a0bpvPiE4KF8A", NKEY_BAD_LENGTH,
          "33 bytes" },
        { "", NKEY_BAD_LENGTH, "empty" },
        { url, NKEY_BAD_ENCODING, "url alphabet" },
        { bits, NKEY_BAD_ENCODING, "unused bits" },
        { tab, NKEY_BAD_ENCODING, "whitespace" },
        { "j0DFrbaPJWJK5bIU6nZ6bslNgp09e14a0bpvPiE4K=8=", NKEY_BAD_ENCODING,
          "'=' inside" },
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = nkey_box_pub_decode(cases[i].in, strlen(cases[i].in), out);
        if (rc != cases[i].code) {
            fail_msg("%s: got %s, want %s", cases[i].why,
                     nkey_code_name(rc), nkey_code_name(cases[i].code));
        }
        assert_false(nkey_box_pub_valid(cases[i].in));
    }
    for (size_t i = 0; i < sizeof x_weak / sizeof x_weak[0]; i++) {
        int rc = nkey_box_pub_decode(x_weak[i], strlen(x_weak[i]), out);
        if (rc != NKEY_WEAK_KEY) {
            fail_msg("weak box_pub %s: %s", x_weak[i], nkey_code_name(rc));
        }
        assert_false(nkey_box_pub_valid(x_weak[i]));
    }
    assert_false(nkey_box_pub_valid(NULL));
    /* An Ed25519 user key is not a box key. */
    assert_false(nkey_box_pub_valid(V_PUB));
}

static void test_code_names(void **state)
{
    static const char *const want[] = {
        "ok",       "bad_length",    "bad_encoding", "bad_crc",  "bad_prefix",
        "weak_key", "bad_signature", "no_space",     "internal",
    };

    (void)state;
    for (int i = 0; i < (int)(sizeof want / sizeof want[0]); i++) {
        assert_string_equal(nkey_code_name(i), want[i]);
    }
    assert_string_equal(nkey_code_name(-1), "unknown");
    assert_string_equal(nkey_code_name(NKEY_INTERNAL + 1), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc16),
        cmocka_unit_test(test_base32_vectors),
        cmocka_unit_test(test_base32_round_trip),
        cmocka_unit_test(test_base32_rejects),
        cmocka_unit_test(test_base64_vectors),
        cmocka_unit_test(test_base64_alphabets),
        cmocka_unit_test(test_base64_rejects),
        cmocka_unit_test(test_sig_decode),
        cmocka_unit_test(test_vector_seed_to_pub),
        cmocka_unit_test(test_vector_decode),
        cmocka_unit_test(test_vector_signature),
        cmocka_unit_test(test_pub_rejects),
        cmocka_unit_test(test_seed_rejects),
        cmocka_unit_test(test_prefixes),
        cmocka_unit_test(test_weak_ed25519_keys),
        cmocka_unit_test(test_generate_round_trip),
        cmocka_unit_test(test_x25519),
        cmocka_unit_test(test_box_pub_rejects),
        cmocka_unit_test(test_code_names),
    };

    return cmocka_run_group_tests_name("nkey", tests, NULL, NULL);
}
