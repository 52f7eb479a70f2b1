/* The NATS client protocol parser; see proto.h.
 *
 * Shape: nats-server steps one state per byte (OP_P, OP_PU, OP_PUB, ...).
 * Here the states are per phase instead: a control line is located with
 * memchr and parsed whole, then its payload is taken as one block. That
 * keeps the per-op cost to a memchr, a short token scan and a compare of
 * two bytes after the payload, and it makes zero copy the natural case.
 * Only an op cut by the end of the input goes through the parser's own
 * buffers: line[] for the control line and payload for the payload.
 *
 * Every check is a function of the bytes alone, never of where the input
 * was cut, so a stream gives the same ops and the same result however it is
 * split (the fuzz target checks exactly this). The one check made before a
 * line is complete, line_check(), therefore decides by byte position. */
#include "bus/proto.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* A payload buffer grown beyond this is freed when its op completes, so one
 * large split message does not pin memory for the life of the connection. */
#define BP_PAYLOAD_KEEP (64 * 1024)
/* Smallest payload buffer: spares reallocations for small messages. */
#define BP_PAYLOAD_MIN 4096
/* Most arguments an op takes: HPUB subject reply #hdr #total. */
#define BP_MAX_ARGS 4

enum bp_state {
    BP_ST_LINE,    /* at the start of an op or inside its control line */
    BP_ST_PAYLOAD, /* copying a PUB/HPUB payload that arrives split */
    BP_ST_END_CR,  /* the split payload is complete; its CR must follow */
    BP_ST_END_LF,  /* ... and then its LF */
};

struct bp_parser {
    struct bp_callbacks cb;
    void *arg;
    size_t max_control;
    size_t max_payload;
    enum bp_state state;
    int result;         /* BP_OK until an error or a stop, then sticky */
    struct bp_pub pub;  /* the PUB/HPUB whose payload is being read */
    uint8_t *payload;   /* owned; a payload that arrived split */
    size_t payload_cap; /* bytes allocated at payload */
    size_t payload_len; /* bytes of pub.total_len received so far */
    size_t line_len;    /* bytes held in line[] */
    uint8_t line[];     /* max_control + 2: a line, its CR, one more byte */
};

struct tok {
    const uint8_t *s;
    size_t n;
};

/* The op names, lower case. A bare op may end the line right after its
 * name; the others need a space or tab there. */
static const struct op_name {
    const char *name;
    size_t len;
    bool bare;
} op_names[] = {
    { "pub", 3, false },   { "hpub", 4, false },    { "sub", 3, false },
    { "unsub", 5, false }, { "connect", 7, false }, { "ping", 4, true },
    { "pong", 4, true },
};

const char *bp_error_text(int code)
{
    switch (code) {
        case BP_ERR_UNKNOWN_OP:
            return "Unknown Protocol Operation";
        case BP_ERR_CONTROL_LINE:
            return "maximum control line exceeded";
        case BP_ERR_MAX_PAYLOAD:
            return "Maximum Payload Violation";
        default:
            return NULL;
    }
}

static inline bool is_blank(uint8_t c)
{
    return c == ' ' || c == '\t';
}

/* Argument separators. A CR inside a line also separates, as in
 * nats-server's splitArg, so no token (a sid echoed in MSG lines, say) can
 * carry one. */
static inline bool is_sep(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/* Case-insensitive match of s against a lower-case name of len letters.
 * (c | 0x20) folds only letters onto the lower-case name: no other byte
 * maps to a letter. */
static inline bool name_is(const uint8_t *s, const char *name, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if ((s[i] | 0x20) != name[i]) {
            return false;
        }
    }
    return true;
}

/* An op with arguments: its name, then a space or tab. */
static inline bool op_is(const uint8_t *s,
                         size_t n,
                         const char *name,
                         size_t len)
{
    return n > len && is_blank(s[len]) && name_is(s, name, len);
}

