/* Unit tests of src/bus/route_codec.h: interest and message frames round
 * trip byte for byte, every limit holds at its edge on both the encoder and
 * the decoder, and malformed frames (truncated, over a limit, invalid
 * subjects or queues, unknown types) are refused with a reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bus/route_codec.h"

#define S(lit) (lit), (sizeof(lit) - 1)

/* ------------------------------------------------------------------------ */
/* Helpers. */

static void must_decode(const uint8_t *buf, size_t len, struct brc_frame *fr)
{
    const char *why = NULL;
    if (brc_decode(buf, len, fr, &why) != 0) {
        fail_msg("decode failed: %s", why);
    }
}

static void must_refuse(const uint8_t *buf, size_t len)
{
    struct brc_frame fr;
    const char *why = NULL;
    assert_int_equal(brc_decode(buf, len, &fr, &why), -1);
    assert_non_null(why);
}

static struct bmsg msg(const char *subject, const char *reply,
                       const char *data, size_t hdr_len)
{
    struct bmsg m;
    m.subject = subject;
    m.subject_len = strlen(subject);
    m.reply = reply;
    m.reply_len = reply ? strlen(reply) : 0;
    m.data = (const uint8_t *)data;
    m.total_len = strlen(data);
    m.hdr_len = hdr_len;
    return m;
}

/* Re-encodes a decoded message frame and checks it gives the same bytes. */
static void check_canonical_msg(const uint8_t *buf, size_t len,
                                const struct brc_frame *fr)
{
    struct brc_buf b = { 0 };
    assert_int_equal(brc_put_msg(&b, &fr->msg, fr->queues, fr->queue_lens,
                                 fr->nq),
                     0);
    assert_int_equal(b.len, len);
    assert_memory_equal(b.p, buf, len);
    brc_buf_free(&b);
}

/* ------------------------------------------------------------------------ */
/* Interest frames. */

static void test_interest_round_trip(void **state)
{
    struct brc_buf b = { 0 };
    struct brc_frame fr;
    struct brc_interest it;
    size_t pos = 0;
    (void)state;

    assert_int_equal(brc_put_interest(&b, BRC_INTEREST_ADD, S("foo.*.bar"),
                                      NULL, 0),
                     0);
    assert_int_equal(brc_put_interest(&b, BRC_INTEREST_ADD, S("room.x.>"),
                                      S("workers")),
                     0);
    assert_int_equal(brc_put_interest(&b, BRC_INTEREST_ADD, S("a"), NULL, 0),
                     0);
    assert_int_equal(b.len, 1 + brc_interest_entry_size(9, 0) +
                                brc_interest_entry_size(8, 7) +
                                brc_interest_entry_size(1, 0));
    must_decode(b.p, b.len, &fr);
    assert_int_equal(fr.type, BRC_INTEREST_ADD);
    assert_int_equal(fr.n_entries, 3);

    assert_true(brc_interest_next(&fr, &pos, &it));
    assert_int_equal(it.plen, 9);
    assert_memory_equal(it.pattern, "foo.*.bar", 9);
    assert_null(it.queue);
    assert_int_equal(it.qlen, 0);
    assert_true(brc_interest_next(&fr, &pos, &it));
    assert_memory_equal(it.pattern, "room.x.>", 8);
    assert_int_equal(it.qlen, 7);
    assert_memory_equal(it.queue, "workers", 7);
    assert_true(brc_interest_next(&fr, &pos, &it));
    assert_memory_equal(it.pattern, "a", 1);
    assert_false(brc_interest_next(&fr, &pos, &it));

    /* The wire bytes are exactly as documented. */
    {
        static const uint8_t want[] = { 2, 0, 3, 0, 1, 'a', '.', 'b', 'q' };
        struct brc_buf d = { 0 };
        assert_int_equal(brc_put_interest(&d, BRC_INTEREST_DEL, S("a.b"),
                                          S("q")),
                         0);
        assert_int_equal(d.len, sizeof want);
        assert_memory_equal(d.p, want, sizeof want);
        must_decode(d.p, d.len, &fr);
        assert_int_equal(fr.type, BRC_INTEREST_DEL);
        assert_int_equal(fr.n_entries, 1);
        brc_buf_free(&d);
    }
    brc_buf_free(&b);
}

