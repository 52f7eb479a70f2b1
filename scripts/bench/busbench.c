/*
 * busbench: one NATS client for unibus's embedded bus and for nats-server.
 *
 * The same program, the same library (nats.c, Debian libnats-dev) and the
 * same options drive both servers; only the URL differs. Every connection
 * authenticates with a NATS user nkey (--seed-file, an "SU..." seed), so both
 * servers must run with nkey auth.
 *
 * Modes (each prints one "RESULT ..." line on stdout):
 *   pubsub   one publisher connection, one subscriber connection, -n
 *            messages of --size bytes on one subject. msgs_s is end to end:
 *            from the first publish to the last receipt. At the end the
 *            publisher flushes (PING/PONG: the server has processed every
 *            PUB), then the subscriber flushes (every MSG before that PONG
 *            has been read), then we wait for the subscription to hand over
 *            what it holds; lost = n - received (must be 0).
 *   fanout   one publisher, --subs subscriber connections (one subscription
 *            each) on the same subject; -n published messages, so n * subs
 *            deliveries; delivered_msgs_s = deliveries / (first publish to
 *            last receipt on any subscriber).
 *   reqrep   a responder on its own connection (send-ASAP on, so each reply
 *            leaves at once) answers every request with the request's
 *            payload; -n sequential requests of --size bytes from another
 *            connection (after --warmup untimed ones); latency p50/p99 in
 *            microseconds, request sent to reply received.
 *   ready    connect and flush once, retrying until --timeout-ms; exits 0
 *            when the server accepted our nkey.
 *
 * Helpers: --free-port prints a free loopback port; --keygen FILE writes a
 * fresh user seed (mode 0600) and prints its public key; --pubkey prints the
 * public key of --seed-file; --tcp-rtt measures the machine's loopback TCP
 * round trip between two processes, across CPUs and on one CPU (context for
 * the request/reply figure).
 *
 * Throughput settings (chosen by measuring nats-server, used for both):
 * publisher with send-ASAP off (nats.c buffers PUBs and writes whole 32 KiB
 * buffers; on, pub/sub drops to a third), subscriber pending limits off
 * (natsSubscription_SetPendingLimits -1, -1, so the client never drops), async
 * subscriptions (one delivery thread each), nats.c's default I/O buffer. A
 * sync subscription, a larger --io-buf and --global-delivery measured the
 * same within the noise; the flags stay to repeat that comparison.
 *
 * nats.c 3.4.1 sends no signature in about one CONNECT in 256 (nats.c #705):
 * connects refused for authorization are retried and counted (auth_retries).
 *
 * Build: cc -O2 -std=c11 -pthread -o busbench busbench.c -lnats -lcrypto
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *g_url = "nats://127.0.0.1:4222";
static const char *g_seed_file;
static char g_pub[64];          /* the seed's public key, "U..." */
static int g_size = 128;        /* payload bytes */
static int g_io_buf = 0;        /* nats.c socket buffer (0: its default) */
static bool g_sync_sub = false; /* pubsub: NextMsg loop instead of callback */
static bool g_global_delivery = false;
static bool g_pub_asap = false;    /* publisher send-ASAP (slow; to compare) */
static bool g_keep_limits = false; /* keep nats.c's default pending limits */
static int64_t g_timeout_ms = 20000;
static const char *g_subject = "room.bench.x";

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
    fprintf(stderr, "busbench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

/* Dies with nats.c's own description of what failed. */
static void check(natsStatus s, const char *what)
{
    if (s != NATS_OK) {
        const char *last = nats_GetLastError(NULL);
        die("%s: %s%s%s", what, natsStatus_GetText(s), last ? ": " : "",
            last ? last : "");
    }
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL) {
        die("out of memory");
    }
    return p;
}

/* ------------------------------------------------------------------ */
/* nkeys: base32 + CRC16 around an Ed25519 key (the NATS encoding)      */

#define PREFIX_SEED (18 << 3) /* 'S' */
#define PREFIX_USER (20 << 3) /* 'U' */

static const char B32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

static uint16_t crc16(const uint8_t *d, size_t n)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= (uint16_t)(d[i] << 8);
        for (int b = 0; b < 8; b++) {
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021)
                                 : (uint16_t)(crc << 1);
        }
    }
    return crc;
}

