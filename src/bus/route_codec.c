/* Frames of the bus routes (route_codec.h). Every length is checked against
 * the bytes left before it is used, and every limit before anything is
 * read past it. */
#include "bus/route_codec.h"

#include <stdlib.h>
#include <string.h>

#include "bus/sublist.h"

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | p[3];
}

static uint8_t *put16(uint8_t *p, size_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
    return p + 2;
}

static uint8_t *put32(uint8_t *p, size_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
    return p + 4;
}

static uint8_t *put_bytes(uint8_t *p, const void *s, size_t n)
{
    if (n > 0) {
        memcpy(p, s, n);
    }
    return p + n;
}

bool brc_interest_ok(const char *pattern, size_t plen, const char *queue,
                     size_t qlen)
{
    if (plen == 0 || plen > BRC_MAX_SUBJECT ||
        !sl_subject_valid(pattern, plen)) {
        return false;
    }
    return qlen == 0 || (qlen <= BRC_MAX_QUEUE && sl_queue_valid(queue, qlen));
}

size_t brc_interest_entry_size(size_t plen, size_t qlen)
{
    return BRC_INTEREST_FIXED + plen + qlen;
}

/* Reads the entry at *pos of body[0..len) without checking its contents;
 * false when its lengths run past the end. */
static bool entry_at(const uint8_t *body, size_t len, size_t *pos,
                     struct brc_interest *out)
{
    size_t left = len - *pos, plen, qlen;
    const uint8_t *p = body + *pos;

    if (left < BRC_INTEREST_FIXED) {
        return false;
    }
    plen = get16(p);
    qlen = get16(p + 2);
    if (left - BRC_INTEREST_FIXED < plen + qlen) {
        return false;
    }
    out->pattern = (const char *)p + BRC_INTEREST_FIXED;
    out->plen = plen;
    out->queue = qlen ? out->pattern + plen : NULL;
    out->qlen = qlen;
    *pos += BRC_INTEREST_FIXED + plen + qlen;
    return true;
}

static int decode_interest(const uint8_t *body, size_t len,
                           struct brc_frame *out, const char **why)
{
    size_t pos = 0, n = 0;
    struct brc_interest e;

    if (len == 0) {
        *why = "empty interest frame";
        return -1;
    }
    while (pos < len) {
        if (!entry_at(body, len, &pos, &e)) {
            *why = "interest entry runs past the frame";
            return -1;
        }
        if (!brc_interest_ok(e.pattern, e.plen, e.queue, e.qlen)) {
            *why = "invalid interest pattern or queue";
            return -1;
        }
        n++;
    }
    out->entries = body;
    out->entries_len = len;
    out->n_entries = n;
    return 0;
}

static int decode_msg(const uint8_t *body, size_t len, struct brc_frame *out,
                      const char **why)
{
    size_t nq, slen, rlen, hlen, pos, i;

    if (len < BRC_MSG_FIXED - 1) {
        *why = "short message header";
        return -1;
    }
    nq = body[0];
    slen = get16(body + 1);
    rlen = get16(body + 3);
    hlen = get32(body + 5);
    pos = BRC_MSG_FIXED - 1;
    if (nq > BRC_MAX_QUEUES || slen == 0 || slen > BRC_MAX_SUBJECT ||
        rlen > BRC_MAX_SUBJECT || hlen > BRC_MAX_HEADERS) {
        *why = "message header over a limit";
        return -1;
    }
    if (len - pos < slen + rlen) {
        *why = "message subject runs past the frame";
        return -1;
    }
    out->msg.subject = (const char *)body + pos;
    out->msg.subject_len = slen;
    pos += slen;
    out->msg.reply = rlen ? (const char *)body + pos : NULL;
    out->msg.reply_len = rlen;
    pos += rlen;
    if (!sl_subject_literal(out->msg.subject, slen) ||
        (rlen > 0 && !sl_subject_literal(out->msg.reply, rlen))) {
        *why = "invalid message subject or reply";
        return -1;
    }
    for (i = 0; i < nq; i++) {
        size_t qlen;
        if (len - pos < 2) {
            *why = "message queue list runs past the frame";
            return -1;
        }
        qlen = get16(body + pos);
        pos += 2;
        if (qlen == 0 || qlen > BRC_MAX_QUEUE || len - pos < qlen) {
            *why = "bad message queue name length";
            return -1;
        }
        if (!sl_queue_valid((const char *)body + pos, qlen)) {
            *why = "invalid message queue name";
            return -1;
        }
        out->queues[i] = (const char *)body + pos;
        out->queue_lens[i] = qlen;
        pos += qlen;
    }
    out->nq = nq;
    if (len - pos < hlen) {
        *why = "message headers run past the frame";
        return -1;
    }
    if (len - pos - hlen > BRC_MAX_PAYLOAD) {
        *why = "message payload over the limit";
        return -1;
    }
    out->msg.data = body + pos;
    out->msg.hdr_len = hlen;
    out->msg.total_len = len - pos;
    return 0;
}

