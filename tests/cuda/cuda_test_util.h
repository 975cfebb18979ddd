// Helpers for the CUDA tests: a fixture that skips without a device (saying why), device
// buffers from the caching allocator, fresh random inputs (the seed is printed on failure), and
// the CPU-vs-CUDA comparison that also prints one "[cmp]" line per op and dtype for
// scripts/gpu_check.sh's table.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/half.h"
#include "cuda/allocator.h"
#include "cuda/cuda_check.h"
#include "cuda/device.h"
#include "kernels/cpu/cast.h"

namespace tessera::cudatest {

// Every CUDA test derives from this: without a device the test is reported as skipped, with the
// runtime's reason ("no CUDA device: cudaErrorNoDevice: ...").
class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const cuda::DeviceProbe& p = cuda::probe_devices();
    if (p.count == 0) GTEST_SKIP() << "no CUDA device: " << p.reason;
    cuda::init(0);
  }
};

// A device array of n T's, released to the caching allocator on destruction.
template <class T>
class DevBuf {
 public:
  explicit DevBuf(size_t n)
      : n_(n), p_(static_cast<T*>(cuda::device_allocator().allocate(bytes()))) {}
  explicit DevBuf(const std::vector<T>& host) : DevBuf(host.size()) { upload(host); }
  ~DevBuf() { cuda::device_allocator().release(p_, bytes()); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;

  T* get() const { return p_; }
  size_t size() const { return n_; }
  size_t bytes() const { return n_ * sizeof(T); }
  void upload(const std::vector<T>& h) {
    CUDA_CHECK(cudaMemcpy(p_, h.data(), bytes(), cudaMemcpyHostToDevice));
  }
  // Waits for all queued work first (the kernels under test run on the current stream).
  std::vector<T> download() const {
    CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<T> h(n_);
    CUDA_CHECK(cudaMemcpy(h.data(), p_, bytes(), cudaMemcpyDeviceToHost));
    return h;
  }

 private:
  size_t n_;
  T* p_;
};

// Fresh inputs on every run; the seed goes into the failure message via SCOPED_TRACE, and
// TESSERA_TEST_SEED=<that seed> replays a failed run's inputs.
class Rng {
 public:
  Rng() : seed_(initial_seed()), eng_(seed_) {}
  uint64_t seed() const { return seed_; }
  std::vector<float> normal(size_t n, float stddev = 1.f) {
    std::normal_distribution<float> d(0.f, stddev);
    std::vector<float> v(n);
    for (float& x : v) x = d(eng_);
    return v;
  }
  std::vector<float> uniform(size_t n, float lo, float hi) {
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (float& x : v) x = d(eng_);
    return v;
  }
  std::vector<int32_t> ints(size_t n, int32_t lo, int32_t hi) {  // [lo, hi]
    std::uniform_int_distribution<int32_t> d(lo, hi);
    std::vector<int32_t> v(n);
    for (int32_t& x : v) x = d(eng_);
    return v;
  }
  uint64_t u64() { return eng_(); }

 private:
  static uint64_t initial_seed() {
    if (const char* s = std::getenv("TESSERA_TEST_SEED"); s != nullptr && *s != '\0')
      return std::strtoull(s, nullptr, 10);
    return std::random_device{}() | (uint64_t(std::random_device{}()) << 32);
  }
  uint64_t seed_;
  std::mt19937_64 eng_;
};

#define TS_TRACE_SEED(rng) SCOPED_TRACE("random seed " + std::to_string((rng).seed()))

template <class T>
std::vector<T> to_storage(const std::vector<float>& v) {
  std::vector<T> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = from_f32<T>(v[i]);
  return out;
}
template <class T>
std::vector<float> to_float(const std::vector<T>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = to_f32(v[i]);
  return out;
}

// The bytes of v converted to dtype t (integers truncated like cpu::cast).
inline std::vector<uint8_t> host_bytes(const std::vector<float>& v, DType t) {
  std::vector<uint8_t> out(v.size() * dtype_size(t));
  cpu::cast(v.data(), DType::f32, out.data(), t, int64_t(v.size()));
  return out;
}

// Bit patterns with every NaN mapped to one (GPUs return the canonical NaN from arithmetic, x86
// propagates the input's payload), for exact comparisons that treat NaN == NaN.
inline std::vector<uint32_t> canonical_bits(const std::vector<float>& v) {
  std::vector<uint32_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i)
    out[i] = std::isnan(v[i]) ? 0x7fc00000u : float_to_bits(v[i]);
  return out;
}

