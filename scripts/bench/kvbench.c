/*
 * kvbench: one KV client for unibus and for etcd (its v3 HTTP/JSON gateway).
 *
 * The same code path drives both targets: raw HTTP/1.1 over keep-alive TCP
 * connections on loopback, one epoll loop, no client library in between.
 * Only the request bodies and the way a response is checked differ.
 *
 *   unibus: PUT /v1/kv/{bucket}/{key} (raw body), GET /v1/kv/{bucket}/{key},
 *           CAS = GET (revision) then PUT ?rev=N
 *   etcd:   POST /v3/kv/put, /v3/kv/range, CAS = range (mod_revision) then
 *           /v3/kv/txn comparing mod_revision; keys and values base64
 *
 * Modes (each prints one "RESULT ..." line on stdout):
 *   put-seq   N sequential puts, one connection: latency p50/p99
 *   put-tp    N puts, --conc requests in flight over --conc connections:
 *             puts/s (and latency under load)
 *   get-seq   N sequential linearizable reads of pre-written keys
 *   cas-seq   N sequential compare-and-swaps (read revision, conditional
 *             write); the latency of the pair is what is reported
 *   failover  writes a marker through --url, SIGKILLs --kill-pid, then starts
 *             a fresh write attempt through every --urls node every 50 ms
 *             until one is acknowledged; reports the time from the kill to
 *             that acknowledgement and whether the marker survived
 *
 * unibus requests are signed (docs/signing.md: UNIBUS-ED25519 header, fresh
 * nonce per request) when --handle and --seed-file are given, as every /v1/
 * request must be since the control plane has members; etcd runs without
 * auth.
 *
 * Build: cc -O2 -std=c11 -o kvbench kvbench.c -lcrypto
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

enum target { T_UNIBUS, T_ETCD };
enum op { OP_PUT, OP_GET, OP_CASPUT };

static enum target g_target = T_UNIBUS;
static const char *g_bucket = "bench";
static size_t g_vsize = 128;
static int g_timeout_ms = 10000;
static int g_verbose_errors = 5; /* how many bad answers to print */

/* ------------------------------------------------------------------ */
/* small helpers                                                        */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "kvbench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL) {
        die("out of memory");
    }
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (p == NULL) {
        die("out of memory");
    }
    return p;
}

struct buf {
    char *p;
    size_t len, cap;
};

static void buf_reserve(struct buf *b, size_t extra)
{
    if (b->len + extra + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 1024;
        while (c < b->len + extra + 1) {
            c *= 2;
        }
        b->p = xrealloc(b->p, c);
        b->cap = c;
    }
}

static void buf_add(struct buf *b, const void *d, size_t n)
{
    buf_reserve(b, n);
    memcpy(b->p + b->len, d, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static void buf_consume(struct buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
    } else {
        memmove(b->p, b->p + n, b->len - n);
        b->len -= n;
    }
    if (b->p) {
        b->p[b->len] = '\0';
    }
}

static const char B64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Appends the base64 encoding of d[0..n) to b. */
static void b64_add(struct buf *b, const unsigned char *d, size_t n)
{
    size_t i;
    buf_reserve(b, 4 * ((n + 2) / 3));
    for (i = 0; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8 | d[i + 2];
        b->p[b->len++] = B64[v >> 18 & 63];
        b->p[b->len++] = B64[v >> 12 & 63];
        b->p[b->len++] = B64[v >> 6 & 63];
        b->p[b->len++] = B64[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)d[i] << 16;
        if (i + 1 < n) {
            v |= (uint32_t)d[i + 1] << 8;
        }
        b->p[b->len++] = B64[v >> 18 & 63];
        b->p[b->len++] = B64[v >> 12 & 63];
        b->p[b->len++] = i + 1 < n ? B64[v >> 6 & 63] : '=';
        b->p[b->len++] = '=';
    }
    b->p[b->len] = '\0';
}

/* ------------------------------------------------------------------ */
/* unibus request signing (docs/signing.md)                             */

static const char *g_handle;
static EVP_PKEY *g_key;

static void b64url_add(struct buf *b, const unsigned char *d, size_t n)
{
    size_t start = b->len;
    b64_add(b, d, n);
    for (size_t i = start; i < b->len; i++) {
        if (b->p[i] == '+') {
            b->p[i] = '-';
        } else if (b->p[i] == '/') {
            b->p[i] = '_';
        }
    }
    while (b->len > start && b->p[b->len - 1] == '=') {
        b->len--;
    }
    b->p[b->len] = '\0';
}

static uint16_t crc16_xmodem(const unsigned char *d, size_t n)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= (uint16_t)(d[i] << 8);
        for (int k = 0; k < 8; k++) {
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021)
                                 : (uint16_t)(crc << 1);
        }
    }
    return crc;
}

/* Loads an nkey user seed (SU..., base32 of 0x95 0x00 + 32-byte Ed25519 seed
 * + CRC-16/XMODEM little-endian). */
static void load_seed(const char *path)
{
    static const char A32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    char txt[256];
    unsigned char raw[64];
    size_t n = 0;
    unsigned bits = 0, val = 0;
    FILE *f = fopen(path, "r");
    if (f == NULL || fgets(txt, sizeof txt, f) == NULL) {
        die("cannot read seed file %s", path);
    }
    fclose(f);
    for (const char *p = txt; *p && *p != '\n' && *p != '\r'; p++) {
        const char *q = strchr(A32, *p);
        if (q == NULL || n >= sizeof raw) {
            die("seed file %s is not an nkey seed", path);
        }
        val = (val << 5) | (unsigned)(q - A32);
        bits += 5;
        if (bits >= 8) {
            raw[n++] = (unsigned char)(val >> (bits - 8));
            bits -= 8;
        }
    }
    if (n != 36 || raw[0] != 0x95 || raw[1] != 0x00 ||
        crc16_xmodem(raw, 34) != (uint16_t)(raw[34] | raw[35] << 8)) {
        die("seed file %s is not a valid nkey user seed", path);
    }
    g_key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, raw + 2, 32);
    if (g_key == NULL) {
        die("cannot make an Ed25519 key from %s", path);
    }
}