static void test_interest_limits(void **state)
{
    char big[BRC_MAX_SUBJECT + 2];
    char q[BRC_MAX_QUEUE + 2];
    struct brc_buf b = { 0 };
    struct brc_frame fr;
    (void)state;

    memset(big, 'x', sizeof big);
    memset(q, 'q', sizeof q);
    assert_true(brc_interest_ok(big, BRC_MAX_SUBJECT, NULL, 0));
    assert_false(brc_interest_ok(big, BRC_MAX_SUBJECT + 1, NULL, 0));
    assert_true(brc_interest_ok(S("a"), q, BRC_MAX_QUEUE));
    assert_false(brc_interest_ok(S("a"), q, BRC_MAX_QUEUE + 1));
    assert_false(brc_interest_ok("", 0, NULL, 0));
    assert_false(brc_interest_ok(S("a..b"), NULL, 0));
    assert_false(brc_interest_ok(S("a b"), NULL, 0));
    assert_false(brc_interest_ok(S(">.a"), NULL, 0));
    assert_false(brc_interest_ok(S("a"), S("q q")));
    assert_false(brc_interest_ok(S("a"), S("*")));

    /* The encoder refuses what the decoder would, leaving b unchanged. */
    assert_int_equal(brc_put_interest(&b, BRC_INTEREST_ADD, big,
                                      BRC_MAX_SUBJECT + 1, NULL, 0),
                     -1);
    assert_int_equal(b.len, 0);
    assert_int_equal(brc_put_interest(&b, BRC_MSG, S("a"), NULL, 0), -1);
    assert_int_equal(brc_put_interest(&b, BRC_INTEREST_ADD, big,
                                      BRC_MAX_SUBJECT, q, BRC_MAX_QUEUE),
                     0);
    must_decode(b.p, b.len, &fr);
    assert_int_equal(fr.n_entries, 1);

    /* A hand-made entry one byte over each limit is refused. */
    b.p[1] = (uint8_t)((BRC_MAX_SUBJECT + 1) >> 8);
    b.p[2] = (uint8_t)(BRC_MAX_SUBJECT + 1);
    b.p[3] = (uint8_t)((BRC_MAX_QUEUE - 1) >> 8);
    b.p[4] = (uint8_t)(BRC_MAX_QUEUE - 1);
    must_refuse(b.p, b.len);
    b.p[1] = (uint8_t)((BRC_MAX_SUBJECT - 1) >> 8);
    b.p[2] = (uint8_t)(BRC_MAX_SUBJECT - 1);
    b.p[3] = (uint8_t)((BRC_MAX_QUEUE + 1) >> 8);
    b.p[4] = (uint8_t)(BRC_MAX_QUEUE + 1);
    must_refuse(b.p, b.len);
    brc_buf_free(&b);
}

static void test_interest_malformed(void **state)
{
    struct brc_buf b = { 0 };
    size_t first;
    (void)state;

    assert_int_equal(brc_put_interest(&b, BRC_INTEREST_ADD, S("foo.bar"),
                                      S("g")),
                     0);
    first = b.len;
    assert_int_equal(brc_put_interest(&b, BRC_INTEREST_ADD, S("x.>"), NULL,
                                      0),
                     0);
    /* Every truncation fails except at the entry boundary. */
    for (size_t len = 0; len < b.len; len++) {
        struct brc_frame fr;
        int rv = brc_decode(b.p, len, &fr, NULL);
        assert_int_equal(rv, len == first ? 0 : -1);
    }
    /* A type byte alone is an empty interest frame. */
    must_refuse((const uint8_t[]){ BRC_INTEREST_ADD }, 1);
    must_refuse((const uint8_t[]){ BRC_INTEREST_DEL }, 1);
    /* Zero-length pattern. */
    must_refuse((const uint8_t[]){ BRC_INTEREST_ADD, 0, 0, 0, 0 }, 5);
    /* Invalid pattern and queue bytes. */
    must_refuse((const uint8_t[]){ BRC_INTEREST_ADD, 0, 2, 0, 0, 'a', '.' },
                7);
    must_refuse((const uint8_t[]){ BRC_INTEREST_ADD, 0, 1, 0, 1, 'a', '>' },
                7);
    must_refuse((const uint8_t[]){ BRC_INTEREST_ADD, 0, 1, 0, 1, 'a', ' ' },
                7);
    /* A trailing partial entry. */
    must_refuse((const uint8_t[]){ BRC_INTEREST_ADD, 0, 1, 0, 0, 'a', 0 }, 7);
    brc_buf_free(&b);
}

