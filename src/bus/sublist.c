/* Subjects and the subscription index (sublist.h).
 *
 * The index is a token trie in the manner of nats-server's sublist: a level
 * holds a hash table of literal tokens plus one "*" node and one ">" node;
 * each node (one per distinct pattern prefix) holds the plain subscriptions
 * and the queue groups of the pattern that ends there. A pattern maps to
 * exactly one node, so a node's queue group is exactly one (pattern, queue)
 * group, and a literal subject reaches each matching node once.
 *
 * In front of the trie sits a match cache: literal subject -> a result built
 * in one allocation (struct sl_centry followed by the group array, the
 * member pointers, the queue names and the subject). A hit is one hash of
 * the subject, one bucket walk and one memcmp; nothing is allocated.
 *
 * Invalidation. An insert or remove under pattern p changes the result of
 * exactly the subjects p matches. A literal p matches only the subject equal
 * to it: one cache lookup drops that entry (so SUB/UNSUB churn of inbox
 * subjects leaves the rest of the cache alone). A wildcard p drops the
 * cached subjects sl_pattern_match() says it matches, found by a scan of
 * the SL_CACHE_MAX slots that compares first-token hashes when p's first
 * token is literal (connection churn with muxed inboxes "_INBOX.<id>.*").
 *
 * Bounds. At most SL_CACHE_MAX entries; a miss on a full cache evicts one
 * entry at random. Evicted entries are parked in a ring of SL_MATCH_KEEP
 * and freed when pushed out of it (or at the next insert/remove), so a
 * result the caller still holds survives SL_MATCH_KEEP further matches
 * (sublist.h). A result with more than SL_CACHE_MAX_PTRS members is not
 * cached (its fan-out dwarfs the rebuild) and goes straight to that ring.
 * Removing the last subscription under a node frees the node and every
 * ancestor left empty, and level hash tables shrink as they empty, so
 * memory follows the live subscriptions, not their history. */
#include "bus/sublist.h"

#include <stdlib.h>
#include <string.h>

#define SL_CACHE_MAX 4096              /* cached subjects */
#define SL_CACHE_BUCKETS 8192          /* power of two, >= SL_CACHE_MAX */
#define SL_CACHE_MAX_PTRS 1024         /* bigger results are not cached */
#define SL_LEVEL_MIN_BUCKETS 4         /* first table of a level */

/* ------------------------------------------------------------------------ */
/* Hashing. */

/* A word-at-a-time multiply-xorshift hash with a murmur3 finaliser: about
 * 6 cycles per 8 bytes, which matters on the cache-hit path where FNV-1a's
 * byte-serial multiply chain would dominate. Not keyed: the trie's chains
 * are as long as an adversary's collisions (bounded by max_subs per
 * connection); the cache is bounded anyway. */
uint64_t sl_hash(const char *s, size_t len)
{
    uint64_t h = UINT64_C(0x9e3779b97f4a7c15) ^ ((uint64_t)len *
                                                  UINT64_C(0xff51afd7ed558ccd));
    uint64_t w;

    while (len >= 8) {
        memcpy(&w, s, 8);
        h = (h ^ w) * UINT64_C(0xbf58476d1ce4e5b9);
        h ^= h >> 29;
        s += 8;
        len -= 8;
    }
    if (len > 0) {
        w = 0;
        for (size_t i = 0; i < len; i++) {
            w |= (uint64_t)(unsigned char)s[i] << (8 * i);
        }
        h = (h ^ w) * UINT64_C(0x94d049bb133111eb);
        h ^= h >> 29;
    }
    h ^= h >> 33;
    h *= UINT64_C(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h *= UINT64_C(0xc4ceb9fe1a85ec53);
    h ^= h >> 33;
    return h;
}

/* ------------------------------------------------------------------------ */
/* Validation and pattern algebra. */

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f';
}

static bool is_star(const char *t, size_t len)
{
    return len == 1 && t[0] == '*';
}

static bool is_gt(const char *t, size_t len)
{
    return len == 1 && t[0] == '>';
}

