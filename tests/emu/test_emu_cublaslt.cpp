// The emulated cuBLASLt (src/emu/cublaslt.cpp) against a naive double-precision GEMM written
// here from the cuBLASLt definitions alone: every transpose combination with padded leading
// dimensions and batch strides (and the padding left untouched), 16-bit operands and outputs,
// TF32 rounding, the bias / GELU epilogues, C == D, beta == 0 with a NaN C; a row-major buffer
// declared column-major gives different numbers (the mistake is visible); the statuses of bad
// descriptors; descriptors captured at the call; and a bad pointer faulting on the stream,
// naming the operand.
//
// Tolerances: products of stored values are exact in f32 and the sums run in f32, so an f32
// result is within ~k * 2^-24 of the sum of the magnitudes of its terms (1e-5 of it here); a
// 16-bit result is also rounded once: half an ulp, at most 2^-8 relative for bf16 and 2^-11 for
// f16.
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "core/half.h"
#include "emu/device.h"
#include "kernels/common/activation_math.h"

namespace {

constexpr float kSentinel = -1536.f;  // exact in every type; far from any result here

// ---- host data ----

size_t type_size(cudaDataType_t t) {
  return t == CUDA_R_32F ? 4 : 2;
}

float round_to(cudaDataType_t t, float v) {
  if (t == CUDA_R_16BF) return tessera::bf16_to_float(tessera::float_to_bf16(v));
  if (t == CUDA_R_16F) return tessera::f16_to_float(tessera::float_to_f16(v));
  return v;
}

std::vector<uint8_t> encode(cudaDataType_t t, const std::vector<float>& v) {
  std::vector<uint8_t> out(v.size() * type_size(t));
  for (size_t i = 0; i < v.size(); ++i) {
    if (t == CUDA_R_16BF) {
      const tessera::bf16 h = tessera::float_to_bf16(v[i]);
      std::memcpy(&out[2 * i], &h, 2);
    } else if (t == CUDA_R_16F) {
      const tessera::f16 h = tessera::float_to_f16(v[i]);
      std::memcpy(&out[2 * i], &h, 2);
    } else {
      std::memcpy(&out[4 * i], &v[i], 4);
    }
  }
  return out;
}

std::vector<float> decode(cudaDataType_t t, const std::vector<uint8_t>& bytes) {
  std::vector<float> out(bytes.size() / type_size(t));
  for (size_t i = 0; i < out.size(); ++i) {
    if (t == CUDA_R_16BF) {
      tessera::bf16 h;
      std::memcpy(&h, &bytes[2 * i], 2);
      out[i] = tessera::bf16_to_float(h);
    } else if (t == CUDA_R_16F) {
      tessera::f16 h;
      std::memcpy(&h, &bytes[2 * i], 2);
      out[i] = tessera::f16_to_float(h);
    } else {
      std::memcpy(&out[i], &bytes[4 * i], 4);
    }
  }
  return out;
}

// Uniform in [-1, 1), rounded to `t` so that the reference sees the stored values.
std::vector<float> random_values(cudaDataType_t t, size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = round_to(t, u(rng));
  return v;
}

// A batched column-major matrix as a layout describes it.
struct Mat {
  int64_t rows = 0, cols = 0, ld = 0, stride = 0, batch = 1;
  size_t elements() const { return size_t((batch - 1) * stride + (cols - 1) * ld + rows); }
  size_t at(int64_t e, int64_t i, int64_t j) const { return size_t(e * stride + i + j * ld); }
};

// `pad` extra rows in the leading dimension and `pad` elements between batch entries.
Mat padded(int64_t rows, int64_t cols, int64_t batch, int64_t pad) {
  const int64_t ld = rows + pad;
  return Mat{rows, cols, ld, ld * cols + pad, batch};
}

// ---- device memory and descriptors ----

class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    EXPECT_EQ(cudaMalloc(&p_, bytes ? bytes : 1), cudaSuccess);
  }
  explicit DeviceBuffer(const std::vector<uint8_t>& host) : DeviceBuffer(host.size()) {
    if (bytes_ > 0) {
      EXPECT_EQ(cudaMemcpy(p_, host.data(), bytes_, cudaMemcpyHostToDevice), cudaSuccess);
    }
  }
  ~DeviceBuffer() { (void)cudaFree(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* get() const { return p_; }
  std::vector<uint8_t> download() const {
    std::vector<uint8_t> h(bytes_);
    EXPECT_EQ(cudaMemcpy(h.data(), p_, bytes_, cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }

 private:
  void* p_ = nullptr;
  size_t bytes_;
};

class Layout {
 public:
  Layout(cudaDataType_t t, const Mat& m) {
    EXPECT_EQ(cublasLtMatrixLayoutCreate(&l_, t, uint64_t(m.rows), uint64_t(m.cols), m.ld),
              CUBLAS_STATUS_SUCCESS);
    if (m.batch > 1) {
      const int32_t count = int32_t(m.batch);
      EXPECT_EQ(cublasLtMatrixLayoutSetAttribute(l_, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count,
                                                 sizeof count),
                CUBLAS_STATUS_SUCCESS);
      EXPECT_EQ(cublasLtMatrixLayoutSetAttribute(l_, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                                 &m.stride, sizeof m.stride),
                CUBLAS_STATUS_SUCCESS);
    }
  }
  ~Layout() { cublasLtMatrixLayoutDestroy(l_); }
  Layout(const Layout&) = delete;
  Layout& operator=(const Layout&) = delete;
  operator cublasLtMatrixLayout_t() const { return l_; }

 private:
  cublasLtMatrixLayout_t l_ = nullptr;
};

class Desc {
 public:
  explicit Desc(cublasComputeType_t compute = CUBLAS_COMPUTE_32F) {
    EXPECT_EQ(cublasLtMatmulDescCreate(&d_, compute, CUDA_R_32F), CUBLAS_STATUS_SUCCESS);
  }
  ~Desc() { cublasLtMatmulDescDestroy(d_); }
  Desc(const Desc&) = delete;
  Desc& operator=(const Desc&) = delete;
  operator cublasLtMatmulDesc_t() const { return d_; }
  template <class V>
  void set(cublasLtMatmulDescAttributes_t attr, const V& v) {
    EXPECT_EQ(cublasLtMatmulDescSetAttribute(d_, attr, &v, sizeof v), CUBLAS_STATUS_SUCCESS);
  }

 private:
  cublasLtMatmulDesc_t d_ = nullptr;
};

class Pref {
 public:
  explicit Pref(uint64_t workspace_bytes) {
    EXPECT_EQ(cublasLtMatmulPreferenceCreate(&p_), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatmulPreferenceSetAttribute(p_, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                   &workspace_bytes, sizeof workspace_bytes),
              CUBLAS_STATUS_SUCCESS);
  }
  ~Pref() { cublasLtMatmulPreferenceDestroy(p_); }
  Pref(const Pref&) = delete;
  Pref& operator=(const Pref&) = delete;
  operator cublasLtMatmulPreference_t() const { return p_; }

 private:
  cublasLtMatmulPreference_t p_ = nullptr;
};

// ---- one GEMM: its description, inputs, run and reference ----

struct Spec {
  int64_t m = 0, n = 0, k = 0, batch = 1;
  bool ta = false, tb = false;
  cudaDataType_t ab = CUDA_R_32F, cd = CUDA_R_32F;
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  float alpha = 1.f, beta = 0.f;
  int64_t pad = 0;  // extra leading dimension and batch gap of every matrix
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  bool in_place = false;  // C == D
};

bool has_bias(cublasLtEpilogue_t e) {
  return e == CUBLASLT_EPILOGUE_BIAS || e == CUBLASLT_EPILOGUE_GELU_BIAS ||
         e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
}
bool has_gelu(cublasLtEpilogue_t e) {
  return e == CUBLASLT_EPILOGUE_GELU_BIAS || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
}
bool has_aux(cublasLtEpilogue_t e) {
  return e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
}

// Host values of every operand (already rounded to their types) and D's initial contents.
struct Data {
  Mat a, b, c, d, aux;
  std::vector<float> A, B, C, D, bias, AUX;
};

Data make_data(const Spec& s, uint32_t seed) {
  std::mt19937 rng(seed);
  Data x;
  x.a = padded(s.ta ? s.k : s.m, s.ta ? s.m : s.k, s.batch, s.pad);
  x.b = padded(s.tb ? s.n : s.k, s.tb ? s.k : s.n, s.batch, s.pad);
  x.c = padded(s.m, s.n, s.batch, s.pad);
  x.d = s.in_place ? x.c : padded(s.m, s.n, s.batch, s.pad + 1);  // laid out unlike C
  x.A = random_values(s.ab, x.a.elements(), rng);
  x.B = random_values(s.ab, x.b.elements(), rng);
  x.C = random_values(s.cd, x.c.elements(), rng);
  x.D = s.in_place ? x.C : std::vector<float>(x.d.elements(), kSentinel);
  if (has_bias(s.epilogue)) x.bias = random_values(s.cd, size_t(s.m), rng);  // D's type
  if (has_aux(s.epilogue)) {
    const int64_t ld = (s.m + 7) / 8 * 8 + 8;  // cuBLASLt wants multiples of 8
    x.aux = Mat{s.m, s.n, ld, ld * s.n, s.batch};
    x.AUX.assign(x.aux.elements(), kSentinel);
  }
  return x;
}

struct Outputs {
  cublasStatus_t status = CUBLAS_STATUS_SUCCESS;
  std::vector<float> d, aux;
};

// Heuristic, then cublasLtMatmul on `stream`, as Tessera calls them; waits and reads D back.
Outputs run_gemm(const Spec& s, const Data& x, cublasLtHandle_t handle, cudaStream_t stream) {
  DeviceBuffer A(encode(s.ab, x.A)), B(encode(s.ab, x.B)), C(encode(s.cd, x.C));
  DeviceBuffer D(encode(s.cd, x.D)), bias(encode(s.cd, x.bias)), aux(encode(s.cd, x.AUX));
  constexpr uint64_t kWorkspace = 1 << 20;
  DeviceBuffer workspace(kWorkspace);
  Desc desc(s.compute);
  desc.set(CUBLASLT_MATMUL_DESC_TRANSA, s.ta ? CUBLAS_OP_T : CUBLAS_OP_N);
  desc.set(CUBLASLT_MATMUL_DESC_TRANSB, s.tb ? CUBLAS_OP_T : CUBLAS_OP_N);
  if (s.epilogue != CUBLASLT_EPILOGUE_DEFAULT) desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, s.epilogue);
  if (has_bias(s.epilogue))
    desc.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(bias.get()));
  if (has_aux(s.epilogue)) {
    desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, aux.get());
    desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, x.aux.ld);
    desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE, x.aux.stride);
  }
  Layout la(s.ab, x.a), lb(s.ab, x.b), lc(s.cd, x.c), ld(s.cd, x.d);
  Pref pref(kWorkspace);

  Outputs out;
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  out.status =
      cublasLtMatmulAlgoGetHeuristic(handle, desc, la, lb, lc, ld, pref, 1, &result, &found);
  if (out.status != CUBLAS_STATUS_SUCCESS) return out;
  EXPECT_EQ(found, 1);
  EXPECT_EQ(result.state, CUBLAS_STATUS_SUCCESS);
  EXPECT_LE(result.workspaceSize, kWorkspace);
  void* const d_ptr = s.in_place ? C.get() : D.get();
  out.status = cublasLtMatmul(handle, desc, &s.alpha, A.get(), la, B.get(), lb, &s.beta, C.get(),
                              lc, d_ptr, ld, &result.algo, workspace.get(), kWorkspace, stream);
  if (out.status != CUBLAS_STATUS_SUCCESS) return out;
  EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  out.d = decode(s.cd, (s.in_place ? C : D).download());
  if (has_aux(s.epilogue)) out.aux = decode(s.cd, aux.download());
  return out;
}

