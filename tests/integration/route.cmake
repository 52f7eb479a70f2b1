# Route hub integration test: mutual TLS, hello checks, relay, dial
# cancel/timeout, and three libraft nodes per group over rt_raft_transport.
add_executable(test_route
  ${CMAKE_SOURCE_DIR}/tests/integration/test_route.c
  ${CMAKE_SOURCE_DIR}/tests/lib/route_certs.c
  ${CMAKE_SOURCE_DIR}/tests/lib/route_rogue.c)
target_include_directories(test_route PRIVATE ${CMAKE_SOURCE_DIR}/tests/lib)
target_compile_definitions(test_route PRIVATE
  UB_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
find_package(Threads REQUIRED)
target_link_libraries(test_route PRIVATE ub_route PkgConfig::CMOCKA
  Threads::Threads)
add_test(NAME route COMMAND test_route)
set_tests_properties(route PROPERTIES TIMEOUT 120 LABELS integration)