static void b32_encode(const uint8_t *d, size_t n, char *out)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        acc = acc << 8 | d[i];
        bits += 8;
        while (bits >= 5) {
            out[o++] = B32[(acc >> (bits - 5)) & 31];
            bits -= 5;
        }
    }
    if (bits > 0) {
        out[o++] = B32[(acc << (5 - bits)) & 31];
    }
    out[o] = '\0';
}

/* Decodes unpadded base32; returns the byte count or -1. */
static int b32_decode(const char *s, uint8_t *out, size_t cap)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (; *s; s++) {
        const char *p = strchr(B32, *s);
        if (p == NULL || *s == '\0') {
            return -1;
        }
        acc = acc << 5 | (uint32_t)(p - B32);
        bits += 5;
        if (bits >= 8) {
            if (o == cap) {
                return -1;
            }
            out[o++] = (uint8_t)(acc >> (bits - 8));
            bits -= 8;
        }
    }
    return (int)o;
}

static void encode_user_pub(const uint8_t pub32[32], char out[64])
{
    uint8_t raw[35];
    raw[0] = PREFIX_USER;
    memcpy(raw + 1, pub32, 32);
    uint16_t c = crc16(raw, 33);
    raw[33] = (uint8_t)(c & 0xff);
    raw[34] = (uint8_t)(c >> 8);
    b32_encode(raw, sizeof raw, out);
}

/* Reads a user seed file (first line) into seed32. */
static void read_seed(const char *path, uint8_t seed32[32])
{
    char line[256];
    uint8_t raw[64];
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        die("%s: %s", path, strerror(errno));
    }
    if (fgets(line, sizeof line, f) == NULL) {
        die("%s: empty", path);
    }
    fclose(f);
    line[strcspn(line, "\r\n \t")] = '\0';
    int n = b32_decode(line, raw, sizeof raw);
    if (n != 36 || (raw[0] & 0xf8) != PREFIX_SEED ||
        ((raw[0] & 7) << 5 | (raw[1] & 0xf8) >> 3) != PREFIX_USER) {
        die("%s does not hold a NATS user seed (SU...)", path);
    }
    if (crc16(raw, 34) != (uint16_t)(raw[34] | raw[35] << 8)) {
        die("%s: bad seed checksum", path);
    }
    memcpy(seed32, raw + 2, 32);
}

static void pub_from_seed(const uint8_t seed32[32], char out[64])
{
    uint8_t pub[32];
    size_t len = sizeof pub;
    EVP_PKEY *k =
        EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed32, 32);
    if (k == NULL || EVP_PKEY_get_raw_public_key(k, pub, &len) != 1) {
        die("Ed25519 key from seed failed");
    }
    EVP_PKEY_free(k);
    encode_user_pub(pub, out);
}

static int keygen(const char *path)
{
    uint8_t raw[36], seed32[32];
    char seed[64], pub[64];
    if (RAND_bytes(seed32, 32) != 1) {
        die("RAND_bytes failed");
    }
    raw[0] = PREFIX_SEED | (PREFIX_USER >> 5);
    raw[1] = (PREFIX_USER & 31) << 3;
    memcpy(raw + 2, seed32, 32);
    uint16_t c = crc16(raw, 34);
    raw[34] = (uint8_t)(c & 0xff);
    raw[35] = (uint8_t)(c >> 8);
    b32_encode(raw, sizeof raw, seed);
    umask(077);
    FILE *f = fopen(path, "wx");
    if (f == NULL) {
        die("%s: %s", path, strerror(errno));
    }
    fprintf(f, "%s\n", seed);
    if (fclose(f) != 0) {
        die("%s: write failed", path);
    }
    pub_from_seed(seed32, pub);
    printf("%s\n", pub);
    return 0;
}

/* ------------------------------------------------------------------ */
/* connections                                                          */

static atomic_int g_async_errors;
static atomic_int g_slow_consumer;
static char g_async_err_text[160];

static void on_async_error(natsConnection *nc,
                           natsSubscription *sub,
                           natsStatus err,
                           void *closure)
{
    (void)nc;
    (void)sub;
    (void)closure;
    if (err == NATS_SLOW_CONSUMER) {
        atomic_fetch_add(&g_slow_consumer, 1);
    }
    if (atomic_fetch_add(&g_async_errors, 1) == 0) {
        snprintf(g_async_err_text, sizeof g_async_err_text, "%s",
                 natsStatus_GetText(err));
    }
}

