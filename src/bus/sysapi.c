/* The node's own services on the bus, under $UB.API. (internal.h). Today:
 *   $UB.API.MEMBER.IMPORT  {"handle","role","sign_pub"}  (admins)
 *     -> {"result":"created"|"unchanged"|"conflict","message"}
 *        or {"error":{"code","message"}}
 * the server side of `membershipd migrate-to-kv`. Replies go to the
 * request's reply subject once raft has decided. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "bus/internal.h"
#include "ctl/ctl.h"
#include "lib/log.h"

struct bsys_call {
    struct bsys *s; /* NULL once the bus closed: the answer is dropped */
    struct bsys_call *prev, *next;
    char *reply;
    size_t reply_len;
};

struct bsys {
    struct bus *b;
    struct ctl *ctl;
    struct bsys_call *calls;
};

struct bsys *bsys_new(struct bus *b, struct ctl *ctl)
{
    struct bsys *s = calloc(1, sizeof *s);
    if (s != NULL) {
        s->b = b;
        s->ctl = ctl;
    }
    return s;
}

void bsys_close(struct bsys *s)
{
    if (s == NULL) {
        return;
    }
    for (struct bsys_call *k = s->calls; k; k = k->next) {
        k->s = NULL;
    }
    free(s);
}

static void answer(struct bus *b, const char *reply, size_t reply_len,
                   json_t *j)
{
    char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (body != NULL) {
        bus_publish_internal(b, reply, reply_len, body, strlen(body));
        free(body);
    }
}

static void answer_error(struct bus *b, const char *reply, size_t reply_len,
                         const char *code, const char *msg)
{
    answer(b, reply, reply_len,
           json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg));
}

static void imported(void *arg, int result, const char *message)
{
    static const char *const names[] = {"created", "unchanged", "conflict"};
    struct bsys_call *k = arg;
    struct bsys *s = k->s;
    if (s != NULL) {
        if (result >= CTL_IMPORT_CREATED && result <= CTL_IMPORT_CONFLICT) {
            answer(s->b, k->reply, k->reply_len,
                   json_pack("{s:s,s:s}", "result", names[result], "message",
                             message));
        } else {
            answer_error(s->b, k->reply, k->reply_len, "unavailable", message);
        }
        if (k->prev) {
            k->prev->next = k->next;
        } else {
            s->calls = k->next;
        }
        if (k->next) {
            k->next->prev = k->prev;
        }
    }
    free(k->reply);
    free(k);
}

static void member_import(struct bsys *s, const struct bmsg *m)
{
    json_error_t jerr;
    json_t *j;
    const char *handle = NULL, *role = NULL, *sp = NULL;
    struct bsys_call *k;
    int rv;

    j = json_loadb((const char *)m->data + m->hdr_len,
                   m->total_len - m->hdr_len, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL ||
        json_unpack(j, "{s:s,s:s,s:s!}", "handle", &handle, "role", &role,
                    "sign_pub", &sp) != 0 ||
        (strcmp(role, "admin") != 0 && strcmp(role, "member") != 0)) {
        json_decref(j);
        answer_error(s->b, m->reply, m->reply_len, "bad_request",
                     "expected {\"handle\", \"role\": \"admin\"|\"member\", "
                     "\"sign_pub\"} and nothing else");
        return;
    }
    k = calloc(1, sizeof *k);
    if (k == NULL || (k->reply = malloc(m->reply_len)) == NULL) {
        free(k);
        json_decref(j);
        answer_error(s->b, m->reply, m->reply_len, "internal",
                     "out of memory");
        return;
    }
    memcpy(k->reply, m->reply, m->reply_len);
    k->reply_len = m->reply_len;
    k->s = s;
    rv = ctl_import_member(s->ctl, handle, strcmp(role, "admin") == 0, sp,
                           imported, k);
    json_decref(j);
    if (rv != 0) {
        answer_error(s->b, m->reply, m->reply_len,
                     rv == -1 ? "bad_request" : "unavailable",
                     rv == -1 ? "invalid handle or sign_pub"
                              : "the node cannot take writes now");
        free(k->reply);
        free(k);
        return;
    }
    k->next = s->calls;
    if (s->calls) {
        s->calls->prev = k;
    }
    s->calls = k;
}

void bsys_request(struct bsys *s, const char *handle, bool admin,
                  const struct bmsg *m)
{
    if (m->reply == NULL) {
        return; /* nobody to answer */
    }
    if (!admin) {
        ub_info("bus", "%s asked %.*s without being an admin",
                handle && *handle ? handle : "an anonymous client",
                (int)m->subject_len, m->subject);
        answer_error(s->b, m->reply, m->reply_len, "forbidden",
                     "the $UB.API services are for admins");
        return;
    }
    if (s->ctl != NULL && m->subject_len == strlen("$UB.API.MEMBER.IMPORT") &&
        memcmp(m->subject, "$UB.API.MEMBER.IMPORT", m->subject_len) == 0) {
        member_import(s, m);
        return;
    }
    answer_error(s->b, m->reply, m->reply_len, "not_found",
                 "no such service");
}
