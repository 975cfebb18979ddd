// The meta device (core/meta_device.h) under the ops: its allocator keeps the host or CUDA
// allocator's books; every op runs on meta inputs with the CPU's output shapes, dtypes and
// allocation sizes, launches nothing, and states its kernels' costs (ops/cost.h) exactly as on
// the CPU; a GPT-2's recorded GEMM and attention FLOPs are the analytic count.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "autograd/engine.h"
#include "core/allocator.h"
#include "core/meta_device.h"
#include "core/rng.h"
#include "nn/gpt.h"
#include "ops/autocast.h"
#include "ops/ops.h"

using namespace tessera;

namespace {

// ---- the allocator ----

// A sequence of requests: a size to allocate, or (negative) the index of a live block to release.
std::vector<int64_t> request_sequence() {
  std::vector<int64_t> seq;
  Generator g(7);
  std::vector<size_t> live;  // indices into the allocations made so far
  int64_t made = 0;
  for (int i = 0; i < 400; ++i) {
    const uint64_t r = g.next_u64();
    if (!live.empty() && r % 3 == 0) {
      const size_t k = size_t(r / 3 % live.size());
      seq.push_back(-1 - int64_t(live[k]));
      live.erase(live.begin() + int64_t(k));
      continue;
    }
    // Sizes from 0 to a few MiB, many repeated (cache hits), some just over a class boundary.
    static const int64_t kSizes[] = {
        0, 1, 63, 64, 65, 4096, 4097, 5000, 65536, 100000, 1 << 20, (1 << 20) + 1, 3 << 20};
    seq.push_back(kSizes[r / 7 % (sizeof(kSizes) / sizeof(kSizes[0]))]);
    live.push_back(size_t(made++));
  }
  return seq;
}

// Runs the sequence on `a` (releasing what is left at the end); its stats before the release.
AllocatorStats replay(Allocator& a, const std::vector<int64_t>& seq) {
  std::vector<std::pair<void*, size_t>> blocks;
  for (int64_t s : seq) {
    if (s >= 0) {
      blocks.emplace_back(a.allocate(size_t(s)), size_t(s));
    } else {
      auto& b = blocks[size_t(-1 - s)];
      a.release(b.first, b.second);
      b.first = nullptr;
    }
  }
  const AllocatorStats st = a.stats();
  for (auto& b : blocks)
    if (b.first) a.release(b.first, b.second);
  return st;
}

void expect_same_stats(const AllocatorStats& a, const AllocatorStats& b) {
  EXPECT_EQ(a.in_use, b.in_use);
  EXPECT_EQ(a.peak_in_use, b.peak_in_use);
  EXPECT_EQ(a.reserved, b.reserved);
  EXPECT_EQ(a.system_allocs, b.system_allocs);
  EXPECT_EQ(a.cache_hits, b.cache_hits);
}

TEST(MetaAllocator, HostModelKeepsTheCpuCachingAllocatorsBooks) {
  const std::vector<int64_t> seq = request_sequence();
  CpuCachingAllocator cpu;
  const AllocatorStats expected = replay(cpu, seq);
  meta::reset_allocator(meta::AllocatorModel::host);
  const AllocatorStats got = replay(meta_allocator(), seq);
  expect_same_stats(got, expected);
  EXPECT_GT(got.cache_hits, 0u);
  EXPECT_EQ(meta::live_allocations(), 0);
}

TEST(MetaAllocator, CudaModelUsesCudaSizeClasses) {
  meta::reset_allocator(meta::AllocatorModel::cuda);
  Allocator& a = meta_allocator();
  const size_t sizes[] = {1, 513, 4096, (size_t(1) << 20) + 1, 5000000};
  std::vector<void*> p;
  size_t total = 0;
  for (size_t s : sizes) {
    p.push_back(a.allocate(s));
    total += cuda_size_class(s);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p.back()) % 512, 0u);
  }
  EXPECT_EQ(a.stats().in_use, total);
  EXPECT_EQ(a.stats().reserved, total);
  EXPECT_EQ(a.stats().system_allocs, 5u);
  EXPECT_NE(cuda_size_class(513), host_size_class(513));  // the two models differ here
  // A request of the same class (513 and 1024 both take 1024) reuses the released block.
  a.release(p[1], 513);
  void* again = a.allocate(1024);
  EXPECT_EQ(again, p[1]);
  EXPECT_EQ(a.stats().cache_hits, 1u);
  EXPECT_EQ(a.stats().peak_in_use, total);
  a.release(again, 1024);
  for (size_t i : {0, 2, 3, 4}) a.release(p[i], sizes[i]);
  EXPECT_EQ(a.stats().in_use, 0u);
  EXPECT_EQ(meta::live_allocations(), 0);
}

