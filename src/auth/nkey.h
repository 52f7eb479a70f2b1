/* NATS nkeys and the encodings around them: base32 (RFC 4648), CRC-16/XMODEM,
 * base64 (standard and URL-safe), Ed25519 sign/verify of user keys, and
 * X25519 box keys. Pure functions, no I/O; OpenSSL does the curve work.
 *
 * NKey strings (NATS_WIRE.md 4.2):
 *   public key  base32(prefix(1) || key(32) || crc16_le(2))      56 chars
 *   seed        base32(b1 || b2 || seed(32) || crc16_le(2))       58 chars
 * with b1 = 0x90 | (public_prefix >> 5), b2 = (public_prefix & 31) << 3, and
 * the CRC (CRC-16/XMODEM) over every byte before it. A user public key starts
 * with 'U', a user seed with "SU".
 *
 * Strictness: every decoder accepts exactly one spelling of each value.
 * Base32 is upper-case A-Z2-7 without padding; base64url is A-Za-z0-9-_
 * without padding; standard base64 is A-Za-z0-9+/ with its '=' padding. The
 * unused low bits of the last character must be zero (a decoded value
 * re-encodes to the input), and whitespace is never skipped. A seed's b2
 * must have its low three bits clear.
 *
 * Weak keys: OpenSSL's Ed25519 verifier accepts forged signatures under a
 * public key of small order (the identity point verifies any message), so
 * nkey_user_pub_decode() and every verify function reject the small-order
 * points and non-canonical encodings (y >= p) with NKEY_WEAK_KEY. X25519 box
 * keys of small order (shared secret all zero) are refused the same way.
 *
 * Return values: functions returning int return an enum nkey_code; NKEY_OK
 * (0) is success. Secrets (seeds, private keys) are wiped from internal
 * buffers before return. */
#ifndef UB_AUTH_NKEY_H
#define UB_AUTH_NKEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NKEY_KEY_LEN 32      /* raw Ed25519 / X25519 key or seed bytes */
#define NKEY_SIG_LEN 64      /* raw Ed25519 signature bytes */
#define NKEY_PUB_LEN 56      /* chars of an encoded public key */
#define NKEY_SEED_LEN 58     /* chars of an encoded seed */
#define NKEY_PUB_SIZE (NKEY_PUB_LEN + 1)   /* buffer size, with the NUL */
#define NKEY_SEED_SIZE (NKEY_SEED_LEN + 1) /* buffer size, with the NUL */
#define NKEY_SIG_B64URL_LEN 86 /* chars of a signature in base64url */
#define NKEY_SIG_B64STD_LEN 88 /* chars of a signature in standard base64 */
#define NKEY_BOX_PUB_LEN 44    /* chars of a box_pub (standard base64) */
#define NKEY_BOX_PUB_SIZE (NKEY_BOX_PUB_LEN + 1)

/* Encoded lengths (without the NUL) and decoded upper bounds, in bytes. */
#define NKEY_BASE32_ENCODED_LEN(n) (((n) * 8 + 4) / 5)
#define NKEY_BASE32_DECODED_MAX(n) ((n) * 5 / 8)
#define NKEY_B64URL_ENCODED_LEN(n) (((n) * 4 + 2) / 3)
#define NKEY_B64STD_ENCODED_LEN(n) (((n) + 2) / 3 * 4)
#define NKEY_B64_DECODED_MAX(n) ((n) * 3 / 4)

/* Prefix bytes of public keys (the type in the top five bits). */
enum nkey_prefix {
    NKEY_PREFIX_ACCOUNT = 0,         /* 'A' */
    NKEY_PREFIX_CLUSTER = 2 << 3,    /* 'C' */
    NKEY_PREFIX_SERVER = 13 << 3,    /* 'N' */
    NKEY_PREFIX_OPERATOR = 14 << 3,  /* 'O' */
    NKEY_PREFIX_PRIVATE = 15 << 3,   /* 'P' (never a public key) */
    NKEY_PREFIX_SEED = 18 << 3,      /* 'S' (first byte of a seed) */
    NKEY_PREFIX_USER = 20 << 3,      /* 'U' */
    NKEY_PREFIX_CURVE = 23 << 3,     /* 'X' */
};

