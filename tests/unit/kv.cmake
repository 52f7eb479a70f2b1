# Unit tests of the kv module (src/kv).
add_executable(test_kv_store ${CMAKE_CURRENT_LIST_DIR}/test_kv_store.c)
# The store test also crafts raw protobuf entries and foreign sqlite images.
target_link_libraries(test_kv_store PRIVATE ub_kv ub_proto PkgConfig::CMOCKA
  PkgConfig::SQLITE PkgConfig::SSL)
add_test(NAME kv_store COMMAND test_kv_store)

add_executable(test_kv_fixture ${CMAKE_CURRENT_LIST_DIR}/test_kv_fixture.c)
target_link_libraries(test_kv_fixture PRIVATE ub_kv PkgConfig::CMOCKA
  PkgConfig::RAFT PkgConfig::UV)
add_test(NAME kv_fixture COMMAND test_kv_fixture)

set_tests_properties(kv_store kv_fixture PROPERTIES TIMEOUT 120)
