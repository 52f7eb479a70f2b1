/* Unit tests of src/bus/sublist.h: subject and queue validation, pattern
 * matching and containment, the index (wildcards, queue groups, removal),
 * the match cache against a brute-force model, and the bounds on memory
 * (trie pruning under churn, cache size, results kept across matches). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bus/sublist.h"

/* ------------------------------------------------------------------------ */
/* Helpers. */

#define S(lit) (lit), (sizeof(lit) - 1)

/* Subscriptions are addresses in this array; id = index. */
#define MAX_SUBS 256
static char subs[MAX_SUBS];

static void *sub(int id)
{
    return &subs[id];
}

static int sub_id(const void *p)
{
    return (int)((const char *)p - subs);
}

static int int_cmp(const void *a, const void *b)
{
    int x = *(const int *)a;
    int y = *(const int *)b;
    return (x > y) - (x < y);
}

/* A match result in canonical form: sorted plain ids, and groups each with
 * a queue and sorted member ids, sorted by first member (ids are unique
 * across the index, so groups never share a member). */
struct canon_group {
    char queue[16];
    int ids[MAX_SUBS];
    int n;
};

struct canon {
    int plain[MAX_SUBS];
    int nplain;
    struct canon_group groups[MAX_SUBS];
    int ngroups;
};

static int group_cmp(const void *a, const void *b)
{
    const struct canon_group *x = a;
    const struct canon_group *y = b;
    return int_cmp(&x->ids[0], &y->ids[0]);
}

static void canon_sort(struct canon *c)
{
    qsort(c->plain, (size_t)c->nplain, sizeof(int), int_cmp);
    for (int i = 0; i < c->ngroups; i++) {
        qsort(c->groups[i].ids, (size_t)c->groups[i].n, sizeof(int), int_cmp);
    }
    qsort(c->groups, (size_t)c->ngroups, sizeof c->groups[0], group_cmp);
}

static void canon_from_result(const struct sl_result *r, struct canon *c)
{
    memset(c, 0, sizeof *c);
    assert_non_null(r);
    for (size_t i = 0; i < r->n; i++) {
        c->plain[c->nplain++] = sub_id(r->subs[i]);
    }
    for (size_t g = 0; g < r->ngroups; g++) {
        struct canon_group *cg = &c->groups[c->ngroups++];
        assert_true(r->groups[g].queue_len > 0);
        assert_true(r->groups[g].queue_len < sizeof cg->queue);
        memcpy(cg->queue, r->groups[g].queue, r->groups[g].queue_len);
        assert_true(r->groups[g].n > 0); /* no empty group is reported */
        for (size_t i = 0; i < r->groups[g].n; i++) {
            cg->ids[cg->n++] = sub_id(r->groups[g].subs[i]);
        }
    }
    canon_sort(c);
}