// ---- every op on the meta device against the CPU ----

// The kernels the backend tables record on the meta device (core/meta_device.cpp's entries):
// copies, casts and fills run as host code on the CPU, recorded nowhere. Everything else in a
// trace is an op's own launch, recorded on every device.
bool backend_entry(const std::string& name) {
  static const char* kNames[] = {"memset",      "h2d",   "copy", "strided_copy",
                                 "cast",        "fill",  "add_", "scale_",
                                 "sum_squares", "adamw", "sgd",  "unscale_grads"};
  for (const char* n : kNames)
    if (name == n) return true;
  return false;
}

std::vector<meta::KernelCost> op_kernels(const meta::Trace& trace) {
  std::vector<meta::KernelCost> out;
  for (const meta::Event& e : trace.events())
    if (e.kind == meta::EventKind::kernel && !backend_entry(e.kernel.name)) out.push_back(e.kernel);
  return out;
}

std::string describe(const meta::KernelCost& k) {
  return std::string(k.name) + " cls " + std::to_string(int(k.cls)) + " flops " +
         std::to_string(k.flops) + " bytes " + std::to_string(k.bytes) + " dtype " +
         dtype_name(k.dtype) + " mnk " + std::to_string(k.m) + "," + std::to_string(k.n) + "," +
         std::to_string(k.k);
}

void expect_same_kernels(const std::vector<meta::KernelCost>& cpu,
                         const std::vector<meta::KernelCost>& on_meta) {
  ASSERT_EQ(cpu.size(), on_meta.size());
  for (size_t i = 0; i < cpu.size(); ++i) EXPECT_EQ(describe(cpu[i]), describe(on_meta[i])) << i;
}

// An op's input: its shape and dtype, whether it requires grad, and for i32 ids the bound of
// their values on the CPU ([0, ids)).
struct Input {
  Shape shape;
  DType dtype = DType::f32;
  bool grad = true;
  int32_t ids = 0;
};

struct OpCase {
  std::string name;
  std::vector<Input> inputs;
  std::function<Tensor(std::vector<Tensor>&)> run;
  bool gemm = false;  // also run under bf16 autocast
};

Tensor make_input(const Input& in, Device dev, Generator& g) {
  Tensor t;
  if (dev.is_meta()) {
    t = Tensor::empty(in.shape, in.dtype, dev);
  } else if (in.dtype == DType::i32) {
    std::vector<int32_t> v(size_t(in.shape.numel()));
    for (auto& x : v) x = int32_t(g.next_u64() % uint64_t(in.ids));
    t = Tensor::from_ints(v, in.shape);
  } else {
    t = Tensor::randn(in.shape, g, 0.f, 1.f, in.dtype);
  }
  if (in.grad) t.set_requires_grad(true);
  return t;
}

// What a run of an op gave: the shapes and dtypes of its output and of its inputs' gradients,
// the allocator's peak and final bytes in use over the run (above what the inputs hold), and
// its kernels.
struct RunResult {
  std::vector<std::string> tensors;
  size_t peak = 0, kept = 0;
  std::vector<meta::KernelCost> kernels;
};

std::string desc_or_none(const Tensor& t) {
  return t.defined() ? t.desc() : "none";
}

