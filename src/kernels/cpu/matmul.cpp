#include "kernels/cpu/matmul.h"

#include <dnnl.hpp>
#include <mutex>
#include <string>
#include <unordered_map>

#include "core/allocator.h"
#include "core/cpu_peak.h"
#include "core/error.h"
#include "core/profiler.h"
#include "kernels/cpu/cast.h"

namespace tessera::cpu {
namespace {

using dnnl::memory;

struct Key {
  int64_t batch, m, n, k;
  bool ta, tb, bias, acc;
  DType t;
  bool operator==(const Key&) const = default;
};
struct KeyHash {
  size_t operator()(const Key& k) const {
    size_t h = std::hash<int64_t>()(k.batch);
    for (int64_t v : {k.m, k.n, k.k}) h = h * 1000003u ^ std::hash<int64_t>()(v);
    return h * 31 + (k.ta | k.tb << 1 | k.bias << 2 | k.acc << 3 | int(k.t) << 4);
  }
};

struct Prim {
  dnnl::matmul prim;
  memory::desc a, b, bias, c;
  std::string impl;  // oneDNN's implementation ("brg:avx512_core_bf16", "gemm:jit")
  std::string name;  // "linear_dw 768x3072x256 bf16 ta [gemm:jit]": the profiler's label
};

struct Context {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{eng};
  std::mutex mu;
  std::unordered_map<Key, Prim, KeyHash> cache;
};

Context& ctx() {
  static Context* c = new Context();  // never destroyed: used from static destructors' era
  return *c;
}

memory::desc matrix_desc(int64_t batch, int64_t rows, int64_t cols, bool transposed,
                         memory::data_type dt, int64_t batch_stride_pad = 0) {
  // Logical [batch, rows, cols]; stored either row-major or as its transpose.
  memory::dims dims{batch, rows, cols};
  const int64_t bs = rows * cols + batch_stride_pad;
  memory::dims strides = transposed ? memory::dims{bs, 1, rows} : memory::dims{bs, cols, 1};
  return memory::desc(dims, dt, strides);
}

Prim build(const Key& k) {
  auto dt = k.t == DType::bf16 ? memory::data_type::bf16 : memory::data_type::f32;
  Prim p;
  p.b = matrix_desc(k.batch, k.k, k.n, k.tb, dt);
  p.c = memory::desc({k.batch, k.m, k.n}, memory::data_type::f32, memory::format_tag::abc);
  if (k.bias) p.bias = memory::desc({1, 1, k.n}, memory::data_type::f32, memory::format_tag::abc);
  dnnl::primitive_attr attr;
  if (k.acc) {
    dnnl::post_ops po;
    po.append_sum(1.0f);
    attr.set_post_ops(po);
  }
  auto make = [&](const memory::desc& a) {
    p.a = a;
    dnnl::matmul::desc d =
        k.bias ? dnnl::matmul::desc(p.a, p.b, p.bias, p.c) : dnnl::matmul::desc(p.a, p.b, p.c);
    return dnnl::matmul::primitive_desc(d, attr, ctx().eng);
  };
  memory::desc a = matrix_desc(k.batch, k.m, k.k, k.ta, dt);
  dnnl::matmul::primitive_desc pd = make(a);
  if (k.acc && k.batch == 1) {
    // C += A·B: oneDNN 2.6 picks brgemm with a sum post-op, which reads C tile by tile without
    // prefetch and runs at ~500 GFLOP/s in bf16 on the weight gradients (GPT-2's tied head: 41
    // ms for [50257, 768] at 256 tokens); its BLAS-style GEMM applies beta = 1 inside the kernel
    // at ~700-900 (28 ms). It only takes operands brgemm declines, and a batch stride that is
    // not rows * cols (meaningless for a single matrix: the same bytes) is one. Measured with
    // bench_kernels BM_gemm_acc_*; kept only if oneDNN does not fall back to its reference code.
    dnnl::matmul::primitive_desc alt = make(matrix_desc(1, k.m, k.k, k.ta, dt, 16));
    if (std::string(alt.impl_info_str()).rfind("ref", 0) != 0)
      pd = alt;
    else
      p.a = a;
  }
  p.impl = pd.impl_info_str();
  p.prim = dnnl::matmul(pd);
  return p;
}

// f16 operands. oneDNN 2.6 has an f16 matmul only on CPUs with AVX512-FP16 (Sapphire Rapids
// and later); elsewhere, e.g. this project's AVX512-BF16 machine, it has none. So f16 runs the
// way a GPU's f16 GEMM does numerically: the operands are f16 values (already rounded by the
// caller's cast, core/half.h's rounding on both backends), widened here to f32 scratch (exact:
// every f16 is an f32; F16C), and multiplied by the f32 GEMM. A product of two f16 values
// (11-bit significands) is exact in f32's 24 bits, so the only rounding left is the f32
// accumulation, as on a GPU (up to summation order). Scratch comes from the caching allocator:
// a step's repeated shapes reuse the same blocks.
class WidenedF16 {
 public:
  WidenedF16(const void* src, int64_t n) : bytes_(size_t(n) * sizeof(float)) {
    Allocator& a = allocator_for(Device::cpu());
    data_ = static_cast<float*>(a.allocate(bytes_));
    f16_to_f32(static_cast<const f16*>(src), data_, n);
  }
  ~WidenedF16() { allocator_for(Device::cpu()).release(data_, bytes_); }
  WidenedF16(const WidenedF16&) = delete;
  WidenedF16& operator=(const WidenedF16&) = delete;
  const float* data() const { return data_; }

