# Locates the ONNX Runtime C/C++ headers (the onnxruntime wheels ship none):
#  1. SPATTN_ORT_INCLUDE_DIR if given,
#  2. an installed system package (/usr/include/onnxruntime),
#  3. else Debian's libonnxruntime-dev (trixie, 1.21.0) fetched with `apt-get download` and unpacked
#     into the build tree (no system install). 1.21 is the oldest API we build against: the library
#     then loads in every onnxruntime from 1.21 on.
if(SPATTN_ORT_INCLUDE_DIR)
  set(_ort_inc ${SPATTN_ORT_INCLUDE_DIR})
elseif(EXISTS /usr/include/onnxruntime/onnxruntime_c_api.h)
  set(_ort_inc /usr/include/onnxruntime)
else()
  set(_dl ${CMAKE_BINARY_DIR}/_deps/onnxruntime-headers)
  set(_ort_inc ${_dl}/root/usr/include/onnxruntime)
  if(NOT EXISTS ${_ort_inc}/onnxruntime_c_api.h)
    message(STATUS "spattn: fetching ONNX Runtime headers (Debian libonnxruntime-dev, trixie)")
    execute_process(
      COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/fetch-ort-headers.sh ${_dl}
      RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err)
    if(NOT _rc EQUAL 0 OR NOT EXISTS ${_ort_inc}/onnxruntime_c_api.h)
      message(FATAL_ERROR "spattn: could not get the ONNX Runtime headers: ${_out} ${_err}\n"
        "Pass -DSPATTN_ORT_INCLUDE_DIR=<dir with onnxruntime_c_api.h>, or install libonnxruntime-dev.")
    endif()
  endif()
endif()
set(SPATTN_ORT_INCLUDE ${_ort_inc} CACHE INTERNAL "")
message(STATUS "spattn: ONNX Runtime headers: ${SPATTN_ORT_INCLUDE}")