// Half an ulp of the output type, relative.
double rounding(cudaDataType_t t) {
  return t == CUDA_R_16BF ? 1.0 / 256 : t == CUDA_R_16F ? 1.0 / 2048 : 0.0;
}

// op(A) (i, p) and op(B) (p, j) of batch entry e, from the definitions.
double op_a(const Spec& s, const Data& x, int64_t e, int64_t i, int64_t p) {
  return x.A[s.ta ? x.a.at(e, p, i) : x.a.at(e, i, p)];
}
double op_b(const Spec& s, const Data& x, int64_t e, int64_t p, int64_t j) {
  return x.B[s.tb ? x.b.at(e, j, p) : x.b.at(e, p, j)];
}

// Checks D (and aux) against the double reference, and that the padding of D (between rows and
// ld, and between batch entries) still holds what it held.
void expect_reference(const Spec& s, const Data& x, const Outputs& out) {
  ASSERT_EQ(out.status, CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(out.d.size(), x.D.size());
  std::vector<bool> inside(x.D.size(), false);
  int bad = 0;
  auto check = [&](const char* what, float got, double want, double tol, int64_t e, int64_t i,
                   int64_t j) {
    if (std::fabs(double(got) - want) <= tol) return;
    if (bad++ < 5)
      ADD_FAILURE() << what << " batch " << e << " (" << i << ", " << j << "): got " << got
                    << ", want " << want << " +- " << tol;
  };
  for (int64_t e = 0; e < s.batch; ++e)
    for (int64_t j = 0; j < s.n; ++j)
      for (int64_t i = 0; i < s.m; ++i) {
        double acc = 0, mag = 0;
        for (int64_t p = 0; p < s.k; ++p) {
          const double t = op_a(s, x, e, i, p) * op_b(s, x, e, p, j);
          acc += t;
          mag += std::fabs(t);
        }
        double v = s.alpha * acc;
        mag *= std::fabs(s.alpha);
        if (s.beta != 0.f) {
          v += s.beta * x.C[x.c.at(e, i, j)];
          mag += std::fabs(s.beta * x.C[x.c.at(e, i, j)]);
        }
        if (has_bias(s.epilogue)) {
          v += x.bias[size_t(i)];
          mag += std::fabs(x.bias[size_t(i)]);
        }
        const double tol = 1e-5 * (1 + mag);
        if (has_aux(s.epilogue))
          check("aux", out.aux[x.aux.at(e, i, j)], v, tol + rounding(s.cd) * std::fabs(v), e, i, j);
        if (has_gelu(s.epilogue)) v = tessera::math::gelu_tanh(float(v));
        check("D", out.d[x.d.at(e, i, j)], v, tol + rounding(s.cd) * std::fabs(v), e, i, j);
        inside[x.d.at(e, i, j)] = true;
      }
  for (size_t i = 0; i < x.D.size(); ++i)
    if (!inside[i] && out.d[i] != x.D[i] && bad++ < 5)
      ADD_FAILURE() << "D's padding at element " << i << " changed: " << out.d[i];
  EXPECT_EQ(bad, 0);
}

class EmuCublasLt : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(cublasLtCreate(&handle_), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cudaStreamCreate(&stream_), cudaSuccess);
  }
  void TearDown() override {
    EXPECT_EQ(cudaStreamDestroy(stream_), cudaSuccess);
    EXPECT_EQ(cublasLtDestroy(handle_), CUBLAS_STATUS_SUCCESS);
  }
  Outputs run(const Spec& s, const Data& x) { return run_gemm(s, x, handle_, stream_); }

  cublasLtHandle_t handle_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

