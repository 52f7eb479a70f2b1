/* Framed stream. Reads accumulate in one growable buffer; every complete
 * frame is delivered in order. An oversize length closes the stream before
 * the body is buffered, so a hostile peer cannot make us allocate it. */
#include "framed.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct ub_framed {
    uv_stream_t *stream;
    void (*free_stream)(void *);
    size_t max_frame;
    ub_framed_frame_cb on_frame;
    ub_framed_close_cb on_close;
    void *data;
    uint8_t *buf;
    size_t len, cap;
    size_t pending;
    unsigned writes; /* uv_write requests in flight */
    bool closing;
    bool ending; /* close once the queued writes are out */
    bool closed;
    bool in_read;
};

struct write_req {
    uv_write_t req;
    struct ub_framed *f;
    size_t len;
    uint8_t data[];
};

static void maybe_free(struct ub_framed *f)
{
    if (f->closed && f->writes == 0 && !f->in_read) {
        free(f->buf);
        free(f);
    }
}

static void closed_cb(uv_handle_t *h)
{
    struct ub_framed *f = h->data;
    f->free_stream(h);
    f->closed = true;
    f->on_close(f);
    maybe_free(f);
}

void ub_framed_close(struct ub_framed *f)
{
    if (f->closing) {
        return;
    }
    f->closing = true;
    uv_read_stop(f->stream);
    uv_close((uv_handle_t *)f->stream, closed_cb);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    struct ub_framed *f = h->data;
    (void)suggested;
    if (f->cap - f->len < 16384) {
        size_t ncap = f->cap ? f->cap * 2 : 65536;
        uint8_t *nb;
        while (ncap - f->len < 16384) {
            ncap *= 2;
        }
        nb = realloc(f->buf, ncap);
        if (nb == NULL) {
            out->base = NULL;
            out->len = 0;
            return;
        }
        f->buf = nb;
        f->cap = ncap;
    }
    out->base = (char *)f->buf + f->len;
    out->len = f->cap - f->len;
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct ub_framed *f = s->data;
    size_t off = 0;
    (void)b;
    if (nread < 0) {
        ub_framed_close(f);
        return;
    }
    f->len += (size_t)nread;
    f->in_read = true;
    while (!f->closing && f->len - off >= 4) {
        const uint8_t *p = f->buf + off;
        size_t flen = ((size_t)p[0] << 24) | ((size_t)p[1] << 16) |
                      ((size_t)p[2] << 8) | p[3];
        if (flen > f->max_frame) {
            ub_framed_close(f);
            break;
        }
        if (f->len - off - 4 < flen) {
            break;
        }
        f->on_frame(f, p + 4, flen);
        off += 4 + flen;
    }
    f->in_read = false;
    if (off > 0) {
        memmove(f->buf, f->buf + off, f->len - off);
        f->len -= off;
    }
    /* Give memory back after a large frame. */
    if (f->len == 0 && f->cap > (1u << 20)) {
        free(f->buf);
        f->buf = NULL;
        f->cap = 0;
    }
    maybe_free(f);
}

struct ub_framed *ub_framed_start(uv_stream_t *stream,
                                  void (*free_stream)(void *), size_t max_frame,
                                  ub_framed_frame_cb on_frame,
                                  ub_framed_close_cb on_close, void *data)
{
    struct ub_framed *f = calloc(1, sizeof *f);
    if (f == NULL) {
        return NULL;
    }
    f->stream = stream;
    f->free_stream = free_stream;
    f->max_frame = max_frame;
    f->on_frame = on_frame;
    f->on_close = on_close;
    f->data = data;
    stream->data = f;
    if (uv_read_start(stream, alloc_cb, read_cb) != 0) {
        f->closing = true;
        uv_close((uv_handle_t *)stream, closed_cb);
    }
    return f;
}

static void write_cb(uv_write_t *req, int status)
{
    struct write_req *w = (struct write_req *)req;
    struct ub_framed *f = w->f;
    f->writes--;
    f->pending -= w->len;
    free(w);
    if (status != 0 || (f->ending && f->writes == 0)) {
        ub_framed_close(f);
    }
    maybe_free(f);
}

void ub_framed_end(struct ub_framed *f)
{
    f->ending = true;
    if (f->writes == 0) {
        ub_framed_close(f);
    }
}

int ub_framed_send(struct ub_framed *f, const void *buf, size_t len)
{
    struct write_req *w;
    uv_buf_t b;
    int rv;
    if (f->closing) {
        return UV_ECANCELED;
    }
    w = malloc(sizeof *w + 4 + len);
    if (w == NULL) {
        return UV_ENOMEM;
    }
    w->f = f;
    w->len = len + 4;
    w->data[0] = (uint8_t)(len >> 24);
    w->data[1] = (uint8_t)(len >> 16);
    w->data[2] = (uint8_t)(len >> 8);
    w->data[3] = (uint8_t)len;
    memcpy(w->data + 4, buf, len);
    b = uv_buf_init((char *)w->data, (unsigned)(len + 4));
    rv = uv_write(&w->req, f->stream, &b, 1, write_cb);
    if (rv != 0) {
        free(w);
        ub_framed_close(f);
        return rv;
    }
    f->writes++;
    f->pending += w->len;
    return 0;
}

void *ub_framed_data(struct ub_framed *f)
{
    return f->data;
}

void ub_framed_set_data(struct ub_framed *f, void *data)
{
    f->data = data;
}

size_t ub_framed_pending(const struct ub_framed *f)
{
    return f->pending;
}