/* ------------------------------------------------------------------------ */
/* Message frames. */

static void test_msg_round_trip(void **state)
{
    const char *queues[2] = { "workers", "audit" };
    size_t lens[2] = { 7, 5 };
    static const char data[] = "NATS/1.0\r\nX: 1\r\n\r\nhello";
    struct bmsg m = msg("orders.new", "_INBOX.me.1", data, 18);
    struct brc_buf b = { 0 };
    struct brc_frame fr;
    (void)state;

    assert_int_equal(brc_msg_size(&m, queues, lens, 2),
                     BRC_MSG_FIXED + 10 + 11 + 2 + 7 + 2 + 5 + strlen(data));
    assert_int_equal(brc_put_msg(&b, &m, queues, lens, 2), 0);
    assert_int_equal(b.len, brc_msg_size(&m, queues, lens, 2));
    must_decode(b.p, b.len, &fr);
    assert_int_equal(fr.type, BRC_MSG);
    assert_int_equal(fr.msg.subject_len, 10);
    assert_memory_equal(fr.msg.subject, "orders.new", 10);
    assert_int_equal(fr.msg.reply_len, 11);
    assert_memory_equal(fr.msg.reply, "_INBOX.me.1", 11);
    assert_int_equal(fr.msg.hdr_len, 18);
    assert_int_equal(fr.msg.total_len, strlen(data));
    assert_memory_equal(fr.msg.data, data, strlen(data));
    assert_int_equal(fr.nq, 2);
    assert_memory_equal(fr.queues[0], "workers", 7);
    assert_int_equal(fr.queue_lens[1], 5);
    assert_memory_equal(fr.queues[1], "audit", 5);
    check_canonical_msg(b.p, b.len, &fr);

    /* No reply, no headers, no payload, no queues: the smallest frame. */
    m = msg("a", NULL, "", 0);
    assert_int_equal(brc_put_msg(&b, &m, NULL, NULL, 0), 0);
    {
        static const uint8_t want[] = { 3, 0, 0, 1, 0, 0, 0, 0, 0, 0, 'a' };
        assert_int_equal(b.len, sizeof want);
        assert_memory_equal(b.p, want, sizeof want);
    }
    must_decode(b.p, b.len, &fr);
    assert_null(fr.msg.reply);
    assert_int_equal(fr.msg.reply_len, 0);
    assert_int_equal(fr.msg.total_len, 0);
    assert_int_equal(fr.nq, 0);
    check_canonical_msg(b.p, b.len, &fr);
    brc_buf_free(&b);
}

