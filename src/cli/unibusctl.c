/* unibusctl: the operator's command line for a unibus cluster. It talks to
 * any node's HTTP API; a follower forwards writes to the leader itself. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/nkey.h"
#include "auth/sigv1.h"

struct ctl {
    const char *handle;
    const char *seed_file;
    char seed[NKEY_SEED_SIZE + 8];
    bool have_seed;
    const char *out;
    const char *sign_pub;
    const char *box_pub;
    const char *url;
    bool json;
    const char *rev;
    const char *prefix;
    const char *limit;
    const char *after;
    const char *role;
    bool stale;
};

struct buf {
    char *p;
    size_t n;
};

static size_t write_cb(char *data, size_t size, size_t nmemb, void *arg)
{
    struct buf *b = arg;
    size_t n = size * nmemb;
    char *np = realloc(b->p, b->n + n + 1);
    if (np == NULL) {
        return 0;
    }
    b->p = np;
    memcpy(b->p + b->n, data, n);
    b->n += n;
    b->p[b->n] = '\0';
    return n;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: unibusctl [--url URL] [--json] COMMAND ...\n\n"
            "Talks to a node's HTTP API (default http://127.0.0.1:8470, or "
            "$UNIBUS_URL).\n\n"
            "Commands:\n"
            "  cluster status                 members, roles, leader, indices\n"
            "  cluster add NAME HOST:PORT [--role voter|standby|spare]\n"
            "                                 add a node (default: voter, "
            "promoted after catch-up)\n"
            "  cluster remove NAME            remove a node\n"
            "  cluster transfer [NAME]        move leadership (default: any "
            "voter)\n"
            "  kv get BUCKET KEY [--stale]    print a value\n"
            "  kv put BUCKET KEY VALUE|-      write ('-' reads stdin)\n"
            "  kv cas BUCKET KEY REV VALUE|-  write if the revision is REV "
            "(0: create only)\n"
            "  kv del BUCKET KEY [--rev N]    delete (optionally if at N)\n"
            "  kv list BUCKET [--prefix P] [--limit N] [--after KEY]\n"
            "  health                         the node's /healthz\n"
            "  keygen --out PREFIX            new member keys: PREFIX.nk (nkey "
            "seed)\n"
            "                                 and PREFIX.box (X25519), mode "
            "0600\n"
            "  me                             the signing member's record\n"
            "  members list | get H | del H\n"
            "  members add H --sign-pub U... --box-pub B64 [--role "
            "admin|member]\n"
            "  rooms list | get R | create R | del R\n"
            "  rooms add R H | remove R H     room membership\n"
            "  keys put R EPOCH H CIPHERTEXT_B64 | keys get R EPOCH H\n"
            "  blobs put R FILE | blobs get SHA256 [--out FILE]\n\n"
            "Signing (every /v1/ call): --handle H and --seed-file FILE, or\n"
            "$UNIBUS_HANDLE and $UNIBUS_SEED_FILE; without them, the admin key "
            "a\n"
            "lone node made in ./local_files/admin.nk is used when present.\n\n"
            "Exit status: 0 success, 1 the request failed, 2 usage error.\n");
}

static char *escape(CURL *c, const char *s)
{
    return curl_easy_escape(c, s, 0);
}

/* Escapes each path segment of a key but keeps its '/' separators. */
static char *escape_key(CURL *c, const char *key)
{
    size_t cap = strlen(key) * 3 + 1;
    char *out = malloc(cap);
    size_t o = 0;
    const char *p = key;
    if (out == NULL) {
        return NULL;
    }
    out[0] = '\0';
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        char *seg = curl_easy_escape(c, p, (int)n);
        if (seg == NULL) {
            free(out);
            return NULL;
        }
        o += (size_t)snprintf(out + o, cap - o, "%s%s", seg, slash ? "/" : "");
        curl_free(seg);
        if (!slash) {
            break;
        }
        p = slash + 1;
    }
    return out;
}

/* Performs the request, signed when a seed is loaded; returns the HTTP
 * status (0 on a transport or signing failure, reported) with the raw body
 * in *out (owned by the caller). */
