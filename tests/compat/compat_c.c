/*
 * compat_c: the client-compatibility cases of unibus for nats.c (libnats).
 *
 * Each case drives the real, unmodified nats.c client against a NATS-protocol
 * server (the bus of membershipd, or nats-server when the suite itself is
 * validated) and checks the access-control contract of DESIGN.md §5. The
 * server is provisioned by tests/compat/test_compat.py; this program only
 * connects as the members it is given.
 *
 *   compat_c CASE --creds DIR --room ROOM --url URL [--url URL2 [--url URL3]]
 *            [--ca FILE] [--wrong-ca FILE]
 *
 * DIR holds, per role (alice, bob, carol, victim, leaver, ghost), the files
 * ROLE.id ("HANDLE PUBLIC-NKEY") and ROLE.seed (the member's "SU..." seed).
 * Role alice connects to the first URL, bob to the second, carol to the
 * third (wrapping around), so the same case runs on one node or across
 * nodes. Cases that need the harness to change membership while connected
 * print "READY" on stdout and wait for a line on stdin, which the harness
 * sends once the change is committed.
 *
 * Exit 0 on pass; otherwise a "FAIL" line on stderr says what differed.
 * Every wait is bounded; negative checks ("nothing else arrived") end at a
 * fence: a later message from the same publisher, or a PING/PONG round trip
 * of the receiving connection, so they do not depend on sleeping.
 */
#include <nats/nats.h>

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------
 * Failure reporting
 * ---------------------------------------------------------------------- */

static const char *g_case = "?";

static void fail(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

static void fail(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "FAIL c/%s: ", g_case);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    _exit(1);
}

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void note(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "  c/%s: ", g_case);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

#define CHECK(cond, ...)       \
    do {                       \
        if (!(cond)) {         \
            fail(__VA_ARGS__); \
        }                      \
    } while (0)

/* Fails with the library's own text when a nats.c call does not return OK. */
#define NATS_CHECK(call, what)                                                 \
    do {                                                                       \
        natsStatus s_ = (call);                                                \
        if (s_ != NATS_OK) {                                                   \
            natsStatus ls_;                                                    \
            const char *t_ = nats_GetLastError(&ls_);                          \
            fail("%s: %s (%s)", (what), natsStatus_GetText(s_), t_ ? t_ : ""); \
        }                                                                      \
    } while (0)

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------------
 * Arguments and members
 * ---------------------------------------------------------------------- */

#define MAX_URLS 3

struct args {
    const char *cas;
    const char *urls[MAX_URLS];
    int n_urls;
    const char *creds;
    const char *room;
    const char *ca;       /* CA that signed the server certificate */
    const char *wrong_ca; /* a CA that did not */
    char tok[40];         /* unique subject token of this run */
};

static struct args g;

struct member {
    char role[16];
    char handle[80];
    char pub[64];
    char seed_path[PATH_MAX];
    char inbox[96]; /* _INBOX.<handle> */
};

static void member_load(struct member *m, const char *role)
{
    char path[PATH_MAX];
    FILE *f;

    memset(m, 0, sizeof *m);
    snprintf(m->role, sizeof m->role, "%s", role);
    snprintf(path, sizeof path, "%s/%s.id", g.creds, role);
    f = fopen(path, "r");
    CHECK(f != NULL, "cannot open %s: %s", path, strerror(errno));
    CHECK(fscanf(f, "%79s %63s", m->handle, m->pub) == 2,
          "%s: expected \"HANDLE PUBKEY\"", path);
    fclose(f);
    snprintf(m->seed_path, sizeof m->seed_path, "%s/%s.seed", g.creds, role);
    snprintf(m->inbox, sizeof m->inbox, "_INBOX.%s", m->handle);
}

/* Role alice uses the first URL, bob the second, carol the third. */
static const char *url_of(const char *role)
{
    int i = 0;
    if (strcmp(role, "bob") == 0) {
        i = 1;
    } else if (strcmp(role, "carol") == 0) {
        i = 2;
    }
    return g.urls[i % g.n_urls];
}

/* ------------------------------------------------------------------------
 * Connections and their asynchronous events
 * ---------------------------------------------------------------------- */

struct conn {
    struct member m;
    natsConnection *nc;
    natsOptions *opts;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* Everything below is written by nats.c threads, under mu. */
    int errors; /* asynchronous errors reported */
    natsStatus err_status;
    char err_text[512]; /* text of the latest asynchronous error */
    int disconnects;
    int64_t disconnect_ms;
    int reconnects;
    int closed;
};

static void conn_lock(struct conn *c)
{
    pthread_mutex_lock(&c->mu);
}

static void conn_unlock(struct conn *c)
{
    pthread_mutex_unlock(&c->mu);
}

static void on_error(natsConnection *nc, natsSubscription *sub, natsStatus err,
                     void *closure)
{
    struct conn *c = closure;
    const char *text = NULL;
    (void)sub;
    natsConnection_GetLastError(nc, &text);
    conn_lock(c);
    c->errors++;
    c->err_status = err;
    snprintf(c->err_text, sizeof c->err_text, "%s", text ? text : "");
    pthread_cond_broadcast(&c->cv);
    conn_unlock(c);
}

static void on_disconnected(natsConnection *nc, void *closure)
{
    struct conn *c = closure;
    (void)nc;
    conn_lock(c);
    if (c->disconnects++ == 0) {
        c->disconnect_ms = now_ms();
    }
    pthread_cond_broadcast(&c->cv);
    conn_unlock(c);
}

static void on_reconnected(natsConnection *nc, void *closure)
{
    struct conn *c = closure;
    (void)nc;
    conn_lock(c);
    c->reconnects++;
    pthread_cond_broadcast(&c->cv);
    conn_unlock(c);
}

static void on_closed(natsConnection *nc, void *closure)
{
    struct conn *c = closure;
    (void)nc;
    conn_lock(c);
    c->closed++;
    pthread_cond_broadcast(&c->cv);
    conn_unlock(c);
}

/* Waits until *field (an int of c, read under c->mu) reaches at least want;
 * returns whether it did within timeout_ms. */
static bool conn_wait(struct conn *c, const int *field, int want,
                      int64_t timeout_ms)
{
    struct timespec ts;
    bool ok;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(timeout_ms / 1000);
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    conn_lock(c);
    while (*field < want) {
        if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) == ETIMEDOUT) {
            break;
        }
    }
    ok = *field >= want;
    conn_unlock(c);
    return ok;
}

enum {
    CONN_RECONNECT = 1 << 0, /* let nats.c reconnect (quickly) */
    CONN_NO_CREDS = 1 << 1,  /* send no credentials at all */
    CONN_BAD_SIG = 1 << 2,   /* the member's public key, a random signature */
};

struct conn_opts {
    const char *url;           /* default: url_of(role) */
    const char *ca;            /* default: g.ca for tls:// URLs */
    const char *expected_host; /* TLS host name to verify, if set */
    unsigned flags;
};

/* A signature handler that signs nothing: 64 random bytes. */
static natsStatus sign_garbage(char **custom_err, unsigned char **sig,
                               int *sig_len, const char *nonce, void *closure)
{
    unsigned char *s = malloc(64);
    (void)custom_err;
    (void)nonce;
    (void)closure;
    if (s == NULL) {
        return NATS_NO_MEMORY;
    }
    for (int i = 0; i < 64; i++) {
        s[i] = (unsigned char)(rand() & 0xff);
    }
    *sig = s;
    *sig_len = 64;
    return NATS_OK;
}