enum nkey_code {
    NKEY_OK = 0,
    NKEY_BAD_LENGTH,    /* wrong number of characters or decoded bytes */
    NKEY_BAD_ENCODING,  /* alphabet, case, padding or non-zero unused bits */
    NKEY_BAD_CRC,       /* checksum does not match */
    NKEY_BAD_PREFIX,    /* a valid key of another type (e.g. account) */
    NKEY_WEAK_KEY,      /* small-order or non-canonical curve point */
    NKEY_BAD_SIGNATURE, /* signature does not verify */
    NKEY_NO_SPACE,      /* caller buffer too small */
    NKEY_INTERNAL,      /* OpenSSL or random source failure */
};

/* Stable lower-case name of a code: "ok", "bad_length", "bad_encoding",
 * "bad_crc", "bad_prefix", "weak_key", "bad_signature", "no_space",
 * "internal"; "unknown" for anything else. */
const char *nkey_code_name(int code);

/* ------------------------------------------------------------------------ */
/* Checksums and encodings. Encoders write a NUL-terminated string and need
 * cap >= encoded length + 1 (else NKEY_NO_SPACE, out unchanged). Decoders
 * read exactly len chars (no NUL needed), need cap >= the decoded length,
 * and store it in *out_len; on failure out's content is unspecified. */

/* CRC-16/XMODEM (poly 0x1021, init 0, no reflection, no final xor);
 * "123456789" gives 0x31C3. buf may be NULL when len is 0. */
uint16_t nkey_crc16(const uint8_t *buf, size_t len);

int nkey_base32_encode(const uint8_t *in, size_t len, char *out, size_t cap);
int nkey_base32_decode(const char *in, size_t len, uint8_t *out, size_t cap,
                       size_t *out_len);

/* base64url without padding. */
int nkey_b64url_encode(const uint8_t *in, size_t len, char *out, size_t cap);
int nkey_b64url_decode(const char *in, size_t len, uint8_t *out, size_t cap,
                       size_t *out_len);

/* Standard base64 with '=' padding (required on decode). */
int nkey_b64std_encode(const uint8_t *in, size_t len, char *out, size_t cap);
int nkey_b64std_decode(const char *in, size_t len, uint8_t *out, size_t cap,
                       size_t *out_len);

/* base64url without padding, or else standard padded base64: what NATS
 * servers accept for a CONNECT sig. */
int nkey_b64any_decode(const char *in, size_t len, uint8_t *out, size_t cap,
                       size_t *out_len);

/* Decodes a 64-byte Ed25519 signature given in either base64 form
 * (86 or 88 chars). NKEY_BAD_LENGTH if it decodes to another size. */
int nkey_sig_decode(const char *in, size_t len, uint8_t sig[NKEY_SIG_LEN]);

/* ------------------------------------------------------------------------ */
/* NKey strings of any type. The prefix arguments are public key prefixes
 * (enum nkey_prefix, not SEED or PRIVATE). Decoding checks, in order:
 * length (NKEY_BAD_LENGTH), base32 (NKEY_BAD_ENCODING), CRC (NKEY_BAD_CRC),
 * then the type (NKEY_BAD_PREFIX). No weak-key check here. */

int nkey_encode_pub(uint8_t prefix, const uint8_t key[NKEY_KEY_LEN],
                    char out[NKEY_PUB_SIZE]);
int nkey_decode_pub(const char *in, size_t len, uint8_t prefix,
                    uint8_t key[NKEY_KEY_LEN]);
int nkey_encode_seed(uint8_t prefix, const uint8_t seed[NKEY_KEY_LEN],
                     char out[NKEY_SEED_SIZE]);
int nkey_decode_seed(const char *in, size_t len, uint8_t prefix,
                     uint8_t seed[NKEY_KEY_LEN]);

