# Integration tests that start real membershipd processes on loopback.
# Debian's interpreter: the tests use Debian's python3-cryptography.
find_program(UB_PYTHON python3 PATHS /usr/bin NO_DEFAULT_PATH)
if(NOT UB_PYTHON)
  find_program(UB_PYTHON python3 REQUIRED)
endif()
foreach(t single cluster ctl signing bus bus_cluster migrate)
  add_test(NAME integration_${t}
    COMMAND ${UB_PYTHON} ${CMAKE_SOURCE_DIR}/tests/integration/test_${t}.py)
  set_tests_properties(integration_${t} PROPERTIES
    ENVIRONMENT "MEMBERSHIPD=$<TARGET_FILE:membershipd>;UNIBUSCTL=$<TARGET_FILE:unibusctl>"
    TIMEOUT 600)
endforeach()
