# Integration tests that start real membershipd processes on loopback.
find_package(Python3 REQUIRED COMPONENTS Interpreter)
foreach(t single cluster)
  add_test(NAME integration_${t}
    COMMAND ${Python3_EXECUTABLE} ${CMAKE_SOURCE_DIR}/tests/integration/test_${t}.py)
  set_tests_properties(integration_${t} PROPERTIES
    ENVIRONMENT "MEMBERSHIPD=$<TARGET_FILE:membershipd>;UNIBUSCTL=$<TARGET_FILE:unibusctl>"
    TIMEOUT 600)
endforeach()
