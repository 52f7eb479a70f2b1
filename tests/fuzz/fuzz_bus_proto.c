/* Fuzz target: the NATS client protocol parser (src/bus/proto.h), which
 * reads everything a client sends to the bus.
 *
 * Input: one control byte, then the bytes a client sends. Control bits:
 *   0-2  chunk sizes: 1, 2, 3, 7, 64, random from the PRNG below, cut at
 *        every LF, or everything at once
 *   3-4  limits (max_control, max_payload): defaults, (16, 8), (64, 64),
 *        (8, 1)
 *   5    stop (return non-zero) from the callback of the 3rd op
 *   6-7  seed of the chunk-size PRNG
 * The stream is parsed once whole and once in chunks, each chunk in its own
 * heap buffer of exactly its size (so ASan sees reads past it). Invariants
 * (abort on violation): both parses deliver the same ops with the same
 * fields and bytes, and end with the same result; the result is a known
 * code; nothing is delivered after an error or a stop, and a later call
 * repeats the result; zero copy: when the whole stream is one buffer, every
 * pointer handed out lies in it; bp_buffered() never exceeds what the
 * limits allow. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_bus_proto: invariant violated: %s\n", what);
        abort();
    }
}

/* One delivered op, flattened: kind, then each field as (length, bytes). */
struct trace {
    uint8_t *buf;
    size_t len;
    size_t cap;
    int ops;
    int stop_at;       /* stop from the stop_at-th op; 0: never */
    bool stopped;      /* a callback returned non-zero */
    const uint8_t *lo; /* the current input buffer */
    const uint8_t *hi;
    bool require_inside; /* zero copy expected: pointers in [lo, hi) */
    size_t max_control;
    size_t max_payload;
};

static void put(struct trace *t, const void *p, size_t n)
{
    if (t->len + n > t->cap) {
        size_t cap = (t->len + n) * 2;
        uint8_t *nb = realloc(t->buf, cap);
        check(nb != NULL, "memory");
        t->buf = nb;
        t->cap = cap;
    }
    if (n > 0) {
        memcpy(t->buf + t->len, p, n);
    }
    t->len += n;
}

static void put_field(struct trace *t, const void *p, size_t n)
{
    uint64_t len = p == NULL ? UINT64_MAX : n;

    put(t, &len, sizeof len);
    if (p != NULL) {
        if (t->require_inside) {
            check(
                (const uint8_t *)p >= t->lo && (const uint8_t *)p + n <= t->hi,
                "zero copy: pointers into the input buffer");
        }
        put(t, p, n);
    }
}

static int op_done(struct trace *t)
{
    check(!t->stopped, "no op after a stop");
    t->ops++;
    if (t->stop_at != 0 && t->ops == t->stop_at) {
        t->stopped = true;
        return 1;
    }
    return 0;
}

static int on_connect(void *arg, const char *json, size_t len)
{
    struct trace *t = arg;

    check(json != NULL && len > 0, "CONNECT has an argument");
    check(len <= t->max_control, "CONNECT within the control line");
    put(t, "C", 1);
    put_field(t, json, len);
    return op_done(t);
}

static int on_pub(void *arg, const struct bp_pub *pub)
{
    struct trace *t = arg;
    uint64_t nums[3] = { pub->hdr_len, pub->total_len,
                         (uint64_t)pub->has_headers };

    check(pub->subject != NULL && pub->subject_len > 0, "PUB subject");
    check(pub->reply == NULL || pub->reply_len > 0, "PUB reply");
    check(pub->data != NULL, "PUB data");
    check(pub->hdr_len <= pub->total_len, "hdr_len <= total_len");
    check(pub->has_headers || pub->hdr_len == 0, "PUB has no headers");
    check(pub->total_len <= t->max_payload, "payload within max_payload");
    put(t, "P", 1);
    put_field(t, pub->subject, pub->subject_len);
    put_field(t, pub->reply, pub->reply_len);
    put(t, nums, sizeof nums);
    put_field(t, pub->data, pub->total_len);
    return op_done(t);
}

static int on_sub(void *arg, const struct bp_sub *sub)
{
    struct trace *t = arg;

    check(sub->subject != NULL && sub->subject_len > 0, "SUB subject");
    check(sub->queue == NULL || sub->queue_len > 0, "SUB queue");
    check(sub->sid != NULL && sub->sid_len > 0, "SUB sid");
    put(t, "S", 1);
    put_field(t, sub->subject, sub->subject_len);
    put_field(t, sub->queue, sub->queue_len);
    put_field(t, sub->sid, sub->sid_len);
    return op_done(t);
}

static int on_unsub(void *arg, const struct bp_unsub *unsub)
{
    struct trace *t = arg;

    check(unsub->sid != NULL && unsub->sid_len > 0, "UNSUB sid");
    check(unsub->max_msgs >= -1, "UNSUB max");
    put(t, "U", 1);
    put_field(t, unsub->sid, unsub->sid_len);
    put(t, &unsub->max_msgs, sizeof unsub->max_msgs);
    return op_done(t);
}