/* A bare op: its name, then nothing but whitespace. */
static bool bare_op_is(const uint8_t *s, size_t n, const char *name, size_t len)
{
    if (n < len || !name_is(s, name, len)) {
        return false;
    }
    for (size_t i = len; i < n; i++) {
        if (!is_sep(s[i])) {
            return false;
        }
    }
    return true;
}

/* Index of the first byte of s[0..n) at which no op name can match any
 * more (its name, then the byte allowed after it), or n if none. */
static size_t op_bad_at(const uint8_t *s, size_t n)
{
    size_t best = 0;

    for (size_t i = 0; i < sizeof op_names / sizeof op_names[0]; i++) {
        const struct op_name *o = &op_names[i];
        size_t k = 0;

        while (k < o->len && k < n && (s[k] | 0x20) == o->name[k]) {
            k++;
        }
        if (k == n) {
            return n; /* still a prefix of this op */
        }
        if (k == o->len && (is_blank(s[k]) || (o->bare && s[k] == '\r'))) {
            return n; /* the name and its separator: the op is decided */
        }
        if (k > best) {
            best = k;
        }
    }
    return best;
}

/* The first error in n bytes of a control line seen so far (no LF among
 * them): an op name that cannot match (BP_ERR_UNKNOWN_OP) or the line
 * passing max_control (BP_ERR_CONTROL_LINE), whichever comes first in the
 * line; BP_OK when neither has happened yet. The line may end in a CR that
 * is not counted, so the limit is passed at byte max_control unless that
 * byte is a CR, and then at the byte after it (which is not the LF). */
static int line_check(const struct bp_parser *p, const uint8_t *s, size_t n)
{
    size_t max = p->max_control;
    size_t bad = op_bad_at(s, n);
    size_t over = n; /* n: not passed */

    if (n > max) {
        if (s[max] != '\r') {
            over = max;
        } else if (n > max + 1) {
            over = max + 1;
        }
    }
    if (bad < n && bad <= over) {
        return BP_ERR_UNKNOWN_OP;
    }
    return over < n ? BP_ERR_CONTROL_LINE : BP_OK;
}

/* Splits s[0..n) at runs of separators into at most max tokens. Returns the
 * count, or max + 1 when there are more. Tokens are never empty. */
static size_t split_args(const uint8_t *s, size_t n, struct tok *t, size_t max)
{
    size_t count = 0;
    size_t i = 0;

    for (;;) {
        size_t start;

        while (i < n && is_sep(s[i])) {
            i++;
        }
        if (i == n) {
            return count;
        }
        if (count == max) {
            return max + 1;
        }
        start = i;
        while (i < n && !is_sep(s[i])) {
            i++;
        }
        t[count].s = s + start;
        t[count].n = i - start;
        count++;
    }
}

/* A decimal number of digits only, at most limit. */
static bool parse_num(const struct tok *t, uint64_t limit, uint64_t *out)
{
    uint64_t v = 0;

    for (size_t i = 0; i < t->n; i++) {
        unsigned d = (unsigned)t->s[i] - '0';
        if (d > 9 || v > (limit - d) / 10) {
            return false;
        }
        v = v * 10 + d;
    }
    *out = v;
    return t->n > 0;
}

/* PUB subject [reply] #bytes; HPUB subject [reply] #hdr #total. On success
 * p->pub holds the op (without its data) and the state is BP_ST_PAYLOAD. */