static long request_raw(struct ctl *ctl, const char *method, const char *path,
                        const void *body, size_t len, struct buf *out)
{
    CURL *c = curl_easy_init();
    char url[4096];
    long status = 0;
    CURLcode rc;
    struct curl_slist *hdr = NULL;

    out->p = NULL;
    out->n = 0;
    if (c == NULL) {
        return 0;
    }
    snprintf(url, sizeof url, "%s%s", ctl->url, path);
    if (ctl->have_seed && strncmp(path, "/v1/", 4) == 0) {
        char auth[SIGV1_HEADER_SIZE + 32];
        char value[SIGV1_HEADER_SIZE];
        int rv = sigv1_sign(ctl->seed, ctl->handle, method, path, body,
                            body ? len : 0, (int64_t)time(NULL), NULL, value,
                            sizeof value);
        if (rv != SIGV1_OK) {
            fprintf(stderr, "unibusctl: cannot sign the request: %s\n",
                    sigv1_code_name(rv));
            curl_easy_cleanup(c);
            return 0;
        }
        snprintf(auth, sizeof auth, "Authorization: %s", value);
        hdr = curl_slist_append(hdr, auth);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 90L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    hdr = curl_slist_append(hdr, "Expect:");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    rc = curl_easy_perform(c);
    if (rc != CURLE_OK) {
        fprintf(stderr, "unibusctl: %s: %s\n", url, curl_easy_strerror(rc));
    } else {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    }
    curl_slist_free_all(hdr);
    curl_easy_cleanup(c);
    return status;
}

/* As request_raw, with the body parsed as JSON into *out (may be NULL). */
static long request(struct ctl *ctl, const char *method, const char *path,
                    const void *body, size_t len, json_t **out)
{
    struct buf b;
    long status = request_raw(ctl, method, path, body, len, &b);
    *out = status && b.p ? json_loadb(b.p, b.n, 0, NULL) : NULL;
    free(b.p);
    return status;
}

static int fail_from(struct ctl *ctl, long status, json_t *j)
{
    const char *code = NULL, *msg = NULL;
    if (status == 0) {
        return 1;
    }
    if (ctl->json && j) {
        json_dumpf(j, stdout, JSON_INDENT(2));
        putchar('\n');
    }
    json_unpack(j, "{s:{s:s,s:s}}", "error", "code", &code, "message", &msg);
    fprintf(stderr, "unibusctl: HTTP %ld %s: %s\n", status,
            code ? code : "error", msg ? msg : "(no message)");
    json_decref(j);
    return 1;
}

static int print_json(json_t *j)
{
    json_dumpf(j, stdout, JSON_INDENT(2));
    putchar('\n');
    json_decref(j);
    return 0;
}

/* Reads a whole stream into a malloc'd buffer (NULL on a read error). */
static char *read_all(FILE *f, size_t *len)
{
    struct buf b = { NULL, 0 };
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (write_cb(chunk, 1, n, &b) != n) {
            free(b.p);
            return NULL;
        }
    }
    if (ferror(f)) {
        free(b.p);
        return NULL;
    }
    *len = b.n;
    return b.p ? b.p : strdup("");
}

static char *read_value(const char *arg, size_t *len)
{
    if (strcmp(arg, "-") != 0) {
        *len = strlen(arg);
        return strdup(arg);
    }
    return read_all(stdin, len);
}

static int cmd_status(struct ctl *ctl)
{
    json_t *j, *members, *m;
    long st = request(ctl, "GET", "/v1/cluster", NULL, 0, &j);
    size_t i;
    const char *leader = NULL, *warning = NULL;
    json_int_t term = 0, commit = 0, applied = 0;
    int ha = 0;

    if (st != 200) {
        return fail_from(ctl, st, j);
    }
    if (ctl->json) {
        return print_json(j);
    }
    /* Field by field: "leader" is null while there is none. */
    leader = json_string_value(json_object_get(j, "leader"));
    warning = json_string_value(json_object_get(j, "warning"));
    term = json_integer_value(json_object_get(j, "term"));
    commit = json_integer_value(json_object_get(j, "commit_index"));
    applied = json_integer_value(json_object_get(j, "applied_index"));
    ha = json_is_true(json_object_get(j, "ha"));
    members = json_object_get(j, "members");
    printf("leader: %s   term: %lld   commit: %lld   applied: %lld\n",
           leader ? leader : "(none)", (long long)term, (long long)commit,
           (long long)applied);
    printf("%-20s %-16s %-24s %-8s %s\n", "NAME", "ID", "ADDRESS", "ROLE",
           "HEALTHY");
    json_array_foreach(members, i, m)
    {
        const char *name = "", *id = "", *addr = "", *role = "";
        int healthy = 0;
        json_unpack(m, "{s:s,s:s,s:s,s:s,s:b}", "name", &name, "id", &id,
                    "address", &addr, "role", &role, "healthy", &healthy);
        printf("%-20s %-16s %-24s %-8s %s%s\n", name, id, addr, role,
               healthy ? "yes" : "no",
               leader && strcmp(name, leader) == 0 ? "  (leader)" : "");
    }
    if (!ha) {
        printf("WARNING: %s\n", warning ? warning
                                        : "fewer than 3 voters: not HA");
    }
    json_decref(j);
    return 0;
}

