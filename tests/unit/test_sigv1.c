/* Unit tests of src/auth/sigv1.h: the UNIBUS-ED25519 header parser (accept
 * and reject tables, whitespace rules, limits), the string to sign, signing,
 * and verification (known answer, tampering, wrong keys, skew window). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "auth/nkey.h"
#include "auth/sigv1.h"

/* ------------------------------------------------------------------------ */
/* Vectors. */

/* The NATS_WIRE.md 4.2 user key. */
#define V_SEED "SUAKYRHVIOREXV7EUZTBHUHL7NUMHPMAS7QMDU3GTIUWEI5LDNOXD43IZY"
#define V_PUB "UD466L6EBCM3YY5HEGHJANNTN4LSKTSUXTH7RILHCKEQMQHTBNLHJJXT"

/* Known answer, computed independently with Python (hashlib + the
 * cryptography package) from DESIGN.md 4. */
#define K_METHOD "POST"
#define K_PATH "/v1/rooms?x=1&y=%2F"
#define K_BODY "{\"name\":\"ops\"}"
#define K_TS 1700000000
#define K_TS_STR "1700000000"
#define K_NONCE "abcdefghijklmnop0123"
#define K_HANDLE "alice"
#define K_STS                                                          \
    "UNIBUS-ED25519\nPOST\n/v1/rooms?x=1&y=%2F\n1700000000\n"          \
    "abcdefghijklmnop0123\n"                                           \
    "6dc2bc1e36b74796993a72ea3ef9c50c2c140047f3ae887488a86222ec557842"
#define K_SIG                                                          \
    "2tVkdHbVZGJH5tmKyVqeAEqaENmS_SDDHGTZC6OMu-TxBVO4DtxeR2LQ0WDhWuIXe" \
    "WEmt8sBX1GdgIQwCFf_BA"
#define EMPTY_SHA256 \
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

#define HDR(h, t, n, s)                                                \
    "UNIBUS-ED25519 handle=\"" h "\",ts=\"" t "\",nonce=\"" n "\",sig=\"" s \
    "\""
#define K_HEADER HDR(K_HANDLE, K_TS_STR, K_NONCE, K_SIG)

#define P_H "handle=\"" K_HANDLE "\""
#define P_T "ts=\"" K_TS_STR "\""
#define P_N "nonce=\"" K_NONCE "\""
#define P_S "sig=\"" K_SIG "\""
#define SCHEME "UNIBUS-ED25519 "

#define A64 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

/* ------------------------------------------------------------------------ */
/* Helpers. */

static int parse(const char *s, struct sigv1_auth *a)
{
    return sigv1_parse(s, strlen(s), a);
}

static void expect_code(const char *what, int got, int want)
{
    if (got != want) {
        fail_msg("%s: got %s, want %s", what, sigv1_code_name(got),
                 sigv1_code_name(want));
    }
}

/* Field-wise comparison (the struct has padding). */
static void assert_auth_equal(const struct sigv1_auth *a,
                              const struct sigv1_auth *b)
{
    assert_string_equal(a->handle, b->handle);
    assert_string_equal(a->nonce, b->nonce);
    assert_int_equal(a->ts, b->ts);
    assert_memory_equal(a->sig, b->sig, NKEY_SIG_LEN);
}

/* The header of the known answer, parsed. */
static void kat_auth(struct sigv1_auth *a)
{
    assert_int_equal(parse(K_HEADER, a), SIGV1_OK);
}

/* ------------------------------------------------------------------------ */
/* Parser. */

static void test_parse_canonical(void **state)
{
    struct sigv1_auth a;
    uint8_t sig[NKEY_SIG_LEN];

    (void)state;
    memset(&a, 0x55, sizeof a);
    assert_int_equal(parse(K_HEADER, &a), SIGV1_OK);
    assert_string_equal(a.handle, K_HANDLE);
    assert_string_equal(a.nonce, K_NONCE);
    assert_int_equal(a.ts, K_TS);
    assert_int_equal(nkey_sig_decode(K_SIG, strlen(K_SIG), sig), NKEY_OK);
    assert_memory_equal(a.sig, sig, NKEY_SIG_LEN);
    /* The value need not be NUL-terminated: parse a prefix of a longer
     * buffer. */
    {
        char buf[sizeof K_HEADER + 8];
        memcpy(buf, K_HEADER, sizeof K_HEADER - 1);
        memcpy(buf + sizeof K_HEADER - 1, ",x=\"y\"", 7);
        assert_int_equal(sigv1_parse(buf, sizeof K_HEADER - 1, &a),
                         SIGV1_OK);
        assert_int_equal(sigv1_parse(buf, strlen(buf), &a),
                         SIGV1_BAD_AUTH_HEADER);
    }
}

/* Every accepted spelling parses to the same fields as K_HEADER. */
static void test_parse_accepts(void **state)
{
    static const char *const ok[] = {
        K_HEADER,
        SCHEME P_S "," P_N "," P_T "," P_H,          /* any order */
        SCHEME P_T "," P_H "," P_S "," P_N,
        "UNIBUS-ED25519    " P_H "," P_T "," P_N "," P_S, /* several SP */
        SCHEME P_H ", " P_T ",  " P_N ", " P_S,      /* OWS after comma */
        SCHEME P_H " ," P_T "  ," P_N " ," P_S,      /* OWS before comma */
        SCHEME P_H "\t,\t" P_T " \t, \t" P_N "," P_S, /* tabs around comma */
        "  " K_HEADER,                               /* leading OWS */
        "\t" K_HEADER " \t ",                        /* trailing OWS */
    };
    struct sigv1_auth want, a;

    (void)state;
    kat_auth(&want);
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        memset(&a, 0, sizeof a);
        expect_code(ok[i], parse(ok[i], &a), SIGV1_OK);
        assert_auth_equal(&a, &want);
    }
}