static int parse_pub(struct bp_parser *p, const uint8_t *s, size_t n, bool hpub)
{
    struct tok t[BP_MAX_ARGS];
    size_t want = hpub ? 3 : 2; /* without the reply */
    size_t nt = split_args(s, n, t, BP_MAX_ARGS);
    uint64_t total;
    uint64_t hdr = 0;

    if (nt != want && nt != want + 1) {
        return BP_ERR_UNKNOWN_OP;
    }
    /* nats-server's order: a bad number or #hdr > #total is a protocol
     * error before the size is compared with max_payload. */
    if (hpub && !parse_num(&t[nt - 2], UINT64_MAX, &hdr)) {
        return BP_ERR_UNKNOWN_OP;
    }
    if (!parse_num(&t[nt - 1], UINT64_MAX, &total) || hdr > total) {
        return BP_ERR_UNKNOWN_OP;
    }
    if (total > p->max_payload) {
        return BP_ERR_MAX_PAYLOAD;
    }
    p->pub.subject = (const char *)t[0].s;
    p->pub.subject_len = t[0].n;
    if (nt == want + 1) {
        p->pub.reply = (const char *)t[1].s;
        p->pub.reply_len = t[1].n;
    } else {
        p->pub.reply = NULL;
        p->pub.reply_len = 0;
    }
    p->pub.data = NULL;
    p->pub.hdr_len = (size_t)hdr;
    p->pub.total_len = (size_t)total;
    p->pub.has_headers = hpub;
    p->state = BP_ST_PAYLOAD;
    return BP_OK;
}

/* SUB subject [queue] sid */
static int parse_sub(struct bp_parser *p, const uint8_t *s, size_t n)
{
    struct tok t[3];
    size_t nt = split_args(s, n, t, 3);
    struct bp_sub sub;

    if (nt != 2 && nt != 3) {
        return BP_ERR_UNKNOWN_OP;
    }
    sub.subject = (const char *)t[0].s;
    sub.subject_len = t[0].n;
    sub.queue = nt == 3 ? (const char *)t[1].s : NULL;
    sub.queue_len = nt == 3 ? t[1].n : 0;
    sub.sid = (const char *)t[nt - 1].s;
    sub.sid_len = t[nt - 1].n;
    if (p->cb.on_sub != NULL && p->cb.on_sub(p->arg, &sub) != 0) {
        return BP_STOPPED;
    }
    return BP_OK;
}

/* UNSUB sid [max_msgs] */
static int parse_unsub(struct bp_parser *p, const uint8_t *s, size_t n)
{
    struct tok t[2];
    size_t nt = split_args(s, n, t, 2);
    struct bp_unsub unsub;
    uint64_t max = 0;

    if (nt != 1 && nt != 2) {
        return BP_ERR_UNKNOWN_OP;
    }
    if (nt == 2 && !parse_num(&t[1], INT64_MAX, &max)) {
        return BP_ERR_UNKNOWN_OP;
    }
    unsub.sid = (const char *)t[0].s;
    unsub.sid_len = t[0].n;
    unsub.max_msgs = nt == 2 ? (int64_t)max : -1;
    if (p->cb.on_unsub != NULL && p->cb.on_unsub(p->arg, &unsub) != 0) {
        return BP_STOPPED;
    }
    return BP_OK;
}

/* CONNECT <json>: the rest of the line after its leading blanks. */
static int parse_connect(struct bp_parser *p, const uint8_t *s, size_t n)
{
    size_t i = 0;

    while (i < n && is_blank(s[i])) {
        i++;
    }
    if (i == n) {
        return BP_ERR_UNKNOWN_OP;
    }
    if (p->cb.on_connect != NULL &&
        p->cb.on_connect(p->arg, (const char *)s + i, n - i) != 0) {
        return BP_STOPPED;
    }
    return BP_OK;
}

static int call_bare(struct bp_parser *p, int (*cb)(void *arg))
{
    return cb != NULL && cb(p->arg) != 0 ? BP_STOPPED : BP_OK;
}

/* One complete control line s[0..n), without its CR LF and within
 * max_control. A PUB/HPUB only sets up p->pub and BP_ST_PAYLOAD; every
 * other op is delivered here. */
