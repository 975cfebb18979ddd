// Every CUDA kernel family against its CPU kernel on fresh random inputs: cast, element-wise,
// activations, LayerNorm / RMSNorm, softmax, cross-entropy, embedding, dropout. (GEMM, conv,
// attention: test_cuda_kernels_nn.cpp; AdamW and loss scaling: test_cuda_optim.cpp.)
// Forward and backward kernels are fed the same inputs on both sides (the backward gets the
// CPU forward's saved statistics), so each comparison isolates one kernel. Without a device
// every test is skipped.
#include <gtest/gtest.h>

#include "cuda_test_util.h"
#include "kernels/common/activation.h"
#include "kernels/common/cross_entropy.h"
#include "kernels/common/id_groups.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/cast.h"
#include "kernels/cpu/dropout.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/norm.h"
#include "kernels/cpu/softmax.h"
#include "kernels/cuda/activation.h"
#include "kernels/cuda/cast.h"
#include "kernels/cuda/dropout.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/norm.h"
#include "kernels/cuda/softmax.h"

using namespace tessera;
using namespace tessera::cudatest;

namespace {

class CudaKernels : public CudaTest {};

TEST_F(CudaKernels, CastAndFillMatchTheCpuBitForBit) {
  Rng rng;
  TS_TRACE_SEED(rng);
  const DType types[] = {DType::f32, DType::bf16, DType::f16, DType::i32, DType::i64, DType::u16};
  const int64_t n = 4099;  // not a multiple of any block size
  // In [0, 1000): representable in every type, u16 included, and exercising rounding.
  const std::vector<float> v = rng.uniform(static_cast<size_t>(n), 0.f, 1000.f);
  for (DType st : types) {
    const std::vector<uint8_t> src = host_bytes(v, st);
    DevBuf<uint8_t> dsrc(src);
    bool all = true;  // one table line per source type, one failure per differing pair
    for (DType dt : types) {
      std::vector<uint8_t> want(static_cast<size_t>(n) * dtype_size(dt));
      cpu::cast(src.data(), st, want.data(), dt, n);
      DevBuf<uint8_t> ddst(want.size());
      cuda::cast(dsrc.get(), st, ddst.get(), dt, n);
      const bool same = ddst.download() == want;
      EXPECT_TRUE(same) << "cast " << dtype_name(st) << " -> " << dtype_name(dt)
                        << " differs from the CPU (expected bit-identical)";
      all = all && same;
    }
    report("cast to f32/bf16/f16/i32/i64/u16", dtype_name(st), all ? "0 (exact)" : "differs",
           "exact", all);
  }
  for (DType t : types) {
    std::vector<uint8_t> want(static_cast<size_t>(n) * dtype_size(t));
    cpu::fill(want.data(), t, 3.75, n);
    DevBuf<uint8_t> d(want.size());
    cuda::fill(d.get(), t, 3.75, n);
    expect_exact("fill", dtype_name(t), d.download(), want);
  }
}

template <class T>
void check_elementwise(Rng& rng) {
  const int64_t rows = 37, cols = 203, n = rows * cols;
  const auto a = to_storage<T>(rng.normal(static_cast<size_t>(n))),
             b = to_storage<T>(rng.normal(static_cast<size_t>(n)));
  const auto bias = to_storage<T>(rng.normal(static_cast<size_t>(cols)));
  DevBuf<T> da(a), db(b), dbias(bias), dy(static_cast<size_t>(n));
  std::vector<T> want(static_cast<size_t>(n));
  cpu::add(a.data(), b.data(), want.data(), n, n);
  cuda::add(da.get(), db.get(), dy.get(), n, n);
  expect_close("add", dy.download(), want);
  cpu::add(a.data(), bias.data(), want.data(), n, cols);
  cuda::add(da.get(), dbias.get(), dy.get(), n, cols);
  expect_close("add (broadcast)", dy.download(), want);
  cpu::mul(a.data(), bias.data(), want.data(), n, cols);
  cuda::mul(da.get(), dbias.get(), dy.get(), n, cols);
  expect_close("mul (broadcast)", dy.download(), want);
  cpu::scale(a.data(), want.data(), -1.7f, n);
  cuda::scale(da.get(), dy.get(), -1.7f, n);
  expect_close("scale", dy.download(), want);
  // Column sums on top of existing values; tall enough for several row chunks (atomics).
  const int64_t tall = 1000;
  const auto x = to_storage<T>(rng.normal(static_cast<size_t>(tall * cols)));
  const std::vector<float> y0 = rng.normal(static_cast<size_t>(cols));
  std::vector<float> ywant = y0;
  cpu::sum_rows_acc(x.data(), ywant.data(), tall, cols);
  DevBuf<T> dx(x);
  DevBuf<float> dsum(y0);
  cuda::sum_rows_acc(dx.get(), dsum.get(), tall, cols);
  // f32 accumulation over 1000 rows in a different order: ~sqrt(1000) ulps of f32.
  expect_close(std::string("sum_rows_acc"), type_name<T>(), dsum.download(), ywant, 1e-5);
}

TEST_F(CudaKernels, ElementwiseMatchesCpu) {
  Rng rng;
  TS_TRACE_SEED(rng);
  check_elementwise<float>(rng);
  check_elementwise<bf16>(rng);
  check_elementwise<f16>(rng);
  const int64_t n = 100003;
  const std::vector<float> x = rng.normal(static_cast<size_t>(n)),
                           y0 = rng.normal(static_cast<size_t>(n));
  DevBuf<float> dx(x), dy(y0);
  std::vector<float> want = y0;
  cpu::axpy(want.data(), x.data(), 0.37f, n);
  cuda::axpy(dy.get(), dx.get(), 0.37f, n);
  expect_close("axpy", dy.download(), want);
  cpu::add_inplace(want.data(), x.data(), n);
  cuda::add_inplace(dy.get(), dx.get(), n);
  expect_close("add_inplace", dy.download(), want);
  // f64 accumulation on both sides: only the summation order differs.
  const double s_cpu = cpu::sum(x.data(), n), s_gpu = cuda::sum(dx.get(), n);
  const double q_cpu = cpu::sum_squares(x.data(), n), q_gpu = cuda::sum_squares(dx.get(), n);
  expect_close("sum (f64)", "f32", {float(s_gpu)}, {float(s_cpu)}, 1e-6);
  expect_close("sum_squares (f64)", "f32", {float(q_gpu)}, {float(q_cpu)}, 1e-6);
  EXPECT_NEAR(s_gpu, s_cpu, 1e-9 * q_cpu);  // |sum| error bounded by eps_f64 * n * max|x|
  EXPECT_NEAR(q_gpu, q_cpu, 1e-12 * q_cpu);
}

template <class T>
void check_activations(Rng& rng) {
  const int64_t n = 33001;
  // Wide range: the tails of GELU / SiLU and exp's clamping.
  const auto x = to_storage<T>(rng.uniform(static_cast<size_t>(n), -12.f, 12.f));
  const std::vector<float> gy = rng.normal(static_cast<size_t>(n));
  DevBuf<T> dx(x), dout(static_cast<size_t>(n));
  DevBuf<float> dgy(gy);
  const std::pair<kernels::Activation, const char*> acts[] = {{kernels::Activation::gelu, "gelu"},
                                                              {kernels::Activation::silu, "silu"},
                                                              {kernels::Activation::relu, "relu"}};
  for (const auto& [act, name] : acts) {
    std::vector<T> want(static_cast<size_t>(n));
    cpu::activation_forward(act, x.data(), want.data(), n);
    cuda::activation_forward(act, dx.get(), dout.get(), n);
    expect_close(std::string(name) + " forward", dout.download(), want);
    cpu::activation_backward(act, x.data(), gy.data(), want.data(), n);
    cuda::activation_backward(act, dx.get(), dgy.get(), dout.get(), n);
    expect_close(std::string(name) + " backward", dout.download(), want);
  }
}

TEST_F(CudaKernels, ActivationsMatchCpu) {
  Rng rng;
  TS_TRACE_SEED(rng);
  check_activations<float>(rng);
  check_activations<bf16>(rng);
  check_activations<f16>(rng);
}

template <class T>
void check_norms(Rng& rng, int64_t rows, int64_t C) {
  const auto x = to_storage<T>(rng.normal(static_cast<size_t>(rows * C), 2.f));
  const std::vector<float> w = rng.normal(static_cast<size_t>(C)),
                           b = rng.normal(static_cast<size_t>(C));
  const std::vector<float> gy = rng.normal(static_cast<size_t>(rows * C));
  DevBuf<T> dx(x), dy(static_cast<size_t>(rows * C)), dgx(static_cast<size_t>(rows * C));
  DevBuf<float> dw(w), db(b), dgy(gy), dmean(static_cast<size_t>(rows)),
      drstd(static_cast<size_t>(rows));
  DevBuf<float> ddw(static_cast<size_t>(C)), ddb(static_cast<size_t>(C));
  std::vector<T> y(static_cast<size_t>(rows * C)), gx(static_cast<size_t>(rows * C));
  std::vector<float> mean(static_cast<size_t>(rows)), rstd(static_cast<size_t>(rows)),
      gw(static_cast<size_t>(C)), gb(static_cast<size_t>(C));
  const std::string shape = " [" + std::to_string(rows) + "x" + std::to_string(C) + "]";

  cpu::layer_norm_forward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, C,
                          1e-5f);
  cuda::layer_norm_forward(dx.get(), dw.get(), db.get(), dy.get(), dmean.get(), drstd.get(), rows,
                           C, 1e-5f);
  expect_close("layer_norm fwd y" + shape, dy.download(), y);
  expect_close("layer_norm fwd mean" + shape, type_name<T>(), dmean.download(), mean, 1e-5);
  expect_close("layer_norm fwd rstd" + shape, type_name<T>(), drstd.download(), rstd, 1e-5);
  dmean.upload(mean);  // the backward sees the same statistics on both sides
  drstd.upload(rstd);
  cpu::layer_norm_backward(x.data(), w.data(), mean.data(), rstd.data(), gy.data(), gx.data(),
                           gw.data(), gb.data(), rows, C);
  cuda::layer_norm_backward(dx.get(), dw.get(), dmean.get(), drstd.get(), dgy.get(), dgx.get(),
                            ddw.get(), ddb.get(), rows, C);
  expect_close("layer_norm bwd dx" + shape, dgx.download(), gx);
  expect_close("layer_norm bwd dw" + shape, type_name<T>(), ddw.download(), gw, 1e-5);
  expect_close("layer_norm bwd db" + shape, type_name<T>(), ddb.download(), gb, 1e-5);

