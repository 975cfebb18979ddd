#include "emu/nccl_reduce.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include "core/half.h"

namespace tessera::emu::nccl {

size_t type_size(ncclDataType_t type) {
  switch (type) {
    case ncclInt8:
    case ncclUint8:
    case ncclFloat8e4m3:
    case ncclFloat8e5m2:
      return 1;
    case ncclFloat16:
    case ncclBfloat16:
      return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32:
      return 4;
    case ncclInt64:
    case ncclUint64:
    case ncclFloat64:
      return 8;
    case ncclNumTypes:
      break;
  }
  return 0;
}

std::string type_name(ncclDataType_t type) {
  switch (type) {
    case ncclInt8:
      return "ncclInt8";
    case ncclUint8:
      return "ncclUint8";
    case ncclInt32:
      return "ncclInt32";
    case ncclUint32:
      return "ncclUint32";
    case ncclInt64:
      return "ncclInt64";
    case ncclUint64:
      return "ncclUint64";
    case ncclFloat16:
      return "ncclFloat16";
    case ncclFloat32:
      return "ncclFloat32";
    case ncclFloat64:
      return "ncclFloat64";
    case ncclBfloat16:
      return "ncclBfloat16";
    case ncclFloat8e4m3:
      return "ncclFloat8e4m3";
    case ncclFloat8e5m2:
      return "ncclFloat8e5m2";
    case ncclNumTypes:
      break;
  }
  return "invalid type " + std::to_string(int(type));
}

std::string op_name(ncclRedOp_t op) {
  switch (op) {
    case ncclSum:
      return "ncclSum";
    case ncclProd:
      return "ncclProd";
    case ncclMax:
      return "ncclMax";
    case ncclMin:
      return "ncclMin";
    case ncclAvg:
      return "ncclAvg";
    default:
      break;
  }
  return "invalid op " + std::to_string(int(op));
}

bool reducible(ncclDataType_t type) {
  return type_size(type) > 0 && type != ncclFloat8e4m3 && type != ncclFloat8e5m2;
}

namespace {

// How an element of storage type S is read into the accumulation type A and written back.
template <class S>
struct Elem {
  using A = S;
  static A load(S v) { return v; }
  static S store(A a) { return a; }
};
template <>
struct Elem<bf16> {
  using A = float;
  static A load(bf16 v) { return bf16_to_float(v); }
  static bf16 store(A a) { return float_to_bf16(a); }
};
template <>
struct Elem<f16> {
  using A = float;
  static A load(f16 v) { return f16_to_float(v); }
  static f16 store(A a) { return float_to_f16(a); }
};

// Integer sums and products wrap (in unsigned arithmetic: signed overflow is undefined in C++;
// a GPU wraps).
template <class A>
A add(A a, A b) {
  if constexpr (std::is_integral_v<A>) {
    using U = std::make_unsigned_t<A>;
    return A(U(U(a) + U(b)));
  } else {
    return a + b;
  }
}
template <class A>
A mul(A a, A b) {
  if constexpr (std::is_integral_v<A>) {
    using U = std::make_unsigned_t<A>;
    using W = std::conditional_t<(sizeof(U) < sizeof(unsigned)), unsigned, U>;
    return A(U(W(U(a)) * W(U(b))));
  } else {
    return a * b;
  }
}
template <class A>
A maximum(A a, A b) {
  if constexpr (std::is_floating_point_v<A>) {
    return std::fmax(a, b);
  } else {
    return a < b ? b : a;
  }
}
template <class A>
A minimum(A a, A b) {
  if constexpr (std::is_floating_point_v<A>) {
    return std::fmin(a, b);
  } else {
    return b < a ? b : a;
  }
}

template <class A>
A combine(ncclRedOp_t op, A a, A b) {
  switch (op) {
    case ncclProd:
      return mul(a, b);
    case ncclMax:
      return maximum(a, b);
    case ncclMin:
      return minimum(a, b);
    default:
      return add(a, b);  // ncclSum, and ncclAvg before its division
  }
}

template <class S>
S load_at(const void* base, size_t i) {
  S v;
  std::memcpy(&v, static_cast<const char*>(base) + i * sizeof(S), sizeof(S));
  return v;
}

// The average of a sum over n ranks (integers truncate toward zero, as NCCL's do).
template <class A>
A divide(A sum, size_t n) {
  if constexpr (std::is_floating_point_v<A>) {
    return sum / A(n);
  } else {
    using W = std::conditional_t<std::is_signed_v<A>, int64_t, uint64_t>;
    return A(W(sum) / W(n));
  }
}

template <class S>
void reduce_as(const std::vector<const void*>& in, void* out, size_t count, ncclRedOp_t op) {
  using E = Elem<S>;
  using A = typename E::A;
  for (size_t i = 0; i < count; ++i) {
    A acc = E::load(load_at<S>(in[0], i));
    for (size_t r = 1; r < in.size(); ++r) acc = combine(op, acc, E::load(load_at<S>(in[r], i)));
    if (op == ncclAvg) acc = divide(acc, in.size());
    const S v = E::store(acc);
    std::memcpy(static_cast<char*>(out) + i * sizeof(S), &v, sizeof(S));
  }
}

}  // namespace

void reduce(const std::vector<const void*>& in, void* out, size_t count, ncclDataType_t type,
            ncclRedOp_t op) {
  if (in.empty()) return;
  switch (type) {
    case ncclInt8:
      return reduce_as<int8_t>(in, out, count, op);
    case ncclUint8:
      return reduce_as<uint8_t>(in, out, count, op);
    case ncclInt32:
      return reduce_as<int32_t>(in, out, count, op);
    case ncclUint32:
      return reduce_as<uint32_t>(in, out, count, op);
    case ncclInt64:
      return reduce_as<int64_t>(in, out, count, op);
    case ncclUint64:
      return reduce_as<uint64_t>(in, out, count, op);
    case ncclFloat16:
      return reduce_as<f16>(in, out, count, op);
    case ncclFloat32:
      return reduce_as<float>(in, out, count, op);
    case ncclFloat64:
      return reduce_as<double>(in, out, count, op);
    case ncclBfloat16:
      return reduce_as<bf16>(in, out, count, op);
    default:
      return;  // not reducible: refused when the call was made
  }
}

}  // namespace tessera::emu::nccl
