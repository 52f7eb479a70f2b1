# Unit tests of the bus ACL (src/bus/acl.h).
add_executable(test_bus_acl ${CMAKE_CURRENT_LIST_DIR}/test_bus_acl.c)
target_link_libraries(test_bus_acl PRIVATE ub_bus_server PkgConfig::CMOCKA)
add_test(NAME bus_acl COMMAND test_bus_acl)
set_tests_properties(bus_acl PROPERTIES TIMEOUT 60)
