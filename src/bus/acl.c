/* Subject permissions (acl.h). The namespace is fixed, so a check is a
 * prefix comparison and a binary search over the member's rooms instead of
 * a general pattern list: it runs on every publish. */
#include "bus/acl.h"

#include <string.h>

/* Length of the first token of s (up to '.' or the end). */
static size_t token_len(const char *s, size_t len)
{
    const char *dot = memchr(s, '.', len);
    return dot ? (size_t)(dot - s) : len;
}

/* True when s is "<prefix>.<name>.<at least one more token>" with a literal
 * <name> equal to name (name_len bytes). */
static bool under(const char *s, size_t len, const char *prefix,
                  const char *name, size_t name_len)
{
    size_t pl = strlen(prefix);
    if (len < pl + 1 + name_len + 2 || memcmp(s, prefix, pl) != 0 ||
        s[pl] != '.' || memcmp(s + pl + 1, name, name_len) != 0 ||
        s[pl + 1 + name_len] != '.') {
        return false;
    }
    return true;
}

static bool in_rooms(const struct bacl *a, const char *room, size_t len)
{
    size_t lo = 0, hi = a->n_rooms;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *r = a->rooms[mid];
        int c = strncmp(r, room, len);
        if (c == 0) {
            c = r[len] == '\0' ? 0 : 1;
        }
        if (c == 0) {
            return true;
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return false;
}

/* room.<room>.<rest>: the room token must be literal (a wildcard there
 * would span rooms) and the rest non-empty. */
static bool room_subject(const struct bacl *a, const char *s, size_t len)
{
    size_t rl;
    if (len < 7 || memcmp(s, "room.", 5) != 0) {
        return false;
    }
    rl = token_len(s + 5, len - 5);
    if (rl == 0 || 5 + rl + 2 > len || s[5 + rl] != '.' ||
        (rl == 1 && (s[5] == '*' || s[5] == '>'))) {
        return false;
    }
    return in_rooms(a, s + 5, rl);
}

bool bacl_can_publish(const struct bacl *a, const char *subj, size_t len)
{
    return a->all || room_subject(a, subj, len) ||
           under(subj, len, "member", a->handle, a->handle_len);
}

bool bacl_can_subscribe(const struct bacl *a, const char *pattern, size_t len)
{
    return a->all || room_subject(a, pattern, len) ||
           under(pattern, len, "member", a->handle, a->handle_len) ||
           under(pattern, len, "_INBOX", a->handle, a->handle_len);
}

bool bacl_can_reply_to(const struct bacl *a, const char *reply, size_t len)
{
    return a->all || under(reply, len, "_INBOX", a->handle, a->handle_len) ||
           under(reply, len, "member", a->handle, a->handle_len);
}

bool bacl_in_room(const char *pattern, size_t len, const char *room)
{
    return under(pattern, len, "room", room, strlen(room));
}
