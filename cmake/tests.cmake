# Unit tests: every tests/unit/<component>/test_*.c is one cmocka binary and one ctest test.
# Integration tests: every tests/integration/*.sh gets the path of the dengbao binary.
pkg_check_modules(CMOCKA REQUIRED IMPORTED_TARGET cmocka)

file(GLOB DBAO_UNIT_TESTS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/unit/*/test_*.c)
foreach(src ${DBAO_UNIT_TESTS})
  get_filename_component(name ${src} NAME_WE)
  get_filename_component(dir ${src} DIRECTORY)
  get_filename_component(comp ${dir} NAME)
  set(target unit_${comp}_${name})
  add_executable(${target} ${src})
  target_include_directories(${target} PRIVATE ${CMAKE_SOURCE_DIR}/tests/unit
                                               ${CMAKE_SOURCE_DIR}/src/${comp} ${PG_QUERY_INCLUDE})
  target_link_libraries(${target} PRIVATE dengbao PkgConfig::CMOCKA)
  add_test(NAME ${comp}/${name} COMMAND ${target})
  set_tests_properties(${comp}/${name} PROPERTIES TIMEOUT 300 LABELS unit)
endforeach()

file(GLOB DBAO_INTEGRATION_TESTS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/integration/*.sh)
foreach(script ${DBAO_INTEGRATION_TESTS})
  get_filename_component(name ${script} NAME_WE)
  add_test(NAME integration/${name} COMMAND bash ${script} $<TARGET_FILE:dengbao_cli>)
  set_tests_properties(integration/${name} PROPERTIES TIMEOUT 600 LABELS integration)
endforeach()
# The zero-trust gateway's suites (issue 6; each finishes in under 3 minutes): the attack suite,
# and the etcd one, which keeps the gateway under wrk load while it times policy changes
# (visible within 1 s), so it runs alone.
foreach(name gateway_zt gateway_zt_etcd)
  if(TEST integration/${name})
    set_tests_properties(integration/${name} PROPERTIES TIMEOUT 300 LABELS "integration;zt")
  endif()
endforeach()
if(TEST integration/gateway_zt_etcd)
  set_tests_properties(integration/gateway_zt_etcd PROPERTIES RUN_SERIAL TRUE)
endif()

# Constant-time test (ctgrind): the gm sources compiled again with the declassification hooks
# on, run under valgrind memcheck with secrets marked undefined. Not under the sanitizers.
find_program(VALGRIND_EXE valgrind)
if(VALGRIND_EXE AND NOT DBAO_SANITIZE)
  add_executable(ct_gm ${CMAKE_SOURCE_DIR}/tests/ct/ct_gm.c ${DBAO_GM_SOURCES})
  target_compile_definitions(ct_gm PRIVATE DBAO_CTGRIND GM_SM2P_CTGRIND)
  target_include_directories(ct_gm PRIVATE ${CMAKE_SOURCE_DIR}/include ${CMAKE_SOURCE_DIR}/src/gm)
  target_link_libraries(ct_gm PRIVATE PkgConfig::OPENSSL PkgConfig::JANSSON Threads::Threads)
  add_test(NAME ct/gm COMMAND bash ${CMAKE_SOURCE_DIR}/tests/ct/ct_gm.sh ${VALGRIND_EXE}
                                   $<TARGET_FILE:ct_gm>)
  set_tests_properties(ct/gm PROPERTIES TIMEOUT 600 LABELS ct)
  # The SM2 core's own ctgrind test (sign contexts with secret random batches, every path
  # valgrind can run).
  add_executable(ct_sm2p256 ${CMAKE_SOURCE_DIR}/tests/unit/gm/test_sm2p256_ct.c ${DBAO_GM_SOURCES})
  target_compile_definitions(ct_sm2p256 PRIVATE DBAO_CTGRIND GM_SM2P_CTGRIND)
  target_include_directories(ct_sm2p256 PRIVATE ${CMAKE_SOURCE_DIR}/include
                                                ${CMAKE_SOURCE_DIR}/src/gm)
  target_link_libraries(ct_sm2p256 PRIVATE PkgConfig::OPENSSL PkgConfig::JANSSON
                                           PkgConfig::CMOCKA Threads::Threads)
  add_test(NAME ct/sm2p256 COMMAND ${VALGRIND_EXE} --error-exitcode=9 -q
                                   $<TARGET_FILE:ct_sm2p256>)
  set_tests_properties(ct/sm2p256 PROPERTIES TIMEOUT 600 LABELS ct)
endif()

# The gm public-API tests again on every implementation path family, so that each path is
# checked against the standards' vectors and OpenSSL on this machine (paths the CPU lacks fall
# back with a message, and are covered where the CPU has them).
set(DBAO_GM_VARIANTS
  "portable:portable"
  "openssl:sm2=openssl"
  "avx2:sm4=aesni-avx2,ghash=pclmul,sm3-mb=avx2x8,sm3=portable")
foreach(pair ${DBAO_GM_VARIANTS})
  string(REGEX REPLACE ":.*" "" vname "${pair}")
  string(REGEX REPLACE "^[^:]*:" "" variant "${pair}")
  foreach(t test_sm2 test_sm3 test_sm4)
    if(TARGET unit_gm_${t})
      add_test(NAME gm/${t}@${vname} COMMAND unit_gm_${t})
      set_tests_properties(gm/${t}@${vname} PROPERTIES TIMEOUT 300 LABELS unit
                           ENVIRONMENT "DENGBAO_GM_IMPL=${variant}")
    endif()
  endforeach()
  add_test(NAME gm/selftest@${vname} COMMAND dengbao_cli gm selftest)
  set_tests_properties(gm/selftest@${vname} PROPERTIES ENVIRONMENT "DENGBAO_GM_IMPL=${variant}")
endforeach()

# Test tools: small clients the integration scripts run (found next to the dengbao binary).
add_executable(pgclient ${CMAKE_SOURCE_DIR}/tests/tools/pgclient.c)
target_link_libraries(pgclient PRIVATE PkgConfig::LIBPQ)
set_target_properties(pgclient PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR})
# ztcheck: runs the zt token and device-signature verifiers for zt_jwt_interop.sh.
add_executable(ztcheck ${CMAKE_SOURCE_DIR}/tests/tools/ztcheck.c)
target_link_libraries(ztcheck PRIVATE dengbao)
set_target_properties(ztcheck PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR})
