/* membershipd migrate-to-kv: imports a single-node SQLite allowlist into the
 * replicated KV through a node's bus (DESIGN.md §4, §6 item 4).
 *
 * Happy path: flags -> target check (loopback, or TLS pinned with --ca) ->
 * seed file -> every row of the source read and validated (the database is
 * opened read-only) -> connect with nats.c as an admin -> one request per
 * member on $UB.API.MEMBER.IMPORT, answered once raft has decided ->
 * summary.
 *
 * Failure modes: a bad flag or a refused target exits 2 before anything is
 * read; an invalid row exits 1 after listing every invalid row, before
 * connecting; a bus with no responder (not a unibus node), a key that is not
 * an admin's, a timeout or a lost connection stops the run (what was
 * imported stays: the import is idempotent, so running it again finishes
 * the job); a conflict is reported and the run goes on. The node never
 * overwrites an existing member. */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "auth/nkey.h"
#include "migrate/migrate.h"

#define PROG "membershipd migrate-to-kv"
#define IMPORT_SUBJECT "$UB.API.MEMBER.IMPORT"
#define REQUEST_TIMEOUT_MS 10000
#define CONNECT_TIMEOUT_MS 5000
#define DEFAULT_SEED_FILE "local_files/admin.nk"
#define DEFAULT_HANDLE "admin"
#define DEFAULT_BUS_PORT 4250
#define HANDLE_MAX 64

/* Exit statuses (docs/migrate.md). */
enum { MIGRATE_OK = 0, MIGRATE_FAILED = 1, MIGRATE_USAGE = 2 };

struct options {
    const char *db;        /* borrowed from argv */
    const char *url;       /* borrowed from argv; NULL only with --dry-run */
    const char *ca;        /* borrowed from argv */
    const char *seed_file; /* borrowed from argv or the default */
    const char *handle;    /* borrowed from argv or the default */
    bool dry_run;
};

/* The parsed --nats-url. url is what nats.c dials: rebuilt from the parts
 * that were checked, so the check and the connection see the same host. */
struct target {
    bool tls;      /* tls:// scheme or --ca */
    bool loopback; /* 127.0.0.0/8, ::1 or localhost */
    char host[256];
    int port;
    char url[300];
};

struct member {
    unsigned row; /* 1-based position in the source, for messages */
    char handle[HANDLE_MAX + 1]; /* "" when not a valid handle */
    bool admin;
    char sign_pub[NKEY_PUB_SIZE]; /* "" when not a valid user key */
    bool valid; /* false: the row is listed as invalid, nothing imported */
};

struct member_list {
    struct member *v; /* owned */
    size_t n, cap;
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: " PROG " --db FILE --nats-url URL [--ca FILE]\n"
            "           [--seed-file FILE] [--handle NAME] [--dry-run]\n\n"
            "Imports a single-node SQLite allowlist, the table\n"
            "members(handle, role, sign_pub), into the cluster's replicated "
            "KV\n"
            "through a node's bus. Every row is validated first: if one is "
            "invalid,\n"
            "each invalid row is listed and nothing is imported. A member "
            "that\n"
            "already exists with the same role and key is reported unchanged; "
            "a\n"
            "handle or key that exists with other values is a conflict and "
            "is never\n"
            "overwritten. Running it twice changes nothing.\n\n"
            "  --db FILE          the SQLite database; opened read-only, "
            "never modified\n"
            "  --nats-url URL     the node's bus, nats://HOST:PORT or "
            "tls://HOST:PORT\n"
            "                     (port %d when omitted); no credentials in "
            "the URL\n"
            "  --ca FILE          CA certificate (PEM) that signed the node's "
            "--tls-cert:\n"
            "                     connect over TLS and verify the node with "
            "it. Required\n"
            "                     unless HOST is loopback (127.0.0.0/8, ::1, "
            "localhost),\n"
            "                     so the allowlist never crosses the network "
            "in clear\n"
            "  --seed-file FILE   an admin's nkey seed (SU...); default %s,\n"
            "                     the admin key a lone node creates\n"
            "  --handle NAME      that admin's handle (default %s); replies "
            "come back\n"
            "                     under _INBOX.NAME., the only inbox the bus "
            "lets it read\n"
            "  --dry-run          validate the database and the flags given, "
            "print each\n"
            "                     request, connect to nothing (--nats-url is "
            "optional)\n"
            "  -h, --help         this text\n\n"
            "Output: one line per member (created H (ROLE), unchanged H, "
            "conflict H: WHY),\n"
            "then: imported N: C created, U unchanged, X conflicts.\n"
            "Exit status: 0 every member created or unchanged; 1 invalid "
            "rows (nothing\n"
            "imported), an unreadable database, a node that cannot be "
            "reached or refuses\n"
            "the key, or a member that conflicted or failed; 2 usage error "
            "or a refused\n"
            "target. See docs/migrate.md.\n",
            DEFAULT_BUS_PORT, DEFAULT_SEED_FILE, DEFAULT_HANDLE);
}

