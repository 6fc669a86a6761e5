# Locates the TensorRT C++ API headers (NvInferRuntime.h, TensorRT >= 10) for the plugin:
#  1. SPATTN_TRT_INCLUDE_DIR if given,
#  2. an installed TensorRT (system include dirs, $TENSORRT_ROOT, $TRT_ROOT),
#  3. else the TensorRT 10.14 API headers (Apache-2.0) inside the PyPI wheel kernel-lens==2.0.1,
#     downloaded into the build tree with pip (the headers are never part of the repository).
# Sets SPATTN_TRT_HEADERS (the include dir) or leaves it empty with a message in
# SPATTN_TRT_HEADERS_WHY.
set(SPATTN_TRT_HEADERS "")
set(SPATTN_TRT_HEADERS_WHY "")

# The major version of the headers in `dir` (0 when unknown).
function(_spattn_trt_major dir out)
  set(_major 0)
  if(EXISTS ${dir}/NvInferVersion.h)
    file(STRINGS ${dir}/NvInferVersion.h _lines REGEX "#define (NV_TENSORRT_MAJOR|TRT_MAJOR_ENTERPRISE|TRT_MAJOR_RTX) +[0-9]+")
    foreach(_l IN LISTS _lines)
      if(_l MATCHES "#define [A-Z_]+ +([0-9]+)")
        set(_major ${CMAKE_MATCH_1})
        break()
      endif()
    endforeach()
  endif()
  set(${out} ${_major} PARENT_SCOPE)
endfunction()

if(SPATTN_TRT_INCLUDE_DIR)
  if(EXISTS ${SPATTN_TRT_INCLUDE_DIR}/NvInferRuntime.h)
    set(SPATTN_TRT_HEADERS ${SPATTN_TRT_INCLUDE_DIR})
  else()
    message(FATAL_ERROR "spattn: SPATTN_TRT_INCLUDE_DIR=${SPATTN_TRT_INCLUDE_DIR} has no NvInferRuntime.h")
  endif()
endif()

if(NOT SPATTN_TRT_HEADERS)
  find_path(SPATTN_TRT_INSTALLED_INCLUDE NvInferRuntime.h
    HINTS $ENV{TENSORRT_ROOT}/include $ENV{TRT_ROOT}/include /usr/local/tensorrt/include
          /usr/local/TensorRT/include /usr/include/x86_64-linux-gnu /usr/include/aarch64-linux-gnu)
  if(SPATTN_TRT_INSTALLED_INCLUDE)
    _spattn_trt_major(${SPATTN_TRT_INSTALLED_INCLUDE} _major)
    if(_major GREATER_EQUAL 10)
      set(SPATTN_TRT_HEADERS ${SPATTN_TRT_INSTALLED_INCLUDE})
    else()
      message(STATUS "spattn: ignoring TensorRT headers in ${SPATTN_TRT_INSTALLED_INCLUDE} "
        "(version ${_major}; IPluginV3 needs TensorRT >= 10)")
    endif()
  endif()
endif()

if(NOT SPATTN_TRT_HEADERS)
  set(_dl ${CMAKE_BINARY_DIR}/_deps/tensorrt-headers)
  set(_inc ${_dl}/root/kernel_lens/include/tensorrt)
  if(NOT EXISTS ${_inc}/NvInferRuntime.h)
    # The system interpreter: pip's isolated build environment may have no pip of its own.
    find_program(SPATTN_PIP_PYTHON NAMES python3 python)
    if(NOT SPATTN_PIP_PYTHON)
      set(SPATTN_TRT_HEADERS_WHY "no python3 to download the headers with")
    else()
      message(STATUS "spattn: fetching the TensorRT 10.14 API headers (PyPI wheel kernel-lens==2.0.1)")
      file(MAKE_DIRECTORY ${_dl}/wheel ${_dl}/root)
      execute_process(
        COMMAND ${SPATTN_PIP_PYTHON} -m pip download --no-deps --only-binary=:all:
                --disable-pip-version-check -q kernel-lens==2.0.1 -d ${_dl}/wheel
        RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err TIMEOUT 300)
      file(GLOB _whl ${_dl}/wheel/kernel_lens-2.0.1-*.whl)
      if(NOT _rc EQUAL 0 OR NOT _whl)
        set(SPATTN_TRT_HEADERS_WHY "downloading kernel-lens==2.0.1 failed (${_rc}): ${_err}")
      else()
        list(GET _whl 0 _whl)
        execute_process(COMMAND ${CMAKE_COMMAND} -E tar xf ${_whl}
          WORKING_DIRECTORY ${_dl}/root RESULT_VARIABLE _rc)
        if(NOT _rc EQUAL 0 OR NOT EXISTS ${_inc}/NvInferRuntime.h)
          set(SPATTN_TRT_HEADERS_WHY "the kernel-lens wheel has no kernel_lens/include/tensorrt/NvInferRuntime.h")
        endif()
      endif()
    endif()
  endif()
  if(EXISTS ${_inc}/NvInferRuntime.h)
    set(SPATTN_TRT_HEADERS ${_inc})
  endif()
endif()
