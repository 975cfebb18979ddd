// Dispatch once per op, never per element: turns a runtime DType into a compile-time type.
//   dispatch_float(t.dtype(), "gelu", [&](auto tag) { using T = decltype(tag); kernel<T>(...); });
#pragma once
#include "core/dtype.h"
#include "core/error.h"

namespace tessera::ops {

template <class F>
decltype(auto) dispatch_float(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32: return f(float{});
    case DType::bf16: return f(bf16{});
    case DType::f16: return f(f16{});
    default: fail("{}: no kernel for dtype {} (expected f32, bf16 or f16)", op, dtype_name(t));
  }
}

}  // namespace tessera::ops
