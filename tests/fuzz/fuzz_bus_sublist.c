/* Fuzz target: subject validation and the subscription index of
 * src/bus/sublist.h, which take subjects and queue names straight from
 * client SUB, UNSUB and PUB lines.
 *
 * The input is a program: each op byte (value % 10) picks an operation and
 * the bytes after it its arguments:
 *   0-2  insert: pattern, queue, sub id      (generated from a small
 *   3-4  remove an inserted subscription      alphabet that includes
 *   5    remove: pattern, queue, sub id       invalid tokens)
 *   6-7  match: a subject (literal tokens, and "*"/">" taken literally)
 *   8    raw: a length byte, a sub id byte and that many raw bytes,
 *        checked by every validator; matched when a literal subject and
 *        inserted when a valid pattern
 *   9    within: two generated patterns (at most 4 per input)
 * A pattern spec byte gives the token count (1 + b % 4), then one byte per
 * token. Everything is checked against a brute-force model (a list of
 * (pattern, queue, sub) and a token-splitting matcher written apart from
 * sublist.c); any disagreement aborts:
 *   - validators agree with the reference validators;
 *   - insert/remove return codes agree with the model;
 *   - every match result equals the model's as sets (plain subs, and groups
 *     per (pattern, queue) with their members); results are also re-read
 *     after SL_MATCH_KEEP further matches, which must not have freed them;
 *   - sl_pattern_match agrees with the reference matcher;
 *   - sl_pattern_within agrees with an exhaustive check over the subjects
 *     that can tell two patterns apart;
 *   - at the end, after removing everything, the trie has no node left. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/sublist.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_SUBS 64
#define MAX_PAT 300 /* raw patterns are at most 255 bytes */
#define MAX_WITHIN 4

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_bus_sublist: invariant violated: %s\n", what);
        abort();
    }
}

/* ------------------------------------------------------------------------ */
/* Input. */

struct in {
    const uint8_t *p;
    size_t left;
};

static bool next(struct in *in, uint8_t *b)
{
    if (in->left == 0) {
        return false;
    }
    *b = *in->p++;
    in->left--;
    return true;
}

/* Pattern tokens; the last two make invalid patterns. */
static const char *const pat_toks[] = { "a", "b", "c", "*", ">", "a*", "",
                                        "x y" };
/* Subject tokens: literal ones, and wildcards taken literally. */
static const char *const subj_toks[] = { "a", "b", "c", "d", "a*", "*", ">" };
static const char *const queues[] = { NULL, NULL, "q1", "q2" };

/* Builds a pattern (or subject) from the input into out; false when the
 * input ran out. */
static bool gen(struct in *in, const char *const *toks, size_t ntoks,
                char *out, size_t *len)
{
    uint8_t b;
    size_t n;

    if (!next(in, &b)) {
        return false;
    }
    n = 1 + b % 4;
    *len = 0;
    for (size_t i = 0; i < n; i++) {
        const char *t;
        if (!next(in, &b)) {
            return false;
        }
        t = toks[b % ntoks];
        if (i > 0) {
            out[(*len)++] = '.';
        }
        memcpy(out + *len, t, strlen(t));
        *len += strlen(t);
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* Reference. */

struct tok {
    const char *s;
    size_t len;
};

/* Splits on '.', any number of tokens up to max; returns the count or
 * max + 1 when there are more. */
static size_t split(const char *s, size_t len, struct tok *t, size_t max)
{
    size_t n = 0;
    size_t start = 0;

    for (size_t i = 0; i <= len; i++) {
        if (i == len || s[i] == '.') {
            if (n == max) {
                return max + 1;
            }
            t[n].s = s + start;
            t[n].len = i - start;
            n++;
            start = i + 1;
        }
    }
    return n;
}

static bool tok_is(const struct tok *t, char c)
{
    return t->len == 1 && t->s[0] == c;
}

static bool ref_valid(const char *s, size_t len, bool wildcards)
{
    static struct tok t[SL_MAX_TOKENS + 1];
    size_t n;

    if (len == 0) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (strchr(" \t\r\n\f", s[i]) != NULL && s[i] != '\0') {
            return false;
        }
    }
    n = split(s, len, t, SL_MAX_TOKENS);
    if (n > SL_MAX_TOKENS) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (t[i].len == 0) {
            return false;
        }
        if (tok_is(&t[i], '*') || tok_is(&t[i], '>')) {
            if (!wildcards || (tok_is(&t[i], '>') && i + 1 != n)) {
                return false;
            }
        }
    }
    return true;
}

