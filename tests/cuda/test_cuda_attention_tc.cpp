// The tensor-core attention kernels (kernels/cuda/attention_tc.h) against the CPU attention on
// the same 16-bit-rounded inputs and against the CUDA-core kernel (attention.h), repeat runs
// bit for bit, and the attention op's dispatch into them under bf16 / f16 autocast. Device
// tests skip without a device (CudaTest); the launch geometry and the argument checks at the
// end run anywhere.
//
// Bounds (normwise relative error max |gpu - ref| / max |ref|). Both sides compute on the same
// 16-bit q, k, v (and dout rounded to the 16-bit type, as the kernels round it); the products
// are exact in f32 on both. What differs:
//  - the tensor-core kernels round P to the 16-bit type before P V (forward) and P^T dO (dV),
//    and dS before dS K and dS^T Q: each term of those sums moves by at most one unit roundoff
//    u (2^-8 = 3.9e-3 for bf16, 2^-11 = 4.9e-4 for f16), with random signs, so an output moves
//    by at most u * sum |p v| <= u max |v| and typically by u / sqrt(3) times a root-sum-square
//    well below that. tol<T>() = 1e-2 (bf16, 2.6u) and 2e-3 (f16, 4u), the bounds of every
//    other 16-bit comparison, hold with a margin; a wrong mask, scale, tile edge or lane layout
//    moves results by O(1) relative.
//  - the log-sum-exp comes from f32 scores and f32 sums (P is rounded only after it is summed):
//    the summation order and tensor cores' own accumulation (aligned and truncated within each
//    16-long k-step, not IEEE round-to-nearest) leave a few f32 ulps of the scores, ~1e-6
//    relative; kTolLse = 1e-4 leaves room for that and still rejects any real error (a wrong
//    scale or log base moves lse by percents).
// The dq / dk / dv parts are compared separately, each against its own maximum, except at T = 1
// where dq and dk are pure rounding noise on both sides (dS = P (dP - delta) = 1 * (dP - dP)).
#include <gtest/gtest.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "cuda_test_util.h"
#include "kernels/common/attention_dims.h"
#include "kernels/cpu/attention.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_tc.h"
#include "ops/autocast.h"
#include "ops/ops.h"

using namespace tessera;
using namespace tessera::cudatest;

namespace {

class CudaAttentionTc : public CudaTest {};

constexpr double kTolLse = 1e-4;

struct Case {
  int64_t B, T, H, hs;
  float stddev = 1.f;  // of q, k, v: 2 makes the softmax sharp (score std 4 instead of 1)
  int64_t Hkv = 0;     // kv heads (grouped-query attention); 0: H
};

kernels::AttentionDims dims(const Case& c) {
  return {c.B, c.T, c.H * c.hs, c.H, c.Hkv > 0 ? c.Hkv : c.H};
}

std::string case_name(const Case& c) {
  return "attention_tc T" + std::to_string(c.T) + " hs" + std::to_string(c.hs) + " BH" +
         std::to_string(c.B * c.H) + (c.Hkv > 0 ? " kv" + std::to_string(c.Hkv) : "") +
         (c.stddev > 1.f ? " sharp" : "");
}

// One part of a [rows, C + 2 Ckv] gradient: 0 = dq [rows, C], 1 = dk, 2 = dv [rows, Ckv].
std::vector<float> part(const std::vector<float>& dqkv, int64_t rows,
                        const kernels::AttentionDims& d, int which) {
  const int64_t width = kernels::attention_qkv_width(d), Ckv = kernels::attention_kv_channels(d);
  const int64_t n = which == 0 ? d.channels : Ckv;
  const int64_t col = which == 0 ? 0 : d.channels + (which - 1) * Ckv;
  std::vector<float> out(size_t(rows * n));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < n; ++c) out[size_t(r * n + c)] = dqkv[size_t(r * width + col + c)];
  return out;
}

// dq, dk and dv each within `bound` of the reference (the whole dqkv at T = 1); one [cmp] line.
void expect_grad_close(const std::string& op, const char* dtype, const std::vector<float>& got,
                       const std::vector<float>& want, const Case& c, double bound) {
  const int64_t rows = c.B * c.T;
  if (c.T == 1) {
    expect_close(op + " dqkv", dtype, got, want, bound);
    return;
  }
  const char* names[] = {"dq", "dk", "dv"};
  double worst = 0;
  std::string detail;
  for (int p = 0; p < 3; ++p) {
    const double e = rel_error(part(got, rows, dims(c), p), part(want, rows, dims(c), p));
    EXPECT_LE(e, bound) << op << " (" << dtype << "): " << names[p] << " normwise relative error";
    worst = std::max(worst, e);
    detail += std::string(p ? ", " : "") + names[p] + " " + sci(e);
  }
  report(op + " (" + detail + ")", dtype, sci(worst), sci(bound), worst <= bound);
}