/* Appends "Authorization: ...\r\n" for METHOD TARGET BODY to b. */
static void sign_add(struct buf *b, const char *method, const char *target,
                     const void *body, size_t blen)
{
    unsigned char nonce_raw[16], digest[32], sig[64];
    char hex[65];
    struct buf nonce = {0}, text = {0}, sigb = {0};
    size_t siglen = sizeof sig;
    long ts = (long)time(NULL);
    EVP_MD_CTX *ctx;

    if (RAND_bytes(nonce_raw, sizeof nonce_raw) != 1) {
        die("RAND_bytes failed");
    }
    b64url_add(&nonce, nonce_raw, sizeof nonce_raw);
    if (EVP_Digest(body ? body : "", blen, digest, NULL, EVP_sha256(),
                   NULL) != 1) {
        die("sha256 failed");
    }
    for (int i = 0; i < 32; i++) {
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    }
    buf_printf(&text, "UNIBUS-ED25519\n%s\n%s\n%ld\n%s\n%s", method, target,
               ts, nonce.p, hex);
    ctx = EVP_MD_CTX_new();
    if (ctx == NULL || EVP_DigestSignInit(ctx, NULL, NULL, NULL, g_key) != 1 ||
        EVP_DigestSign(ctx, sig, &siglen, (const unsigned char *)text.p,
                       text.len) != 1) {
        die("Ed25519 signing failed");
    }
    EVP_MD_CTX_free(ctx);
    b64url_add(&sigb, sig, siglen);
    buf_printf(b,
               "Authorization: UNIBUS-ED25519 handle=\"%s\",ts=\"%ld\","
               "nonce=\"%s\",sig=\"%s\"\r\n",
               g_handle, ts, nonce.p, sigb.p);
    free(nonce.p);
    free(text.p);
    free(sigb.p);
}

/* The value stored under key number i: printable, deterministic, g_vsize
 * bytes, different per key and per "generation" so a read can be checked. */
static void make_value(char *out, const char *key, unsigned gen)
{
    size_t klen = strlen(key);
    for (size_t j = 0; j < g_vsize; j++) {
        out[j] = (char)('a' + (j + klen * 7 + gen * 3 +
                               (unsigned char)key[j % klen]) % 26);
    }
    int n = snprintf(NULL, 0, "%s#%u#", key, gen);
    if ((size_t)n < g_vsize) {
        char tmp[256];
        snprintf(tmp, sizeof tmp, "%s#%u#", key, gen);
        memcpy(out, tmp, (size_t)n);
    }
}

/* ------------------------------------------------------------------ */
/* targets                                                              */

struct url {
    char host[64];
    int port;
    struct sockaddr_in sa;
};

static void parse_url(const char *s, struct url *u)
{
    const char *p = s;
    const char *colon;
    if (strncmp(p, "http://", 7) == 0) {
        p += 7;
    }
    colon = strrchr(p, ':');
    if (colon == NULL || (size_t)(colon - p) >= sizeof u->host) {
        die("bad url '%s' (want http://HOST:PORT)", s);
    }
    memcpy(u->host, p, (size_t)(colon - p));
    u->host[colon - p] = '\0';
    u->port = atoi(colon + 1);
    memset(&u->sa, 0, sizeof u->sa);
    u->sa.sin_family = AF_INET;
    u->sa.sin_port = htons((uint16_t)u->port);
    if (strcmp(u->host, "localhost") == 0) {
        inet_pton(AF_INET, "127.0.0.1", &u->sa.sin_addr);
    } else if (inet_pton(AF_INET, u->host, &u->sa.sin_addr) != 1) {
        die("url host must be an IPv4 address: '%s'", s);
    }
}

