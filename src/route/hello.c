/* Route hello frame codec; the format is described in hello.h. */
#include "route/hello.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <string.h>

static const uint8_t hello_magic[4] = { 'U', 'B', 'R', 'T' };

uint64_t rt_node_id(const char *name)
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    uint64_t id = 0;

    SHA256((const unsigned char *)name, strlen(name), md);
    for (int i = 0; i < 8; i++) {
        id = (id << 8) | md[i];
    }
    id &= ~(UINT64_C(1) << 63);
    return id == 0 ? 1 : id;
}

static bool name_char(char ch, bool first)
{
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
        (ch >= '0' && ch <= '9')) {
        return true;
    }
    return !first && (ch == '.' || ch == '_' || ch == '-');
}

bool rt_name_valid(const char *name)
{
    size_t n;

    if (name == NULL) {
        return false;
    }
    n = strlen(name);
    if (n == 0 || n > RT_NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!name_char(name[i], i == 0)) {
            return false;
        }
    }
    return true;
}

bool rt_address_valid(const char *address)
{
    size_t n;

    if (address == NULL) {
        return false;
    }
    n = strlen(address);
    if (n > RT_ADDRESS_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)address[i];
        if (ch <= 0x20 || ch >= 0x7f) {
            return false;
        }
    }
    return true;
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

/* MAC over exporter || body (body = the frame up to the MAC). */
static int hello_mac(const uint8_t exporter[RT_EXPORTER_LEN],
                     const uint8_t *secret, size_t secret_len,
                     const uint8_t *body, size_t body_len,
                     uint8_t mac[RT_HELLO_MAC_LEN])
{
    uint8_t input[RT_EXPORTER_LEN + RT_HELLO_MAX];
    unsigned int mac_len = 0;
    int ok;

    if (body_len > RT_HELLO_MAX || secret_len == 0 ||
        secret_len > (size_t)INT32_MAX) {
        return -1;
    }
    memcpy(input, exporter, RT_EXPORTER_LEN);
    memcpy(input + RT_EXPORTER_LEN, body, body_len);
    ok = HMAC(EVP_sha256(), secret, (int)secret_len, input,
              RT_EXPORTER_LEN + body_len, mac, &mac_len) != NULL &&
         mac_len == RT_HELLO_MAC_LEN;
    OPENSSL_cleanse(input, sizeof input);
    return ok ? 0 : -1;
}

int rt_hello_encode(const struct rt_hello *h,
                    const uint8_t exporter[RT_EXPORTER_LEN],
                    const uint8_t *secret, size_t secret_len, uint8_t *out,
                    size_t cap)
{
    size_t n, a, body, total;

    if (!rt_name_valid(h->name) || !rt_address_valid(h->address)) {
        return -1;
    }
    n = strlen(h->name);
    a = strlen(h->address);
    body = RT_HELLO_FIXED + n + a;
    total = body + RT_HELLO_MAC_LEN;
    if (total > RT_HELLO_MAX || total > cap) {
        return -1;
    }
    memcpy(out, hello_magic, sizeof hello_magic);
    put16(out + 4, RT_HELLO_VERSION);
    put16(out + 6, (uint16_t)total);
    put32(out + 8, h->kind);
    out[12] = h->role;
    out[13] = (uint8_t)n;
    put16(out + 14, (uint16_t)a);
    put64(out + 16, h->group);
    put64(out + 24, h->id);
    memcpy(out + RT_HELLO_FIXED, h->name, n);
    memcpy(out + RT_HELLO_FIXED + n, h->address, a);
    if (hello_mac(exporter, secret, secret_len, out, body, out + body) != 0) {
        return -1;
    }
    return (int)total;
}

int rt_hello_frame_len(const uint8_t *buf, size_t len)
{
    uint16_t total;

    if (len < RT_HELLO_PREFIX) {
        return 0;
    }
    if (memcmp(buf, hello_magic, sizeof hello_magic) != 0 ||
        get16(buf + 4) != RT_HELLO_VERSION) {
        return -1;
    }
    total = get16(buf + 6);
    if (total < RT_HELLO_MIN || total > RT_HELLO_MAX) {
        return -1;
    }
    return total;
}

int rt_hello_decode(const uint8_t *buf, size_t len,
                    const uint8_t exporter[RT_EXPORTER_LEN],
                    const uint8_t *secret, size_t secret_len,
                    struct rt_hello *out, const char **why)
{
    uint8_t mac[RT_HELLO_MAC_LEN];
    size_t n, a, body;
    int total = rt_hello_frame_len(buf, len);

    *why = NULL;
    if (total <= 0 || (size_t)total != len) {
        *why = "malformed hello (magic, version or length)";
        return -1;
    }
    n = buf[13];
    a = get16(buf + 14);
    body = RT_HELLO_FIXED + n + a;
    if (n == 0 || n > RT_NAME_MAX || a > RT_ADDRESS_MAX ||
        body + RT_HELLO_MAC_LEN != len) {
        *why = "malformed hello (field lengths)";
        return -1;
    }
    if (hello_mac(exporter, secret, secret_len, buf, body, mac) != 0) {
        *why = "cannot compute the hello authenticator";
        return -1;
    }
    if (CRYPTO_memcmp(mac, buf + body, RT_HELLO_MAC_LEN) != 0) {
        OPENSSL_cleanse(mac, sizeof mac);
        *why = "bad hello authenticator (cluster secret differs)";
        return -1;
    }
    OPENSSL_cleanse(mac, sizeof mac);

    memset(out, 0, sizeof *out);
    out->kind = get32(buf + 8);
    out->role = buf[12];
    out->group = get64(buf + 16);
    out->id = get64(buf + 24);
    memcpy(out->name, buf + RT_HELLO_FIXED, n);
    memcpy(out->address, buf + RT_HELLO_FIXED + n, a);
    if (memchr(buf + RT_HELLO_FIXED, '\0', n + a) != NULL ||
        !rt_name_valid(out->name) || !rt_address_valid(out->address)) {
        *why = "malformed hello (name or address characters)";
        return -1;
    }
    if (out->role != RT_ROLE_DIALER && out->role != RT_ROLE_ACCEPTOR) {
        *why = "malformed hello (role)";
        return -1;
    }
    if (out->id != rt_node_id(out->name)) {
        *why = "hello id does not match the node name";
        return -1;
    }
    return 0;
}