/* Builds the options of a member's connection, the way an application of
 * unibus would: its nkey, its inbox prefix, the CA when the URL is tls://. */
static void conn_init(struct conn *c, const char *role,
                      const struct conn_opts *o)
{
    natsOptions *opts;
    pthread_condattr_t ca;
    const char *url = o && o->url ? o->url : url_of(role);
    unsigned flags = o ? o->flags : 0;

    memset(c, 0, sizeof *c);
    member_load(&c->m, role);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&c->mu, NULL);

    NATS_CHECK(natsOptions_Create(&opts), "natsOptions_Create");
    c->opts = opts;
    NATS_CHECK(natsOptions_SetURL(opts, url), "natsOptions_SetURL");
    NATS_CHECK(natsOptions_SetName(opts, c->m.handle), "natsOptions_SetName");
    NATS_CHECK(natsOptions_SetTimeout(opts, 3000), "natsOptions_SetTimeout");
    if (!(flags & CONN_NO_CREDS)) {
        if (flags & CONN_BAD_SIG) {
            NATS_CHECK(natsOptions_SetNKey(opts, c->m.pub, sign_garbage, NULL),
                       "natsOptions_SetNKey");
        } else {
            NATS_CHECK(
                natsOptions_SetNKeyFromSeed(opts, c->m.pub, c->m.seed_path),
                "natsOptions_SetNKeyFromSeed");
        }
    }
    NATS_CHECK(natsOptions_SetCustomInboxPrefix(opts, c->m.inbox),
               "natsOptions_SetCustomInboxPrefix");
    NATS_CHECK(natsOptions_SetErrorHandler(opts, on_error, c),
               "SetErrorHandler");
    NATS_CHECK(natsOptions_SetDisconnectedCB(opts, on_disconnected, c),
               "SetDisconnectedCB");
    NATS_CHECK(natsOptions_SetReconnectedCB(opts, on_reconnected, c),
               "SetReconnectedCB");
    NATS_CHECK(natsOptions_SetClosedCB(opts, on_closed, c), "SetClosedCB");
    if (flags & CONN_RECONNECT) {
        NATS_CHECK(natsOptions_SetAllowReconnect(opts, true),
                   "SetAllowReconnect");
        NATS_CHECK(natsOptions_SetMaxReconnect(opts, 10), "SetMaxReconnect");
        NATS_CHECK(natsOptions_SetReconnectWait(opts, 100), "SetReconnectWait");
        NATS_CHECK(natsOptions_SetReconnectJitter(opts, 0, 0),
                   "SetReconnectJitter");
    } else {
        /* A test connection that drops must show up as a failure, not be
         * papered over by a silent reconnect. */
        NATS_CHECK(natsOptions_SetAllowReconnect(opts, false),
                   "SetAllowReconnect");
    }
    if (strncmp(url, "tls://", 6) == 0) {
        const char *cafile = o && o->ca ? o->ca : g.ca;
        CHECK(cafile != NULL, "a tls:// URL needs --ca");
        NATS_CHECK(natsOptions_SetSecure(opts, true), "natsOptions_SetSecure");
        NATS_CHECK(natsOptions_LoadCATrustedCertificates(opts, cafile),
                   "natsOptions_LoadCATrustedCertificates");
        if (o && o->expected_host) {
            NATS_CHECK(natsOptions_SetExpectedHostname(opts, o->expected_host),
                       "natsOptions_SetExpectedHostname");
        }
    }
}

/* Tries to connect; returns the status, and the library's error text. */
static natsStatus conn_try(struct conn *c, const char **text)
{
    natsStatus s = natsConnection_Connect(&c->nc, c->opts);
    if (s != NATS_OK) {
        natsStatus ls;
        const char *t = nats_GetLastError(&ls);
        if (text) {
            *text = t ? t : "";
        }
    }
    return s;
}

static void conn_close(struct conn *c);

/* Connects a member that must be accepted.
 *
 * Debian's nats.c 3.4.1 base64-encodes the nonce signature with a routine
 * that stops at a leading zero byte, so one connection in 256 sends CONNECT
 * with the nkey but without "sig" and is rightly refused (fixed upstream in
 * nats.c 3.8, nats-io/nats.c#705). The nonce differs on every connection,
 * so a refused member is retried a few times; a server that refuses the
 * member every time still fails the case. */
static void conn_open(struct conn *c, const char *role,
                      const struct conn_opts *o)
{
    const char *text = "";
    natsStatus s = NATS_ERR;

    for (int attempt = 1; attempt <= 4; attempt++) {
        conn_init(c, role, o);
        s = conn_try(c, &text);
        if (s == NATS_OK || strstr(text, "Authorization Violation") == NULL) {
            break;
        }
        note(
            "%s refused (attempt %d): %s; retrying (nats.c 3.4 drops a "
            "signature starting with 0x00)",
            role, attempt, text);
        conn_close(c);
    }
    CHECK(s == NATS_OK, "%s (%s, %s) could not connect to %s: %s (%s)", role,
          c->m.handle, c->m.pub, o && o->url ? o->url : url_of(role),
          natsStatus_GetText(s), text);
}

static void conn_close(struct conn *c)
{
    if (c->nc) {
        natsConnection_Close(c->nc);
        /* nats.c calls the closed callback from its own thread: c (and its
         * mutex) must outlive that call. */
        CHECK(conn_wait(c, &c->closed, 1, 5000),
              "%s: no closed callback within 5 s of closing", c->m.role);
        natsConnection_Destroy(c->nc);
        c->nc = NULL;
    }
    natsOptions_Destroy(c->opts);
    c->opts = NULL;
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
}

static void conn_flush(struct conn *c)
{
    NATS_CHECK(natsConnection_FlushTimeout(c->nc, 3000), "flush");
}

/* The latest asynchronous error of c, if one arrived after the first
 * `seen` errors within timeout_ms; copies its text. */
static bool conn_next_error(struct conn *c, int seen, int64_t timeout_ms,
                            natsStatus *st, char *text, size_t len)
{
    bool ok = conn_wait(c, &c->errors, seen + 1, timeout_ms);
    conn_lock(c);
    if (st) {
        *st = c->err_status;
    }
    snprintf(text, len, "%s", c->err_text);
    conn_unlock(c);
    return ok;
}

/* Reads one of c's event counters (c->errors, c->disconnects, ...). */
static int conn_count(struct conn *c, const int *field)
{
    int n;
    conn_lock(c);
    n = *field;
    conn_unlock(c);
    return n;
}

static int conn_errors(struct conn *c)
{
    return conn_count(c, &c->errors);
}

/* The exact permissions error text for op ("Publish", "Subscription") on
 * subject; the server quotes the subject as Go's %q does. */
static void violation(char *out, size_t len, const char *op,
                      const char *subject)
{
    snprintf(out, len, "Permissions Violation for %s to \"%s\"", op, subject);
}

/* Expects the permissions error `want` (exact text, quotes included) as the
 * next asynchronous error of c. */