// Forward and backward of one case against the CPU on the same rounded inputs; with
// `vs_cuda_core`, also against the f32 CUDA-core kernels on them.
template <class T>
void check_case(Rng& rng, const Case& c, bool vs_cuda_core) {
  const kernels::AttentionDims d = dims(c);
  const auto nqkv = size_t(c.B * c.T * kernels::attention_qkv_width(d));
  const auto nout = size_t(c.B * c.T * d.channels), nlse = size_t(c.B * c.H * c.T);
  const std::string name = case_name(c);
  const char* dt = type_name<T>();
  const std::vector<T> qkv16 = to_storage<T>(rng.normal(nqkv, c.stddev));
  const std::vector<float> qkv = to_float(qkv16);  // exactly the values the GPU reads
  const std::vector<float> dout = rng.normal(nout);
  const std::vector<float> dout_r = to_float(to_storage<T>(dout));  // as the kernels round it

  std::vector<float> out(nout), lse(nlse), dqkv(nqkv);
  cpu::attention_forward(d, qkv.data(), out.data(), lse.data());
  cpu::attention_backward(d, qkv.data(), out.data(), lse.data(), dout_r.data(), dqkv.data());

  DevBuf<T> gqkv(qkv16);
  DevBuf<float> gout(nout), glse(nlse), gdout(dout), gdqkv(nqkv);
  cuda::attention_tc_forward(d, gqkv.get(), gout.get(), glse.get());
  const std::vector<float> tc_out = gout.download(), tc_lse = glse.download();
  expect_close(name + " fwd", dt, tc_out, out, tol<T>());
  expect_close(name + " lse", dt, tc_lse, lse, kTolLse);
  // The backward from the CPU's out and lse on both sides: each comparison isolates one kernel.
  gout.upload(out);
  glse.upload(lse);
  cuda::attention_tc_backward(d, gqkv.get(), gout.get(), glse.get(), gdout.get(), gdqkv.get());
  const std::vector<float> tc_dqkv = gdqkv.download();
  expect_grad_close(name + " bwd", dt, tc_dqkv, dqkv, c, tol<T>());
  if (!vs_cuda_core) return;

  // The CUDA-core kernels in f32 on the same rounded qkv (and rounded dout).
  DevBuf<float> fqkv(qkv), fout(nout), flse(nlse), fdout(dout_r), fdqkv(nqkv);
  cuda::attention_forward(d, fqkv.get(), fout.get(), flse.get());
  expect_close(name + " fwd vs cuda-core", dt, tc_out, fout.download(), tol<T>());
  fout.upload(out);
  flse.upload(lse);
  cuda::attention_backward(d, fqkv.get(), fout.get(), flse.get(), fdout.get(), fdqkv.get());
  expect_grad_close(name + " bwd vs cuda-core", dt, tc_dqkv, fdqkv.download(), c, tol<T>());
}

std::vector<Case> cases(int64_t hs) {
  return {{3, 1, 2, hs},
          {2, 17, 3, hs},
          {2, 64, 3, hs},
          {2, 100, 3, hs},
          {2, 256, 3, hs},
          {1, 1024, 2, hs},
          {2, 100, 2, hs, 2.f},
          // grouped-query (2 query heads per kv head) and multi-query attention
          {2, 100, 4, hs, 1.f, 2},
          {1, 130, 4, hs, 1.f, 1},
          {2, 1, 4, hs, 1.f, 2}};
}

TEST_F(CudaAttentionTc, Bf16MatchesCpuOnRoundedInputs) {
  Rng rng;
  TS_TRACE_SEED(rng);
  for (int64_t hs : {64, 128})
    for (const Case& c : cases(hs)) {
      SCOPED_TRACE(case_name(c));
      check_case<bf16>(rng, c, c.T == 100 || c.T == 1024);
    }
}

TEST_F(CudaAttentionTc, F16MatchesCpuOnRoundedInputs) {
  Rng rng;
  TS_TRACE_SEED(rng);
  for (int64_t hs : {64, 128})
    for (const Case& c : cases(hs)) {
      SCOPED_TRACE(case_name(c));
      check_case<f16>(rng, c, c.T == 100 || c.T == 1024);
    }
}

