// Element types a tensor can hold.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/half.h"

namespace tessera {

enum class DType : uint8_t { f32, bf16, f16, i32, i64, u16 };

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32:
      return 4;
    case DType::bf16:
      return 2;
    case DType::f16:
      return 2;
    case DType::i32:
      return 4;
    case DType::i64:
      return 8;
    case DType::u16:
      return 2;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32:
      return "f32";
    case DType::bf16:
      return "bf16";
    case DType::f16:
      return "f16";
    case DType::i32:
      return "i32";
    case DType::i64:
      return "i64";
    case DType::u16:
      return "u16";
  }
  return "?";
}

inline bool is_floating(DType t) {
  return t == DType::f32 || t == DType::bf16 || t == DType::f16;
}

// Parses "f32", "bf16", ...; returns false for an unknown name.
bool parse_dtype(const std::string& name, DType* out);

// Maps C++ element types to DType for checked data<T>() access.
template <class T>
struct dtype_of;
template <>
struct dtype_of<float> {
  static constexpr DType value = DType::f32;
};
template <>
struct dtype_of<bf16> {
  static constexpr DType value = DType::bf16;
};
template <>
struct dtype_of<f16> {
  static constexpr DType value = DType::f16;
};
template <>
struct dtype_of<int32_t> {
  static constexpr DType value = DType::i32;
};
template <>
struct dtype_of<int64_t> {
  static constexpr DType value = DType::i64;
};
template <>
struct dtype_of<uint16_t> {
  static constexpr DType value = DType::u16;
};

// meta: tensors with shapes and dtypes but no contents (core/meta_device.h): the planner runs the
// real training code on it to trace memory, kernels and collectives without computing anything.
enum class DeviceType : uint8_t { cpu, cuda, meta };

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;
  bool operator==(const Device&) const = default;
  bool is_cpu() const { return type == DeviceType::cpu; }
  std::string str() const;
  static Device cpu() { return {}; }
  static Device cuda(int i = 0) { return {DeviceType::cuda, i}; }
  // meta:0 stands for the device a plan is for; meta:1 for host memory (models built by
  // meta::BuildOnMeta, as a real run builds them on the host before moving them over).
  static Device meta(int i = 0) { return {DeviceType::meta, i}; }
  bool is_meta() const { return type == DeviceType::meta; }
};

}  // namespace tessera