template <class T>
const char* type_name() {
  return dtype_name(dtype_of<T>::value);
}

// Bounds on the normwise relative error of an output stored as T: a few units in the last
// place of T (both backends compute in f32; they differ in summation order, FMA contraction
// and the final rounding to T).
template <class T>
double tol() {
  if constexpr (std::is_same_v<T, float>)
    return 1e-5;
  else if constexpr (std::is_same_v<T, bf16>)
    return 1e-2;  // 8 mantissa bits: one ulp is 2^-8 = 3.9e-3 relative
  else
    return 2e-3;  // f16, 11 bits: one ulp is 2^-11 = 4.9e-4
}

// max |got - want| / max |want| (0 / 0 = 0); any NaN or size mismatch gives +inf.
inline double rel_error(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return INFINITY;
  double diff = 0, scale = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = got[i], w = want[i];
    if (std::isnan(g) != std::isnan(w)) return INFINITY;
    if (std::isnan(g)) continue;
    diff = std::max(diff, std::fabs(g - w));
    scale = std::max(scale, std::fabs(w));
  }
  return scale > 0 ? diff / scale : (diff > 0 ? INFINITY : 0.0);
}

// One line per comparison for scripts/gpu_check.sh's table:
//   [cmp] <op> | <dtype> | <error> | <bound> | PASS|FAIL
inline void report(const std::string& op, const char* dtype, const std::string& err,
                   const std::string& bound, bool ok) {
  std::printf("[cmp] %s | %s | %s | %s | %s\n", op.c_str(), dtype, err.c_str(), bound.c_str(),
              ok ? "PASS" : "FAIL");
  std::fflush(stdout);
}

inline std::string sci(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2e", x);
  return buf;
}

// Compares with a bound on the normwise relative error.
inline void expect_close(const std::string& op, const char* dtype, const std::vector<float>& got,
                         const std::vector<float>& want, double bound) {
  const double err = rel_error(got, want);
  const bool ok = err <= bound;
  report(op, dtype, sci(err), sci(bound), ok);
  EXPECT_LE(err, bound) << op << " (" << dtype << "): CUDA vs CPU normwise relative error";
}

// Expects bit-identical results (element types with operator==; floats compared as values).
template <class V>
void expect_exact(const std::string& op, const char* dtype, const V& got, const V& want) {
  size_t first = got.size() == want.size() ? got.size() : 0;
  for (size_t i = 0; i < got.size() && i < want.size(); ++i)
    if (!(got[i] == want[i])) {
      first = i;
      break;
    }
  const bool ok = got.size() == want.size() && first == got.size();
  report(op, dtype, ok ? "0 (exact)" : "differs", "exact", ok);
  EXPECT_TRUE(ok) << op << " (" << dtype << "): CUDA differs from CPU at element " << first
                  << " of " << want.size() << " (expected bit-identical results)";
}

template <class T>
void expect_close(const std::string& op, const std::vector<T>& got, const std::vector<T>& want,
                  double bound = tol<T>()) {
  expect_close(op, type_name<T>(), to_float(got), to_float(want), bound);
}

// f() must throw a tessera::Error whose message holds every fragment.
template <class F>
void expect_error(F&& f, std::initializer_list<const char*> fragments) {
  try {
    f();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    for (const char* s : fragments)
      EXPECT_NE(std::string(e.what()).find(s), std::string::npos)
          << "'" << s << "' missing from: " << e.what();
  }
}

}  // namespace tessera::cudatest
