# Unit tests of the NATS client protocol parser (src/bus/proto.h).
add_executable(test_bus_proto ${CMAKE_CURRENT_LIST_DIR}/test_bus_proto.c)
target_link_libraries(test_bus_proto PRIVATE ub_bus PkgConfig::CMOCKA)
add_test(NAME bus_proto COMMAND test_bus_proto)
set_tests_properties(bus_proto PROPERTIES TIMEOUT 120)