// No atomics, a fixed order everywhere: a second run gives the same bits.
TEST_F(CudaAttentionTc, RepeatRunsAreBitIdentical) {
  Rng rng;
  TS_TRACE_SEED(rng);
  const Case c{2, 300, 4, 64, 1.f, 2};  // grouped-query: the dk/dv sums over a group
  const kernels::AttentionDims d = dims(c);
  const auto nqkv = size_t(c.B * c.T * kernels::attention_qkv_width(d));
  const auto nout = size_t(c.B * c.T * d.channels), nlse = size_t(c.B * c.H * c.T);
  DevBuf<bf16> qkv(to_storage<bf16>(rng.normal(nqkv)));
  DevBuf<float> dout(rng.normal(nout));
  std::vector<float> first[3];
  for (int run = 0; run < 2; ++run) {
    DevBuf<float> out(nout), lse(nlse), dqkv(nqkv);
    cuda::attention_tc_forward(d, qkv.get(), out.get(), lse.get());
    cuda::attention_tc_backward(d, qkv.get(), out.get(), lse.get(), dout.get(), dqkv.get());
    const std::vector<float> now[3] = {out.download(), lse.download(), dqkv.download()};
    if (run == 0) {
      for (int k = 0; k < 3; ++k) first[k] = now[k];
      continue;
    }
    const char* what[] = {"out", "lse", "dqkv"};
    for (int k = 0; k < 3; ++k)
      expect_exact(std::string("attention_tc repeat ") + what[k], "bf16", canonical_bits(now[k]),
                   canonical_bits(first[k]));
  }
}

// The op under autocast: on the GPU the tensor-core kernels (head size 64 / 128), on the CPU
// the f32 kernel on rounded values. Output and gradient are f32 on both.
void compare_op(cudatest::Rng& rng, DType ac, const Shape& shape, int heads, double bound,
                int kv_heads = 0) {
  if (kv_heads == 0) kv_heads = heads;
  const char* dt = dtype_name(ac);
  const std::string name = "attention op hs" + std::to_string(shape[2] / (heads + 2 * kv_heads)) +
                           " T" + std::to_string(shape[1]) +
                           (kv_heads == heads ? "" : " kv" + std::to_string(kv_heads));
  AutocastGuard guard(ac);
  const Tensor x = Tensor::from_vector(rng.normal(size_t(shape.numel())), shape);
  Tensor xc = x.clone().set_requires_grad(), xg = x.to(Device::cuda(0)).set_requires_grad();
  Tensor yc = ops::attention(xc, heads, kv_heads), yg = ops::attention(xg, heads, kv_heads);
  ASSERT_TRUE(yg.is_cuda());
  EXPECT_EQ(yg.dtype(), DType::f32);
  expect_close(name + " fwd", dt, yg.to_vector(), yc.to_vector(), bound);
  const Tensor r = Tensor::from_vector(rng.normal(size_t(yc.numel())), yc.shape());
  ops::sum(ops::mul(yc, r)).backward();
  ops::sum(ops::mul(yg, r.to(Device::cuda(0)))).backward();
  ASSERT_TRUE(xg.grad().defined() && xc.grad().defined());
  EXPECT_TRUE(xg.grad().is_cuda());
  expect_close(name + " grad", dt, xg.grad().to_vector(), xc.grad().to_vector(), bound);
}

TEST_F(CudaAttentionTc, OpUnderAutocastMatchesCpu) {
  Rng rng;
  TS_TRACE_SEED(rng);
  compare_op(rng, DType::bf16, Shape{2, 77, 3 * 768}, 12, tol<bf16>());  // GPT-2 small's heads
  compare_op(rng, DType::f16, Shape{2, 77, 3 * 768}, 12, tol<f16>());
  compare_op(rng, DType::bf16, Shape{1, 130, 3 * 256}, 2, tol<bf16>());  // head size 128
  // Head size 32: the f32 CUDA-core kernel on rounded values, like the CPU: only the order of
  // f32 sums differs.
  compare_op(rng, DType::bf16, Shape{2, 77, 3 * 64}, 2, tol<float>());
  // Grouped-query (Llama 3's 4 query heads per kv head) on the tensor cores and the CUDA cores.
  compare_op(rng, DType::bf16, Shape{2, 77, (8 + 2 * 2) * 64}, 8, tol<bf16>(), 2);
  compare_op(rng, DType::f16, Shape{1, 70, (4 + 2 * 1) * 128}, 4, tol<f16>(), 1);
  compare_op(rng, DType::f32, Shape{2, 77, (8 + 2 * 2) * 64}, 8, tol<float>(), 2);
}

