/* The attributes of spattn::SparseAttention (docs/op-spec.md, "Attributes"), declared once.
 *
 * Every place that lists the attributes expands this table: PatternAttrs (params.h), their
 * validation (validate.h), the ONNX Runtime kernel creation, the TensorRT plugin's fields and the
 * C API struct (c_api.h). Adding an attribute is one line here (plus its meaning in the kernels).
 *
 * One row per line, so that tests (tests/kernels/test_attributes.py) can parse it:
 *   X(TYPE, name, default, min, max, c_block, "expectation")
 *   TYPE        FLOAT (C float; ONNX FLOAT, TensorRT FLOAT32) or INT (C int32_t; ONNX INT,
 *               TensorRT INT32)
 *   default     the value when the attribute is absent
 *   min, max    the valid range, inclusive; a FLOAT must also be finite
 *   c_block     where the field sits in the C API struct spattn_args: 1 in the first block of
 *               attributes (the original layout), 2 and 3 in the blocks appended at its end by
 *               the struct's second and third versions
 *   expectation the text of the error message for a value outside the range
 * C and C++ compatible (c_api.h is a C header). */
#ifndef SPATTN_ATTRIBUTES_H_
#define SPATTN_ATTRIBUTES_H_

#include <stdint.h>

#define SPATTN_INT32_MAX_VALUE 2147483647
#define SPATTN_FLOAT_MAX_VALUE 3.402823466e+38

/* clang-format off */
#define SPATTN_ATTRIBUTES(X) \
  X(FLOAT, scale, 0.0, 0.0, SPATTN_FLOAT_MAX_VALUE, 1, "a finite value > 0 (0 selects 1/sqrt(D))") \
  X(INT, window_left, -1, -1, SPATTN_INT32_MAX_VALUE, 1, "-1 (unbounded) or >= 0") \
  X(INT, window_right, -1, -1, SPATTN_INT32_MAX_VALUE, 1, "-1 (unbounded) or >= 0") \
  X(INT, causal, 0, 0, 1, 1, "0 or 1") \
  X(INT, num_global, 0, 0, SPATTN_INT32_MAX_VALUE, 1, ">= 0") \
  X(INT, stride, 0, 0, SPATTN_INT32_MAX_VALUE, 1, ">= 0 (0 off)") \
  X(INT, block_size, 64, 1, 65536, 1, "in [1, 65536]") \
  X(INT, num_random, 0, 0, 65536, 1, "in [0, 65536]") \
  X(INT, seed, 0, 0, SPATTN_INT32_MAX_VALUE, 1, "in [0, 2^31-1]") \
  X(FLOAT, softcap, 0.0, 0.0, SPATTN_FLOAT_MAX_VALUE, 2, "a finite value >= 0 (0 off)") \
  X(INT, chunk_size, 0, 0, SPATTN_INT32_MAX_VALUE, 3, ">= 0 (0 off)")
/* clang-format on */

/* The C type of an attribute: SPATTN_ATTR_CTYPE(FLOAT) is float, SPATTN_ATTR_CTYPE(INT) int32_t. */
#define SPATTN_ATTR_CTYPE_FLOAT float
#define SPATTN_ATTR_CTYPE_INT int32_t
#define SPATTN_ATTR_CTYPE(TYPE) SPATTN_ATTR_CTYPE_##TYPE

/* SPATTN_ATTR_IF_BLOCK_<c_block>_<wanted>(x): x when the row's c_block is the wanted one. */
#define SPATTN_ATTR_IF_BLOCK_1_1(x) x
#define SPATTN_ATTR_IF_BLOCK_1_2(x)
#define SPATTN_ATTR_IF_BLOCK_1_3(x)
#define SPATTN_ATTR_IF_BLOCK_2_1(x)
#define SPATTN_ATTR_IF_BLOCK_2_2(x) x
#define SPATTN_ATTR_IF_BLOCK_2_3(x)
#define SPATTN_ATTR_IF_BLOCK_3_1(x)
#define SPATTN_ATTR_IF_BLOCK_3_2(x)
#define SPATTN_ATTR_IF_BLOCK_3_3(x) x

#endif /* SPATTN_ATTRIBUTES_H_ */
