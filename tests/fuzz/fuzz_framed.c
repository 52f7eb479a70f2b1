/* Fuzz target: length-prefixed frames over a libuv stream (src/lib/framed.h),
 * the reader every non-raft route channel goes through.
 *
 * Input: one control byte, then the bytes a peer sends. The harness runs a
 * private uv loop with one end of an AF_UNIX socketpair opened as a uv_pipe
 * under ub_framed_start (max frame UB_FUZZ_FRAMED_MAX), and writes the bytes
 * into the other end in chunks, running the loop without blocking after
 * each chunk so that frames arrive split at chosen places. Control bits:
 *   0-2  chunk size: 1, 2, 3, 7, 64, 1000, 4096 or everything at once
 *   3    echo every frame back with ub_framed_send (the harness reads it)
 *   4    finish with ub_framed_end instead of the peer's EOF
 *   5    ub_framed_close from inside the frame callback when a frame starts
 *        with 0xcc
 * Invariants (abort on violation): frames arrive in order and equal a
 * reference parse of the stream, all of them unless a close was asked for
 * or an oversize length came first; nothing is delivered after an oversize
 * length; the close callback fires exactly once; the echoed bytes are a
 * prefix of the frames re-framed; the stream is closed and the loop empty
 * at the end. Leaks are left to LeakSanitizer. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "lib/framed.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct state {
    /* Reference parse of the stream. */
    const uint8_t *stream;
    size_t stream_len;
    size_t ref_off[1024];
    size_t ref_len[1024];
    size_t n_ref;
    bool ref_truncated; /* more frames than ref_off holds */
    /* What happened. */
    size_t delivered;
    int closes;
    bool close_in_cb;
    bool echo;
    bool close_on_cc;
    uint8_t *echo_want; /* the echoed frames, re-framed */
    size_t echo_want_len;
    size_t echo_want_cap;
    size_t echo_got;
};

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_framed: invariant violated: %s\n", what);
        abort();
    }
}

/* Complete frames before the first oversize length or the incomplete tail. */
static void reference_parse(struct state *st)
{
    size_t off = 0;

    while (st->stream_len - off >= 4) {
        const uint8_t *p = st->stream + off;
        size_t len = (size_t)p[0] << 24 | (size_t)p[1] << 16 |
                     (size_t)p[2] << 8 | p[3];
        if (len > UB_FUZZ_FRAMED_MAX || st->stream_len - off - 4 < len) {
            break;
        }
        if (st->n_ref == sizeof st->ref_off / sizeof st->ref_off[0]) {
            st->ref_truncated = true;
            break;
        }
        st->ref_off[st->n_ref] = off + 4;
        st->ref_len[st->n_ref] = len;
        st->n_ref++;
        off += 4 + len;
    }
}

static void on_frame(struct ub_framed *f, const uint8_t *buf, size_t len)
{
    struct state *st = ub_framed_data(f);
    size_t k = st->delivered++;

    check(st->closes == 0, "no frame after the close callback");
    check(!st->close_in_cb, "no frame after ub_framed_close");
    check(len <= UB_FUZZ_FRAMED_MAX, "frames respect the maximum");
    if (k < st->n_ref) {
        check(len == st->ref_len[k] &&
                  (len == 0 ||
                   memcmp(buf, st->stream + st->ref_off[k], len) == 0),
              "frames arrive in order and intact");
    } else {
        check(st->ref_truncated, "no frame beyond the reference parse");
    }
    if (st->echo && ub_framed_send(f, buf, len) == 0) {
        size_t need = st->echo_want_len + 4 + len;
        if (need > st->echo_want_cap) {
            uint8_t *n = realloc(st->echo_want, need * 2);
            check(n != NULL, "memory");
            st->echo_want = n;
            st->echo_want_cap = need * 2;
        }
        st->echo_want[st->echo_want_len++] = (uint8_t)(len >> 24);
        st->echo_want[st->echo_want_len++] = (uint8_t)(len >> 16);
        st->echo_want[st->echo_want_len++] = (uint8_t)(len >> 8);
        st->echo_want[st->echo_want_len++] = (uint8_t)len;
        if (len > 0) {
            memcpy(st->echo_want + st->echo_want_len, buf, len);
        }
        st->echo_want_len += len;
        check(ub_framed_pending(f) > 0, "a queued frame is pending");
    }
    if (st->close_on_cc && len > 0 && buf[0] == 0xcc) {
        st->close_in_cb = true;
        ub_framed_close(f);
        ub_framed_close(f); /* twice is harmless */
        check(ub_framed_send(f, "x", 1) != 0, "no send after close");
    }
}