static int cmd_health(struct ctl *ctl)
{
    json_t *j;
    long st = request(ctl, "GET", "/healthz", NULL, 0, &j);
    if (j == NULL) {
        return fail_from(ctl, st, j);
    }
    print_json(j);
    return st == 200 ? 0 : 1;
}

static int cmd_cluster(struct ctl *ctl, int argc, char **argv)
{
    json_t *j;
    long st;
    CURL *c;
    char path[1024];

    if (argc < 1) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[0], "status") == 0 && argc == 1) {
        return cmd_status(ctl);
    }
    c = curl_easy_init();
    if (strcmp(argv[0], "add") == 0 && argc == 3) {
        json_t *body = json_pack("{s:s,s:s,s:s}", "name", argv[1], "address",
                                 argv[2], "role",
                                 ctl->role ? ctl->role : "voter");
        char *s = json_dumps(body, JSON_COMPACT);
        json_decref(body);
        fprintf(stderr, "adding %s (this waits for it to catch up)...\n",
                argv[1]);
        st = request(ctl, "POST", "/v1/cluster/members", s, strlen(s), &j);
        free(s);
    } else if (strcmp(argv[0], "remove") == 0 && argc == 2) {
        char *e = escape(c, argv[1]);
        snprintf(path, sizeof path, "/v1/cluster/members/%s", e);
        curl_free(e);
        st = request(ctl, "DELETE", path, NULL, 0, &j);
    } else if (strcmp(argv[0], "transfer") == 0 && argc <= 2) {
        if (argc == 2) {
            char *e = escape(c, argv[1]);
            snprintf(path, sizeof path, "/v1/cluster/transfer?to=%s", e);
            curl_free(e);
        } else {
            snprintf(path, sizeof path, "/v1/cluster/transfer");
        }
        st = request(ctl, "POST", path, "", 0, &j);
    } else {
        curl_easy_cleanup(c);
        usage(stderr);
        return 2;
    }
    curl_easy_cleanup(c);
    if (st != 200) {
        return fail_from(ctl, st, j);
    }
    json_decref(j);
    return cmd_status(ctl);
}

