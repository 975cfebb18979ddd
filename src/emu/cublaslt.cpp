// The emulated cuBLASLt (see include/cublasLt.h for what it covers).
//
// Host side: every call validates what cuBLASLt validates (live handles and descriptors, sizes of
// attribute values, dimensions that agree, leading dimensions, batch counts) and answers with the
// same statuses, so Tessera's error paths run here as on a GPU. cublasLtMatmul then copies the
// descriptors' contents and queues the GEMM on the stream: the caller may destroy or change the
// descriptors at once, and the host must synchronise before reading D, as on a GPU.
//
// Device side (the queued task): every range the GEMM touches is checked against the live device
// allocations first (a bad pointer faults, naming the operand), then a plain reference GEMM runs
// from the layouts alone: operands widened exactly to f32 (TF32-rounded under
// CUBLAS_COMPUTE_32F_FAST_TF32), products summed in f32 in k order, alpha, beta * C, bias and
// GELU applied in f32, results rounded once to D's type. That is a GPU's result up to the order
// of the f32 sums.
#include <cublasLt.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

#include "core/half.h"
#include "emu/device.h"
#include "kernels/common/activation_math.h"

// The opaque types of the header. Fields hold each attribute in the C type cuBLASLt documents
// for it, so that SetAttribute's size check is the library's.
struct cublasLtContext {};

struct cublasLtMatmulDescOpaque_t {
  int32_t compute_type = CUBLAS_COMPUTE_32F;
  int32_t scale_type = CUDA_R_32F;
  int32_t pointer_mode = CUBLASLT_POINTER_MODE_HOST;
  int32_t transa = CUBLAS_OP_N;
  int32_t transb = CUBLAS_OP_N;
  int32_t transc = CUBLAS_OP_N;
  uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
  int64_t bias_batch_stride = 0;
  void* aux = nullptr;
  int64_t aux_ld = 0;
  int64_t aux_batch_stride = 0;
  int32_t aux_type = -1;  // -1: D's type
  int32_t bias_type = -1;
};

struct cublasLtMatrixLayoutOpaque_t {
  uint32_t type = CUDA_R_32F;
  int32_t order = CUBLASLT_ORDER_COL;
  uint64_t rows = 0;
  uint64_t cols = 0;
  int64_t ld = 0;
  int32_t batch_count = 1;
  int64_t batch_stride = 0;
};

struct cublasLtMatmulPreferenceOpaque_t {
  uint32_t search_mode = 0;
  uint64_t max_workspace = 0;
  uint32_t min_alignment[4] = {256, 256, 256, 256};  // A, B, C, D
};

namespace tessera::emu {
namespace {

// ---- live objects ----

// The handles and descriptors created and not yet destroyed, so that a destroyed or made-up one
// is refused with a status instead of being read (cuBLASLt itself would read freed memory).
template <class T>
class LiveSet {
 public:
  void add(const T* p) {
    std::lock_guard<std::mutex> lock(mu_);
    live_.insert(p);
  }
  bool remove(const T* p) {
    std::lock_guard<std::mutex> lock(mu_);
    return live_.erase(p) == 1;
  }
  bool contains(const T* p) {
    std::lock_guard<std::mutex> lock(mu_);
    return live_.count(p) == 1;
  }

