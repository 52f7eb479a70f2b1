/* Standalone replay driver for the fuzz targets, linked instead of libFuzzer
 * so that ctest runs every target quickly and reproducibly:
 *
 *   fuzz_<name>_replay CORPUS_DIR [N]   every file of CORPUS_DIR (in name
 *                                       order), then N (default 20000) inputs
 *                                       derived from them with a fixed seed
 *   fuzz_<name>_replay FILE...          just these inputs (reproduce a crash
 *                                       found by libFuzzer)
 *
 * Derived inputs are random bytes, bit flips, byte overwrites with boundary
 * values, truncations, insertions, deletions, duplicated chunks and splices
 * of two corpus files. The PRNG seed is fixed (UB_FUZZ_SEED in the
 * environment overrides it), so a failure repeats on every run. Each input
 * lives in its own heap buffer of exactly its size, so ASan sees any read
 * past its end. A crash or sanitizer report is a non-zero exit; the driver
 * prints the number of the input it was on first, and the input itself in
 * hex when UB_FUZZ_VERBOSE is set. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define DRIVER_MAX_INPUT (256 * 1024)
#define DEFAULT_RUNS 20000

struct blob {
    uint8_t *data;
    size_t len;
};

struct corpus {
    struct blob *files;
    size_t n;
    size_t max_len;
};

static uint64_t rng_state;

/* splitmix64: small, fast and identical everywhere. */
static uint64_t rng(void)
{
    uint64_t z = (rng_state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* Uniform-ish value in [0, n); n > 0. */
static size_t rng_below(size_t n)
{
    return (size_t)(rng() % n);
}

static void die(const char *what, const char *path)
{
    fprintf(stderr, "fuzz driver: %s %s: %s\n", what, path, strerror(errno));
    exit(2);
}

static int read_file(const char *path, struct blob *out)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t len = 0;
    size_t cap = 0;

    if (f == NULL) {
        return -1;
    }
    for (;;) {
        size_t n;
        if (cap - len < 4096) {
            uint8_t *nb;
            cap = cap ? cap * 2 : 8192;
            nb = realloc(buf, cap);
            if (nb == NULL) {
                free(buf);
                fclose(f);
                errno = ENOMEM;
                return -1;
            }
            buf = nb;
        }
        n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) {
            break;
        }
    }
    if (ferror(f)) {
        free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    out->data = buf;
    out->len = len;
    return 0;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void load_dir(const char *dir, struct corpus *c)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char **names = NULL;
    size_t n = 0;
    size_t cap = 0;

    if (d == NULL) {
        die("cannot open", dir);
    }
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') {
            continue;
        }
        if (n == cap) {
            char **nn;
            cap = cap ? cap * 2 : 16;
            nn = realloc(names, cap * sizeof *names);
            if (nn == NULL) {
                die("out of memory reading", dir);
            }
            names = nn;
        }
        names[n] = strdup(de->d_name);
        if (names[n] == NULL) {
            die("out of memory reading", dir);
        }
        n++;
    }
    closedir(d);
    if (n > 0) {
        qsort(names, n, sizeof *names, name_cmp);
    }
    c->files = calloc(n + 1, sizeof *c->files);
    if (c->files == NULL) {
        die("out of memory reading", dir);
    }
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        free(names[i]);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
            continue;
        }
        if (read_file(path, &c->files[c->n]) != 0) {
            die("cannot read", path);
        }
        if (c->files[c->n].len > c->max_len) {
            c->max_len = c->files[c->n].len;
        }
        c->n++;
    }
    free(names);
}

static unsigned long long run_no;

/* Runs the target on a private copy of exactly len bytes. */
static void run(const uint8_t *data, size_t len)
{
    uint8_t *copy = malloc(len ? len : 1);

    if (copy == NULL) {
        fprintf(stderr, "fuzz driver: out of memory\n");
        exit(2);
    }
    if (len > 0) {
        memcpy(copy, data, len);
    }
    if (getenv("UB_FUZZ_VERBOSE") != NULL) {
        fprintf(stderr, "input %llu (%zu bytes):", run_no, len);
        for (size_t i = 0; i < len; i++) {
            fprintf(stderr, "%02x", copy[i]);
        }
        fprintf(stderr, "\n");
    }
    LLVMFuzzerTestOneInput(copy, len);
    free(copy);
    run_no++;
}

/* Byte values that sit on boundaries of lengths, varints and characters. */
static const uint8_t interesting[] = {
    0x00, 0x01, 0x02, 0x07, 0x08, 0x0a, 0x10, 0x1f, 0x20, 0x2e, 0x2f, 0x3f,
    0x40, 0x7e, 0x7f, 0x80, 0x81, 0xfe, 0xff,
};