static int cmd_kv(struct ctl *ctl, int argc, char **argv)
{
    CURL *c;
    char *eb, *ek = NULL;
    char path[8192];
    json_t *j = NULL;
    long st;
    int rv = 0;

    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    c = curl_easy_init();
    eb = escape(c, argv[1]);
    if (argc >= 3) {
        ek = escape_key(c, argv[2]);
    }
    if (strcmp(argv[0], "get") == 0 && argc == 3) {
        snprintf(path, sizeof path, "/v1/kv/%s/%s%s", eb, ek,
                 ctl->stale ? "?stale=true" : "");
        st = request(ctl, "GET", path, NULL, 0, &j);
        if (st != 200) {
            rv = fail_from(ctl, st, j);
        } else if (ctl->json) {
            print_json(j);
        } else {
            const char *v = "";
            json_int_t rev = 0;
            json_unpack(j, "{s:s,s:I}", "value", &v, "revision", &rev);
            size_t vl = strlen(v);
            unsigned char *raw = malloc(vl / 4 * 3 + 3);
            int n = raw ? EVP_DecodeBlock(raw, (const unsigned char *)v,
                                          (int)vl)
                        : -1;
            if (n >= 0) {
                /* DecodeBlock counts padding bytes as data. */
                if (vl >= 1 && v[vl - 1] == '=') {
                    n--;
                }
                if (vl >= 2 && v[vl - 2] == '=') {
                    n--;
                }
                fwrite(raw, 1, (size_t)n, stdout);
                putchar('\n');
            }
            fprintf(stderr, "revision %lld\n", (long long)rev);
            free(raw);
            json_decref(j);
        }
    } else if ((strcmp(argv[0], "put") == 0 && argc == 4) ||
               (strcmp(argv[0], "cas") == 0 && argc == 5)) {
        bool cas = argv[0][0] == 'c';
        size_t len;
        char *val = read_value(argv[cas ? 4 : 3], &len);
        if (val == NULL) {
            fprintf(stderr, "unibusctl: cannot read the value\n");
            rv = 1;
            goto out;
        }
        if (cas) {
            char *end;
            errno = 0;
            unsigned long long r = strtoull(argv[3], &end, 10);
            if (errno || *end || argv[3][0] == '-') {
                fprintf(stderr, "unibusctl: REV must be a number\n");
                free(val);
                rv = 2;
                goto out;
            }
            snprintf(path, sizeof path, "/v1/kv/%s/%s?rev=%llu", eb, ek, r);
        } else {
            snprintf(path, sizeof path, "/v1/kv/%s/%s", eb, ek);
        }
        st = request(ctl, "PUT", path, val, len, &j);
        free(val);
        if (st != 200) {
            rv = fail_from(ctl, st, j);
        } else if (ctl->json) {
            print_json(j);
        } else {
            json_int_t rev = 0;
            json_unpack(j, "{s:I}", "revision", &rev);
            printf("revision %lld\n", (long long)rev);
            json_decref(j);
        }
    } else if (strcmp(argv[0], "del") == 0 && argc == 3) {
        snprintf(path, sizeof path, "/v1/kv/%s/%s%s%s", eb, ek,
                 ctl->rev ? "?rev=" : "", ctl->rev ? ctl->rev : "");
        st = request(ctl, "DELETE", path, NULL, 0, &j);
        if (st != 200) {
            rv = fail_from(ctl, st, j);
        } else if (ctl->json) {
            print_json(j);
        } else {
            printf("deleted\n");
            json_decref(j);
        }
    } else if (strcmp(argv[0], "list") == 0 && argc == 2) {
        char *ep = escape(c, ctl->prefix ? ctl->prefix : "");
        char *ea = escape(c, ctl->after ? ctl->after : "");
        snprintf(path, sizeof path, "/v1/kv/%s?prefix=%s&limit=%s%s%s%s", eb,
                 ep, ctl->limit ? ctl->limit : "100", ctl->after ? "&after=" : "",
                 ctl->after ? ea : "", ctl->stale ? "&stale=true" : "");
        curl_free(ep);
        curl_free(ea);
        st = request(ctl, "GET", path, NULL, 0, &j);
        if (st != 200) {
            rv = fail_from(ctl, st, j);
        } else if (ctl->json) {
            print_json(j);
        } else {
            json_t *entries = json_object_get(j, "entries"), *e;
            size_t i;
            json_array_foreach(entries, i, e)
            {
                printf("%s\trevision %lld\n",
                       json_string_value(json_object_get(e, "key")),
                       (long long)json_integer_value(
                           json_object_get(e, "revision")));
            }
            if (json_is_true(json_object_get(j, "more"))) {
                fprintf(stderr, "more: continue with --after %s\n",
                        json_string_value(json_object_get(j, "next_after")));
            }
            json_decref(j);
        }
    } else {
        usage(stderr);
        rv = 2;
    }
out:
    curl_free(eb);
    free(ek);
    curl_easy_cleanup(c);
    return rv;
}

/* ------------------------------------------------------------------ */
/* keys and signing                                                     */