/* nats.c before 3.8 drops the signature from CONNECT when its first byte is
 * zero (its base64 encoder stops at a NUL: nats.c #705, fixed in 2024), so
 * about one connect in 256 fails authorization, against any server. A new
 * connection gets a new nonce and a new signature: retry those, and count
 * them. */
static atomic_int g_auth_retries;

static natsStatus connect_retry(natsConnection **nc, natsOptions *o)
{
    natsStatus s = NATS_ERR;
    for (int attempt = 0; attempt < 8; attempt++) {
        s = natsConnection_Connect(nc, o);
        if (s != NATS_CONNECTION_AUTH_FAILED) {
            break;
        }
        atomic_fetch_add(&g_auth_retries, 1);
    }
    return s;
}

/* Connects with the nkey of --seed-file. send_asap: write every publish at
 * once (replies) instead of buffering (throughput). */
static natsConnection *connect_bus(const char *name, bool send_asap)
{
    natsOptions *o;
    natsConnection *nc = NULL;
    check(natsOptions_Create(&o), "options");
    check(natsOptions_SetURL(o, g_url), "url");
    check(natsOptions_SetName(o, name), "name");
    check(natsOptions_SetNKeyFromSeed(o, g_pub, g_seed_file), "nkey");
    check(natsOptions_SetTimeout(o, 5000), "timeout");
    /* A reconnect would hide lost messages: fail instead. */
    check(natsOptions_SetAllowReconnect(o, false), "reconnect");
    check(natsOptions_SetSendAsap(o, send_asap), "send asap");
    check(natsOptions_SetErrorHandler(o, on_async_error, NULL), "errh");
    if (g_io_buf > 0) {
        check(natsOptions_SetIOBufSize(o, g_io_buf), "io buf");
    }
    if (g_global_delivery) {
        check(natsOptions_UseGlobalMessageDelivery(o, true), "delivery");
    }
    natsStatus s = connect_retry(&nc, o);
    natsOptions_Destroy(o);
    check(s, "connect");
    return nc;
}

static char *payload(void)
{
    char *p = xmalloc((size_t)g_size);
    for (int i = 0; i < g_size; i++) {
        p[i] = (char)('a' + i % 26);
    }
    return p;
}

/* ------------------------------------------------------------------ */
/* a counting subscriber                                                */

struct sink {
    natsConnection *nc;
    natsSubscription *sub;
    atomic_llong count; /* messages received */
    atomic_llong bad;   /* messages of the wrong size */
    long long want;     /* count at which t_last is taken */
    double t_last;      /* when count reached want (0: not yet) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thr; /* sync style only */
};

static void sink_got(struct sink *k, natsMsg *m)
{
    if (natsMsg_GetDataLength(m) != g_size) {
        atomic_fetch_add(&k->bad, 1);
    }
    natsMsg_Destroy(m);
    if (atomic_fetch_add(&k->count, 1) + 1 == k->want) {
        double t = now_s();
        pthread_mutex_lock(&k->mu);
        k->t_last = t;
        pthread_cond_broadcast(&k->cv);
        pthread_mutex_unlock(&k->mu);
    }
}

static void on_msg(natsConnection *nc,
                   natsSubscription *sub,
                   natsMsg *m,
                   void *closure)
{
    (void)nc;
    (void)sub;
    sink_got(closure, m);
}

static void *sync_loop(void *arg)
{
    struct sink *k = arg;
    while (atomic_load(&k->count) < k->want) {
        natsMsg *m = NULL;
        natsStatus s = natsSubscription_NextMsg(&m, k->sub, 200);
        if (s == NATS_TIMEOUT) {
            continue;
        }
        if (s != NATS_OK) {
            break; /* closed or invalid: the main thread reports the loss */
        }
        sink_got(k, m);
    }
    return NULL;
}