static void canon_assert_equal(const struct canon *a, const struct canon *b)
{
    assert_int_equal(a->nplain, b->nplain);
    for (int i = 0; i < a->nplain; i++) {
        assert_int_equal(a->plain[i], b->plain[i]);
    }
    assert_int_equal(a->ngroups, b->ngroups);
    for (int g = 0; g < a->ngroups; g++) {
        assert_string_equal(a->groups[g].queue, b->groups[g].queue);
        assert_int_equal(a->groups[g].n, b->groups[g].n);
        for (int i = 0; i < a->groups[g].n; i++) {
            assert_int_equal(a->groups[g].ids[i], b->groups[g].ids[i]);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Brute-force reference model: a list of (pattern, queue, id) and a matcher
 * written independently of sublist.c (split both strings into tokens). */

#define MAX_TOK 300

static int split(const char *s, const char *tok[MAX_TOK], size_t len[MAX_TOK])
{
    int n = 0;
    const char *start = s;

    for (const char *p = s;; p++) {
        if (*p == '.' || *p == '\0') {
            tok[n] = start;
            len[n] = (size_t)(p - start);
            n++;
            if (*p == '\0') {
                return n;
            }
            start = p + 1;
        }
    }
}

static bool tok_is(const char *t, size_t len, const char *what)
{
    return len == strlen(what) && memcmp(t, what, len) == 0;
}

static bool ref_match(const char *pattern, const char *subject)
{
    const char *pt[MAX_TOK], *st[MAX_TOK];
    size_t pl[MAX_TOK], sl[MAX_TOK];
    int np = split(pattern, pt, pl);
    int ns = split(subject, st, sl);

    for (int i = 0; i < np; i++) {
        if (tok_is(pt[i], pl[i], ">")) {
            return ns > i;
        }
        if (i >= ns) {
            return false;
        }
        if (!tok_is(pt[i], pl[i], "*") &&
            (pl[i] != sl[i] || memcmp(pt[i], st[i], pl[i]) != 0)) {
            return false;
        }
    }
    return np == ns;
}

struct model_sub {
    char pattern[64];
    char queue[16]; /* "" for none */
    int id;
};

struct model {
    struct model_sub s[MAX_SUBS];
    int n;
};

static void model_match(const struct model *m, const char *subject,
                        struct canon *c)
{
    memset(c, 0, sizeof *c);
    for (int i = 0; i < m->n; i++) {
        const struct model_sub *ms = &m->s[i];
        int g;
        if (!ref_match(ms->pattern, subject)) {
            continue;
        }
        if (ms->queue[0] == '\0') {
            c->plain[c->nplain++] = ms->id;
            continue;
        }
        /* Find the group of (pattern, queue): any earlier member with the
         * same pair. */
        for (g = 0; g < c->ngroups; g++) {
            const struct model_sub *first = NULL;
            for (int j = 0; j < m->n; j++) {
                if (m->s[j].id == c->groups[g].ids[0]) {
                    first = &m->s[j];
                }
            }
            if (strcmp(first->pattern, ms->pattern) == 0 &&
                strcmp(first->queue, ms->queue) == 0) {
                break;
            }
        }
        if (g == c->ngroups) {
            strcpy(c->groups[g].queue, ms->queue);
            c->ngroups++;
        }
        c->groups[g].ids[c->groups[g].n++] = ms->id;
    }
    canon_sort(c);
}

static void check_match(struct sl_index *x, const struct model *m,
                        const char *subject)
{
    static struct canon got, want; /* large */

    canon_from_result(sl_match(x, subject, strlen(subject)), &got);
    model_match(m, subject, &want);
    canon_assert_equal(&got, &want);
}

static int ins(struct sl_index *x, const char *p, const char *q, int id)
{
    return sl_insert(x, p, strlen(p), q, q ? strlen(q) : 0, sub(id));
}

static int rem(struct sl_index *x, const char *p, const char *q, int id)
{
    return sl_remove(x, p, strlen(p), q, q ? strlen(q) : 0, sub(id));
}

/* ------------------------------------------------------------------------ */
/* Validation. */

static void test_subject_valid(void **state)
{
    static const struct {
        const char *s;
        bool valid;
        bool literal;
    } cases[] = {
        { "foo", true, true },
        { "foo.bar", true, true },
        { "foo.bar.baz", true, true },
        { "a", true, true },
        { "*", true, false },
        { ">", true, false },
        { "foo.*", true, false },
        { "foo.>", true, false },
        { "*.bar", true, false },
        { "*.*.>", true, false },
        { "foo.*.bar", true, false },
        { "foo*", true, true },
        { "*foo", true, true },
        { "foo*.bar", true, true },
        { "foo>", true, true },
        { ">foo.bar", true, true },
        { "**", true, true },
        { ">>", true, true },
        { "foo.**.bar", true, true },
        { "_INBOX.abc123", true, true },
        { "f\xc3\xa9.\xe2\x82\xac", true, true }, /* UTF-8 */
        { "a-b_c:d/e", true, true },
        { "", false, false },
        { ".", false, false },
        { "foo.", false, false },
        { ".foo", false, false },
        { "foo..bar", false, false },
        { "foo.>.bar", false, false },
        { ">.foo", false, false },
        { ">.>", false, false },
        { "foo bar", false, false },
        { "foo\tbar", false, false },
        { "foo\rbar", false, false },
        { "foo\nbar", false, false },
        { "foo\fbar", false, false },
        { " foo", false, false },
        { "foo ", false, false },
        { "foo.* ", false, false },
        { "foo. .bar", false, false },
        { "*. ", false, false },
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *s = cases[i].s;
        if (sl_subject_valid(s, strlen(s)) != cases[i].valid ||
            sl_subject_literal(s, strlen(s)) != cases[i].literal) {
            fail_msg("case %zu \"%s\": valid %d literal %d", i, s,
                     sl_subject_valid(s, strlen(s)),
                     sl_subject_literal(s, strlen(s)));
        }
    }
    /* Lengths, not NULs, delimit; other bytes (even NUL) are allowed. */
    assert_true(sl_subject_valid("foo.bar", 3));
    assert_false(sl_subject_valid("foo.bar", 4));
    assert_true(sl_subject_literal("a\0b", 3));
    assert_false(sl_subject_valid(NULL, 0));
    assert_true(sl_subject_literal("\x01\x7f\xff", 3));
    /* Vertical tab is not in the NATS whitespace set. */
    assert_true(sl_subject_literal("a\vb", 3));
}

static void test_subject_max_tokens(void **state)
{
    char buf[2 * (SL_MAX_TOKENS + 1)];
    size_t len;

    (void)state;
    /* SL_MAX_TOKENS tokens "a.a.....a" are valid, one more is not. */
    for (size_t i = 0; i < SL_MAX_TOKENS + 1; i++) {
        buf[2 * i] = 'a';
        buf[2 * i + 1] = '.';
    }
    len = 2 * SL_MAX_TOKENS - 1;
    assert_true(sl_subject_literal(buf, len));
    assert_false(sl_subject_valid(buf, len + 2));
    buf[len - 1] = '>';
    assert_true(sl_subject_valid(buf, len));
    assert_false(sl_subject_literal(buf, len));

    /* The index accepts the deepest pattern and matches it. */
    {
        struct sl_index *x = sl_index_new();
        const struct sl_result *r;
        assert_non_null(x);
        assert_int_equal(sl_insert(x, buf, len, NULL, 0, sub(1)), 0);
        buf[len - 1] = 'a';
        r = sl_match(x, buf, len);
        assert_non_null(r);
        assert_int_equal(r->n, 1); /* ">" as token 256 matches token 256 */
        assert_int_equal(sl_insert(x, buf, len + 2, NULL, 0, sub(2)), -1);
        assert_int_equal(sl_node_count(x), SL_MAX_TOKENS);
        buf[len - 1] = '>';
        assert_int_equal(sl_remove(x, buf, len, NULL, 0, sub(1)), 0);
        assert_int_equal(sl_node_count(x), 0);
        sl_index_free(x);
    }
}

static void test_queue_valid(void **state)
{
    (void)state;
    assert_true(sl_queue_valid(S("workers")));
    assert_true(sl_queue_valid(S("q.1")));
    assert_true(sl_queue_valid(S("q*")));
    assert_true(sl_queue_valid(S("q>")));
    assert_false(sl_queue_valid(S("")));
    assert_false(sl_queue_valid(NULL, 0));
    assert_false(sl_queue_valid(S("*")));
    assert_false(sl_queue_valid(S(">")));
    assert_false(sl_queue_valid(S("q.*")));
    assert_false(sl_queue_valid(S("q.>")));
    assert_false(sl_queue_valid(S("*.q")));
    assert_false(sl_queue_valid(S("q 1")));
    assert_false(sl_queue_valid(S("q\t1")));
    assert_false(sl_queue_valid(S("q\r")));
    assert_false(sl_queue_valid(S("\nq")));
    assert_false(sl_queue_valid(S("q\f")));
}

/* ------------------------------------------------------------------------ */
/* Pattern algebra. */

static void test_pattern_match(void **state)
{
    static const struct {
        const char *p;
        const char *s;
        bool match;
    } cases[] = {
        { "foo", "foo", true },
        { "foo", "bar", false },
        { "foo", "foo.bar", false },
        { "foo.bar", "foo", false },
        { "foo.bar", "foo.bar", true },
        { "foo.bar", "foo.baz", false },
        { "foo.bar", "foo.barx", false },
        { "foo.barx", "foo.bar", false },
        { "*", "foo", true },
        { "*", "foo.bar", false },
        { "foo.*", "foo.bar", true },
        { "foo.*", "foo", false },
        { "foo.*", "foo.bar.baz", false },
        { "*.bar", "foo.bar", true },
        { "*.bar", "foo.baz", false },
        { "foo.*.baz", "foo.bar.baz", true },
        { "foo.*.baz", "foo.bar.bax", false },
        { ">", "foo", true },
        { ">", "foo.bar.baz", true },
        { "foo.>", "foo.bar", true },
        { "foo.>", "foo.bar.baz", true },
        { "foo.>", "foo", false }, /* ">" needs at least one token */
        { "foo.>", "bar.baz", false },
        { "*.>", "foo", false },
        { "*.>", "foo.bar", true },
        { "foo*", "foo", false }, /* "foo*" is a literal token */
        { "foo*", "foox", false },
        { "foo*", "foo*", true },
        { "foo*.bar", "foo*.bar", true },
        { "foo>", "foo.bar", false },
        { "foo>", "foo>", true },
        /* Subject tokens "*" and ">" are literal bytes. */
        { "foo.*", "foo.*", true },
        { "foo.bar", "foo.*", false },
        { "foo.>", "foo.>", true },
        { "ab", "a", false },
        { "a", "ab", false },
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *p = cases[i].p;
        const char *s = cases[i].s;
        bool got = sl_pattern_match(p, strlen(p), s, strlen(s));
        if (got != cases[i].match || ref_match(p, s) != cases[i].match) {
            fail_msg("case %zu: \"%s\" vs \"%s\": got %d", i, p, s, got);
        }
    }
}

static void test_pattern_within(void **state)
{
    static const struct {
        const char *a;
        const char *b;
        bool within;
    } cases[] = {
        { "room.x.*", "room.x.>", true },
        { "a.b", "a.*", true },
        { "room.>", "room.x.>", false },
        { "a.b", "a.b", true },
        { "a.b", "a.c", false },
        { "a.*", "a.b", false },
        { "a.*", "a.*", true },
        { "a.*", "a.>", true },
        { "a.>", "a.*", false },
        { "a.>", "a.>", true },
        { "a.>", ">", true },
        { "a", ">", true },
        { ">", ">", true },
        { ">", "*", false },
        { "*", ">", true },
        { "*", "*", true },
        { "a", "*", true },
        { "a.b", "*", false },
        { "a", "a.>", false },
        { "a.b.c", "a.>", true },
        { "a.*.c", "a.>", true },
        { "a.*.c", "*.*.c", true },
        { "a.*.c", "*.b.c", false },
        { "a.b.>", "a.*.>", true },
        { "a.*.>", "a.b.>", false },
        { "a.>", "a.*.>", false },
        { "a.*.>", "a.>", true },
        { "*.>", ">", true },
        { ">", "*.>", false },
        { "foo*", "*", true },
        { "foo*", "foo", false },
        { "a.b", "a.b.c", false },
        { "a.b.c", "a.b", false },
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *a = cases[i].a;
        const char *b = cases[i].b;
        if (sl_pattern_within(a, strlen(a), b, strlen(b)) !=
            cases[i].within) {
            fail_msg("case %zu: \"%s\" within \"%s\"", i, a, b);
        }
    }
}

/* Within checked exhaustively: a within b iff every subject over the
 * literals of a and b plus one fresh token, of up to max(len)+1 tokens,
 * that a matches is matched by b (that set contains a counterexample
 * whenever one exists). */
static void test_pattern_within_exhaustive(void **state)
{
    static const char *const toks[] = { "a", "b", "*", ">" };
    static const char *const lits[] = { "a", "b", "z" };
    char pats[400][16];
    int np = 0;

    (void)state;
    /* All valid patterns of 1..3 tokens over toks. */
    for (int len = 1; len <= 3; len++) {
        int total = 1;
        for (int i = 0; i < len; i++) {
            total *= 4;
        }
        for (int v = 0; v < total; v++) {
            char p[16] = "";
            int w = v;
            for (int i = 0; i < len; i++) {
                if (i > 0) {
                    strcat(p, ".");
                }
                strcat(p, toks[w % 4]);
                w /= 4;
            }
            if (sl_subject_valid(p, strlen(p))) {
                strcpy(pats[np++], p);
            }
        }
    }
    for (int i = 0; i < np; i++) {
        for (int j = 0; j < np; j++) {
            bool want = true;
            /* Subjects of 1..4 tokens over lits. */
            for (int len = 1; len <= 4 && want; len++) {
                int total = 1;
                for (int k = 0; k < len; k++) {
                    total *= 3;
                }
                for (int v = 0; v < total && want; v++) {
                    char s[16] = "";
                    int w = v;
                    for (int k = 0; k < len; k++) {
                        if (k > 0) {
                            strcat(s, ".");
                        }
                        strcat(s, lits[w % 3]);
                        w /= 3;
                    }
                    if (ref_match(pats[i], s) && !ref_match(pats[j], s)) {
                        want = false;
                    }
                }
            }
            if (sl_pattern_within(pats[i], strlen(pats[i]), pats[j],
                                  strlen(pats[j])) != want) {
                fail_msg("\"%s\" within \"%s\" should be %d", pats[i],
                         pats[j], want);
            }
        }
    }
}

/* ------------------------------------------------------------------------ */
/* The index. */

static void test_match_wildcards(void **state)
{
    struct sl_index *x = sl_index_new();
    struct model m = { .n = 0 };
    static const char *const pats[] = {
        "foo", "foo.bar", "foo.*", "foo.>", "*", ">", "*.bar", "foo*",
        "foo*.bar", "foo.*.baz", "*.*", "*.>",
    };
    static const char *const subjects[] = {
        "foo", "foo.bar", "foo.baz", "foo.bar.baz", "foo*", "foo*.bar",
        "bar", "bar.bar", "x.y.z.w", "foox", "foo.*",
    };

    (void)state;
    assert_non_null(x);
    for (int i = 0; i < (int)(sizeof pats / sizeof pats[0]); i++) {
        assert_int_equal(ins(x, pats[i], NULL, i), 0);
        strcpy(m.s[m.n].pattern, pats[i]);
        m.s[m.n].queue[0] = '\0';
        m.s[m.n].id = i;
        m.n++;
    }
    assert_int_equal(sl_count(x), m.n);
    for (int k = 0; k < 2; k++) { /* once building, once from the cache */
        for (size_t i = 0; i < sizeof subjects / sizeof subjects[0]; i++) {
            check_match(x, &m, subjects[i]);
        }
    }
    /* Spot checks beyond the model. */
    {
        const struct sl_result *r = sl_match(x, S("foo"));
        static struct canon c;
        canon_from_result(r, &c);
        /* "foo", "*", ">" and nothing else: not "foo.>", not "foo*". */
        assert_int_equal(c.nplain, 3);
        assert_int_equal(c.plain[0], 0);
        assert_int_equal(c.plain[1], 4);
        assert_int_equal(c.plain[2], 5);
        r = sl_match(x, S("foox"));
        canon_from_result(r, &c);
        assert_int_equal(c.nplain, 2); /* "*", ">" */
        r = sl_match(x, S("nothing.here.at.all.x"));
        assert_int_equal(r->n, 2); /* ">" and "*.>" */
        assert_int_equal(r->ngroups, 0);
    }
    sl_index_free(x);
}

static void test_queue_groups(void **state)
{
    struct sl_index *x = sl_index_new();
    const struct sl_result *r;
    static struct canon c;

    (void)state;
    /* Two "connections" in group (foo.*, q), one plain, one in (foo.*, r),
     * one in (foo.>, q): a separate group although the queue name is the
     * same, because the pattern differs. */
    assert_int_equal(ins(x, "foo.*", "q", 1), 0);
    assert_int_equal(ins(x, "foo.*", "q", 2), 0);
    assert_int_equal(ins(x, "foo.*", NULL, 3), 0);
    assert_int_equal(ins(x, "foo.*", "r", 4), 0);
    assert_int_equal(ins(x, "foo.>", "q", 5), 0);
    assert_int_equal(ins(x, "foo.bar", "q", 6), 0);
    assert_int_equal(ins(x, "foo.*", "q", 7), 0);
    assert_int_equal(sl_count(x), 7);

    r = sl_match(x, S("foo.bar"));
    canon_from_result(r, &c);
    assert_int_equal(c.nplain, 1);
    assert_int_equal(c.plain[0], 3);
    assert_int_equal(c.ngroups, 4);
    assert_string_equal(c.groups[0].queue, "q"); /* foo.*: 1 2 7 */
    assert_int_equal(c.groups[0].n, 3);
    assert_int_equal(c.groups[0].ids[0], 1);
    assert_int_equal(c.groups[0].ids[1], 2);
    assert_int_equal(c.groups[0].ids[2], 7);
    assert_string_equal(c.groups[1].queue, "r");
    assert_int_equal(c.groups[1].n, 1);
    assert_string_equal(c.groups[2].queue, "q"); /* foo.> */
    assert_int_equal(c.groups[2].ids[0], 5);
    assert_string_equal(c.groups[3].queue, "q"); /* foo.bar */
    assert_int_equal(c.groups[3].ids[0], 6);

    r = sl_match(x, S("foo.baz.x"));
    canon_from_result(r, &c);
    assert_int_equal(c.nplain, 0);
    assert_int_equal(c.ngroups, 1);
    assert_int_equal(c.groups[0].ids[0], 5);

    /* Removing needs the same queue. */
    assert_int_equal(rem(x, "foo.*", NULL, 1), -1);
    assert_int_equal(rem(x, "foo.*", "r", 1), -1);
    assert_int_equal(rem(x, "foo.>", "q", 1), -1);
    assert_int_equal(rem(x, "foo.*", "q", 1), 0);
    assert_int_equal(rem(x, "foo.*", "q", 1), -1);
    assert_int_equal(rem(x, "foo.*", "r", 4), 0);
    r = sl_match(x, S("foo.bar"));
    canon_from_result(r, &c);
    assert_int_equal(c.ngroups, 3); /* group r disappeared when empty */
    assert_int_equal(c.groups[0].n, 2);
    assert_int_equal(sl_count(x), 5);

    /* An invalid queue is refused; an empty one means none. */
    assert_int_equal(ins(x, "foo", "a b", 10), -1);
    assert_int_equal(ins(x, "foo", "*", 10), -1);
    assert_int_equal(sl_insert(x, S("foo"), "ignored", 0, sub(10)), 0);
    r = sl_match(x, S("foo"));
    assert_int_equal(r->n, 1);
    assert_int_equal(r->ngroups, 0);
    sl_index_free(x);
}

static void test_insert_remove_errors(void **state)
{
    struct sl_index *x = sl_index_new();

    (void)state;
    assert_int_equal(ins(x, "", NULL, 1), -1);
    assert_int_equal(ins(x, "foo..bar", NULL, 1), -1);
    assert_int_equal(ins(x, "foo.>.bar", NULL, 1), -1);
    assert_int_equal(ins(x, "foo bar", NULL, 1), -1);
    assert_int_equal(sl_count(x), 0);
    assert_int_equal(sl_node_count(x), 0);

    assert_int_equal(rem(x, "foo", NULL, 1), -1);
    assert_int_equal(ins(x, "foo.bar", NULL, 1), 0);
    assert_int_equal(rem(x, "foo", NULL, 1), -1);     /* inner node */
    assert_int_equal(rem(x, "foo.bar", NULL, 2), -1); /* other sub */
    assert_int_equal(rem(x, "foo.*", NULL, 1), -1);
    assert_int_equal(rem(x, "foo..bar", NULL, 1), -1);
    assert_int_equal(rem(x, "foo.bar", NULL, 1), 0);
    assert_int_equal(rem(x, "foo.bar", NULL, 1), -1);
    assert_int_equal(sl_count(x), 0);
    assert_int_equal(sl_node_count(x), 0);
    sl_index_free(x);
    sl_index_free(NULL);
}

/* The cache: results follow inserts and removes; a literal insert leaves
 * other cached subjects alone; a wildcard one drops only what it matches. */
static void test_cache_invalidation(void **state)
{
    struct sl_index *x = sl_index_new();
    const struct sl_result *hot, *other, *r;

    (void)state;
    assert_int_equal(ins(x, "hot.subject", NULL, 1), 0);
    hot = sl_match(x, S("hot.subject"));
    assert_int_equal(hot->n, 1);
    other = sl_match(x, S("cold.subject"));
    assert_int_equal(other->n, 0);
    assert_int_equal(sl_cache_count(x), 2);
    assert_ptr_equal(sl_match(x, S("hot.subject")), hot); /* a hit */

    /* Inbox churn: literal SUB + UNSUB elsewhere keeps both entries. */
    for (int i = 0; i < 1000; i++) {
        char inbox[64];
        snprintf(inbox, sizeof inbox, "_INBOX.abcdef.%d", i);
        assert_int_equal(ins(x, inbox, NULL, 2), 0);
        assert_int_equal(sl_match(x, inbox, strlen(inbox))->n, 1);
        assert_int_equal(rem(x, inbox, NULL, 2), 0);
    }
    assert_int_equal(sl_cache_count(x), 2);
    assert_ptr_equal(sl_match(x, S("hot.subject")), hot);
    assert_ptr_equal(sl_match(x, S("cold.subject")), other);

    /* A literal insert on a cached subject updates it. */
    assert_int_equal(ins(x, "cold.subject", NULL, 3), 0);
    assert_int_equal(sl_cache_count(x), 1);
    r = sl_match(x, S("cold.subject"));
    assert_int_equal(r->n, 1);
    assert_int_equal(sub_id(r->subs[0]), 3);

    /* A wildcard insert drops what it matches, keeps the rest. */
    hot = sl_match(x, S("hot.subject"));
    assert_int_equal(ins(x, "cold.*", "q", 4), 0);
    assert_int_equal(sl_cache_count(x), 1);
    assert_ptr_equal(sl_match(x, S("hot.subject")), hot);
    r = sl_match(x, S("cold.subject"));
    assert_int_equal(r->n, 1);
    assert_int_equal(r->ngroups, 1);
    assert_int_equal(r->groups[0].queue_len, 1);
    assert_memory_equal(r->groups[0].queue, "q", 1);

    /* ">" drops everything; removing it again as well. */
    assert_int_equal(ins(x, ">", NULL, 5), 0);
    assert_int_equal(sl_cache_count(x), 0);
    assert_int_equal(sl_match(x, S("hot.subject"))->n, 2);
    assert_int_equal(sl_match(x, S("cold.subject"))->n, 2);
    assert_int_equal(rem(x, ">", NULL, 5), 0);
    assert_int_equal(sl_cache_count(x), 0);
    assert_int_equal(sl_match(x, S("hot.subject"))->n, 1);
    assert_int_equal(sl_match(x, S("cold.subject"))->n, 1);

    /* A failed remove is harmless. */
    assert_int_equal(rem(x, "hot.subject", NULL, 9), -1);
    assert_int_equal(sl_match(x, S("hot.subject"))->n, 1);
    sl_index_free(x);
}

/* The cache stays bounded; results stay valid across SL_MATCH_KEEP later
 * matches even when evicted (ASan checks the reads). */
static void test_cache_bound(void **state)
{
    struct sl_index *x = sl_index_new();
    const struct sl_result *kept[SL_MATCH_KEEP + 1];
    char s[64];

    (void)state;
    assert_int_equal(ins(x, "s.*", NULL, 1), 0);
    for (int i = 0; i < 20000; i++) {
        const struct sl_result *r;
        snprintf(s, sizeof s, "s.%d", i);
        r = sl_match(x, s, strlen(s));
        assert_non_null(r);
        assert_int_equal(r->n, 1);
        kept[i % (SL_MATCH_KEEP + 1)] = r;
        if (i >= SL_MATCH_KEEP) {
            for (int k = 0; k <= SL_MATCH_KEEP; k++) {
                assert_int_equal(kept[k]->n, 1);
                assert_ptr_equal(kept[k]->subs[0], sub(1));
            }
        }
        assert_true(sl_cache_count(x) <= 4096);
    }
    assert_int_equal(sl_cache_count(x), 4096);
    sl_index_free(x);
}

/* Fan-out above the caching limit: correct and not cached. */
static void test_big_fanout(void **state)
{
    struct sl_index *x = sl_index_new();
    static char many[3000];
    const struct sl_result *r;

    (void)state;
    for (int i = 0; i < 3000; i++) {
        assert_int_equal(sl_insert(x, S("big"), i % 2 ? "q" : NULL,
                                   i % 2 ? 1 : 0, &many[i]),
                         0);
    }
    r = sl_match(x, S("big"));
    assert_int_equal(r->n, 1500);
    assert_int_equal(r->ngroups, 1);
    assert_int_equal(r->groups[0].n, 1500);
    assert_int_equal(sl_cache_count(x), 0);
    for (int i = 0; i < 3000; i += 2) {
        assert_int_equal(sl_remove(x, S("big"), NULL, 0, &many[i]), 0);
    }
    for (int i = 1; i < 3000; i += 2) {
        assert_int_equal(sl_remove(x, S("big"), S("q"), &many[i]), 0);
    }
    assert_int_equal(sl_node_count(x), 0);
    assert_int_equal(sl_match(x, S("big"))->n, 0);
    sl_index_free(x);
}

/* Churn of inbox subscriptions does not grow the trie. */
static void test_pruning(void **state)
{
    struct sl_index *x = sl_index_new();
    char s[64];

    (void)state;
    assert_int_equal(ins(x, "app.events.>", NULL, 1), 0);
    assert_int_equal(sl_node_count(x), 3);
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < 20000; i++) {
            snprintf(s, sizeof s, "_INBOX.%d.%d", round, i);
            assert_int_equal(sl_insert(x, s, strlen(s), NULL, 0, sub(2)), 0);
        }
        assert_int_equal(sl_node_count(x), 3 + 2 + 20000);
        for (int i = 0; i < 20000; i++) {
            snprintf(s, sizeof s, "_INBOX.%d.%d", round, i);
            assert_int_equal(sl_remove(x, s, strlen(s), NULL, 0, sub(2)), 0);
        }
        assert_int_equal(sl_node_count(x), 3);
        assert_int_equal(sl_count(x), 1);
    }
    /* Removing a leaf keeps a non-empty parent; removing a parent's own
     * subscription keeps its subtree. */
    assert_int_equal(ins(x, "app", NULL, 3), 0);
    assert_int_equal(ins(x, "app.x", "q", 4), 0);
    assert_int_equal(sl_node_count(x), 4);
    assert_int_equal(rem(x, "app", NULL, 3), 0);
    assert_int_equal(sl_node_count(x), 4);
    assert_int_equal(rem(x, "app.x", "q", 4), 0);
    assert_int_equal(sl_node_count(x), 3);
    assert_int_equal(rem(x, "app.events.>", NULL, 1), 0);
    assert_int_equal(sl_node_count(x), 0);
    sl_index_free(x);
}

/* Random operations against the model, comparing every match. */
static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

static void random_pattern(char *out, bool literal)
{
    static const char *const toks[] = { "a", "b", "c", "*", ">", "a*" };
    int n = 1 + (int)rnd(4);

    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        const char *t = toks[rnd(literal ? 3 : 6)];
        if (literal && rnd(8) == 0) {
            t = "d";
        }
        if (i > 0) {
            strcat(out, ".");
        }
        strcat(out, t);
    }
}