  cpu::rms_norm_forward(x.data(), w.data(), y.data(), rstd.data(), rows, C, 1e-6f);
  cuda::rms_norm_forward(dx.get(), dw.get(), dy.get(), drstd.get(), rows, C, 1e-6f);
  expect_close("rms_norm fwd y" + shape, dy.download(), y);
  expect_close("rms_norm fwd rstd" + shape, type_name<T>(), drstd.download(), rstd, 1e-5);
  drstd.upload(rstd);
  cpu::rms_norm_backward(x.data(), w.data(), rstd.data(), gy.data(), gx.data(), gw.data(), rows, C);
  cuda::rms_norm_backward(dx.get(), dw.get(), drstd.get(), dgy.get(), dgx.get(), ddw.get(), rows,
                          C);
  expect_close("rms_norm bwd dx" + shape, dgx.download(), gx);
  expect_close("rms_norm bwd dw" + shape, type_name<T>(), ddw.download(), gw, 1e-5);
}

TEST_F(CudaKernels, LayerNormAndRmsNormMatchCpu) {
  Rng rng;
  TS_TRACE_SEED(rng);
  // GPT-2's width and tall batches (several parameter-gradient chunks), and odd sizes.
  check_norms<float>(rng, 2048, 768);
  check_norms<float>(rng, 7, 33);
  check_norms<bf16>(rng, 512, 768);
  check_norms<f16>(rng, 300, 130);
}

