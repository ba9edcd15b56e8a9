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
                                               ${CMAKE_SOURCE_DIR}/src/${comp})
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