RunResult run_op(const OpCase& c, Device dev, DType autocast) {
  if (dev.is_meta()) meta::reset_allocator(meta::AllocatorModel::host);
  Allocator& a = allocator_for(dev);
  RunResult r;
  {
    Generator g(11);
    std::vector<Tensor> in;
    for (const Input& i : c.inputs) in.push_back(make_input(i, dev, g));
    AutocastGuard guard(autocast);
    meta::Trace trace;
    a.reset_peak();
    const size_t before = a.stats().in_use;
    {
      meta::TraceScope scope(trace);
      Tensor y = c.run(in);
      EXPECT_EQ(y.device(), dev) << c.name;
      if (y.requires_grad()) y.backward(Tensor::ones(y.shape(), DType::f32, dev));
      r.tensors.push_back(desc_or_none(y));
      for (const Tensor& t : in) {
        if (!t.requires_grad()) continue;
        r.tensors.push_back(desc_or_none(t.grad()));
        EXPECT_TRUE(!t.grad().defined() || t.grad().device() == dev) << c.name;
      }
      const AllocatorStats st = a.stats();
      r.peak = st.peak_in_use - before;
      r.kept = st.in_use - before;
    }
    r.kernels = op_kernels(trace);
  }
  EXPECT_TRUE(!dev.is_meta() || meta::live_allocations() == 0) << c.name;
  return r;
}

