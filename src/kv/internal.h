/* Private to src/kv: pieces shared by store.c and codec.c. Generated
 * protobuf types stay inside codec.c; this header speaks plain C. */
#ifndef UB_KV_INTERNAL_H
#define UB_KV_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#define KV__SNAPSHOT_FORMAT 1
#define KV__SHA256_LEN 32
#define KV__SNAPSHOT_MAX_HEADER 256 /* a valid header is far smaller */

/* The decoded SnapshotHeader message. */
struct kv__snapshot_header {
    uint32_t format;
    uint64_t index;
    uint8_t sha256[KV__SHA256_LEN];
    uint64_t image_len;
};

/* Packed size of h. */
size_t kv__snapshot_header_size(const struct kv__snapshot_header *h);

/* Packs h into out, which has kv__snapshot_header_size(h) bytes. */
void kv__snapshot_header_pack(const struct kv__snapshot_header *h,
                              uint8_t *out);

/* Unpacks a header from buf (borrowed). Returns 0, or -1 when the bytes do
 * not decode or the checksum field is not 32 bytes long. */
int kv__snapshot_header_unpack(const void *buf, size_t len,
                               struct kv__snapshot_header *h);

#endif