static void expect_violation(struct conn *c, int seen, const char *want)
{
    char text[512];
    natsStatus st;

    CHECK(conn_next_error(c, seen, 3000, &st, text, sizeof text),
          "%s: no asynchronous error within 3 s, expected '%s'", c->m.role,
          want);
    CHECK(st == NATS_NOT_PERMITTED,
          "%s: asynchronous error is %s (%s), expected NATS_NOT_PERMITTED",
          c->m.role, natsStatus_GetText(st), text);
    CHECK(strstr(text, want) != NULL, "%s: error text '%s', expected '%s'",
          c->m.role, text, want);
    CHECK(natsConnection_Status(c->nc) == NATS_CONN_STATUS_CONNECTED,
          "%s: connection not connected after '%s'", c->m.role, want);
}

/* ------------------------------------------------------------------------
 * Messages
 * ---------------------------------------------------------------------- */

static void subj(char *out, size_t len, const char *suffix)
{
    snprintf(out, len, "room.%s.%s.%s", g.room, g.tok, suffix);
}

static void pub(struct conn *c, const char *subject, const char *data)
{
    NATS_CHECK(natsConnection_PublishString(c->nc, subject, data), "publish");
}

static natsSubscription *sub_sync(struct conn *c, const char *subject,
                                  const char *queue)
{
    natsSubscription *s = NULL;
    if (queue) {
        NATS_CHECK(natsConnection_QueueSubscribeSync(&s, c->nc, subject, queue),
                   "queue subscribe");
    } else {
        NATS_CHECK(natsConnection_SubscribeSync(&s, c->nc, subject),
                   "subscribe");
    }
    return s;
}

static void sub_close(natsSubscription *s)
{
    if (s) {
        natsSubscription_Unsubscribe(s);
        natsSubscription_Destroy(s);
    }
}

/* Next message of s within timeout_ms, or NULL. */
static natsMsg *next_msg(natsSubscription *s, int64_t timeout_ms)
{
    natsMsg *m = NULL;
    natsStatus st;

    /* A zero timeout returns what is pending, without waiting. */
    st = natsSubscription_NextMsg(&m, s, timeout_ms);
    if (st == NATS_TIMEOUT) {
        return NULL;
    }
    NATS_CHECK(st, "next message");
    return m;
}

/* The payload of m as an integer (the cases send decimal numbers). */
static long long msg_number(natsMsg *m)
{
    char buf[32];
    int n = natsMsg_GetDataLength(m);

    CHECK(n > 0 && n < (int)sizeof buf, "payload is not a number");
    memcpy(buf, natsMsg_GetData(m), (size_t)n);
    buf[n] = '\0';
    return strtoll(buf, NULL, 10);
}

static natsMsg *must_msg(natsSubscription *s, const char *what)
{
    natsMsg *m = next_msg(s, 3000);
    CHECK(m != NULL, "no message within 3 s: %s", what);
    return m;
}

static bool data_is(natsMsg *m, const char *want)
{
    size_t n = strlen(want);
    return (size_t)natsMsg_GetDataLength(m) == n &&
           memcmp(natsMsg_GetData(m), want, n) == 0;
}

static void expect_msg(natsSubscription *s, const char *subject,
                       const char *data, const char *what)
{
    natsMsg *m = must_msg(s, what);
    CHECK(strcmp(natsMsg_GetSubject(m), subject) == 0,
          "%s: subject '%s', expected '%s'", what, natsMsg_GetSubject(m),
          subject);
    CHECK(data_is(m, data), "%s: payload '%.*s', expected '%s'", what,
          natsMsg_GetDataLength(m), natsMsg_GetData(m), data);
    natsMsg_Destroy(m);
}

static int pending(natsSubscription *s)
{
    int msgs = 0, bytes = 0;
    NATS_CHECK(natsSubscription_GetPending(s, &msgs, &bytes), "pending");
    return msgs;
}

/* Waits until subscriber `to` sees messages published by `from` on a fresh
 * probe subject, publishing a probe every 50 ms. On one server the first
 * probe arrives; across routed nodes this waits for the subscriber's
 * interest (sent before the probe's, in order) to reach the publisher's
 * node. */
static void sync_interest(struct conn *from, struct conn *to)
{
    char probe[256];
    natsSubscription *s;
    natsMsg *m = NULL;
    int64_t deadline = now_ms() + 10000;

    /* Outside room.R.<tok>.> so that no case's wildcard sees probes. */
    snprintf(probe, sizeof probe, "room.%s.probe-%s.%s", g.room, g.tok,
             to->m.role);
    s = sub_sync(to, probe, NULL);
    conn_flush(to);
    while (m == NULL && now_ms() < deadline) {
        pub(from, probe, "probe");
        conn_flush(from);
        m = next_msg(s, 50);
    }
    CHECK(m != NULL, "%s never received %s's probes on %s within 10 s",
          to->m.role, from->m.role, probe);
    natsMsg_Destroy(m);
    sub_close(s);
}

/* ------------------------------------------------------------------------
 * Cases
 * ---------------------------------------------------------------------- */

/* Core publish/subscribe on a room subject between two members, in order,
 * and a member's own subjects (member.<handle>.>) with echo. */
static void case_pubsub(void)
{
    struct conn a, b;
    char s[256], own[256], want[32];
    natsSubscription *sb, *so;
    natsMsg *m;

    conn_open(&a, "alice", NULL);
    conn_open(&b, "bob", NULL);
    subj(s, sizeof s, "chat");
    sb = sub_sync(&b, s, NULL);
    sync_interest(&a, &b);
    for (int i = 0; i < 20; i++) {
        snprintf(want, sizeof want, "m%d", i);
        pub(&a, s, want);
    }
    conn_flush(&a);
    for (int i = 0; i < 20; i++) {
        snprintf(want, sizeof want, "m%d", i);
        m = must_msg(sb, "bob receiving alice's room messages");
        CHECK(strcmp(natsMsg_GetSubject(m), s) == 0, "subject '%s', want '%s'",
              natsMsg_GetSubject(m), s);
        CHECK(data_is(m, want), "message %d out of order: '%.*s'", i,
              natsMsg_GetDataLength(m), natsMsg_GetData(m));
        CHECK(natsMsg_GetReply(m) == NULL || natsMsg_GetReply(m)[0] == '\0',
              "unexpected reply subject '%s'", natsMsg_GetReply(m));
        natsMsg_Destroy(m);
    }
    /* Its own member subject, published and received by the member. */
    snprintf(own, sizeof own, "member.%s.%s.note", a.m.handle, g.tok);
    so = sub_sync(&a, own, NULL);
    pub(&a, own, "to myself");
    expect_msg(so, own, "to myself", "alice's own member subject");
    CHECK(conn_errors(&a) == 0 && conn_errors(&b) == 0,
          "unexpected asynchronous errors: alice '%s', bob '%s'", a.err_text,
          b.err_text);
    sub_close(so);
    sub_close(sb);
    conn_close(&a);
    conn_close(&b);
}

/* `*` matches one token, `>` one or more, in any position for `*`; the
 * delivered subject is the published one, not the subscription's. */
