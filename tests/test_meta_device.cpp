// The meta device (core/meta_device.h) under the ops: its allocator keeps the host or CUDA
// allocator's books; every op runs on meta inputs with the CPU's output shapes, dtypes and
// allocation sizes, launches nothing, and states its kernels' costs (ops/cost.h) exactly as on
// the CPU; a GPT-2's recorded GEMM and attention FLOPs are the analytic count.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/allocator.h"
#include "core/meta_device.h"
#include "core/rng.h"
#include "meta_op_cases.h"
#include "nn/gpt.h"
#include "ops/autocast.h"
#include "ops/ops.h"

using namespace tessera;
using namespace tessera::metatest;

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

void check_op_on_meta(const OpCase& c, DType autocast) {
  SCOPED_TRACE(c.name + " under autocast " + dtype_name(autocast));
  const RunResult cpu = run_op(c, Device::cpu(), autocast);
  meta::reset_allocator(meta::AllocatorModel::host);  // the CPU's books and the CPU's path
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

TEST(MetaGpt, RecordedGemmAndAttentionFlopsAreTheAnalyticCount) {
  const int64_t B = 2, T = 12;
  const nn::GPTConfig cfg = tiny_gpt();
  const double L = cfg.n_layer, C = double(cfg.n_embd), V = double(cfg.vocab_size);
  const double tokens = double(B * T);
  double gemm = 0, attention = 0;
  for (const meta::KernelCost& k : gpt_step(Device::meta(), B, T, DType::f32).kernels) {
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
    meta::reset_allocator(meta::AllocatorModel::host);  // the meta device takes the CPU's path
    const std::vector<meta::KernelCost> cpu = gpt_step(Device::cpu(), 2, 12, ac).kernels;
    const std::vector<meta::KernelCost> on_meta = gpt_step(Device::meta(), 2, 12, ac).kernels;
    EXPECT_GT(cpu.size(), 20u);
    expect_same_kernels(cpu, on_meta);
    EXPECT_EQ(meta::live_allocations(), 0);
  }
}

}  // namespace