/* ------------------------------------------------------------------ */
/* flags                                                                */

/* Returns 0 to run, 1 when --help was served, -1 on a usage error
 * (reported). Accepts "--flag VALUE" and "--flag=VALUE". */
static int parse_args(struct options *o, int argc, char **argv)
{
    static const char *const names[] = { "--db", "--nats-url", "--ca",
                                         "--seed-file", "--handle" };
    const char **slots[] = { &o->db, &o->url, &o->ca, &o->seed_file,
                             &o->handle };

    memset(o, 0, sizeof *o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *eq = strchr(a, '=');
        size_t name_len = eq ? (size_t)(eq - a) : strlen(a);
        bool matched = false;

        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 1;
        }
        if (strcmp(a, "--dry-run") == 0) {
            o->dry_run = true;
            continue;
        }
        for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
            if (strlen(names[k]) != name_len ||
                strncmp(a, names[k], name_len) != 0) {
                continue;
            }
            matched = true;
            if (eq == NULL && i + 1 >= argc) {
                fprintf(stderr, PROG ": %s needs a value\n", names[k]);
                return -1;
            }
            *slots[k] = eq ? eq + 1 : argv[++i];
            if (**slots[k] == '\0') {
                fprintf(stderr, PROG ": %s needs a non-empty value\n",
                        names[k]);
                return -1;
            }
        }
        if (!matched) {
            fprintf(stderr,
                    PROG ": unexpected argument '%s' (see " PROG " --help)\n",
                    a);
            return -1;
        }
    }
    if (o->seed_file == NULL) {
        o->seed_file = DEFAULT_SEED_FILE;
    }
    if (o->handle == NULL) {
        o->handle = DEFAULT_HANDLE;
    }
    if (o->db == NULL) {
        fprintf(stderr, PROG ": --db FILE is required: the SQLite database "
                             "holding the members table\n");
        return -1;
    }
    if (o->url == NULL && !o->dry_run) {
        fprintf(stderr, PROG ": --nats-url URL is required: the node's bus, "
                             "e.g. nats://127.0.0.1:%d on the node\n",
                DEFAULT_BUS_PORT);
        return -1;
    }
    return 0;
}

/* Handles and room names: [a-z0-9][a-z0-9_-]{0,63} (DESIGN.md §4). */
static bool handle_valid(const char *s, size_t len)
{
    if (len == 0 || len > HANDLE_MAX) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '_' && c != '-'))) {
            return false;
        }
    }
    return true;
}

static bool is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;

    if (strcasecmp(host, "localhost") == 0) {
        return true;
    }
    if (inet_pton(AF_INET, host, &a4) == 1) {
        return (ntohl(a4.s_addr) >> 24) == 127;
    }
    if (inet_pton(AF_INET6, host, &a6) == 1) {
        return IN6_IS_ADDR_LOOPBACK(&a6) ||
               (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    }
    /* Any other name may resolve anywhere: not loopback. */
    return false;
}

/* Parses [nats://|tls://]HOST[:PORT][/] into t. Anything else (other
 * schemes, credentials, lists, paths, queries) is refused with a message in
 * err: the command talks to one node, as the key's owner, and nothing else. */
