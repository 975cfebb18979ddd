#include "kernels/cuda/matmul.h"

#include <cublasLt.h>

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <tuple>

#include "core/error.h"
#include "cuda/allocator.h"
#include "kernels/common/activation_math.h"
#include "kernels/cuda/cast.h"
#include "kernels/cuda/common.cuh"

namespace tessera::cuda {
namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;  // what cuBLASLt suggests for Hopper

cudaDataType_t lt_type(DType t, const char* what) {
  switch (t) {
    case DType::f32:
      return CUDA_R_32F;
    case DType::bf16:
      return CUDA_R_16BF;
    case DType::f16:
      return CUDA_R_16F;
    default:
      fail("cuda gemm: {} dtype {} unsupported (expected f32, bf16 or f16)", what, dtype_name(t));
  }
}

// The largest power of two <= 16 dividing the address: what the heuristic must assume.
uint32_t alignment(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 16;
  while (al > 1 && a % al) al /= 2;
  return al;
}

struct PlanKey {
  DType ab, c;
  int64_t batch, m, n, k;
  bool ta, tb, acc, tf32, aux;
  int epilogue;
  uint32_t al_a, al_b, al_c, al_aux;
  int device;
  auto tie() const {
    return std::tie(ab, c, batch, m, n, k, ta, tb, acc, tf32, aux, epilogue, al_a, al_b, al_c,
                    al_aux, device);
  }
  bool operator<(const PlanKey& o) const { return tie() < o.tie(); }
};

struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool fused = true;  // false: the epilogue is not in desc, run it as a separate pass
  ~Plan() {
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (lc) cublasLtMatrixLayoutDestroy(lc);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

struct State {
  std::mutex mu;
  std::map<int, cublasLtHandle_t> handles;
  std::map<std::pair<int, cudaStream_t>, void*> workspaces;
  std::map<PlanKey, std::unique_ptr<Plan>> plans;
  int64_t unfused = 0;
};
State& state() {
  static auto* s = new State();  // never destroyed: see device_allocator()
  return *s;
}

template <class V>
void set_desc(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, const V& v) {
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d, attr, &v, sizeof v));
}

cublasLtMatrixLayout_t layout(cudaDataType_t t, int64_t rows, int64_t cols, int64_t ld,
                              int64_t batch, int64_t stride) {
  cublasLtMatrixLayout_t l = nullptr;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, t, uint64_t(rows), uint64_t(cols), ld));
  if (batch > 1) {
    const int32_t bc = int32_t(batch);
    CUBLAS_CHECK(
        cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc));
    CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                                  &stride, sizeof stride));
  }
  return l;
}

cublasLtEpilogue_t lt_epilogue(const GemmArgs& g) {
  switch (g.epilogue) {
    case Epilogue::none:
      return CUBLASLT_EPILOGUE_DEFAULT;
    case Epilogue::bias:
      return CUBLASLT_EPILOGUE_BIAS;
    case Epilogue::bias_gelu:
      return g.gelu_aux ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_BIAS;
  }
  return CUBLASLT_EPILOGUE_DEFAULT;
}

// Builds the descriptors for the column-major product D [n, m] = X · Y, X from B, Y from A
// (see the header), with or without the epilogue, and asks the heuristic for an algorithm.
// Returns false when the heuristic offers none.
bool build(const GemmArgs& g, const PlanKey& key, cublasLtHandle_t h, bool with_epilogue, Plan& p) {
  const cudaDataType_t ab = lt_type(g.ab_type, "operand"), ct = lt_type(g.c_type, "output");
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  if (g.ab_type == DType::f32 && g.allow_tf32) compute = CUBLAS_COMPUTE_32F_FAST_TF32;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.desc, compute, CUDA_R_32F));
  const cublasOperation_t op_x = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_y = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  set_desc(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, op_x);
  set_desc(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, op_y);
  // X = B as stored: [k, n] row-major is col-major n x k (ld n); [n, k] is k x n (ld k).
  p.la = g.trans_b ? layout(ab, g.k, g.n, g.k, g.batch, g.n * g.k)
                   : layout(ab, g.n, g.k, g.n, g.batch, g.n * g.k);
  // Y = A as stored: [m, k] row-major is col-major k x m (ld k); [k, m] is m x k (ld m).
  p.lb = g.trans_a ? layout(ab, g.m, g.k, g.m, g.batch, g.m * g.k)
                   : layout(ab, g.k, g.m, g.k, g.batch, g.m * g.k);
  p.lc = layout(ct, g.n, g.m, g.n, g.batch, g.m * g.n);
  if (with_epilogue && g.epilogue != Epilogue::none) {
    set_desc(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, lt_epilogue(g));
    set_desc(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(g.bias));
    if (g.gelu_aux) {
      set_desc(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, g.gelu_aux);
      set_desc(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, int64_t(g.n));
      set_desc(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE, int64_t(g.m * g.n));
    }
  }
  cublasLtMatmulPreference_t pref = nullptr;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = kWorkspaceBytes;
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                    &ws, sizeof ws));
  const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> aligns[] = {
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.al_b},  // X is B
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.al_a},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.al_c},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.al_c}};
  for (const auto& [attr, v] : aligns)
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &v, sizeof v));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(h, p.desc, p.la, p.lb, p.lc, p.lc, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st == CUBLAS_STATUS_NOT_SUPPORTED || found == 0) return false;
  CUBLAS_CHECK(st);
  p.algo = result.algo;
  p.fused = with_epilogue || g.epilogue == Epilogue::none;
  return true;
}