static void sink_start(struct sink *k,
                       const char *name,
                       long long want,
                       bool sync)
{
    memset(k, 0, sizeof *k);
    pthread_mutex_init(&k->mu, NULL);
    pthread_cond_init(&k->cv, NULL);
    k->want = want;
    k->nc = connect_bus(name, false);
    if (sync) {
        check(natsConnection_SubscribeSync(&k->sub, k->nc, g_subject), "sub");
    } else {
        check(natsConnection_Subscribe(&k->sub, k->nc, g_subject, on_msg, k),
              "sub");
    }
    /* No client-side limit: a slow delivery thread queues, never drops
     * (nats.c's default, 65536 messages, drops when the publisher is ahead). */
    if (!g_keep_limits) {
        check(natsSubscription_SetPendingLimits(k->sub, -1, -1), "limits");
    }
    /* The SUB is registered on the server once its PONG is back. */
    check(natsConnection_FlushTimeout(k->nc, g_timeout_ms), "sub flush");
    if (sync) {
        pthread_create(&k->thr, NULL, sync_loop, k);
    }
}

/* After the publisher's flush: PING the subscriber's connection, so every MSG
 * the server sent before its PONG has been read, then wait until the
 * subscription has handed all of them over (or nothing moves for 2 s).
 * Returns the time of the last receipt (or of giving up). */
static double sink_finish(struct sink *k, bool *flushed)
{
    *flushed = natsConnection_FlushTimeout(k->nc, g_timeout_ms) == NATS_OK;
    long long last = -1;
    double still_since = now_s();
    pthread_mutex_lock(&k->mu);
    while (k->t_last == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&k->cv, &k->mu, &ts);
        long long c = atomic_load(&k->count);
        if (c != last) {
            last = c;
            still_since = now_s();
        } else if (now_s() - still_since > 2.0) {
            break;
        }
    }
    double t = k->t_last ? k->t_last : still_since;
    pthread_mutex_unlock(&k->mu);
    return t;
}

static void sink_close(struct sink *k, int64_t *dropped)
{
    int64_t d = 0;
    natsSubscription_GetDropped(k->sub, &d);
    *dropped += d;
    natsSubscription_Unsubscribe(k->sub);
    if (k->thr) {
        pthread_join(k->thr, NULL);
    }
    natsSubscription_Destroy(k->sub);
    natsConnection_Destroy(k->nc);
}

/* ------------------------------------------------------------------ */
/* pubsub and fanout                                                    */

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int run_pub(long long n, int subs, const char *mode)
{
    struct sink *k = xmalloc(sizeof *k * (size_t)subs);
    char name[64];
    for (int i = 0; i < subs; i++) {
        snprintf(name, sizeof name, "busbench-sub%d", i);
        sink_start(&k[i], name, n, g_sync_sub);
    }
    natsConnection *pub = connect_bus("busbench-pub", g_pub_asap);
    char *data = payload();

    double c0 = cpu_s();
    double t0 = now_s();
    for (long long i = 0; i < n; i++) {
        natsStatus s = natsConnection_Publish(pub, g_subject, data, g_size);
        if (s != NATS_OK) {
            check(s, "publish");
        }
    }
    double t_sent = now_s();
    /* PING/PONG: the server has processed (and routed) every PUB. */
    check(natsConnection_FlushTimeout(pub, g_timeout_ms), "publisher flush");
    double t_pub = now_s();

    long long got = 0, bad = 0;
    double t_end = t_pub;
    int flush_fail = 0;
    int64_t dropped = 0;
    for (int i = 0; i < subs; i++) {
        bool ok;
        double t = sink_finish(&k[i], &ok);
        if (!ok) {
            flush_fail++;
        }
        if (t > t_end || i == 0) {
            t_end = t;
        }
        got += atomic_load(&k[i].count);
        bad += atomic_load(&k[i].bad);
    }
    double c1 = cpu_s();
    for (int i = 0; i < subs; i++) {
        sink_close(&k[i], &dropped);
    }
    natsConnection_Destroy(pub);

    long long want = n * subs;
    double el = t_end - t0;
    printf(
        "RESULT mode=%s n=%lld subs=%d size=%d sub_style=%s io_buf=%d "
        "elapsed_s=%.3f %s=%.0f pub_msgs_s=%.0f pub_flushed_s=%.3f "
        "received=%lld lost=%lld dropped=%" PRId64
        " bad=%lld "
        "flush_fail=%d slow_consumer=%d async_errors=%d auth_retries=%d "
        "client_cpu_s=%.2f",
        mode, n, subs, g_size, g_sync_sub ? "sync" : "async", g_io_buf, el,
        subs > 1 ? "delivered_msgs_s" : "msgs_s", (double)got / el,
        (double)n / (t_sent - t0), t_pub - t0, got, want - got, dropped, bad,
        flush_fail, atomic_load(&g_slow_consumer), atomic_load(&g_async_errors),
        atomic_load(&g_auth_retries), c1 - c0);
    if (atomic_load(&g_async_errors)) {
        printf(" async_error=%s", g_async_err_text);
    }
    printf("\n");
    free(data);
    free(k);
    return got == want && bad == 0 ? 0 : 1;
}

