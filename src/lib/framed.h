/* Length-prefixed frames over a libuv stream: a 4-byte big-endian length,
 * then the frame. Used for every route channel that is not raft's own. */
#ifndef UB_FRAMED_H
#define UB_FRAMED_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct ub_framed;

/* buf is borrowed for the duration of the call. */
typedef void (*ub_framed_frame_cb)(struct ub_framed *f, const uint8_t *buf,
                                   size_t len);
/* Fires exactly once, after the stream is closed (EOF, error, oversize
 * frame or ub_framed_close); f is freed right after it returns. */
typedef void (*ub_framed_close_cb)(struct ub_framed *f);

/* Takes ownership of stream (already initialised, not reading); free_stream
 * releases its memory after uv_close. Returns NULL on allocation failure;
 * the stream then still belongs to the caller. */
struct ub_framed *ub_framed_start(uv_stream_t *stream,
                                  void (*free_stream)(void *), size_t max_frame,
                                  ub_framed_frame_cb on_frame,
                                  ub_framed_close_cb on_close, void *data);

/* Queues a copy of buf. Returns 0, or a negative uv error when closing. */
int ub_framed_send(struct ub_framed *f, const void *buf, size_t len);

void ub_framed_close(struct ub_framed *f);
/* Closes once every queued frame has been written. */
void ub_framed_end(struct ub_framed *f);
void *ub_framed_data(struct ub_framed *f);
void ub_framed_set_data(struct ub_framed *f, void *data);
/* Bytes queued for writing and not yet written. */
size_t ub_framed_pending(const struct ub_framed *f);

#endif