static void test_msg_limits(void **state)
{
    char subj[BRC_MAX_SUBJECT + 1];
    char qname[BRC_MAX_QUEUE + 1];
    const char *queues[BRC_MAX_QUEUES + 1];
    size_t lens[BRC_MAX_QUEUES + 1];
    uint8_t *data;
    struct bmsg m;
    struct brc_buf b = { 0 };
    struct brc_frame fr;
    (void)state;

    memset(subj, 's', sizeof subj);
    memset(qname, 'q', sizeof qname);
    m = msg("a", NULL, "", 0);

    /* Subject and reply at and over the limit. */
    m.subject = subj;
    m.subject_len = BRC_MAX_SUBJECT;
    m.reply = subj;
    m.reply_len = BRC_MAX_SUBJECT;
    assert_int_equal(brc_put_msg(&b, &m, NULL, NULL, 0), 0);
    must_decode(b.p, b.len, &fr);
    check_canonical_msg(b.p, b.len, &fr);
    m.subject_len = BRC_MAX_SUBJECT + 1;
    assert_int_equal(brc_msg_size(&m, NULL, NULL, 0), 0);
    assert_int_equal(brc_put_msg(&b, &m, NULL, NULL, 0), -1);
    m.subject_len = BRC_MAX_SUBJECT;
    m.reply_len = BRC_MAX_SUBJECT + 1;
    assert_int_equal(brc_msg_size(&m, NULL, NULL, 0), 0);
    m.reply = NULL;
    m.reply_len = 0;
    m.subject_len = 0;
    assert_int_equal(brc_msg_size(&m, NULL, NULL, 0), 0);

    /* Queue names and their number. */
    m.subject = "a";
    m.subject_len = 1;
    for (int i = 0; i <= BRC_MAX_QUEUES; i++) {
        queues[i] = qname;
        lens[i] = BRC_MAX_QUEUE;
    }
    assert_int_equal(brc_put_msg(&b, &m, queues, lens, BRC_MAX_QUEUES), 0);
    must_decode(b.p, b.len, &fr);
    assert_int_equal(fr.nq, BRC_MAX_QUEUES);
    check_canonical_msg(b.p, b.len, &fr);
    assert_int_equal(brc_msg_size(&m, queues, lens, BRC_MAX_QUEUES + 1), 0);
    lens[0] = BRC_MAX_QUEUE + 1;
    assert_int_equal(brc_msg_size(&m, queues, lens, 1), 0);
    lens[0] = 0;
    assert_int_equal(brc_msg_size(&m, queues, lens, 1), 0);
    queues[0] = "a b";
    lens[0] = 3;
    assert_int_equal(brc_msg_size(&m, queues, lens, 1), 0);

    /* Headers and payload at and over their limits. */
    data = calloc(1, BRC_MAX_HEADERS + BRC_MAX_PAYLOAD + 1);
    assert_non_null(data);
    m.data = data;
    m.hdr_len = BRC_MAX_HEADERS;
    m.total_len = BRC_MAX_HEADERS + BRC_MAX_PAYLOAD;
    assert_int_equal(brc_put_msg(&b, &m, NULL, NULL, 0), 0);
    assert_true(b.len <= BRC_MAX_FRAME);
    must_decode(b.p, b.len, &fr);
    assert_int_equal(fr.msg.hdr_len, BRC_MAX_HEADERS);
    assert_int_equal(fr.msg.total_len, BRC_MAX_HEADERS + BRC_MAX_PAYLOAD);
    m.total_len++;
    assert_int_equal(brc_msg_size(&m, NULL, NULL, 0), 0);
    m.hdr_len++;
    assert_int_equal(brc_msg_size(&m, NULL, NULL, 0), 0);
    m.hdr_len = 10;
    m.total_len = 9;
    assert_int_equal(brc_msg_size(&m, NULL, NULL, 0), 0);
    free(data);

    /* The largest valid frame is BRC_MAX_FRAME. */
    m.subject = subj;
    m.subject_len = BRC_MAX_SUBJECT;
    m.reply = subj;
    m.reply_len = BRC_MAX_SUBJECT;
    m.hdr_len = BRC_MAX_HEADERS;
    m.total_len = BRC_MAX_HEADERS + BRC_MAX_PAYLOAD;
    for (int i = 0; i < BRC_MAX_QUEUES; i++) {
        queues[i] = qname;
        lens[i] = BRC_MAX_QUEUE;
    }
    assert_int_equal(brc_msg_size(&m, queues, lens, BRC_MAX_QUEUES),
                     BRC_MAX_FRAME);
    brc_buf_free(&b);
}