 private:
  std::mutex mu_;
  std::unordered_set<const T*> live_;
};

template <class T>
LiveSet<T>& live() {
  static auto* s = new LiveSet<T>();  // never destroyed: descriptors may outlive static teardown
  return *s;
}

template <class T>
cublasStatus_t create(T** out) {
  if (!out) return CUBLAS_STATUS_INVALID_VALUE;
  *out = new T();
  live<T>().add(*out);
  return CUBLAS_STATUS_SUCCESS;
}

// Destroying nullptr is a no-op, as for cudaFree; destroying twice is an error.
template <class T>
cublasStatus_t destroy(T* p) {
  if (!p) return CUBLAS_STATUS_SUCCESS;
  if (!live<T>().remove(p)) return CUBLAS_STATUS_INVALID_VALUE;
  delete p;
  return CUBLAS_STATUS_SUCCESS;
}

template <class T>
bool is_live(const T* p) {
  return p && live<T>().contains(p);
}

// ---- attributes ----

// Where an attribute is stored and its size; {nullptr, 0} for one the emulator does not model.
struct Field {
  void* p = nullptr;
  size_t size = 0;
};
template <class V>
Field field(V& v) {
  return Field{&v, sizeof v};
}

Field desc_field(cublasLtMatmulDescOpaque_t& d, cublasLtMatmulDescAttributes_t attr) {
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_COMPUTE_TYPE:
      return field(d.compute_type);
    case CUBLASLT_MATMUL_DESC_SCALE_TYPE:
      return field(d.scale_type);
    case CUBLASLT_MATMUL_DESC_POINTER_MODE:
      return field(d.pointer_mode);
    case CUBLASLT_MATMUL_DESC_TRANSA:
      return field(d.transa);
    case CUBLASLT_MATMUL_DESC_TRANSB:
      return field(d.transb);
    case CUBLASLT_MATMUL_DESC_TRANSC:
      return field(d.transc);
    case CUBLASLT_MATMUL_DESC_EPILOGUE:
      return field(d.epilogue);
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
      return field(d.bias);
    case CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE:
      return field(d.bias_batch_stride);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER:
      return field(d.aux);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD:
      return field(d.aux_ld);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE:
      return field(d.aux_batch_stride);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE:
      return field(d.aux_type);
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE:
      return field(d.bias_type);
  }
  return {};
}

Field layout_field(cublasLtMatrixLayoutOpaque_t& l, cublasLtMatrixLayoutAttribute_t attr) {
  switch (attr) {
    case CUBLASLT_MATRIX_LAYOUT_TYPE:
      return field(l.type);
    case CUBLASLT_MATRIX_LAYOUT_ORDER:
      return field(l.order);
    case CUBLASLT_MATRIX_LAYOUT_ROWS:
      return field(l.rows);
    case CUBLASLT_MATRIX_LAYOUT_COLS:
      return field(l.cols);
    case CUBLASLT_MATRIX_LAYOUT_LD:
      return field(l.ld);
    case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT:
      return field(l.batch_count);
    case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET:
      return field(l.batch_stride);
  }
  return {};
}

Field pref_field(cublasLtMatmulPreferenceOpaque_t& p, cublasLtMatmulPreferenceAttributes_t attr) {
  switch (attr) {
    case CUBLASLT_MATMUL_PREF_SEARCH_MODE:
      return field(p.search_mode);
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
      return field(p.max_workspace);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
      return field(p.min_alignment[0]);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
      return field(p.min_alignment[1]);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
      return field(p.min_alignment[2]);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES:
      return field(p.min_alignment[3]);
  }
  return {};
}

// An attribute number outside the modelled set is a real cuBLASLt attribute the emulator lacks
// (the header declares only modelled ones): not supported, rather than silently ignored.
cublasStatus_t set_field(Field f, const void* buf, size_t size) {
  if (!f.p) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (!buf || size != f.size) return CUBLAS_STATUS_INVALID_VALUE;
  std::memcpy(f.p, buf, size);
  return CUBLAS_STATUS_SUCCESS;
}

// size 0 asks for the size needed (in *written), as in cuBLASLt.
cublasStatus_t get_field(Field f, void* buf, size_t size, size_t* written) {
  if (!f.p) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (size == 0) {
    if (!written) return CUBLAS_STATUS_INVALID_VALUE;
    *written = f.size;
    return CUBLAS_STATUS_SUCCESS;
  }
  if (!buf || size != f.size) return CUBLAS_STATUS_INVALID_VALUE;
  std::memcpy(buf, f.p, size);
  if (written) *written = f.size;
  return CUBLAS_STATUS_SUCCESS;
}

// ---- the problem a matmul call describes ----

constexpr int64_t kMaxDim = std::numeric_limits<int32_t>::max();  // cuBLASLt's dims are 32-bit

bool element_type(int64_t t) {
  return t == CUDA_R_32F || t == CUDA_R_16F || t == CUDA_R_16BF;
}
size_t element_size(cudaDataType_t t) {
  return t == CUDA_R_32F ? 4 : 2;
}

// One matrix as the GEMM reads or writes it: column-major, `stride` elements between batch
// entries.
struct Matrix {
  cudaDataType_t type = CUDA_R_32F;
  int64_t rows = 0, cols = 0, ld = 0, stride = 0;
};

// Everything the task needs, by value: the descriptors' contents at the time of the call.
struct Gemm {
  int64_t m = 0, n = 0, k = 0, batch = 1;
  bool trans_a = false, trans_b = false, tf32 = false;
  Matrix a, b, c, d;
  bool bias = false, gelu = false, aux = false;
  Matrix bias_vec;  // m x 1 per batch entry
  Matrix aux_mat;   // m x n per batch entry, aux ld and stride
};

// The elements a batched matrix spans from its first one (0 when empty); false on overflow.
bool span_elements(const Matrix& x, int64_t batch, int64_t* out) {
  if (x.rows == 0 || x.cols == 0) {
    *out = 0;
    return true;
  }
  int64_t last_col = 0, last_batch = 0, total = 0;
  if (__builtin_mul_overflow(x.cols - 1, x.ld, &last_col) ||
      __builtin_mul_overflow(batch - 1, x.stride, &last_batch) ||
      __builtin_add_overflow(last_col, last_batch, &total) ||
      __builtin_add_overflow(total, x.rows, &total))
    return false;
  *out = total;
  return true;
}

cublasStatus_t check_matrix(const Matrix& x, int64_t batch) {
  if (x.ld < std::max<int64_t>(1, x.rows)) return CUBLAS_STATUS_INVALID_VALUE;
  // Negative batch strides are legal in cuBLASLt but unused by Tessera; not modelled.
  if (x.stride < 0) return CUBLAS_STATUS_NOT_SUPPORTED;
  int64_t span = 0;
  return span_elements(x, batch, &span) ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t to_matrix(const cublasLtMatrixLayoutOpaque_t& l, Matrix* out) {
  if (!element_type(l.type)) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (l.rows > uint64_t(kMaxDim) || l.cols > uint64_t(kMaxDim)) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (l.batch_count < 1) return CUBLAS_STATUS_INVALID_VALUE;
  *out = Matrix{cudaDataType_t(l.type), int64_t(l.rows), int64_t(l.cols), l.ld, l.batch_stride};
  return check_matrix(*out, l.batch_count);
}

// The type combinations cuBLASLt offers for a 32F compute type with f32 scale: A and B alike,
// C and D alike, output f32 or the operands' own 16-bit type; TF32 only for f32 operands.
cublasStatus_t check_types(const cublasLtMatmulDescOpaque_t& desc, const Gemm& g) {
  if (desc.scale_type != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (desc.pointer_mode != CUBLASLT_POINTER_MODE_HOST) return CUBLAS_STATUS_NOT_SUPPORTED;
  switch (desc.compute_type) {
    case CUBLAS_COMPUTE_32F:
    case CUBLAS_COMPUTE_32F_PEDANTIC:
      break;
    case CUBLAS_COMPUTE_32F_FAST_TF32:
      if (g.a.type != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
      break;
    default:
      return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  if (g.a.type != g.b.type || g.c.type != g.d.type) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (g.d.type != CUDA_R_32F && g.d.type != g.a.type) return CUBLAS_STATUS_NOT_SUPPORTED;
  return CUBLAS_STATUS_SUCCESS;
}

// op(X) for a TRANSA / TRANSB value: false for N, true for T (and C: real types have no
// conjugate); anything else is refused.
bool transpose_of(int32_t op, bool* trans) {
  if (op != CUBLAS_OP_N && op != CUBLAS_OP_T && op != CUBLAS_OP_C) return false;
  *trans = op != CUBLAS_OP_N;
  return true;
}

// Bias and aux descriptions for the epilogue; the aux (GELU input) matrix must have an ld and a
// batch stride divisible by 8 and an ld no smaller than D's rows, as cuBLASLt requires.
cublasStatus_t describe_epilogue(const cublasLtMatmulDescOpaque_t& desc, Gemm* g) {
  switch (desc.epilogue) {
    case CUBLASLT_EPILOGUE_DEFAULT:
      break;
    case CUBLASLT_EPILOGUE_BIAS:
      g->bias = true;
      break;
    case CUBLASLT_EPILOGUE_GELU:
      g->gelu = true;
      break;
    case CUBLASLT_EPILOGUE_GELU_BIAS:
      g->gelu = g->bias = true;
      break;
    case CUBLASLT_EPILOGUE_GELU_AUX:
      g->gelu = g->aux = true;
      break;
    case CUBLASLT_EPILOGUE_GELU_AUX_BIAS:
      g->gelu = g->aux = g->bias = true;
      break;
    default:
      return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  if (g->bias) {
    const int32_t t = desc.bias_type == -1 ? int32_t(g->d.type) : desc.bias_type;
    if (!element_type(t)) return CUBLAS_STATUS_NOT_SUPPORTED;
    g->bias_vec =
        Matrix{cudaDataType_t(t), g->m, 1, std::max<int64_t>(1, g->m), desc.bias_batch_stride};
    if (const cublasStatus_t st = check_matrix(g->bias_vec, g->batch); st != CUBLAS_STATUS_SUCCESS)
      return st;
  }
  if (g->aux) {
    const int32_t t = desc.aux_type == -1 ? int32_t(g->d.type) : desc.aux_type;
    if (!element_type(t)) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (desc.aux_ld % 8 != 0 || desc.aux_batch_stride % 8 != 0) return CUBLAS_STATUS_INVALID_VALUE;
    g->aux_mat = Matrix{cudaDataType_t(t), g->m, g->n, desc.aux_ld, desc.aux_batch_stride};
    if (const cublasStatus_t st = check_matrix(g->aux_mat, g->batch); st != CUBLAS_STATUS_SUCCESS)
      return st;
  }
  return CUBLAS_STATUS_SUCCESS;
}

// Reads the descriptors into a Gemm and checks them as cuBLASLt does: INVALID_VALUE for a
// configuration that cannot be right (dims that disagree, ld < rows, batch counts that differ),
// NOT_SUPPORTED for one that is valid but outside what is modelled.
cublasStatus_t describe(const cublasLtMatmulDescOpaque_t* desc,
                        const cublasLtMatrixLayoutOpaque_t* const layouts[4], Gemm* g) {
  if (!is_live(desc)) return CUBLAS_STATUS_INVALID_VALUE;
  for (int i = 0; i < 4; ++i)
    if (!is_live(layouts[i])) return CUBLAS_STATUS_INVALID_VALUE;
  for (int i = 0; i < 4; ++i)
    if (layouts[i]->batch_count != layouts[0]->batch_count) return CUBLAS_STATUS_INVALID_VALUE;
  g->batch = layouts[0]->batch_count;
  Matrix* const mats[4] = {&g->a, &g->b, &g->c, &g->d};
  for (int i = 0; i < 4; ++i)
    if (const cublasStatus_t st = to_matrix(*layouts[i], mats[i]); st != CUBLAS_STATUS_SUCCESS)
      return st;
  if (!transpose_of(desc->transa, &g->trans_a) || !transpose_of(desc->transb, &g->trans_b))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (desc->transc != CUBLAS_OP_N) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (const cublasStatus_t st = check_types(*desc, *g); st != CUBLAS_STATUS_SUCCESS) return st;
  g->tf32 = desc->compute_type == CUBLAS_COMPUTE_32F_FAST_TF32;

  // D is m x n; op(A) must be m x k, op(B) k x n, C m x n.
  g->m = g->d.rows;
  g->n = g->d.cols;
  g->k = g->trans_a ? g->a.rows : g->a.cols;
  const int64_t a_rows = g->trans_a ? g->a.cols : g->a.rows;
  const int64_t b_rows = g->trans_b ? g->b.cols : g->b.rows;
  const int64_t b_cols = g->trans_b ? g->b.rows : g->b.cols;
  if (a_rows != g->m || b_rows != g->k || b_cols != g->n || g->c.rows != g->m || g->c.cols != g->n)
    return CUBLAS_STATUS_INVALID_VALUE;
  return describe_epilogue(*desc, g);
}

// Heuristic results carry this mark so that cublasLtMatmul can tell an algorithm from the
// heuristic from an uninitialised one.
constexpr uint64_t kAlgoMark = 0x54534c5441474f31ull;  // "TSLTAGO1"

// ---- the device task ----

// The operands' addresses and the values read at the call (host pointer mode).
struct Operands {
  const void* a = nullptr;
  const void* b = nullptr;
  const void* c = nullptr;
  void* d = nullptr;
  const void* bias = nullptr;
  void* aux = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  float alpha = 0.f, beta = 0.f;
};

float load(const void* base, cudaDataType_t t, int64_t i) {
  switch (t) {
    case CUDA_R_16BF:
      return bf16_to_float(static_cast<const bf16*>(base)[i]);
    case CUDA_R_16F:
      return f16_to_float(static_cast<const f16*>(base)[i]);
    default:
      return static_cast<const float*>(base)[i];
  }
}

void store(void* base, cudaDataType_t t, int64_t i, float v) {
  switch (t) {
    case CUDA_R_16BF:
      static_cast<bf16*>(base)[i] = float_to_bf16(v);
      break;
    case CUDA_R_16F:
      static_cast<f16*>(base)[i] = float_to_f16(v);
      break;
    default:
      static_cast<float*>(base)[i] = v;
      break;
  }
}

// f32 -> TF32 (10 mantissa bits), round to nearest even; infinities and NaN unchanged.
float round_to_tf32(float x) {
  uint32_t u = float_to_bits(x);
  if ((u & 0x7f800000u) == 0x7f800000u) return x;
  u += 0xfffu + ((u >> 13) & 1u);
  return bits_to_float(u & ~0x1fffu);
}

void check_range(const void* p, const Matrix& x, int64_t batch, Access access,
                 const char* operand) {
  int64_t span = 0;
  span_elements(x, batch, &span);  // cannot overflow: describe() checked it
  check_device_range(p, size_t(span) * element_size(x.type), access,
                     std::string("cublasLtMatmul: ") + operand);
}

// Everything the GEMM will touch, before it touches anything: a GPU faults at the first bad
// access, the emulator reports it here, naming the operand.
void check_ranges(const Gemm& g, const Operands& p) {
  if (g.k > 0) {
    check_range(p.a, g.a, g.batch, Access::read, "A");
    check_range(p.b, g.b, g.batch, Access::read, "B");
  }
  if (p.beta != 0.f) check_range(p.c, g.c, g.batch, Access::read, "C");
  check_range(p.d, g.d, g.batch, Access::write, "D");
  if (g.bias) check_range(p.bias, g.bias_vec, g.batch, Access::read, "bias");
  if (g.aux) check_range(p.aux, g.aux_mat, g.batch, Access::write, "epilogue aux");
  check_device_range(p.workspace, p.workspace_bytes, Access::write, "cublasLtMatmul: workspace");
}

// op(X) of batch entry `e` as a dense column-major rows x cols f32 matrix.
void widen_op(const void* base, const Matrix& x, int64_t e, bool trans, bool tf32, int64_t rows,
              int64_t cols, std::vector<float>& out) {
  const int64_t first = e * x.stride;
  for (int64_t j = 0; j < cols; ++j)
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t at = trans ? first + j + i * x.ld : first + i + j * x.ld;
      const float v = load(base, x.type, at);
      out[size_t(i + j * rows)] = tf32 ? round_to_tf32(v) : v;
    }
}

// acc (m x n) = a (m x k) b (k x n), all dense column-major: for each column of the result,
// add column p of `a` scaled by b(p, j), so the inner loop runs over contiguous memory.
void multiply(const std::vector<float>& a, const std::vector<float>& b, int64_t m, int64_t n,
              int64_t k, std::vector<float>& acc) {
  std::fill(acc.begin(), acc.end(), 0.f);
  for (int64_t j = 0; j < n; ++j) {
    float* out = acc.data() + j * m;
    for (int64_t p = 0; p < k; ++p) {
      const float bv = b[size_t(p + j * k)];
      const float* col = a.data() + p * m;
      for (int64_t i = 0; i < m; ++i) out[i] += col[i] * bv;
    }
  }
}

// D = epilogue(alpha acc + beta C) for batch entry `e`. C is read only when beta != 0 (it may
// be uninitialised otherwise), and each element of C is read before the same element of D is
// written, so C == D works.
void finish(const Gemm& g, const Operands& p, int64_t e, const std::vector<float>& acc) {
  for (int64_t j = 0; j < g.n; ++j)
    for (int64_t i = 0; i < g.m; ++i) {
      float x = p.alpha * acc[size_t(i + j * g.m)];
      if (p.beta != 0.f) x += p.beta * load(p.c, g.c.type, e * g.c.stride + i + j * g.c.ld);
      if (g.bias) x += load(p.bias, g.bias_vec.type, e * g.bias_vec.stride + i);
      if (g.aux) store(p.aux, g.aux_mat.type, e * g.aux_mat.stride + i + j * g.aux_mat.ld, x);
      if (g.gelu) x = math::gelu_tanh(x);
      store(p.d, g.d.type, e * g.d.stride + i + j * g.d.ld, x);
    }
}

void run_gemm(const Gemm& g, const Operands& p) {
  check_ranges(g, p);
  std::vector<float> a(size_t(g.m * g.k)), b(size_t(g.k * g.n)), acc(size_t(g.m * g.n));
  for (int64_t e = 0; e < g.batch; ++e) {
    widen_op(p.a, g.a, e, g.trans_a, g.tf32, g.m, g.k, a);
    widen_op(p.b, g.b, e, g.trans_b, g.tf32, g.k, g.n, b);
    multiply(a, b, g.m, g.n, g.k, acc);
    finish(g, p, e, acc);
  }
}

}  // namespace
}  // namespace tessera::emu

using tessera::emu::create;
using tessera::emu::destroy;
using tessera::emu::is_live;

// ---- the API ----

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  return create(handle);
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  return destroy(handle) == CUBLAS_STATUS_SUCCESS ? CUBLAS_STATUS_SUCCESS
                                                  : CUBLAS_STATUS_NOT_INITIALIZED;
}

const char* cublasLtGetStatusName(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR:
      return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR:
      return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR:
      return "CUBLAS_STATUS_LICENSE_ERROR";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

const char* cublasLtGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "the handle is not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "an invalid value was passed";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "the device does not support the operation";
    case CUBLAS_STATUS_MAPPING_ERROR:
      return "device memory access failed";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "the device failed to run the operation";
    case CUBLAS_STATUS_INTERNAL_ERROR:
      return "internal error";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "the configuration is not supported";
    case CUBLAS_STATUS_LICENSE_ERROR:
      return "license error";
  }
  return "unknown status";
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute,
                                        cudaDataType_t scale) {
  if (const cublasStatus_t st = create(desc); st != CUBLAS_STATUS_SUCCESS) return st;
  (*desc)->compute_type = compute;
  (*desc)->scale_type = scale;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  return destroy(desc);
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                                              cublasLtMatmulDescAttributes_t attr, const void* buf,
                                              size_t size) {
  if (!is_live(desc)) return CUBLAS_STATUS_INVALID_VALUE;
  return tessera::emu::set_field(tessera::emu::desc_field(*desc, attr), buf, size);
}

cublasStatus_t cublasLtMatmulDescGetAttribute(cublasLtMatmulDesc_t desc,
                                              cublasLtMatmulDescAttributes_t attr, void* buf,
                                              size_t size, size_t* written) {
  if (!is_live(desc)) return CUBLAS_STATUS_INVALID_VALUE;
  return tessera::emu::get_field(tessera::emu::desc_field(*desc, attr), buf, size, written);
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType_t type,
                                          uint64_t rows, uint64_t cols, int64_t ld) {
  if (const cublasStatus_t st = create(layout); st != CUBLAS_STATUS_SUCCESS) return st;
  (*layout)->type = uint32_t(type);
  (*layout)->rows = rows;
  (*layout)->cols = cols;
  (*layout)->ld = ld;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  return destroy(layout);
}

cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t layout,
                                                cublasLtMatrixLayoutAttribute_t attr,
                                                const void* buf, size_t size) {
  if (!is_live(layout)) return CUBLAS_STATUS_INVALID_VALUE;
  // Only column-major is modelled: refuse other orders here, before they are stored.
  if (attr == CUBLASLT_MATRIX_LAYOUT_ORDER && buf && size == sizeof(int32_t)) {
    int32_t order = 0;
    std::memcpy(&order, buf, sizeof order);
    if (order != CUBLASLT_ORDER_COL) return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  return tessera::emu::set_field(tessera::emu::layout_field(*layout, attr), buf, size);
}

cublasStatus_t cublasLtMatrixLayoutGetAttribute(cublasLtMatrixLayout_t layout,
                                                cublasLtMatrixLayoutAttribute_t attr, void* buf,
                                                size_t size, size_t* written) {
  if (!is_live(layout)) return CUBLAS_STATUS_INVALID_VALUE;
  return tessera::emu::get_field(tessera::emu::layout_field(*layout, attr), buf, size, written);
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  return create(pref);
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  return destroy(pref);
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void* buf, size_t size) {
  if (!is_live(pref)) return CUBLAS_STATUS_INVALID_VALUE;
  return tessera::emu::set_field(tessera::emu::pref_field(*pref, attr), buf, size);
}

cublasStatus_t cublasLtMatmulPreferenceGetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    void* buf, size_t size, size_t* written) {
  if (!is_live(pref)) return CUBLAS_STATUS_INVALID_VALUE;
  return tessera::emu::get_field(tessera::emu::pref_field(*pref, attr), buf, size, written);
}