static void case_wildcards(void)
{
    struct conn a, b;
    char star[256], gt[256], mid[256], p[6][256];
    natsSubscription *subs[3];
    const char *names[3];
    /* Which of p[] each subscription receives, in order; the last one is
     * published after all others and serves as the fence. */
    static const int want[3][4] = { { 0, 4, -1 },
                                    { 0, 1, 4, -1 },
                                    { 3, 5, -1 } };

    conn_open(&a, "alice", NULL);
    conn_open(&b, "bob", NULL);
    snprintf(star, sizeof star, "room.%s.%s.*", g.room, g.tok);
    snprintf(gt, sizeof gt, "room.%s.%s.>", g.room, g.tok);
    snprintf(mid, sizeof mid, "room.%s.*.%s.mid", g.room, g.tok);
    subj(p[0], sizeof p[0], "a");
    subj(p[1], sizeof p[1], "a.b");
    snprintf(p[2], sizeof p[2], "room.%s.%s", g.room, g.tok); /* matches none */
    snprintf(p[3], sizeof p[3], "room.%s.x.%s.mid", g.room, g.tok);
    subj(p[4], sizeof p[4], "end");
    snprintf(p[5], sizeof p[5], "room.%s.y.%s.mid", g.room, g.tok);
    names[0] = star;
    names[1] = gt;
    names[2] = mid;
    for (int k = 0; k < 3; k++) {
        subs[k] = sub_sync(&b, names[k], NULL);
    }
    sync_interest(&a, &b);
    for (int i = 0; i < 6; i++) {
        pub(&a, p[i], p[i]);
    }
    conn_flush(&a);
    for (int k = 0; k < 3; k++) {
        for (int i = 0; want[k][i] >= 0; i++) {
            const char *w = p[want[k][i]];
            natsMsg *m = must_msg(subs[k], names[k]);
            CHECK(strcmp(natsMsg_GetSubject(m), w) == 0,
                  "subscription '%s' got '%s' where '%s' was expected",
                  names[k], natsMsg_GetSubject(m), w);
            CHECK(data_is(m, w), "payload of '%s' differs", w);
            natsMsg_Destroy(m);
        }
    }
    /* Every subscription had its fence; a round trip of bob's connection
     * ends the window for anything else. */
    conn_flush(&b);
    for (int k = 0; k < 3; k++) {
        natsMsg *m = next_msg(subs[k], 0);
        CHECK(m == NULL, "subscription '%s' also received '%s'", names[k],
              natsMsg_GetSubject(m));
        sub_close(subs[k]);
    }
    conn_close(&a);
    conn_close(&b);
}

#define QUEUE_N 200

/* N messages over a queue group of two members: each delivered exactly
 * once, both members get some; a plain subscriber gets all of them. */
static void case_queue(void)
{
    struct conn a, b, c;
    char work[256], fence[256], buf[16];
    natsSubscription *qb, *qc, *fb, *fc, *plain;
    int seen[QUEUE_N] = { 0 };
    int got_b = 0, got_c = 0, got_plain = 0;

    conn_open(&a, "alice", NULL);
    conn_open(&b, "bob", NULL);
    conn_open(&c, "carol", NULL);
    subj(work, sizeof work, "work");
    subj(fence, sizeof fence, "fence");
    qb = sub_sync(&b, work, "workers");
    qc = sub_sync(&c, work, "workers");
    fb = sub_sync(&b, fence, NULL);
    fc = sub_sync(&c, fence, NULL);
    plain = sub_sync(&a, work, NULL);
    sync_interest(&a, &b);
    sync_interest(&a, &c);
    for (int i = 0; i < QUEUE_N; i++) {
        snprintf(buf, sizeof buf, "%d", i);
        pub(&a, work, buf);
    }
    pub(&a, fence, "fence");
    conn_flush(&a);
    /* Once a member has the fence, all its queue messages are pending. */
    expect_msg(fb, fence, "fence", "bob's fence");
    expect_msg(fc, fence, "fence", "carol's fence");
    struct {
        natsSubscription *s;
        int *count;
    } qs[3] = { { qb, &got_b }, { qc, &got_c }, { plain, &got_plain } };
    for (int k = 0; k < 3; k++) {
        int n = pending(qs[k].s);
        for (int i = 0; i < n; i++) {
            natsMsg *m = must_msg(qs[k].s, "queue message");
            long long v = msg_number(m);
            CHECK(v >= 0 && v < QUEUE_N, "bad payload");
            if (k < 2) {
                seen[v]++;
            }
            (*qs[k].count)++;
            natsMsg_Destroy(m);
        }
    }
    conn_flush(&a);
    CHECK(next_msg(plain, 0) == NULL, "plain subscriber got extra messages");
    for (int i = 0; i < QUEUE_N; i++) {
        CHECK(seen[i] == 1, "message %d delivered %d times to the queue group",
              i, seen[i]);
    }
    CHECK(got_b > 0 && got_c > 0,
          "one queue member got nothing (bob %d, carol %d)", got_b, got_c);
    CHECK(got_plain == QUEUE_N, "plain subscriber got %d of %d", got_plain,
          QUEUE_N);
    note("queue split: bob %d, carol %d", got_b, got_c);
    sub_close(qb);
    sub_close(qc);
    sub_close(fb);
    sub_close(fc);
    sub_close(plain);
    conn_close(&a);
    conn_close(&b);
    conn_close(&c);
}

/* The responder: bob answers every request once, "twice" requests twice,
 * and records the reply subjects it saw. */
struct responder {
    pthread_mutex_t mu;
    char last_reply[256]; /* reply subject of the latest request */
};

static void on_request(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                       void *closure)
{
    struct responder *r = closure;
    char answer[300];
    const char *reply = natsMsg_GetReply(msg);
    (void)sub;

    snprintf(answer, sizeof answer, "re:%.*s", natsMsg_GetDataLength(msg),
             natsMsg_GetData(msg));
    /* Recorded before answering: once the requester has the answer, the
     * reply subject is here. */
    pthread_mutex_lock(&r->mu);
    snprintf(r->last_reply, sizeof r->last_reply, "%s", reply ? reply : "");
    pthread_mutex_unlock(&r->mu);
    if (reply != NULL) {
        natsConnection_PublishString(nc, reply, answer);
        if (data_is(msg, "twice")) {
            natsConnection_PublishString(nc, reply, "again");
        }
        natsConnection_Flush(nc);
    }
    natsMsg_Destroy(msg);
}

/* Request/reply between two members of a room: the requester's replies come
 * back under its own inbox prefix; the responder may publish exactly one
 * reply to the reply subject it received, and nothing else under the
 * requester's inbox. */
