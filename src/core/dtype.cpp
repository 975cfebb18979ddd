#include "core/dtype.h"

namespace tessera {

bool parse_dtype(const std::string& name, DType* out) {
  static const std::pair<const char*, DType> table[] = {
      {"f32", DType::f32},       {"float32", DType::f32}, {"bf16", DType::bf16},
      {"bfloat16", DType::bf16}, {"f16", DType::f16},     {"float16", DType::f16},
      {"i32", DType::i32},       {"int32", DType::i32},   {"i64", DType::i64},
      {"int64", DType::i64},     {"u16", DType::u16},     {"uint16", DType::u16}};
  for (auto& [n, t] : table)
    if (name == n) return *out = t, true;
  return false;
}

std::string Device::str() const {
  switch (type) {
    case DeviceType::cpu:
      return "cpu";
    case DeviceType::meta:
      return index == 0 ? "meta" : "meta:host";
    case DeviceType::cuda:
      break;
  }
  return "cuda:" + std::to_string(index);
}

}  // namespace tessera