/* Builds the request of one operation into b. */
static void build_request(struct buf *b, const struct url *u, enum op op,
                          const char *key, const char *value,
                          uint64_t rev)
{
    b->len = 0;
    if (g_target == T_UNIBUS) {
        char target[600];
        if (op == OP_CASPUT) {
            snprintf(target, sizeof target, "/v1/kv/%s/%s?rev=%" PRIu64,
                     g_bucket, key, rev);
        } else {
            snprintf(target, sizeof target, "/v1/kv/%s/%s", g_bucket, key);
        }
        if (op == OP_GET) {
            buf_printf(b, "GET %s HTTP/1.1\r\nHost: %s:%d\r\n", target,
                       u->host, u->port);
            if (g_key) {
                sign_add(b, "GET", target, NULL, 0);
            }
            buf_printf(b, "\r\n");
            return;
        }
        buf_printf(b,
                   "PUT %s HTTP/1.1\r\nHost: %s:%d\r\n"
                   "Content-Type: application/octet-stream\r\n"
                   "Content-Length: %zu\r\n",
                   target, u->host, u->port, g_vsize);
        if (g_key) {
            sign_add(b, "PUT", target, value, g_vsize);
        }
        buf_printf(b, "\r\n");
        buf_add(b, value, g_vsize);
        return;
    }
    /* etcd: JSON body, key prefixed by the bucket so both stores hold the
     * same key names. */
    struct buf body = {0};
    char fullkey[512];
    snprintf(fullkey, sizeof fullkey, "%s/%s", g_bucket, key);
    const char *path;
    if (op == OP_GET) {
        path = "/v3/kv/range";
        buf_printf(&body, "{\"key\":\"");
        b64_add(&body, (const unsigned char *)fullkey, strlen(fullkey));
        buf_printf(&body, "\"}");
    } else if (op == OP_PUT) {
        path = "/v3/kv/put";
        buf_printf(&body, "{\"key\":\"");
        b64_add(&body, (const unsigned char *)fullkey, strlen(fullkey));
        buf_printf(&body, "\",\"value\":\"");
        b64_add(&body, (const unsigned char *)value, g_vsize);
        buf_printf(&body, "\"}");
    } else {
        path = "/v3/kv/txn";
        buf_printf(&body, "{\"compare\":[{\"key\":\"");
        b64_add(&body, (const unsigned char *)fullkey, strlen(fullkey));
        buf_printf(&body,
                   "\",\"result\":\"EQUAL\",\"target\":\"MOD\","
                   "\"mod_revision\":\"%" PRIu64 "\"}],"
                   "\"success\":[{\"request_put\":{\"key\":\"",
                   rev);
        b64_add(&body, (const unsigned char *)fullkey, strlen(fullkey));
        buf_printf(&body, "\",\"value\":\"");
        b64_add(&body, (const unsigned char *)value, g_vsize);
        buf_printf(&body, "\"}}]}");
    }
    buf_printf(b,
               "POST %s HTTP/1.1\r\nHost: %s:%d\r\n"
               "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
               path, u->host, u->port, body.len);
    buf_add(b, body.p, body.len);
    free(body.p);
}

/* Finds "name": followed by a number, optionally quoted (etcd's int64s are
 * JSON strings). Returns 0 on success. */
static int json_u64(const char *body, const char *name, uint64_t *out)
{
    char pat[64];
    const char *p;
    snprintf(pat, sizeof pat, "\"%s\":", name);
    p = strstr(body, pat);
    if (p == NULL) {
        return -1;
    }
    p += strlen(pat);
    while (*p == ' ' || *p == '"') {
        p++;
    }
    if (!isdigit((unsigned char)*p)) {
        return -1;
    }
    *out = strtoull(p, NULL, 10);
    return 0;
}

/* ------------------------------------------------------------------ */
/* HTTP/1.1 response parsing                                            */

struct resp {
    int status;
    bool close; /* server will close: Connection: close or no keep-alive */
    struct buf body;
};

static bool hdr_is(const char *line, size_t len, const char *name,
                   const char **val)
{
    size_t n = strlen(name);
    if (len <= n || strncasecmp(line, name, n) != 0 || line[n] != ':') {
        return false;
    }
    const char *v = line + n + 1;
    while (*v == ' ' || *v == '\t') {
        v++;
    }
    *val = v;
    return true;
}

/* Tries to parse one complete response at the start of in[0..len).
 * Returns bytes consumed (>0) when complete, 0 when more is needed, -1 on a
 * protocol error. eof: the peer closed (completes a close-delimited body). */
static long parse_response(const char *in, size_t len, bool eof,
                           struct resp *r)
{
    const char *end = memmem(in, len, "\r\n\r\n", 4);
    const char *p, *le;
    long clen = -1;
    bool chunked = false;
    size_t hlen;

    if (end == NULL) {
        return eof ? -1 : 0;
    }
    hlen = (size_t)(end - in) + 4;
    if (len < 12 || strncmp(in, "HTTP/1.", 7) != 0) {
        return -1;
    }
    r->status = atoi(in + 9);
    r->close = in[7] == '0';
    p = memchr(in, '\n', hlen) + 1;
    while (p < end) {
        const char *v;
        le = memchr(p, '\r', (size_t)(end + 2 - p));
        if (le == NULL) {
            break;
        }
        if (hdr_is(p, (size_t)(le - p), "content-length", &v)) {
            clen = strtol(v, NULL, 10);
        } else if (hdr_is(p, (size_t)(le - p), "transfer-encoding", &v)) {
            chunked = strncasecmp(v, "chunked", 7) == 0;
        } else if (hdr_is(p, (size_t)(le - p), "connection", &v)) {
            if (strncasecmp(v, "close", 5) == 0) {
                r->close = true;
            } else if (strncasecmp(v, "keep-alive", 10) == 0) {
                r->close = false;
            }
        }
        p = le + 2;
    }
    r->body.len = 0;
    if (r->status == 204 || r->status == 304 || r->status / 100 == 1) {
        buf_add(&r->body, "", 0);
        return (long)hlen;
    }
    if (chunked) {
        size_t off = hlen;
        for (;;) {
            const char *nl = memmem(in + off, len - off, "\r\n", 2);
            unsigned long sz;
            if (nl == NULL) {
                return eof ? -1 : 0;
            }
            sz = strtoul(in + off, NULL, 16);
            off = (size_t)(nl - in) + 2;
            if (sz == 0) {
                /* trailers (none expected) end with an empty line */
                const char *t = memmem(in + off, len - off, "\r\n", 2);
                while (t != NULL && t != in + off) {
                    off = (size_t)(t - in) + 2;
                    t = memmem(in + off, len - off, "\r\n", 2);
                }
                if (t == NULL) {
                    return eof ? -1 : 0;
                }
                off += 2;
                if (r->body.p == NULL) {
                    buf_add(&r->body, "", 0);
                }
                return (long)off;
            }
            if (len - off < sz + 2) {
                return eof ? -1 : 0;
            }
            buf_add(&r->body, in + off, sz);
            off += sz + 2;
        }
    }
    if (clen >= 0) {
        if (len - hlen < (size_t)clen) {
            return eof ? -1 : 0;
        }
        buf_add(&r->body, in + hlen, (size_t)clen);
        return (long)(hlen + (size_t)clen);
    }
    /* delimited by close */
    r->close = true;
    if (!eof) {
        return 0;
    }
    buf_add(&r->body, in + hlen, len - hlen);
    return (long)len;
}