/* Fills *out (a buffer of DRIVER_MAX_INPUT bytes) with one derived input. */
static size_t derive(const struct corpus *c, uint8_t *out)
{
    const struct blob *a;
    size_t len;
    unsigned rounds;

    if (c->n == 0 || rng_below(16) == 0) {
        /* Random bytes, mostly short. */
        size_t cap = c->max_len > 64 ? c->max_len : 64;
        len = rng_below(rng_below(4) == 0 ? cap + 1 : 65);
        for (size_t i = 0; i < len; i++) {
            out[i] = (uint8_t)rng();
        }
        return len;
    }
    a = &c->files[rng_below(c->n)];
    len = a->len;
    memcpy(out, a->data, len);
    rounds = 1 + (unsigned)rng_below(rng_below(3) == 0 ? 16 : 4);
    for (unsigned r = 0; r < rounds; r++) {
        switch (rng_below(9)) {
            case 0: /* flip a bit */
            case 1:
                if (len > 0) {
                    out[rng_below(len)] ^= (uint8_t)(1u << rng_below(8));
                }
                break;
            case 2: /* overwrite a byte with a random value */
                if (len > 0) {
                    out[rng_below(len)] = (uint8_t)rng();
                }
                break;
            case 3: /* overwrite a byte with a boundary value */
                if (len > 0) {
                    out[rng_below(len)] = interesting[rng_below(
                        sizeof interesting)];
                }
                break;
            case 4: /* truncate */
                if (len > 0) {
                    len = rng_below(len + 1);
                }
                break;
            case 5: { /* delete a range */
                if (len > 0) {
                    size_t at = rng_below(len);
                    size_t n = 1 + rng_below(len - at < 16 ? len - at : 16);
                    memmove(out + at, out + at + n, len - at - n);
                    len -= n;
                }
                break;
            }
            case 6: { /* insert random bytes */
                size_t at = rng_below(len + 1);
                size_t n = 1 + rng_below(16);
                if (len + n > DRIVER_MAX_INPUT) {
                    break;
                }
                memmove(out + at + n, out + at, len - at);
                for (size_t i = 0; i < n; i++) {
                    out[at + i] = (uint8_t)rng();
                }
                len += n;
                break;
            }
            case 7: { /* duplicate a chunk */
                static uint8_t chunk[DRIVER_MAX_INPUT];
                if (len > 0) {
                    size_t from = rng_below(len);
                    size_t n = 1 + rng_below(len - from);
                    size_t at = rng_below(len + 1);
                    if (len + n > DRIVER_MAX_INPUT) {
                        break;
                    }
                    memcpy(chunk, out + from, n);
                    memmove(out + at + n, out + at, len - at);
                    memcpy(out + at, chunk, n);
                    len += n;
                }
                break;
            }
            case 8: { /* splice: a head of this input, a tail of another */
                const struct blob *b = &c->files[rng_below(c->n)];
                size_t head = rng_below(len + 1);
                size_t from = rng_below(b->len + 1);
                size_t n = b->len - from;
                if (head + n > DRIVER_MAX_INPUT) {
                    n = DRIVER_MAX_INPUT - head;
                }
                memcpy(out + head, b->data + from, n);
                len = head + n;
                break;
            }
        }
    }
    return len;
}

int main(int argc, char **argv)
{
    struct corpus c = { 0 };
    struct stat st;
    unsigned long long runs = DEFAULT_RUNS;
    const char *seed_env = getenv("UB_FUZZ_SEED");
    uint8_t *buf;

    if (argc < 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR [RUNS] | %s FILE...\n", argv[0],
                argv[0]);
        return 2;
    }
    if (stat(argv[1], &st) != 0) {
        die("cannot stat", argv[1]);
    }
    if (!S_ISDIR(st.st_mode)) {
        /* Reproduce mode: run the given files once each. */
        for (int i = 1; i < argc; i++) {
            struct blob b;
            if (read_file(argv[i], &b) != 0) {
                die("cannot read", argv[i]);
            }
            fprintf(stderr, "running %s (%zu bytes)\n", argv[i], b.len);
            run(b.data, b.len);
            free(b.data);
        }
        return 0;
    }
    if (argc > 2) {
        char *end;
        errno = 0;
        runs = strtoull(argv[2], &end, 10);
        if (errno != 0 || *end != '\0' || end == argv[2]) {
            fprintf(stderr, "fuzz driver: bad run count %s\n", argv[2]);
            return 2;
        }
    }
    rng_state = seed_env != NULL ? strtoull(seed_env, NULL, 0)
                                 : UINT64_C(0x756e69627573); /* "unibus" */

    load_dir(argv[1], &c);
    if (c.n == 0) {
        fprintf(stderr, "fuzz driver: no seed file in %s\n", argv[1]);
        return 2;
    }
    for (size_t i = 0; i < c.n; i++) {
        run(c.files[i].data, c.files[i].len);
    }
    buf = malloc(DRIVER_MAX_INPUT);
    if (buf == NULL) {
        fprintf(stderr, "fuzz driver: out of memory\n");
        return 2;
    }
    for (unsigned long long i = 0; i < runs; i++) {
        size_t len = derive(&c, buf);
        run(buf, len);
    }
    free(buf);
    for (size_t i = 0; i < c.n; i++) {
        free(c.files[i].data);
    }
    free(c.files);
    printf("fuzz driver: %zu seed files and %llu derived inputs ok\n", c.n,
           runs);
    return 0;
}