static void case_request(void)
{
    struct conn a, b;
    struct responder r;
    char svc[256], prefix[128], forged[256], want[300], reply[256];
    natsSubscription *sb = NULL;
    natsMsg *m = NULL;
    int errs;

    conn_open(&a, "alice", NULL);
    conn_open(&b, "bob", NULL);
    memset(&r, 0, sizeof r);
    pthread_mutex_init(&r.mu, NULL);
    subj(svc, sizeof svc, "svc");
    NATS_CHECK(natsConnection_Subscribe(&sb, b.nc, svc, on_request, &r),
               "subscribe responder");
    sync_interest(&a, &b);
    for (int i = 0; i < 5; i++) {
        char q[32];
        snprintf(q, sizeof q, "q%d", i);
        snprintf(want, sizeof want, "re:%s", q);
        NATS_CHECK(natsConnection_RequestString(&m, a.nc, svc, q, 3000),
                   "request");
        CHECK(data_is(m, want), "reply '%.*s', expected '%s'",
              natsMsg_GetDataLength(m), natsMsg_GetData(m), want);
        natsMsg_Destroy(m);
    }
    pthread_mutex_lock(&r.mu);
    snprintf(reply, sizeof reply, "%s", r.last_reply);
    pthread_mutex_unlock(&r.mu);
    snprintf(prefix, sizeof prefix, "%s.", a.m.inbox);
    CHECK(strncmp(reply, prefix, strlen(prefix)) == 0,
          "request reply subject '%s' is not under alice's inbox prefix '%s'",
          reply, prefix);

    /* A second answer to the same request is refused. */
    errs = conn_errors(&b);
    NATS_CHECK(natsConnection_RequestString(&m, a.nc, svc, "twice", 3000),
               "request twice");
    CHECK(data_is(m, "re:twice"), "first answer expected");
    natsMsg_Destroy(m);
    pthread_mutex_lock(&r.mu);
    snprintf(reply, sizeof reply, "%s", r.last_reply);
    pthread_mutex_unlock(&r.mu);
    violation(want, sizeof want, "Publish", reply);
    expect_violation(&b, errs, want);

    /* A reply subject bob never received is not his to publish to. */
    errs = conn_errors(&b);
    snprintf(forged, sizeof forged, "%s.forged", a.m.inbox);
    pub(&b, forged, "forged");
    violation(want, sizeof want, "Publish", forged);
    expect_violation(&b, errs, want);

    /* Both stay usable. */
    NATS_CHECK(natsConnection_RequestString(&m, a.nc, svc, "after", 3000),
               "request after violations");
    CHECK(data_is(m, "re:after"), "reply after violations");
    natsMsg_Destroy(m);
    CHECK(conn_errors(&a) == 0, "requester got errors: %s", a.err_text);
    sub_close(sb);
    conn_close(&a);
    conn_close(&b);
    pthread_mutex_destroy(&r.mu);
}

/* HPUB/HMSG: headers survive the round trip, a repeated header keeps all
 * its values in order, and a message may carry headers and no payload. */
static void case_headers(void)
{
    struct conn a, b;
    char s[256];
    natsSubscription *sb;
    natsMsg *out = NULL, *in;
    const char *v = NULL;
    const char **vals = NULL;
    int n = 0;

    conn_open(&a, "alice", NULL);
    conn_open(&b, "bob", NULL);
    subj(s, sizeof s, "hdr");
    sb = sub_sync(&b, s, NULL);
    sync_interest(&a, &b);

    NATS_CHECK(natsMsg_Create(&out, s, NULL, "body", 4), "natsMsg_Create");
    NATS_CHECK(natsMsgHeader_Set(out, "X-Unibus", "compat"), "header set");
    NATS_CHECK(natsMsgHeader_Add(out, "X-Multi", "one"), "header add");
    NATS_CHECK(natsMsgHeader_Add(out, "X-Multi", "two"), "header add");
    NATS_CHECK(natsMsgHeader_Add(out, "X-Multi", "three four"), "header add");
    NATS_CHECK(natsConnection_PublishMsg(a.nc, out), "publish with headers");
    natsMsg_Destroy(out);
    NATS_CHECK(natsMsg_Create(&out, s, NULL, NULL, 0), "natsMsg_Create");
    NATS_CHECK(natsMsgHeader_Set(out, "X-Only", "headers"), "header set");
    NATS_CHECK(natsConnection_PublishMsg(a.nc, out), "publish headers only");
    natsMsg_Destroy(out);
    conn_flush(&a);

    in = must_msg(sb, "message with headers");
    CHECK(data_is(in, "body"), "payload '%.*s', expected 'body'",
          natsMsg_GetDataLength(in), natsMsg_GetData(in));
    NATS_CHECK(natsMsgHeader_Get(in, "X-Unibus", &v), "header X-Unibus");
    CHECK(strcmp(v, "compat") == 0, "X-Unibus is '%s'", v);
    NATS_CHECK(natsMsgHeader_Values(in, "X-Multi", &vals, &n),
               "header X-Multi");
    CHECK(n == 3 && strcmp(vals[0], "one") == 0 &&
              strcmp(vals[1], "two") == 0 && strcmp(vals[2], "three four") == 0,
          "X-Multi has %d values (%s, ...), expected one, two, three four", n,
          n > 0 ? vals[0] : "-");
    free((void *)vals);
    natsMsg_Destroy(in);

    in = must_msg(sb, "message with headers only");
    CHECK(natsMsg_GetDataLength(in) == 0, "payload not empty");
    CHECK(!natsMsg_IsNoResponders(in), "taken for a no-responders status");
    NATS_CHECK(natsMsgHeader_Get(in, "X-Only", &v), "header X-Only");
    CHECK(strcmp(v, "headers") == 0, "X-Only is '%s'", v);
    natsMsg_Destroy(in);
    sub_close(sb);
    conn_close(&a);
    conn_close(&b);
}

/* What an asynchronous subscriber saw of a no-responders status. */
struct status_seen {
    pthread_mutex_t mu;
    int n;
    bool no_responders;
    int len;
    char status[16];
};

static void on_status(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                      void *closure)
{
    struct status_seen *st = closure;
    const char *v = NULL;
    (void)nc;
    (void)sub;
    pthread_mutex_lock(&st->mu);
    st->n++;
    st->no_responders = natsMsg_IsNoResponders(msg);
    st->len = natsMsg_GetDataLength(msg);
    if (natsMsgHeader_Get(msg, "Status", &v) == NATS_OK) {
        snprintf(st->status, sizeof st->status, "%s", v);
    }
    pthread_mutex_unlock(&st->mu);
    natsMsg_Destroy(msg);
}

/* A request nobody listens to fails fast with no-responders (503), through
 * the request API and as the raw status message on an inbox of the member's
 * own. */