/* Length of the token starting at s[0] (up to the next '.' or the end). */
static size_t tok_len(const char *s, size_t len)
{
    const char *dot = memchr(s, '.', len);
    return dot != NULL ? (size_t)(dot - s) : len;
}

static bool subject_check(const char *s, size_t len, bool wildcards)
{
    size_t start = 0;
    size_t ntok = 0;

    if (s == NULL || len == 0) {
        return false;
    }
    for (size_t i = 0; i <= len; i++) {
        if (i < len && s[i] != '.') {
            if (is_space(s[i])) {
                return false;
            }
            continue;
        }
        if (i == start || ++ntok > SL_MAX_TOKENS) {
            return false;
        }
        if (is_star(s + start, i - start) || is_gt(s + start, i - start)) {
            if (!wildcards || (s[start] == '>' && i != len)) {
                return false;
            }
        }
        start = i + 1;
    }
    return true;
}

bool sl_subject_valid(const char *s, size_t len)
{
    return subject_check(s, len, true);
}

bool sl_subject_literal(const char *s, size_t len)
{
    return subject_check(s, len, false);
}

bool sl_queue_valid(const char *q, size_t len)
{
    size_t start = 0;

    if (q == NULL || len == 0) {
        return false;
    }
    for (size_t i = 0; i <= len; i++) {
        if (i < len && q[i] != '.') {
            if (is_space(q[i])) {
                return false;
            }
            continue;
        }
        if (is_star(q + start, i - start) || is_gt(q + start, i - start)) {
            return false;
        }
        start = i + 1;
    }
    return true;
}

bool sl_pattern_match(const char *p, size_t plen, const char *s, size_t slen)
{
    for (;;) {
        size_t pt = tok_len(p, plen);
        size_t st;

        if (is_gt(p, pt)) {
            return slen > 0;
        }
        if (slen == 0) {
            return false;
        }
        st = tok_len(s, slen);
        if (!is_star(p, pt) && (pt != st || memcmp(p, s, pt) != 0)) {
            return false;
        }
        if (pt == plen || st == slen) {
            return pt == plen && st == slen;
        }
        p += pt + 1;
        plen -= pt + 1;
        s += st + 1;
        slen -= st + 1;
    }
}

bool sl_pattern_within(const char *a, size_t alen, const char *b, size_t blen)
{
    for (;;) {
        size_t bt = tok_len(b, blen);
        size_t at;

        if (is_gt(b, bt)) {
            return alen > 0; /* a has at least one more token */
        }
        if (alen == 0) {
            return false;
        }
        at = tok_len(a, alen);
        if (is_gt(a, at)) {
            return false; /* a matches any length, b a fixed one here */
        }
        if (!is_star(b, bt) &&
            (is_star(a, at) || at != bt || memcmp(a, b, at) != 0)) {
            return false;
        }
        if (at == alen || bt == blen) {
            return at == alen && bt == blen;
        }
        a += at + 1;
        alen -= at + 1;
        b += bt + 1;
        blen -= bt + 1;
    }
}

/* ------------------------------------------------------------------------ */
/* Structures. */

struct sl_node;

/* The children of a node (or the roots): literal tokens in a chained hash
 * table, the "*" and ">" tokens in their own slots. */
struct sl_level {
    struct sl_node **buckets; /* owned; NULL while no literal child */
    size_t nbuckets;          /* 0 or a power of two */
    size_t nlit;              /* literal children */
    struct sl_node *star;     /* owned; the "*" child */
    struct sl_node *gt;       /* owned; the ">" child */
};

/* One (pattern, queue) group. */
struct sl_qgroup {
    void **subs; /* owned array of borrowed subscriptions */
    size_t n;
    size_t cap;
    size_t qlen;
    char queue[]; /* not NUL-terminated */
};

