/* Constants shared by the fuzz targets and the seed corpus generator
 * (gen_corpus.c), so that the seeds pass the targets' checks. */
#ifndef UB_FUZZ_COMMON_H
#define UB_FUZZ_COMMON_H

/* Hello frames: the TLS exporter value and the cluster secret the hello
 * target and the generated hello seeds use. The secret's last byte is not
 * zero (HMAC pads short keys with zeros, so "k" and "k\0" are one key). */
#define UB_FUZZ_EXPORTER_INIT                                                 \
    {                                                                         \
        0x45, 0x58, 0x50, 0x4f, 0x52, 0x54, 0x45, 0x52, 0x2d, 0x66, 0x75,     \
            0x7a, 0x7a, 0x2d, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x2d, 0x30, 0x31, \
            0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x61, 0x62        \
    }
#define UB_FUZZ_SECRET_INIT "unibus fuzz cluster secret 0123456789"

/* Framed target: the largest frame the harness accepts. */
#define UB_FUZZ_FRAMED_MAX 1024

#endif