static void test_random_model(void **state)
{
    static const char *const queues[] = { NULL, NULL, "q1", "q2" };

    (void)state;
    for (uint64_t seed = 1; seed <= 8; seed++) {
        struct sl_index *x = sl_index_new();
        static struct model m;
        bool used[MAX_SUBS] = { false };

        rng_state = seed * UINT64_C(0x9e3779b97f4a7c15);
        m.n = 0;
        for (int op = 0; op < 4000; op++) {
            uint32_t k = rnd(100);
            char p[64];

            if (k < 35) { /* insert */
                const char *q = queues[rnd(4)];
                int id = (int)rnd(MAX_SUBS);
                int rv;
                if (used[id]) {
                    continue;
                }
                random_pattern(p, false);
                rv = ins(x, p, q, id);
                if (!sl_subject_valid(p, strlen(p))) {
                    assert_int_equal(rv, -1);
                    continue;
                }
                assert_int_equal(rv, 0);
                used[id] = true;
                strcpy(m.s[m.n].pattern, p);
                strcpy(m.s[m.n].queue, q ? q : "");
                m.s[m.n].id = id;
                m.n++;
            } else if (k < 60 && m.n > 0) { /* remove an existing one */
                int i = (int)rnd((uint32_t)m.n);
                struct model_sub ms = m.s[i];
                assert_int_equal(rem(x, ms.pattern,
                                     ms.queue[0] ? ms.queue : NULL, ms.id),
                                 0);
                used[ms.id] = false;
                m.s[i] = m.s[--m.n];
            } else if (k < 65) { /* remove something probably absent */
                const char *q = queues[rnd(4)];
                int id = (int)rnd(MAX_SUBS);
                bool present = false;
                random_pattern(p, false);
                for (int i = 0; i < m.n; i++) {
                    if (m.s[i].id == id && strcmp(m.s[i].pattern, p) == 0 &&
                        strcmp(m.s[i].queue, q ? q : "") == 0) {
                        present = true;
                        m.s[i] = m.s[--m.n];
                        used[id] = false;
                        break;
                    }
                }
                assert_int_equal(rem(x, p, q, id), present ? 0 : -1);
            } else { /* match */
                random_pattern(p, true);
                check_match(x, &m, p);
            }
            assert_int_equal(sl_count(x), m.n);
        }
        /* Empty it: the trie must be gone. */
        while (m.n > 0) {
            struct model_sub ms = m.s[--m.n];
            assert_int_equal(rem(x, ms.pattern,
                                 ms.queue[0] ? ms.queue : NULL, ms.id),
                             0);
            random_pattern(ms.pattern, true);
            check_match(x, &m, ms.pattern);
        }
        assert_int_equal(sl_count(x), 0);
        assert_int_equal(sl_node_count(x), 0);
        sl_index_free(x);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_subject_valid),
        cmocka_unit_test(test_subject_max_tokens),
        cmocka_unit_test(test_queue_valid),
        cmocka_unit_test(test_pattern_match),
        cmocka_unit_test(test_pattern_within),
        cmocka_unit_test(test_pattern_within_exhaustive),
        cmocka_unit_test(test_match_wildcards),
        cmocka_unit_test(test_queue_groups),
        cmocka_unit_test(test_insert_remove_errors),
        cmocka_unit_test(test_cache_invalidation),
        cmocka_unit_test(test_cache_bound),
        cmocka_unit_test(test_big_fanout),
        cmocka_unit_test(test_pruning),
        cmocka_unit_test(test_random_model),
    };

    return cmocka_run_group_tests_name("bus_sublist", tests, NULL, NULL);
}