struct sl_node {
    struct sl_node *chain;     /* next in the parent level's bucket */
    uint64_t hash;             /* of token (literal children only) */
    struct sl_level next;      /* children */
    void **subs;               /* owned array: plain subscriptions */
    size_t nsubs;
    size_t subs_cap;
    struct sl_qgroup **groups; /* owned array of owned groups */
    size_t ngroups;
    size_t groups_cap;
    size_t tlen;
    char token[]; /* not NUL-terminated */
};

/* A cached result, allocated in one block with its arrays. */
struct sl_centry {
    struct sl_centry *chain; /* next in the cache bucket */
    uint64_t hash;           /* of subject */
    size_t slot;             /* index in sl_index.cslots */
    size_t len;
    const char *subject;     /* points into the block */
    struct sl_result res;
};

/* A cached entry in the dense array, with the hash of its subject's first
 * token: a wildcard pattern whose first token is literal can only change
 * entries with that first token, so its invalidation scan compares
 * integers and touches only those entries. */
struct sl_cslot {
    uint64_t first;
    struct sl_centry *e;
};

struct sl_index {
    struct sl_level root;
    size_t count;  /* subscriptions */
    size_t nnodes; /* trie nodes */

    struct sl_centry **cbuckets; /* SL_CACHE_BUCKETS chains, lazily */
    struct sl_cslot *cslots;     /* dense array of the cached entries */
    size_t ncache;
    struct sl_centry *retired[SL_MATCH_KEEP]; /* ring, see the top */
    size_t retired_head;                      /* oldest */
    size_t nretired;
    uint64_t rng; /* xorshift64 state for eviction */

    /* Scratch of a cache miss: what the trie walk found. */
    void **scr_subs;
    size_t scr_nsubs;
    size_t scr_subs_cap;
    const struct sl_qgroup **scr_groups;
    size_t scr_ngroups;
    size_t scr_groups_cap;
    size_t scr_nptrs; /* plain subs plus group members */
};

struct sl_tok {
    const char *s;
    size_t len;
};

static const struct sl_result sl_empty_result = { NULL, 0, NULL, 0 };

/* Splits s into tokens; returns the count, or 0 when there are more than
 * SL_MAX_TOKENS (or s is empty). */
static size_t tokenize(const char *s, size_t len, struct sl_tok *t)
{
    size_t n = 0;

    if (len == 0) {
        return 0;
    }
    for (;;) {
        size_t l = tok_len(s, len);
        if (n == SL_MAX_TOKENS) {
            return 0;
        }
        t[n].s = s;
        t[n].len = l;
        n++;
        if (l == len) {
            return n;
        }
        s += l + 1;
        len -= l + 1;
    }
}

/* Returns array p (of elem-sized items, capacity *cap) grown to hold at
 * least need items, possibly moved; NULL when out of memory (p is then
 * untouched). */
static void *grow(void *p, size_t *cap, size_t need, size_t elem)
{
    size_t ncap = *cap ? *cap : 4;

    if (need <= *cap) {
        return p;
    }
    while (ncap < need) {
        ncap *= 2;
    }
    p = realloc(p, ncap * elem);
    if (p != NULL) {
        *cap = ncap;
    }
    return p;
}

/* Returns array p (of elem-sized items, n used) halved when less than a
 * quarter full, so that a node that once held many subscriptions gives the
 * memory back. */
static void *shrink(void *p, size_t *cap, size_t n, size_t elem)
{
    if (*cap > 8 && n < *cap / 4) {
        void *np = realloc(p, (*cap / 2) * elem);
        if (np != NULL) {
            *cap /= 2;
            return np;
        }
    }
    return p;
}

/* ------------------------------------------------------------------------ */
/* Levels. */

/* The literal child with token t (hash h). A subject token "*" or ">" is
 * literal too and finds nothing here: no literal child has such a token. */
static struct sl_node *level_find_lit(const struct sl_level *l, const char *t,
                                      size_t len, uint64_t h)
{
    struct sl_node *n;

    if (l->nbuckets == 0) {
        return NULL;
    }
    for (n = l->buckets[h & (l->nbuckets - 1)]; n != NULL; n = n->chain) {
        if (n->hash == h && n->tlen == len && memcmp(n->token, t, len) == 0) {
            return n;
        }
    }
    return NULL;
}