template <class T>
void check_softmax(Rng& rng, int64_t rows, int64_t C) {
  const auto x = to_storage<T>(rng.normal(static_cast<size_t>(rows * C), 3.f));
  const std::vector<float> gy = rng.normal(static_cast<size_t>(rows * C));
  DevBuf<T> dx(x), dy(static_cast<size_t>(rows * C)), dgx(static_cast<size_t>(rows * C));
  DevBuf<float> dgy(gy);
  std::vector<T> y(static_cast<size_t>(rows * C)), gx(static_cast<size_t>(rows * C));
  cpu::softmax_forward(x.data(), y.data(), rows, C);
  cuda::softmax_forward(dx.get(), dy.get(), rows, C);
  expect_close("softmax fwd", dy.download(), y);
  dy.upload(y);
  cpu::softmax_backward(y.data(), gy.data(), gx.data(), rows, C);
  cuda::softmax_backward(dy.get(), dgy.get(), dgx.get(), rows, C);
  expect_close("softmax bwd", dgx.download(), gx);
}

TEST_F(CudaKernels, SoftmaxMatchesCpu) {
  Rng rng;
  TS_TRACE_SEED(rng);
  check_softmax<float>(rng, 300, 1000);
  check_softmax<float>(rng, 3, 7);
  check_softmax<bf16>(rng, 64, 513);
  check_softmax<f16>(rng, 64, 513);
}

