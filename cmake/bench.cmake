# Benchmarks: bench/bench_*.c, each linking the library and its anchor (OpenSSL for gm).
file(GLOB DBAO_BENCHES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/bench/bench_*.c)
foreach(src ${DBAO_BENCHES})
  get_filename_component(name ${src} NAME_WE)
  add_executable(${name} ${src})
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/src/gm ${CMAKE_SOURCE_DIR}/src/mask
                                             ${CMAKE_SOURCE_DIR}/src/ring
                                             ${CMAKE_SOURCE_DIR}/src/clearing)
  target_link_libraries(${name} PRIVATE dengbao m)
endforeach()

# The detector bench's anchor is a PCRE2 JIT "regex DLP" scanner (libpcre2-dev, scripts/deps.sh):
# linked into bench_mask_detect only; without PCRE2 that one bench is left out of `all`.
if(TARGET bench_mask_detect)
  pkg_check_modules(PCRE2 IMPORTED_TARGET libpcre2-8)
  if(PCRE2_FOUND)
    target_link_libraries(bench_mask_detect PRIVATE PkgConfig::PCRE2)
  else()
    message(WARNING "libpcre2-8 not found: bench_mask_detect (and its regex anchor) not built")
    set_target_properties(bench_mask_detect PROPERTIES EXCLUDE_FROM_ALL ON)
  endif()
endif()

# The ring bench's anchor is Concurrency Kit's ck_ring (libck-dev, scripts/deps.sh), header-only
# for the ring itself; linked into bench_ring only.
if(TARGET bench_ring)
  find_path(CK_INCLUDE ck_ring.h)
  find_library(CK_LIB ck)
  if(CK_INCLUDE AND CK_LIB)
    target_include_directories(bench_ring PRIVATE ${CK_INCLUDE})
    target_link_libraries(bench_ring PRIVATE ${CK_LIB})
  else()
    message(WARNING "libck not found: bench_ring (and its ck_ring anchor) not built")
    set_target_properties(bench_ring PROPERTIES EXCLUDE_FROM_ALL ON)
  endif()
endif()

# Helper programs of the benchmark scripts (not benchmarks, so not named bench_*: bench.sh runs
# every bench_* binary): the zero-trust gateway
# bench's pre-signer of request-mode requests.
add_executable(gwzt_gen_signed ${CMAKE_SOURCE_DIR}/bench/gateway_zt/gen_signed.c)
target_link_libraries(gwzt_gen_signed PRIVATE dengbao)
# The clearing bench's open-loop load generator (epoll; bench/clearing/run.sh).
add_executable(clearing_loadgen ${CMAKE_SOURCE_DIR}/bench/clearing/loadgen.c)
target_link_libraries(clearing_loadgen PRIVATE dengbao)
# The saga bench's load generator (libcurl multi; bench/saga/run.sh).
add_executable(saga_load ${CMAKE_SOURCE_DIR}/bench/saga/load.c)
target_link_libraries(saga_load PRIVATE dengbao)