static int load_seed(struct ctl *ctl)
{
    const char *file = ctl->seed_file;
    FILE *f;
    size_t n;

    if (file == NULL) {
        if (access("local_files/admin.nk", R_OK) != 0) {
            return 0; /* unsigned: only /healthz and /metrics will work */
        }
        file = "local_files/admin.nk";
        if (ctl->handle == NULL) {
            ctl->handle = "admin";
        }
    }
    if (ctl->handle == NULL) {
        fprintf(stderr, "unibusctl: --seed-file needs --handle (or "
                        "$UNIBUS_HANDLE)\n");
        return -1;
    }
    f = fopen(file, "r");
    if (f == NULL) {
        fprintf(stderr, "unibusctl: cannot read %s: %s\n", file,
                strerror(errno));
        return -1;
    }
    n = fread(ctl->seed, 1, sizeof ctl->seed - 1, f);
    fclose(f);
    ctl->seed[n] = '\0';
    ctl->seed[strcspn(ctl->seed, "\r\n ")] = '\0';
    if (nkey_keypair_from_seed(ctl->seed, NULL, NULL) != 0) {
        fprintf(stderr, "unibusctl: %s does not hold a user nkey seed (SU...)\n",
                file);
        return -1;
    }
    ctl->have_seed = true;
    return 0;
}