/* Field values at their limits. */
static void test_parse_field_limits(void **state)
{
    static const struct {
        const char *in;
        const char *handle;
        int64_t ts;
        const char *nonce;
    } ok[] = {
        { HDR("a", "0", "0123456789abcdef", K_SIG), "a", 0,
          "0123456789abcdef" },
        { HDR(A64, "999999999999", A64, K_SIG), A64, 999999999999, A64 },
        { HDR("0", "1", "ABCDEFGHIJKLMNOP", K_SIG), "0", 1,
          "ABCDEFGHIJKLMNOP" },
        { HDR("a-_9", "10", "-_-_-_-_-_-_-_-_", K_SIG), "a-_9", 10,
          "-_-_-_-_-_-_-_-_" },
    };
    struct sigv1_auth a;

    (void)state;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        expect_code(ok[i].in, parse(ok[i].in, &a), SIGV1_OK);
        assert_string_equal(a.handle, ok[i].handle);
        assert_int_equal(a.ts, ok[i].ts);
        assert_string_equal(a.nonce, ok[i].nonce);
    }
}

static void test_parse_rejects(void **state)
{
    static const struct {
        const char *in;
        int code;
    } bad[] = {
        /* Missing. */
        { "", SIGV1_MISSING_AUTH },
        { "   ", SIGV1_MISSING_AUTH },
        { "\t \t", SIGV1_MISSING_AUTH },
        /* Scheme. */
        { "Bearer abc", SIGV1_BAD_AUTH_HEADER },
        { "Basic dXNlcjpwYXNz", SIGV1_BAD_AUTH_HEADER },
        { "unibus-ed25519 " P_H "," P_T "," P_N "," P_S,
          SIGV1_BAD_AUTH_HEADER },
        { "Unibus-Ed25519 " P_H "," P_T "," P_N "," P_S,
          SIGV1_BAD_AUTH_HEADER },
        { "UNIBUS-ED25519", SIGV1_BAD_AUTH_HEADER },
        { "UNIBUS-ED25519 ", SIGV1_BAD_AUTH_HEADER },
        { "UNIBUS-ED25519" P_H "," P_T "," P_N "," P_S,
          SIGV1_BAD_AUTH_HEADER },
        { "UNIBUS-ED25519\t" P_H "," P_T "," P_N "," P_S,
          SIGV1_BAD_AUTH_HEADER },
        { "UNIBUS-ED25519X " P_H "," P_T "," P_N "," P_S,
          SIGV1_BAD_AUTH_HEADER },
        { "UNIBUS-ED255 " P_H "," P_T "," P_N "," P_S,
          SIGV1_BAD_AUTH_HEADER },
        { "UNIBUS-ED25519 abcdef==", SIGV1_BAD_AUTH_HEADER }, /* token68 */
        /* Duplicates. */
        { K_HEADER "," P_H, SIGV1_BAD_AUTH_HEADER },
        { K_HEADER ",ts=\"1700000001\"", SIGV1_BAD_AUTH_HEADER },
        { K_HEADER "," P_N, SIGV1_BAD_AUTH_HEADER },
        { K_HEADER "," P_S, SIGV1_BAD_AUTH_HEADER },
        { SCHEME P_H "," P_H "," P_T "," P_N, SIGV1_BAD_AUTH_HEADER },
        /* Missing params. */
        { SCHEME P_T "," P_N "," P_S, SIGV1_BAD_AUTH_HEADER },
        { SCHEME P_H "," P_N "," P_S, SIGV1_BAD_AUTH_HEADER },
        { SCHEME P_H "," P_T "," P_S, SIGV1_BAD_AUTH_HEADER },
        { SCHEME P_H "," P_T "," P_N, SIGV1_BAD_AUTH_HEADER },
        /* Extra or unknown params. */
        { K_HEADER ",realm=\"x\"", SIGV1_BAD_AUTH_HEADER },
        { SCHEME "foo=\"bar\"", SIGV1_BAD_AUTH_HEADER },
        { SCHEME "Handle=\"alice\"," P_T "," P_N "," P_S,
          SIGV1_BAD_AUTH_HEADER },
        { SCHEME "handle2=\"alice\"," P_T "," P_N "," P_S,
          SIGV1_BAD_AUTH_HEADER },
        { SCHEME "=\"alice\"," P_T "," P_N "," P_S, SIGV1_BAD_AUTH_HEADER },
        /* Quoting. */
        { SCHEME "handle=alice," P_T "," P_N "," P_S, SIGV1_BAD_AUTH_HEADER },
        { SCHEME "handle='alice'," P_T "," P_N "," P_S,
          SIGV1_BAD_AUTH_HEADER },
        { SCHEME "handle=\"al\\\"ice\"," P_T "," P_N "," P_S,
          SIGV1_BAD_AUTH_HEADER }, /* no quoted-pair */
        { SCHEME P_H "," P_T "," P_N ",sig=\"" K_SIG, SIGV1_BAD_AUTH_HEADER },
        { SCHEME P_H "x," P_T "," P_N "," P_S, SIGV1_BAD_AUTH_HEADER },
        { SCHEME "handle," P_T "," P_N "," P_S, SIGV1_BAD_AUTH_HEADER },
        /* Whitespace not allowed. */
        { SCHEME "handle =\"alice\"," P_T "," P_N "," P_S,
          SIGV1_BAD_AUTH_HEADER },
        { SCHEME "handle= \"alice\"," P_T "," P_N "," P_S,
          SIGV1_BAD_AUTH_HEADER },
        { SCHEME P_H "\n," P_T "," P_N "," P_S, SIGV1_BAD_AUTH_HEADER },
        { SCHEME P_H "\r\n ," P_T "," P_N "," P_S, SIGV1_BAD_AUTH_HEADER },
        /* Separators. */
        { K_HEADER ",", SIGV1_BAD_AUTH_HEADER },
        { K_HEADER ", ", SIGV1_BAD_AUTH_HEADER },
        { SCHEME "," P_H "," P_T "," P_N "," P_S, SIGV1_BAD_AUTH_HEADER },
        { SCHEME P_H ",," P_T "," P_N "," P_S, SIGV1_BAD_AUTH_HEADER },
        { SCHEME P_H " " P_T "," P_N "," P_S, SIGV1_BAD_AUTH_HEADER },
        { SCHEME P_H ";" P_T "," P_N "," P_S, SIGV1_BAD_AUTH_HEADER },
        /* Handle. */
        { HDR("Alice", K_TS_STR, K_NONCE, K_SIG), SIGV1_BAD_HANDLE },
        { HDR("-alice", K_TS_STR, K_NONCE, K_SIG), SIGV1_BAD_HANDLE },
        { HDR("_alice", K_TS_STR, K_NONCE, K_SIG), SIGV1_BAD_HANDLE },
        { HDR("", K_TS_STR, K_NONCE, K_SIG), SIGV1_BAD_HANDLE },
        { HDR(A64 "a", K_TS_STR, K_NONCE, K_SIG), SIGV1_BAD_HANDLE },
        { HDR("a b", K_TS_STR, K_NONCE, K_SIG), SIGV1_BAD_HANDLE },
        { HDR("a.b", K_TS_STR, K_NONCE, K_SIG), SIGV1_BAD_HANDLE },
        { HDR("al\tice", K_TS_STR, K_NONCE, K_SIG), SIGV1_BAD_HANDLE },
        { HDR("\xc3\xa9t\xc3\xa9", K_TS_STR, K_NONCE, K_SIG),
          SIGV1_BAD_HANDLE },
        /* Timestamp. */
        { HDR(K_HANDLE, "", K_NONCE, K_SIG), SIGV1_BAD_TIMESTAMP },
        { HDR(K_HANDLE, "-1", K_NONCE, K_SIG), SIGV1_BAD_TIMESTAMP },
        { HDR(K_HANDLE, "+1", K_NONCE, K_SIG), SIGV1_BAD_TIMESTAMP },
        { HDR(K_HANDLE, "01", K_NONCE, K_SIG), SIGV1_BAD_TIMESTAMP },
        { HDR(K_HANDLE, "00", K_NONCE, K_SIG), SIGV1_BAD_TIMESTAMP },
        { HDR(K_HANDLE, "1000000000000", K_NONCE, K_SIG),
          SIGV1_BAD_TIMESTAMP },
        { HDR(K_HANDLE, "12a", K_NONCE, K_SIG), SIGV1_BAD_TIMESTAMP },
        { HDR(K_HANDLE, " 1", K_NONCE, K_SIG), SIGV1_BAD_TIMESTAMP },
        { HDR(K_HANDLE, "1 ", K_NONCE, K_SIG), SIGV1_BAD_TIMESTAMP },
        { HDR(K_HANDLE, "1.0", K_NONCE, K_SIG), SIGV1_BAD_TIMESTAMP },
        { HDR(K_HANDLE, "0x10", K_NONCE, K_SIG), SIGV1_BAD_TIMESTAMP },
        /* Nonce. */
        { HDR(K_HANDLE, K_TS_STR, "abcdefghijklmno", K_SIG), SIGV1_BAD_NONCE },
        { HDR(K_HANDLE, K_TS_STR, A64 "a", K_SIG), SIGV1_BAD_NONCE },
        { HDR(K_HANDLE, K_TS_STR, "", K_SIG), SIGV1_BAD_NONCE },
        { HDR(K_HANDLE, K_TS_STR, "abcdefghijklmno+", K_SIG),
          SIGV1_BAD_NONCE },
        { HDR(K_HANDLE, K_TS_STR, "abcdefghijklmno=", K_SIG),
          SIGV1_BAD_NONCE },
        { HDR(K_HANDLE, K_TS_STR, "abcdefghijklmno ", K_SIG),
          SIGV1_BAD_NONCE },
        { HDR(K_HANDLE, K_TS_STR, "abcdefghijklmno\xc3\xa9", K_SIG),
          SIGV1_BAD_NONCE },
        /* Signature encoding. */
        { HDR(K_HANDLE, K_TS_STR, K_NONCE, ""),
          SIGV1_BAD_SIGNATURE_ENCODING },
        { HDR(K_HANDLE, K_TS_STR, K_NONCE, "abc"),
          SIGV1_BAD_SIGNATURE_ENCODING },
        { HDR(K_HANDLE, K_TS_STR, K_NONCE, K_SIG "=="),
          SIGV1_BAD_SIGNATURE_ENCODING }, /* url alphabet padded */
        { HDR(K_HANDLE, K_TS_STR, K_NONCE, K_SIG "A"),
          SIGV1_BAD_SIGNATURE_ENCODING }, /* 87 chars */
        /* Precedence: structure, then handle, ts, nonce, sig. */
        { HDR("Alice", "x", "short", "") ",", SIGV1_BAD_AUTH_HEADER },
        { HDR("Alice", "x", "short", ""), SIGV1_BAD_HANDLE },
        { HDR(K_HANDLE, "x", "short", ""), SIGV1_BAD_TIMESTAMP },
        { HDR(K_HANDLE, K_TS_STR, "short", ""), SIGV1_BAD_NONCE },
    };
    struct sigv1_auth a;

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        expect_code(bad[i].in, parse(bad[i].in, &a), bad[i].code);
    }
    assert_int_equal(sigv1_parse(NULL, 0, &a), SIGV1_MISSING_AUTH);
    assert_int_equal(sigv1_parse(NULL, 10, &a), SIGV1_MISSING_AUTH);
}