static bool ref_queue_valid(const char *q, size_t len)
{
    static struct tok t[MAX_PAT];
    size_t n;

    if (len == 0) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (strchr(" \t\r\n\f", q[i]) != NULL && q[i] != '\0') {
            return false;
        }
    }
    n = split(q, len, t, MAX_PAT);
    for (size_t i = 0; i < n; i++) {
        if (tok_is(&t[i], '*') || tok_is(&t[i], '>')) {
            return false;
        }
    }
    return true;
}

static bool ref_match(const char *p, size_t plen, const char *s, size_t slen)
{
    static struct tok pt[MAX_PAT], st[MAX_PAT];
    size_t np = split(p, plen, pt, MAX_PAT);
    size_t ns = split(s, slen, st, MAX_PAT);

    for (size_t i = 0; i < np; i++) {
        if (tok_is(&pt[i], '>')) {
            return ns > i;
        }
        if (i >= ns) {
            return false;
        }
        if (!tok_is(&pt[i], '*') &&
            (pt[i].len != st[i].len ||
             memcmp(pt[i].s, st[i].s, pt[i].len) != 0)) {
            return false;
        }
    }
    return np == ns;
}

/* a within b, by trying every subject over the literals of a and b plus a
 * fresh token, of up to max(len)+1 tokens (patterns of at most 4 tokens
 * here: at most 9 literals, so 10^5 subjects in the worst case; generated
 * patterns are shorter and mostly share tokens). */