/* The child for pattern token t (hash h): the wildcard slots for "*" and
 * ">", else the literal child. */
static struct sl_node *level_find(const struct sl_level *l, const char *t,
                                  size_t len, uint64_t h)
{
    if (is_star(t, len)) {
        return l->star;
    }
    if (is_gt(t, len)) {
        return l->gt;
    }
    return level_find_lit(l, t, len, h);
}

/* Rehashes the literal children into nb buckets (a power of two). */
static int level_rehash(struct sl_level *l, size_t nb)
{
    struct sl_node **nbk = calloc(nb, sizeof *nbk);

    if (nbk == NULL) {
        return -1;
    }
    for (size_t i = 0; i < l->nbuckets; i++) {
        struct sl_node *n = l->buckets[i];
        while (n != NULL) {
            struct sl_node *next = n->chain;
            n->chain = nbk[n->hash & (nb - 1)];
            nbk[n->hash & (nb - 1)] = n;
            n = next;
        }
    }
    free(l->buckets);
    l->buckets = nbk;
    l->nbuckets = nb;
    return 0;
}

static int level_add(struct sl_level *l, struct sl_node *n)
{
    size_t b;

    if (is_star(n->token, n->tlen)) {
        l->star = n;
        return 0;
    }
    if (is_gt(n->token, n->tlen)) {
        l->gt = n;
        return 0;
    }
    if (l->nlit + 1 > l->nbuckets) {
        size_t nb = l->nbuckets ? l->nbuckets * 2 : SL_LEVEL_MIN_BUCKETS;
        /* A failed growth only lengthens chains, unless there is no
         * table at all. */
        if (level_rehash(l, nb) != 0 && l->nbuckets == 0) {
            return -1;
        }
    }
    b = n->hash & (l->nbuckets - 1);
    n->chain = l->buckets[b];
    l->buckets[b] = n;
    l->nlit++;
    return 0;
}

static void level_del(struct sl_level *l, struct sl_node *n)
{
    struct sl_node **pp;

    if (l->star == n) {
        l->star = NULL;
        return;
    }
    if (l->gt == n) {
        l->gt = NULL;
        return;
    }
    for (pp = &l->buckets[n->hash & (l->nbuckets - 1)]; *pp != n;
         pp = &(*pp)->chain) {
    }
    *pp = n->chain;
    l->nlit--;
    if (l->nlit == 0) {
        free(l->buckets);
        l->buckets = NULL;
        l->nbuckets = 0;
    } else if (l->nbuckets > SL_LEVEL_MIN_BUCKETS &&
               l->nlit < l->nbuckets / 4) {
        (void)level_rehash(l, l->nbuckets / 2); /* failure is harmless */
    }
}

static bool level_empty(const struct sl_level *l)
{
    return l->nlit == 0 && l->star == NULL && l->gt == NULL;
}

static bool node_empty(const struct sl_node *n)
{
    return n->nsubs == 0 && n->ngroups == 0 && level_empty(&n->next);
}

static void node_free(struct sl_node *n)
{
    for (size_t i = 0; i < n->ngroups; i++) {
        free(n->groups[i]->subs);
        free(n->groups[i]);
    }
    free(n->groups);
    free(n->subs);
    free(n->next.buckets);
    free(n);
}

/* Frees a whole subtree (sl_index_free). */
static void level_free_all(struct sl_level *l)
{
    for (size_t i = 0; i < l->nbuckets; i++) {
        struct sl_node *n = l->buckets[i];
        while (n != NULL) {
            struct sl_node *next = n->chain;
            level_free_all(&n->next);
            node_free(n);
            n = next;
        }
    }
    if (l->star != NULL) {
        level_free_all(&l->star->next);
        node_free(l->star);
    }
    if (l->gt != NULL) {
        level_free_all(&l->gt->next);
        node_free(l->gt);
    }
    free(l->buckets);
    memset(l, 0, sizeof *l);
}