/* ------------------------------------------------------------------ */
/* connections and the event loop                                       */

struct conn;
typedef void (*done_fn)(struct conn *c, int err); /* err: 0 = answer in c->r */

struct conn {
    int fd;
    const struct url *u;
    struct buf w;
    size_t woff;
    struct buf rb;
    struct resp r;
    bool busy;
    bool reused;   /* the request went on a connection used before */
    bool got_any;  /* response bytes seen for the current request */
    double t_start;
    double deadline;
    done_fn done;
    long tag;
    long idx;
    int retry;
    struct conn *next_all;
};

static int g_ep = -1;
static struct conn *g_all;

static void conn_close(struct conn *c)
{
    if (c->fd >= 0) {
        epoll_ctl(g_ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
    c->rb.len = 0;
}

static int conn_open(struct conn *c)
{
    int one = 1;
    struct timeval tv = {2, 0};
    struct epoll_event ev;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (const struct sockaddr *)&c->u->sa, sizeof c->u->sa) !=
        0) {
        close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    c->fd = fd;
    c->reused = false;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.ptr = c;
    epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ev);
    return 0;
}

static struct conn *conn_new(const struct url *u)
{
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        die("out of memory");
    }
    c->fd = -1;
    c->u = u;
    c->next_all = g_all;
    g_all = c;
    return c;
}

static void conn_finish(struct conn *c, int err)
{
    c->busy = false;
    if (err != 0) {
        conn_close(c);
    }
    c->done(c, err);
}