static void on_close(struct ub_framed *f)
{
    struct state *st = ub_framed_data(f);
    st->closes++;
}

/* Reads what the framed stream wrote back; checks it against echo_want. */
static void drain(int fd, struct state *st)
{
    uint8_t buf[8192];

    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) {
            check(n == 0 || errno == EAGAIN || errno == EWOULDBLOCK ||
                      errno == ECONNRESET,
                  "the peer end reads");
            return;
        }
        check(st->echo_got + (size_t)n <= st->echo_want_len &&
                  memcmp(buf, st->echo_want + st->echo_got, (size_t)n) == 0,
              "echoed bytes are the frames re-framed");
        st->echo_got += (size_t)n;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t chunks[8] = { 1, 2, 3, 7, 64, 1000, 4096, 0 };
    struct state *st;
    uv_loop_t loop;
    uv_pipe_t *pipe;
    struct ub_framed *f;
    int fds[2];
    size_t chunk;
    size_t off = 0;
    unsigned spins = 0;
    bool ended = false;

    if (size < 1) {
        return 0;
    }
    st = calloc(1, sizeof *st);
    check(st != NULL, "memory");
    st->stream = data + 1;
    st->stream_len = size - 1;
    st->echo = (data[0] & 0x08) != 0;
    st->close_on_cc = (data[0] & 0x20) != 0;
    chunk = chunks[data[0] & 7];
    if (chunk == 0) {
        chunk = st->stream_len > 0 ? st->stream_len : 1;
    }
    reference_parse(st);

    check(uv_loop_init(&loop) == 0, "uv_loop_init");
    check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0,
          "socketpair");
    check(fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK) == 0,
          "non-blocking peer");
    pipe = malloc(sizeof *pipe);
    check(pipe != NULL, "memory");
    check(uv_pipe_init(&loop, pipe, 0) == 0, "uv_pipe_init");
    check(uv_pipe_open(pipe, fds[0]) == 0, "uv_pipe_open");
    f = ub_framed_start((uv_stream_t *)pipe, free, UB_FUZZ_FRAMED_MAX,
                        on_frame, on_close, st);
    check(f != NULL, "ub_framed_start");
    check(ub_framed_data(f) == st, "data round-trips");

    /* Feed the stream chunk by chunk while the framed end is open. */
    while (off < st->stream_len && st->closes == 0) {
        size_t n = st->stream_len - off < chunk ? st->stream_len - off : chunk;
        ssize_t w = send(fds[1], st->stream + off, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                uv_run(&loop, UV_RUN_NOWAIT);
                drain(fds[1], st);
                check(++spins < 100000, "the reader makes progress");
                continue;
            }
            /* The framed end closed (oversize frame, close in callback). */
            check(errno == EPIPE || errno == ECONNRESET, "send to the pipe");
            break;
        }
        off += (size_t)w;
        uv_run(&loop, UV_RUN_NOWAIT);
        drain(fds[1], st);
    }

    /* Finish: the framed side ends, or the peer sends EOF. */
    spins = 0;
    while (st->closes == 0) {
        if (!ended) {
            ended = true;
            if ((data[0] & 0x10) != 0 && !st->close_in_cb) {
                /* Let the reader take in everything sent so far, then end;
                 * reads still run until the writes are out. */
                int unread = 1;
                while (st->closes == 0 && unread > 0) {
                    check(ioctl(fds[0], FIONREAD, &unread) == 0, "FIONREAD");
                    uv_run(&loop, UV_RUN_NOWAIT);
                    drain(fds[1], st);
                    check(++spins < 100000, "the reader makes progress");
                }
                if (st->closes != 0) {
                    break;
                }
                ub_framed_end(f);
            } else {
                shutdown(fds[1], SHUT_WR);
            }
        }
        uv_run(&loop, UV_RUN_NOWAIT);
        drain(fds[1], st);
        check(++spins < 100000, "the framed stream closes");
    }
    drain(fds[1], st);

    check(st->closes == 1, "the close callback fires once");
    if (!st->close_in_cb && !st->ref_truncated) {
        /* Every complete frame before an oversize length or the tail. */
        check(st->delivered == st->n_ref, "every complete frame arrives");
    }
    check(uv_run(&loop, UV_RUN_DEFAULT) == 0, "the loop drains");
    check(uv_loop_close(&loop) == 0, "no handle left on the loop");
    close(fds[1]);
    free(st->echo_want);
    free(st);
    return 0;
}