/* Frees the empty tail of a path: path[i] is the node of token i, depth
 * nodes in all. */
static void prune(struct sl_index *x, struct sl_node **path, size_t depth)
{
    while (depth > 0) {
        struct sl_node *n = path[depth - 1];
        struct sl_level *parent = depth > 1 ? &path[depth - 2]->next
                                            : &x->root;
        if (!node_empty(n)) {
            return;
        }
        level_del(parent, n);
        node_free(n);
        x->nnodes--;
        depth--;
    }
}

/* ------------------------------------------------------------------------ */
/* Cache. */

static void cache_unlink(struct sl_index *x, struct sl_centry *e)
{
    struct sl_centry **pp = &x->cbuckets[e->hash & (SL_CACHE_BUCKETS - 1)];

    while (*pp != e) {
        pp = &(*pp)->chain;
    }
    *pp = e->chain;
    x->cslots[e->slot] = x->cslots[--x->ncache];
    x->cslots[e->slot].e->slot = e->slot;
}

/* Frees the parked results; called when the caller's results become
 * invalid anyway (insert, remove, free). */
static void retired_flush(struct sl_index *x)
{
    while (x->nretired > 0) {
        free(x->retired[x->retired_head]);
        x->retired_head = (x->retired_head + 1) % SL_MATCH_KEEP;
        x->nretired--;
    }
}

/* Parks e, freeing the oldest parked result when the ring is full. */
static void retire(struct sl_index *x, struct sl_centry *e)
{
    if (x->nretired == SL_MATCH_KEEP) {
        free(x->retired[x->retired_head]);
        x->retired[x->retired_head] = e;
        x->retired_head = (x->retired_head + 1) % SL_MATCH_KEEP;
        return;
    }
    x->retired[(x->retired_head + x->nretired) % SL_MATCH_KEEP] = e;
    x->nretired++;
}

static struct sl_centry *cache_find(const struct sl_index *x, const char *s,
                                    size_t len, uint64_t h)
{
    struct sl_centry *e;

    for (e = x->cbuckets[h & (SL_CACHE_BUCKETS - 1)]; e != NULL; e = e->chain) {
        if (e->hash == h && e->len == len && memcmp(e->subject, s, len) == 0) {
            return e;
        }
    }
    return NULL;
}

/* Drops the cached results that pattern p (valid) can change. */
static void cache_invalidate(struct sl_index *x, const char *p, size_t plen)
{
    if (x->ncache == 0) {
        return;
    }
    if (sl_subject_literal(p, plen)) {
        struct sl_centry *e = cache_find(x, p, plen, sl_hash(p, plen));
        if (e != NULL) {
            cache_unlink(x, e);
            free(e);
        }
        return;
    }
    /* Downwards, so that the swap-remove of cache_unlink() only moves
     * entries already looked at. */
    {
        size_t t0 = tok_len(p, plen);
        bool any = is_star(p, t0) || is_gt(p, t0);
        uint64_t first = any ? 0 : sl_hash(p, t0);
        for (size_t i = x->ncache; i-- > 0;) {
            struct sl_centry *e = x->cslots[i].e;
            if ((any || x->cslots[i].first == first) &&
                sl_pattern_match(p, plen, e->subject, e->len)) {
                cache_unlink(x, e);
                free(e);
            }
        }
    }
}

static uint64_t rng_next(struct sl_index *x)
{
    uint64_t v = x->rng;
    v ^= v << 13;
    v ^= v >> 7;
    v ^= v << 17;
    x->rng = v;
    return v;
}

/* ------------------------------------------------------------------------ */
/* Matching. */