int brc_decode(const uint8_t *buf, size_t len, struct brc_frame *out,
               const char **why)
{
    const char *dummy;

    if (why == NULL) {
        why = &dummy;
    }
    memset(out, 0, offsetof(struct brc_frame, queues));
    out->nq = 0;
    if (len < 1) {
        *why = "empty frame";
        return -1;
    }
    switch (buf[0]) {
    case BRC_INTEREST_ADD:
    case BRC_INTEREST_DEL:
        out->type = (enum brc_type)buf[0];
        return decode_interest(buf + 1, len - 1, out, why);
    case BRC_MSG:
        out->type = BRC_MSG;
        return decode_msg(buf + 1, len - 1, out, why);
    default:
        *why = "unknown frame type";
        return -1;
    }
}

bool brc_interest_next(const struct brc_frame *f, size_t *pos,
                       struct brc_interest *out)
{
    if (f->type != BRC_INTEREST_ADD && f->type != BRC_INTEREST_DEL) {
        return false;
    }
    if (*pos >= f->entries_len) {
        return false;
    }
    return entry_at(f->entries, f->entries_len, pos, out);
}

void brc_buf_free(struct brc_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

static int reserve(struct brc_buf *b, size_t need)
{
    size_t cap;
    uint8_t *p;

    if (need <= b->cap) {
        return 0;
    }
    cap = b->cap ? b->cap : 256;
    while (cap < need) {
        cap *= 2;
    }
    p = realloc(b->p, cap);
    if (p == NULL) {
        return -2;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

int brc_put_interest(struct brc_buf *b, enum brc_type type,
                     const char *pattern, size_t plen, const char *queue,
                     size_t qlen)
{
    size_t start = b->len ? b->len : 1;
    uint8_t *p;

    if ((type != BRC_INTEREST_ADD && type != BRC_INTEREST_DEL) ||
        !brc_interest_ok(pattern, plen, queue, qlen)) {
        return -1;
    }
    if (reserve(b, start + brc_interest_entry_size(plen, qlen)) != 0) {
        return -2;
    }
    b->p[0] = (uint8_t)type;
    p = b->p + start;
    p = put16(p, plen);
    p = put16(p, qlen);
    p = put_bytes(p, pattern, plen);
    p = put_bytes(p, queue, qlen);
    b->len = (size_t)(p - b->p);
    return 0;
}

size_t brc_msg_size(const struct bmsg *m, const char *const *queues,
                    const size_t *queue_lens, size_t nq)
{
    size_t rlen = m->reply ? m->reply_len : 0;
    size_t size, i;

    if (nq > BRC_MAX_QUEUES || m->subject_len == 0 ||
        m->subject_len > BRC_MAX_SUBJECT || rlen > BRC_MAX_SUBJECT ||
        m->hdr_len > BRC_MAX_HEADERS || m->hdr_len > m->total_len ||
        m->total_len - m->hdr_len > BRC_MAX_PAYLOAD) {
        return 0;
    }
    if (!sl_subject_literal(m->subject, m->subject_len) ||
        (rlen > 0 && !sl_subject_literal(m->reply, rlen))) {
        return 0;
    }
    size = BRC_MSG_FIXED + m->subject_len + rlen + m->total_len;
    for (i = 0; i < nq; i++) {
        if (queue_lens[i] == 0 || queue_lens[i] > BRC_MAX_QUEUE ||
            !sl_queue_valid(queues[i], queue_lens[i])) {
            return 0;
        }
        size += 2 + queue_lens[i];
    }
    return size;
}

int brc_put_msg(struct brc_buf *b, const struct bmsg *m,
                const char *const *queues, const size_t *queue_lens,
                size_t nq)
{
    size_t size = brc_msg_size(m, queues, queue_lens, nq);
    size_t rlen = m->reply ? m->reply_len : 0;
    uint8_t *p;

    if (size == 0) {
        return -1;
    }
    if (reserve(b, size) != 0) {
        return -2;
    }
    p = b->p;
    *p++ = BRC_MSG;
    *p++ = (uint8_t)nq;
    p = put16(p, m->subject_len);
    p = put16(p, rlen);
    p = put32(p, m->hdr_len);
    p = put_bytes(p, m->subject, m->subject_len);
    p = put_bytes(p, m->reply, rlen);
    for (size_t i = 0; i < nq; i++) {
        p = put16(p, queue_lens[i]);
        p = put_bytes(p, queues[i], queue_lens[i]);
    }
    p = put_bytes(p, m->data, m->total_len);
    b->len = (size_t)(p - b->p);
    return 0;
}
