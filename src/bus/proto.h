/* The NATS client protocol parser (server side): a pure state machine that
 * turns the bytes a client sends into operations, accepting input split at
 * any byte. No I/O, no allocation beyond its own bounded buffer.
 *
 * Wire facts (NATS_WIRE.md 1.1-1.6): ops are case-insensitive; arguments are
 * separated by runs of spaces or tabs; a control line ends in LF with an
 * optional CR before it; PUB/HPUB are followed by exactly #bytes of payload
 * and then exactly CR LF. Ops understood: CONNECT <json>, PUB, HPUB, SUB,
 * UNSUB, PING, PONG. (+OK/-ERR/INFO/MSG from a client are unknown ops.)
 *
 * Zero copy where possible: when a whole control line (and payload) lies in
 * the buffer given to bp_parse(), the pointers handed to callbacks point into
 * that buffer; otherwise into the parser's own buffer. Either way they are
 * valid only during the callback.
 *
 * Limits: the control line (op and arguments, without CR LF) is at most
 * max_control bytes (NATS: 4096), checked as soon as it is exceeded, even
 * before the LF arrives; a payload (HPUB: headers + payload) is at most
 * max_payload bytes, checked when the PUB/HPUB line is parsed. */
#ifndef UB_BUS_PROTO_H
#define UB_BUS_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define BP_DEFAULT_MAX_CONTROL 4096
#define BP_DEFAULT_MAX_PAYLOAD (1024 * 1024)

enum bp_code {
    BP_OK = 0,
    BP_STOPPED,         /* a callback returned non-zero; parsing stopped */
    BP_ERR_UNKNOWN_OP,  /* unknown op, bad arguments, bad framing */
    BP_ERR_CONTROL_LINE, /* control line longer than max_control */
    BP_ERR_MAX_PAYLOAD, /* #bytes over max_payload */
    BP_ERR_NOMEM,       /* no memory to hold a split payload */
};

/* The exact -ERR text NATS servers send for a code ("Unknown Protocol
 * Operation", "maximum control line exceeded", "Maximum Payload
 * Violation"); NULL for BP_OK, BP_STOPPED and BP_ERR_NOMEM (not the
 * client's fault: close without -ERR). */
const char *bp_error_text(int code);

/* A PUB or HPUB. For PUB hdr_len is 0 and has_headers 0; for HPUB
 * has_headers is 1 and data holds hdr_len bytes of headers followed by the
 * payload, total_len bytes in all (hdr_len <= total_len is enforced). */
struct bp_pub {
    const char *subject;
    size_t subject_len;
    const char *reply; /* NULL when absent */
    size_t reply_len;
    const uint8_t *data;
    size_t hdr_len;
    size_t total_len;
    int has_headers;
};

struct bp_sub {
    const char *subject;
    size_t subject_len;
    const char *queue; /* NULL when absent */
    size_t queue_len;
    const char *sid;
    size_t sid_len;
};

/* max_msgs is -1 when absent. */
struct bp_unsub {
    const char *sid;
    size_t sid_len;
    int64_t max_msgs;
};

/* Each callback returns 0 to go on, anything else to stop: bp_parse() then
 * returns BP_STOPPED at once (the connection is closing). A NULL callback
 * ignores its op. json is the CONNECT argument as sent (not NUL-terminated). */
struct bp_callbacks {
    int (*on_connect)(void *arg, const char *json, size_t len);
    int (*on_pub)(void *arg, const struct bp_pub *pub);
    int (*on_sub)(void *arg, const struct bp_sub *sub);
    int (*on_unsub)(void *arg, const struct bp_unsub *unsub);
    int (*on_ping)(void *arg);
    int (*on_pong)(void *arg);
};

struct bp_parser; /* Opaque. */

/* max_control 0 = BP_DEFAULT_MAX_CONTROL; max_payload 0 =
 * BP_DEFAULT_MAX_PAYLOAD. Returns NULL when out of memory. */
struct bp_parser *bp_parser_new(const struct bp_callbacks *cb, void *arg,
                                size_t max_control, size_t max_payload);
void bp_parser_free(struct bp_parser *p);

/* Feeds len bytes. Returns BP_OK when all were consumed (a partial op stays
 * buffered), BP_STOPPED, or an error code; after an error or a stop the
 * parser must not be fed again. */
int bp_parse(struct bp_parser *p, const uint8_t *buf, size_t len);

/* Bytes held for an op not yet complete (for memory accounting). */
size_t bp_buffered(const struct bp_parser *p);

#endif