static int collect_node(struct sl_index *x, const struct sl_node *n)
{
    if (n->nsubs > 0) {
        void **p = grow(x->scr_subs, &x->scr_subs_cap,
                        x->scr_nsubs + n->nsubs, sizeof *p);
        if (p == NULL) {
            return -1;
        }
        x->scr_subs = p;
        memcpy(x->scr_subs + x->scr_nsubs, n->subs,
               n->nsubs * sizeof *n->subs);
        x->scr_nsubs += n->nsubs;
        x->scr_nptrs += n->nsubs;
    }
    if (n->ngroups > 0) {
        const struct sl_qgroup **p = grow(x->scr_groups, &x->scr_groups_cap,
                                          x->scr_ngroups + n->ngroups,
                                          sizeof *p);
        if (p == NULL) {
            return -1;
        }
        x->scr_groups = p;
        for (size_t i = 0; i < n->ngroups; i++) {
            x->scr_groups[x->scr_ngroups++] = n->groups[i];
            x->scr_nptrs += n->groups[i]->n;
        }
    }
    return 0;
}

/* Collects the nodes of level l that match tokens i.. of t (i < n). */
static int collect(struct sl_index *x, const struct sl_level *l,
                   const struct sl_tok *t, size_t i, size_t n)
{
    const struct sl_node *c[2];

    if (l->gt != NULL && collect_node(x, l->gt) != 0) {
        return -1;
    }
    c[0] = l->star;
    c[1] = l->nlit > 0 ? level_find_lit(l, t[i].s, t[i].len,
                                        sl_hash(t[i].s, t[i].len))
                       : NULL;
    for (int k = 0; k < 2; k++) {
        if (c[k] == NULL) {
            continue;
        }
        if (i + 1 == n) {
            if (collect_node(x, c[k]) != 0) {
                return -1;
            }
        } else if (!level_empty(&c[k]->next) &&
                   collect(x, &c[k]->next, t, i + 1, n) != 0) {
            return -1;
        }
    }
    return 0;
}

/* Builds the result of the scratch into one block. */
static struct sl_centry *build(struct sl_index *x, const char *s, size_t len,
                               uint64_t h)
{
    size_t nptr = x->scr_nptrs;
    size_t qbytes = 0;
    size_t size;
    struct sl_centry *e;
    struct sl_group *groups;
    void **ptrs;
    char *chars;

    for (size_t i = 0; i < x->scr_ngroups; i++) {
        qbytes += x->scr_groups[i]->qlen;
    }
    size = sizeof *e + x->scr_ngroups * sizeof *groups + nptr * sizeof *ptrs +
           qbytes + len;
    e = malloc(size);
    if (e == NULL) {
        return NULL;
    }
    groups = (struct sl_group *)(e + 1);
    ptrs = (void **)(groups + x->scr_ngroups);
    chars = (char *)(ptrs + nptr);

    e->chain = NULL;
    e->hash = h;
    e->slot = 0;
    e->len = len;
    e->res.subs = ptrs;
    e->res.n = x->scr_nsubs;
    e->res.groups = groups;
    e->res.ngroups = x->scr_ngroups;
    if (x->scr_nsubs > 0) {
        memcpy(ptrs, x->scr_subs, x->scr_nsubs * sizeof *ptrs);
        ptrs += x->scr_nsubs;
    }
    for (size_t i = 0; i < x->scr_ngroups; i++) {
        const struct sl_qgroup *g = x->scr_groups[i];
        memcpy(chars, g->queue, g->qlen);
        groups[i].queue = chars;
        groups[i].queue_len = g->qlen;
        chars += g->qlen;
        memcpy(ptrs, g->subs, g->n * sizeof *ptrs);
        groups[i].subs = ptrs;
        groups[i].n = g->n;
        ptrs += g->n;
    }
    if (len > 0) {
        memcpy(chars, s, len);
    }
    e->subject = chars;
    return e;
}