std::vector<OpCase> op_cases() {
  using V = std::vector<Tensor>&;
  const Shape x{2, 3, 8};
  std::vector<OpCase> c;
  c.push_back({"reshape", {{x}}, [](V in) { return ops::reshape(in[0], Shape{6, 8}); }});
  c.push_back({"transpose", {{x}}, [](V in) { return ops::transpose(in[0], 0, 2); }});
  c.push_back({"cast", {{x}}, [](V in) { return ops::cast(in[0], DType::bf16); }});
  c.push_back({"rows", {{x}}, [](V in) { return ops::rows(in[0], 1, 2); }});
  c.push_back({"columns", {{x}}, [](V in) { return ops::columns(in[0], 2, 5); }});
  c.push_back({"concat_rows", {{x}, {Shape{1, 3, 8}}}, [](V in) {
                 return ops::concat_rows(in[0], in[1]);
               }});
  c.push_back({"add", {{x}, {x}}, [](V in) { return ops::add(in[0], in[1]); }});
  c.push_back({"add_broadcast", {{x}, {Shape{8}}}, [](V in) { return ops::add(in[0], in[1]); }});
  c.push_back({"mul", {{x}, {x}}, [](V in) { return ops::mul(in[0], in[1]); }});
  c.push_back({"mul_broadcast", {{x}, {Shape{3, 8}}}, [](V in) { return ops::mul(in[0], in[1]); }});
  c.push_back({"mul_bf16", {{x, DType::bf16}, {x, DType::bf16}}, [](V in) {
                 return ops::mul(in[0], in[1]);
               }});
  c.push_back({"scale", {{x}}, [](V in) { return ops::scale(in[0], 0.5f); }});
  c.push_back({"sum", {{x}}, [](V in) { return ops::sum(in[0]); }});
  c.push_back({"mean", {{x}}, [](V in) { return ops::mean(in[0]); }});
  c.push_back({"matmul",
               {{Shape{2, 5, 8}}, {Shape{8, 6}}},
               [](V in) { return ops::matmul(in[0], in[1]); },
               true});
  c.push_back({"matmul_batched",
               {{Shape{2, 5, 8}}, {Shape{2, 8, 6}}},
               [](V in) { return ops::matmul(in[0], in[1]); },
               true});
  c.push_back({"linear",
               {{x}, {Shape{12, 8}}, {Shape{12}}},
               [](V in) { return ops::linear(in[0], in[1], in[2]); },
               true});
  c.push_back({"linear_no_bias",
               {{x}, {Shape{12, 8}}},
               [](V in) { return ops::linear(in[0], in[1]); },
               true});
  c.push_back({"linear_gelu",
               {{x}, {Shape{12, 8}}, {Shape{12}}},
               [](V in) { return ops::linear_gelu(in[0], in[1], in[2]); },
               true});
  c.push_back({"gelu", {{x}}, [](V in) { return ops::gelu(in[0]); }});
  c.push_back({"silu", {{x}}, [](V in) { return ops::silu(in[0]); }});
  c.push_back({"relu", {{x, DType::bf16}}, [](V in) { return ops::relu(in[0]); }});
  c.push_back({"swiglu", {{x}}, [](V in) { return ops::swiglu(in[0]); }, true});
  c.push_back({"layer_norm", {{x}, {Shape{8}}, {Shape{8}}}, [](V in) {
                 return ops::layer_norm(in[0], in[1], in[2]);
               }});
  c.push_back({"layer_norm_to_bf16", {{x}, {Shape{8}}, {Shape{8}}}, [](V in) {
                 return ops::layer_norm(in[0], in[1], in[2], 1e-5f, DType::bf16);
               }});
  c.push_back({"rms_norm", {{x}, {Shape{8}}}, [](V in) { return ops::rms_norm(in[0], in[1]); }});
  c.push_back({"softmax", {{x}}, [](V in) { return ops::softmax(in[0]); }});
  c.push_back({"cross_entropy",
               {{Shape{2, 3, 10}}, {Shape{2, 3}, DType::i32, false, 10}},
               [](V in) { return ops::cross_entropy(in[0], in[1]); }});
  c.push_back({"cross_entropy_bf16_grad",
               {{Shape{2, 3, 10}}, {Shape{2, 3}, DType::i32, false, 10}},
               [](V in) { return ops::cross_entropy(in[0], in[1], -1, DType::bf16); }});
  c.push_back({"sharded_cross_entropy",
               {{Shape{2, 3, 10}}, {Shape{2, 3}, DType::i32, false, 10}},
               [](V in) {
                 return ops::sharded_cross_entropy(
                     in[0], in[1], 0, 10, -1, DType::f32, [](const Tensor& stats) {
                       return stats.view(Shape{1, stats.dim(0), stats.dim(1)});
                     });
               }});
  c.push_back({"embedding", {{Shape{10, 8}}, {Shape{2, 3}, DType::i32, false, 10}}, [](V in) {
                 return ops::embedding(in[0], in[1]);
               }});
  c.push_back({"embedding_shard", {{Shape{5, 8}}, {Shape{2, 3}, DType::i32, false, 10}}, [](V in) {
                 return ops::embedding(in[0], in[1], 5);
               }});
  // qkv [B, T, 3C] with 2 heads of 4; grouped-query: 4 heads, 2 kv heads of 4.
  c.push_back(
      {"attention", {{Shape{2, 5, 24}}}, [](V in) { return ops::attention(in[0], 2); }, true});
  c.push_back({"attention_gqa",
               {{Shape{2, 5, 32}}},
               [](V in) { return ops::attention(in[0], 4, 2); },
               true});
  c.push_back({"attention_window",
               {{Shape{2, 3, 16}}, {Shape{2, 7, 16}}},
               [](V in) { return ops::attention_window(in[0], in[1], 4, 2, 2); },
               true});
  c.push_back({"rope", {{Shape{2, 5, 32}}, {Shape{8, 2, 2}, DType::f32, false}}, [](V in) {
                 return ops::rope(in[0], in[1], 4, 2, 1);
               }});
  c.push_back({"cached_attention",
               {{Shape{2, 3, 32}, DType::f32, false},
                {Shape{2, 2, 8, 4}, DType::f32, false},
                {Shape{2, 2, 8, 4}, DType::f32, false}},
               [](V in) { return ops::cached_attention(in[0], 4, 2, in[1], in[2], 2); }});
  c.push_back({"conv2d",
               {{Shape{2, 3, 7, 7}}, {Shape{4, 3, 3, 3}}, {Shape{4}}},
               [](V in) { return ops::conv2d(in[0], in[1], in[2], 2, 1); },
               true});
  c.push_back(
      {"max_pool2d", {{Shape{2, 3, 6, 6}}}, [](V in) { return ops::max_pool2d(in[0], 2, 2); }});
  c.push_back({"dropout", {{x}}, [](V in) {
                 static Generator g(3);
                 return ops::dropout(in[0], 0.25f, g);
               }});
  return c;
}

