#include "route_rogue.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "route/hello.h"

#define ROGUE_IO_TIMEOUT_S 15

static void set_timeouts(int fd)
{
    struct timeval tv = { ROGUE_IO_TIMEOUT_S, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static SSL_CTX *rogue_ctx(struct route_rogue *r, int server)
{
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method()
                                      : TLS_client_method());
    if (ctx == NULL) {
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    if (SSL_CTX_use_certificate_chain_file(ctx, r->cfg.cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, r->cfg.key, SSL_FILETYPE_PEM) != 1) {
        snprintf(r->detail, sizeof r->detail, "rogue: cannot load %s",
                 r->cfg.cert);
        SSL_CTX_free(ctx);
        return NULL;
    }
    /* The rogue trusts anything: only the hub's checks are under test. */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    return ctx;
}

static int send_hello(struct route_rogue *r, SSL *ssl, uint8_t role)
{
    uint8_t exporter[RT_EXPORTER_LEN];
    uint8_t frame[RT_HELLO_MAX];
    struct rt_hello h;
    int n;

    if (r->cfg.hello == ROUTE_ROGUE_HELLO_NONE) {
        return 0;
    }
    if (r->cfg.hello == ROUTE_ROGUE_HELLO_GARBAGE) {
        static const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        return SSL_write(ssl, junk, sizeof junk - 1) > 0 ? 0 : -1;
    }
    if (SSL_export_keying_material(ssl, exporter, sizeof exporter,
                                   RT_EXPORTER_LABEL,
                                   sizeof RT_EXPORTER_LABEL - 1, NULL, 0,
                                   0) != 1) {
        return -1;
    }
    memset(&h, 0, sizeof h);
    h.kind = r->cfg.kind;
    h.role = role;
    h.group = r->cfg.group;
    h.id = r->cfg.id != 0 ? r->cfg.id : rt_node_id(r->cfg.name);
    snprintf(h.name, sizeof h.name, "%s", r->cfg.name);
    snprintf(h.address, sizeof h.address, "127.0.0.1:%d", r->port);
    n = rt_hello_encode(&h, exporter, r->cfg.secret, r->cfg.secret_len, frame,
                        sizeof frame);
    if (n < 0) {
        return -1;
    }
    return SSL_write(ssl, frame, n) == n ? 0 : -1;
}

/* Reads one hello frame (structure only) and takes its kind and group, so
 * an acceptor can echo them. Returns 1 when one arrived, 0 when the peer
 * closed or failed first. */
static int read_hello(struct route_rogue *r, SSL *ssl)
{
    uint8_t buf[RT_HELLO_MAX];
    size_t have = 0, need = RT_HELLO_PREFIX;

    while (have < need) {
        int n = SSL_read(ssl, buf + have, (int)(need - have));
        if (n <= 0) {
            return 0;
        }
        have += (size_t)n;
        if (need == RT_HELLO_PREFIX && have == need) {
            int total = rt_hello_frame_len(buf, have);
            if (total <= 0) {
                return 0;
            }
            need = (size_t)total;
        }
    }
    if (!r->dialing) {
        r->cfg.kind = (uint32_t)buf[8] << 24 | (uint32_t)buf[9] << 16 |
                      (uint32_t)buf[10] << 8 | buf[11];
        r->cfg.group = 0;
        for (int i = 16; i < 24; i++) {
            r->cfg.group = r->cfg.group << 8 | buf[i];
        }
    }
    return 1;
}

/* After our part: the hub must end the connection. */
static void wait_closed(struct route_rogue *r, SSL *ssl)
{
    char buf[256];
    int n = SSL_read(ssl, buf, sizeof buf);

    if (n <= 0) {
        int e = SSL_get_error(ssl, n);
        r->hub_closed = e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SSL ||
                        e == SSL_ERROR_SYSCALL;
        if (!r->hub_closed) {
            snprintf(r->detail, sizeof r->detail, "rogue: read ended with %d",
                     e);
        }
    } else {
        snprintf(r->detail, sizeof r->detail, "rogue: hub sent %d bytes", n);
    }
}

static void serve(struct route_rogue *r, int fd)
{
    SSL_CTX *ctx = rogue_ctx(r, !r->dialing);
    SSL *ssl;
    int rv;

    if (ctx == NULL) {
        return;
    }
    ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    rv = r->dialing ? SSL_connect(ssl) : SSL_accept(ssl);
    if (rv != 1) {
        r->hub_closed = 1; /* the hub aborted the handshake */
        snprintf(r->detail, sizeof r->detail, "rogue: handshake failed");
        goto out;
    }
    r->tls_ok = 1;
    if (r->dialing) {
        if (send_hello(r, ssl, RT_ROLE_DIALER) != 0) {
            r->hub_closed = 1;
            goto out;
        }
        r->got_hello = read_hello(r, ssl);
        if (!r->got_hello) {
            r->hub_closed = 1;
        }
    } else {
        r->got_hello = read_hello(r, ssl);
        if (!r->got_hello) {
            r->hub_closed = 1;
            goto out;
        }
        if (send_hello(r, ssl, RT_ROLE_ACCEPTOR) != 0) {
            r->hub_closed = 1;
            goto out;
        }
        wait_closed(r, ssl);
    }
out:
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    ERR_clear_error();
}

static void *rogue_main(void *arg)
{
    struct route_rogue *r = arg;
    int fd = -1;

    if (r->dialing) {
        struct sockaddr_in sin;
        memset(&sin, 0, sizeof sin);
        sin.sin_family = AF_INET;
        sin.sin_port = htons((uint16_t)r->cfg.port);
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
            snprintf(r->detail, sizeof r->detail, "rogue: connect: %s",
                     strerror(errno));
            goto out;
        }
    } else {
        struct pollfd p = { r->listen_fd, POLLIN, 0 };
        if (poll(&p, 1, ROGUE_IO_TIMEOUT_S * 1000) != 1) {
            snprintf(r->detail, sizeof r->detail, "rogue: nobody dialed");
            goto out;
        }
        fd = accept(r->listen_fd, NULL, NULL);
        if (fd < 0) {
            goto out;
        }
    }
    set_timeouts(fd);
    serve(r, fd);
out:
    if (fd >= 0) {
        close(fd);
    }
    if (r->listen_fd >= 0) {
        close(r->listen_fd);
        r->listen_fd = -1;
    }
    atomic_store(&r->done, 1);
    return NULL;
}

static int start(struct route_rogue *r)
{
    if (pthread_create(&r->thread, NULL, rogue_main, r) != 0) {
        return -1;
    }
    return 0;
}

int route_rogue_dial(struct route_rogue *r, const struct route_rogue_cfg *cfg)
{
    memset(r, 0, sizeof *r);
    r->cfg = *cfg;
    r->listen_fd = -1;
    r->dialing = 1;
    return start(r);
}

int route_rogue_accept(struct route_rogue *r,
                       const struct route_rogue_cfg *cfg)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof sin;

    memset(r, 0, sizeof *r);
    r->cfg = *cfg;
    r->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (r->listen_fd < 0) {
        return -1;
    }
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(r->listen_fd, (struct sockaddr *)&sin, sizeof sin) != 0 ||
        listen(r->listen_fd, 4) != 0 ||
        getsockname(r->listen_fd, (struct sockaddr *)&sin, &len) != 0) {
        close(r->listen_fd);
        return -1;
    }
    r->port = ntohs(sin.sin_port);
    return start(r);
}

void route_rogue_join(struct route_rogue *r)
{
    pthread_join(r->thread, NULL);
}