static const struct sl_result *match_slow(struct sl_index *x, const char *s,
                                          size_t len, uint64_t h)
{
    struct sl_tok t[SL_MAX_TOKENS];
    size_t n = tokenize(s, len, t);
    struct sl_centry *e;

    if (n == 0) {
        return &sl_empty_result; /* not a subject (caller's contract) */
    }
    if (x->cbuckets == NULL) {
        x->cbuckets = calloc(SL_CACHE_BUCKETS, sizeof *x->cbuckets);
        x->cslots = malloc(SL_CACHE_MAX * sizeof *x->cslots);
        if (x->cbuckets == NULL || x->cslots == NULL) {
            free(x->cbuckets);
            free(x->cslots);
            x->cbuckets = NULL;
            x->cslots = NULL;
            return NULL;
        }
    }
    x->scr_nsubs = 0;
    x->scr_ngroups = 0;
    x->scr_nptrs = 0;
    if (!level_empty(&x->root) && collect(x, &x->root, t, 0, n) != 0) {
        return NULL;
    }
    e = build(x, s, len, h);
    if (e == NULL) {
        return NULL;
    }
    if (x->scr_nptrs > SL_CACHE_MAX_PTRS) {
        retire(x, e);
        return &e->res;
    }
    if (x->ncache == SL_CACHE_MAX) {
        struct sl_centry *victim = x->cslots[rng_next(x) % SL_CACHE_MAX].e;
        cache_unlink(x, victim);
        retire(x, victim);
    }
    e->chain = x->cbuckets[h & (SL_CACHE_BUCKETS - 1)];
    x->cbuckets[h & (SL_CACHE_BUCKETS - 1)] = e;
    e->slot = x->ncache;
    x->cslots[x->ncache].first = sl_hash(t[0].s, t[0].len);
    x->cslots[x->ncache++].e = e;
    return &e->res;
}

const struct sl_result *sl_match(struct sl_index *x, const char *subject,
                                 size_t len)
{
    uint64_t h = sl_hash(subject, len);

    if (x->cbuckets != NULL) {
        const struct sl_centry *e = cache_find(x, subject, len, h);
        if (e != NULL) {
            return &e->res;
        }
    }
    return match_slow(x, subject, len, h);
}

/* ------------------------------------------------------------------------ */
/* Index. */

struct sl_index *sl_index_new(void)
{
    struct sl_index *x = calloc(1, sizeof *x);

    if (x != NULL) {
        x->rng = UINT64_C(0x2545f4914f6cdd1d);
    }
    return x;
}

void sl_index_free(struct sl_index *x)
{
    if (x == NULL) {
        return;
    }
    level_free_all(&x->root);
    for (size_t i = 0; i < x->ncache; i++) {
        free(x->cslots[i].e);
    }
    retired_flush(x);
    free(x->cbuckets);
    free(x->cslots);
    free(x->scr_subs);
    free(x->scr_groups);
    free(x);
}

size_t sl_count(const struct sl_index *x)
{
    return x->count;
}

size_t sl_node_count(const struct sl_index *x)
{
    return x->nnodes;
}

size_t sl_cache_count(const struct sl_index *x)
{
    return x->ncache;
}

static struct sl_node *node_new(const char *t, size_t len, uint64_t h)
{
    struct sl_node *n = calloc(1, sizeof *n + len);

    if (n != NULL) {
        n->hash = h;
        n->tlen = len;
        memcpy(n->token, t, len);
    }
    return n;
}

static struct sl_qgroup *node_group(const struct sl_node *n, const char *q,
                                    size_t qlen, size_t *at)
{
    for (size_t i = 0; i < n->ngroups; i++) {
        struct sl_qgroup *g = n->groups[i];
        if (g->qlen == qlen && memcmp(g->queue, q, qlen) == 0) {
            *at = i;
            return g;
        }
    }
    return NULL;
}