 private:
  size_t bytes_;
  float* data_;
};

// The oneDNN GEMM of g on operands a_ptr, b_ptr of type t (f32 or bf16).
void run_onednn(const GemmArgs& g, const void* a_ptr, const void* b_ptr, DType t) {
  Key key{g.batch, g.m, g.n, g.k, g.trans_a, g.trans_b, g.bias != nullptr, g.accumulate, t};
  Context& c = ctx();
  Prim* p;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    auto it = c.cache.find(key);
    if (it == c.cache.end()) {
      it = c.cache.emplace(key, build(key)).first;
      it->second.name = fmt::format("{} {}{}x{}x{} {}{}{}{} [{}]", g.label ? g.label : "gemm",
                                    g.batch > 1 ? fmt::format("{}x", g.batch) : "", g.m, g.n, g.k,
                                    dtype_name(t), g.trans_a ? " ta" : "", g.trans_b ? " tb" : "",
                                    g.accumulate ? " acc" : "", it->second.impl);
    }
    p = &it->second;  // unordered_map nodes are stable
  }
  // Per-shape time when profiling (the label's scope above then only keeps the lookup).
  prof::Scope shape_scope(prof::Family::gemm, prof::enabled() ? p->name.c_str() : nullptr);
  memory a(p->a, c.eng, const_cast<void*>(a_ptr));
  memory b(p->b, c.eng, const_cast<void*>(b_ptr));
  memory out(p->c, c.eng, g.c);
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, out}};
  if (g.bias) args.emplace(DNNL_ARG_BIAS, memory(p->bias, c.eng, const_cast<float*>(g.bias)));
  p->prim.execute(c.stream, args);
  c.stream.wait();
}

}  // namespace

void gemm(const GemmArgs& g) {
  prof::Scope prof_scope(prof::Family::gemm, g.label ? g.label : "gemm");
  TS_CHECK(g.ab_type == DType::f32 || g.ab_type == DType::bf16 || g.ab_type == DType::f16,
           "gemm: operands must be f32, bf16 or f16, got {}", dtype_name(g.ab_type));
  TS_CHECK(!g.bias || g.batch == 1, "gemm: bias with batch {}", g.batch);
  if (g.m == 0 || g.n == 0) return;
  prof::add_flops(prof::Family::gemm, 2.0 * double(g.batch * g.m) * double(g.n) * double(g.k));
  if (g.k == 0) {  // empty sum: C = bias (+C)
    for (int64_t i = 0; i < g.batch * g.m; ++i)
      for (int64_t j = 0; j < g.n; ++j)
        g.c[i * g.n + j] = (g.accumulate ? g.c[i * g.n + j] : 0.f) + (g.bias ? g.bias[j] : 0.f);
    return;
  }
  if (g.ab_type == DType::f16) {
    WidenedF16 a(g.a, g.batch * g.m * g.k), b(g.b, g.batch * g.k * g.n);
    return run_onednn(g, a.data(), b.data(), DType::f32);
  }
  run_onednn(g, g.a, g.b, g.ab_type);
}

int64_t gemm_primitive_count() {
  std::lock_guard<std::mutex> lock(ctx().mu);
  return int64_t(ctx().cache.size());
}

const std::string& gemm_implementation(DType t) {
  auto ask = [](memory::data_type dt) {
    const int64_t n = 1024;
    const memory::desc a = matrix_desc(1, n, n, false, dt), b = matrix_desc(1, n, n, true, dt);
    const memory::desc c({1, n, n}, memory::data_type::f32, memory::format_tag::abc);
    return std::string(
        dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, b, c), ctx().eng).impl_info_str());
  };
  static const std::string f32 = ask(memory::data_type::f32);
  static const std::string bf16 = ask(memory::data_type::bf16);
  return t == DType::bf16 ? bf16 : f32;  // f16 runs the f32 GEMM (WidenedF16)
}

DevicePeak gemm_datasheet_peak(int threads) {
  const bool amx = gemm_implementation(DType::bf16).find("amx") != std::string::npos;
  return cpu_peak(this_cpu_info(), threads, amx);
}

}  // namespace tessera::cpu