// The epilogue as its own pass over row-major C [rows, n]: x = C + bias[col]; aux = x;
// C = gelu(x) for bias_gelu.
template <class T>
__global__ void epilogue_kernel(T* c, const float* bias, T* aux, bool gelu, int64_t total,
                                int64_t n) {
  TS_GRID_STRIDE(i, total) {
    float x = ld(c, i) + (bias ? bias[i % n] : 0.f);
    if (aux) st(aux, i, x);
    if (gelu) x = math::gelu_tanh(x);
    st(c, i, x);
  }
}

void run_epilogue(const GemmArgs& g, cudaStream_t s) {
  const int64_t total = g.batch * g.m * g.n;
  if (total == 0) return;
  const bool gelu = g.epilogue == Epilogue::bias_gelu;
  switch (g.c_type) {
    case DType::f32:
      launch<epilogue_kernel<float>>(grid_for(total), kThreads, 0, s, static_cast<float*>(g.c),
                                     g.bias, static_cast<float*>(g.gelu_aux), gelu, total, g.n);
      break;
    case DType::bf16:
      launch<epilogue_kernel<bf16>>(grid_for(total), kThreads, 0, s, static_cast<bf16*>(g.c),
                                    g.bias, static_cast<bf16*>(g.gelu_aux), gelu, total, g.n);
      break;
    default:
      launch<epilogue_kernel<f16>>(grid_for(total), kThreads, 0, s, static_cast<f16*>(g.c), g.bias,
                                   static_cast<f16*>(g.gelu_aux), gelu, total, g.n);
      break;
  }
  CUDA_CHECK_LAUNCH();
}

void check_args(const GemmArgs& g) {
  const char* what = g.label ? g.label : "gemm";
  TS_CHECK(g.m >= 0 && g.n >= 0 && g.k >= 0 && g.batch >= 1,
           "cuda {}: bad sizes batch {} m {} n {} k {}", what, g.batch, g.m, g.n, g.k);
  TS_CHECK(g.c != nullptr && (g.k == 0 || (g.a && g.b)), "cuda {}: null operand", what);
  TS_CHECK(g.epilogue == Epilogue::none || g.bias != nullptr,
           "cuda {}: epilogue with bias needs a bias pointer", what);
  TS_CHECK(g.gelu_aux == nullptr || g.epilogue == Epilogue::bias_gelu,
           "cuda {}: gelu_aux is only written by the bias_gelu epilogue", what);
  TS_CHECK(g.batch * g.m <= INT32_MAX && g.n <= INT32_MAX && g.k <= INT32_MAX,
           "cuda {}: sizes m {} n {} k {} beyond cuBLASLt's 32-bit batch count / dims", what, g.m,
           g.n, g.k);
}

// A pooled f32 buffer released in stream order (also when a call throws).
struct PooledF32 {
  PooledF32(int64_t n, cudaStream_t s)
      : bytes(size_t(n) * sizeof(float)),
        p(static_cast<float*>(device_allocator().allocate_on(bytes, s))) {}
  ~PooledF32() { device_allocator().release(p, bytes); }
  PooledF32(const PooledF32&) = delete;
  PooledF32& operator=(const PooledF32&) = delete;
  size_t bytes;
  float* p;
};

// cuBLASLt has no GEMM from f32 operands to a 16-bit output (its type table pairs f32 A/B with
// f32 C/D only; found by the emulated device, whose cuBLASLt refuses what the real one does):
// compute the product and the epilogue in f32, then round C (and the GELU input) once.
void gemm_f32_to_16bit(const GemmArgs& g, cudaStream_t s) {
  const int64_t total = g.batch * g.m * g.n;
  PooledF32 c32(total, s);
  std::optional<PooledF32> aux32;
  if (g.gelu_aux) aux32.emplace(total, s);
  if (g.accumulate) cast(g.c, g.c_type, c32.p, DType::f32, total, s);
  GemmArgs f = g;
  f.c_type = DType::f32;
  f.c = c32.p;
  f.gelu_aux = aux32 ? aux32->p : nullptr;
  gemm(f, s);
  cast(c32.p, DType::f32, g.c, g.c_type, total, s);
  if (aux32) cast(aux32->p, DType::f32, g.gelu_aux, g.c_type, total, s);
}

}  // namespace