// The loss stays on the device (the mean, rounded once to f32, as the CPU op computes it from
// the CPU kernel's f64 sum and count) and the backward reads the incoming gradient there.
TEST_F(CudaKernels, CrossEntropyMatchesCpu) {
  Rng rng;
  TS_TRACE_SEED(rng);
  const int64_t rows = 257, V = 50257;  // GPT-2's vocabulary: long rows
  const int32_t ignore = -100;
  std::vector<int32_t> targets = rng.ints(static_cast<size_t>(rows), 0, int32_t(V - 1));
  for (int64_t r = 0; r < rows; r += 10) targets[static_cast<size_t>(r)] = ignore;
  const std::vector<float> logits = rng.normal(static_cast<size_t>(rows * V), 4.f);
  DevBuf<int32_t> dt(targets);
  DevBuf<float> dlse(static_cast<size_t>(rows)), dloss(1), dg(std::vector<float>{0.75f});
  std::vector<float> lse(static_cast<size_t>(rows)), gx(static_cast<size_t>(rows * V));
  const auto mean = [](const kernels::CrossEntropySum& s) {
    return s.count ? float(s.loss / double(s.count)) : 0.f;
  };
  {
    DevBuf<float> dl(logits), dgx(static_cast<size_t>(rows * V));
    const kernels::CrossEntropySum want =
        cpu::cross_entropy_forward(logits.data(), targets.data(), lse.data(), rows, V, ignore);
    ASSERT_EQ(want.count, 231);
    cuda::cross_entropy_forward(dl.get(), dt.get(), dlse.get(), dloss.get(), rows, V, ignore);
    expect_close("cross_entropy loss", "f32", dloss.download(), {mean(want)}, 1e-5);
    expect_close("cross_entropy lse", "f32", dlse.download(), lse, 1e-5);
    dlse.upload(lse);
    const float scale = 0.75f / float(want.count);
    cpu::cross_entropy_backward(logits.data(), targets.data(), lse.data(), scale, gx.data(), rows,
                                V, ignore);
    cuda::cross_entropy_backward(dl.get(), dt.get(), dlse.get(), dg.get(), want.count, dgx.get(),
                                 rows, V, ignore);
    expect_close("cross_entropy bwd", "f32", dgx.download(), gx, 1e-5);
  }
  {  // bf16 logits (an LM head in bf16): the CPU reference sees the same rounded values in f32.
    const auto lb = to_storage<bf16>(logits);
    const std::vector<float> lf = to_float(lb);
    DevBuf<bf16> dl(lb), dgx(static_cast<size_t>(rows * V));
    const kernels::CrossEntropySum want =
        cpu::cross_entropy_forward(lf.data(), targets.data(), lse.data(), rows, V, ignore);
    cuda::cross_entropy_forward(dl.get(), dt.get(), dlse.get(), dloss.get(), rows, V, ignore);
    // The loss and lse are f32 computations on identical inputs: f32 bounds.
    expect_close("cross_entropy loss", "bf16", dloss.download(), {mean(want)}, 1e-5);
    expect_close("cross_entropy lse", "bf16", dlse.download(), lse, 1e-5);
    // The backward takes f32 logits (the op's) and writes a bf16 gradient, each element rounded
    // once, as the CPU kernel does.
    dlse.upload(lse);
    const float scale = 0.75f / float(want.count);
    std::vector<bf16> gxb(static_cast<size_t>(rows * V));
    cpu::cross_entropy_backward<bf16>(lf.data(), targets.data(), lse.data(), scale, gxb.data(),
                                      rows, V, ignore);
    DevBuf<float> dlf(lf);
    cuda::cross_entropy_backward(dlf.get(), dt.get(), dlse.get(), dg.get(), want.count, dgx.get(),
                                 rows, V, ignore);
    expect_close("cross_entropy bwd", "bf16", to_float(dgx.download()), to_float(gxb), tol<bf16>());
  }
  {  // Every row ignored: a loss of 0 and zero gradients, as on the CPU.
    const std::vector<int32_t> none(4, ignore);
    DevBuf<int32_t> dnone(none);
    DevBuf<float> dl(std::vector<float>(4 * 5, 1.f)), dgx(20), dlse4(4);
    dloss.upload({7.f});
    cuda::cross_entropy_forward(dl.get(), dnone.get(), dlse4.get(), dloss.get(), 4, 5, ignore);
    EXPECT_EQ(dloss.download(), std::vector<float>{0.f});
    cuda::cross_entropy_backward(dl.get(), dnone.get(), dlse4.get(), dg.get(), 0, dgx.get(), 4, 5,
                                 ignore);
    EXPECT_EQ(dgx.download(), std::vector<float>(20, 0.f));
  }
}