static void want_out(struct conn *c, bool on)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN | EPOLLRDHUP | (on ? EPOLLOUT : 0);
    ev.data.ptr = c;
    epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void conn_flush(struct conn *c)
{
    while (c->woff < c->w.len) {
        ssize_t n = send(c->fd, c->w.p + c->woff, c->w.len - c->woff,
                         MSG_NOSIGNAL);
        if (n > 0) {
            c->woff += (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            want_out(c, true);
            return;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        /* a kept-alive connection the server closed meanwhile: once more */
        if (c->reused && !c->got_any && c->retry == 0) {
            c->retry = 1;
            conn_close(c);
            if (conn_open(c) == 0) {
                c->woff = 0;
                continue;
            }
        }
        conn_finish(c, -1);
        return;
    }
}

/* Sends the request already built in c->w; c->done is called with the
 * answer. */
static void conn_start(struct conn *c)
{
    c->busy = true;
    c->woff = 0;
    c->got_any = false;
    c->retry = 0;
    c->t_start = now_s();
    c->deadline = c->t_start + g_timeout_ms / 1000.0;
    if (c->fd < 0) {
        if (conn_open(c) != 0) {
            conn_finish(c, -1);
            return;
        }
    } else {
        c->reused = true;
    }
    conn_flush(c);
}

static void conn_readable(struct conn *c)
{
    bool eof = false;
    for (;;) {
        buf_reserve(&c->rb, 16384);
        ssize_t n = recv(c->fd, c->rb.p + c->rb.len, c->rb.cap - c->rb.len - 1,
                         0);
        if (n > 0) {
            c->rb.len += (size_t)n;
            c->rb.p[c->rb.len] = '\0';
            c->got_any = true;
            continue;
        }
        if (n == 0) {
            eof = true;
            break;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            break;
        }
        eof = true;
        break;
    }
    if (!c->busy) {
        /* idle keep-alive connection closed (or stray bytes): drop it */
        if (eof || c->rb.len) {
            conn_close(c);
        }
        return;
    }
    if (c->rb.len == 0 && eof) {
        if (c->reused && c->retry == 0) {
            /* closed before answering on a reused connection: resend */
            c->retry = 1;
            conn_close(c);
            if (conn_open(c) == 0) {
                c->woff = 0;
                c->got_any = false;
                conn_flush(c);
                return;
            }
        }
        conn_finish(c, -1);
        return;
    }
    long used = parse_response(c->rb.p, c->rb.len, eof, &c->r);
    if (used == 0) {
        if (eof) {
            conn_finish(c, -1);
        }
        return;
    }
    if (used < 0) {
        conn_finish(c, -1);
        return;
    }
    buf_consume(&c->rb, (size_t)used);
    if (c->r.close || eof) {
        conn_close(c);
    }
    conn_finish(c, 0);
}

/* Runs the loop until stop() is true; tick() runs at least every 10 ms. */
static void run_loop(bool (*stop)(void), void (*tick)(double now))
{
    struct epoll_event evs[128];
    while (!stop()) {
        int n = epoll_wait(g_ep, evs, 128, 10);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->fd < 0) {
                continue;
            }
            if (evs[i].events & EPOLLOUT) {
                want_out(c, false);
                conn_flush(c);
            }
            if (c->fd >= 0 &&
                (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
                conn_readable(c);
            }
        }
        double t = now_s();
        for (struct conn *c = g_all; c; c = c->next_all) {
            if (c->busy && t > c->deadline) {
                conn_finish(c, -2);
            }
        }
        if (tick) {
            tick(t);
        }
    }
}

/* ------------------------------------------------------------------ */
/* checking answers                                                     */

static long g_errors;
static long g_err_status[600];
static long g_err_io;
static long g_err_timeout;

static void bad_answer(struct conn *c, int err, const char *what)
{
    g_errors++;
    if (err == -2) {
        g_err_timeout++;
    } else if (err != 0) {
        g_err_io++;
    } else if (c->r.status >= 0 && c->r.status < 600) {
        g_err_status[c->r.status]++;
    }
    if (g_verbose_errors > 0) {
        g_verbose_errors--;
        if (err == -2) {
            fprintf(stderr, "kvbench: %s: timeout after %d ms\n", what,
                    g_timeout_ms);
        } else if (err != 0) {
            fprintf(stderr, "kvbench: %s: connection error/closed\n", what);
        } else {
            fprintf(stderr, "kvbench: %s: HTTP %d: %.300s\n", what,
                    c->r.status, c->r.body.p ? c->r.body.p : "");
        }
    }
}

static void err_summary(char *out, size_t cap)
{
    size_t o = 0;
    out[0] = '\0';
    for (int s = 0; s < 600; s++) {
        if (g_err_status[s]) {
            o += (size_t)snprintf(out + o, cap - o, "%shttp%d:%ld",
                                  o ? "," : "", s, g_err_status[s]);
        }
    }
    if (g_err_io) {
        o += (size_t)snprintf(out + o, cap - o, "%sio:%ld", o ? "," : "",
                              g_err_io);
    }
    if (g_err_timeout) {
        o += (size_t)snprintf(out + o, cap - o, "%stimeout:%ld",
                              o ? "," : "", g_err_timeout);
    }
    if (o == 0) {
        snprintf(out, cap, "none");
    }
}

/* Is the answer to a write an acknowledgement? */
static bool write_ok(const struct conn *c, enum op op)
{
    if (c->r.status != 200) {
        return false;
    }
    if (g_target == T_UNIBUS) {
        return strstr(c->r.body.p, "\"revision\":") != NULL;
    }
    if (op == OP_CASPUT) {
        return strstr(c->r.body.p, "\"succeeded\":true") != NULL;
    }
    return strstr(c->r.body.p, "\"revision\"") != NULL;
}

/* Checks a read's answer carries the expected value (base64); returns the
 * key's revision (unibus "revision", etcd "mod_revision") via *rev. */
static bool read_ok(const struct conn *c, const char *value, uint64_t *rev)
{
    struct buf want = {0};
    bool ok;
    if (c->r.status != 200) {
        return false;
    }
    b64_add(&want, (const unsigned char *)value, g_vsize);
    ok = strstr(c->r.body.p, want.p) != NULL;
    free(want.p);
    if (ok && rev) {
        ok = json_u64(c->r.body.p,
                      g_target == T_UNIBUS ? "revision" : "mod_revision",
                      rev) == 0;
    }
    return ok;
}

/* ------------------------------------------------------------------ */
/* synchronous use of one connection                                    */

static bool g_sync_done;
static int g_sync_err;
static bool sync_stop(void) { return g_sync_done; }
static void sync_cb(struct conn *c, int err)
{
    (void)c;
    g_sync_err = err;
    g_sync_done = true;
}

/* One request on c; returns 0 with c->r filled, or -1/-2. */
static int sync_req(struct conn *c, enum op op, const char *key,
                    const char *value, uint64_t rev)
{
    build_request(&c->w, c->u, op, key, value, rev);
    c->done = sync_cb;
    g_sync_done = false;
    conn_start(c);
    if (!g_sync_done) {
        run_loop(sync_stop, NULL);
    }
    return g_sync_err;
}

/* ------------------------------------------------------------------ */
/* statistics                                                           */

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* nearest-rank percentile of a sorted array */
static double pct(const double *v, long n, double p)
{
    long i;
    if (n <= 0) {
        return 0;
    }
    i = (long)(p / 100.0 * (double)n + 0.999999) - 1;
    if (i < 0) {
        i = 0;
    }
    if (i >= n) {
        i = n - 1;
    }
    return v[i];
}

static void print_result(const char *mode, long n, double *lat, long nlat,
                         double elapsed)
{
    char errs[512];
    double sum = 0;
    qsort(lat, (size_t)nlat, sizeof *lat, cmp_dbl);
    for (long i = 0; i < nlat; i++) {
        sum += lat[i];
    }
    err_summary(errs, sizeof errs);
    printf("RESULT target=%s mode=%s n=%ld ok=%ld errors=%ld err_detail=%s "
           "p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f mean_ms=%.3f "
           "elapsed_s=%.3f ops_s=%.1f\n",
           g_target == T_UNIBUS ? "unibus" : "etcd", mode, n, nlat, g_errors,
           errs, pct(lat, nlat, 50) * 1e3, pct(lat, nlat, 90) * 1e3,
           pct(lat, nlat, 99) * 1e3, nlat ? lat[nlat - 1] * 1e3 : 0,
           nlat ? sum / (double)nlat * 1e3 : 0, elapsed,
           elapsed > 0 ? (double)nlat / elapsed : 0);
    fflush(stdout);
}

/* ------------------------------------------------------------------ */
/* modes                                                                */

static const char *g_prefix = "r0";
static FILE *g_trace; /* --trace FILE: "seq start_s latency_ms" per op */
static double g_trace_t0;

static void trace_op(long seq, double start, double lat)
{
    if (g_trace) {
        fprintf(g_trace, "%ld %.6f %.3f\n", seq, start - g_trace_t0,
                lat * 1e3);
    }
}
static long g_n = 2000;
static int g_conc = 64;
static int g_warmup = 50;

static void keyname(char *out, size_t cap, const char *kind, long i)
{
    snprintf(out, cap, "%s-%s-%ld", g_prefix, kind, i);
}

static void mode_put_seq(const struct url *u)
{
    struct conn *c = conn_new(u);
    double *lat = xmalloc(sizeof(double) * (size_t)g_n);
    char key[256];
    char *val = xmalloc(g_vsize);
    long nlat = 0;
    for (int i = 0; i < g_warmup; i++) {
        keyname(key, sizeof key, "warm", i);
        make_value(val, key, 0);
        if (sync_req(c, OP_PUT, key, val, 0) != 0 || !write_ok(c, OP_PUT)) {
            bad_answer(c, g_sync_err, "warm-up put");
        }
    }
    g_errors = 0;
    memset(g_err_status, 0, sizeof g_err_status);
    g_err_io = g_err_timeout = 0;
    double t0 = now_s();
    for (long i = 0; i < g_n; i++) {
        keyname(key, sizeof key, "s", i);
        make_value(val, key, 0);
        double a = now_s();
        int err = sync_req(c, OP_PUT, key, val, 0);
        double b = now_s();
        if (err == 0 && write_ok(c, OP_PUT)) {
            lat[nlat++] = b - a;
            trace_op(i, a, b - a);
        } else {
            bad_answer(c, err, "put");
        }
    }
    print_result("put-seq", g_n, lat, nlat, now_s() - t0);
}

/* keys read by get-seq and swapped by cas-seq */
#define NKEYS 100

static void prefill(struct conn *c, const char *kind)
{
    char key[256];
    char *val = xmalloc(g_vsize);
    for (long i = 0; i < NKEYS; i++) {
        keyname(key, sizeof key, kind, i);
        make_value(val, key, 0);
        if (sync_req(c, OP_PUT, key, val, 0) != 0 || !write_ok(c, OP_PUT)) {
            bad_answer(c, g_sync_err, "prefill put");
            die("prefill failed");
        }
    }
    free(val);
}

static void mode_get_seq(const struct url *u)
{
    struct conn *c = conn_new(u);
    double *lat = xmalloc(sizeof(double) * (size_t)g_n);
    char key[256];
    char *val = xmalloc(g_vsize);
    long nlat = 0;
    uint64_t rev;
    prefill(c, "g");
    for (int i = 0; i < g_warmup; i++) {
        keyname(key, sizeof key, "g", i % NKEYS);
        make_value(val, key, 0);
        if (sync_req(c, OP_GET, key, NULL, 0) != 0 || !read_ok(c, val, &rev)) {
            bad_answer(c, g_sync_err, "warm-up get");
        }
    }
    g_errors = 0;
    memset(g_err_status, 0, sizeof g_err_status);
    g_err_io = g_err_timeout = 0;
    double t0 = now_s();
    for (long i = 0; i < g_n; i++) {
        keyname(key, sizeof key, "g", i % NKEYS);
        make_value(val, key, 0);
        double a = now_s();
        int err = sync_req(c, OP_GET, key, NULL, 0);
        double b = now_s();
        if (err == 0 && read_ok(c, val, &rev)) {
            lat[nlat++] = b - a;
            trace_op(i, a, b - a);
        } else {
            bad_answer(c, err, "get");
        }
    }
    print_result("get-seq", g_n, lat, nlat, now_s() - t0);
}

static void mode_cas_seq(const struct url *u)
{
    struct conn *c = conn_new(u);
    double *lat = xmalloc(sizeof(double) * (size_t)g_n);
    unsigned *gen = calloc(NKEYS, sizeof *gen);
    char key[256];
    char *val = xmalloc(g_vsize);
    char *nval = xmalloc(g_vsize);
    long nlat = 0;
    long total = g_n + g_warmup;
    double t0 = 0;
    prefill(c, "c");
    for (long i = 0; i < total; i++) {
        uint64_t rev = 0;
        int err;
        if (i == g_warmup) {
            g_errors = 0;
            memset(g_err_status, 0, sizeof g_err_status);
            g_err_io = g_err_timeout = 0;
            t0 = now_s();
        }
        long k = i % NKEYS;
        keyname(key, sizeof key, "c", k);
        make_value(val, key, gen[k]);
        make_value(nval, key, gen[k] + 1);
        double a = now_s();
        err = sync_req(c, OP_GET, key, NULL, 0);
        if (err != 0 || !read_ok(c, val, &rev)) {
            bad_answer(c, err, "cas read");
            continue;
        }
        err = sync_req(c, OP_CASPUT, key, nval, rev);
        double b = now_s();
        if (err == 0 && write_ok(c, OP_CASPUT)) {
            gen[k]++;
            if (i >= g_warmup) {
                lat[nlat++] = b - a;
                trace_op(i - g_warmup, a, b - a);
            }
        } else {
            bad_answer(c, err, "cas write");
        }
    }
    print_result("cas-seq", g_n, lat, nlat, now_s() - t0);
}

/* --- throughput --- */

static long tp_next, tp_done, tp_target;
static double *tp_lat;
static long tp_nlat;
static char *tp_val;
static bool tp_timing;

static bool tp_stop(void) { return tp_done >= tp_target; }

static void tp_issue(struct conn *c);

static void tp_cb(struct conn *c, int err)
{
    if (err == 0 && write_ok(c, OP_PUT)) {
        if (tp_timing) {
            double t = now_s();
            tp_lat[tp_nlat++] = t - c->t_start;
            trace_op(c->idx, c->t_start, t - c->t_start);
        }
    } else {
        bad_answer(c, err, "put");
    }
    tp_done++;
    if (tp_next < tp_target) {
        tp_issue(c);
    }
}

static void tp_issue(struct conn *c)
{
    char key[256];
    long i = tp_next++;
    c->idx = i;
    if (tp_timing) {
        keyname(key, sizeof key, "t", i);
    } else {
        keyname(key, sizeof key, "tw", i);
    }
    make_value(tp_val, key, 0);
    build_request(&c->w, c->u, OP_PUT, key, tp_val, 0);
    c->done = tp_cb;
    conn_start(c);
}

static void mode_put_tp(const struct url *u)
{
    struct conn **cs = xmalloc(sizeof *cs * (size_t)g_conc);
    tp_val = xmalloc(g_vsize);
    for (int i = 0; i < g_conc; i++) {
        cs[i] = conn_new(u);
    }
    /* warm-up: open every connection with two puts each, untimed */
    tp_timing = false;
    tp_next = tp_done = 0;
    tp_target = 2L * g_conc;
    for (int i = 0; i < g_conc; i++) {
        tp_issue(cs[i]);
    }
    run_loop(tp_stop, NULL);
    g_errors = 0;
    memset(g_err_status, 0, sizeof g_err_status);
    g_err_io = g_err_timeout = 0;

    tp_timing = true;
    tp_lat = xmalloc(sizeof(double) * (size_t)g_n);
    tp_nlat = 0;
    tp_next = tp_done = 0;
    tp_target = g_n;
    double t0 = now_s();
    for (int i = 0; i < g_conc && tp_next < tp_target; i++) {
        tp_issue(cs[i]);
    }
    run_loop(tp_stop, NULL);
    print_result("put-tp", g_n, tp_lat, tp_nlat, now_s() - t0);
}

/* --- failover --- */

static struct url *fo_urls;
static int fo_nurls;
static double fo_t0, fo_t1, fo_last_spawn;
static int fo_winner = -1;
static long fo_attempts;
static char *fo_val;

static bool fo_stop(void) { return fo_winner >= 0 || now_s() - fo_t0 > 60; }

static void fo_cb(struct conn *c, int err)
{
    if (fo_winner < 0 && err == 0 && write_ok(c, OP_PUT)) {
        fo_t1 = now_s();
        fo_winner = (int)c->tag;
    } else if (fo_winner < 0) {
        bad_answer(c, err, "failover put");
    }
    conn_close(c);
}

static void fo_tick(double t)
{
    if (fo_winner >= 0 || t - fo_last_spawn < 0.05) {
        return;
    }
    fo_last_spawn = t;
    for (int i = 0; i < fo_nurls; i++) {
        struct conn *c = conn_new(&fo_urls[i]);
        char key[256];
        c->tag = i;
        keyname(key, sizeof key, "fo-probe", fo_attempts++);
        make_value(fo_val, key, 0);
        build_request(&c->w, c->u, OP_PUT, key, fo_val, 0);
        c->done = fo_cb;
        conn_start(c);
    }
}

static void mode_failover(const struct url *leader, pid_t pid)
{
    struct conn *c = conn_new(leader);
    char marker[256];
    char *mval = xmalloc(g_vsize);
    uint64_t rev;
    char errs[512];
    fo_val = xmalloc(g_vsize);
    keyname(marker, sizeof marker, "fo-marker", 0);
    make_value(mval, marker, 7);
    if (sync_req(c, OP_PUT, marker, mval, 0) != 0 || !write_ok(c, OP_PUT)) {
        bad_answer(c, g_sync_err, "marker put");
        die("the marker write before the kill failed");
    }
    conn_close(c);
    g_timeout_ms = 5000;
    fo_t0 = now_s();
    if (kill(pid, SIGKILL) != 0) {
        die("kill %d: %s", (int)pid, strerror(errno));
    }
    fo_last_spawn = 0;
    fo_tick(now_s());
    run_loop(fo_stop, fo_tick);
    if (fo_winner < 0) {
        err_summary(errs, sizeof errs);
        printf("RESULT target=%s mode=failover ok=0 failover_ms=-1 "
               "attempts=%ld err_detail=%s lost=unknown\n",
               g_target == T_UNIBUS ? "unibus" : "etcd", fo_attempts, errs);
        return;
    }
    /* abandon the other attempts */
    for (struct conn *x = g_all; x; x = x->next_all) {
        x->busy = false;
        conn_close(x);
    }
    /* was the acknowledged marker kept? (linearizable read, survivor) */
    g_timeout_ms = 10000;
    struct conn *rc = conn_new(&fo_urls[fo_winner]);
    bool kept = sync_req(rc, OP_GET, marker, NULL, 0) == 0 &&
                read_ok(rc, mval, &rev);
    err_summary(errs, sizeof errs);
    printf("RESULT target=%s mode=failover ok=1 failover_ms=%.1f "
           "attempts=%ld via=%s:%d err_detail=%s lost=%d\n",
           g_target == T_UNIBUS ? "unibus" : "etcd", (fo_t1 - fo_t0) * 1e3,
           fo_attempts, fo_urls[fo_winner].host, fo_urls[fo_winner].port,
           errs, kept ? 0 : 1);
}

/* --- ready: the first (signed) read gets an answer that is not an auth or
 * availability error; unibus creates the --bootstrap-admin member only once
 * it has a leader. --- */

static void mode_ready(const struct url *u)
{
    struct conn *c = conn_new(u);
    double t0 = now_s();
    int last = 0;
    g_timeout_ms = 2000;
    while (now_s() - t0 < 60) {
        int err = sync_req(c, OP_GET, "ready-probe", NULL, 0);
        if (err == 0) {
            last = c->r.status;
            if (c->r.status == 200 || c->r.status == 404) {
                printf("RESULT mode=ready ok=1 after_s=%.2f\n", now_s() - t0);
                return;
            }
        }
        usleep(100000);
    }
    printf("RESULT mode=ready ok=0 last_status=%d body=%.200s\n", last,
           last && c->r.body.p ? c->r.body.p : "");
    exit(1);
}

/* ------------------------------------------------------------------ */

/* Prints a loopback TCP port that nothing listens on right now, taken below
 * the usual ephemeral range (32768+) so that the benchmark's own client
 * connections cannot hold it by chance. */
static int free_port(void)
{
    srand((unsigned)(getpid() ^ (unsigned)(now_s() * 1e6)));
    for (int tries = 0; tries < 1000; tries++) {
        struct sockaddr_in sa;
        int one = 1;
        int port = 20000 + rand() % 12000;
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) {
            die("socket: %s", strerror(errno));
        }
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        memset(&sa, 0, sizeof sa);
        sa.sin_family = AF_INET;
        sa.sin_port = htons((uint16_t)port);
        inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
        if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
            close(fd);
            printf("%d\n", port);
            return 0;
        }
        close(fd);
    }
    die("no free port found");
    return 1;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: kvbench --target unibus|etcd --url http://HOST:PORT "
            "--mode put-seq|put-tp|get-seq|cas-seq|failover|ready\n"
            "       kvbench --free-port\n"
            "  -n N            operations (default 2000)\n"
            "  --conc C        in flight for put-tp (default 64)\n"
            "  --value-size B  value bytes (default 128)\n"
            "  --prefix P      key prefix, distinct per run (default r0)\n"
            "  --bucket B      unibus bucket / etcd key prefix (default "
            "bench)\n"
            "  --warmup W      untimed operations first (default 50)\n"
            "  --timeout-ms T  per request (default 10000)\n"
            "  --urls U1,U2    failover: the surviving nodes\n"
            "  --kill-pid PID  failover: the leader's process\n"
            "  --handle H --seed-file F  sign unibus requests as member H\n"
            "  --trace FILE    per operation: index, start (s), latency (ms)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *url = NULL, *mode = NULL, *urls = NULL;
    pid_t kpid = 0;
    struct url u;

    if (argc == 2 && strcmp(argv[1], "--free-port") == 0) {
        return free_port();
    }

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && v && (i++, 1))
        if (ARG("--target")) {
            if (strcmp(v, "unibus") == 0) {
                g_target = T_UNIBUS;
            } else if (strcmp(v, "etcd") == 0) {
                g_target = T_ETCD;
            } else {
                usage();
            }
        } else if (ARG("--url")) {
            url = v;
        } else if (ARG("--mode")) {
            mode = v;
        } else if (ARG("-n")) {
            g_n = atol(v);
        } else if (ARG("--conc")) {
            g_conc = atoi(v);
        } else if (ARG("--value-size")) {
            g_vsize = (size_t)atol(v);
        } else if (ARG("--prefix")) {
            g_prefix = v;
        } else if (ARG("--bucket")) {
            g_bucket = v;
        } else if (ARG("--warmup")) {
            g_warmup = atoi(v);
        } else if (ARG("--timeout-ms")) {
            g_timeout_ms = atoi(v);
        } else if (ARG("--urls")) {
            urls = v;
        } else if (ARG("--handle")) {
            g_handle = v;
        } else if (ARG("--seed-file")) {
            load_seed(v);
        } else if (ARG("--trace")) {
            g_trace = fopen(v, "w");
            if (g_trace == NULL) {
                die("--trace %s: %s", v, strerror(errno));
            }
        } else if (ARG("--kill-pid")) {
            kpid = (pid_t)atol(v);
        } else {
            usage();
        }