void gemm(const GemmArgs& g, cudaStream_t s) {
  check_args(g);
  if (g.ab_type == DType::f32 && g.c_type != DType::f32 && g.k > 0 && g.m > 0 && g.n > 0)
    return gemm_f32_to_16bit(g, s);
  if (g.m == 0 || g.n == 0) return;
  if (g.k == 0) {  // A·B is all zeros: C = 0 (or unchanged), then the epilogue
    if (!g.accumulate)
      CUDA_CHECK(cudaMemsetAsync(g.c, 0, size_t(g.batch * g.m * g.n) * dtype_size(g.c_type), s));
    if (g.epilogue != Epilogue::none) run_epilogue(g, s);
    return;
  }
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  // The fused epilogue needs an f32 output (the bias is f32, cuBLASLt wants it in D's type),
  // and a GELU input matrix needs a leading dimension divisible by 8.
  const bool try_fused = g.epilogue != Epilogue::none && g.c_type == DType::f32 &&
                         (g.gelu_aux == nullptr || g.n % 8 == 0);
  PlanKey key{g.ab_type,
              g.c_type,
              g.batch,
              g.m,
              g.n,
              g.k,
              g.trans_a,
              g.trans_b,
              g.accumulate,
              g.allow_tf32,
              g.gelu_aux != nullptr,
              int(g.epilogue),
              alignment(g.a),
              alignment(g.b),
              alignment(g.c),
              g.gelu_aux ? alignment(g.gelu_aux) : 16u,
              device};
  State& S = state();
  std::lock_guard<std::mutex> lock(S.mu);  // plans' descriptors carry per-call pointers
  cublasLtHandle_t& h = S.handles[device];
  if (!h) CUBLAS_CHECK(cublasLtCreate(&h));
  void*& ws = S.workspaces[{device, s}];
  if (!ws) ws = device_allocator().allocate_on(kWorkspaceBytes, s);
  std::unique_ptr<Plan>& plan = S.plans[key];
  if (!plan) {
    auto p = std::make_unique<Plan>();
    bool ok = try_fused && build(g, key, h, true, *p);
    if (!ok) {
      p = std::make_unique<Plan>();
      ok = build(g, key, h, false, *p);
    }
    TS_CHECK(ok,
             "cuda {}: cuBLASLt has no algorithm for {} x {} x {} (batch {}, {} operands, {} "
             "output, trans_a {}, trans_b {})",
             g.label ? g.label : "gemm", g.m, g.n, g.k, g.batch, dtype_name(g.ab_type),
             dtype_name(g.c_type), g.trans_a, g.trans_b);
    plan = std::move(p);
  }
  if (plan->fused && g.epilogue != Epilogue::none) {
    set_desc(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(g.bias));
    if (g.gelu_aux) set_desc(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, g.gelu_aux);
  }
  const float alpha = 1.f, beta = g.accumulate ? 1.f : 0.f;
  CUBLAS_CHECK(cublasLtMatmul(h, plan->desc, &alpha, g.b, plan->la, g.a, plan->lb, &beta, g.c,
                              plan->lc, g.c, plan->lc, &plan->algo, ws, kWorkspaceBytes, s));
  if (!plan->fused) {
    ++S.unfused;
    run_epilogue(g, s);
  }
}

void gemm(const kernels::GemmArgs& g, cudaStream_t s) {
  GemmArgs d;
  d.batch = g.batch, d.m = g.m, d.n = g.n, d.k = g.k;
  d.trans_a = g.trans_a, d.trans_b = g.trans_b, d.ab_type = g.ab_type;
  d.a = g.a, d.b = g.b;
  if (g.bias) d.epilogue = Epilogue::bias, d.bias = g.bias;
  d.c_type = DType::f32, d.c = g.c, d.accumulate = g.accumulate;
  d.label = g.label;
  gemm(d, s);
}

int64_t gemm_plan_count() {
  std::lock_guard<std::mutex> lock(state().mu);
  return int64_t(state().plans.size());
}

int64_t gemm_unfused_epilogue_count() {
  std::lock_guard<std::mutex> lock(state().mu);
  return state().unfused;
}

}  // namespace tessera::cuda