static void case_noresponders(void)
{
    struct conn a;
    char s[256], inbox[160], inbox2[160];
    natsMsg *m = NULL;
    natsSubscription *si, *sa = NULL;
    struct status_seen seen;
    int64_t t0, took;
    natsStatus st;
    bool got = false;

    conn_open(&a, "alice", NULL);
    subj(s, sizeof s, "nobody");
    t0 = now_ms();
    st = natsConnection_RequestString(&m, a.nc, s, "anyone?", 5000);
    took = now_ms() - t0;
    CHECK(st == NATS_NO_RESPONDERS,
          "request to %s: %s, expected NATS_NO_RESPONDERS", s,
          natsStatus_GetText(st));
    CHECK(took < 1000, "no-responders took %" PRId64 " ms", took);
    natsMsg_Destroy(m);
    m = NULL;

    /* A synchronous subscriber on its own reply subject: nats.c turns the
     * status message into NATS_NO_RESPONDERS. */
    snprintf(inbox, sizeof inbox, "%s.%s.sync", a.m.inbox, g.tok);
    si = sub_sync(&a, inbox, NULL);
    NATS_CHECK(natsConnection_PublishRequestString(a.nc, s, inbox, "anyone?"),
               "publish request");
    st = natsSubscription_NextMsg(&m, si, 3000);
    CHECK(st == NATS_NO_RESPONDERS,
          "reply subject %s: %s, expected NATS_NO_RESPONDERS", inbox,
          natsStatus_GetText(st));
    natsMsg_Destroy(m);
    sub_close(si);

    /* An asynchronous subscriber sees the message itself: status 503, no
     * payload. */
    memset(&seen, 0, sizeof seen);
    pthread_mutex_init(&seen.mu, NULL);
    snprintf(inbox2, sizeof inbox2, "%s.%s.async", a.m.inbox, g.tok);
    NATS_CHECK(natsConnection_Subscribe(&sa, a.nc, inbox2, on_status, &seen),
               "subscribe");
    NATS_CHECK(natsConnection_PublishRequestString(a.nc, s, inbox2, "anyone?"),
               "publish request");
    conn_flush(&a);
    for (t0 = now_ms(); !got && now_ms() - t0 < 3000;) {
        pthread_mutex_lock(&seen.mu);
        got = seen.n > 0;
        pthread_mutex_unlock(&seen.mu);
        if (!got) {
            nats_Sleep(5);
        }
    }
    sub_close(sa); /* no callback after this returns */
    CHECK(got, "no status message on %s within 3 s", inbox2);
    CHECK(seen.n == 1 && seen.no_responders && seen.len == 0 &&
              strcmp(seen.status, "503") == 0,
          "status message: %d message(s), no-responders %d, %d payload bytes, "
          "Status '%s' (expected one 503 with no payload)",
          seen.n, seen.no_responders, seen.len, seen.status);
    pthread_mutex_destroy(&seen.mu);
    CHECK(conn_errors(&a) == 0, "unexpected error: %s", a.err_text);
    conn_close(&a);
}

static void expect_refused(const char *role, const struct conn_opts *o,
                           const char *what)
{
    struct conn c;
    const char *text = "";
    natsStatus st;
    int64_t t0 = now_ms(), took;

    conn_init(&c, role, o);
    st = conn_try(&c, &text);
    took = now_ms() - t0;
    CHECK(st != NATS_OK, "%s: connection accepted", what);
    CHECK(strstr(text, "Authorization Violation") != NULL ||
              st == NATS_CONNECTION_AUTH_FAILED,
          "%s: refused with %s (%s), expected Authorization Violation", what,
          natsStatus_GetText(st), text);
    CHECK(took < 2500, "%s: refusal took %" PRId64 " ms", what, took);
    note("%s: %s (%s)", what, natsStatus_GetText(st), text);
    conn_close(&c);
}

/* nkey authentication: a member's key is accepted; an unknown key, a bad
 * signature and no credentials are refused with Authorization Violation. */
static void case_auth(void)
{
    struct conn a;
    char own[256];
    natsSubscription *s;
    struct conn_opts bad = { 0 };

    conn_open(&a, "alice", NULL);
    snprintf(own, sizeof own, "member.%s.%s.auth", a.m.handle, g.tok);
    s = sub_sync(&a, own, NULL);
    pub(&a, own, "hello");
    expect_msg(s, own, "hello", "alice after authenticating");
    sub_close(s);
    conn_close(&a);

    expect_refused("ghost", NULL, "unknown nkey");
    bad.flags = CONN_BAD_SIG;
    expect_refused("alice", &bad, "member's public key with a bad signature");
    bad.flags = CONN_NO_CREDS;
    expect_refused("alice", &bad, "no credentials");
}

/* Publishing outside the member's subjects is refused with the exact NATS
 * error, nothing is delivered, and the connection stays usable. */
static void case_deny_pub(void)
{
    struct conn a, b;
    char s[4][256], fence[256], want[1400], ok[256];
    natsSubscription *sbm, *sbf;

    conn_open(&a, "alice", NULL);
    conn_open(&b, "bob", NULL);
    snprintf(s[0], sizeof s[0], "member.%s.%s.dm", b.m.handle, g.tok);
    snprintf(s[1], sizeof s[1], "%s.%s.x", b.m.inbox, g.tok);
    snprintf(s[2], sizeof s[2], "room.%s-other.%s", g.room, g.tok);
    snprintf(s[3], sizeof s[3], "elsewhere.%s", g.tok);
    subj(fence, sizeof fence, "fence");
    /* bob listens where alice must not be able to write. */
    sbm = sub_sync(&b, s[0], NULL);
    sbf = sub_sync(&b, fence, NULL);
    sync_interest(&a, &b);
    for (int i = 0; i < 4; i++) {
        int errs = conn_errors(&a);
        pub(&a, s[i], "denied");
        violation(want, sizeof want, "Publish", s[i]);
        expect_violation(&a, errs, want);
    }
    pub(&a, fence, "fence");
    expect_msg(sbf, fence, "fence", "fence after denied publishes");
    CHECK(next_msg(sbm, 0) == NULL, "bob received alice's denied publish on %s",
          s[0]);
    /* Still usable: a normal round trip. */
    subj(ok, sizeof ok, "ok");
    sub_close(sbf);
    sbf = sub_sync(&b, ok, NULL);
    sync_interest(&a, &b);
    pub(&a, ok, "still here");
    expect_msg(sbf, ok, "still here", "room message after violations");
    sub_close(sbm);
    sub_close(sbf);
    conn_close(&a);
    conn_close(&b);
}

/* Subscribing outside the member's subjects is refused with the exact NATS
 * error (queue form included), nothing is delivered on it, and the
 * connection stays usable. */
static void case_deny_sub(void)
{
    struct conn a, b;
    char s[5][256], want[1400], bobs[256], fence[256];
    natsSubscription *denied[6] = { 0 }, *sf, *sok;
    int k = 0;

    conn_open(&a, "alice", NULL);
    conn_open(&b, "bob", NULL);
    snprintf(s[0], sizeof s[0], "member.%s.>", b.m.handle);
    snprintf(s[1], sizeof s[1], "%s.>", b.m.inbox);
    snprintf(s[2], sizeof s[2], "room.%s-other.>", g.room);
    snprintf(s[3], sizeof s[3], "room.>");
    snprintf(s[4], sizeof s[4], ">");
    for (int i = 0; i < 5; i++) {
        int errs = conn_errors(&a);
        denied[k++] = sub_sync(&a, s[i], NULL);
        conn_flush(&a);
        violation(want, sizeof want, "Subscription", s[i]);
        expect_violation(&a, errs, want);
    }
    {
        int errs = conn_errors(&a);
        char q[256];
        snprintf(q, sizeof q, "room.%s-other.%s", g.room, g.tok);
        denied[k++] = sub_sync(&a, q, "spies");
        conn_flush(&a);
        snprintf(want, sizeof want,
                 "Permissions Violation for Subscription to \"%s\" using queue "
                 "\"spies\"",
                 q);
        expect_violation(&a, errs, want);
    }
    /* bob writes into his own subjects; alice's refused subscriptions must
     * not deliver it. The fence is a room message after it. */
    subj(fence, sizeof fence, "fence");
    sf = sub_sync(&a, fence, NULL);
    sync_interest(&b, &a);
    snprintf(bobs, sizeof bobs, "member.%s.%s.private", b.m.handle, g.tok);
    pub(&b, bobs, "private");
    pub(&b, fence, "fence");
    expect_msg(sf, fence, "fence", "fence after bob's private message");
    conn_flush(&a);
    for (int i = 0; i < k; i++) {
        natsMsg *m = NULL;
        natsStatus st = natsSubscription_NextMsg(&m, denied[i], 0);
        CHECK(st != NATS_OK, "refused subscription %d delivered '%s'", i,
              natsMsg_GetSubject(m));
    }
    /* Still usable. */
    sok = sub_sync(&a, fence, NULL);
    sync_interest(&b, &a);
    pub(&b, fence, "again");
    expect_msg(sok, fence, "again", "room message after violations");
    for (int i = 0; i < k; i++) {
        sub_close(denied[i]);
    }
    sub_close(sf);
    sub_close(sok);
    conn_close(&a);
    conn_close(&b);
}

