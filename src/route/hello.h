/* The route hello frame: the first thing each side sends inside a fresh
 * route TLS session. Pure encode/decode, no I/O, so it can be unit-tested,
 * fuzzed, and reused by test peers.
 *
 * Wire format (all integers big-endian), version 1:
 *
 *   off size field
 *     0    4 magic "UBRT"
 *     4    2 version (1)
 *     6    2 frame length in bytes, MAC included (65..512)
 *     8    4 kind (RT_KIND_*, 1..RT_KIND_MAX)
 *    12    1 role (1 = dialer, 2 = acceptor)
 *    13    1 name length n (1..63)
 *    14    2 address length a (0..255)
 *    16    8 group (raft group id, or 0)
 *    24    8 sender id (must equal rt_node_id(name))
 *    32    n sender node name ([A-Za-z0-9][A-Za-z0-9._-]*)
 *  32+n    a sender advertised route address "host:port" (printable ASCII)
 * 32+n+a  32 HMAC-SHA256(cluster secret, exporter || bytes 0 .. 32+n+a-1)
 *
 * exporter = SSL_export_keying_material(label "EXPORTER-unibus-route",
 * no context, 32 bytes): both ends of one TLS session compute the same value,
 * so the MAC proves knowledge of the secret for this session only and the
 * secret itself never crosses the wire. The role byte keeps a dialer's hello
 * from being reflected back as an acceptor's hello. */
#ifndef UB_ROUTE_HELLO_H
#define UB_ROUTE_HELLO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RT_HELLO_VERSION 1
#define RT_HELLO_FIXED 32    /* bytes before the name */
#define RT_HELLO_MAC_LEN 32  /* HMAC-SHA256 */
#define RT_HELLO_MIN (RT_HELLO_FIXED + 1 + RT_HELLO_MAC_LEN)
#define RT_HELLO_MAX 512
#define RT_HELLO_PREFIX 8    /* bytes needed to learn the frame length */
#define RT_EXPORTER_LABEL "EXPORTER-unibus-route"
#define RT_EXPORTER_LEN 32
#define RT_NAME_MAX 63
#define RT_ADDRESS_MAX 255

enum rt_hello_role {
    RT_ROLE_DIALER = 1,
    RT_ROLE_ACCEPTOR = 2,
};

/* Decoded hello fields (the MAC is checked, not kept). */
struct rt_hello {
    uint32_t kind;
    uint8_t role;
    uint64_t group;
    uint64_t id;
    char name[RT_NAME_MAX + 1];
    char address[RT_ADDRESS_MAX + 1];
};

/* Stable node id for a node name: the first 8 bytes of SHA-256(name) read
 * big-endian, top bit cleared, 0 mapped to 1. Used as the raft id. */
uint64_t rt_node_id(const char *name);

/* True when name is a valid node name: 1..63 characters, the first a letter
 * or digit, the rest letters, digits, '.', '_' or '-'. */
bool rt_name_valid(const char *name);

/* True when address fits a hello: at most 255 printable non-space ASCII
 * characters (it may be empty). */
bool rt_address_valid(const char *address);

/* Encodes h into out (cap bytes), appending the MAC keyed with secret over
 * exporter and the frame. Returns the frame length, or -1 when a field is
 * invalid or cap is too small. */
int rt_hello_encode(const struct rt_hello *h,
                    const uint8_t exporter[RT_EXPORTER_LEN],
                    const uint8_t *secret, size_t secret_len, uint8_t *out,
                    size_t cap);

/* Looks at the first len bytes of a frame. Returns the announced frame length
 * once RT_HELLO_PREFIX bytes are there, 0 when more bytes are needed, -1 when
 * the magic, version or length is wrong. */
int rt_hello_frame_len(const uint8_t *buf, size_t len);

/* Decodes one complete frame of exactly len bytes and checks its MAC and
 * fields (sizes, name syntax, id == rt_node_id(name)). Returns 0 and fills
 * out, or -1 and points *why at a static reason that never contains secret
 * material. */
int rt_hello_decode(const uint8_t *buf, size_t len,
                    const uint8_t exporter[RT_EXPORTER_LEN],
                    const uint8_t *secret, size_t secret_len,
                    struct rt_hello *out, const char **why);

#endif