static bool ref_within(const char *a, size_t alen, const char *b, size_t blen)
{
    struct tok ta[8], tb[8], lits[17];
    size_t na = split(a, alen, ta, 7);
    size_t nb = split(b, blen, tb, 7);
    size_t nl = 0;
    size_t maxlen = (na > nb ? na : nb) + 1;
    char s[128];

    for (size_t i = 0; i < na + nb; i++) {
        const struct tok *t = i < na ? &ta[i] : &tb[i - na];
        bool dup = false;
        if (tok_is(t, '*') || tok_is(t, '>')) {
            continue;
        }
        for (size_t j = 0; j < nl; j++) {
            dup |= lits[j].len == t->len &&
                   memcmp(lits[j].s, t->s, t->len) == 0;
        }
        if (!dup) {
            lits[nl++] = *t;
        }
    }
    lits[nl].s = "~fresh~";
    lits[nl].len = 7;
    nl++;
    for (size_t len = 1; len <= maxlen; len++) {
        size_t total = 1;
        for (size_t i = 0; i < len; i++) {
            total *= nl;
        }
        for (size_t v = 0; v < total; v++) {
            size_t w = v;
            size_t sl = 0;
            for (size_t i = 0; i < len; i++) {
                const struct tok *t = &lits[w % nl];
                w /= nl;
                if (i > 0) {
                    s[sl++] = '.';
                }
                memcpy(s + sl, t->s, t->len);
                sl += t->len;
            }
            if (ref_match(a, alen, s, sl) && !ref_match(b, blen, s, sl)) {
                return false;
            }
        }
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* Model. */

struct msub {
    char pattern[MAX_PAT];
    size_t plen;
    const char *queue; /* NULL or a literal from queues[] */
    int id;
};

struct model {
    struct msub s[MAX_SUBS];
    int n;
    bool used[MAX_SUBS];
};

static char subs[MAX_SUBS];

static int sub_id(const void *p)
{
    const char *c = p;
    check(c >= subs && c < subs + MAX_SUBS, "a result holds a known sub");
    return (int)(c - subs);
}

/* Canonical result: for each sub id, 0 when not matched, 1 when matched
 * plainly, else 2 + its group number, groups numbered by their smallest
 * member; plus each group's queue. */
struct canon {
    int tag[MAX_SUBS];
    const char *queue[MAX_SUBS]; /* by group number */
    size_t qlen[MAX_SUBS];
};

/* Numbers groups by smallest member: g[i] is an arbitrary group key per
 * sub; rewrites tag[] so equal keys get the number of their smallest id. */
static void canon_number(struct canon *c, const int *key)
{
    int first_of_key[MAX_SUBS * 2 + 2];

    for (int i = 0; i < MAX_SUBS * 2 + 2; i++) {
        first_of_key[i] = -1;
    }
    for (int i = 0; i < MAX_SUBS; i++) {
        if (key[i] >= 0) {
            if (first_of_key[key[i]] < 0) {
                first_of_key[key[i]] = i;
            }
            c->tag[i] = 2 + first_of_key[key[i]];
        }
    }
}

static void canon_result(const struct sl_result *r, struct canon *c)
{
    int key[MAX_SUBS];
    const char *gq[MAX_SUBS * 2];
    size_t gql[MAX_SUBS * 2];

    check(r != NULL, "match returns a result");
    memset(c, 0, sizeof *c);
    for (int i = 0; i < MAX_SUBS; i++) {
        key[i] = -1;
    }
    check(r->n <= MAX_SUBS && r->ngroups <= MAX_SUBS, "result size");
    for (size_t i = 0; i < r->n; i++) {
        int id = sub_id(r->subs[i]);
        check(c->tag[id] == 0, "a sub appears once");
        c->tag[id] = 1;
    }
    for (size_t g = 0; g < r->ngroups; g++) {
        check(r->groups[g].n > 0, "no empty group");
        gq[g] = r->groups[g].queue;
        gql[g] = r->groups[g].queue_len;
        for (size_t i = 0; i < r->groups[g].n; i++) {
            int id = sub_id(r->groups[g].subs[i]);
            check(c->tag[id] == 0 && key[id] < 0, "a sub appears once");
            key[id] = (int)g;
        }
    }
    canon_number(c, key);
    for (int i = 0; i < MAX_SUBS; i++) {
        if (key[i] >= 0 && c->tag[i] == 2 + i) {
            c->queue[i] = gq[key[i]];
            c->qlen[i] = gql[key[i]];
        }
    }
}

static void canon_model(const struct model *m, const char *s, size_t len,
                        struct canon *c)
{
    int key[MAX_SUBS];

    memset(c, 0, sizeof *c);
    for (int i = 0; i < MAX_SUBS; i++) {
        key[i] = -1;
    }
    for (int i = 0; i < m->n; i++) {
        const struct msub *ms = &m->s[i];
        if (!ref_match(ms->pattern, ms->plen, s, len)) {
            continue;
        }
        if (ms->queue == NULL) {
            c->tag[ms->id] = 1;
            continue;
        }
        /* Key: the model index of the first entry with this pair. */
        for (int j = 0; j <= i; j++) {
            const struct msub *o = &m->s[j];
            if (o->queue != NULL && strcmp(o->queue, ms->queue) == 0 &&
                o->plen == ms->plen &&
                memcmp(o->pattern, ms->pattern, ms->plen) == 0) {
                key[ms->id] = j;
                break;
            }
        }
    }
    canon_number(c, key);
    for (int i = 0; i < m->n; i++) {
        const struct msub *ms = &m->s[i];
        if (c->tag[ms->id] == 2 + ms->id) {
            c->queue[ms->id] = ms->queue;
            c->qlen[ms->id] = strlen(ms->queue);
        }
    }
}

static void canon_check(const struct canon *a, const struct canon *b)
{
    for (int i = 0; i < MAX_SUBS; i++) {
        check(a->tag[i] == b->tag[i], "match result equals the model's");
        if (a->tag[i] == 2 + i) {
            check(a->qlen[i] == b->qlen[i] &&
                      memcmp(a->queue[i], b->queue[i], a->qlen[i]) == 0,
                  "group queue names equal the model's");
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Operations. */

struct state {
    struct sl_index *x;
    struct model m;
    /* Recent results with their subjects, re-checked later. */
    const struct sl_result *recent[SL_MATCH_KEEP];
    struct canon recent_canon[SL_MATCH_KEEP];
    int nrecent;
    int recent_at;
    int within_left;
};

static void forget_recent(struct state *st)
{
    st->nrecent = 0;
    st->recent_at = 0;
}

static void do_insert(struct state *st, const char *p, size_t plen,
                      const char *q, int id)
{
    size_t qlen = q != NULL ? strlen(q) : 0;
    bool valid = ref_valid(p, plen, true);
    int rv;

    if (st->m.used[id]) {
        return; /* the contract forbids inserting a sub twice */
    }
    rv = sl_insert(st->x, p, plen, q, qlen, &subs[id]);
    forget_recent(st);
    check(rv == (valid ? 0 : -1), "insert return code");
    if (rv == 0) {
        struct msub *ms = &st->m.s[st->m.n++];
        memcpy(ms->pattern, p, plen);
        ms->plen = plen;
        ms->queue = q;
        ms->id = id;
        st->m.used[id] = true;
    }
}

static void do_remove(struct state *st, const char *p, size_t plen,
                      const char *q, int id)
{
    size_t qlen = q != NULL ? strlen(q) : 0;
    int at = -1;
    int rv;

    for (int i = 0; i < st->m.n; i++) {
        const struct msub *ms = &st->m.s[i];
        if (ms->id == id && ms->plen == plen &&
            memcmp(ms->pattern, p, plen) == 0 &&
            (ms->queue == NULL ? q == NULL
                               : q != NULL && strcmp(ms->queue, q) == 0)) {
            at = i;
        }
    }
    rv = sl_remove(st->x, p, plen, q, qlen, &subs[id]);
    forget_recent(st);
    check(rv == (at >= 0 ? 0 : -1), "remove return code");
    if (at >= 0) {
        st->m.used[id] = false;
        st->m.s[at] = st->m.s[--st->m.n];
    }
}

static void do_match(struct state *st, const char *s, size_t len)
{
    const struct sl_result *r = sl_match(st->x, s, len);
    struct canon got, want;

    canon_result(r, &got);
    canon_model(&st->m, s, len, &want);
    canon_check(&got, &want);
    /* Results of earlier matches are still intact. */
    for (int i = 0; i < st->nrecent; i++) {
        struct canon again;
        canon_result(st->recent[i], &again);
        canon_check(&again, &st->recent_canon[i]);
    }
    st->recent[st->recent_at] = r;
    st->recent_canon[st->recent_at] = want;
    st->recent_at = (st->recent_at + 1) % SL_MATCH_KEEP;
    if (st->nrecent < SL_MATCH_KEEP) {
        st->nrecent++;
    }
}

static void do_raw(struct state *st, const char *s, size_t len, int id)
{
    bool valid = ref_valid(s, len, true);
    bool literal = ref_valid(s, len, false);

    check(sl_subject_valid(s, len) == valid, "sl_subject_valid");
    check(sl_subject_literal(s, len) == literal, "sl_subject_literal");
    check(sl_queue_valid(s, len) == ref_queue_valid(s, len), "sl_queue_valid");
    if (literal) {
        /* Against every model pattern. */
        for (int i = 0; i < st->m.n; i++) {
            const struct msub *ms = &st->m.s[i];
            check(sl_pattern_match(ms->pattern, ms->plen, s, len) ==
                      ref_match(ms->pattern, ms->plen, s, len),
                  "sl_pattern_match");
        }
        do_match(st, s, len);
    }
    if (valid) {
        do_insert(st, s, len, NULL, id);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct state st;
    struct in in = { data, size };
    uint8_t op, b, c;
    char p[MAX_PAT], p2[MAX_PAT];
    size_t plen, p2len;

    memset(&st, 0, sizeof st);
    st.x = sl_index_new();
    check(st.x != NULL, "index allocated");
    st.within_left = MAX_WITHIN;

    while (next(&in, &op)) {
        switch (op % 10) {
            case 0:
            case 1:
            case 2:
                if (!gen(&in, pat_toks, 8, p, &plen) || !next(&in, &b) ||
                    !next(&in, &c)) {
                    goto done;
                }
                do_insert(&st, p, plen, queues[b % 4], c % MAX_SUBS);
                break;
            case 3:
            case 4:
                if (!next(&in, &b)) {
                    goto done;
                }
                if (st.m.n > 0) {
                    struct msub ms = st.m.s[b % st.m.n];
                    do_remove(&st, ms.pattern, ms.plen, ms.queue, ms.id);
                }
                break;
            case 5:
                if (!gen(&in, pat_toks, 8, p, &plen) || !next(&in, &b) ||
                    !next(&in, &c)) {
                    goto done;
                }
                do_remove(&st, p, plen, queues[b % 4], c % MAX_SUBS);
                break;
            case 6:
            case 7:
                if (!gen(&in, subj_toks, 7, p, &plen)) {
                    goto done;
                }
                do_match(&st, p, plen);
                break;
            case 8:
                if (!next(&in, &b) || !next(&in, &c) || in.left < b) {
                    goto done;
                }
                memcpy(p, in.p, b);
                in.p += b;
                in.left -= b;
                do_raw(&st, p, b, c % MAX_SUBS);
                break;
            case 9:
                if (!gen(&in, pat_toks, 6, p, &plen) ||
                    !gen(&in, pat_toks, 6, p2, &p2len)) {
                    goto done;
                }
                if (st.within_left > 0 && ref_valid(p, plen, true) &&
                    ref_valid(p2, p2len, true)) {
                    st.within_left--;
                    check(sl_pattern_within(p, plen, p2, p2len) ==
                              ref_within(p, plen, p2, p2len),
                          "sl_pattern_within");
                }
                break;
        }
    }
done:
    /* Empty the index; the trie must go with the subscriptions. */
    while (st.m.n > 0) {
        struct msub ms = st.m.s[st.m.n - 1];
        do_remove(&st, ms.pattern, ms.plen, ms.queue, ms.id);
    }
    check(sl_count(st.x) == 0, "empty index counts no subscription");
    check(sl_node_count(st.x) == 0, "empty index has no trie node");
    do_match(&st, "a", 1);
    sl_index_free(st.x);
    return 0;
}