static int on_ping(void *arg)
{
    struct trace *t = arg;
    put(t, "I", 1);
    return op_done(t);
}

static int on_pong(void *arg)
{
    struct trace *t = arg;
    put(t, "O", 1);
    return op_done(t);
}

static const struct bp_callbacks callbacks = {
    .on_connect = on_connect,
    .on_pub = on_pub,
    .on_sub = on_sub,
    .on_unsub = on_unsub,
    .on_ping = on_ping,
    .on_pong = on_pong,
};

static bool known_code(int rc)
{
    return rc == BP_OK || rc == BP_STOPPED || rc == BP_ERR_UNKNOWN_OP ||
           rc == BP_ERR_CONTROL_LINE || rc == BP_ERR_MAX_PAYLOAD;
}

/* Feeds one chunk from its own exact-size copy. */
static int feed(struct bp_parser *p,
                struct trace *t,
                const uint8_t *s,
                size_t n)
{
    uint8_t *copy = malloc(n ? n : 1);
    int rc;

    check(copy != NULL, "memory");
    if (n > 0) {
        memcpy(copy, s, n);
    }
    t->lo = copy;
    t->hi = copy + n;
    rc = bp_parse(p, copy, n);
    check(known_code(rc), "a known result");
    check(rc != BP_STOPPED || t->stopped, "BP_STOPPED only after a stop");
    check(rc != BP_OK || !t->stopped, "a stop is reported");
    /* A partial op held between calls is bounded by the limits. */
    check(rc != BP_OK || bp_buffered(p) <= t->max_control + 2 + t->max_payload,
          "bounded buffering");
    free(copy);
    return rc;
}

static struct bp_parser *new_parser(struct trace *t, const uint8_t ctl)
{
    static const size_t limits[4][2] = {
        { 0, 0 }, { 16, 8 }, { 64, 64 }, { 8, 1 }
    };
    size_t mc = limits[(ctl >> 3) & 3][0];
    size_t mp = limits[(ctl >> 3) & 3][1];
    struct bp_parser *p = bp_parser_new(&callbacks, t, mc, mp);

    check(p != NULL, "bp_parser_new");
    t->max_control = mc ? mc : BP_DEFAULT_MAX_CONTROL;
    t->max_payload = mp ? mp : BP_DEFAULT_MAX_PAYLOAD;
    t->stop_at = (ctl & 0x20) ? 3 : 0;
    return p;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t chunks[5] = { 1, 2, 3, 7, 64 };
    struct trace whole = { 0 };
    struct trace split = { 0 };
    struct bp_parser *p;
    const uint8_t *s;
    size_t len;
    size_t off = 0;
    unsigned mode;
    uint32_t rng;
    int rc_whole;
    int rc = BP_OK;

    if (size < 1) {
        return 0;
    }
    s = data + 1;
    len = size - 1;
    mode = data[0] & 7;
    rng = 0x9e3779b9u ^ (uint32_t)(data[0] >> 6);

    /* Single shot, zero copy required. */
    p = new_parser(&whole, data[0]);
    whole.require_inside = true;
    rc_whole = feed(p, &whole, s, len);
    if (rc_whole != BP_OK) {
        int ops = whole.ops;
        check(feed(p, &whole, s, len) == rc_whole, "the result is sticky");
        check(whole.ops == ops, "nothing after an error or a stop");
    }
    bp_parser_free(p);

    /* The same bytes in chunks. */
    p = new_parser(&split, data[0]);
    while (off < len && rc == BP_OK) {
        size_t n;
        if (mode < 5) {
            n = chunks[mode];
        } else if (mode == 5) {
            rng = rng * 1103515245u + 12345u;
            n = 1 + (rng >> 16) % 97;
        } else if (mode == 6) {
            const uint8_t *lf = memchr(s + off, '\n', len - off);
            n = lf != NULL ? (size_t)(lf - (s + off)) + 1 : len - off;
        } else {
            n = len - off;
        }
        if (n > len - off) {
            n = len - off;
        }
        rc = feed(p, &split, s + off, n);
        off += n;
    }
    if (rc != BP_OK) {
        int ops = split.ops;
        check(feed(p, &split, s, len) == rc, "the result is sticky");
        check(split.ops == ops, "nothing after an error or a stop");
    }
    bp_parser_free(p);

    check(rc == rc_whole, "split and whole parses end alike");
    check(split.ops == whole.ops, "split and whole deliver as many ops");
    check(split.len == whole.len &&
              (whole.len == 0 || memcmp(split.buf, whole.buf, whole.len) == 0),
          "split and whole deliver the same ops");
    free(whole.buf);
    free(split.buf);
    return 0;
}
