/* Fuzz target: the route hello codec (src/route/hello.h), which parses the
 * first bytes a route peer sends.
 *
 * Each input is one frame as it would arrive. The target runs
 * rt_hello_frame_len() on every prefix and rt_hello_decode() on the whole
 * input, then twice more on repaired copies so that mutations get past the
 * checks a random input never passes:
 *   1. magic, version and length fixed up and the MAC recomputed with the
 *      harness secret (reaches the field checks behind the MAC);
 *   2. as 1, with the sender id also set to rt_node_id(name) (reaches full
 *      success).
 * Invariants (abort on violation): a failure always comes with a reason;
 * a decoded hello re-encodes to exactly the input bytes. The seed corpus is
 * encoded with the same exporter and secret (see gen_corpus.c). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "fuzz_common.h"
#include "route/hello.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t ub_fuzz_exporter[RT_EXPORTER_LEN] = UB_FUZZ_EXPORTER_INIT;
/* Without the terminating NUL. */
static const uint8_t ub_fuzz_secret[sizeof UB_FUZZ_SECRET_INIT - 1] = {
    UB_FUZZ_SECRET_INIT
};

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_hello: invariant violated: %s\n", what);
        abort();
    }
}

/* Decodes buf and checks the invariants; returns the decode result. */
static int decode_one(const uint8_t *buf, size_t len)
{
    struct rt_hello h;
    const char *why = (const char *)1;
    uint8_t again[RT_HELLO_MAX];
    int rv;

    memset(&h, 0xa5, sizeof h);
    rv = rt_hello_decode(buf, len, ub_fuzz_exporter, ub_fuzz_secret,
                         sizeof ub_fuzz_secret, &h, &why);
    if (rv != 0) {
        check(rv == -1, "decode returns 0 or -1");
        check(why != NULL && why != (const char *)1 && why[0] != '\0',
              "a failed decode gives a reason");
        return rv;
    }
    check(why == NULL, "a successful decode clears the reason");
    check(rt_name_valid(h.name), "decoded name is valid");
    check(rt_address_valid(h.address), "decoded address is valid");
    check(h.id == rt_node_id(h.name), "decoded id matches the name");
    check(h.role == RT_ROLE_DIALER || h.role == RT_ROLE_ACCEPTOR,
          "decoded role is known");
    rv = rt_hello_encode(&h, ub_fuzz_exporter, ub_fuzz_secret,
                         sizeof ub_fuzz_secret, again, sizeof again);
    check(rv > 0 && (size_t)rv == len && memcmp(again, buf, len) == 0,
          "a decoded hello re-encodes to the same bytes");
    /* A wrong secret or exporter never verifies. */
    {
        uint8_t exporter[RT_EXPORTER_LEN];
        memcpy(exporter, ub_fuzz_exporter, sizeof exporter);
        exporter[0] ^= 1;
        check(rt_hello_decode(buf, len, exporter, ub_fuzz_secret,
                              sizeof ub_fuzz_secret, &h, &why) == -1,
              "another exporter is refused");
        check(rt_hello_decode(buf, len, ub_fuzz_exporter, ub_fuzz_secret,
                              sizeof ub_fuzz_secret - 1, &h, &why) == -1,
              "another secret is refused");
    }
    return 0;
}

/* Recomputes the MAC of a frame of len bytes in place, as the encoder
 * would (HMAC-SHA256 over exporter || body). */
static void remac(uint8_t *buf, size_t len)
{
    uint8_t input[RT_EXPORTER_LEN + RT_HELLO_MAX];
    unsigned int mac_len = 0;
    size_t body = len - RT_HELLO_MAC_LEN;

    memcpy(input, ub_fuzz_exporter, RT_EXPORTER_LEN);
    memcpy(input + RT_EXPORTER_LEN, buf, body);
    if (HMAC(EVP_sha256(), ub_fuzz_secret, (int)sizeof ub_fuzz_secret, input,
             RT_EXPORTER_LEN + body, buf + body, &mac_len) == NULL ||
        mac_len != RT_HELLO_MAC_LEN) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t buf[RT_HELLO_MAX];
    int total;

    /* The prefix parser must agree with itself on every prefix. */
    total = rt_hello_frame_len(data, size);
    for (size_t i = 0; i < size && i <= RT_HELLO_PREFIX; i++) {
        int t = rt_hello_frame_len(data, i);
        if (i < RT_HELLO_PREFIX) {
            check(t == 0, "a short prefix asks for more bytes");
        } else {
            check(t == total, "the length is known from the prefix");
        }
    }
    check(total == 0 || total == -1 ||
              (total >= RT_HELLO_MIN && total <= RT_HELLO_MAX),
          "frame length in range");

    decode_one(data, size);

    if (size < RT_HELLO_MIN || size > RT_HELLO_MAX) {
        return 0;
    }
    /* Repair 1: framing and MAC. */
    memcpy(buf, data, size);
    memcpy(buf, "UBRT", 4);
    buf[4] = 0;
    buf[5] = RT_HELLO_VERSION;
    buf[6] = (uint8_t)(size >> 8);
    buf[7] = (uint8_t)size;
    check(rt_hello_frame_len(buf, size) == (int)size, "repaired framing");
    remac(buf, size);
    decode_one(buf, size);

    /* Repair 2: also the sender id, when the name length is plausible. */
    {
        size_t n = buf[13];
        char name[RT_NAME_MAX + 1];
        if (n >= 1 && n <= RT_NAME_MAX && RT_HELLO_FIXED + n <= size) {
            uint64_t id;
            memcpy(name, buf + RT_HELLO_FIXED, n);
            name[n] = '\0';
            id = rt_node_id(name);
            for (int i = 7; i >= 0; i--) {
                buf[24 + i] = (uint8_t)id;
                id >>= 8;
            }
            remac(buf, size);
            decode_one(buf, size);
        }
    }
    return 0;
}