/* ------------------------------------------------------------------ */
/* request/reply                                                        */

static void on_request(natsConnection *nc,
                       natsSubscription *sub,
                       natsMsg *m,
                       void *closure)
{
    (void)sub;
    (void)closure;
    const char *reply = natsMsg_GetReply(m);
    if (reply != NULL) {
        natsConnection_Publish(nc, reply, natsMsg_GetData(m),
                               natsMsg_GetDataLength(m));
    }
    natsMsg_Destroy(m);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(const double *sorted, long long n, double p)
{
    long long i = (long long)((p / 100.0) * (double)n + 0.999999) - 1;
    if (i < 0) {
        i = 0;
    }
    if (i >= n) {
        i = n - 1;
    }
    return sorted[i];
}

static int run_reqrep(long long n, long long warmup)
{
    natsConnection *rc = connect_bus("busbench-responder", true);
    natsSubscription *rs = NULL;
    check(natsConnection_Subscribe(&rs, rc, g_subject, on_request, NULL),
          "responder sub");
    check(natsConnection_FlushTimeout(rc, g_timeout_ms), "responder flush");
    natsConnection *qc = connect_bus("busbench-requester", false);
    char *data = payload();
    double *lat = xmalloc(sizeof *lat * (size_t)n);
    long long errors = 0;
    char first_err[160] = "";

    for (long long i = -warmup; i < n; i++) {
        natsMsg *r = NULL;
        double t = now_s();
        natsStatus s =
            natsConnection_Request(&r, qc, g_subject, data, g_size, 5000);
        double dt = now_s() - t;
        if (s != NATS_OK || natsMsg_GetDataLength(r) != g_size) {
            if (errors++ == 0) {
                snprintf(first_err, sizeof first_err, "%s",
                         s != NATS_OK ? natsStatus_GetText(s) : "bad_length");
            }
        }
        natsMsg_Destroy(r);
        if (i >= 0) {
            lat[i] = dt * 1e6;
        }
    }
    double sum = 0;
    for (long long i = 0; i < n; i++) {
        sum += lat[i];
    }
    qsort(lat, (size_t)n, sizeof *lat, cmp_double);
    printf(
        "RESULT mode=reqrep n=%lld size=%d p50_us=%.1f p90_us=%.1f "
        "p99_us=%.1f p999_us=%.1f max_us=%.1f mean_us=%.1f "
        "req_s=%.0f errors=%lld auth_retries=%d",
        n, g_size, pct(lat, n, 50), pct(lat, n, 90), pct(lat, n, 99),
        pct(lat, n, 99.9), lat[n - 1], sum / (double)n, (double)n / (sum / 1e6),
        errors, atomic_load(&g_auth_retries));
    for (char *p = first_err; *p; p++) {
        if (*p == ' ') {
            *p = '_';
        }
    }
    if (errors) {
        printf(" first_error=%s", first_err);
    }
    printf("\n");
    natsSubscription_Unsubscribe(rs);
    natsSubscription_Destroy(rs);
    natsConnection_Destroy(qc);
    natsConnection_Destroy(rc);
    free(lat);
    free(data);
    return errors ? 1 : 0;
}

/* ------------------------------------------------------------------ */
/* ready                                                                */

static int run_ready(void)
{
    double deadline = now_s() + (double)g_timeout_ms / 1000.0;
    natsStatus s = NATS_ERR;
    const char *last = NULL;
    while (now_s() < deadline) {
        natsOptions *o;
        natsConnection *nc = NULL;
        check(natsOptions_Create(&o), "options");
        natsOptions_SetURL(o, g_url);
        natsOptions_SetNKeyFromSeed(o, g_pub, g_seed_file);
        natsOptions_SetTimeout(o, 2000);
        natsOptions_SetAllowReconnect(o, false);
        s = connect_retry(&nc, o);
        natsOptions_Destroy(o);
        if (s == NATS_OK) {
            s = natsConnection_FlushTimeout(nc, 2000);
        }
        if (s == NATS_OK) {
            char id[128] = "?";
            natsConnection_GetConnectedServerId(nc, id, sizeof id);
            printf("RESULT mode=ready ok=1 server_id=%s max_payload=%" PRId64
                   " auth_retries=%d\n",
                   id, natsConnection_GetMaxPayload(nc),
                   atomic_load(&g_auth_retries));
            natsConnection_Destroy(nc);
            return 0;
        }
        last = nats_GetLastError(NULL);
        natsConnection_Destroy(nc);
        /* Eight refusals in a row are not nats.c #705: a wrong key. */
        if (s == NATS_CONNECTION_AUTH_FAILED) {
            break;
        }
        nats_Sleep(100);
    }
    printf("RESULT mode=ready ok=0\n");
    fprintf(stderr, "busbench: %s not ready: %s%s%s\n", g_url,
            natsStatus_GetText(s), last ? ": " : "", last ? last : "");
    return 1;
}

/* ------------------------------------------------------------------ */

/* A random port in 10000-32000 (below the ephemeral range, so no outbound
 * connection of a server takes it as its source port before we listen). */
static int free_port(void)
{
    srand((unsigned)getpid() ^ (unsigned)(now_s() * 1e6));
    for (int tries = 0; tries < 1000; tries++) {
        struct sockaddr_in sa;
        int port = 10000 + rand() % 22000;
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) {
            die("socket: %s", strerror(errno));
        }
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

/* The machine's floor for a wakeup-bound round trip: 128 bytes back and
 * forth over loopback TCP between two processes (TCP_NODELAY), 20,000 times,
 * with the two pinned to different CPUs and then to the same CPU. A
 * request/reply is a few such hops, and on a VM the cross-CPU wakeup can cost
 * several times the same-CPU one, so these put latency figures taken on
 * different machines in context. Returns the p50 and p99 in microseconds. */
static int cmp_double(const void *a, const void *b);
static double pct(const double *sorted, long long n, double p);

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET((size_t)cpu, &set);
    sched_setaffinity(0, sizeof set, &set); /* best effort */
}

static void rtt_once(int cpu_a, int cpu_b, double *p50, double *p99)
{
    enum { N = 20000, W = 500 };
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    char b[128] = { 0 };
    int one = 1;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        getsockname(l, (struct sockaddr *)&sa, &sl) != 0 || listen(l, 1) != 0) {
        die("tcp-rtt: listen: %s", strerror(errno));
    }
    pid_t child = fork();
    if (child == 0) {
        pin(cpu_b);
        int c = accept(l, NULL, NULL);
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        for (;;) {
            ssize_t r = read(c, b, sizeof b);
            if (r <= 0 || write(c, b, (size_t)r) != r) {
                _exit(0);
            }
        }
    }
    pin(cpu_a);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof sa) != 0) {
        die("tcp-rtt: connect: %s", strerror(errno));
    }
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    double *lat = xmalloc(sizeof *lat * N);
    for (int i = -W; i < N; i++) {
        double t = now_s();
        size_t got = 0;
        if (write(s, b, sizeof b) != (ssize_t)sizeof b) {
            die("tcp-rtt: write failed");
        }
        while (got < sizeof b) {
            ssize_t r = read(s, b + got, sizeof b - got);
            if (r <= 0) {
                die("tcp-rtt: read failed");
            }
            got += (size_t)r;
        }
        if (i >= 0) {
            lat[i] = (now_s() - t) * 1e6;
        }
    }
    close(s);
    close(l);
    waitpid(child, NULL, 0);
    qsort(lat, N, sizeof *lat, cmp_double);
    *p50 = pct(lat, N, 50);
    *p99 = pct(lat, N, 99);
    free(lat);
}