static int parse_target(const char *url, struct target *t, char *err,
                        size_t errlen)
{
    const char *p = url, *sep = strstr(url, "://");
    const char *host, *host_end, *end;
    size_t host_len;
    bool bracketed;

    memset(t, 0, sizeof *t);
    t->port = DEFAULT_BUS_PORT;
    if (sep != NULL) {
        size_t n = (size_t)(sep - url);
        if (n == 3 && strncasecmp(url, "tls", 3) == 0) {
            t->tls = true;
        } else if (n != 4 || strncasecmp(url, "nats", 4) != 0) {
            snprintf(err, errlen,
                     "--nats-url '%s': the scheme must be nats:// or tls://",
                     url);
            return -1;
        }
        p = sep + 3;
    }
    end = p + strlen(p);
    if (end > p && end[-1] == '/') {
        end--;
    }
    if (memchr(p, '@', (size_t)(end - p)) != NULL) {
        snprintf(err, errlen,
                 "--nats-url must not carry credentials (user:password@ or a "
                 "token): argv is visible to every local user; the key comes "
                 "from --seed-file");
        return -1;
    }
    if (memchr(p, ',', (size_t)(end - p)) != NULL) {
        snprintf(err, errlen,
                 "--nats-url takes the URL of one node, not a list");
        return -1;
    }
    bracketed = *p == '[';
    if (bracketed) {
        host = p + 1;
        host_end = memchr(host, ']', (size_t)(end - host));
        if (host_end == NULL) {
            snprintf(err, errlen, "--nats-url '%s': unclosed '['", url);
            return -1;
        }
        p = host_end + 1;
    } else {
        host = p;
        host_end = host;
        while (host_end < end && *host_end != ':') {
            char c = *host_end;
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  (c >= '0' && c <= '9') || c == '.' || c == '-')) {
                snprintf(err, errlen,
                         "--nats-url '%s' is not a URL like "
                         "nats://127.0.0.1:%d",
                         url, DEFAULT_BUS_PORT);
                return -1;
            }
            host_end++;
        }
        p = host_end;
    }
    host_len = (size_t)(host_end - host);
    if (host_len == 0 || host_len >= sizeof t->host) {
        snprintf(err, errlen, "--nats-url '%s' has no host", url);
        return -1;
    }
    memcpy(t->host, host, host_len);
    t->host[host_len] = '\0';
    if (p < end) {
        long port = 0;
        if (*p != ':' || p + 1 == end) {
            snprintf(err, errlen,
                     "--nats-url '%s' is not a URL like nats://127.0.0.1:%d",
                     url, DEFAULT_BUS_PORT);
            return -1;
        }
        for (p++; p < end; p++) {
            if (*p < '0' || *p > '9' || port > 65535) {
                break;
            }
            port = port * 10 + (*p - '0');
        }
        if (p != end || port < 1 || port > 65535) {
            snprintf(err, errlen, "--nats-url '%s': bad port", url);
            return -1;
        }
        t->port = (int)port;
    }
    if (bracketed || strchr(t->host, ':') != NULL) {
        /* Brackets hold an IPv6 address and nothing else. */
        struct in6_addr a6;
        if (inet_pton(AF_INET6, t->host, &a6) != 1) {
            snprintf(err, errlen, "--nats-url '%s': bad IPv6 address", url);
            return -1;
        }
    }
    t->loopback = is_loopback(t->host);
    /* nats.c is told to use TLS with natsOptions_SetSecure(), so the URL it
     * dials always has the plain scheme. */
    snprintf(t->url, sizeof t->url,
             strchr(t->host, ':') ? "nats://[%s]:%d" : "nats://%s:%d",
             t->host, t->port);
    return 0;
}

/* Reads the seed file (the secret stays in this function: nats.c reads the
 * file again to sign) and writes the key's public half to pub. */
static int load_public_key(const char *file, char pub[NKEY_PUB_SIZE])
{
    char buf[512];
    uint8_t raw[NKEY_KEY_LEN];
    size_t n;
    int rv = -1;
    FILE *f = fopen(file, "r");

    if (f == NULL) {
        fprintf(stderr,
                PROG ": cannot read the seed file %s: %s; give --seed-file "
                     "FILE, an admin's nkey seed (a lone node writes its "
                     "admin's to DATA_DIR/admin.nk)\n",
                file, strerror(errno));
        return -1;
    }
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    if (nkey_keypair_from_seed(buf, raw, NULL) == NKEY_OK &&
        nkey_user_pub_encode(raw, pub) == NKEY_OK) {
        rv = 0;
    } else {
        fprintf(stderr,
                PROG ": %s does not hold a user nkey seed (a first line "
                     "SU...)\n",
                file);
    }
    explicit_bzero(buf, sizeof buf);
    return rv;
}

/* ------------------------------------------------------------------ */
/* the source database                                                  */

/* Writes s (len bytes, possibly not text) to f as a quoted, escaped,
 * shortened string: row values are shown to the operator, never trusted. */
static void print_quoted(FILE *f, const unsigned char *s, size_t len)
{
    size_t shown = len > 70 ? 64 : len;
    fputc('"', f);
    for (size_t i = 0; i < shown; i++) {
        unsigned char c = s[i];
        if (c == '"' || c == '\\') {
            fprintf(f, "\\%c", c);
        } else if (c < 0x20 || c >= 0x7f) {
            fprintf(f, "\\x%02x", c);
        } else {
            fputc(c, f);
        }
    }
    fputc('"', f);
    if (shown < len) {
        fprintf(f, "... (%zu bytes)", len);
    }
}