// ---- attention_window: queries at an offset over separate keys and values ----

// Columns [c0, c1) of a [B, T, W] host tensor.
Tensor columns(const Tensor& x, int64_t c0, int64_t c1) {
  const int64_t rows = x.dim(0) * x.dim(1), W = x.dim(2);
  const std::vector<float> v = x.to_vector();
  std::vector<float> out;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = c0; c < c1; ++c) out.push_back(v[size_t(r * W + c)]);
  return Tensor::from_vector(out, Shape{x.dim(0), x.dim(1), c1 - c0});
}

struct WindowCase {
  int64_t B, Tq, Tk, offset, H, Hkv, hs;
};

// The op on the GPU against the CPU under autocast `ac` (f32: the CUDA-core kernels; bf16 / f16
// at head size 64 / 128: the tensor-core ones): output, dq and dkv; the keys past the last
// query's position get exactly zero on the GPU too (its buffers start as NaN on the emulator).
void compare_window_op(cudatest::Rng& rng, DType ac, const WindowCase& c, double bound) {
  const char* dt = dtype_name(ac);
  const std::string name = "attention_window hs" + std::to_string(c.hs) + " Tq" +
                           std::to_string(c.Tq) + " Tk" + std::to_string(c.Tk) + " offset" +
                           std::to_string(c.offset) + " kv" + std::to_string(c.Hkv);
  AutocastGuard guard(ac);
  const Shape qs{c.B, c.Tq, c.H * c.hs}, kvs{c.B, c.Tk, 2 * c.Hkv * c.hs};
  const Tensor q = Tensor::from_vector(rng.normal(size_t(qs.numel())), qs);
  const Tensor kv = Tensor::from_vector(rng.normal(size_t(kvs.numel())), kvs);
  Tensor qc = q.clone().set_requires_grad(), kvc = kv.clone().set_requires_grad();
  Tensor qg = q.to(Device::cuda(0)).set_requires_grad();
  Tensor kvg = kv.to(Device::cuda(0)).set_requires_grad();
  const int H = int(c.H), Hkv = int(c.Hkv);
  Tensor yc = ops::attention_window(qc, kvc, H, Hkv, c.offset);
  Tensor yg = ops::attention_window(qg, kvg, H, Hkv, c.offset);
  ASSERT_TRUE(yg.is_cuda());
  expect_close(name + " fwd", dt, yg.to_vector(), yc.to_vector(), bound);
  const Tensor r = Tensor::from_vector(rng.normal(size_t(yc.numel())), yc.shape());
  ops::sum(ops::mul(yc, r)).backward();
  ops::sum(ops::mul(yg, r.to(Device::cuda(0)))).backward();
  ASSERT_TRUE(qg.grad().defined() && kvg.grad().defined());
  expect_close(name + " dq", dt, qg.grad().to_vector(), qc.grad().to_vector(), bound);
  expect_close(name + " dkv", dt, kvg.grad().to_vector(), kvc.grad().to_vector(), bound);
  const std::vector<float> dkv = kvg.grad().to_vector();
  const int64_t width = kvs[2], seen = c.offset + c.Tq;
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t t = seen; t < c.Tk; ++t)
      for (int64_t x = 0; x < width; ++x)
        ASSERT_EQ(dkv[size_t((b * c.Tk + t) * width + x)], 0.f)
            << name << ": key " << t << " is past the last query";
}