static int tcp_rtt(void)
{
    double c50 = 0, c99 = 0, s50, s99;
    int ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu > 1) {
        rtt_once(0, 1, &c50, &c99);
    }
    rtt_once(0, 0, &s50, &s99);
    printf(
        "RESULT mode=tcp-rtt n=20000 cross_cpu_p50_us=%.1f "
        "cross_cpu_p99_us=%.1f same_cpu_p50_us=%.1f same_cpu_p99_us=%.1f\n",
        c50, c99, s50, s99);
    return 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: busbench --url nats://H:P --seed-file F --mode "
            "pubsub|fanout|reqrep|ready [options]\n"
            "       busbench --free-port | --tcp-rtt | --keygen FILE | "
            "--pubkey --seed-file F\n"
            "  -n N             messages / requests (default 1000000; "
            "reqrep 20000)\n"
            "  --size B         payload bytes (default 128)\n"
            "  --subs K         fanout: subscriber connections (default 10)\n"
            "  --subject S      default room.bench.x\n"
            "  --warmup W       reqrep: untimed requests first (default 500)\n"
            "  --io-buf B       nats.c socket buffer bytes (default: its "
            "own, 32 KiB)\n"
            "  --sub-style async|sync   subscriber: callback or NextMsg "
            "(default async)\n"
            "  --global-delivery  async subscriptions share nats.c's "
            "delivery pool\n"
            "  --pub-send-asap  publisher writes every PUB at once (to "
            "compare)\n"
            "  --default-pending-limits  keep nats.c's 65536-message limit "
            "(to compare)\n"
            "  --timeout-ms T   flushes, and ready's wait (default 20000)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *mode = NULL;
    long long n = -1, warmup = 500;
    int subs = 10;
    bool want_pub = false;

    if (argc == 2 && strcmp(argv[1], "--free-port") == 0) {
        return free_port();
    }
    if (argc == 2 && strcmp(argv[1], "--tcp-rtt") == 0) {
        return tcp_rtt();
    }
    if (argc == 3 && strcmp(argv[1], "--keygen") == 0) {
        return keygen(argv[2]);
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && v && (i++, 1))
        if (ARG("--url")) {
            g_url = v;
        } else if (ARG("--seed-file")) {
            g_seed_file = v;
        } else if (ARG("--mode")) {
            mode = v;
        } else if (ARG("-n")) {
            n = atoll(v);
        } else if (ARG("--size")) {
            g_size = atoi(v);
        } else if (ARG("--subs")) {
            subs = atoi(v);
        } else if (ARG("--subject")) {
            g_subject = v;
        } else if (ARG("--warmup")) {
            warmup = atoll(v);
        } else if (ARG("--io-buf")) {
            g_io_buf = atoi(v);
        } else if (ARG("--sub-style")) {
            if (strcmp(v, "sync") != 0 && strcmp(v, "async") != 0) {
                usage();
            }
            g_sync_sub = strcmp(v, "sync") == 0;
        } else if (ARG("--timeout-ms")) {
            g_timeout_ms = atoll(v);
        } else if (strcmp(a, "--global-delivery") == 0) {
            g_global_delivery = true;
        } else if (strcmp(a, "--pub-send-asap") == 0) {
            g_pub_asap = true;
        } else if (strcmp(a, "--default-pending-limits") == 0) {
            g_keep_limits = true;
        } else if (strcmp(a, "--pubkey") == 0) {
            want_pub = true;
        } else {
            usage();
        }
#undef ARG
    }
    if (g_seed_file == NULL) {
        usage();
    }
    uint8_t seed32[32];
    read_seed(g_seed_file, seed32);
    pub_from_seed(seed32, g_pub);
    memset(seed32, 0, sizeof seed32);
    if (want_pub) {
        printf("%s\n", g_pub);
        return 0;
    }
    if (mode == NULL || g_size < 0 || subs < 1) {
        usage();
    }
    check(nats_Open(-1), "nats_Open");
    int rc;
    if (strcmp(mode, "ready") == 0) {
        rc = run_ready();
    } else if (strcmp(mode, "pubsub") == 0) {
        rc = run_pub(n > 0 ? n : 1000000, 1, mode);
    } else if (strcmp(mode, "fanout") == 0) {
        rc = run_pub(n > 0 ? n : 100000, subs, mode);
    } else if (strcmp(mode, "reqrep") == 0) {
        rc = run_reqrep(n > 0 ? n : 20000, warmup);
    } else {
        usage();
        rc = 2;
    }
    fflush(stdout);
    nats_CloseAndWait(2000);
    return rc;
}