void check_op_on_meta(const OpCase& c, DType autocast) {
  SCOPED_TRACE(c.name + " under autocast " + dtype_name(autocast));
  const RunResult cpu = run_op(c, Device::cpu(), autocast);
  const RunResult on_meta = run_op(c, Device::meta(), autocast);
  EXPECT_EQ(on_meta.tensors, cpu.tensors);
  EXPECT_EQ(on_meta.peak, cpu.peak);
  EXPECT_EQ(on_meta.kept, cpu.kept);
  expect_same_kernels(cpu.kernels, on_meta.kernels);
}

TEST(MetaOps, EveryOpMatchesTheCpuInShapesAllocationsAndKernels) {
  for (const OpCase& c : op_cases()) check_op_on_meta(c, DType::f32);
}

TEST(MetaOps, GemmOpsUnderBf16AutocastMatchTheCpu) {
  for (const OpCase& c : op_cases())
    if (c.gemm) check_op_on_meta(c, DType::bf16);
}

TEST(MetaOps, OutOfRangeIdsAreCheckedOnTheCpuOnly) {
  // The meta device has no ids to check: the same call that throws on the CPU runs there.
  const Tensor w = Tensor::empty(Shape{4, 8}, DType::f32, Device::meta());
  const Tensor ids = Tensor::from_ints({1, 9}, Shape{2});
  EXPECT_THROW(ops::embedding(Tensor::zeros(Shape{4, 8}), ids), Error);
  EXPECT_EQ(ops::embedding(w, ids.to(Device::meta())).desc(), "f32[2, 8]");
}

TEST(MetaOps, GemmKernelsStateTwoMnkFlops) {
  const int64_t m = 6, k = 8, n = 12;
  Tensor x = Tensor::empty(Shape{2, 3, k}, DType::f32, Device::meta()).set_requires_grad(true);
  Tensor w = Tensor::empty(Shape{n, k}, DType::f32, Device::meta()).set_requires_grad(true);
  meta::Trace trace;
  {
    meta::TraceScope scope(trace);
    AutocastGuard bf16(DType::bf16);
    ops::linear(x, w).backward(Tensor::ones(Shape{2, 3, n}, DType::f32, Device::meta()));
  }
  std::vector<std::string> gemms;
  for (const meta::KernelCost& c : op_kernels(trace)) {
    if (c.cls != meta::KernelClass::gemm) continue;
    gemms.push_back(c.name);
    EXPECT_EQ(c.flops, 2.0 * m * n * k) << c.name;
    EXPECT_EQ(c.dtype, DType::bf16) << c.name;
  }
  EXPECT_EQ(gemms, (std::vector<std::string>{"linear_fwd", "linear_dx", "linear_dw"}));
}

TEST(MetaOps, CausalAttentionCountsTheVisibleKeys) {
  // B 2, H 4 (2 kv heads), hs 4; 3 queries at positions 2..4 over 7 keys see 3 + 4 + 5 = 12.
  Tensor q = Tensor::empty(Shape{2, 3, 16}, DType::f32, Device::meta()).set_requires_grad(true);
  Tensor kv = Tensor::empty(Shape{2, 7, 16}, DType::f32, Device::meta()).set_requires_grad(true);
  meta::Trace trace;
  {
    meta::TraceScope scope(trace);
    ops::attention_window(q, kv, 4, 2, 2)
        .backward(Tensor::ones(Shape{2, 3, 16}, DType::f32, Device::meta()));
  }
  const std::vector<meta::KernelCost> k = op_kernels(trace);
  ASSERT_EQ(k.size(), 2u);
  const double pairs = 2 * 4 * 12;  // batch x heads x visible keys
  EXPECT_STREQ(k[0].name, "attention_window_fwd");
  EXPECT_EQ(k[0].cls, meta::KernelClass::attention);
  EXPECT_EQ(k[0].flops, 4 * 4 * pairs);  // 2 hs for QK^T, 2 hs for PV
  EXPECT_STREQ(k[1].name, "attention_window_bwd");
  EXPECT_EQ(k[1].flops, 10 * 4 * pairs);  // five products of the forward's size
}

