#include "null_transport.h"

#include <string.h>

static int null_init(struct raft_uv_transport *t, raft_id id,
                     const char *address)
{
    (void)t;
    (void)id;
    (void)address;
    return 0;
}

static int null_listen(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
    (void)t;
    (void)cb;
    return 0;
}

static int null_connect(struct raft_uv_transport *t,
                        struct raft_uv_connect *req, raft_id id,
                        const char *address, raft_uv_connect_cb cb)
{
    (void)t;
    (void)req;
    (void)id;
    (void)address;
    (void)cb;
    /* A sole voter has no one to talk to; the backend retries later. */
    return RAFT_NOCONNECTION;
}

static void null_close(struct raft_uv_transport *t,
                       raft_uv_transport_close_cb cb)
{
    if (cb) {
        cb(t);
    }
}

int rg_null_transport_init(struct raft_uv_transport *t)
{
    memset(t, 0, sizeof *t);
    t->version = 1;
    t->init = null_init;
    t->listen = null_listen;
    t->connect = null_connect;
    t->close = null_close;
    return 0;
}

void rg_null_transport_close(struct raft_uv_transport *t)
{
    (void)t;
}