/* Signature values that are not base64 of 64 bytes. */
static void test_parse_signature_encodings(void **state)
{
    char sig[NKEY_SIG_B64STD_LEN + 1];
    char hdr[SIGV1_HEADER_SIZE];
    struct sigv1_auth a, want;
    uint8_t raw[NKEY_SIG_LEN];

    (void)state;
    kat_auth(&want);
    /* Standard padded base64 is accepted (NATS does the same). */
    assert_int_equal(nkey_sig_decode(K_SIG, strlen(K_SIG), raw), NKEY_OK);
    assert_int_equal(nkey_b64std_encode(raw, sizeof raw, sig, sizeof sig),
                     NKEY_OK);
    assert_non_null(strpbrk(sig, "+/")); /* differs from the url form */
    snprintf(hdr, sizeof hdr, SCHEME P_H "," P_T "," P_N ",sig=\"%s\"", sig);
    assert_int_equal(parse(hdr, &a), SIGV1_OK);
    assert_auth_equal(&a, &want);
    /* Standard alphabet without its padding is neither form. */
    sig[NKEY_SIG_B64URL_LEN] = '\0';
    snprintf(hdr, sizeof hdr, SCHEME P_H "," P_T "," P_N ",sig=\"%s\"", sig);
    assert_int_equal(parse(hdr, &a), SIGV1_BAD_SIGNATURE_ENCODING);
    /* A bad char, and non-zero unused bits in the last char. */
    snprintf(sig, sizeof sig, "%s", K_SIG);
    sig[5] = '!';
    snprintf(hdr, sizeof hdr, SCHEME P_H "," P_T "," P_N ",sig=\"%s\"", sig);
    assert_int_equal(parse(hdr, &a), SIGV1_BAD_SIGNATURE_ENCODING);
    snprintf(sig, sizeof sig, "%s", K_SIG);
    assert_int_equal(sig[85], 'A');
    sig[85] = 'B';
    snprintf(hdr, sizeof hdr, SCHEME P_H "," P_T "," P_N ",sig=\"%s\"", sig);
    assert_int_equal(parse(hdr, &a), SIGV1_BAD_SIGNATURE_ENCODING);
    /* Base64 of 63 and 65 bytes. */
    memset(raw, 7, sizeof raw);
    assert_int_equal(nkey_b64url_encode(raw, 63, sig, sizeof sig), NKEY_OK);
    snprintf(hdr, sizeof hdr, SCHEME P_H "," P_T "," P_N ",sig=\"%s\"", sig);
    assert_int_equal(parse(hdr, &a), SIGV1_BAD_SIGNATURE_ENCODING);
    {
        uint8_t big[65] = { 0 };
        char s65[100];
        assert_int_equal(nkey_b64std_encode(big, 65, s65, sizeof s65),
                         NKEY_OK);
        snprintf(hdr, sizeof hdr, SCHEME P_H "," P_T "," P_N ",sig=\"%s\"",
                 s65);
        assert_int_equal(parse(hdr, &a), SIGV1_BAD_SIGNATURE_ENCODING);
    }
}