/* Adds sub to node n; returns 0 or -1 (n unchanged). */
static int node_add(struct sl_node *n, const char *q, size_t qlen, void *sub)
{
    struct sl_qgroup *g;
    size_t at;

    if (qlen == 0) {
        void **p = grow(n->subs, &n->subs_cap, n->nsubs + 1, sizeof *p);
        if (p == NULL) {
            return -1;
        }
        n->subs = p;
        n->subs[n->nsubs++] = sub;
        return 0;
    }
    g = node_group(n, q, qlen, &at);
    if (g == NULL) {
        struct sl_qgroup **p = grow(n->groups, &n->groups_cap, n->ngroups + 1,
                                    sizeof *p);
        if (p == NULL) {
            return -1;
        }
        n->groups = p;
        g = calloc(1, sizeof *g + qlen);
        if (g == NULL) {
            return -1;
        }
        g->qlen = qlen;
        memcpy(g->queue, q, qlen);
        n->groups[n->ngroups++] = g;
    }
    {
        void **p = grow(g->subs, &g->cap, g->n + 1, sizeof *p);
        if (p == NULL) {
            if (g->n == 0) {
                n->ngroups--;
                free(g);
            }
            return -1;
        }
        g->subs = p;
    }
    g->subs[g->n++] = sub;
    return 0;
}

/* Removes sub from an array of n pointers; returns false when absent. The
 * order of the rest changes (last moved into the hole). */
static bool ptrs_del(void **arr, size_t *n, const void *sub)
{
    for (size_t i = 0; i < *n; i++) {
        if (arr[i] == sub) {
            arr[i] = arr[--*n];
            return true;
        }
    }
    return false;
}

int sl_insert(struct sl_index *x, const char *pattern, size_t plen,
              const char *queue, size_t qlen, void *sub)
{
    struct sl_node *path[SL_MAX_TOKENS];
    struct sl_tok t[SL_MAX_TOKENS];
    struct sl_level *l = &x->root;
    size_t n;

    if (!sl_subject_valid(pattern, plen) ||
        (qlen > 0 && !sl_queue_valid(queue, qlen))) {
        return -1;
    }
    retired_flush(x);
    n = tokenize(pattern, plen, t);
    for (size_t i = 0; i < n; i++) {
        uint64_t h = sl_hash(t[i].s, t[i].len);
        struct sl_node *c = level_find(l, t[i].s, t[i].len, h);
        if (c == NULL) {
            c = node_new(t[i].s, t[i].len, h);
            if (c == NULL || level_add(l, c) != 0) {
                free(c);
                prune(x, path, i);
                return -2;
            }
            x->nnodes++;
        }
        path[i] = c;
        l = &c->next;
    }
    if (node_add(path[n - 1], queue, qlen, sub) != 0) {
        prune(x, path, n);
        return -2;
    }
    x->count++;
    cache_invalidate(x, pattern, plen);
    return 0;
}

int sl_remove(struct sl_index *x, const char *pattern, size_t plen,
              const char *queue, size_t qlen, void *sub)
{
    struct sl_node *path[SL_MAX_TOKENS];
    struct sl_tok t[SL_MAX_TOKENS];
    struct sl_level *l = &x->root;
    struct sl_node *node;
    size_t n;

    retired_flush(x);
    if (!sl_subject_valid(pattern, plen)) {
        return -1;
    }
    n = tokenize(pattern, plen, t);
    for (size_t i = 0; i < n; i++) {
        struct sl_node *c = level_find(l, t[i].s, t[i].len,
                                       sl_hash(t[i].s, t[i].len));
        if (c == NULL) {
            return -1;
        }
        path[i] = c;
        l = &c->next;
    }
    node = path[n - 1];
    if (qlen == 0) {
        if (!ptrs_del(node->subs, &node->nsubs, sub)) {
            return -1;
        }
        node->subs = shrink(node->subs, &node->subs_cap, node->nsubs,
                            sizeof *node->subs);
    } else {
        size_t at;
        struct sl_qgroup *g = node_group(node, queue, qlen, &at);
        if (g == NULL || !ptrs_del(g->subs, &g->n, sub)) {
            return -1;
        }
        if (g->n == 0) {
            free(g->subs);
            free(g);
            node->groups[at] = node->groups[--node->ngroups];
            node->groups = shrink(node->groups, &node->groups_cap,
                                  node->ngroups, sizeof *node->groups);
        } else {
            g->subs = shrink(g->subs, &g->cap, g->n, sizeof *g->subs);
        }
    }
    x->count--;
    prune(x, path, n);
    cache_invalidate(x, pattern, plen);
    return 0;
}