static const char *type_name(int type)
{
    switch (type) {
    case SQLITE_INTEGER:
        return "an integer";
    case SQLITE_FLOAT:
        return "a number";
    case SQLITE_BLOB:
        return "a blob";
    case SQLITE_NULL:
        return "NULL";
    default:
        return "text";
    }
}

/* Text of column col, or NULL (with *why set) when it is not text without
 * NUL bytes. */
static const char *text_column(sqlite3_stmt *st, int col, size_t *len,
                               const char **why)
{
    int type = sqlite3_column_type(st, col);
    const unsigned char *s;

    *why = NULL;
    if (type != SQLITE_TEXT) {
        *why = type_name(type);
        return NULL;
    }
    s = sqlite3_column_text(st, col);
    *len = (size_t)sqlite3_column_bytes(st, col);
    if (s == NULL || strlen((const char *)s) != *len) {
        *why = "text with a NUL byte";
        return NULL;
    }
    return (const char *)s;
}

struct reasons {
    char text[512];
    size_t len;
};

static void add_reason(struct reasons *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void add_reason(struct reasons *r, const char *fmt, ...)
{
    va_list ap;
    int n;
    if (r->len >= sizeof r->text - 1) {
        return;
    }
    if (r->len > 0) {
        r->len += (size_t)snprintf(r->text + r->len, sizeof r->text - r->len,
                                   "; ");
        if (r->len >= sizeof r->text - 1) {
            return;
        }
    }
    va_start(ap, fmt);
    n = vsnprintf(r->text + r->len, sizeof r->text - r->len, fmt, ap);
    va_end(ap);
    if (n > 0) {
        r->len += (size_t)n;
        if (r->len > sizeof r->text - 1) {
            r->len = sizeof r->text - 1;
        }
    }
}

static const char *sign_pub_problem(const char *s)
{
    uint8_t raw[NKEY_KEY_LEN];
    int rv;
    if (s[0] == 'S') {
        /* Never echoed: a seed is a secret. */
        return "holds an nkey seed (a secret), not a public key: remove it "
               "from this database and replace that member's key";
    }
    rv = nkey_user_pub_decode(s, raw);
    switch (rv) {
    case NKEY_OK:
        return NULL;
    case NKEY_BAD_PREFIX:
        return "is a NATS key of another type, not a user public key (U...)";
    case NKEY_BAD_CRC:
        return "is not a NATS user public key: bad checksum";
    case NKEY_WEAK_KEY:
        return "is a weak Ed25519 key that would accept forged signatures";
    default:
        return "is not a NATS user public key (56 characters, U...)";
    }
}

/* Checks one row and appends it to list, with valid set when it may be
 * imported; an invalid row is printed with its reasons. Duplicate handles
 * and keys are found against every earlier row, valid or not, so fixing one
 * row never uncovers another error. Returns -1 when out of memory. */
static int take_row(sqlite3_stmt *st, unsigned row, struct member_list *list)
{
    struct reasons r = { .len = 0 };
    const char *handle, *role, *sign_pub, *why;
    size_t handle_len = 0, role_len = 0, pub_len = 0;
    struct member *m;

    if (list->n == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 64;
        struct member *v = realloc(list->v, cap * sizeof *v);
        if (v == NULL) {
            fprintf(stderr, PROG ": out of memory\n");
            return -1;
        }
        list->v = v;
        list->cap = cap;
    }
    m = &list->v[list->n];
    memset(m, 0, sizeof *m);
    m->row = row;
    r.text[0] = '\0';

    handle = text_column(st, 0, &handle_len, &why);
    if (handle == NULL) {
        add_reason(&r, "handle is %s, not text", why);
    } else if (!handle_valid(handle, handle_len)) {
        add_reason(&r, "handle does not match [a-z0-9][a-z0-9_-]{0,63}");
    } else {
        memcpy(m->handle, handle, handle_len + 1);
        for (size_t i = 0; i < list->n; i++) {
            if (strcmp(list->v[i].handle, handle) == 0) {
                add_reason(&r, "handle already on row %u", list->v[i].row);
                break;
            }
        }
    }
    role = text_column(st, 1, &role_len, &why);
    if (role == NULL) {
        add_reason(&r, "role is %s, not admin or member", why);
    } else if (strcmp(role, "admin") != 0 && strcmp(role, "member") != 0) {
        add_reason(&r, "role is not admin or member");
    } else {
        m->admin = strcmp(role, "admin") == 0;
    }
    sign_pub = text_column(st, 2, &pub_len, &why);
    if (sign_pub == NULL) {
        add_reason(&r, "sign_pub is %s, not a NATS user public key", why);
    } else if ((why = sign_pub_problem(sign_pub)) != NULL) {
        add_reason(&r, "sign_pub %s", why);
    } else {
        memcpy(m->sign_pub, sign_pub, pub_len + 1);
        for (size_t i = 0; i < list->n; i++) {
            if (strcmp(list->v[i].sign_pub, sign_pub) == 0) {
                add_reason(&r, "sign_pub already on row %u", list->v[i].row);
                break;
            }
        }
    }
    list->n++;
    m->valid = r.len == 0;
    if (!m->valid) {
        fprintf(stderr, PROG ": row %u (handle ", row);
        if (handle != NULL) {
            print_quoted(stderr, (const unsigned char *)handle, handle_len);
        } else {
            fputs("missing", stderr);
        }
        fprintf(stderr, "): %s\n", r.text);
    }
    return 0;
}

/* Checks that the members table has the three columns; 0 or -1 (reported). */
static int check_schema(sqlite3 *db, const char *path)
{
    static const char *const want[] = { "handle", "role", "sign_pub" };
    bool have[3] = { false, false, false };
    bool table = false;
    sqlite3_stmt *st = NULL;
    char missing[64] = "";
    int rc;

    rc = sqlite3_prepare_v2(db,
                            "SELECT name FROM pragma_table_info('members')",
                            -1, &st, NULL);
    for (rc = rc == SQLITE_OK ? sqlite3_step(st) : rc; rc == SQLITE_ROW;
         rc = sqlite3_step(st)) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        table = true;
        for (size_t k = 0; k < 3; k++) {
            if (name != NULL && strcasecmp(name, want[k]) == 0) {
                have[k] = true;
            }
        }
    }
    if (rc != SQLITE_DONE) {
        fprintf(stderr, PROG ": cannot read %s: %s\n", path,
                sqlite3_errmsg(db));
        sqlite3_finalize(st);
        return -1;
    }
    sqlite3_finalize(st);
    if (!table) {
        fprintf(stderr,
                PROG ": %s has no table 'members'; the source must hold "
                     "members(handle, role, sign_pub) (docs/migrate.md)\n",
                path);
        return -1;
    }
    for (size_t k = 0; k < 3; k++) {
        if (!have[k]) {
            size_t l = strlen(missing);
            snprintf(missing + l, sizeof missing - l, "%s%s", l ? ", " : "",
                     want[k]);
        }
    }
    if (missing[0] != '\0') {
        fprintf(stderr,
                PROG ": table 'members' in %s has no column %s; the source "
                     "must hold members(handle, role, sign_pub) "
                     "(docs/migrate.md)\n",
                path, missing);
        return -1;
    }
    return 0;
}

