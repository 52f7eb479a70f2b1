/* Frames of the bus routes (routes.c): the bytes inside one ub_framed frame
 * on a RT_KIND_BUS connection. Pure: no I/O, no state; decoding is strict so
 * that it can be fuzzed on its own.
 *
 * A frame is one type byte followed by its body; integers are big-endian.
 *
 *   INTEREST_ADD (1), INTEREST_DEL (2): one or more entries, back to back,
 *     up to the end of the frame:
 *       u16 plen, u16 qlen, pattern[plen], queue[qlen]
 *     1 <= plen <= BRC_MAX_SUBJECT and the pattern is a valid subject
 *     (wildcards allowed); qlen = 0 means no queue group, otherwise
 *     qlen <= BRC_MAX_QUEUE and the queue is a valid queue name.
 *
 *   MSG (3):
 *       u8 nq, u16 slen, u16 rlen, u32 hlen,
 *       subject[slen], reply[rlen], nq x (u16 qlen, queue[qlen]),
 *       data: the rest of the frame (hlen bytes of headers, then payload)
 *     1 <= slen <= BRC_MAX_SUBJECT, a literal subject; rlen = 0 means no
 *     reply, otherwise rlen <= BRC_MAX_SUBJECT and a literal subject;
 *     nq <= BRC_MAX_QUEUES queue groups the receiver must serve, each a valid
 *     queue name of 1..BRC_MAX_QUEUE bytes; hlen <= BRC_MAX_HEADERS and
 *     hlen <= the data length; the payload (data after the headers) is at
 *     most BRC_MAX_PAYLOAD bytes.
 *
 * Anything else (unknown type, empty interest frame, a length running past
 * the end, a limit exceeded, an invalid subject or queue) is malformed. The
 * encoding is canonical: re-encoding a decoded frame gives the same bytes. */
#ifndef UB_BUS_ROUTE_CODEC_H
#define UB_BUS_ROUTE_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bus/internal.h"

#define BRC_MAX_SUBJECT 4096         /* subject, reply or pattern bytes */
#define BRC_MAX_QUEUE 256            /* queue name bytes */
#define BRC_MAX_QUEUES 64            /* queue groups in one MSG */
#define BRC_MAX_HEADERS (1u << 20)   /* NATS header block bytes */
#define BRC_MAX_PAYLOAD (8u << 20)   /* payload bytes after the headers */
#define BRC_MSG_FIXED 10             /* type, nq, slen, rlen, hlen */
#define BRC_INTEREST_FIXED 4         /* plen, qlen of one entry */
/* The largest frame a valid MSG can need; interest frames are smaller. */
#define BRC_MAX_FRAME                                                    \
    (BRC_MSG_FIXED + 2 * BRC_MAX_SUBJECT +                               \
     BRC_MAX_QUEUES * (2 + BRC_MAX_QUEUE) + BRC_MAX_HEADERS +            \
     BRC_MAX_PAYLOAD)
/* Encoders start a new interest frame rather than grow one past this. */
#define BRC_INTEREST_BATCH (64u << 10)

enum brc_type {
    BRC_INTEREST_ADD = 1,
    BRC_INTEREST_DEL = 2,
    BRC_MSG = 3,
};

/* One interest entry; the pointers point into the frame. */
struct brc_interest {
    const char *pattern;
    size_t plen;
    const char *queue; /* NULL when qlen is 0 */
    size_t qlen;
};

/* A decoded frame. Every pointer points into the decoded buffer (borrowed:
 * valid as long as that buffer is). */
struct brc_frame {
    enum brc_type type;
    /* BRC_INTEREST_ADD/DEL: the validated entries, walked with
     * brc_interest_next. */
    const uint8_t *entries;
    size_t entries_len;
    size_t n_entries;
    /* BRC_MSG */
    struct bmsg msg;
    const char *queues[BRC_MAX_QUEUES];
    size_t queue_lens[BRC_MAX_QUEUES];
    size_t nq;
};

/* Decodes and validates the whole frame buf[0..len). Returns 0, or -1 with
 * a static reason in *why (if why is not NULL) for a malformed frame; *out
 * is then unspecified. */
int brc_decode(const uint8_t *buf, size_t len, struct brc_frame *out,
               const char **why);

/* Walks the entries of a decoded interest frame: *pos starts at 0; returns
 * false after the last entry. */
bool brc_interest_next(const struct brc_frame *f, size_t *pos,
                       struct brc_interest *out);

/* True when (pattern, queue) can be sent: a valid pattern within
 * BRC_MAX_SUBJECT, and no queue (qlen 0) or a valid one within
 * BRC_MAX_QUEUE. */
bool brc_interest_ok(const char *pattern, size_t plen, const char *queue,
                     size_t qlen);

/* Bytes one interest entry takes in a frame. */
size_t brc_interest_entry_size(size_t plen, size_t qlen);

/* A growable output buffer (owned by its user; brc_buf_free releases it). */
struct brc_buf {
    uint8_t *p;
    size_t len, cap;
};

void brc_buf_free(struct brc_buf *b);

/* Appends one entry to the interest frame of the given type in b, starting
 * the frame (its type byte) when b is empty. b must be empty or hold an
 * interest frame of the same type. Returns 0, -1 when brc_interest_ok()
 * refuses the entry, -2 when out of memory (b unchanged either way). */
int brc_put_interest(struct brc_buf *b, enum brc_type type,
                     const char *pattern, size_t plen, const char *queue,
                     size_t qlen);

/* The size of m's MSG frame with these queue groups, or 0 when it cannot be
 * sent: a limit exceeded, or an invalid subject, reply or queue name. */
size_t brc_msg_size(const struct bmsg *m, const char *const *queues,
                    const size_t *queue_lens, size_t nq);

/* Replaces b's contents with m's MSG frame. Returns 0, -1 when brc_msg_size
 * says 0, -2 when out of memory. */
int brc_put_msg(struct brc_buf *b, const struct bmsg *m,
                const char *const *queues, const size_t *queue_lens,
                size_t nq);

#endif