/* Checks the refusal of a publish over max_payload whose client-side status
 * was st: refused by nats.c (NATS_MAX_PAYLOAD; returns true, the connection
 * is usable) or sent and refused by the server, which closes the connection
 * (returns false). */
static bool oversize_refused(struct conn *a, natsStatus st, const char *what)
{
    char text[512];

    if (st != NATS_OK) {
        CHECK(st == NATS_MAX_PAYLOAD, "%s: %s, expected NATS_MAX_PAYLOAD", what,
              natsStatus_GetText(st));
        note("%s: refused by the client (NATS_MAX_PAYLOAD)", what);
        return true;
    }
    natsConnection_FlushTimeout(a->nc, 3000); /* fails once closed */
    CHECK(conn_wait(a, &a->closed, 1, 3000),
          "%s was sent and the server did not close the connection", what);
    conn_lock(a);
    snprintf(text, sizeof text, "%s", a->err_text);
    conn_unlock(a);
    note("%s: refused by the server ('%s')", what, text);
    return false;
}

/* The advertised max_payload: a message of exactly that size is delivered
 * intact; one byte more is refused (by the client before sending, or by the
 * server); the connection stays usable after a client-side refusal. */
static void case_maxpayload(void)
{
    struct conn a, b;
    char s[256];
    natsSubscription *sb;
    int64_t mp;
    char *buf;
    natsMsg *m, *hm = NULL;
    natsStatus st;
    bool usable;

    conn_open(&a, "alice", NULL);
    conn_open(&b, "bob", NULL);
    mp = natsConnection_GetMaxPayload(a.nc);
    CHECK(mp > 0 && mp <= 64 * 1024 * 1024, "max_payload %" PRId64, mp);
    note("max_payload %" PRId64, mp);
    buf = malloc((size_t)mp + 1);
    CHECK(buf != NULL, "out of memory");
    for (int64_t i = 0; i <= mp; i++) {
        buf[i] = (char)('a' + i % 26);
    }
    subj(s, sizeof s, "big");
    sb = sub_sync(&b, s, NULL);
    NATS_CHECK(natsSubscription_SetPendingLimits(sb, 16, (int)(4 * mp)),
               "pending limits");
    sync_interest(&a, &b);

    NATS_CHECK(natsConnection_Publish(a.nc, s, buf, (int)mp),
               "publish at the limit");
    conn_flush(&a);
    m = must_msg(sb, "message at max_payload");
    CHECK(natsMsg_GetDataLength(m) == (int)mp &&
              memcmp(natsMsg_GetData(m), buf, (size_t)mp) == 0,
          "message at the limit arrived with %d bytes or altered",
          natsMsg_GetDataLength(m));
    natsMsg_Destroy(m);

    st = natsConnection_Publish(a.nc, s, buf, (int)mp + 1);
    usable = oversize_refused(&a, st, "max_payload+1");
    if (usable) {
        /* Headers count too: headers + payload over the limit. */
        NATS_CHECK(natsMsg_Create(&hm, s, NULL, buf, (int)mp - 4),
                   "natsMsg_Create");
        NATS_CHECK(natsMsgHeader_Set(hm, "X-Pad", "padding"), "header");
        st = natsConnection_PublishMsg(a.nc, hm);
        natsMsg_Destroy(hm);
        usable = oversize_refused(&a, st, "headers+payload over the limit");
    }
    if (usable) {
        NATS_CHECK(natsConnection_Publish(a.nc, s, "small", 5),
                   "publish small");
        conn_flush(&a);
        expect_msg(sb, s, "small", "message after the refusals");
    }
    /* Whoever refused, nothing oversize reached bob. */
    conn_flush(&b);
    CHECK(next_msg(sb, 0) == NULL, "an oversize message was delivered");
    free(buf);
    sub_close(sb);
    conn_close(&a);
    conn_close(&b);
}

/* TLS with server certificate verification: members talk over TLS; a client
 * trusting another CA, or expecting another host name, refuses the server. */
static void case_tls(void)
{
    struct conn a, b, x;
    char s[256], svc[256];
    struct responder r;
    natsSubscription *sb, *sr = NULL;
    natsMsg *m = NULL;
    natsStatus st;
    const char *text = "";
    struct conn_opts o = { 0 };

    CHECK(g.ca != NULL && strncmp(g.urls[0], "tls://", 6) == 0,
          "the tls case needs --url tls://... and --ca");
    conn_open(&a, "alice", NULL);
    conn_open(&b, "bob", NULL);
    subj(s, sizeof s, "secure");
    sb = sub_sync(&b, s, NULL);
    sync_interest(&a, &b);
    pub(&a, s, "over tls");
    expect_msg(sb, s, "over tls", "message over TLS");
    memset(&r, 0, sizeof r);
    pthread_mutex_init(&r.mu, NULL);
    subj(svc, sizeof svc, "svc");
    NATS_CHECK(natsConnection_Subscribe(&sr, b.nc, svc, on_request, &r),
               "responder");
    sync_interest(&a, &b);
    NATS_CHECK(natsConnection_RequestString(&m, a.nc, svc, "tls", 3000),
               "request over TLS");
    CHECK(data_is(m, "re:tls"), "reply over TLS");
    natsMsg_Destroy(m);
    sub_close(sr);
    sub_close(sb);
    pthread_mutex_destroy(&r.mu);

    if (g.wrong_ca) {
        o.ca = g.wrong_ca;
        conn_init(&x, "alice", &o);
        st = conn_try(&x, &text);
        CHECK(st != NATS_OK,
              "connected although the server's CA is not trusted");
        note("untrusted CA refused: %s (%s)", natsStatus_GetText(st), text);
        conn_close(&x);
    }
    o.ca = NULL;
    o.expected_host = "not-this-server.invalid";
    conn_init(&x, "alice", &o);
    st = conn_try(&x, &text);
    CHECK(st != NATS_OK,
          "connected although the certificate names another host");
    note("wrong host name refused: %s (%s)", natsStatus_GetText(st), text);
    conn_close(&x);
    conn_close(&a);
    conn_close(&b);
}

/* Blocks until the harness writes a line on stdin (the change it made). */
static int64_t handshake(const char *what)
{
    char line[64];
    printf("READY %s\n", what);
    fflush(stdout);
    CHECK(fgets(line, sizeof line, stdin) != NULL, "harness closed stdin");
    return now_ms();
}

/* A member deleted while connected is disconnected within one second and
 * cannot come back. */
