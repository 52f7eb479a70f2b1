/* Fuzz target: the frames of the bus routes (src/bus/route_codec.h), which
 * every peer node's bytes go through before anything in routes.c acts on
 * them.
 *
 * Input: one whole frame (what one ub_framed frame carries).
 * Invariants (abort on violation):
 *   - brc_decode accepts or refuses with a reason; never reads past the end
 *     (ASan sees that: the driver gives each input its own exact buffer);
 *   - an accepted frame respects every documented limit, its pointers lie
 *     inside the input, its subjects and queue names are valid;
 *   - it is canonical: re-encoding what was decoded (brc_put_interest entry
 *     by entry, brc_put_msg) gives back exactly the input bytes, and
 *     brc_msg_size agrees with the length;
 *   - walking the entries of an interest frame yields n_entries entries.
 * Seeds in tests/fuzz/corpus/bus_route/ are hand-made valid frames of each
 * type, written by hand (the format is small enough). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/route_codec.h"
#include "bus/sublist.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_bus_route: invariant violated: %s\n", what);
        abort();
    }
}

static bool inside(const uint8_t *data, size_t size, const void *p, size_t n)
{
    const uint8_t *q = p;
    return n == 0 || (q >= data && q <= data + size && n <= size &&
                      (size_t)(q - data) <= size - n);
}

static void check_interest(const uint8_t *data, size_t size,
                           const struct brc_frame *fr)
{
    struct brc_buf b = { 0 };
    struct brc_interest it;
    size_t pos = 0, n = 0;

    check(fr->n_entries > 0, "an interest frame has entries");
    while (brc_interest_next(fr, &pos, &it)) {
        check(inside(data, size, it.pattern, it.plen), "pattern in input");
        check(inside(data, size, it.queue, it.qlen), "queue in input");
        check(it.plen >= 1 && it.plen <= BRC_MAX_SUBJECT, "pattern length");
        check(it.qlen <= BRC_MAX_QUEUE, "queue length");
        check((it.qlen == 0) == (it.queue == NULL), "queue NULL iff empty");
        check(sl_subject_valid(it.pattern, it.plen), "pattern valid");
        check(it.qlen == 0 || sl_queue_valid(it.queue, it.qlen),
              "queue valid");
        check(brc_put_interest(&b, fr->type, it.pattern, it.plen, it.queue,
                               it.qlen) == 0,
              "a decoded entry re-encodes");
        n++;
    }
    check(n == fr->n_entries, "the walk yields every entry");
    check(b.len == size && memcmp(b.p, data, size) == 0,
          "interest frames are canonical");
    brc_buf_free(&b);
}

static void check_msg(const uint8_t *data, size_t size,
                      const struct brc_frame *fr)
{
    const struct bmsg *m = &fr->msg;
    struct brc_buf b = { 0 };

    check(inside(data, size, m->subject, m->subject_len), "subject in input");
    check(inside(data, size, m->reply, m->reply_len), "reply in input");
    check(inside(data, size, m->data, m->total_len), "data in input");
    check(m->subject_len >= 1 && m->subject_len <= BRC_MAX_SUBJECT,
          "subject length");
    check(m->reply_len <= BRC_MAX_SUBJECT, "reply length");
    check((m->reply == NULL) == (m->reply_len == 0), "reply NULL iff empty");
    check(sl_subject_literal(m->subject, m->subject_len), "subject literal");
    check(m->reply == NULL || sl_subject_literal(m->reply, m->reply_len),
          "reply literal");
    check(m->hdr_len <= m->total_len && m->hdr_len <= BRC_MAX_HEADERS,
          "header length");
    check(m->total_len - m->hdr_len <= BRC_MAX_PAYLOAD, "payload length");
    check(m->data + m->total_len == data + size, "data runs to the end");
    check(fr->nq <= BRC_MAX_QUEUES, "queue count");
    for (size_t i = 0; i < fr->nq; i++) {
        check(inside(data, size, fr->queues[i], fr->queue_lens[i]),
              "queue name in input");
        check(fr->queue_lens[i] >= 1 && fr->queue_lens[i] <= BRC_MAX_QUEUE,
              "queue name length");
        check(sl_queue_valid(fr->queues[i], fr->queue_lens[i]),
              "queue name valid");
    }
    check(size <= BRC_MAX_FRAME, "within the maximum frame");
    check(brc_msg_size(m, fr->queues, fr->queue_lens, fr->nq) == size,
          "brc_msg_size agrees");
    check(brc_put_msg(&b, m, fr->queues, fr->queue_lens, fr->nq) == 0,
          "a decoded message re-encodes");
    check(b.len == size && memcmp(b.p, data, size) == 0,
          "message frames are canonical");
    brc_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct brc_frame *fr = malloc(sizeof *fr);
    const char *why = NULL;

    check(fr != NULL, "memory");
    if (brc_decode(data, size, fr, &why) != 0) {
        check(why != NULL && why[0] != '\0', "a refusal has a reason");
        free(fr);
        return 0;
    }
    check(size >= 1 && fr->type == data[0], "the type is the first byte");
    switch (fr->type) {
    case BRC_INTEREST_ADD:
    case BRC_INTEREST_DEL:
        check_interest(data, size, fr);
        break;
    case BRC_MSG:
        check_msg(data, size, fr);
        break;
    default:
        check(false, "a known type");
    }
    free(fr);
    return 0;
}