/* Reads and validates every row. Returns 0 when all are valid (list
 * filled), 1 when some are invalid (each reported), -1 when the database
 * cannot be read (reported). */
static int load_members(const char *path, struct member_list *list)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    unsigned row = 0, invalid = 0;
    int rc, result = -1;

    /* Read-only and without SQLITE_OPEN_CREATE: the source is never
     * modified, and a wrong path is an error instead of a new empty file. */
    rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
    if (rc != SQLITE_OK) {
        fprintf(stderr, PROG ": cannot open --db %s: %s\n", path,
                db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        goto out;
    }
    sqlite3_busy_timeout(db, 5000);
    if (check_schema(db, path) != 0) {
        goto out;
    }
    /* Rowid order is the order rows were added; a WITHOUT ROWID table or a
     * view has none, and is read in handle order. */
    rc = sqlite3_prepare_v2(db,
                            "SELECT handle, role, sign_pub FROM members "
                            "ORDER BY rowid",
                            -1, &st, NULL);
    if (rc != SQLITE_OK) {
        rc = sqlite3_prepare_v2(db,
                                "SELECT handle, role, sign_pub FROM members "
                                "ORDER BY handle",
                                -1, &st, NULL);
    }
    for (rc = rc == SQLITE_OK ? sqlite3_step(st) : rc; rc == SQLITE_ROW;
         rc = sqlite3_step(st)) {
        row++;
        if (take_row(st, row, list) != 0) {
            goto out;
        }
        if (!list->v[list->n - 1].valid) {
            invalid++;
        }
    }
    if (rc != SQLITE_DONE) {
        fprintf(stderr, PROG ": cannot read %s: %s\n", path,
                sqlite3_errmsg(db));
        goto out;
    }
    if (invalid > 0) {
        fprintf(stderr,
                PROG ": %u of %u rows in %s are invalid; nothing was "
                     "imported. Fix them in the source and run again.\n",
                invalid, row, path);
        result = 1;
    } else {
        result = 0;
    }
out:
    sqlite3_finalize(st);
    sqlite3_close(db);
    return result;
}