// ---- results ----

TEST_F(EmuCublasLt, F32EveryTransposeWithPaddedLdAndBatchStride) {
  for (const bool ta : {false, true})
    for (const bool tb : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "ta " << ta << " tb " << tb);
      Spec s;
      s.m = 5, s.n = 7, s.k = 6, s.batch = 3, s.ta = ta, s.tb = tb, s.pad = 3;
      s.alpha = 1.5f, s.beta = -0.5f;
      const Data x = make_data(s, 1 + 2 * ta + tb);
      expect_reference(s, x, run(s, x));
    }
}

TEST_F(EmuCublasLt, BetaZeroDoesNotReadC) {
  Spec s;
  s.m = 4, s.n = 3, s.k = 5, s.pad = 1;
  Data x = make_data(s, 7);
  for (float& v : x.C) v = std::nanf("");  // C may be uninitialised when beta == 0
  expect_reference(s, x, run(s, x));
}

TEST_F(EmuCublasLt, InPlaceAccumulateIntoC) {
  Spec s;
  s.m = 6, s.n = 4, s.k = 3, s.batch = 2, s.pad = 2, s.beta = 1.f, s.in_place = true;
  const Data x = make_data(s, 8);
  expect_reference(s, x, run(s, x));
}

TEST_F(EmuCublasLt, SixteenBitOperandsAndOutputs) {
  const struct {
    cudaDataType_t ab, cd;
  } cases[] = {{CUDA_R_16BF, CUDA_R_32F},
               {CUDA_R_16BF, CUDA_R_16BF},
               {CUDA_R_16F, CUDA_R_32F},
               {CUDA_R_16F, CUDA_R_16F}};
  for (const auto& c : cases) {
    SCOPED_TRACE(::testing::Message() << "types " << c.ab << " -> " << c.cd);
    Spec s;
    s.m = 9, s.n = 5, s.k = 17, s.batch = 2, s.tb = true, s.pad = 2, s.ab = c.ab, s.cd = c.cd;
    s.beta = 0.25f;
    const Data x = make_data(s, 11);
    expect_reference(s, x, run(s, x));
  }
}

