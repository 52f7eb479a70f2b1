/* Subjects and the subscription index of the bus.
 *
 * Subjects (NATS_WIRE.md 2): tokens separated by '.', no empty token, no
 * whitespace (space, tab, CR, LF, FF) anywhere, case-sensitive, any other
 * bytes allowed. In a pattern, "*" (a whole token) matches exactly one token
 * and ">" (a whole, last token) one or more trailing tokens; "foo*" is a
 * literal token.
 *
 * The index maps patterns to subscriptions: opaque pointers owned by the
 * caller, each inserted with its pattern and optional queue name. A match of
 * a literal subject yields every matching plain subscription and, per
 * matching (pattern, queue) group, its members; the caller picks one member
 * per group. Results are cached per subject; a cached result is valid until
 * the next insert or remove on the index.
 *
 * Not thread-safe; one loop thread owns an index. */
#ifndef UB_BUS_SUBLIST_H
#define UB_BUS_SUBLIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SL_MAX_TOKENS 256 /* subjects with more tokens are invalid */
#define SL_MATCH_KEEP 8   /* see sl_match */

/* The bus's string hash (not keyed: use it only for tables whose chain
 * length an adversary can inflate by a bounded amount). */
uint64_t sl_hash(const char *s, size_t len);

/* Validation. A literal subject has no wildcard token. */
bool sl_subject_valid(const char *s, size_t len);   /* wildcards allowed */
bool sl_subject_literal(const char *s, size_t len); /* valid, no wildcards */
/* A queue name: non-empty, no whitespace, no wildcard token. */
bool sl_queue_valid(const char *q, size_t len);

/* True when the literal subject s matches pattern p (both valid). */
bool sl_pattern_match(const char *p, size_t plen, const char *s, size_t slen);

/* True when every subject matched by pattern a is matched by pattern b
 * (both valid): "room.x.*" within "room.x.>", "a.b" within "a.*", but not
 * "room.>" within "room.x.>". For subscription permissions. */
bool sl_pattern_within(const char *a, size_t alen, const char *b, size_t blen);

struct sl_group {
    const char *queue; /* the group's queue name (not NUL-terminated) */
    size_t queue_len;
    void *const *subs; /* its members matching the subject */
    size_t n;
};

struct sl_result {
    void *const *subs; /* plain (non-queue) subscriptions */
    size_t n;
    const struct sl_group *groups;
    size_t ngroups;
};

struct sl_index; /* Opaque. */

struct sl_index *sl_index_new(void);
void sl_index_free(struct sl_index *x); /* the subscriptions are not touched */

/* Inserts sub under pattern (valid, checked) and queue (NULL/0 for none).
 * The same sub pointer must not be inserted twice. Returns 0, -1 for an
 * invalid pattern or queue, -2 when out of memory. */
int sl_insert(struct sl_index *x, const char *pattern, size_t plen,
              const char *queue, size_t qlen, void *sub);

/* Removes sub inserted under exactly this pattern and queue. Returns 0, or
 * -1 when it was not there. */
int sl_remove(struct sl_index *x, const char *pattern, size_t plen,
              const char *queue, size_t qlen, void *sub);

/* Matches a literal subject (the caller validated it). The result is owned
 * by the index, valid until the next sl_insert/sl_remove/sl_index_free and
 * across at least the next SL_MATCH_KEEP sl_match calls (the cache is
 * bounded, so a stream of new subjects eventually frees old results).
 * Returns NULL only when out of memory. */
const struct sl_result *sl_match(struct sl_index *x, const char *subject,
                                 size_t len);

/* Number of subscriptions in the index. */
size_t sl_count(const struct sl_index *x);

/* Number of trie nodes (one per distinct pattern prefix in use) and of
 * cached subjects; for tests and statistics. */
size_t sl_node_count(const struct sl_index *x);
size_t sl_cache_count(const struct sl_index *x);

#endif