/* User keys ("U...", "SU..."), NUL-terminated. nkey_user_pub_decode() also
 * rejects weak Ed25519 keys (NKEY_WEAK_KEY): use it for anything that will
 * later verify signatures (member registration, bus allowlists). */
int nkey_user_pub_encode(const uint8_t pub[NKEY_KEY_LEN],
                         char out[NKEY_PUB_SIZE]);
int nkey_user_pub_decode(const char *in, uint8_t pub[NKEY_KEY_LEN]);
int nkey_user_seed_encode(const uint8_t seed[NKEY_KEY_LEN],
                          char out[NKEY_SEED_SIZE]);
int nkey_user_seed_decode(const char *in, uint8_t seed[NKEY_KEY_LEN]);

/* True when the 32 bytes are not a usable Ed25519 public key: a point of
 * small order or a y coordinate >= p. */
bool nkey_ed25519_pub_is_weak(const uint8_t pub[NKEY_KEY_LEN]);

/* ------------------------------------------------------------------------ */
/* Ed25519 with user keys. */

/* Decodes a user seed string and derives its key pair: pub gets the raw
 * public key, priv the raw 32-byte private seed (RFC 8032 secret key).
 * Either output may be NULL. */
int nkey_keypair_from_seed(const char *seed, uint8_t pub[NKEY_KEY_LEN],
                           uint8_t priv[NKEY_KEY_LEN]);

/* Creates a fresh user key pair from RAND_bytes: seed gets "SU..." and pub
 * "U...". The caller should wipe seed when done. */
int nkey_generate_user(char seed[NKEY_SEED_SIZE], char pub[NKEY_PUB_SIZE]);

/* Signs msg (len bytes; msg may be NULL when len is 0) with a user seed
 * string, or with a raw private seed. */
int nkey_sign(const char *seed, const void *msg, size_t len,
              uint8_t sig[NKEY_SIG_LEN]);
int nkey_sign_raw(const uint8_t priv[NKEY_KEY_LEN], const void *msg,
                  size_t len, uint8_t sig[NKEY_SIG_LEN]);

/* Verifies sig over msg under a user public key string ("U...") or a raw
 * public key. NKEY_OK only for a valid signature; NKEY_BAD_SIGNATURE when it
 * does not verify; a key decoding code or NKEY_WEAK_KEY for a bad key. */
int nkey_verify(const char *upub, const void *msg, size_t len,
                const uint8_t sig[NKEY_SIG_LEN]);
int nkey_verify_raw(const uint8_t pub[NKEY_KEY_LEN], const void *msg,
                    size_t len, const uint8_t sig[NKEY_SIG_LEN]);

/* ------------------------------------------------------------------------ */
/* X25519 box keys. A member's box_pub is the standard base64 (padded, 44
 * chars) of the 32 raw public key bytes. */

/* Creates a fresh X25519 key pair (raw bytes). */
int nkey_x25519_generate(uint8_t priv[NKEY_KEY_LEN],
                         uint8_t pub[NKEY_KEY_LEN]);

/* Derives the public key of a raw X25519 private key. */
int nkey_x25519_pub_from_priv(const uint8_t priv[NKEY_KEY_LEN],
                              uint8_t pub[NKEY_KEY_LEN]);

/* Writes the box_pub string of a raw public key. */
int nkey_box_pub_encode(const uint8_t pub[NKEY_KEY_LEN],
                        char out[NKEY_BOX_PUB_SIZE]);

/* Decodes a box_pub of len chars: NKEY_BAD_LENGTH unless it is 44 chars of
 * 32 bytes, NKEY_BAD_ENCODING for anything but canonical padded standard
 * base64, NKEY_WEAK_KEY for a small-order point. */
int nkey_box_pub_decode(const char *in, size_t len,
                        uint8_t pub[NKEY_KEY_LEN]);

/* nkey_box_pub_decode() == NKEY_OK for a NUL-terminated string (NULL is
 * invalid). */
bool nkey_box_pub_valid(const char *in);

#endif
