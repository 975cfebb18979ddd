#include "ops/autocast.h"

#include "core/error.h"

namespace tessera {
namespace {
thread_local DType g_autocast = DType::f32;
}
DType autocast_dtype() {
  return g_autocast;
}
void set_autocast_dtype(DType t) {
  TS_CHECK(t == DType::f32 || t == DType::bf16 || t == DType::f16,
           "autocast: dtype {} unsupported (expected f32, bf16 or f16)", dtype_name(t));
  g_autocast = t;
}
}  // namespace tessera