#undef ARG
    }
    if ((g_key != NULL) != (g_handle != NULL)) {
        die("--handle and --seed-file go together");
    }
    if (url == NULL || mode == NULL || g_n < 1 || g_conc < 1 ||
        g_vsize < 16 || g_vsize > 65536) {
        usage();
    }
    signal(SIGPIPE, SIG_IGN);
    g_ep = epoll_create1(EPOLL_CLOEXEC);
    if (g_ep < 0) {
        die("epoll_create1: %s", strerror(errno));
    }
    parse_url(url, &u);
    g_trace_t0 = now_s();

    if (strcmp(mode, "put-seq") == 0) {
        mode_put_seq(&u);
    } else if (strcmp(mode, "put-tp") == 0) {
        mode_put_tp(&u);
    } else if (strcmp(mode, "get-seq") == 0) {
        mode_get_seq(&u);
    } else if (strcmp(mode, "cas-seq") == 0) {
        mode_cas_seq(&u);
    } else if (strcmp(mode, "ready") == 0) {
        mode_ready(&u);
    } else if (strcmp(mode, "failover") == 0) {
        char *list, *tok, *save = NULL;
        if (urls == NULL || kpid <= 0) {
            usage();
        }
        list = strdup(urls);
        fo_urls = xmalloc(sizeof *fo_urls * 16);
        for (tok = strtok_r(list, ",", &save); tok && fo_nurls < 16;
             tok = strtok_r(NULL, ",", &save)) {
            parse_url(tok, &fo_urls[fo_nurls++]);
        }
        mode_failover(&u, kpid);
    } else {
        usage();
    }
    if (g_trace) {
        fclose(g_trace);
    }
    return 0;
}
