/* Unit tests of src/bus/proto.h, the NATS client protocol parser: every op
 * and its fields, case-insensitive names, tabs and runs of blanks, a missing
 * CR, the CR LF after a payload, every error code, the limits at exactly the
 * limit and one over (also before the LF arrives), callbacks that stop, zero
 * copy, and streams split at every byte giving what a single parse gives. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bus/proto.h"

/* ------------------------------------------------------------------------ */
/* Recorder: the callbacks write each op as one line of text into log, so a
 * whole run compares with one string compare. */

#define LOG_CAP (16 * 1024)

struct rec {
    char *log;
    size_t len;
    int ops;           /* ops delivered */
    int stop_at;       /* return non-zero from the stop_at-th op (1-based) */
    const uint8_t *lo; /* the input buffer, for zero-copy checks */
    const uint8_t *hi;
    int inside;  /* ops whose pointers all lay in [lo, hi) */
    int outside; /* ops with a pointer outside it */
};

static void rec_init(struct rec *r)
{
    memset(r, 0, sizeof *r);
    r->log = malloc(LOG_CAP);
    assert_non_null(r->log);
    r->log[0] = '\0';
}

static void rec_free(struct rec *r)
{
    free(r->log);
}

static void logf_(struct rec *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void logf_(struct rec *r, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(r->log + r->len, LOG_CAP - r->len, fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && (size_t)n < LOG_CAP - r->len);
    r->len += (size_t)n;
}

/* Appends bytes, escaping anything but printable ASCII; long ones as their
 * length and FNV-1a hash. */
static void log_bytes(struct rec *r, const void *p, size_t n)
{
    const uint8_t *b = p;

    if (p == NULL) {
        logf_(r, "(null)");
        return;
    }
    if (n > 256) {
        uint64_t h = UINT64_C(0xcbf29ce484222325);
        for (size_t i = 0; i < n; i++) {
            h = (h ^ b[i]) * UINT64_C(0x100000001b3);
        }
        logf_(r, "<%zu bytes %016llx>", n, (unsigned long long)h);
        return;
    }
    logf_(r, "'");
    for (size_t i = 0; i < n; i++) {
        if (b[i] >= 0x20 && b[i] < 0x7f && b[i] != '\\' && b[i] != '\'') {
            logf_(r, "%c", b[i]);
        } else {
            logf_(r, "\\x%02x", b[i]);
        }
    }
    logf_(r, "'");
}

static bool in_input(const struct rec *r, const void *p, size_t n)
{
    const uint8_t *b = p;
    return p == NULL || (b >= r->lo && b + n <= r->hi);
}

static int rec_op(struct rec *r, bool inside)
{
    r->ops++;
    if (inside) {
        r->inside++;
    } else {
        r->outside++;
    }
    logf_(r, "\n");
    return r->stop_at != 0 && r->ops == r->stop_at;
}

static int on_connect(void *arg, const char *json, size_t len)
{
    struct rec *r = arg;
    logf_(r, "CONNECT ");
    log_bytes(r, json, len);
    return rec_op(r, in_input(r, json, len));
}

static int on_pub(void *arg, const struct bp_pub *pub)
{
    struct rec *r = arg;

    assert_non_null(pub->subject);
    assert_non_null(pub->data);
    assert_true(pub->hdr_len <= pub->total_len);
    assert_true(pub->has_headers || pub->hdr_len == 0);
    logf_(r, "%s ", pub->has_headers ? "HPUB" : "PUB");
    log_bytes(r, pub->subject, pub->subject_len);
    logf_(r, " ");
    log_bytes(r, pub->reply, pub->reply_len);
    logf_(r, " %zu %zu ", pub->hdr_len, pub->total_len);
    log_bytes(r, pub->data, pub->total_len);
    return rec_op(r, in_input(r, pub->subject, pub->subject_len) &&
                         in_input(r, pub->reply, pub->reply_len) &&
                         in_input(r, pub->data, pub->total_len));
}

static int on_sub(void *arg, const struct bp_sub *sub)
{
    struct rec *r = arg;

    logf_(r, "SUB ");
    log_bytes(r, sub->subject, sub->subject_len);
    logf_(r, " ");
    log_bytes(r, sub->queue, sub->queue_len);
    logf_(r, " ");
    log_bytes(r, sub->sid, sub->sid_len);
    return rec_op(r, in_input(r, sub->subject, sub->subject_len) &&
                         in_input(r, sub->queue, sub->queue_len) &&
                         in_input(r, sub->sid, sub->sid_len));
}

static int on_unsub(void *arg, const struct bp_unsub *unsub)
{
    struct rec *r = arg;

    logf_(r, "UNSUB ");
    log_bytes(r, unsub->sid, unsub->sid_len);
    logf_(r, " %lld", (long long)unsub->max_msgs);
    return rec_op(r, in_input(r, unsub->sid, unsub->sid_len));
}

static int on_ping(void *arg)
{
    struct rec *r = arg;
    logf_(r, "PING");
    return rec_op(r, true);
}

static int on_pong(void *arg)
{
    struct rec *r = arg;
    logf_(r, "PONG");
    return rec_op(r, true);
}

static const struct bp_callbacks rec_cb = {
    .on_connect = on_connect,
    .on_pub = on_pub,
    .on_sub = on_sub,
    .on_unsub = on_unsub,
    .on_ping = on_ping,
    .on_pong = on_pong,
};

/* Feeds chunk [from, to) of s from its own heap copy (so ASan sees any read
 * past it) and returns bp_parse's result. */
static int feed(struct bp_parser *p,
                struct rec *r,
                const char *s,
                size_t from,
                size_t to)
{
    size_t n = to - from;
    uint8_t *copy = malloc(n ? n : 1);
    int rc;

    assert_non_null(copy);
    memcpy(copy, s + from, n);
    r->lo = copy;
    r->hi = copy + n;
    rc = bp_parse(p, copy, n);
    free(copy);
    return rc;
}

/* Parses s cut at the ncut sorted offsets in cuts; returns the last result
 * (results are sticky, so this is the first non-OK one, if any). */
static int parse_cuts(const char *s,
                      size_t len,
                      const size_t *cuts,
                      size_t ncut,
                      size_t max_c,
                      size_t max_p,
                      struct rec *r)
{
    struct bp_parser *p = bp_parser_new(&rec_cb, r, max_c, max_p);
    size_t from = 0;
    int rc = BP_OK;

    assert_non_null(p);
    for (size_t i = 0; i <= ncut; i++) {
        size_t to = i < ncut ? cuts[i] : len;
        rc = feed(p, r, s, from, to);
        from = to;
    }
    bp_parser_free(p);
    return rc;
}

static int parse_whole(const char *s,
                       size_t len,
                       size_t max_c,
                       size_t max_p,
                       struct rec *r)
{
    return parse_cuts(s, len, NULL, 0, max_c, max_p, r);
}

/* Parses a NUL-terminated stream with default limits; expects rc and a log. */
static void expect(const char *s, int rc, const char *log)
{
    struct rec r;

    rec_init(&r);
    assert_int_equal(parse_whole(s, strlen(s), 0, 0, &r), rc);
    assert_string_equal(r.log, log);
    rec_free(&r);
}

static void expect_limits(const char *s,
                          size_t max_c,
                          size_t max_p,
                          int rc,
                          const char *log)
{
    struct rec r;

    rec_init(&r);
    assert_int_equal(parse_whole(s, strlen(s), max_c, max_p, &r), rc);
    assert_string_equal(r.log, log);
    rec_free(&r);
}

/* The same stream split at every byte, at every pair of bytes (when short),
 * and in one-byte chunks gives the single-shot ops and result. */
static void check_splits(const char *s, size_t len, size_t max_c, size_t max_p)
{
    struct rec whole;
    int want;
    size_t *ones = malloc((len ? len : 1) * sizeof *ones);

    assert_non_null(ones);
    rec_init(&whole);
    want = parse_whole(s, len, max_c, max_p, &whole);
    for (size_t i = 0; i <= len; i++) {
        struct rec r;
        rec_init(&r);
        assert_int_equal(parse_cuts(s, len, &i, 1, max_c, max_p, &r), want);
        assert_string_equal(r.log, whole.log);
        rec_free(&r);
    }
    if (len <= 400) {
        for (size_t i = 0; i <= len; i++) {
            for (size_t j = i; j <= len; j++) {
                size_t cuts[2] = { i, j };
                struct rec r;
                rec_init(&r);
                assert_int_equal(parse_cuts(s, len, cuts, 2, max_c, max_p, &r),
                                 want);
                assert_string_equal(r.log, whole.log);
                rec_free(&r);
            }
        }
    }
    for (size_t i = 0; i < len; i++) {
        ones[i] = i + 1;
    }
    {
        struct rec r;
        rec_init(&r);
        assert_int_equal(
            parse_cuts(s, len, ones, len ? len - 1 : 0, max_c, max_p, &r),
            want);
        assert_string_equal(r.log, whole.log);
        rec_free(&r);
    }
    free(ones);
    rec_free(&whole);
}

#define CHECK_SPLITS(lit, c, p) check_splits(lit, sizeof lit - 1, c, p)

/* ------------------------------------------------------------------------ */
/* Every op. */

static void test_connect(void **state)
{
    (void)state;
    expect("CONNECT {\"verbose\":false,\"name\":\"a b\"}\r\n", BP_OK,
           "CONNECT '{\"verbose\":false,\"name\":\"a b\"}'\n");
    /* Leading blanks go, the rest of the line is kept as sent. */
    expect("CONNECT \t {} \r\n", BP_OK, "CONNECT '{} '\n");
    expect("CONNECT {}\n", BP_OK, "CONNECT '{}'\n");
    /* An argument is required, and a separator after the name. */
    expect("CONNECT\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("CONNECT \t \r\n", BP_ERR_UNKNOWN_OP, "");
    expect("CONNECT{}\r\n", BP_ERR_UNKNOWN_OP, "");
}

static void test_pub(void **state)
{
    (void)state;
    expect("PUB foo 5\r\nhello\r\n", BP_OK, "PUB 'foo' (null) 0 5 'hello'\n");
    expect("PUB foo.bar _INBOX.x 3\r\nabc\r\n", BP_OK,
           "PUB 'foo.bar' '_INBOX.x' 0 3 'abc'\n");
    expect("PUB foo 0\r\n\r\n", BP_OK, "PUB 'foo' (null) 0 0 ''\n");
    /* The payload is opaque: CR, LF and NUL inside it are data. */
    {
        static const char s[] = "PUB foo 6\r\n\r\n\0PUB\r\n";
        struct rec r;
        rec_init(&r);
        assert_int_equal(parse_whole(s, sizeof s - 1, 0, 0, &r), BP_OK);
        assert_string_equal(r.log,
                            "PUB 'foo' (null) 0 6 '\\x0d\\x0a\\x00PUB'\n");
        rec_free(&r);
    }
    /* Leading zeros are digits. */
    expect("PUB foo 003\r\nabc\r\n", BP_OK, "PUB 'foo' (null) 0 3 'abc'\n");
}

static void test_hpub(void **state)
{
    (void)state;
    /* NATS_WIRE.md 1.5's example. */
    expect("HPUB FOO 22 33\r\nNATS/1.0\r\nBar: Baz\r\n\r\nHello NATS!\r\n",
           BP_OK,
           "HPUB 'FOO' (null) 22 33 "
           "'NATS/1.0\\x0d\\x0aBar: Baz\\x0d\\x0a\\x0d\\x0aHello NATS!'\n");
    expect("HPUB foo reply.to 12 12\r\nNATS/1.0\r\n\r\n\r\n", BP_OK,
           "HPUB 'foo' 'reply.to' 12 12 "
           "'NATS/1.0\\x0d\\x0a\\x0d\\x0a'\n");
    expect("HPUB foo 0 0\r\n\r\n", BP_OK, "HPUB 'foo' (null) 0 0 ''\n");
    /* #hdr > #total is a protocol error; #hdr == #total is not. */
    expect("HPUB foo 3 2\r\nab\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("HPUB foo 2 2\r\nab\r\n", BP_OK, "HPUB 'foo' (null) 2 2 'ab'\n");
}

static void test_sub_unsub(void **state)
{
    (void)state;
    expect("SUB foo 1\r\n", BP_OK, "SUB 'foo' (null) '1'\n");
    expect("SUB foo.* workers 42\r\n", BP_OK, "SUB 'foo.*' 'workers' '42'\n");
    expect("UNSUB 1\r\n", BP_OK, "UNSUB '1' -1\n");
    expect("UNSUB 1 0\r\n", BP_OK, "UNSUB '1' 0\n");
    expect("UNSUB abc 10\r\n", BP_OK, "UNSUB 'abc' 10\n");
    expect("UNSUB 1 9223372036854775807\r\n", BP_OK,
           "UNSUB '1' 9223372036854775807\n");
}

static void test_ping_pong(void **state)
{
    (void)state;
    expect("PING\r\nPONG\r\n", BP_OK, "PING\nPONG\n");
    expect("PING \t \r\nPONG\t\n", BP_OK, "PING\nPONG\n");
    expect("PING x\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("PINGX\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("PONGS\r\n", BP_ERR_UNKNOWN_OP, "");
}

static void test_case_insensitive(void **state)
{
    (void)state;
    expect("pub a 1\r\nx\r\nPuB b 1\r\ny\r\nhPuB c 0 1\r\nz\r\n", BP_OK,
           "PUB 'a' (null) 0 1 'x'\nPUB 'b' (null) 0 1 'y'\n"
           "HPUB 'c' (null) 0 1 'z'\n");
    expect("sub a 1\r\nSuB b 2\r\nunsub 1\r\nUnSuB 2 5\r\n", BP_OK,
           "SUB 'a' (null) '1'\nSUB 'b' (null) '2'\nUNSUB '1' -1\n"
           "UNSUB '2' 5\n");
    expect("connect {}\r\nCoNnEcT {}\r\nping\r\nPiNg\r\npong\r\npOnG\r\n",
           BP_OK, "CONNECT '{}'\nCONNECT '{}'\nPING\nPING\nPONG\nPONG\n");
    /* Arguments keep their case. */
    expect("sub Foo.BAR Q 1\r\n", BP_OK, "SUB 'Foo.BAR' 'Q' '1'\n");
}

static void test_blanks(void **state)
{
    (void)state;
    expect("PUB\tfoo \t bar\t\t5\r\nhello\r\n", BP_OK,
           "PUB 'foo' 'bar' 0 5 'hello'\n");
    expect("SUB  foo   q   1 \t \r\n", BP_OK, "SUB 'foo' 'q' '1'\n");
    expect("UNSUB\t\t1\t\t2\t\r\n", BP_OK, "UNSUB '1' 2\n");
    expect("HPUB \tfoo\t 1 \t 2 \r\na\r\r\n", BP_OK,
           "HPUB 'foo' (null) 1 2 'a\\x0d'\n");
    /* Blanks before the op are not allowed (nats-server neither). */
    expect(" PING\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("\tSUB foo 1\r\n", BP_ERR_UNKNOWN_OP, "");
}

static void test_missing_cr(void **state)
{
    (void)state;
    expect("PUB foo 2\nhi\r\nSUB a 1\nPING\nCONNECT {}\nUNSUB 1\nPONG\n", BP_OK,
           "PUB 'foo' (null) 0 2 'hi'\nSUB 'a' (null) '1'\nPING\n"
           "CONNECT '{}'\nUNSUB '1' -1\nPONG\n");
    /* Only one CR before the LF is dropped; another one separates
     * arguments (as nats-server's splitArg does) or, after a bare op, is
     * whitespace. */
    expect("SUB a 1\r\r\n", BP_OK, "SUB 'a' (null) '1'\n");
    expect("SUB a\r1\r\n", BP_OK, "SUB 'a' (null) '1'\n");
    expect("PING\r\r\n", BP_OK, "PING\n");
}

static void test_payload_crlf(void **state)
{
    (void)state;
    /* Exactly CR LF must follow the payload. */
    expect("PUB foo 5\r\nhello\nPING\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("PUB foo 5\r\nhelloXY", BP_ERR_UNKNOWN_OP, "");
    expect("PUB foo 5\r\nhello\rX", BP_ERR_UNKNOWN_OP, "");
    expect("PUB foo 5\r\nhello!\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("PUB foo 4\r\nhello\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("PUB foo 0\r\nX", BP_ERR_UNKNOWN_OP, "");
    /* An incomplete payload or CR LF waits. */
    expect("PUB foo 5\r\nhello\r", BP_OK, "");
    expect("PUB foo 5\r\nhello", BP_OK, "");
    expect("PUB foo 5\r\nhel", BP_OK, "");
    expect("PUB foo 5\r\n", BP_OK, "");
    expect("PUB foo 5\r", BP_OK, "");
}

/* ------------------------------------------------------------------------ */
/* Errors. */

static void test_arg_counts(void **state)
{
    (void)state;
    expect("PUB\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("PUB \r\n", BP_ERR_UNKNOWN_OP, "");
    expect("PUB foo\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("PUB a b c 1\r\nx\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("HPUB foo 1\r\nx\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("HPUB a b c d 1\r\nx\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("SUB\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("SUB foo\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("SUB a b c d\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("UNSUB\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("UNSUB \t\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("UNSUB 1 2 3\r\n", BP_ERR_UNKNOWN_OP, "");
}

static void test_bad_numbers(void **state)
{
    (void)state;
    expect("PUB foo x\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("PUB foo -1\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("PUB foo +1\r\nx\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("PUB foo 1x\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("PUB foo 0x10\r\n", BP_ERR_UNKNOWN_OP, "");
    /* Overflow is a bad number, not a big one. */
    expect("PUB foo 18446744073709551616\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("PUB foo 99999999999999999999999999\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("HPUB foo x 5\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("HPUB foo 1 x\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("HPUB foo 18446744073709551616 5\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("UNSUB 1 x\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("UNSUB 1 -1\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("UNSUB 1 9223372036854775808\r\n", BP_ERR_UNKNOWN_OP, "");
}

static void test_unknown_ops(void **state)
{
    (void)state;
    expect("+OK\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("-ERR 'x'\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("INFO {}\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("MSG foo 1 1\r\nx\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("PUBLISH foo 1\r\nx\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("SUBS foo 1\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("\r\n", BP_ERR_UNKNOWN_OP, "");
    expect("\n", BP_ERR_UNKNOWN_OP, "");
    /* Ops before the bad one are delivered. */
    expect("PING\r\nSUB foo 1\r\nGET / HTTP/1.1\r\n", BP_ERR_UNKNOWN_OP,
           "PING\nSUB 'foo' (null) '1'\n");
    /* A name that can no longer match fails at once, without its LF. */
    expect("XYZ", BP_ERR_UNKNOWN_OP, "");
    expect("PUX", BP_ERR_UNKNOWN_OP, "");
    expect("PUB\r", BP_ERR_UNKNOWN_OP, "");
    expect("CONNECT{", BP_ERR_UNKNOWN_OP, "");
    expect("\x16\x03\x01\x02\x00", BP_ERR_UNKNOWN_OP, ""); /* TLS hello */
    /* ... while a prefix of a name waits. */
    expect("P", BP_OK, "");
    expect("CONNEC", BP_OK, "");
    expect("UNSUB", BP_OK, "");
    expect("PING", BP_OK, "");
    expect("PING\r", BP_OK, "");
}

static void test_max_payload(void **state)
{
    (void)state;
    expect_limits("PUB foo 10\r\n0123456789\r\n", 0, 10, BP_OK,
                  "PUB 'foo' (null) 0 10 '0123456789'\n");
    expect_limits("PUB foo 11\r\n01234567890\r\n", 0, 10, BP_ERR_MAX_PAYLOAD,
                  "");
    /* Checked on the line: the payload need not arrive. */
    expect_limits("PUB foo 11\r\n", 0, 10, BP_ERR_MAX_PAYLOAD, "");
    expect_limits("PUB foo 99999999999\r\n", 0, 10, BP_ERR_MAX_PAYLOAD, "");
    /* HPUB: the limit is on #total. */
    expect_limits("HPUB foo 4 10\r\n0123456789\r\n", 0, 10, BP_OK,
                  "HPUB 'foo' (null) 4 10 '0123456789'\n");
    expect_limits("HPUB foo 4 11\r\n", 0, 10, BP_ERR_MAX_PAYLOAD, "");
    expect_limits("HPUB foo 11 12\r\n", 0, 10, BP_ERR_MAX_PAYLOAD, "");
    /* #hdr > #total first. */
    expect_limits("HPUB foo 12 11\r\n", 0, 10, BP_ERR_UNKNOWN_OP, "");
    /* The default is 1 MiB. */
    expect("PUB foo 1048577\r\n", BP_ERR_MAX_PAYLOAD, "");
    {
        size_t n = BP_DEFAULT_MAX_PAYLOAD;
        char *s = malloc(n + 64);
        struct rec r;
        int len;

        assert_non_null(s);
        len = snprintf(s, 64, "PUB big %zu\r\n", n);
        memset(s + len, 'x', n);
        memcpy(s + len + n, "\r\n", 2);
        rec_init(&r);
        assert_int_equal(parse_whole(s, (size_t)len + n + 2, 0, 0, &r), BP_OK);
        assert_int_equal(r.ops, 1);
        rec_free(&r);
        /* Split in the middle: held in the parser, then delivered. */
        for (size_t cut = (size_t)len - 3; cut < (size_t)len + n + 2;
             cut += n / 3) {
            rec_init(&r);
            assert_int_equal(
                parse_cuts(s, (size_t)len + n + 2, &cut, 1, 0, 0, &r), BP_OK);
            assert_int_equal(r.ops, 1);
            rec_free(&r);
        }
        free(s);
    }
}

/* A line of exactly n bytes: "SUB " + subject + " 1". */
static char *sub_line(size_t n, const char *end)
{
    char *s = malloc(n + strlen(end) + 1);

    assert_non_null(s);
    assert_true(n >= 7);
    memcpy(s, "SUB ", 4);
    memset(s + 4, 'a', n - 6);
    memcpy(s + n - 2, " 1", 2);
    strcpy(s + n, end);
    return s;
}

static void test_control_line_limit(void **state)
{
    char *s;
    (void)state;

    /* Exactly the limit (16), with CR LF, LF, or still waiting. */
    expect_limits("SUB 0123456789 1\r\n", 16, 0, BP_OK,
                  "SUB '0123456789' (null) '1'\n");
    expect_limits("SUB 0123456789 1\n", 16, 0, BP_OK,
                  "SUB '0123456789' (null) '1'\n");
    expect_limits("SUB 0123456789 1\r", 16, 0, BP_OK, "");
    expect_limits("SUB 0123456789 1", 16, 0, BP_OK, "");
    /* One over: fails as soon as the 17th byte is seen. */
    expect_limits("SUB 0123456789 12\r\n", 16, 0, BP_ERR_CONTROL_LINE, "");
    expect_limits("SUB 0123456789 12", 16, 0, BP_ERR_CONTROL_LINE, "");
    expect_limits("SUB 0123456789 1\rX", 16, 0, BP_ERR_CONTROL_LINE, "");
    expect_limits("SUB 0123456789 1\r\r\n", 16, 0, BP_ERR_CONTROL_LINE, "");
    /* Blanks count; the CR LF does not. */
    expect_limits("PING            \r\n", 16, 0, BP_OK, "PING\n");
    expect_limits("PING             \r\n", 16, 0, BP_ERR_CONTROL_LINE, "");
    /* The op is decided first: garbage is an unknown op however long. */
    expect_limits("XXXXXXXXXXXXXXXXXXXXXXXX", 16, 0, BP_ERR_UNKNOWN_OP, "");
    /* Ops before the long line are delivered. */
    expect_limits("PING\r\nSUB 0123456789 12\r\n", 16, 0, BP_ERR_CONTROL_LINE,
                  "PING\n");

    /* The default is 4096. */
    s = sub_line(4096, "\r\n");
    {
        struct rec r;
        rec_init(&r);
        assert_int_equal(parse_whole(s, strlen(s), 0, 0, &r), BP_OK);
        assert_int_equal(r.ops, 1);
        rec_free(&r);
    }
    free(s);
    s = sub_line(4097, "\r\n");
    expect(s, BP_ERR_CONTROL_LINE, "");
    free(s);
    /* Over the limit and no LF yet: fails now, in one call or many. */
    s = sub_line(5000, "");
    expect(s, BP_ERR_CONTROL_LINE, "");
    {
        struct bp_parser *p = bp_parser_new(&rec_cb, NULL, 0, 0);
        size_t off = 0;
        int rc = BP_OK;
        assert_non_null(p);
        while (rc == BP_OK && off < 5000) {
            rc = bp_parse(p, (const uint8_t *)s + off, 100);
            off += 100;
        }
        assert_int_equal(rc, BP_ERR_CONTROL_LINE);
        assert_int_equal(off, 4100); /* the chunk with byte 4097 */
        bp_parser_free(p);
    }
    free(s);
    /* A CONNECT counts too. */
    s = malloc(4200);
    assert_non_null(s);
    memcpy(s, "CONNECT {\"name\":\"", 17);
    memset(s + 17, 'n', 4100);
    strcpy(s + 4117, "\"}\r\n");
    expect(s, BP_ERR_CONTROL_LINE, "");
    free(s);
}

static void test_error_text(void **state)
{
    (void)state;
    assert_string_equal(bp_error_text(BP_ERR_UNKNOWN_OP),
                        "Unknown Protocol Operation");
    assert_string_equal(bp_error_text(BP_ERR_CONTROL_LINE),
                        "maximum control line exceeded");
    assert_string_equal(bp_error_text(BP_ERR_MAX_PAYLOAD),
                        "Maximum Payload Violation");
    assert_null(bp_error_text(BP_OK));
    assert_null(bp_error_text(BP_STOPPED));
    assert_null(bp_error_text(BP_ERR_NOMEM));
    assert_null(bp_error_text(12345));
}

/* After an error or a stop, bp_parse repeats it and delivers nothing. */
static void test_sticky_result(void **state)
{
    struct rec r;
    struct bp_parser *p;
    (void)state;

    rec_init(&r);
    p = bp_parser_new(&rec_cb, &r, 0, 0);
    assert_non_null(p);
    assert_int_equal(bp_parse(p, (const uint8_t *)"PING\r\nX\r\n", 9),
                     BP_ERR_UNKNOWN_OP);
    assert_int_equal(bp_parse(p, (const uint8_t *)"PING\r\n", 6),
                     BP_ERR_UNKNOWN_OP);
    assert_string_equal(r.log, "PING\n");
    bp_parser_free(p);
    rec_free(&r);
}

/* ------------------------------------------------------------------------ */
/* Callbacks. */

static void test_stop(void **state)
{
    static const char s[] =
        "CONNECT {}\r\nPING\r\nPONG\r\nSUB a 1\r\n"
        "UNSUB 1\r\nPUB a 1\r\nx\r\nHPUB a 1 1\r\ny\r\n"
        "PING\r\n";
    const int nops = 8;
    (void)state;

    /* Stopping at each op (whole and split at every byte) delivers exactly
     * the ops up to it. */
    for (int stop = 1; stop <= nops; stop++) {
        for (size_t cut = 0; cut <= sizeof s - 1; cut++) {
            struct rec r;
            struct bp_parser *p;

            rec_init(&r);
            r.stop_at = stop;
            p = bp_parser_new(&rec_cb, &r, 0, 0);
            assert_non_null(p);
            feed(p, &r, s, 0, cut);
            assert_int_equal(feed(p, &r, s, cut, sizeof s - 1), BP_STOPPED);
            assert_int_equal(r.ops, stop);
            /* Once stopped, nothing more. */
            assert_int_equal(feed(p, &r, s, 0, sizeof s - 1), BP_STOPPED);
            assert_int_equal(r.ops, stop);
            bp_parser_free(p);
            rec_free(&r);
        }
    }
}

static void test_null_callbacks(void **state)
{
    static const char s[] =
        "CONNECT {}\r\nPING\r\nPONG\r\nSUB a 1\r\n"
        "UNSUB 1\r\nPUB a 1\r\nx\r\nHPUB a 1 1\r\ny\r\n";
    struct bp_callbacks none = { 0 };
    struct bp_parser *p;
    (void)state;

    p = bp_parser_new(&none, NULL, 0, 0);
    assert_non_null(p);
    assert_int_equal(bp_parse(p, (const uint8_t *)s, sizeof s - 1), BP_OK);
    bp_parser_free(p);
    p = bp_parser_new(NULL, NULL, 0, 0);
    assert_non_null(p);
    assert_int_equal(bp_parse(p, (const uint8_t *)s, sizeof s - 1), BP_OK);
    assert_int_equal(bp_parse(p, NULL, 0), BP_OK);
    bp_parser_free(p);
    bp_parser_free(NULL);
}

/* ------------------------------------------------------------------------ */
/* Splits and zero copy. */

/* A realistic client session: every op, both cases, headers, a reply, a
 * queue, UNSUB with max, blanks, a missing CR, a zero-length payload. */
static const char session[] =
    "CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true}\r\n"
    "PING\r\n"
    "SUB foo.* 1\r\n"
    "sub foo.bar workers 2\r\n"
    "PUB foo.bar 5\r\nhello\r\n"
    "PUB foo.bar _INBOX.abc 12\r\nhello\r\nworld\r\n"
    "HPUB foo.bar 22 33\r\nNATS/1.0\r\nBar: Baz\r\n\r\nHello NATS!\r\n"
    "HPUB foo.bar _INBOX.x 12 12\r\nNATS/1.0\r\n\r\n\r\n"
    "pub\tfoo  0\r\n\r\n"
    "UNSUB 1 10\n"
    "UNSUB 2\r\n"
    "PONG \r\n"
    "PING\r\n";

static void test_split_session(void **state)
{
    struct rec r;
    (void)state;

    rec_init(&r);
    assert_int_equal(parse_whole(session, sizeof session - 1, 0, 0, &r), BP_OK);
    assert_int_equal(r.ops, 13);
    rec_free(&r);
    CHECK_SPLITS(session, 0, 0);
    /* Small limits: the same session trips them, split or not. */
    CHECK_SPLITS(session, 40, 0);
    CHECK_SPLITS(session, 0, 11);
    CHECK_SPLITS(session, 20, 8);
}

static void test_split_errors(void **state)
{
    (void)state;
    /* Each ends in a different error after some good ops. */
    CHECK_SPLITS("PING\r\nPUB a 2\r\nab\r\nPUB a 2\r\nabX\r\n", 0, 0);
    CHECK_SPLITS("SUB a 1\r\nPUB a 99\r\n", 0, 10);
    CHECK_SPLITS("SUB a 1\r\nSUB aaaaaaaaaaaaaaaaaaaa 2\r\n", 16, 0);
    CHECK_SPLITS("SUB a 1\r\nSUB aaaaaaaaaaaa 2\r\n", 16, 0);
    CHECK_SPLITS("SUB a 1\r\nSUB aaaaaaaaaaa 2\r\r\n", 16, 0);
    CHECK_SPLITS("PONG\r\nXPUB\r\n", 0, 0);
    CHECK_SPLITS("PONG\r\nPUBLISH\r\n", 0, 0);
    CHECK_SPLITS("PONG\r\nHPUB a 3 2\r\nab\r\n", 0, 0);
    CHECK_SPLITS("PONG\r\nUNSUB 1 2 3\r\n", 0, 0);
    CHECK_SPLITS("PONG\r\nCONNECT\r\n", 0, 0);
    /* Tiny limits: the op name and the limit race within a few bytes. */
    CHECK_SPLITS("CONNEX {}\r\n", 4, 0);
    CHECK_SPLITS("PUB\rx\r\n", 3, 0);
    CHECK_SPLITS("PING\r\r\n", 4, 0);
    CHECK_SPLITS("PING\r\n", 1, 0);
}

static void test_zero_copy(void **state)
{
    struct rec r;
    size_t cut;
    (void)state;

    /* One buffer: every pointer handed out points into it. */
    rec_init(&r);
    assert_int_equal(parse_whole(session, sizeof session - 1, 0, 0, &r), BP_OK);
    assert_int_equal(r.inside, 13);
    assert_int_equal(r.outside, 0);
    rec_free(&r);

    /* Cut inside the first PUB's payload: that op comes from the parser's
     * buffers, every other op still from its input buffer. */
    cut = (size_t)(strstr(session, "hello\r\n") - session) + 2;
    rec_init(&r);
    assert_int_equal(parse_cuts(session, sizeof session - 1, &cut, 1, 0, 0, &r),
                     BP_OK);
    assert_int_equal(r.inside, 12);
    assert_int_equal(r.outside, 1);
    rec_free(&r);

    /* Cut inside a SUB line: that line is copied, the rest is not. */
    cut = (size_t)(strstr(session, "workers") - session);
    rec_init(&r);
    assert_int_equal(parse_cuts(session, sizeof session - 1, &cut, 1, 0, 0, &r),
                     BP_OK);
    assert_int_equal(r.inside, 12);
    assert_int_equal(r.outside, 1);
    rec_free(&r);

    /* Cut between a PUB line and its payload: subject copied too. */
    cut = (size_t)(strstr(session, "hello") - session);
    rec_init(&r);
    assert_int_equal(parse_cuts(session, sizeof session - 1, &cut, 1, 0, 0, &r),
                     BP_OK);
    assert_int_equal(r.outside, 1);
    rec_free(&r);
}

static void test_buffered(void **state)
{
    struct rec r;
    struct bp_parser *p;
    (void)state;

    rec_init(&r);
    p = bp_parser_new(&rec_cb, &r, 0, 0);
    assert_non_null(p);
    assert_int_equal(bp_buffered(p), 0);
    assert_int_equal(feed(p, &r, "PUB foo 5\r\nhel", 0, 14), BP_OK);
    /* The line with its CR, and three payload bytes. */
    assert_int_equal(bp_buffered(p), 10 + 3);
    assert_int_equal(feed(p, &r, "lo\r\nSUB a", 0, 9), BP_OK);
    assert_int_equal(bp_buffered(p), 5);
    assert_int_equal(feed(p, &r, " 1\r\n", 0, 4), BP_OK);
    assert_int_equal(bp_buffered(p), 0);
    assert_string_equal(r.log,
                        "PUB 'foo' (null) 0 5 'hello'\nSUB 'a' (null) '1'\n");
    bp_parser_free(p);
    rec_free(&r);
}

/* A payload larger than the buffer the parser keeps, fed in odd chunks,
 * twice (the buffer is released and grown again). */
static void test_large_split_payload(void **state)
{
    size_t n = 200 * 1024;
    char *s = malloc(n + 64);
    int len;
    (void)state;

    assert_non_null(s);
    len = snprintf(s, 64, "PUB big %zu\r\n", n);
    for (size_t i = 0; i < n; i++) {
        s[(size_t)len + i] = (char)('a' + i % 26);
    }
    memcpy(s + (size_t)len + n, "\r\n", 2);
    for (int round = 0; round < 2; round++) {
        struct rec r;
        struct bp_parser *p;
        size_t off = 0;
        size_t total = (size_t)len + n + 2;

        rec_init(&r);
        p = bp_parser_new(&rec_cb, &r, 0, 0);
        assert_non_null(p);
        for (int again = 0; again < 2; again++) {
            off = 0;
            while (off < total) {
                size_t chunk = total - off < 7777 ? total - off : 7777;
                assert_int_equal(feed(p, &r, s, off, off + chunk), BP_OK);
                off += chunk;
            }
        }
        assert_int_equal(r.ops, 2);
        assert_int_equal(bp_buffered(p), 0);
        bp_parser_free(p);
        rec_free(&r);
    }
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect),
        cmocka_unit_test(test_pub),
        cmocka_unit_test(test_hpub),
        cmocka_unit_test(test_sub_unsub),
        cmocka_unit_test(test_ping_pong),
        cmocka_unit_test(test_case_insensitive),
        cmocka_unit_test(test_blanks),
        cmocka_unit_test(test_missing_cr),
        cmocka_unit_test(test_payload_crlf),
        cmocka_unit_test(test_arg_counts),
        cmocka_unit_test(test_bad_numbers),
        cmocka_unit_test(test_unknown_ops),
        cmocka_unit_test(test_max_payload),
        cmocka_unit_test(test_control_line_limit),
        cmocka_unit_test(test_error_text),
        cmocka_unit_test(test_sticky_result),
        cmocka_unit_test(test_stop),
        cmocka_unit_test(test_null_callbacks),
        cmocka_unit_test(test_split_session),
        cmocka_unit_test(test_split_errors),
        cmocka_unit_test(test_zero_copy),
        cmocka_unit_test(test_buffered),
        cmocka_unit_test(test_large_split_payload),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