TEST_F(CudaAttentionTc, WindowOpMatchesCpu) {
  Rng rng;
  TS_TRACE_SEED(rng);
  // f32 (CUDA-core kernels, head size 32): an offset inside a 32-key tile, unseen keys, GQA.
  compare_window_op(rng, DType::f32, {2, 45, 100, 37, 4, 2, 32}, tol<float>());
  compare_window_op(rng, DType::f32, {1, 20, 20, 0, 2, 2, 16}, tol<float>());
  // Tensor cores: an offset that is not a multiple of the 64-row tiles (the dk/dv kernel's query
  // tiles start unaligned), a 64-aligned one, unseen keys, GQA and MQA.
  compare_window_op(rng, DType::bf16, {2, 70, 200, 100, 4, 2, 64}, tol<bf16>());
  compare_window_op(rng, DType::f16, {1, 64, 150, 64, 2, 1, 128}, tol<f16>());
  // Head size 32 under bf16: the f32 CUDA-core kernels on rounded values, like the CPU.
  compare_window_op(rng, DType::bf16, {1, 33, 90, 50, 2, 2, 32}, tol<float>());
  // Head size 256: no CUDA kernel takes it; the error names the op and the input.
  const Device gpu = Device::cuda(0);
  expect_error(
      [&] {
        ops::attention_window(Tensor::zeros(Shape{1, 2, 256}, DType::f32, gpu),
                              Tensor::zeros(Shape{1, 2, 512}, DType::f32, gpu), 1, 1, 0);
      },
      {"attention_window", "head size 256", "(q f32[1, 2, 256]", "at most 128"});
}

// At offset 0 over its own rows the window is the fused op on the GPU as well: the same
// kernels, the same bits (f32 on the CUDA cores, bf16 on the tensor cores).
TEST_F(CudaAttentionTc, WindowAtOffsetZeroIsAttentionBitForBit) {
  Rng rng;
  TS_TRACE_SEED(rng);
  for (DType ac : {DType::f32, DType::bf16}) {
    AutocastGuard guard(ac);
    const int64_t B = 2, T = 70, H = 4, Hkv = 2, hs = 64, C = H * hs, Ckv = Hkv * hs;
    const Shape shape{B, T, C + 2 * Ckv};
    const Tensor x = Tensor::from_vector(rng.normal(size_t(shape.numel())), shape);
    const Tensor r =
        Tensor::from_vector(rng.normal(size_t(B * T * C)), Shape{B, T, C}).to(Device::cuda(0));
    Tensor qkv = x.to(Device::cuda(0)).set_requires_grad();
    Tensor q = columns(x, 0, C).to(Device::cuda(0)).set_requires_grad();
    Tensor kv = columns(x, C, C + 2 * Ckv).to(Device::cuda(0)).set_requires_grad();
    const Tensor y_full = ops::attention(qkv, int(H), int(Hkv));
    const Tensor y_win = ops::attention_window(q, kv, int(H), int(Hkv), 0);
    ops::sum(ops::mul(y_full, r)).backward();
    ops::sum(ops::mul(y_win, r)).backward();
    const char* dt = dtype_name(ac);
    expect_exact("attention_window offset 0 fwd", dt, canonical_bits(y_win.to_vector()),
                 canonical_bits(y_full.to_vector()));
    const Tensor dqkv = qkv.grad().to(Device::cpu());
    expect_exact("attention_window offset 0 dq", dt, canonical_bits(q.grad().to_vector()),
                 canonical_bits(columns(dqkv, 0, C).to_vector()));
    expect_exact("attention_window offset 0 dkv", dt, canonical_bits(kv.grad().to_vector()),
                 canonical_bits(columns(dqkv, C, C + 2 * Ckv).to_vector()));
  }
}

// The window's checks on the tensor-core path's own launch geometry: query and key tiles differ.
TEST(AttentionTcHost, WindowLaunchGeometry) {
  kernels::AttentionWindowDims w{2, 70, 200, 100, 256, 4, 2, 256, 256, 0};
  const cuda::AttentionTcLaunch L = cuda::attention_tc_window_launch(w);
  EXPECT_EQ(L.tiles, 2u);
  EXPECT_EQ(L.kv_tiles, 4u);
  EXPECT_EQ(L.pairs, 8u);
  EXPECT_EQ(L.kv_pairs, 4u);
  w.kv_seq = 169;
  expect_error([&] { cuda::attention_tc_window_launch(w); },
               {"seq 70", "offset 100", "169 keys", "keys >= offset + seq"});
}

// ---- host side: no device needed ----