static int write_secret(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    size_t n = strlen(text);
    if (fd < 0) {
        fprintf(stderr, "unibusctl: cannot create %s: %s%s\n", path,
                strerror(errno),
                errno == EEXIST ? " (keys are never overwritten)" : "");
        return -1;
    }
    if (write(fd, text, n) != (ssize_t)n || write(fd, "\n", 1) != 1 ||
        fsync(fd) != 0) {
        fprintf(stderr, "unibusctl: cannot write %s\n", path);
        close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

static int cmd_keygen(struct ctl *ctl)
{
    char seed[NKEY_SEED_SIZE], pub[NKEY_PUB_SIZE];
    uint8_t bpriv[NKEY_KEY_LEN], bpub[NKEY_KEY_LEN];
    char bpriv_s[64], bpub_s[NKEY_BOX_PUB_SIZE];
    char path[4096];
    int rv = 1;

    if (ctl->out == NULL) {
        fprintf(stderr, "unibusctl: keygen needs --out PREFIX\n");
        return 2;
    }
    if (nkey_generate_user(seed, pub) != 0 ||
        nkey_x25519_generate(bpriv, bpub) != 0 ||
        nkey_b64std_encode(bpriv, sizeof bpriv, bpriv_s, sizeof bpriv_s) < 0 ||
        nkey_box_pub_encode(bpub, bpub_s) != 0) {
        fprintf(stderr, "unibusctl: key generation failed\n");
        goto out;
    }
    snprintf(path, sizeof path, "%s.nk", ctl->out);
    if (write_secret(path, seed) != 0) {
        goto out;
    }
    snprintf(path, sizeof path, "%s.box", ctl->out);
    if (write_secret(path, bpriv_s) != 0) {
        goto out;
    }
    if (ctl->json) {
        printf("{\"sign_pub\": \"%s\", \"box_pub\": \"%s\", \"seed_file\": "
               "\"%s.nk\", \"box_file\": \"%s.box\"}\n",
               pub, bpub_s, ctl->out, ctl->out);
    } else {
        printf("sign_pub %s\nbox_pub  %s\nseed in %s.nk, X25519 key in "
               "%s.box (mode 0600)\n",
               pub, bpub_s, ctl->out, ctl->out);
    }
    rv = 0;
out:
    memset(seed, 0, sizeof seed);
    memset(bpriv, 0, sizeof bpriv);
    memset(bpriv_s, 0, sizeof bpriv_s);
    return rv;
}

/* Sends a request and prints the JSON answer; 0 on 2xx. */
static int simple(struct ctl *ctl, const char *method, const char *path,
                  const void *body, size_t len)
{
    json_t *j;
    long st = request(ctl, method, path, body, len, &j);
    if (st < 200 || st >= 300) {
        return fail_from(ctl, st, j);
    }
    if (j) {
        print_json(j);
    }
    return 0;
}

static int cmd_members(struct ctl *ctl, int argc, char **argv)
{
    char path[512];
    if (argc == 1 && strcmp(argv[0], "list") == 0) {
        snprintf(path, sizeof path, "/v1/members?limit=%s",
                 ctl->limit ? ctl->limit : "1000");
        return simple(ctl, "GET", path, NULL, 0);
    }
    if (argc == 2 && (strcmp(argv[0], "get") == 0 || strcmp(argv[0], "del") == 0)) {
        snprintf(path, sizeof path, "/v1/members/%s", argv[1]);
        return simple(ctl, argv[0][0] == 'g' ? "GET" : "DELETE", path, NULL, 0);
    }
    if (argc == 2 && strcmp(argv[0], "add") == 0) {
        json_t *b;
        char *s;
        int rv;
        if (!ctl->sign_pub || !ctl->box_pub) {
            fprintf(stderr, "unibusctl: members add needs --sign-pub and "
                            "--box-pub (unibusctl keygen prints both)\n");
            return 2;
        }
        b = json_pack("{s:s,s:s,s:s,s:s}", "handle", argv[1], "role",
                      ctl->role ? ctl->role : "member", "sign_pub",
                      ctl->sign_pub, "box_pub", ctl->box_pub);
        s = json_dumps(b, JSON_COMPACT);
        json_decref(b);
        rv = simple(ctl, "POST", "/v1/members", s, strlen(s));
        free(s);
        return rv;
    }
    usage(stderr);
    return 2;
}

static int cmd_rooms(struct ctl *ctl, int argc, char **argv)
{
    char path[512];
    if (argc == 1 && strcmp(argv[0], "list") == 0) {
        return simple(ctl, "GET", "/v1/rooms?limit=1000", NULL, 0);
    }
    if (argc == 2 && strcmp(argv[0], "create") == 0) {
        json_t *b = json_pack("{s:s}", "name", argv[1]);
        char *s = json_dumps(b, JSON_COMPACT);
        int rv = simple(ctl, "POST", "/v1/rooms", s, strlen(s));
        json_decref(b);
        free(s);
        return rv;
    }
    if (argc == 2 && (strcmp(argv[0], "get") == 0 || strcmp(argv[0], "del") == 0)) {
        snprintf(path, sizeof path, "/v1/rooms/%s", argv[1]);
        return simple(ctl, argv[0][0] == 'g' ? "GET" : "DELETE", path, NULL, 0);
    }
    if (argc == 3 && (strcmp(argv[0], "add") == 0 || strcmp(argv[0], "remove") == 0)) {
        snprintf(path, sizeof path, "/v1/rooms/%s/members/%s", argv[1], argv[2]);
        return simple(ctl, argv[0][0] == 'a' ? "PUT" : "DELETE", path, NULL, 0);
    }
    usage(stderr);
    return 2;
}

static int cmd_keys(struct ctl *ctl, int argc, char **argv)
{
    char path[512];
    if (argc == 5 && strcmp(argv[0], "put") == 0) {
        json_t *b = json_pack("{s:s}", "ciphertext", argv[4]);
        char *s = json_dumps(b, JSON_COMPACT);
        int rv;
        snprintf(path, sizeof path, "/v1/rooms/%s/keys/%s/%s", argv[1], argv[2],
                 argv[3]);
        rv = simple(ctl, "PUT", path, s, strlen(s));
        json_decref(b);
        free(s);
        return rv;
    }
    if (argc == 4 && strcmp(argv[0], "get") == 0) {
        snprintf(path, sizeof path, "/v1/rooms/%s/keys/%s/%s", argv[1], argv[2],
                 argv[3]);
        return simple(ctl, "GET", path, NULL, 0);
    }
    usage(stderr);
    return 2;
}

static int cmd_blobs(struct ctl *ctl, int argc, char **argv)
{
    char path[512];
    if (argc == 3 && strcmp(argv[0], "put") == 0) {
        FILE *f = fopen(argv[2], "rb");
        size_t n = 0;
        char *data;
        int rv;
        if (f == NULL) {
            fprintf(stderr, "unibusctl: cannot open %s: %s\n", argv[2],
                    strerror(errno));
            return 1;
        }
        data = read_all(f, &n);
        fclose(f);
        if (data == NULL) {
            fprintf(stderr, "unibusctl: cannot read %s\n", argv[2]);
            return 1;
        }
        snprintf(path, sizeof path, "/v1/rooms/%s/blobs", argv[1]);
        rv = simple(ctl, "POST", path, data, n);
        free(data);
        return rv;
    }
    if (argc == 2 && strcmp(argv[0], "get") == 0) {
        struct buf b;
        long st;
        int rv = 1;
        snprintf(path, sizeof path, "/v1/blobs/%s", argv[1]);
        st = request_raw(ctl, "GET", path, NULL, 0, &b);
        if (st == 200) {
            FILE *f = ctl->out ? fopen(ctl->out, "wb") : stdout;
            if (f == NULL) {
                fprintf(stderr, "unibusctl: cannot create %s: %s\n", ctl->out,
                        strerror(errno));
            } else if (fwrite(b.p ? b.p : "", 1, b.n, f) != b.n) {
                fprintf(stderr, "unibusctl: cannot write the blob\n");
            } else {
                rv = 0;
            }
            if (f && f != stdout && fclose(f) != 0) {
                rv = 1;
            }
        } else {
            rv = fail_from(ctl, st, b.p ? json_loadb(b.p, b.n, 0, NULL) : NULL);
        }
        free(b.p);
        return rv;
    }
    usage(stderr);
    return 2;
}

int main(int argc, char **argv)
{
    struct ctl ctl;
    char *args[16];
    int n = 0;
    int rv;

    memset(&ctl, 0, sizeof ctl);
    ctl.url = getenv("UNIBUS_URL");
    ctl.handle = getenv("UNIBUS_HANDLE");
    ctl.seed_file = getenv("UNIBUS_SEED_FILE");
    if (ctl.seed_file && *ctl.seed_file == '\0') {
        ctl.seed_file = NULL;
    }
    if (ctl.url == NULL || *ctl.url == '\0') {
        ctl.url = "http://127.0.0.1:8470";
    }
    const struct {
        const char *flag;
        const char **slot;
    } valued[] = {
        { "--url", &ctl.url },           { "--rev", &ctl.rev },
        { "--prefix", &ctl.prefix },     { "--limit", &ctl.limit },
        { "--after", &ctl.after },       { "--role", &ctl.role },
        { "--handle", &ctl.handle },     { "--seed-file", &ctl.seed_file },
        { "--out", &ctl.out },           { "--sign-pub", &ctl.sign_pub },
        { "--box-pub", &ctl.box_pub },
    };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **slot = NULL;
        for (size_t k = 0; k < sizeof valued / sizeof valued[0]; k++) {
            if (strcmp(a, valued[k].flag) == 0) {
                slot = valued[k].slot;
            }
        }
        if (slot) {
            /* handled below */
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--json") == 0) {
            ctl.json = true;
        } else if (strcmp(a, "--stale") == 0) {
            ctl.stale = true;
        } else if (strncmp(a, "--", 2) == 0 && a[2] != '\0') {
            fprintf(stderr, "unibusctl: unknown flag %s\n", a);
            return 2;
        } else if (n < 16) {
            args[n++] = argv[i];
        }
        if (slot) {
            if (i + 1 >= argc) {
                fprintf(stderr, "unibusctl: %s needs a value\n", a);
                return 2;
            }
            *slot = argv[++i];
        }
    }
    if (n == 0) {
        usage(stderr);
        return 2;
    }
    if (strcmp(args[0], "keygen") == 0) {
        return n == 1 ? cmd_keygen(&ctl) : 2;
    }
    if (load_seed(&ctl) != 0) {
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (strcmp(args[0], "members") == 0) {
        rv = cmd_members(&ctl, n - 1, args + 1);
    } else if (strcmp(args[0], "rooms") == 0) {
        rv = cmd_rooms(&ctl, n - 1, args + 1);
    } else if (strcmp(args[0], "keys") == 0) {
        rv = cmd_keys(&ctl, n - 1, args + 1);
    } else if (strcmp(args[0], "blobs") == 0) {
        rv = cmd_blobs(&ctl, n - 1, args + 1);
    } else if (strcmp(args[0], "me") == 0) {
        rv = simple(&ctl, "GET", "/v1/me", NULL, 0);
    } else if (strcmp(args[0], "cluster") == 0) {
        rv = cmd_cluster(&ctl, n - 1, args + 1);
    } else if (strcmp(args[0], "kv") == 0) {
        rv = cmd_kv(&ctl, n - 1, args + 1);
    } else if (strcmp(args[0], "health") == 0) {
        rv = cmd_health(&ctl);
    } else {
        usage(stderr);
        rv = 2;
    }
    curl_global_cleanup();
    memset(ctl.seed, 0, sizeof ctl.seed);
    return rv;
}