static void test_parse_size_and_nul(void **state)
{
    char buf[SIGV1_HEADER_MAX + 2];
    size_t base = strlen(K_HEADER);
    struct sigv1_auth a;

    (void)state;
    /* Exactly the limit (padded with trailing spaces) is fine... */
    memset(buf, ' ', sizeof buf);
    memcpy(buf, K_HEADER, base);
    assert_int_equal(sigv1_parse(buf, SIGV1_HEADER_MAX, &a), SIGV1_OK);
    /* ...one more byte is not, whitespace or not. */
    assert_int_equal(sigv1_parse(buf, SIGV1_HEADER_MAX + 1, &a),
                     SIGV1_BAD_AUTH_HEADER);
    /* Oversize params: a huge nonce value. */
    {
        char big[SIGV1_HEADER_MAX * 2];
        int n = snprintf(big, sizeof big, SCHEME P_H "," P_T ",nonce=\"");
        memset(big + n, 'a', 600);
        snprintf(big + n + 600, sizeof big - (size_t)n - 600,
                 "\"," P_S);
        assert_int_equal(parse(big, &a), SIGV1_BAD_AUTH_HEADER);
    }
    /* A NUL between params, inside a value, or at the end. */
    memcpy(buf, K_HEADER, base);
    buf[strlen(SCHEME P_H)] = '\0'; /* where the first ',' was */
    assert_int_equal(sigv1_parse(buf, base, &a), SIGV1_BAD_AUTH_HEADER);
    memcpy(buf, K_HEADER, base);
    buf[strlen(SCHEME "handle=\"al")] = '\0';
    assert_int_equal(sigv1_parse(buf, base, &a), SIGV1_BAD_HANDLE);
    memcpy(buf, K_HEADER, base);
    buf[base] = '\0';
    assert_int_equal(sigv1_parse(buf, base + 1, &a), SIGV1_BAD_AUTH_HEADER);
}

/* ------------------------------------------------------------------------ */
/* Format. */

static void test_format(void **state)
{
    char out[SIGV1_HEADER_SIZE];
    struct sigv1_auth a, b;

    (void)state;
    kat_auth(&a);
    assert_int_equal(sigv1_format(&a, out, sizeof out), SIGV1_OK);
    assert_string_equal(out, K_HEADER);
    assert_int_equal(sigv1_format(&a, out, strlen(K_HEADER)), SIGV1_NO_SPACE);
    assert_int_equal(sigv1_format(&a, out, strlen(K_HEADER) + 1), SIGV1_OK);

    /* Any accepted spelling formats back to the canonical one. */
    assert_int_equal(parse(" " SCHEME P_S " , " P_T "," P_H "," P_N, &b),
                     SIGV1_OK);
    assert_int_equal(sigv1_format(&b, out, sizeof out), SIGV1_OK);
    assert_string_equal(out, K_HEADER);

    /* Longest fields fit SIGV1_HEADER_SIZE. */
    memset(&b, 0xff, sizeof b);
    memset(b.handle, 'a', SIGV1_HANDLE_MAX);
    b.handle[SIGV1_HANDLE_MAX] = '\0';
    memset(b.nonce, 'z', SIGV1_NONCE_MAX);
    b.nonce[SIGV1_NONCE_MAX] = '\0';
    b.ts = 999999999999;
    assert_int_equal(sigv1_format(&b, out, sizeof out), SIGV1_OK);
    assert_int_equal(parse(out, &a), SIGV1_OK);
    assert_auth_equal(&a, &b);

    /* Invalid fields. */
    kat_auth(&b);
    b.handle[0] = 'A';
    assert_int_equal(sigv1_format(&b, out, sizeof out), SIGV1_BAD_HANDLE);
    kat_auth(&b);
    b.ts = -1;
    assert_int_equal(sigv1_format(&b, out, sizeof out), SIGV1_BAD_TIMESTAMP);
    b.ts = 1000000000000;
    assert_int_equal(sigv1_format(&b, out, sizeof out), SIGV1_BAD_TIMESTAMP);
    kat_auth(&b);
    b.nonce[3] = '\0';
    assert_int_equal(sigv1_format(&b, out, sizeof out), SIGV1_BAD_NONCE);
    kat_auth(&b);
    memset(b.nonce, 'a', sizeof b.nonce); /* no NUL: 65 chars */
    assert_int_equal(sigv1_format(&b, out, sizeof out), SIGV1_BAD_NONCE);
}