static void test_msg_malformed(void **state)
{
    const char *queues[1] = { "g" };
    size_t lens[1] = { 1 };
    struct bmsg m = msg("a.b", "r", "HHpp", 2);
    struct brc_buf b = { 0 };
    struct brc_frame fr;
    size_t fixed_end;
    (void)state;

    assert_int_equal(brc_put_msg(&b, &m, queues, lens, 1), 0);
    /* Truncated anywhere before the data, or inside the headers: refused.
     * Truncating the payload leaves a valid, shorter message. */
    fixed_end = BRC_MSG_FIXED + 3 + 1 + 2 + 1;
    for (size_t len = 0; len < b.len; len++) {
        int rv = brc_decode(b.p, len, &fr, NULL);
        assert_int_equal(rv, len >= fixed_end + 2 ? 0 : -1);
    }

    /* Field by field: {offset, value} patches of the valid frame. */
    {
        static const struct {
            size_t off;
            uint8_t v;
        } bad[] = {
            { 0, 0 },                    /* unknown type */
            { 0, 4 },                    /* unknown type */
            { 0, 255 },                  /* unknown type */
            { 1, BRC_MAX_QUEUES + 1 },   /* too many queues */
            { 1, 2 },                    /* queue list runs past the frame */
            { 3, 0 },                    /* empty subject */
            { 2, 0x10 },                 /* subject over the limit */
            { 4, 0x10 },                 /* reply over the limit */
            { 6, 0x10 },                 /* headers over the limit */
            { 9, 5 },                    /* headers past the data */
            { 10, '*' },                 /* wildcard subject */
            { 11, ' ' },                 /* space in subject */
            { 13, '>' },                 /* wildcard reply */
            { 14, 0 },                   /* queue length high byte */
            { 15, 0 },                   /* empty queue name */
            { 16, '>' },                 /* wildcard queue name */
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            uint8_t *copy = malloc(b.len);
            assert_non_null(copy);
            memcpy(copy, b.p, b.len);
            copy[bad[i].off] = bad[i].v;
            if (bad[i].off == 14) {
                copy[14] = 0x01; /* queue length 257 */
                copy[15] = 0x01;
            }
            if (brc_decode(copy, b.len, &fr, NULL) == 0) {
                fail_msg("patch %zu (offset %zu) decoded", i, bad[i].off);
            }
            free(copy);
        }
    }
    /* Sanity of the offsets above: the unpatched frame decodes. */
    must_decode(b.p, b.len, &fr);
    assert_memory_equal(b.p + 10, "a.b", 3);
    assert_int_equal(b.p[13], 'r');
    assert_int_equal(b.p[14], 0);
    assert_int_equal(b.p[15], 1);
    assert_int_equal(b.p[16], 'g');
    must_refuse(NULL, 0);
    brc_buf_free(&b);
}

/* Decoding random bytes never reads out of bounds, and whatever decodes
 * re-encodes to the same bytes (the fuzz target does this at scale). */
static void test_random_frames(void **state)
{
    uint8_t buf[64];
    uint64_t x = 12345;
    unsigned ok = 0;
    (void)state;

    for (int round = 0; round < 200000; round++) {
        size_t len = (size_t)(round % (int)sizeof buf);
        struct brc_frame fr;
        for (size_t i = 0; i < len; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf[i] = (uint8_t)x;
        }
        if (len > 0) {
            buf[0] = (uint8_t)(1 + buf[0] % 3);
        }
        if (len > 2 && buf[0] == BRC_MSG) {
            buf[1] %= 3;     /* few queues */
            buf[2] = 0;      /* short subject */
            buf[3] %= 8;
        }
        if (brc_decode(buf, len, &fr, NULL) == 0) {
            ok++;
            if (fr.type == BRC_MSG) {
                check_canonical_msg(buf, len, &fr);
            }
        }
    }
    (void)ok;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_interest_round_trip),
        cmocka_unit_test(test_interest_limits),
        cmocka_unit_test(test_interest_malformed),
        cmocka_unit_test(test_msg_round_trip),
        cmocka_unit_test(test_msg_limits),
        cmocka_unit_test(test_msg_malformed),
        cmocka_unit_test(test_random_frames),
    };

    return cmocka_run_group_tests_name("bus_route_codec", tests, NULL, NULL);
}
