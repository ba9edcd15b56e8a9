# libFuzzer targets: every tests/fuzz/fuzz_*.c, built with clang's -fsanitize=fuzzer plus ASan
# and UBSan against an instrumented copy of the library.
if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "fuzz targets need clang (-DCMAKE_C_COMPILER=clang)")
endif()
add_library(dengbao_fuzz STATIC ${DBAO_SOURCES})
target_include_directories(dengbao_fuzz PUBLIC ${CMAKE_SOURCE_DIR}/include)
target_compile_options(dengbao_fuzz PRIVATE -fsanitize=fuzzer-no-link,address,undefined)
target_link_libraries(dengbao_fuzz PUBLIC PkgConfig::OPENSSL PkgConfig::LIBSSL PkgConfig::JANSSON
                                          PkgConfig::LIBUV PkgConfig::LIBCURL PkgConfig::LIBNATS PkgConfig::LIBYAML
                                          PkgConfig::LIBPQ PkgConfig::SQLITE3 ${PG_QUERY_LIB}
                                          dbao_llhttp Threads::Threads)

file(GLOB DBAO_FUZZ_TARGETS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/fuzz/fuzz_*.c)
foreach(src ${DBAO_FUZZ_TARGETS})
  get_filename_component(name ${src} NAME_WE)
  add_executable(${name} ${src})
  # Each component has its own private internal.h: give a target only its component's folder.
  if(name MATCHES "^fuzz_audit_")
    target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/src/audit)
  elseif(name MATCHES "^fuzz_net_")
    target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/src/net)
  elseif(name MATCHES "^fuzz_mask_")
    target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/src/mask ${PG_QUERY_INCLUDE})
  elseif(name MATCHES "^fuzz_zt_")
    target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/src/zt)
  elseif(name MATCHES "^fuzz_clearing_")
    target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/src/clearing)
  elseif(name MATCHES "^fuzz_saga_")
    target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/src/saga)
  elseif(name MATCHES "^fuzz_gw_")
    target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/src/gateway)
  else()
    target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/src/gm)
  endif()
  # The targets check their invariants with assert(): keep it on in optimised builds.
  target_compile_options(${name} PRIVATE -UNDEBUG -fsanitize=fuzzer,address,undefined)
  target_link_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(${name} PRIVATE dengbao_fuzz)
endforeach()
