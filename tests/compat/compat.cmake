# Client-compatibility suites: real, unmodified NATS clients (nats.c from
# Debian's libnats-dev, nats.js v2 from npm) against the bus of membershipd.
# tests/compat/test_compat.py starts the server and provisions the members;
# `test_compat.py --backend nats-server` runs the same cases against Debian's
# nats-server, which validates the cases themselves.
pkg_check_modules(LIBNATS REQUIRED IMPORTED_TARGET libnats)
find_package(Threads REQUIRED)

add_executable(compat_c ${CMAKE_CURRENT_LIST_DIR}/compat_c.c)
target_link_libraries(compat_c PRIVATE PkgConfig::LIBNATS Threads::Threads)

find_program(UB_PYTHON python3 PATHS /usr/bin NO_DEFAULT_PATH)
if(NOT UB_PYTHON)
  find_program(UB_PYTHON python3 REQUIRED)
endif()

# One entry per client; each also runs the three-node variant (--cluster:
# members on different nodes, talking over bus routes).
foreach(client c js)
  add_test(NAME compat_${client}
    COMMAND ${UB_PYTHON} ${CMAKE_SOURCE_DIR}/tests/compat/test_compat.py
            --backend membershipd --client ${client} --cluster)
  set_tests_properties(compat_${client} PROPERTIES
    ENVIRONMENT "MEMBERSHIPD=$<TARGET_FILE:membershipd>;UNIBUSCTL=$<TARGET_FILE:unibusctl>;COMPAT_C=$<TARGET_FILE:compat_c>"
    TIMEOUT 300)
endforeach()