// The one "algorithm" is the reference GEMM: it needs no workspace and no particular alignment,
// so the workspace limit and the alignment preferences never exclude it (on a GPU they select
// among kernels; they do not change the result).
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(
    cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t Adesc,
    cublasLtMatrixLayout_t Bdesc, cublasLtMatrixLayout_t Cdesc, cublasLtMatrixLayout_t Ddesc,
    cublasLtMatmulPreference_t pref, int requested, cublasLtMatmulHeuristicResult_t results[],
    int* returned) {
  if (!is_live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (returned) *returned = 0;
  if (!is_live(pref) || requested <= 0 || !results || !returned) return CUBLAS_STATUS_INVALID_VALUE;
  const cublasLtMatrixLayoutOpaque_t* const layouts[4] = {Adesc, Bdesc, Cdesc, Ddesc};
  tessera::emu::Gemm g;
  if (const cublasStatus_t st = tessera::emu::describe(desc, layouts, &g);
      st != CUBLAS_STATUS_SUCCESS)
    return st;
  results[0] = cublasLtMatmulHeuristicResult_t{};
  results[0].algo.data[0] = tessera::emu::kAlgoMark;
  results[0].workspaceSize = 0;
  results[0].state = CUBLAS_STATUS_SUCCESS;
  results[0].wavesCount = 1.f;
  *returned = 1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void* alpha,
                              const void* A, cublasLtMatrixLayout_t Adesc, const void* B,
                              cublasLtMatrixLayout_t Bdesc, const void* beta, const void* C,
                              cublasLtMatrixLayout_t Cdesc, void* D, cublasLtMatrixLayout_t Ddesc,
                              const cublasLtMatmulAlgo_t* algo, void* workspace,
                              size_t workspace_bytes, cudaStream_t stream) {
  using namespace tessera::emu;
  if (!is_live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  const cublasLtMatrixLayoutOpaque_t* const layouts[4] = {Adesc, Bdesc, Cdesc, Ddesc};
  Gemm g;
  if (const cublasStatus_t st = describe(desc, layouts, &g); st != CUBLAS_STATUS_SUCCESS) return st;
  if (!alpha || !beta) return CUBLAS_STATUS_INVALID_VALUE;
  // nullptr lets cuBLASLt choose; anything else must come from the heuristic.
  if (algo && algo->data[0] != kAlgoMark) return CUBLAS_STATUS_INVALID_VALUE;
  if (workspace_bytes > 0 && !workspace) return CUBLAS_STATUS_INVALID_VALUE;
  // In place needs C and D laid out alike: otherwise writing D could overwrite elements of C
  // not yet read, which no GPU kernel orders.
  if (C == D && (g.c.ld != g.d.ld || g.c.stride != g.d.stride)) return CUBLAS_STATUS_INVALID_VALUE;

  Operands p;
  p.a = A;
  p.b = B;
  p.c = C;
  p.d = D;
  p.bias = desc->bias;
  p.aux = desc->aux;
  p.workspace = workspace;
  p.workspace_bytes = workspace_bytes;
  std::memcpy(&p.alpha, alpha, sizeof(float));  // host pointer mode: read now, as cuBLASLt does
  std::memcpy(&p.beta, beta, sizeof(float));
  if (g.m == 0 || g.n == 0) return CUBLAS_STATUS_SUCCESS;  // D is empty: nothing to run
  enqueue(stream, "cublasLtMatmul", [g, p] { run_gemm(g, p); });
  return CUBLAS_STATUS_SUCCESS;
}