static int parse_line(struct bp_parser *p, const uint8_t *s, size_t n)
{
    if (n == 0) {
        return BP_ERR_UNKNOWN_OP;
    }
    /* Dispatch on the first letter, in either case. */
    switch (s[0] | 0x20) {
        case 'p':
            if (op_is(s, n, "pub", 3)) {
                return parse_pub(p, s + 4, n - 4, false);
            }
            if (bare_op_is(s, n, "ping", 4)) {
                return call_bare(p, p->cb.on_ping);
            }
            if (bare_op_is(s, n, "pong", 4)) {
                return call_bare(p, p->cb.on_pong);
            }
            break;
        case 'h':
            if (op_is(s, n, "hpub", 4)) {
                return parse_pub(p, s + 5, n - 5, true);
            }
            break;
        case 's':
            if (op_is(s, n, "sub", 3)) {
                return parse_sub(p, s + 4, n - 4);
            }
            break;
        case 'u':
            if (op_is(s, n, "unsub", 5)) {
                return parse_unsub(p, s + 6, n - 6);
            }
            break;
        case 'c':
            if (op_is(s, n, "connect", 7)) {
                return parse_connect(p, s + 8, n - 8);
            }
            break;
        default:
            break;
    }
    return BP_ERR_UNKNOWN_OP;
}

/* Delivers p->pub (data set) and makes ready for the next op. */
static int finish_pub(struct bp_parser *p)
{
    bool stop = p->cb.on_pub != NULL && p->cb.on_pub(p->arg, &p->pub) != 0;

    p->state = BP_ST_LINE;
    p->line_len = 0;
    p->payload_len = 0;
    if (p->payload_cap > BP_PAYLOAD_KEEP) {
        free(p->payload);
        p->payload = NULL;
        p->payload_cap = 0;
    }
    return stop ? BP_STOPPED : BP_OK;
}

/* After a PUB/HPUB line (line[0..line_n), in buf or in p->line): delivers
 * the op at once when payload and CR LF are all in buf, else keeps the line
 * and prepares p->payload for the bytes to come. */
static int start_payload(struct bp_parser *p,
                         const uint8_t *line,
                         size_t line_n,
                         const uint8_t *buf,
                         size_t len,
                         size_t *pos)
{
    size_t total = p->pub.total_len;
    size_t avail = len - *pos;

    if (avail >= 2 && avail - 2 >= total) {
        const uint8_t *d = buf + *pos;
        if (d[total] != '\r' || d[total + 1] != '\n') {
            return BP_ERR_UNKNOWN_OP;
        }
        *pos += total + 2;
        p->pub.data = d;
        return finish_pub(p);
    }
    /* Split: subject and reply must outlive buf, so keep the line. */
    if (line != p->line) {
        const uint8_t *subject = (const uint8_t *)p->pub.subject;
        memcpy(p->line, line, line_n);
        p->line_len = line_n;
        p->pub.subject = (const char *)p->line + (subject - line);
        if (p->pub.reply != NULL) {
            const uint8_t *reply = (const uint8_t *)p->pub.reply;
            p->pub.reply = (const char *)p->line + (reply - line);
        }
    }
    if (total > p->payload_cap) {
        size_t cap = total < BP_PAYLOAD_MIN ? BP_PAYLOAD_MIN : total;
        free(p->payload);
        p->payload = malloc(cap);
        p->payload_cap = p->payload != NULL ? cap : 0;
        if (p->payload == NULL) {
            return BP_ERR_NOMEM;
        }
    }
    p->payload_len = 0;
    p->state = total > 0 ? BP_ST_PAYLOAD : BP_ST_END_CR;
    return BP_OK;
}

/* A complete control line line[0..n) (without its LF, in buf or in
 * p->line) whose payload, if any, starts at buf + *pos. */
static int do_line(struct bp_parser *p,
                   const uint8_t *line,
                   size_t n,
                   const uint8_t *buf,
                   size_t len,
                   size_t *pos)
{
    size_t content = n > 0 && line[n - 1] == '\r' ? n - 1 : n;
    int rc;

    if (content > p->max_control) {
        /* Which error comes first in the line: see line_check. */
        rc = line_check(p, line, n);
        return rc != BP_OK ? rc : BP_ERR_CONTROL_LINE;
    }
    rc = parse_line(p, line, content);
    if (rc != BP_OK || p->state != BP_ST_PAYLOAD) {
        p->line_len = 0;
        return rc;
    }
    return start_payload(p, line, n, buf, len, pos);
}

