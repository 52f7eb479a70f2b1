# Unit tests of the auth module (src/auth): nkeys and UNIBUS-ED25519.
add_executable(test_nkey ${CMAKE_CURRENT_LIST_DIR}/test_nkey.c)
target_link_libraries(test_nkey PRIVATE ub_auth PkgConfig::CMOCKA)
add_test(NAME nkey COMMAND test_nkey)

add_executable(test_sigv1 ${CMAKE_CURRENT_LIST_DIR}/test_sigv1.c)
target_link_libraries(test_sigv1 PRIVATE ub_auth PkgConfig::CMOCKA
  PkgConfig::SSL)
add_test(NAME sigv1 COMMAND test_sigv1)

set_tests_properties(nkey sigv1 PROPERTIES TIMEOUT 60)