// 1 + 2^-12 is 1 in TF32 (10 mantissa bits); ties round to even: 1 + 2^-11 -> 1,
// 1 + 2^-10 + 2^-11 -> 1 + 2^-9. With CUBLAS_COMPUTE_32F the operands stay exact.
TEST_F(EmuCublasLt, FastTf32RoundsOperandsToNearestEven) {
  Spec s;
  s.m = 3, s.n = 1, s.k = 1;
  Data x = make_data(s, 3);
  x.A = {1.f + 0x1p-12f, 1.f + 0x1p-11f, 1.f + 0x1p-10f + 0x1p-11f};
  x.B = {1.f};
  const Outputs exact = run(s, x);
  ASSERT_EQ(exact.status, CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(exact.d[0], x.A[0]);
  EXPECT_EQ(exact.d[1], x.A[1]);
  EXPECT_EQ(exact.d[2], x.A[2]);
  s.compute = CUBLAS_COMPUTE_32F_FAST_TF32;
  const Outputs tf32 = run(s, x);
  ASSERT_EQ(tf32.status, CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(tf32.d[0], 1.f);
  EXPECT_EQ(tf32.d[1], 1.f);
  EXPECT_EQ(tf32.d[2], 1.f + 0x1p-9f);
}

TEST_F(EmuCublasLt, BiasAndGeluEpilogues) {
  for (const cublasLtEpilogue_t e :
       {CUBLASLT_EPILOGUE_BIAS, CUBLASLT_EPILOGUE_GELU_BIAS, CUBLASLT_EPILOGUE_GELU_AUX_BIAS}) {
    SCOPED_TRACE(::testing::Message() << "epilogue " << e);
    Spec s;
    s.m = 12, s.n = 5, s.k = 7, s.batch = 2, s.ta = true, s.pad = 1, s.epilogue = e;
    s.alpha = 2.f, s.beta = 0.5f;
    const Data x = make_data(s, 20 + e);
    expect_reference(s, x, run(s, x));
  }
}

TEST_F(EmuCublasLt, GeluAuxWithBf16Output) {
  Spec s;
  s.m = 8, s.n = 3, s.k = 10, s.ab = CUDA_R_16BF, s.cd = CUDA_R_16BF;
  s.epilogue = CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
  const Data x = make_data(s, 31);
  expect_reference(s, x, run(s, x));
}

// The classic mistake: A stored row-major (m x k, ld k) declared column-major m x k (ld m).
// The emulator computes from the layout, so the result is another matrix's product, as on a GPU.
TEST_F(EmuCublasLt, WrongLayoutGivesDifferentNumbers) {
  Spec s;
  s.m = 6, s.n = 4, s.k = 6, s.ta = true;  // the truth: A's buffer holds op(A)^T column-major
  const Data x = make_data(s, 5);
  const Outputs right = run(s, x);
  expect_reference(s, x, right);
  Spec wrong = s;
  wrong.ta = false;  // same buffer, read as if op(A) itself were stored column-major
  const Outputs got = run(wrong, x);
  ASSERT_EQ(got.status, CUBLAS_STATUS_SUCCESS);
  double max_diff = 0;
  for (size_t i = 0; i < got.d.size(); ++i)
    max_diff = std::max(max_diff, std::fabs(double(got.d[i]) - double(right.d[i])));
  EXPECT_GT(max_diff, 0.1);
}

// ---- statuses ----

// Layouts and a descriptor for D (m x n) = op(A) op(B), no data: statuses only.
class EmuCublasLtStatus : public EmuCublasLt {
 protected:
  cublasStatus_t heuristic(cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a,
                           cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                           cublasLtMatrixLayout_t d) {
    Pref pref(0);
    cublasLtMatmulHeuristicResult_t result{};
    int found = -1;
    const cublasStatus_t st =
        cublasLtMatmulAlgoGetHeuristic(handle_, desc, a, b, c, d, pref, 1, &result, &found);
    EXPECT_EQ(found, st == CUBLAS_STATUS_SUCCESS ? 1 : 0);
    return st;
  }
  // Never runs: every call here is refused before anything is queued.
  cublasStatus_t matmul(cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a,
                        cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                        cublasLtMatrixLayout_t d) {
    const float alpha = 1.f, beta = 0.f;
    return cublasLtMatmul(handle_, desc, &alpha, buf_.get(), a, buf_.get(), b, &beta, buf_.get(), c,
                          buf_.get(), d, nullptr, nullptr, 0, stream_);
  }
  DeviceBuffer buf_{4096};
};

TEST_F(EmuCublasLtStatus, ValidProblemFindsOneAlgorithm) {
  Desc desc;
  Layout a(CUDA_R_32F, Mat{4, 3, 4}), b(CUDA_R_32F, Mat{3, 2, 3}), c(CUDA_R_32F, Mat{4, 2, 4});
  Pref pref(0);
  cublasLtMatmulHeuristicResult_t results[4] = {};
  int found = 0;
  ASSERT_EQ(cublasLtMatmulAlgoGetHeuristic(handle_, desc, a, b, c, c, pref, 4, results, &found),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(found, 1);
  EXPECT_EQ(results[0].state, CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(results[0].workspaceSize, 0u);
  EXPECT_EQ(cublasLtMatmulAlgoGetHeuristic(handle_, desc, a, b, c, c, pref, 0, results, &found),
            CUBLAS_STATUS_INVALID_VALUE);
}

TEST_F(EmuCublasLtStatus, MismatchedDimsAreInvalid) {
  Desc desc;
  Layout a(CUDA_R_32F, Mat{4, 3, 4}), c(CUDA_R_32F, Mat{4, 2, 4});
  Layout b_wrong_k(CUDA_R_32F, Mat{5, 2, 5});  // op(B) must be 3 x 2
  Layout b_wrong_n(CUDA_R_32F, Mat{3, 3, 3});  // n disagrees with C / D
  Layout c_wrong(CUDA_R_32F, Mat{4, 3, 4});    // C must be D's shape
  Layout b(CUDA_R_32F, Mat{3, 2, 3});
  EXPECT_EQ(heuristic(desc, a, b_wrong_k, c, c), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(matmul(desc, a, b_wrong_k, c, c), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(heuristic(desc, a, b_wrong_n, c, c), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(heuristic(desc, a, b, c_wrong, c), CUBLAS_STATUS_INVALID_VALUE);
  // Transposing A makes op(A) 3 x 4: no longer D's 4 rows.
  desc.set(CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_T);
  EXPECT_EQ(heuristic(desc, a, b, c, c), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(matmul(desc, a, b, c, c), CUBLAS_STATUS_INVALID_VALUE);
}

TEST_F(EmuCublasLtStatus, LdBelowRowsIsInvalid) {
  Desc desc;
  Layout a(CUDA_R_32F, Mat{4, 3, 3}), b(CUDA_R_32F, Mat{3, 2, 3}), c(CUDA_R_32F, Mat{4, 2, 4});
  EXPECT_EQ(heuristic(desc, a, b, c, c), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(matmul(desc, a, b, c, c), CUBLAS_STATUS_INVALID_VALUE);
}

TEST_F(EmuCublasLtStatus, BatchCountsMustAgree) {
  Desc desc;
  Layout a(CUDA_R_32F, Mat{4, 3, 4, 12, 2}), b(CUDA_R_32F, Mat{3, 2, 3, 6, 2});
  Layout c2(CUDA_R_32F, Mat{4, 2, 4, 8, 2}), c3(CUDA_R_32F, Mat{4, 2, 4, 8, 3});
  EXPECT_EQ(heuristic(desc, a, b, c2, c2), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(heuristic(desc, a, b, c3, c3), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(matmul(desc, a, b, c2, c3), CUBLAS_STATUS_INVALID_VALUE);
}

TEST_F(EmuCublasLtStatus, UnsupportedConfigurations) {
  Layout a(CUDA_R_32F, Mat{4, 3, 4}), b(CUDA_R_32F, Mat{3, 2, 3}), c(CUDA_R_32F, Mat{4, 2, 4});
  Layout a16(CUDA_R_16BF, Mat{4, 3, 4}), b16(CUDA_R_16BF, Mat{3, 2, 3});
  Layout c16(CUDA_R_16BF, Mat{4, 2, 4}), c_half(CUDA_R_16F, Mat{4, 2, 4});
  Desc desc;
  EXPECT_EQ(heuristic(desc, a, b, c16, c16), CUBLAS_STATUS_NOT_SUPPORTED);  // f32 in, bf16 out
  EXPECT_EQ(heuristic(desc, a16, b, c, c), CUBLAS_STATUS_NOT_SUPPORTED);    // A, B differ
  EXPECT_EQ(heuristic(desc, a16, b16, c_half, c_half), CUBLAS_STATUS_NOT_SUPPORTED);
  EXPECT_EQ(heuristic(desc, a16, b16, c16, c16), CUBLAS_STATUS_SUCCESS);
  Desc tf32(CUBLAS_COMPUTE_32F_FAST_TF32);
  EXPECT_EQ(heuristic(tf32, a, b, c, c), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(heuristic(tf32, a16, b16, c16, c16), CUBLAS_STATUS_NOT_SUPPORTED);
  Desc f64(CUBLAS_COMPUTE_64F);
  EXPECT_EQ(heuristic(f64, a, b, c, c), CUBLAS_STATUS_NOT_SUPPORTED);
  // GELU's aux matrix needs an ld divisible by 8.
  Desc gelu;
  gelu.set(CUBLASLT_MATMUL_DESC_EPILOGUE, CUBLASLT_EPILOGUE_GELU_AUX_BIAS);
  gelu.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, int64_t(4));
  EXPECT_EQ(heuristic(gelu, a, b, c, c), CUBLAS_STATUS_INVALID_VALUE);
  gelu.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, int64_t(8));
  EXPECT_EQ(heuristic(gelu, a, b, c, c), CUBLAS_STATUS_SUCCESS);
}

TEST_F(EmuCublasLtStatus, AttributesAreCheckedAndRoundTrip) {
  cublasLtMatrixLayout_t l = nullptr;
  ASSERT_EQ(cublasLtMatrixLayoutCreate(&l, CUDA_R_32F, 4, 3, 4), CUBLAS_STATUS_SUCCESS);
  const int32_t row = CUBLASLT_ORDER_ROW, col = CUBLASLT_ORDER_COL;
  EXPECT_EQ(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_ORDER, &row, sizeof row),
            CUBLAS_STATUS_NOT_SUPPORTED);
  EXPECT_EQ(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_ORDER, &col, sizeof col),
            CUBLAS_STATUS_SUCCESS);
  const int64_t count64 = 2;  // BATCH_COUNT is an int32_t
  EXPECT_EQ(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count64,
                                             sizeof count64),
            CUBLAS_STATUS_INVALID_VALUE);
  const int64_t ld = 7;
  EXPECT_EQ(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_LD, &ld, sizeof ld),
            CUBLAS_STATUS_SUCCESS);
  int64_t got = 0;
  size_t written = 0;
  EXPECT_EQ(
      cublasLtMatrixLayoutGetAttribute(l, CUBLASLT_MATRIX_LAYOUT_LD, &got, sizeof got, &written),
      CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(got, 7);
  EXPECT_EQ(written, sizeof got);
  EXPECT_EQ(cublasLtMatrixLayoutDestroy(l), CUBLAS_STATUS_SUCCESS);

  Desc desc;
  const float not_a_pointer = 1.f;  // BIAS_POINTER holds a pointer: 4 bytes is the wrong size
  EXPECT_EQ(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &not_a_pointer,
                                           sizeof not_a_pointer),
            CUBLAS_STATUS_INVALID_VALUE);
  const int32_t compute = CUBLAS_COMPUTE_32F, scale = CUDA_R_32F;
  EXPECT_EQ(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_COMPUTE_TYPE, &compute,
                                           sizeof compute),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(
      cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_SCALE_TYPE, &scale, sizeof scale),
      CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, nullptr, 4),
            CUBLAS_STATUS_INVALID_VALUE);
}

TEST_F(EmuCublasLtStatus, DeadHandlesAndDescriptorsAreRefused) {
  Layout a(CUDA_R_32F, Mat{4, 3, 4}), b(CUDA_R_32F, Mat{3, 2, 3}), c(CUDA_R_32F, Mat{4, 2, 4});
  cublasLtMatmulDesc_t dead = nullptr;
  ASSERT_EQ(cublasLtMatmulDescCreate(&dead, CUBLAS_COMPUTE_32F, CUDA_R_32F), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasLtMatmulDescDestroy(dead), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(heuristic(dead, a, b, c, c), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasLtMatmulDescDestroy(dead), CUBLAS_STATUS_INVALID_VALUE);  // twice
  Desc desc;
  EXPECT_EQ(heuristic(desc, a, b, nullptr, c), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(matmul(nullptr, a, b, c, c), CUBLAS_STATUS_INVALID_VALUE);
  const float one = 1.f;
  EXPECT_EQ(cublasLtMatmul(nullptr, desc, &one, buf_.get(), a, buf_.get(), b, &one, buf_.get(), c,
                           buf_.get(), c, nullptr, nullptr, 0, stream_),
            CUBLAS_STATUS_NOT_INITIALIZED);
  cublasLtMatmulAlgo_t made_up{};  // not from the heuristic
  EXPECT_EQ(cublasLtMatmul(handle_, desc, &one, buf_.get(), a, buf_.get(), b, &one, buf_.get(), c,
                           buf_.get(), c, &made_up, nullptr, 0, stream_),
            CUBLAS_STATUS_INVALID_VALUE);
}

// ---- stream semantics ----

// The GEMM uses the descriptors as they were at the call: the stream is held back by a host
// function until the descriptors have been changed and destroyed.
TEST_F(EmuCublasLt, DescriptorsAreCapturedAtTheCall) {
  Spec s;
  s.m = 5, s.n = 4, s.k = 5, s.batch = 2, s.pad = 1, s.beta = 1.f;
  const Data x = make_data(s, 41);
  DeviceBuffer A(encode(s.ab, x.A)), B(encode(s.ab, x.B)), C(encode(s.cd, x.C));
  DeviceBuffer D(encode(s.cd, x.D));
  std::atomic<bool> open{false};
  ASSERT_EQ(cudaLaunchHostFunc(
                stream_,
                [](void* p) {
                  while (!static_cast<std::atomic<bool>*>(p)->load()) std::this_thread::yield();
                },
                &open),
            cudaSuccess);
  {
    Desc desc;
    Layout la(s.ab, x.a), lb(s.ab, x.b), lc(s.cd, x.c), ld(s.cd, x.d);
    float alpha = s.alpha, beta = s.beta;
    ASSERT_EQ(cublasLtMatmul(handle_, desc, &alpha, A.get(), la, B.get(), lb, &beta, C.get(), lc,
                             D.get(), ld, nullptr, nullptr, 0, stream_),
              CUBLAS_STATUS_SUCCESS);
    alpha = beta = 0.f;  // read at the call (host pointer mode)
    desc.set(CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_T);
  }  // descriptors destroyed while the GEMM is still queued
  open = true;
  ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
  Outputs out;
  out.d = decode(s.cd, D.download());
  expect_reference(s, x, out);
}

// A bad pointer is found when the GEMM runs on the stream, and the fault names the operand.
// In the emulator's abort mode the report is printed as the process aborts; otherwise the error
// is sticky and printed here. Threadsafe death tests re-run the test in a fresh process, with
// its own stream threads.
class EmuCublasLtDeathTest : public EmuCublasLt {
 protected:
  [[noreturn]] void matmul_into_host_memory() {
    DeviceBuffer A(64), B(64);
    std::vector<float> host_d(16);  // host memory posing as D
    Desc desc;
    Layout l(CUDA_R_32F, Mat{4, 4, 4});
    const float alpha = 1.f, beta = 0.f;
    const cublasStatus_t st =
        cublasLtMatmul(handle_, desc, &alpha, A.get(), l, B.get(), l, &beta, nullptr, l,
                       host_d.data(), l, nullptr, nullptr, 0, stream_);
    if (st == CUBLAS_STATUS_SUCCESS && cudaStreamSynchronize(stream_) != cudaSuccess)
      std::fprintf(stderr, "%s\n", tessera::emu::sticky_report().c_str());
    std::abort();
  }
};

TEST_F(EmuCublasLtDeathTest, BadPointerFaultsOnTheStreamNamingTheOperand) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(matmul_into_host_memory(), "cublasLtMatmul: D");
}

}  // namespace
