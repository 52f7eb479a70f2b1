/* Idempotent member import (ctl.h: ctl_import_member), the server side of
 * `membershipd migrate-to-kv`. Unlike POST /v1/members it treats an
 * identical existing member as success and never overwrites: a second run
 * of a migration changes nothing. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth/nkey.h"
#include "internal.h"

#define IMPORT_ATTEMPTS 3

struct import {
    struct ctl *c;
    struct ctl_member m;
    unsigned attempts;
    ctl_import_cb cb;
    void *arg;
};

static void finish(struct import *im, int result, const char *msg)
{
    im->cb(im->arg, result, msg);
    free(im);
}

static void import_read(void *arg, const struct meta_result *res);

static void import_written(void *arg, const struct meta_result *res)
{
    struct import *im = arg;
    if (res->err != META_OK) {
        finish(im, CTL_IMPORT_ERROR, meta_err_code(res->err));
        return;
    }
    if (res->kv.code == KV_OK && !res->kv.txn_succeeded) {
        /* A concurrent writer got there first: look again. */
        if (++im->attempts < IMPORT_ATTEMPTS &&
            meta_read(im->c->meta, import_read, im) == 0) {
            return;
        }
        finish(im, CTL_IMPORT_ERROR, "too many concurrent changes; retry");
        return;
    }
    if (res->kv.code != KV_OK) {
        finish(im, CTL_IMPORT_ERROR, kv_code_name(res->kv.code));
        return;
    }
    finish(im, CTL_IMPORT_CREATED, "created");
}

static void import_read(void *arg, const struct meta_result *res)
{
    struct import *im = arg;
    struct kv_store *kv;
    struct ctl_member old;
    struct kv_entry e;
    struct ctl_txn *t;
    struct kv_cmd cmd;
    char *rec;
    int rv;
    bool taken;

    if (res->err != META_OK) {
        finish(im, CTL_IMPORT_ERROR, meta_err_code(res->err));
        return;
    }
    kv = meta_kv(im->c->meta);
    rv = ctl_member_load(kv, im->m.handle, &old);
    if (rv == 0) {
        if (strcmp(old.sign_pub, im->m.sign_pub) == 0 &&
            old.admin == im->m.admin) {
            finish(im, CTL_IMPORT_UNCHANGED, "an identical member exists");
        } else {
            finish(im, CTL_IMPORT_CONFLICT,
                   strcmp(old.sign_pub, im->m.sign_pub) != 0
                       ? "the handle exists with another sign_pub"
                       : "the handle exists with another role");
        }
        return;
    }
    if (rv < 0) {
        finish(im, CTL_IMPORT_ERROR, "the existing record is corrupt");
        return;
    }
    memset(&e, 0, sizeof e);
    taken = kv_store_get(kv, CTL_B_NKEYS, im->m.sign_pub, &e) == KV_OK;
    kv_entry_clear(&e);
    if (taken) {
        finish(im, CTL_IMPORT_CONFLICT, "another member has this sign_pub");
        return;
    }
    im->m.created = (int64_t)time(NULL);
    rec = ctl_member_dump(&im->m);
    t = ctl_txn_new();
    if (rec == NULL || t == NULL ||
        ctl_txn_compare(t, CTL_B_MEMBERS, im->m.handle, 0) != 0 ||
        ctl_txn_compare(t, CTL_B_NKEYS, im->m.sign_pub, 0) != 0 ||
        ctl_txn_put(t, CTL_B_MEMBERS, im->m.handle, rec, strlen(rec)) != 0 ||
        ctl_txn_put(t, CTL_B_NKEYS, im->m.sign_pub, im->m.handle,
                    strlen(im->m.handle)) != 0) {
        free(rec);
        ctl_txn_free(t);
        finish(im, CTL_IMPORT_ERROR, "out of memory");
        return;
    }
    free(rec);
    ctl_txn_fill(t, &cmd);
    rv = meta_write(im->c->meta, &cmd, import_written, im);
    ctl_txn_free(t);
    if (rv != 0) {
        finish(im, CTL_IMPORT_ERROR, meta_err_code(rv));
    }
}

int ctl_import_member(struct ctl *c, const char *handle, bool admin,
                      const char *sign_pub, ctl_import_cb cb, void *arg)
{
    uint8_t key[NKEY_KEY_LEN];
    struct import *im;
    int rv;

    if (!ctl_name_valid(handle) || sign_pub == NULL ||
        nkey_user_pub_decode(sign_pub, key) != NKEY_OK) {
        return -1;
    }
    im = calloc(1, sizeof *im);
    if (im == NULL) {
        return -2;
    }
    im->c = c;
    im->cb = cb;
    im->arg = arg;
    snprintf(im->m.handle, sizeof im->m.handle, "%s", handle);
    snprintf(im->m.sign_pub, sizeof im->m.sign_pub, "%s", sign_pub);
    im->m.admin = admin;
    rv = meta_read(c->meta, import_read, im);
    if (rv != 0) {
        free(im);
        return -2;
    }
    return 0;
}
