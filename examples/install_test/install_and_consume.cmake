# cmake -P script run by the install_consumer ctest:
#   1. cmake --install <build> --prefix <work>/prefix
#   2. configure + build examples/consumer with CMAKE_PREFIX_PATH=<work>/prefix
#   3. run the consumer (it runs one op and checks it)
foreach(var DSA_BUILD_DIR CONSUMER_SOURCE_DIR WORK_DIR CONSUMER_GENERATOR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "install_and_consume.cmake: -D${var}=... is required")
  endif()
endforeach()

function(step name)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message(STATUS "[${name}] ${out}${err}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "install_consumer: step '${name}' failed (exit ${rc})")
  endif()
endfunction()

file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)

step(install ${CMAKE_COMMAND} --install ${DSA_BUILD_DIR} --prefix ${prefix})
if(NOT EXISTS ${prefix}/include/dsa/dsa.hpp)
  message(FATAL_ERROR "install_consumer: ${prefix}/include/dsa/dsa.hpp was not installed")
endif()

set(configure_args -S ${CONSUMER_SOURCE_DIR} -B ${WORK_DIR}/build -G ${CONSUMER_GENERATOR}
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=Release)
if(CONSUMER_CXX)
  list(APPEND configure_args -DCMAKE_CXX_COMPILER=${CONSUMER_CXX})
endif()
if(CONSUMER_CUDA)
  list(APPEND configure_args -DCMAKE_CUDA_COMPILER=${CONSUMER_CUDA})
endif()
step(configure ${CMAKE_COMMAND} ${configure_args})
step(build ${CMAKE_COMMAND} --build ${WORK_DIR}/build)
step(run ${WORK_DIR}/build/dsa_consumer)