/* ------------------------------------------------------------------ */
/* the import                                                           */

struct tally {
    unsigned created, unchanged, conflicts, failed;
};

static char *request_body(const struct member *m)
{
    json_t *j = json_pack("{s:s,s:s,s:s}", "handle", m->handle, "role",
                          m->admin ? "admin" : "member", "sign_pub",
                          m->sign_pub);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return s;
}

/* Prints the outcome of one member's reply. Returns 0 to go on, -1 when the
 * run must stop (the key is not an admin's: every request would fail). */
static int handle_reply(const struct member *m, const char *data, int len,
                        struct tally *t, const char *seed_file)
{
    json_t *j = json_loadb(data, (size_t)(len > 0 ? len : 0), 0, NULL);
    const char *result = NULL, *message = NULL, *code = NULL;
    int rv = 0;

    if (j != NULL &&
        json_unpack(j, "{s:s,s?s}", "result", &result, "message", &message) ==
            0) {
        if (strcmp(result, "created") == 0) {
            t->created++;
            printf("created %s (%s)\n", m->handle,
                   m->admin ? "admin" : "member");
        } else if (strcmp(result, "unchanged") == 0) {
            t->unchanged++;
            printf("unchanged %s\n", m->handle);
        } else if (strcmp(result, "conflict") == 0) {
            t->conflicts++;
            printf("conflict %s: %s\n", m->handle,
                   message ? message : "exists with other values");
        } else {
            t->failed++;
            printf("failed %s: unknown result \"%.40s\"\n", m->handle,
                   result);
        }
    } else if (j != NULL && json_unpack(j, "{s:{s:s,s?s}}", "error", "code",
                                        &code, "message", &message) == 0) {
        t->failed++;
        printf("failed %s: %s: %s\n", m->handle, code,
               message ? message : "(no message)");
        if (strcmp(code, "forbidden") == 0) {
            fprintf(stderr,
                    PROG ": the node refused the key in %s: it is not an "
                         "admin's. Give --seed-file the seed of an admin "
                         "(and --handle its handle).\n",
                    seed_file);
            rv = -1;
        }
    } else {
        t->failed++;
        printf("failed %s: the node's reply is not the expected JSON\n",
               m->handle);
    }
    json_decref(j);
    fflush(stdout);
    return rv;
}

static const char *nats_error_text(natsStatus s)
{
    natsStatus last = NATS_OK;
    const char *txt = nats_GetLastError(&last);
    const char *loc_end;
    if (txt == NULL || *txt == '\0') {
        return natsStatus_GetText(s);
    }
    /* Drop the "(conn.c:733): " source location nats.c puts first. */
    if (txt[0] == '(' && (loc_end = strstr(txt, "): ")) != NULL) {
        txt = loc_end + 3;
    }
    return txt;
}

static void print_connect_error(natsStatus s, const struct options *o,
                                const struct target *t)
{
    fprintf(stderr, PROG ": cannot connect to %s: %s\n", t->url,
            nats_error_text(s));
    if (s == NATS_CONNECTION_AUTH_FAILED || s == NATS_NOT_PERMITTED) {
        fprintf(stderr,
                PROG ": the bus did not accept the key in %s; it must be "
                     "the seed of a member (an admin) of this cluster\n",
                o->seed_file);
    } else if ((s == NATS_SSL_ERROR || s == NATS_SECURE_CONNECTION_REQUIRED) &&
               o->ca == NULL) {
        fprintf(stderr,
                PROG ": the node's bus speaks TLS: give --ca FILE, the CA "
                     "that signed its --tls-cert\n");
    } else if (s == NATS_SSL_ERROR || s == NATS_SECURE_CONNECTION_REQUIRED ||
               s == NATS_SECURE_CONNECTION_WANTED) {
        fprintf(stderr,
                PROG ": TLS: --ca must be the CA that signed the node's "
                     "--tls-cert, and the URL's host (%s) must be named in "
                     "that certificate\n",
                t->host);
    } else if (s == NATS_NO_SERVER) {
        fprintf(stderr,
                PROG ": is membershipd running, and is %s its "
                     "--bus-listen address?\n",
                t->url);
    }
}

