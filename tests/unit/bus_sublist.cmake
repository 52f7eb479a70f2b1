# Unit tests of the bus subscription index (src/bus/sublist.h).
add_executable(test_bus_sublist ${CMAKE_CURRENT_LIST_DIR}/test_bus_sublist.c)
target_link_libraries(test_bus_sublist PRIVATE ub_bus PkgConfig::CMOCKA)
add_test(NAME bus_sublist COMMAND test_bus_sublist)
set_tests_properties(bus_sublist PROPERTIES TIMEOUT 120)
