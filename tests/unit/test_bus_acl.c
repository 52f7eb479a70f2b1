/* Unit tests of the bus ACL (src/bus/acl.h): the subject namespace of
 * DESIGN.md §5 for a member, an admin, and the edges where a wildcard or a
 * prefix could reach another member's or room's subjects. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "bus/acl.h"

static char *rooms[] = {"ops", "r1", "team-a"};

static struct bacl alice(void)
{
    struct bacl a;
    memset(&a, 0, sizeof a);
    strcpy(a.handle, "alice");
    a.handle_len = 5;
    a.rooms = rooms;
    a.n_rooms = 3;
    return a;
}

#define PUB(a, s) bacl_can_publish(&(a), s, strlen(s))
#define SUB(a, s) bacl_can_subscribe(&(a), s, strlen(s))
#define REPLY(a, s) bacl_can_reply_to(&(a), s, strlen(s))

static void test_member_rooms(void **state)
{
    struct bacl a = alice();
    (void)state;
    assert_true(PUB(a, "room.ops.x"));
    assert_true(PUB(a, "room.r1.a.b.c"));
    assert_true(PUB(a, "room.team-a.x"));
    assert_false(PUB(a, "room.r2.x"));
    assert_false(PUB(a, "room.ops"));     /* the room itself is no subject */
    assert_false(PUB(a, "room.ops."));
    assert_false(PUB(a, "room.op.x"));    /* prefix of a room name */
    assert_false(PUB(a, "room.opsx.x"));  /* longer than a room name */
    assert_false(PUB(a, "room.r.x"));
    assert_true(SUB(a, "room.ops.>"));
    assert_true(SUB(a, "room.ops.*"));
    assert_false(SUB(a, "room.*.x"));     /* would span rooms */
    assert_false(SUB(a, "room.>"));
    assert_false(SUB(a, ">"));
    assert_false(SUB(a, "room.r2.>"));
}

static void test_member_own_subjects(void **state)
{
    struct bacl a = alice();
    (void)state;
    assert_true(PUB(a, "member.alice.x"));
    assert_true(SUB(a, "member.alice.>"));
    assert_false(PUB(a, "member.bob.x"));
    assert_false(SUB(a, "member.*.x"));
    assert_false(SUB(a, "member.alicex.>"));
    assert_false(SUB(a, "member.alic.>"));
    assert_true(SUB(a, "_INBOX.alice.*"));
    assert_true(SUB(a, "_INBOX.alice.>"));
    assert_false(SUB(a, "_INBOX.>"));
    assert_false(SUB(a, "_INBOX.*.x"));
    assert_false(SUB(a, "_INBOX.bob.>"));
    assert_false(PUB(a, "_INBOX.alice.x")); /* replies need a grant */
    assert_true(REPLY(a, "_INBOX.alice.abc"));
    assert_true(REPLY(a, "member.alice.inbox"));
    assert_false(REPLY(a, "_INBOX.bob.abc"));
    assert_false(REPLY(a, "room.ops.x"));
    assert_false(PUB(a, "$UB.API.MEMBER.IMPORT"));
    assert_false(PUB(a, "$SYS.REQ.SERVER.PING"));
}

static void test_no_rooms(void **state)
{
    struct bacl a = alice();
    (void)state;
    a.n_rooms = 0;
    a.rooms = NULL;
    assert_false(PUB(a, "room.ops.x"));
    assert_true(PUB(a, "member.alice.x"));
}

static void test_admin(void **state)
{
    struct bacl a = alice();
    (void)state;
    a.all = true;
    assert_true(PUB(a, "anything.at.all"));
    assert_true(SUB(a, ">"));
    assert_true(REPLY(a, "_INBOX.bob.1"));
}

static void test_in_room(void **state)
{
    (void)state;
    assert_true(bacl_in_room("room.ops.>", 10, "ops"));
    assert_true(bacl_in_room("room.ops.x.y", 12, "ops"));
    assert_false(bacl_in_room("room.opsx.>", 11, "ops"));
    assert_false(bacl_in_room("room.*.>", 8, "ops"));
    assert_false(bacl_in_room("member.ops.>", 12, "ops"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_member_rooms),
        cmocka_unit_test(test_member_own_subjects),
        cmocka_unit_test(test_no_rooms),
        cmocka_unit_test(test_admin),
        cmocka_unit_test(test_in_room),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
