# Benchmarks: bench/bench_*.c, each linking the library and its anchor (OpenSSL for gm).
file(GLOB DBAO_BENCHES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/bench/bench_*.c)
foreach(src ${DBAO_BENCHES})
  get_filename_component(name ${src} NAME_WE)
  add_executable(${name} ${src})
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/src/gm ${CMAKE_SOURCE_DIR}/src/mask)
  target_link_libraries(${name} PRIVATE dengbao m)
endforeach()
