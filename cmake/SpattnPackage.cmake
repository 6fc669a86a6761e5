# The installed CMake package: `cmake --install` puts c_api.h under include/spattn/ and a package
# config under <libdir>/cmake/spattn/, so a C or C++ project finds the libraries with
#   find_package(spattn REQUIRED)       # CMAKE_PREFIX_PATH=<install prefix> (or the Python
#                                       # package's folder for a pip install)
#   target_link_libraries(app PRIVATE spattn::kernels)
# The config locates everything relative to itself, so the install tree can move. It declares
# imported targets for the files the install rules of kernels/, plugins/ and trt_plugins/ write,
# which keeps those rules as they are. A pkg-config file (spattn.pc) is installed beside it.
include(CMakePackageConfigHelpers)

set(SPATTN_PACKAGE_DIR ${SPATTN_LIB_DESTINATION}/cmake/spattn)
if(SPATTN_PYTHON_PACKAGE)
  set(SPATTN_INCLUDE_DESTINATION spattn/include)
else()
  set(SPATTN_INCLUDE_DESTINATION include)
endif()
set(SPATTN_PACKAGE_HAS_ORT ${SPATTN_BUILD_ORT})
set(SPATTN_PACKAGE_HAS_TRT OFF)
if(TARGET spattn_trt)
  set(SPATTN_PACKAGE_HAS_TRT ON)
endif()
set(SPATTN_PACKAGE_HAS_CUDA ${SPATTN_KERNELS_HAVE_CUDA})

# c_api.h declares its struct from the attribute table (attributes.h, an X-macro): both install.
install(FILES ${PROJECT_SOURCE_DIR}/kernels/include/spattn/c_api.h
  ${PROJECT_SOURCE_DIR}/kernels/include/spattn/attributes.h
  DESTINATION ${SPATTN_INCLUDE_DESTINATION}/spattn)

configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/spattnConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/spattnConfig.cmake
  INSTALL_DESTINATION ${SPATTN_PACKAGE_DIR}
  PATH_VARS SPATTN_LIB_DESTINATION SPATTN_INCLUDE_DESTINATION)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/spattnConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
file(RELATIVE_PATH SPATTN_PC_INCLUDE_FROM_LIB
  /prefix/${SPATTN_LIB_DESTINATION} /prefix/${SPATTN_INCLUDE_DESTINATION})
configure_file(${CMAKE_CURRENT_LIST_DIR}/spattn.pc.in ${CMAKE_CURRENT_BINARY_DIR}/spattn.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/spattnConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/spattnConfigVersion.cmake DESTINATION ${SPATTN_PACKAGE_DIR})
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/spattn.pc DESTINATION ${SPATTN_LIB_DESTINATION}/pkgconfig)
