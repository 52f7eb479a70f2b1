# Fuzz targets for the parsers of network input (STYLE.md 2.7):
#   hello         route hello frames (src/route/hello.h)
#   kv_entry      raft entries: kv_cmd_decode + kv_store_apply (src/kv/kv.h)
#   kv_snapshot   InstallSnapshot payloads: kv_store_restore (src/kv/kv.h)
#   route_frames  Forward/Discover protobuf frames of src/raft_glue/meta.c
#   framed        length-prefixed frames over a uv stream (src/lib/framed.h)
#   bus_sublist   subject validation and the subscription index against a
#                 brute-force model (src/bus/sublist.h)
#   bus_proto     the NATS client protocol parser: a stream parsed in chunks
#                 gives what it gives parsed whole (src/bus/proto.h)
#   bus_route     frames of the bus routes between nodes: strict, canonical
#                 decoding (src/bus/route_codec.h; seeds written by hand)
# Each target is tests/fuzz/fuzz_<name>.c (one LLVMFuzzerTestOneInput) with
# seeds in tests/fuzz/corpus/<name>/, written by the fuzz_gen_corpus program
# (tests/fuzz/gen_corpus.c; rerun it only when a format changes:
#   build/tests/fuzz_gen_corpus tests/fuzz/corpus).
#
# Every build: fuzz_<name>_replay links the target with driver.c, and ctest
# entry fuzz_<name> runs the seeds plus UB_FUZZ_REPLAY_RUNS (20000) inputs
# derived from them with a fixed seed: quick, reproducible, and it fails on a
# crash, an invariant violation or (in a -DUB_SANITIZE build) a sanitizer
# report. Reproduce one input: build/tests/fuzz_hello_replay crash-file.
#
# Real fuzzing (clang only; libFuzzer ships in libclang-rt-14-dev):
#   CC=clang cmake -S . -B build-fuzz -DUB_FUZZ=ON && cmake --build build-fuzz
#   build-fuzz/tests/fuzz_hello -max_total_time=60 tests/fuzz/corpus/hello
# (kv_snapshot seeds are 24 KB: add -max_len=65536 if a corpus directory
# other than the seeds is given first). To grow the corpus, give a scratch
# directory first and the seed directory second; new crashes land in
# ./crash-<sha1>. UB_FUZZ instruments ub_lib, ub_kv, ub_route and ub_proto
# with -fsanitize=fuzzer-no-link,address,undefined (so use a dedicated build
# directory, and do not combine it with UB_SANITIZE=thread).

set(UB_FUZZ_TARGETS hello kv_entry kv_snapshot route_frames framed nkey
  sigv1_header ctl_records bus_sublist bus_proto bus_route)
set(UB_FUZZ_DIR ${CMAKE_CURRENT_LIST_DIR})
set(UB_FUZZ_REPLAY_RUNS 20000 CACHE STRING
  "Derived inputs per fuzz_<name> ctest entry")
option(UB_FUZZ "Build libFuzzer binaries fuzz_<name> (clang only)" OFF)

function(ub_fuzz_link target name)
  if(name STREQUAL "hello")
    target_link_libraries(${target} PRIVATE ub_route PkgConfig::SSL)
  elseif(name STREQUAL "kv_entry")
    target_link_libraries(${target} PRIVATE ub_kv)
  elseif(name STREQUAL "kv_snapshot")
    target_link_libraries(${target} PRIVATE ub_kv ub_proto PkgConfig::SSL)
  elseif(name STREQUAL "route_frames")
    target_link_libraries(${target} PRIVATE ub_kv ub_proto)
  elseif(name STREQUAL "framed")
    target_link_libraries(${target} PRIVATE ub_lib PkgConfig::UV)
  elseif(name STREQUAL "nkey" OR name STREQUAL "sigv1_header")
    target_link_libraries(${target} PRIVATE ub_auth)
  elseif(name STREQUAL "ctl_records")
    target_link_libraries(${target} PRIVATE ub_ctl ub_kv)
  elseif(name STREQUAL "bus_sublist")
    target_link_libraries(${target} PRIVATE ub_bus)
  elseif(name STREQUAL "bus_proto")
    target_link_libraries(${target} PRIVATE ub_bus)
  elseif(name STREQUAL "bus_route")
    target_link_libraries(${target} PRIVATE ub_bus)
  endif()
endfunction()

foreach(name ${UB_FUZZ_TARGETS})
  add_executable(fuzz_${name}_replay
    ${UB_FUZZ_DIR}/fuzz_${name}.c ${UB_FUZZ_DIR}/driver.c)
  ub_fuzz_link(fuzz_${name}_replay ${name})
  add_test(NAME fuzz_${name}
    COMMAND fuzz_${name}_replay ${UB_FUZZ_DIR}/corpus/${name}
            ${UB_FUZZ_REPLAY_RUNS})
  set_tests_properties(fuzz_${name} PROPERTIES TIMEOUT 120 LABELS fuzz
    ENVIRONMENT
    "ASAN_OPTIONS=detect_leaks=1:abort_on_error=1;UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")
endforeach()

add_executable(fuzz_gen_corpus ${UB_FUZZ_DIR}/gen_corpus.c)
target_link_libraries(fuzz_gen_corpus PRIVATE ub_route ub_kv ub_proto)

if(UB_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(WARNING "UB_FUZZ needs clang (CC=clang); libFuzzer targets skipped")
  else()
    set(UB_FUZZ_SAN -fsanitize=address,undefined -fno-sanitize-recover=all
      -fno-omit-frame-pointer)
    # Coverage feedback and ASan inside the code under test, not only in
    # the harness; consumers of these libraries link the sanitizer runtimes.
    foreach(lib ub_lib ub_kv ub_route ub_proto ub_auth ub_ctl ub_bus)
      target_compile_options(${lib} PRIVATE -fsanitize=fuzzer-no-link
        ${UB_FUZZ_SAN})
      target_link_options(${lib} INTERFACE -fsanitize=address,undefined)
    endforeach()
    foreach(name ${UB_FUZZ_TARGETS})
      add_executable(fuzz_${name} ${UB_FUZZ_DIR}/fuzz_${name}.c)
      target_compile_options(fuzz_${name} PRIVATE -fsanitize=fuzzer
        ${UB_FUZZ_SAN})
      target_link_options(fuzz_${name} PRIVATE -fsanitize=fuzzer
        -fsanitize=address,undefined)
      ub_fuzz_link(fuzz_${name} ${name})
    endforeach()
  endif()
endif()