static int import_all(const struct options *o, const struct target *t,
                      const char *pub, const struct member_list *list)
{
    natsOptions *opts = NULL;
    natsConnection *nc = NULL;
    natsStatus s;
    struct tally tl = { 0, 0, 0, 0 };
    char inbox[8 + HANDLE_MAX];
    size_t sent = 0;
    bool stopped = false;
    int rc = MIGRATE_FAILED;

    snprintf(inbox, sizeof inbox, "_INBOX.%s", o->handle);
    s = natsOptions_Create(&opts);
    if (s == NATS_OK) {
        s = natsOptions_SetURL(opts, t->url);
    }
    if (s == NATS_OK) {
        s = natsOptions_SetName(opts, PROG);
    }
    if (s == NATS_OK) {
        s = natsOptions_SetNKeyFromSeed(opts, pub, o->seed_file);
    }
    if (s == NATS_OK) {
        s = natsOptions_SetCustomInboxPrefix(opts, inbox);
    }
    /* One node, one connection: never reconnect and never follow the
     * servers a node advertises, which may be reachable only in clear. */
    if (s == NATS_OK) {
        s = natsOptions_SetAllowReconnect(opts, false);
    }
    if (s == NATS_OK) {
        s = natsOptions_SetIgnoreDiscoveredServers(opts, true);
    }
    if (s == NATS_OK) {
        s = natsOptions_SetTimeout(opts, CONNECT_TIMEOUT_MS);
    }
    if (s == NATS_OK && t->tls && o->ca != NULL) {
        /* nats.c adds OpenSSL's default trust store (the system CAs) to
         * every TLS context it makes. Point those defaults at --ca alone
         * before it makes ours, so that the node's certificate is accepted
         * from that CA only: a pin, not any public CA. */
        if (setenv("SSL_CERT_FILE", o->ca, 1) != 0 ||
            setenv("SSL_CERT_DIR", "/nonexistent/unibus-no-ca-dir", 1) != 0 ||
            setenv("SSL_CERT_URI", "/nonexistent/unibus-no-ca-dir", 1) != 0) {
            s = NATS_NO_MEMORY;
        }
    }
    if (s == NATS_OK && t->tls) {
        s = natsOptions_SetSecure(opts, true);
        if (s == NATS_OK && o->ca != NULL) {
            s = natsOptions_LoadCATrustedCertificates(opts, o->ca);
            if (s != NATS_OK) {
                fprintf(stderr, PROG ": cannot load --ca %s: %s\n", o->ca,
                        nats_error_text(s));
                rc = MIGRATE_USAGE;
                goto out;
            }
        }
    }
    if (s != NATS_OK) {
        fprintf(stderr, PROG ": cannot set up the NATS client: %s\n",
                nats_error_text(s));
        goto out;
    }
    /* Debian's nats.c 3.4.1 leaves "sig" out of CONNECT when the
     * signature's first byte is 0 (about one connection in 256; fixed
     * upstream in nats.c#705): each attempt gets a fresh nonce, so a refused
     * key is tried three times before it counts as refused. */
    for (int attempt = 0; attempt < 3; attempt++) {
        s = natsConnection_Connect(&nc, opts);
        if (s != NATS_CONNECTION_AUTH_FAILED) {
            break;
        }
    }
    if (s != NATS_OK) {
        print_connect_error(s, o, t);
        goto out;
    }
    printf("connected to %s%s as %s; importing %zu members\n", t->url,
           t->tls ? " (TLS)" : "", o->handle, list->n);
    fflush(stdout);

    for (size_t i = 0; i < list->n && !stopped; i++) {
        const struct member *m = &list->v[i];
        natsMsg *reply = NULL;
        char *body = request_body(m);

        if (body == NULL) {
            fprintf(stderr, PROG ": out of memory\n");
            stopped = true;
            break;
        }
        s = natsConnection_Request(&reply, nc, IMPORT_SUBJECT, body,
                                   (int)strlen(body), REQUEST_TIMEOUT_MS);
        free(body);
        sent++;
        if (s == NATS_OK) {
            if (handle_reply(m, natsMsg_GetData(reply),
                             natsMsg_GetDataLength(reply), &tl,
                             o->seed_file) != 0) {
                stopped = true;
            }
            natsMsg_Destroy(reply);
            continue;
        }
        tl.failed++;
        stopped = true;
        printf("failed %s: %s\n", m->handle, natsStatus_GetText(s));
        fflush(stdout);
        if (s == NATS_NO_RESPONDERS) {
            fprintf(stderr,
                    PROG ": nothing answers " IMPORT_SUBJECT " on %s: it is "
                         "not a unibus node's bus (an external NATS server, "
                         "or a membershipd started with --nats-url). Point "
                         "--nats-url at a node's --bus-listen address.\n",
                    t->url);
        } else if (s == NATS_TIMEOUT) {
            const char *last = NULL;
            natsConnection_GetLastError(nc, &last);
            fprintf(stderr,
                    PROG ": no reply within %d s%s%s. The node may have no "
                         "raft leader, or the bus refused the request: "
                         "--handle must be the seed's own handle (replies "
                         "come only under _INBOX.<handle>.).\n",
                    REQUEST_TIMEOUT_MS / 1000, last && *last ? ": " : "",
                    last && *last ? last : "");
        } else {
            fprintf(stderr, PROG ": request failed: %s\n",
                    nats_error_text(s));
        }
    }
    if (stopped) {
        fprintf(stderr,
                PROG ": stopped after %zu of %zu members; what was imported "
                     "stays, and running the same command again finishes "
                     "the job\n",
                sent, list->n);
    }
    rc = tl.conflicts == 0 && tl.failed == 0 && !stopped ? MIGRATE_OK
                                                         : MIGRATE_FAILED;
out:
    if (nc != NULL) {
        printf("imported %zu: %u created, %u unchanged, %u conflicts",
               list->n, tl.created, tl.unchanged, tl.conflicts);
        if (tl.failed > 0) {
            printf(", %u failed", tl.failed);
        }
        if (list->n > sent) {
            printf(", %zu not sent", list->n - sent);
        }
        printf("\n");
        fflush(stdout);
    }
    natsConnection_Destroy(nc);
    natsOptions_Destroy(opts);
    /* No nats_Close(): in Debian's nats.c 3.4 its final cleanup frees
     * OpenSSL's compression-method stack, which OPENSSL_cleanup() frees
     * again at exit, and the process crashes after a TLS connection
     * (nats-io/nats.c#904). The process exits right after this. */
    return rc;
}