static void case_removed(void)
{
    struct conn v, again;
    struct conn_opts o = { 0 };
    int64_t t0, at;
    char text_buf[512];
    const char *text = "";
    natsStatus st;

    o.flags = CONN_RECONNECT;
    conn_open(&v, "victim", &o);
    conn_flush(&v);
    t0 = handshake("remove-member");
    CHECK(conn_wait(&v, &v.disconnects, 1, 1000 + 100),
          "still connected 1 s after the member was removed");
    conn_lock(&v);
    at = v.disconnect_ms - t0;
    snprintf(text_buf, sizeof text_buf, "%s", v.err_text);
    conn_unlock(&v);
    CHECK(at <= 1000, "disconnected %" PRId64 " ms after the removal", at);
    note("disconnected %" PRId64
         " ms after the removal was committed (negative: before the harness "
         "saw the commit); asynchronous error '%s'",
         at, text_buf);
    /* nats.c retries, is refused, and gives up. */
    CHECK(conn_wait(&v, &v.closed, 1, 5000),
          "the removed member's connection did not end (still reconnecting)");
    CHECK(conn_count(&v, &v.reconnects) == 0, "the removed member reconnected");
    {
        const char *le = NULL;
        natsConnection_GetLastError(v.nc, &le);
        note("closed; last error '%s'", le ? le : "");
    }
    conn_init(&again, "victim", NULL);
    st = conn_try(&again, &text);
    CHECK(st != NATS_OK, "the removed member connected again");
    CHECK(strstr(text, "Authorization Violation") != NULL ||
              st == NATS_CONNECTION_AUTH_FAILED,
          "reconnect refused with %s (%s), expected Authorization Violation",
          natsStatus_GetText(st), text);
    conn_close(&again);
    conn_close(&v);
}

/* A member taken out of a room stops receiving the room within one second,
 * may no longer publish there, and keeps its connection. */
static void case_room_removed(void)
{
    struct conn a, l, c;
    char all[256], probe[256], own[256], buf[64], want[320];
    natsSubscription *sl, *sc, *so;
    natsMsg *m;
    int64_t t0, last = -1;
    int sent = 0, late = 0, errs;

    conn_open(&a, "alice", NULL);
    conn_open(&l, "leaver", NULL);
    conn_open(&c, "carol", NULL);
    snprintf(all, sizeof all, "room.%s.%s.>", g.room, g.tok);
    subj(probe, sizeof probe, "probe.t");
    sl = sub_sync(&l, all, NULL);
    sc = sub_sync(&c, all, NULL);
    sync_interest(&a, &l);
    sync_interest(&a, &c);
    /* Drain the probes of sync_interest that matched `all`. */
    conn_flush(&a);
    conn_flush(&l);
    conn_flush(&c);
    while ((m = next_msg(sl, 0)) != NULL) {
        natsMsg_Destroy(m);
    }
    while ((m = next_msg(sc, 0)) != NULL) {
        natsMsg_Destroy(m);
    }
    pub(&a, probe, "before");
    conn_flush(&a);
    expect_msg(sl, probe, "before", "leaver receiving the room before removal");
    expect_msg(sc, probe, "before", "carol receiving the room");

    t0 = handshake("remove-from-room");
    /* Probes every 50 ms for 1.5 s, stamped with ms since the removal. */
    while (now_ms() - t0 < 1500) {
        snprintf(buf, sizeof buf, "%" PRId64, now_ms() - t0);
        pub(&a, probe, buf);
        sent++;
        conn_flush(&a);
        nats_Sleep(50);
    }
    /* Fence: carol got every probe, then a round trip of the leaver's own
     * connection: any probe routed to the leaver is pending now. */
    for (int i = 0; i < sent; i++) {
        natsMsg_Destroy(must_msg(sc, "carol receiving the probes"));
    }
    conn_flush(&l);
    while ((m = next_msg(sl, 0)) != NULL) {
        int64_t t = msg_number(m);
        last = t;
        if (t > 1000) {
            late++;
        }
        natsMsg_Destroy(m);
    }
    CHECK(late == 0,
          "the leaver still received %d room messages published more than 1 s "
          "after the removal (last at %" PRId64 " ms)",
          late, last);
    note("last room message received %" PRId64 " ms after the removal", last);

    /* No more publishing there; the connection itself lives on. */
    errs = conn_errors(&l);
    pub(&l, probe, "after");
    violation(want, sizeof want, "Publish", probe);
    expect_violation(&l, errs, want);
    snprintf(own, sizeof own, "member.%s.%s.still", l.m.handle, g.tok);
    so = sub_sync(&l, own, NULL);
    pub(&l, own, "still here");
    expect_msg(so, own, "still here", "leaver's own subject after the removal");
    CHECK(conn_count(&l, &l.disconnects) == 0, "the leaver was disconnected");
    sub_close(so);
    sub_close(sl);
    sub_close(sc);
    conn_close(&a);
    conn_close(&l);
    conn_close(&c);
}

/* ------------------------------------------------------------------------
 * Main
 * ---------------------------------------------------------------------- */

static const struct {
    const char *name;
    void (*fn)(void);
} cases[] = {
    { "pubsub", case_pubsub },
    { "wildcards", case_wildcards },
    { "queue", case_queue },
    { "request", case_request },
    { "headers", case_headers },
    { "noresponders", case_noresponders },
    { "auth", case_auth },
    { "deny_pub", case_deny_pub },
    { "deny_sub", case_deny_sub },
    { "maxpayload", case_maxpayload },
    { "tls", case_tls },
    { "removed", case_removed },
    { "room_removed", case_room_removed },
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: compat_c CASE --creds DIR --room ROOM --url URL [--url URL "
            "...]\n"
            "                [--ca FILE] [--wrong-ca FILE]\n"
            "cases:");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fprintf(f, " %s", cases[i].name);
    }
    fputc('\n', f);
}

int main(int argc, char **argv)
{
    void (*fn)(void) = NULL;
    struct timespec ts;

    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    g.cas = argv[1];
    g_case = g.cas;
    for (int i = 2; i < argc; i += 2) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL) {
            usage(stderr);
            return 2;
        }
        if (strcmp(argv[i], "--url") == 0 && g.n_urls < MAX_URLS) {
            g.urls[g.n_urls++] = v;
        } else if (strcmp(argv[i], "--creds") == 0) {
            g.creds = v;
        } else if (strcmp(argv[i], "--room") == 0) {
            g.room = v;
        } else if (strcmp(argv[i], "--ca") == 0) {
            g.ca = v;
        } else if (strcmp(argv[i], "--wrong-ca") == 0) {
            g.wrong_ca = v;
        } else {
            usage(stderr);
            return 2;
        }
    }
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (strcmp(cases[i].name, g.cas) == 0) {
            fn = cases[i].fn;
        }
    }
    if (fn == NULL || g.n_urls == 0 || g.creds == NULL || g.room == NULL) {
        usage(stderr);
        return 2;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    srand((unsigned)(ts.tv_nsec ^ getpid()));
    snprintf(g.tok, sizeof g.tok, "c%ld%09ld%d", (long)ts.tv_sec, ts.tv_nsec,
             (int)getpid());
    NATS_CHECK(nats_Open(-1), "nats_Open");
    fn();
    nats_CloseAndWait(5000);
    printf("ok c/%s\n", g.cas);
    return 0;
}