/* ------------------------------------------------------------------------ */
/* String to sign. */

static void test_string_to_sign(void **state)
{
    char out[512];
    size_t n = 0;
    char *heap = NULL;

    (void)state;
    assert_int_equal(sigv1_string_to_sign(K_METHOD, K_PATH, K_BODY,
                                          strlen(K_BODY), K_TS, K_NONCE, out,
                                          sizeof out, &n),
                     SIGV1_OK);
    assert_string_equal(out, K_STS);
    assert_int_equal(n, strlen(K_STS));
    /* Capacity: the NUL needs room too. */
    assert_int_equal(sigv1_string_to_sign(K_METHOD, K_PATH, K_BODY,
                                          strlen(K_BODY), K_TS, K_NONCE, out,
                                          strlen(K_STS), &n),
                     SIGV1_NO_SPACE);
    assert_int_equal(sigv1_string_to_sign(K_METHOD, K_PATH, K_BODY,
                                          strlen(K_BODY), K_TS, K_NONCE, out,
                                          strlen(K_STS) + 1, NULL),
                     SIGV1_OK);
    /* malloc variant. */
    assert_int_equal(sigv1_string_to_sign_alloc(K_METHOD, K_PATH, K_BODY,
                                                strlen(K_BODY), K_TS,
                                                K_NONCE, &heap, &n),
                     SIGV1_OK);
    assert_string_equal(heap, K_STS);
    assert_int_equal(n, strlen(K_STS));
    free(heap);
    /* No body: the hash of the empty string; ts 0 prints as "0". */
    assert_int_equal(sigv1_string_to_sign("GET", "/v1/me", NULL, 0, 0,
                                          K_NONCE, out, sizeof out, &n),
                     SIGV1_OK);
    assert_string_equal(out, "UNIBUS-ED25519\nGET\n/v1/me\n0\n" K_NONCE
                             "\n" EMPTY_SHA256);
    /* Bytes of the body matter, embedded NULs included. */
    assert_int_equal(sigv1_string_to_sign("PUT", "/x", "\0", 1, 5, K_NONCE,
                                          out, sizeof out, &n),
                     SIGV1_OK);
    assert_null(strstr(out, EMPTY_SHA256));
}

static void test_string_to_sign_rejects(void **state)
{
    static const struct {
        const char *method;
        const char *path;
        int64_t ts;
        const char *nonce;
        int code;
    } bad[] = {
        { NULL, "/", 1, K_NONCE, SIGV1_BAD_REQUEST },
        { "", "/", 1, K_NONCE, SIGV1_BAD_REQUEST },
        { "GE T", "/", 1, K_NONCE, SIGV1_BAD_REQUEST },
        { "GET\n", "/", 1, K_NONCE, SIGV1_BAD_REQUEST },
        { "GET:", "/", 1, K_NONCE, SIGV1_BAD_REQUEST },
        { "ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFG", "/", 1, K_NONCE,
          SIGV1_BAD_REQUEST }, /* 33 chars */
        { "GET", NULL, 1, K_NONCE, SIGV1_BAD_REQUEST },
        { "GET", "", 1, K_NONCE, SIGV1_BAD_REQUEST },
        { "GET", "/a b", 1, K_NONCE, SIGV1_BAD_REQUEST },
        { "GET", "/a\nb", 1, K_NONCE, SIGV1_BAD_REQUEST },
        { "GET", "/a\tb", 1, K_NONCE, SIGV1_BAD_REQUEST },
        { "GET", "/a\x7f", 1, K_NONCE, SIGV1_BAD_REQUEST },
        { "GET", "/", -1, K_NONCE, SIGV1_BAD_TIMESTAMP },
        { "GET", "/", 1000000000000, K_NONCE, SIGV1_BAD_TIMESTAMP },
        { "GET", "/", INT64_MIN, K_NONCE, SIGV1_BAD_TIMESTAMP },
        { "GET", "/", 1, NULL, SIGV1_BAD_NONCE },
        { "GET", "/", 1, "short", SIGV1_BAD_NONCE },
        { "GET", "/", 1, A64 "a", SIGV1_BAD_NONCE },
        { "GET", "/", 1, "abcdefghijklmnop\n", SIGV1_BAD_NONCE },
    };
    char out[512];
    char *heap = (char *)"sentinel";

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = sigv1_string_to_sign(bad[i].method, bad[i].path, NULL, 0,
                                      bad[i].ts, bad[i].nonce, out,
                                      sizeof out, NULL);
        if (rc != bad[i].code) {
            fail_msg("case %zu: got %s, want %s", i, sigv1_code_name(rc),
                     sigv1_code_name(bad[i].code));
        }
        rc = sigv1_string_to_sign_alloc(bad[i].method, bad[i].path, NULL, 0,
                                        bad[i].ts, bad[i].nonce, &heap,
                                        NULL);
        assert_int_equal(rc, bad[i].code);
        assert_null(heap);
    }
    /* Odd but legal: tchar methods, any visible bytes in the path. */
    assert_int_equal(sigv1_string_to_sign("M-SEARCH", "*", NULL, 0, 1,
                                          K_NONCE, out, sizeof out, NULL),
                     SIGV1_OK);
    assert_int_equal(sigv1_string_to_sign("get", "/\xc3\xa9?a=\"b\"", NULL,
                                          0, 1, K_NONCE, out, sizeof out,
                                          NULL),
                     SIGV1_OK);
}

/* ------------------------------------------------------------------------ */
/* Sign and verify. */

static void test_sign_known_answer(void **state)
{
    char hdr[SIGV1_HEADER_SIZE];
    struct sigv1_auth a;

    (void)state;
    assert_int_equal(sigv1_sign(V_SEED, K_HANDLE, K_METHOD, K_PATH, K_BODY,
                                strlen(K_BODY), K_TS, K_NONCE, hdr,
                                sizeof hdr),
                     SIGV1_OK);
    assert_string_equal(hdr, K_HEADER);
    assert_int_equal(parse(hdr, &a), SIGV1_OK);
    assert_int_equal(sigv1_verify(&a, K_METHOD, K_PATH, K_BODY,
                                  strlen(K_BODY), V_PUB, K_TS,
                                  SIGV1_SKEW_DEFAULT),
                     SIGV1_OK);
    /* The signature alone, checked with nkey_verify over K_STS. */
    assert_int_equal(nkey_verify(V_PUB, K_STS, strlen(K_STS), a.sig),
                     NKEY_OK);
}

