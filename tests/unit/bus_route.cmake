# Unit tests of the bus routes: the frame codec (src/bus/route_codec.h), and
# src/bus/routes.c itself over three in-process route hubs with a fake
# bus_deliver_remote (so it builds without the bus server).
add_executable(test_bus_route_codec
  ${CMAKE_CURRENT_LIST_DIR}/test_bus_route_codec.c)
target_link_libraries(test_bus_route_codec PRIVATE ub_bus PkgConfig::CMOCKA)
add_test(NAME bus_route_codec COMMAND test_bus_route_codec)

add_executable(test_bus_routes
  ${CMAKE_CURRENT_LIST_DIR}/test_bus_routes.c
  ${CMAKE_SOURCE_DIR}/src/bus/routes.c
  ${CMAKE_SOURCE_DIR}/tests/lib/route_certs.c)
target_include_directories(test_bus_routes PRIVATE ${CMAKE_SOURCE_DIR}/tests/lib)
target_compile_definitions(test_bus_routes PRIVATE
  UB_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
target_link_libraries(test_bus_routes PRIVATE ub_bus ub_route ub_lib
  PkgConfig::CMOCKA)
add_test(NAME bus_routes COMMAND test_bus_routes)

set_tests_properties(bus_route_codec bus_routes PROPERTIES TIMEOUT 120)