template <class T>
void check_embedding(Rng& rng) {
  const int64_t V = 1000, C = 96, n = 4096;  // n >> V: every row repeats (atomics contend)
  const auto w = to_storage<T>(rng.normal(static_cast<size_t>(V * C)));
  const std::vector<int32_t> ids = rng.ints(static_cast<size_t>(n), 0, int32_t(V - 1));
  DevBuf<T> dw(w), dy(static_cast<size_t>(n * C));
  DevBuf<int32_t> did(ids);
  std::vector<T> y(static_cast<size_t>(n * C));
  cpu::embedding_forward(w.data(), ids.data(), y.data(), n, C);
  cuda::embedding_forward(dw.get(), did.get(), dy.get(), n, C);
  expect_exact("embedding fwd", type_name<T>(), to_float(dy.download()), to_float(y));
}

// The backward: positions grouped by id, one block per id summing in position order, the CPU
// kernel's very additions: bit-identical, accumulating or not, through both entry points (ids on
// the device; groups built on the host, the op's path). V = 7 for 4096 positions puts ~585
// gradient rows on each id, where any other order of the sum would show in the last bits;
// C = 300 is two full column tiles and a partial one.
void check_embedding_backward(Rng& rng, int64_t V, int64_t C, int64_t n) {
  SCOPED_TRACE("V " + std::to_string(V) + " C " + std::to_string(C) + " n " + std::to_string(n));
  const std::vector<int32_t> ids = rng.ints(static_cast<size_t>(n), 0, int32_t(V - 1));
  const std::vector<float> gy = rng.normal(static_cast<size_t>(n * C));
  const std::vector<float> old = rng.normal(static_cast<size_t>(V * C));
  const kernels::IdGroups groups = kernels::group_ids(ids.data(), n, V);
  DevBuf<float> dgy(gy);
  DevBuf<int32_t> did(ids);
  const std::string shape = "V=" + std::to_string(V) + " C=" + std::to_string(C);
  for (bool accumulate : {false, true}) {
    std::vector<float> want = old;  // stale values to overwrite, or old ones to add onto
    cpu::embedding_backward(gy.data(), ids.data(), want.data(), n, V, C, accumulate);
    DevBuf<float> by_ids(old), by_groups(old);
    cuda::embedding_backward(dgy.get(), did.get(), by_ids.get(), n, V, C, accumulate);
    cuda::embedding_backward(dgy.get(), groups, by_groups.get(), V, C, accumulate);
    const std::string what =
        std::string(accumulate ? "embedding bwd accumulate " : "embedding bwd ");
    expect_exact(what + shape, "f32", canonical_bits(by_ids.download()), canonical_bits(want));
    expect_exact(what + "(host groups) " + shape, "f32", canonical_bits(by_groups.download()),
                 canonical_bits(want));
  }
}