TEST(AttentionTcHost, LaunchGeometry) {
  for (int64_t T : {1, 63, 64, 65, 100, 1024, 1025}) {
    const cuda::AttentionTcLaunch L = cuda::attention_tc_launch({3, T, 768, 12, 4});
    EXPECT_EQ(L.tiles, unsigned((T + 63) / 64)) << T;
    EXPECT_EQ(L.pairs, 36u);
    EXPECT_EQ(L.kv_pairs, 12u);
    EXPECT_EQ(L.threads, unsigned(cuda::kAttentionTcWarps * 32));
    EXPECT_EQ(L.head_size, 64);
  }
  EXPECT_EQ(cuda::attention_tc_launch({1, 0, 768, 12, 12}).tiles, 0u);
  // Shared memory per block: the tiles, padded rows and scratch of attention_tc.cu's layout.
  // All fit an sm_80 block (163 KiB opt-in) and an sm_90 one (227 KiB); the forward at head
  // size 64 fits the default 48 KiB.
  const cuda::AttentionTcLaunch a = cuda::attention_tc_launch({1, 8, 128, 2, 2});
  const cuda::AttentionTcLaunch b = cuda::attention_tc_launch({1, 8, 256, 2, 1});
  EXPECT_EQ(a.head_size, 64);
  EXPECT_EQ(b.head_size, 128);
  EXPECT_EQ(a.smem_forward, 45056u);
  EXPECT_LE(a.smem_forward, 48u * 1024);
  EXPECT_EQ(b.smem_forward, 61440u);
  EXPECT_EQ(a.smem_dq, 80896u);
  EXPECT_EQ(b.smem_dq, 113664u);
  EXPECT_EQ(a.smem_dkv, 90624u);
  EXPECT_EQ(b.smem_dkv, 123392u);
  for (size_t s : {b.smem_forward, b.smem_dq, b.smem_dkv}) EXPECT_LE(s, 163u * 1024);
}

TEST(AttentionTcHost, HeadSizes) {
  for (int64_t hs : {64, 128}) EXPECT_TRUE(cuda::attention_tc_supports(hs));
  for (int64_t hs : {0, 16, 32, 48, 96, 256}) EXPECT_FALSE(cuda::attention_tc_supports(hs));
}

TEST(AttentionTcHost, ArgumentErrorsComeBeforeAnyDeviceWork) {
  expect_error(
      [] {
        cuda::attention_tc_launch({1, 16, 288, 3, 3});
      },
      {"head size 96", "C 288", "H 3", "64 or 128"});
  expect_error([] { cuda::attention_tc_launch({1, 16, 100, 3, 3}); }, {"channels 100", "heads 3"});
  expect_error([] { cuda::attention_tc_launch({1, 16, 100, 0, 1}); }, {"heads 0"});
  expect_error([] { cuda::attention_tc_launch({1, 16, 256, 4, 3}); }, {"kv_heads 3", "heads 4"});
  expect_error([] { cuda::attention_tc_launch({1, 16, 256, 4, 0}); }, {"kv_heads 0"});
  expect_error(
      [] {
        cuda::attention_tc_launch({65536, 16, 64, 1, 1});
      },
      {"batch * heads = 65536", "65535"});
  expect_error([] { cuda::attention_tc_launch({1, -1, 64, 1, 1}); }, {"seq -1"});
  const kernels::AttentionDims d{1, 16, 128, 2, 2};
  alignas(16) static bf16 qkv[16 * 3 * 128 + 8];
  alignas(16) static float out[16 * 128 + 4], lse[2 * 16];
  alignas(16) static float dqkv[16 * 3 * 128 + 4];
  expect_error([&] { cuda::attention_tc_forward(d, qkv + 1, out, lse); },
               {"attention_tc", "qkv", "not 16-byte aligned"});
  expect_error([&] { cuda::attention_tc_forward(d, qkv, out + 2, lse); },
               {"out", "not 16-byte aligned"});
  expect_error([&] { cuda::attention_tc_forward<bf16>(d, nullptr, out, lse); }, {"qkv is null"});
  expect_error([&] { cuda::attention_tc_forward(d, qkv, out, nullptr); }, {"lse is null"});
  expect_error([&] { cuda::attention_tc_backward(d, qkv, out, lse, out, dqkv + 1); },
               {"dqkv", "not 16-byte aligned"});
  expect_error([&] { cuda::attention_tc_backward(d, qkv, out, lse, nullptr, dqkv); },
               {"dout is null"});
  expect_error(
      [&] {
        cuda::attention_tc_forward<f16>({1, 16, 96, 2, 2}, nullptr, nullptr, nullptr);
      },
      {"head size 48"});
  // Nothing to do: returns before looking at the pointers or the device.
  cuda::attention_tc_forward<bf16>({0, 16, 128, 2, 2}, nullptr, nullptr, nullptr);
  cuda::attention_tc_backward<f16>({2, 0, 128, 2, 2}, nullptr, nullptr, nullptr, nullptr, nullptr);
}

}  // namespace