// ---- a whole GPT-2 ----

nn::GPTConfig tiny_gpt() {
  nn::GPTConfig c;
  c.n_layer = 2, c.n_head = 4, c.n_embd = 32, c.context = 16, c.vocab_size = 64;
  return c;
}

// One forward and backward of the model on `dev` (batch B of T tokens), recorded.
std::vector<meta::KernelCost> gpt_step_kernels(Device dev, int64_t B, int64_t T, DType autocast) {
  Generator g(5);
  nn::GPT model(tiny_gpt(), g);
  model.to(dev);
  std::vector<int32_t> ids(size_t(B * T));
  for (auto& id : ids) id = int32_t(g.next_u64() % 64);
  Tensor x = Tensor::from_ints(ids, Shape{B, T}).to(dev);
  meta::Trace trace;
  {
    AutocastGuard guard(autocast);
    meta::TraceScope scope(trace);
    Tensor loss = model.loss(x, x);
    EXPECT_EQ(loss.device(), dev);
    loss.backward();
  }
  for (const Tensor& p : model.parameters()) {
    EXPECT_TRUE(p.grad().defined()) << p.name();
    EXPECT_TRUE(!p.grad().defined() || p.grad().device() == dev) << p.name();
  }
  return op_kernels(trace);
}

TEST(MetaGpt, RecordedGemmAndAttentionFlopsAreTheAnalyticCount) {
  const int64_t B = 2, T = 12;
  const nn::GPTConfig cfg = tiny_gpt();
  const double L = cfg.n_layer, C = double(cfg.n_embd), V = double(cfg.vocab_size);
  const double tokens = double(B * T);
  double gemm = 0, attention = 0;
  for (const meta::KernelCost& k : gpt_step_kernels(Device::meta(), B, T, DType::f32)) {
    if (k.cls == meta::KernelClass::gemm) gemm += k.flops;
    if (k.cls == meta::KernelClass::attention) attention += k.flops;
  }
  // GEMMs: 6 (forward, dX, dW) x the GEMM weights (12 C^2 per block, the tied head V C) per token.
  EXPECT_EQ(gemm, 6 * (L * 12 * C * C + V * C) * tokens);
  // Causal attention: (4 + 10) B C T (T + 1) / 2 per layer (ops/cost.h).
  EXPECT_EQ(attention, L * 14 * double(B) * C * double(T * (T + 1)) / 2);
  // The trainer's model FLOPs (nn::decoder_flops_per_token, for MFU) count more: 6 x the
  // norms' weights and the biases (13 C per block, 2 C for ln_f), which are in no GEMM, and
  // attention without the causal halving and with a 2x backward (12 L C T per token).
  const double trainer = nn::decoder_flops_per_token(nn::gpt_decoder_config(cfg), T) * tokens;
  const double extra =
      6 * (L * 13 * C + 2 * C) * tokens + L * double(B) * C * (12.0 * T * T - 7.0 * T * (T + 1));
  EXPECT_DOUBLE_EQ(trainer - (gemm + attention), extra);
}

TEST(MetaGpt, CpuAndMetaRecordTheSameKernels) {
  for (DType ac : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(ac));
    meta::reset_allocator(meta::AllocatorModel::cuda);
    const std::vector<meta::KernelCost> cpu = gpt_step_kernels(Device::cpu(), 2, 12, ac);
    const std::vector<meta::KernelCost> on_meta = gpt_step_kernels(Device::meta(), 2, 12, ac);
    EXPECT_GT(cpu.size(), 20u);
    expect_same_kernels(cpu, on_meta);
    EXPECT_EQ(meta::live_allocations(), 0);
  }
}

}  // namespace