TEST_F(CudaKernels, EmbeddingMatchesCpu) {
  Rng rng;
  TS_TRACE_SEED(rng);
  check_embedding<float>(rng);
  check_embedding<bf16>(rng);
  check_embedding<f16>(rng);
  check_embedding_backward(rng, 1000, 96, 4096);
  check_embedding_backward(rng, 7, 300, 4096);
  check_embedding_backward(rng, 50257, 64, 2048);  // GPT-2's vocabulary: most rows unused
}

// No atomics, so no run-to-run variation: the same inputs give the same bits every time (the
// old atomicAdd kernel could not promise this for repeated ids).
TEST_F(CudaKernels, EmbeddingBackwardRepeatsBitForBit) {
  Rng rng;
  TS_TRACE_SEED(rng);
  const int64_t V = 7, C = 768, n = 4096;
  const std::vector<int32_t> ids = rng.ints(static_cast<size_t>(n), 0, int32_t(V - 1));
  DevBuf<float> dgy(rng.normal(static_cast<size_t>(n * C)));
  DevBuf<int32_t> did(ids);
  std::vector<std::vector<uint32_t>> runs;
  for (int run = 0; run < 3; ++run) {
    DevBuf<float> dw(static_cast<size_t>(V * C));
    cuda::embedding_backward(dgy.get(), did.get(), dw.get(), n, V, C);
    runs.push_back(canonical_bits(dw.download()));
  }
  expect_exact("embedding bwd run 2 vs run 1", "f32", runs[1], runs[0]);
  expect_exact("embedding bwd run 3 vs run 1", "f32", runs[2], runs[0]);
}

TEST_F(CudaKernels, EmbeddingBackwardWithNoIdsZeroesOrKeeps) {
  const int64_t V = 5, C = 9;
  const std::vector<float> old(static_cast<size_t>(V * C), 2.5f);
  DevBuf<float> dgy(1), kept(old), zeroed(old);
  DevBuf<int32_t> did(1);
  cuda::embedding_backward(dgy.get(), did.get(), kept.get(), 0, V, C, true);
  cuda::embedding_backward(dgy.get(), did.get(), zeroed.get(), 0, V, C, false);
  expect_exact("embedding bwd no ids, accumulate", "f32", kept.download(), old);
  expect_exact("embedding bwd no ids", "f32", zeroed.download(),
               std::vector<float>(static_cast<size_t>(V * C), 0.f));
}

template <class T>
void check_dropout(Rng& rng) {
  const int64_t n = 100001;
  const auto x = to_storage<T>(rng.normal(static_cast<size_t>(n)));
  const std::vector<float> gy = rng.normal(static_cast<size_t>(n));
  const uint64_t seed = rng.u64(), offset = rng.u64() >> 8;
  const float p = 0.3f;
  DevBuf<T> dx(x), dy(static_cast<size_t>(n));
  DevBuf<float> dgy(gy);
  std::vector<T> y(static_cast<size_t>(n));
  cpu::dropout_forward(x.data(), y.data(), n, p, seed, offset);
  cuda::dropout_forward(dx.get(), dy.get(), n, p, seed, offset);
  // Same mask (the hash is shared) and the same single multiply: bit-identical.
  expect_exact("dropout fwd", type_name<T>(), to_float(dy.download()), to_float(y));
  cpu::dropout_backward(gy.data(), y.data(), n, p, seed, offset);
  cuda::dropout_backward(dgy.get(), dy.get(), n, p, seed, offset);
  expect_exact("dropout bwd", type_name<T>(), to_float(dy.download()), to_float(y));
}

TEST_F(CudaKernels, DropoutMasksAreBitIdenticalToCpu) {
  Rng rng;
  TS_TRACE_SEED(rng);
  check_dropout<float>(rng);
  check_dropout<bf16>(rng);
  check_dropout<f16>(rng);
}

}  // namespace