static void test_sign_rejects(void **state)
{
    char hdr[SIGV1_HEADER_SIZE];

    (void)state;
#define SIGN(seed, handle, method, path, ts, nonce, cap)                  \
    sigv1_sign((seed), (handle), (method), (path), NULL, 0, (ts), (nonce), \
               hdr, (cap))
    assert_int_equal(SIGN(V_PUB, "a", "GET", "/", 1, K_NONCE, sizeof hdr),
                     SIGV1_BAD_KEY);
    assert_int_equal(SIGN(NULL, "a", "GET", "/", 1, K_NONCE, sizeof hdr),
                     SIGV1_BAD_KEY);
    assert_int_equal(SIGN("SAAKYRHVIOREXV7EUZTBHUHL7NUMHPMAS7QMDU3GTIUWEI5LD"
                          "NOXD443AI",
                          "a", "GET", "/", 1, K_NONCE, sizeof hdr),
                     SIGV1_BAD_KEY); /* account seed */
    assert_int_equal(SIGN(V_SEED, "A", "GET", "/", 1, K_NONCE, sizeof hdr),
                     SIGV1_BAD_HANDLE);
    assert_int_equal(SIGN(V_SEED, NULL, "GET", "/", 1, K_NONCE, sizeof hdr),
                     SIGV1_BAD_HANDLE);
    assert_int_equal(SIGN(V_SEED, A64 "a", "GET", "/", 1, K_NONCE,
                          sizeof hdr),
                     SIGV1_BAD_HANDLE);
    assert_int_equal(SIGN(V_SEED, "a", "GET", "/", -1, K_NONCE, sizeof hdr),
                     SIGV1_BAD_TIMESTAMP);
    assert_int_equal(SIGN(V_SEED, "a", "GET", "/", 1000000000000, K_NONCE,
                          sizeof hdr),
                     SIGV1_BAD_TIMESTAMP);
    assert_int_equal(SIGN(V_SEED, "a", "GET", "/", 1, "bad nonce!",
                          sizeof hdr),
                     SIGV1_BAD_NONCE);
    assert_int_equal(SIGN(V_SEED, "a", "GET /", "/", 1, K_NONCE, sizeof hdr),
                     SIGV1_BAD_REQUEST);
    assert_int_equal(SIGN(V_SEED, "a", "GET", "/ x", 1, K_NONCE, sizeof hdr),
                     SIGV1_BAD_REQUEST);
    assert_int_equal(SIGN(V_SEED, "a", "GET", "/", 1, K_NONCE, 100),
                     SIGV1_NO_SPACE);
#undef SIGN
}

static void test_sign_fresh_nonce(void **state)
{
    char h1[SIGV1_HEADER_SIZE], h2[SIGV1_HEADER_SIZE];
    char nonce[SIGV1_NONCE_GEN_LEN + 1];
    struct sigv1_auth a1, a2;

    (void)state;
    assert_int_equal(sigv1_nonce_generate(nonce), SIGV1_OK);
    assert_int_equal(strlen(nonce), SIGV1_NONCE_GEN_LEN);
    assert_true(sigv1_nonce_valid(nonce, strlen(nonce)));

    assert_int_equal(sigv1_sign(V_SEED, "bob", "DELETE", "/v1/rooms/r1",
                                NULL, 0, 42, NULL, h1, sizeof h1),
                     SIGV1_OK);
    assert_int_equal(sigv1_sign(V_SEED, "bob", "DELETE", "/v1/rooms/r1",
                                NULL, 0, 42, NULL, h2, sizeof h2),
                     SIGV1_OK);
    assert_int_equal(parse(h1, &a1), SIGV1_OK);
    assert_int_equal(parse(h2, &a2), SIGV1_OK);
    assert_int_equal(strlen(a1.nonce), SIGV1_NONCE_GEN_LEN);
    assert_string_not_equal(a1.nonce, a2.nonce);
    assert_int_equal(sigv1_verify(&a1, "DELETE", "/v1/rooms/r1", NULL, 0,
                                  V_PUB, 42, 0),
                     SIGV1_OK);
    assert_int_equal(sigv1_verify(&a2, "DELETE", "/v1/rooms/r1", "", 0,
                                  V_PUB, 42, 0),
                     SIGV1_OK);
}

/* A request signed by a fresh key, and its parsed header. */
struct req {
    char seed[NKEY_SEED_SIZE];
    char pub[NKEY_PUB_SIZE];
    struct sigv1_auth a;
};

#define R_METHOD "PUT"
#define R_PATH "/v1/rooms/ops/keys/3/alice?force=1"
#define R_BODY "{\"ciphertext\":\"AAEC\"}"
#define R_TS 1800000000
#define R_NONCE "Nonce_0123456789-xyz"

static void req_make(struct req *r)
{
    char hdr[SIGV1_HEADER_SIZE];

    assert_int_equal(nkey_generate_user(r->seed, r->pub), NKEY_OK);
    assert_int_equal(sigv1_sign(r->seed, "alice", R_METHOD, R_PATH, R_BODY,
                                strlen(R_BODY), R_TS, R_NONCE, hdr,
                                sizeof hdr),
                     SIGV1_OK);
    assert_int_equal(parse(hdr, &r->a), SIGV1_OK);
}

static int verify_req(const struct sigv1_auth *a, const char *method,
                      const char *path, const char *body, const char *pub)
{
    return sigv1_verify(a, method, path, body, strlen(body), pub, R_TS,
                        SIGV1_SKEW_DEFAULT);
}

