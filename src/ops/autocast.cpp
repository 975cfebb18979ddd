#include "ops/autocast.h"

namespace tessera {
namespace {
thread_local DType g_autocast = DType::f32;
}
DType autocast_dtype() { return g_autocast; }
void set_autocast_dtype(DType t) { g_autocast = t; }
}  // namespace tessera