int migrate_main(int argc, char **argv)
{
    struct options o;
    struct target t;
    struct member_list list = { NULL, 0, 0 };
    char pub[NKEY_PUB_SIZE] = "";
    char err[512];
    int rv;

    memset(&t, 0, sizeof t);
    signal(SIGPIPE, SIG_IGN);
    rv = parse_args(&o, argc, argv);
    if (rv != 0) {
        return rv > 0 ? MIGRATE_OK : MIGRATE_USAGE;
    }
    if (!handle_valid(o.handle, strlen(o.handle))) {
        fprintf(stderr,
                PROG ": --handle must match [a-z0-9][a-z0-9_-]{0,63}\n");
        return MIGRATE_USAGE;
    }
    if (o.url != NULL) {
        if (parse_target(o.url, &t, err, sizeof err) != 0) {
            fprintf(stderr, PROG ": %s\n", err);
            return MIGRATE_USAGE;
        }
        /* DESIGN.md §6 item 4: the allowlist crosses the network only over
         * TLS whose server certificate is pinned to a CA we were given. */
        if (!t.loopback && o.ca == NULL) {
            fprintf(stderr,
                    PROG ": refusing %s: %s is not a loopback address, so "
                         "the allowlist would cross the network in clear; "
                         "give --ca FILE to pin the server's TLS "
                         "certificate, or run it on the node against "
                         "nats://127.0.0.1:%d\n",
                    o.url, t.host, DEFAULT_BUS_PORT);
            return MIGRATE_USAGE;
        }
        if (o.ca != NULL) {
            t.tls = true;
        }
    }
    if (o.ca != NULL && access(o.ca, R_OK) != 0) {
        fprintf(stderr, PROG ": cannot read --ca %s: %s\n", o.ca,
                strerror(errno));
        return MIGRATE_USAGE;
    }
    if (o.url != NULL && load_public_key(o.seed_file, pub) != 0) {
        return MIGRATE_USAGE;
    }

    rv = load_members(o.db, &list);
    if (rv != 0) {
        free(list.v);
        return MIGRATE_FAILED;
    }
    if (o.dry_run) {
        for (size_t i = 0; i < list.n; i++) {
            char *body = request_body(&list.v[i]);
            printf("would send " IMPORT_SUBJECT " %s\n", body ? body : "?");
            free(body);
        }
        printf("dry run: %zu valid members in %s; nothing was sent", list.n,
               o.db);
        if (o.url != NULL) {
            printf(" (target %s%s, as %s)", t.url, t.tls ? " over TLS" : "",
                   o.handle);
        }
        printf("\n");
        free(list.v);
        return MIGRATE_OK;
    }
    if (list.n == 0) {
        printf("%s holds no members; nothing to import\n", o.db);
        printf("imported 0: 0 created, 0 unchanged, 0 conflicts\n");
        free(list.v);
        return MIGRATE_OK;
    }
    rv = import_all(&o, &t, pub, &list);
    free(list.v);
    return rv;
}