static void test_verify_tampering(void **state)
{
    struct req r;
    struct sigv1_auth t;

    (void)state;
    req_make(&r);
    assert_int_equal(verify_req(&r.a, R_METHOD, R_PATH, R_BODY, r.pub),
                     SIGV1_OK);

    /* Method, path (any byte of it, query included), body. */
    assert_int_equal(verify_req(&r.a, "POST", R_PATH, R_BODY, r.pub),
                     SIGV1_BAD_SIGNATURE);
    assert_int_equal(verify_req(&r.a, "put", R_PATH, R_BODY, r.pub),
                     SIGV1_BAD_SIGNATURE);
    assert_int_equal(verify_req(&r.a, R_METHOD, "/v1/rooms/ops/keys/3/alice",
                                R_BODY, r.pub),
                     SIGV1_BAD_SIGNATURE);
    assert_int_equal(verify_req(&r.a, R_METHOD,
                                "/v1/rooms/ops/keys/3/alice?force=2", R_BODY,
                                r.pub),
                     SIGV1_BAD_SIGNATURE);
    assert_int_equal(verify_req(&r.a, R_METHOD,
                                "/v1/rooms/ops/keys/3/bob?force=1", R_BODY,
                                r.pub),
                     SIGV1_BAD_SIGNATURE);
    assert_int_equal(verify_req(&r.a, R_METHOD, R_PATH,
                                "{\"ciphertext\":\"AAED\"}", r.pub),
                     SIGV1_BAD_SIGNATURE);
    assert_int_equal(verify_req(&r.a, R_METHOD, R_PATH, "", r.pub),
                     SIGV1_BAD_SIGNATURE);
    assert_int_equal(sigv1_verify(&r.a, R_METHOD, R_PATH, R_BODY,
                                  strlen(R_BODY) - 1, r.pub, R_TS, 60),
                     SIGV1_BAD_SIGNATURE);

    /* ts (still inside the window) and nonce. */
    t = r.a;
    t.ts = R_TS + 1;
    assert_int_equal(verify_req(&t, R_METHOD, R_PATH, R_BODY, r.pub),
                     SIGV1_BAD_SIGNATURE);
    t = r.a;
    t.nonce[0] = 'n';
    assert_int_equal(verify_req(&t, R_METHOD, R_PATH, R_BODY, r.pub),
                     SIGV1_BAD_SIGNATURE);
    t = r.a;
    t.nonce[strlen(t.nonce) - 1] = '\0';
    assert_int_equal(verify_req(&t, R_METHOD, R_PATH, R_BODY, r.pub),
                     SIGV1_BAD_SIGNATURE);

    /* Every bit of the signature. */
    for (size_t bit = 0; bit < NKEY_SIG_LEN * 8; bit += 7) {
        t = r.a;
        t.sig[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        assert_int_equal(verify_req(&t, R_METHOD, R_PATH, R_BODY, r.pub),
                         SIGV1_BAD_SIGNATURE);
    }

    /* The handle is not signed: it only selects the key. */
    t = r.a;
    strcpy(t.handle, "mallory");
    assert_int_equal(verify_req(&t, R_METHOD, R_PATH, R_BODY, r.pub),
                     SIGV1_OK);

    /* The request is still fine afterwards. */
    assert_int_equal(verify_req(&r.a, R_METHOD, R_PATH, R_BODY, r.pub),
                     SIGV1_OK);
}

static void test_verify_keys(void **state)
{
    struct req r, other;
    uint8_t zero[NKEY_KEY_LEN] = { 0 };
    char weak[NKEY_PUB_SIZE];

    (void)state;
    req_make(&r);
    req_make(&other);
    /* Another member's key. */
    assert_int_equal(verify_req(&r.a, R_METHOD, R_PATH, R_BODY, other.pub),
                     SIGV1_BAD_SIGNATURE);
    /* Keys that do not decode. */
    assert_int_equal(verify_req(&r.a, R_METHOD, R_PATH, R_BODY, r.seed),
                     SIGV1_BAD_KEY);
    assert_int_equal(verify_req(&r.a, R_METHOD, R_PATH, R_BODY, ""),
                     SIGV1_BAD_KEY);
    assert_int_equal(sigv1_verify(&r.a, R_METHOD, R_PATH, NULL, 0, NULL,
                                  R_TS, 60),
                     SIGV1_BAD_KEY);
    assert_int_equal(verify_req(&r.a, R_METHOD, R_PATH, R_BODY,
                                "AD466L6EBCM3YY5HEGHJANNTN4LSKTSUXTH7RILHCKEQ"
                                "MQHTBNLHINEM"),
                     SIGV1_BAD_KEY);
    /* A small-order key with the universal forgery (R = identity, S = 0). */
    zero[0] = 1;
    assert_int_equal(nkey_user_pub_encode(zero, weak), NKEY_OK);
    {
        struct sigv1_auth forged = r.a;
        memset(forged.sig, 0, sizeof forged.sig);
        forged.sig[0] = 1;
        assert_int_equal(verify_req(&forged, R_METHOD, R_PATH, R_BODY, weak),
                         SIGV1_BAD_KEY);
    }
    /* Unsignable request fields on the verifying side. */
    assert_int_equal(verify_req(&r.a, "", R_PATH, R_BODY, r.pub),
                     SIGV1_BAD_REQUEST);
    assert_int_equal(verify_req(&r.a, R_METHOD, "/a\nb", R_BODY, r.pub),
                     SIGV1_BAD_REQUEST);
    assert_int_equal(sigv1_verify(NULL, R_METHOD, R_PATH, NULL, 0, r.pub,
                                  R_TS, 60),
                     SIGV1_MISSING_AUTH);
}

static void test_verify_skew(void **state)
{
    struct req r;
    struct sigv1_auth t;

    (void)state;
    req_make(&r);
#define AT(now, skew)                                                    \
    sigv1_verify(&r.a, R_METHOD, R_PATH, R_BODY, strlen(R_BODY), r.pub, \
                 (now), (skew))
    assert_int_equal(AT(R_TS, 60), SIGV1_OK);
    assert_int_equal(AT(R_TS + 60, 60), SIGV1_OK); /* ts = now - skew */
    assert_int_equal(AT(R_TS - 60, 60), SIGV1_OK); /* ts = now + skew */
    assert_int_equal(AT(R_TS + 61, 60), SIGV1_STALE_TIMESTAMP);
    assert_int_equal(AT(R_TS - 61, 60), SIGV1_STALE_TIMESTAMP);
    assert_int_equal(AT(R_TS, 0), SIGV1_OK);
    assert_int_equal(AT(R_TS + 1, 0), SIGV1_STALE_TIMESTAMP);
    assert_int_equal(AT(R_TS - 1, 0), SIGV1_STALE_TIMESTAMP);
    assert_int_equal(AT(INT64_MAX, 60), SIGV1_STALE_TIMESTAMP);
    assert_int_equal(AT(INT64_MIN, 60), SIGV1_STALE_TIMESTAMP);
    assert_int_equal(AT(INT64_MIN, UINT32_MAX), SIGV1_STALE_TIMESTAMP);
    assert_int_equal(AT(0, UINT32_MAX), SIGV1_OK);
    assert_int_equal(AT(R_TS - 1000, 1000), SIGV1_OK);
    assert_int_equal(AT(R_TS - 1001, 1000), SIGV1_STALE_TIMESTAMP);
#undef AT
    /* Staleness is decided before the signature is looked at. */
    t = r.a;
    t.sig[0] ^= 1;
    assert_int_equal(sigv1_verify(&t, R_METHOD, R_PATH, R_BODY,
                                  strlen(R_BODY), r.pub, R_TS + 61, 60),
                     SIGV1_STALE_TIMESTAMP);
    assert_int_equal(sigv1_verify(&t, R_METHOD, R_PATH, R_BODY,
                                  strlen(R_BODY), "garbage", R_TS + 61, 60),
                     SIGV1_STALE_TIMESTAMP);
}

/* Paths beyond the verifier's stack buffer, and large bodies. */
static void test_verify_large(void **state)
{
    char seed[NKEY_SEED_SIZE], pub[NKEY_PUB_SIZE];
    char hdr[SIGV1_HEADER_SIZE];
    size_t plen = 5000, blen = 1 << 20;
    char *path = malloc(plen + 1);
    char *body = malloc(blen);
    struct sigv1_auth a;
    char *sts = NULL;
    size_t n = 0;

    (void)state;
    assert_non_null(path);
    assert_non_null(body);
    memcpy(path, "/v1/x?q=", 8);
    memset(path + 8, 'q', plen - 8);
    path[plen] = '\0';
    memset(body, 0xab, blen);
    assert_int_equal(nkey_generate_user(seed, pub), NKEY_OK);
    assert_int_equal(sigv1_sign(seed, "big", "POST", path, body, blen, 7,
                                K_NONCE, hdr, sizeof hdr),
                     SIGV1_OK);
    assert_int_equal(parse(hdr, &a), SIGV1_OK);
    assert_int_equal(sigv1_verify(&a, "POST", path, body, blen, pub, 7, 0),
                     SIGV1_OK);
    path[plen - 1] = 'r';
    assert_int_equal(sigv1_verify(&a, "POST", path, body, blen, pub, 7, 0),
                     SIGV1_BAD_SIGNATURE);
    path[plen - 1] = 'q';
    body[blen - 1] ^= 1;
    assert_int_equal(sigv1_verify(&a, "POST", path, body, blen, pub, 7, 0),
                     SIGV1_BAD_SIGNATURE);
    assert_int_equal(sigv1_string_to_sign_alloc("POST", path, body, blen, 7,
                                                K_NONCE, &sts, &n),
                     SIGV1_OK);
    assert_int_equal(n, strlen(sts));
    assert_int_equal(n, 15 + 5 + plen + 1 + 2 + strlen(K_NONCE) + 1 + 64);
    free(sts);
    free(body);
    free(path);
}

/* ------------------------------------------------------------------------ */
/* Names and validators. */

static void test_code_names(void **state)
{
    static const char *const want[] = {
        "ok",
        "missing_auth",
        "bad_auth_header",
        "bad_handle",
        "bad_timestamp",
        "bad_nonce",
        "bad_signature_encoding",
        "stale_timestamp",
        "bad_signature",
        "bad_key",
        "bad_request",
        "no_space",
        "internal",
    };

    (void)state;
    for (int i = 0; i < (int)(sizeof want / sizeof want[0]); i++) {
        assert_string_equal(sigv1_code_name(i), want[i]);
    }
    assert_string_equal(sigv1_code_name(-1), "unknown");
    assert_string_equal(sigv1_code_name(SIGV1_INTERNAL + 1), "unknown");
}

static void test_validators(void **state)
{
    (void)state;
    assert_true(sigv1_handle_valid("a", 1));
    assert_true(sigv1_handle_valid("9-_", 3));
    assert_true(sigv1_handle_valid(A64, 64));
    assert_false(sigv1_handle_valid(A64 "a", 65));
    assert_false(sigv1_handle_valid("", 0));
    assert_false(sigv1_handle_valid(NULL, 0));
    assert_false(sigv1_handle_valid("-a", 2));
    assert_false(sigv1_handle_valid("aB", 2));
    assert_false(sigv1_handle_valid("a\0", 2));
    assert_true(sigv1_nonce_valid("0123456789abcdef", 16));
    assert_false(sigv1_nonce_valid("0123456789abcde", 15));
    assert_true(sigv1_nonce_valid(A64, 64));
    assert_false(sigv1_nonce_valid(A64 "a", 65));
    assert_false(sigv1_nonce_valid(NULL, 0));
    assert_false(sigv1_nonce_valid("0123456789abcde\0", 16));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_canonical),
        cmocka_unit_test(test_parse_accepts),
        cmocka_unit_test(test_parse_field_limits),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_parse_signature_encodings),
        cmocka_unit_test(test_parse_size_and_nul),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_string_to_sign),
        cmocka_unit_test(test_string_to_sign_rejects),
        cmocka_unit_test(test_sign_known_answer),
        cmocka_unit_test(test_sign_rejects),
        cmocka_unit_test(test_sign_fresh_nonce),
        cmocka_unit_test(test_verify_tampering),
        cmocka_unit_test(test_verify_keys),
        cmocka_unit_test(test_verify_skew),
        cmocka_unit_test(test_verify_large),
        cmocka_unit_test(test_code_names),
        cmocka_unit_test(test_validators),
    };

    return cmocka_run_group_tests_name("sigv1", tests, NULL, NULL);
}