/* BP_ST_LINE: finds the end of the control line at buf + *pos. */
static int read_line(struct bp_parser *p,
                     const uint8_t *buf,
                     size_t len,
                     size_t *pos)
{
    const uint8_t *s = buf + *pos;
    size_t avail = len - *pos;
    /* Without an LF in its first max_control + 2 bytes a line is surely
     * too long (see line_check), so never look or hold further. */
    size_t window = p->max_control + 2 - p->line_len;
    size_t scan = avail < window ? avail : window;
    const uint8_t *lf = memchr(s, '\n', scan);
    size_t n;

    if (lf == NULL) {
        memcpy(p->line + p->line_len, s, scan);
        p->line_len += scan;
        *pos += scan;
        return line_check(p, p->line, p->line_len);
    }
    n = (size_t)(lf - s);
    *pos += n + 1;
    if (p->line_len == 0) {
        return do_line(p, s, n, buf, len, pos); /* zero copy */
    }
    memcpy(p->line + p->line_len, s, n);
    p->line_len += n;
    return do_line(p, p->line, p->line_len, buf, len, pos);
}

struct bp_parser *bp_parser_new(const struct bp_callbacks *cb,
                                void *arg,
                                size_t max_control,
                                size_t max_payload)
{
    struct bp_parser *p;

    if (max_control == 0) {
        max_control = BP_DEFAULT_MAX_CONTROL;
    }
    if (max_payload == 0) {
        max_payload = BP_DEFAULT_MAX_PAYLOAD;
    }
    if (max_control > SIZE_MAX - sizeof *p - 2) {
        return NULL;
    }
    p = calloc(1, sizeof *p + max_control + 2);
    if (p == NULL) {
        return NULL;
    }
    if (cb != NULL) {
        p->cb = *cb;
    }
    p->arg = arg;
    p->max_control = max_control;
    p->max_payload = max_payload;
    p->state = BP_ST_LINE;
    p->result = BP_OK;
    return p;
}

void bp_parser_free(struct bp_parser *p)
{
    if (p == NULL) {
        return;
    }
    free(p->payload);
    free(p);
}

int bp_parse(struct bp_parser *p, const uint8_t *buf, size_t len)
{
    size_t pos = 0;
    int rc = BP_OK;

    if (p->result != BP_OK) {
        return p->result;
    }
    while (pos < len && rc == BP_OK) {
        switch (p->state) {
            case BP_ST_LINE:
                rc = read_line(p, buf, len, &pos);
                break;
            case BP_ST_PAYLOAD: {
                size_t want = p->pub.total_len - p->payload_len;
                size_t n = len - pos < want ? len - pos : want;
                memcpy(p->payload + p->payload_len, buf + pos, n);
                p->payload_len += n;
                pos += n;
                if (p->payload_len == p->pub.total_len) {
                    p->state = BP_ST_END_CR;
                }
                break;
            }
            case BP_ST_END_CR:
                if (buf[pos++] != '\r') {
                    rc = BP_ERR_UNKNOWN_OP;
                } else {
                    p->state = BP_ST_END_LF;
                }
                break;
            case BP_ST_END_LF:
                if (buf[pos++] != '\n') {
                    rc = BP_ERR_UNKNOWN_OP;
                } else {
                    /* A zero-length payload never needed a buffer; data
                     * still points at valid memory. */
                    p->pub.data = p->payload != NULL ? p->payload : p->line;
                    rc = finish_pub(p);
                }
                break;
        }
    }
    p->result = rc;
    return rc;
}

size_t bp_buffered(const struct bp_parser *p)
{
    return p->line_len + p->payload_len;
}
