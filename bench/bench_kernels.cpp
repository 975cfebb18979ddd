// Kernel benchmarks at GPT-2 small sizes. Each reports achieved GFLOP/s (GEMMs, attention) or
// GB/s (memory-bound kernels) as a counter. The "ceiling" GEMMs (large, square) measure what
// oneDNN reaches on this machine, the denominator for every efficiency figure in docs/PERF.md.
//   build/bench_kernels --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include "core/rng.h"
#include "core/tensor.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/cast.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/norm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/swiglu.h"
#include "ops/rope_table.h"
#include "optim/adamw.h"

using namespace tessera;

namespace {

// GEMM [m,k]·[k,n] (B transposed as linear() stores weights) in f32 or bf16 operands.
void gemm_bench(benchmark::State& st, DType t) {
  const int64_t m = st.range(0), n = st.range(1), k = st.range(2);
  Generator g(1);
  Tensor a = Tensor::randn(Shape{m, k}, g).to(t), b = Tensor::randn(Shape{n, k}, g).to(t);
  Tensor c = Tensor::empty(Shape{m, n});
  cpu::GemmArgs args;
  args.m = m, args.n = n, args.k = k, args.ab_type = t, args.trans_b = true;
  args.a = a.raw_data(), args.b = b.raw_data(), args.c = c.data<float>();
  cpu::gemm(args);  // build the primitive outside the timed loop
  for (auto _ : st) cpu::gemm(args);
  // Printed as "<x>/s": x GFLOP per second.
  st.counters["GFLOP"] =
      benchmark::Counter(2e-9 * double(m * n * k), benchmark::Counter::kIsIterationInvariantRate);
}

void BM_gemm_f32(benchmark::State& st) {
  gemm_bench(st, DType::f32);
}
void BM_gemm_bf16(benchmark::State& st) {
  gemm_bench(st, DType::bf16);
}

// m = tokens per step (B*T), n and k from GPT-2 small's layers: qkv (768->2304), attention
// projection (768->768), MLP up (768->3072), MLP down (3072->768), tied head (768->50257).
void gpt2_shapes(benchmark::internal::Benchmark* b) {
  for (int64_t m : {256, 2048}) {
    b->Args({m, 2304, 768});
    b->Args({m, 768, 768});
    b->Args({m, 3072, 768});
    b->Args({m, 768, 3072});
  }
  b->Args({256, 50257, 768});
  b->Args({2048, 2048, 2048});  // the ceiling
}

}  // namespace

BENCHMARK(BM_gemm_f32)->Apply(gpt2_shapes)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_gemm_bf16)->Apply(gpt2_shapes)->Unit(benchmark::kMillisecond)->UseRealTime();

// Weight-gradient GEMMs as the linear layers' backward runs them: dW[out, in] += dY^T · X with
// dY [tokens, out] read transposed, accumulating into an existing gradient buffer.
void gemm_acc_bench(benchmark::State& st, DType t) {
  const int64_t out = st.range(0), in = st.range(1), tokens = st.range(2);
  Generator g(4);
  Tensor dy = Tensor::randn(Shape{tokens, out}, g).to(t),
         x = Tensor::randn(Shape{tokens, in}, g).to(t);
  Tensor dw = Tensor::zeros(Shape{out, in});
  cpu::GemmArgs args;
  args.m = out, args.n = in, args.k = tokens, args.ab_type = t, args.trans_a = true;
  args.accumulate = true;
  args.a = dy.raw_data(), args.b = x.raw_data(), args.c = dw.data<float>();
  cpu::gemm(args);
  for (auto _ : st) cpu::gemm(args);
  st.counters["GFLOP"] = benchmark::Counter(2e-9 * double(out * in * tokens),
                                            benchmark::Counter::kIsIterationInvariantRate);
}
void BM_gemm_acc_f32(benchmark::State& st) {
  gemm_acc_bench(st, DType::f32);
}
void BM_gemm_acc_bf16(benchmark::State& st) {
  gemm_acc_bench(st, DType::bf16);
}
void gpt2_weight_grad_shapes(benchmark::internal::Benchmark* b) {
  for (int64_t tokens : {256, 2048}) {
    b->Args({2304, 768, tokens});
    b->Args({3072, 768, tokens});
    b->Args({768, 3072, tokens});
    b->Args({50257, 768, tokens});
  }
}
BENCHMARK(BM_gemm_acc_f32)
    ->Apply(gpt2_weight_grad_shapes)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_gemm_acc_bf16)
    ->Apply(gpt2_weight_grad_shapes)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Fused causal attention of GPT-2 small (C = 768, 12 heads) at batch x seq = 4 x 64 and 8 x 256:
// forward and backward; the third argument is the number of kv heads (12: multi-head; 4:
// grouped-query, 3 query heads per kv head; 1: multi-query). GFLOP/s counts
// the useful work over the causal half of the scores (forward 2 B T^2 C, backward twice that;
// the backward's recomputed scores not counted).
void attention_bench(benchmark::State& st, bool backward) {
  const kernels::AttentionDims d{st.range(0), st.range(1), 768, 12, st.range(2)};
  Generator g(6);
  Tensor qkv = Tensor::randn(Shape{d.batch, d.seq, kernels::attention_qkv_width(d)}, g, 0.f, 0.5f);
  Tensor out = Tensor::empty(Shape{d.batch, d.seq, d.channels});
  Tensor lse = Tensor::empty(Shape{d.batch, d.heads, d.seq});
  Tensor dout = Tensor::randn(Shape{d.batch, d.seq, d.channels}, g);
  Tensor dqkv = Tensor::empty(qkv.shape());
  cpu::attention_forward(d, qkv.data<float>(), out.data<float>(), lse.data<float>());
  for (auto _ : st) {
    if (backward)
      cpu::attention_backward(d, qkv.data<float>(), out.data<float>(), lse.data<float>(),
                              dout.data<float>(), dqkv.data<float>());
    else
      cpu::attention_forward(d, qkv.data<float>(), out.data<float>(), lse.data<float>());
  }
  const double fwd = 2.0 * double(d.batch * d.seq) * double(d.seq) * double(d.channels);
  st.counters["GFLOP"] = benchmark::Counter((backward ? 2 : 1) * fwd * 1e-9,
                                            benchmark::Counter::kIsIterationInvariantRate);
}
void BM_attention_fwd(benchmark::State& st) {
  attention_bench(st, false);
}
void BM_attention_bwd(benchmark::State& st) {
  attention_bench(st, true);
}
BENCHMARK(BM_attention_fwd)
    ->Args({4, 64, 12})
    ->Args({8, 256, 12})
    ->Args({8, 256, 4})
    ->Args({8, 256, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_attention_bwd)
    ->Args({4, 64, 12})
    ->Args({8, 256, 12})
    ->Args({8, 256, 4})
    ->Args({8, 256, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Llama 3 8B's element-wise ops over 1024 tokens: RoPE on the fused qkv (32 query heads, 8 kv
// heads, head size 128) and SwiGLU on the gate_up output (F = 14336). GB/s: bytes read + written.
void BM_rope_llama3_8b(benchmark::State& st) {
  kernels::RopeDims d;
  d.batch = 1, d.seq = 1024, d.heads = 32, d.kv_heads = 8, d.head_size = 128;
  Generator g(8);
  const int64_t n = d.seq * kernels::rope_row_width(d);
  Tensor x = Tensor::randn(Shape{n}, g), y = Tensor::empty(Shape{n});
  Tensor table = ops::rope_table(d.seq, d.head_size, 500000.0, ops::Llama3RopeScaling{});
  for (auto _ : st)
    cpu::rope_rotate<float>(d, x.data<float>(), table.data<float>(), y.data<float>(), false);
  st.counters["GB"] =
      benchmark::Counter(2.0 * double(n) * 4 * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_rope_llama3_8b)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_swiglu_llama3_8b(benchmark::State& st) {
  const int64_t rows = 1024, F = 14336;
  Generator g(9);
  Tensor x = Tensor::randn(Shape{rows, 2 * F}, g), y = Tensor::empty(Shape{rows, F});
  for (auto _ : st) cpu::swiglu_forward<float, float>(x.data<float>(), y.data<float>(), rows, F);
  st.counters["GB"] = benchmark::Counter(3.0 * double(rows * F) * 4 * 1e-9,
                                         benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_swiglu_llama3_8b)->Unit(benchmark::kMillisecond)->UseRealTime();

// f32 -> bf16 conversion of GPT-2 small's matmul weights (what a bf16 step does once per step
// before the forward GEMMs): 6 bytes moved per element.
void BM_cast_f32_to_bf16(benchmark::State& st) {
  const int64_t n = st.range(0);
  Tensor src = Tensor::zeros(Shape{n}), dst = Tensor::empty(Shape{n}, DType::bf16);
  // One untimed pass first: the fresh destination's pages are faulted in once, as the step's
  // cached bf16 weights are, instead of inside the only timed iteration.
  cpu::cast(src.raw_data(), DType::f32, dst.raw_data(), DType::bf16, n);
  for (auto _ : st) cpu::cast(src.raw_data(), DType::f32, dst.raw_data(), DType::bf16, n);
  st.counters["GB"] =
      benchmark::Counter(6.0 * double(n) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_cast_f32_to_bf16)->Arg(124439808)->Unit(benchmark::kMillisecond)->UseRealTime();

// LayerNorm forward and backward over [tokens, 768]: bytes moved per call (x, y; x, gy, gx).
void BM_layernorm_fwd(benchmark::State& st) {
  const int64_t rows = st.range(0), C = 768;
  Generator g(2);
  Tensor x = Tensor::randn(Shape{rows, C}, g), y = Tensor::empty(Shape{rows, C});
  Tensor w = Tensor::ones(Shape{C}), b = Tensor::zeros(Shape{C});
  Tensor mean = Tensor::empty(Shape{rows}), rstd = Tensor::empty(Shape{rows});
  for (auto _ : st)
    cpu::layer_norm_forward<float>(x.data<float>(), w.data<float>(), b.data<float>(),
                                   y.data<float>(), mean.data<float>(), rstd.data<float>(), rows, C,
                                   1e-5f);
  st.counters["GB"] = benchmark::Counter(2.0 * 4 * double(rows * C) * 1e-9,
                                         benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_layernorm_fwd)->Arg(256)->Arg(2048)->UseRealTime();

void BM_layernorm_bwd(benchmark::State& st) {
  const int64_t rows = st.range(0), C = 768;
  Generator g(3);
  Tensor x = Tensor::randn(Shape{rows, C}, g), gy = Tensor::randn(Shape{rows, C}, g);
  Tensor gx = Tensor::empty(Shape{rows, C}), y = Tensor::empty(Shape{rows, C});
  Tensor w = Tensor::ones(Shape{C}), b = Tensor::zeros(Shape{C});
  Tensor dw = Tensor::empty(Shape{C}), db = Tensor::empty(Shape{C});
  Tensor mean = Tensor::empty(Shape{rows}), rstd = Tensor::empty(Shape{rows});
  cpu::layer_norm_forward<float>(x.data<float>(), w.data<float>(), b.data<float>(), y.data<float>(),
                                 mean.data<float>(), rstd.data<float>(), rows, C, 1e-5f);
  for (auto _ : st)
    cpu::layer_norm_backward<float>(x.data<float>(), w.data<float>(), mean.data<float>(),
                                    rstd.data<float>(), gy.data<float>(), gx.data<float>(),
                                    dw.data<float>(), db.data<float>(), rows, C);
  st.counters["GB"] = benchmark::Counter(3.0 * 4 * double(rows * C) * 1e-9,
                                         benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_layernorm_bwd)->Arg(256)->Arg(2048)->UseRealTime();

// One fused AdamW step over all 124,439,808 parameters of GPT-2 small (flat buffers).
// Bytes: read p, g, m, v and write p, m, v: 7 x 4 bytes per parameter.
void BM_adamw_gpt2_124m(benchmark::State& st) {
  const int64_t n = 124439808;
  Tensor p = Tensor::zeros(Shape{n});
  p.set_requires_grad(true);
  FlatParameters flat({p});
  flat.grads().fill_(1e-3);
  AdamW opt(flat);
  for (auto _ : st) opt.step(1e-4f);
  st.counters["GB"] =
      benchmark::Counter(7.0 * 4 * double(n) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_adamw_gpt2_124m)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(5);

BENCHMARK_MAIN();
