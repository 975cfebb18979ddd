// The CUDA GEMM (cuBLASLt), convolution / pooling and fused attention kernels against the CPU
// backend on fresh random inputs. Without a device every test is skipped.
#include <gtest/gtest.h>

#include <cmath>

#include "cuda_test_util.h"
#include "kernels/common/activation.h"
#include "kernels/common/attention_dims.h"
#include "kernels/common/conv_dims.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/conv.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/conv.h"
#include "kernels/cuda/matmul.h"

using namespace tessera;
using namespace tessera::cudatest;

namespace {

class CudaNnKernels : public CudaTest {};

// 16-bit operands: both backends multiply the same rounded values exactly and accumulate in
// f32, differing only in summation order (and tensor cores' accumulation rounding), so the
// bound is much tighter than a 16-bit output's.
constexpr double kTolMixed = 1e-4;
// cuBLASLt's fused GELU may use the hardware tanh approximation (~2^-11 relative).
constexpr double kTolFusedGelu = 1e-3;

std::string gemm_name(const char* what, int64_t m, int64_t n, int64_t k, bool ta, bool tb,
                      int64_t batch = 1) {
  return std::string(what) + " " + std::to_string(m) + "x" + std::to_string(n) + "x" +
         std::to_string(k) + (ta ? " At" : "") + (tb ? " Bt" : "") +
         (batch > 1 ? " batch " + std::to_string(batch) : "");
}

// f32, bf16 and f16 operands, every transpose combination, batches and accumulation.
TEST_F(CudaNnKernels, GemmMatchesCpu) {
  Rng rng;
  TS_TRACE_SEED(rng);
  const int64_t m = 129, n = 257, k = 100;
  for (int64_t batch : {int64_t(1), int64_t(3)}) {
    for (int t = 0; t < 4; ++t) {
      const bool ta = t & 1, tb = t & 2;
      const std::vector<float> a = rng.normal(static_cast<size_t>(batch * m * k));
      const std::vector<float> b = rng.normal(static_cast<size_t>(batch * k * n));
      const std::vector<float> c0 = rng.normal(static_cast<size_t>(batch * m * n));
      for (DType ab : {DType::f32, DType::bf16, DType::f16}) {
        // Operands rounded to the type; the CPU reference multiplies the same values.
        std::vector<float> ar = a, br = b;
        if (ab == DType::bf16)
          ar = to_float(to_storage<bf16>(a)), br = to_float(to_storage<bf16>(b));
        if (ab == DType::f16) ar = to_float(to_storage<f16>(a)), br = to_float(to_storage<f16>(b));
        for (bool acc : {false, true}) {
          std::vector<float> want = c0;
          cpu::GemmArgs cg;
          cg.batch = batch, cg.m = m, cg.n = n, cg.k = k, cg.trans_a = ta, cg.trans_b = tb;
          cg.a = ar.data(), cg.b = br.data(), cg.c = want.data(), cg.accumulate = acc;
          cpu::gemm(cg);
          DevBuf<float> dc(c0);
          cuda::GemmArgs g;
          g.batch = batch, g.m = m, g.n = n, g.k = k, g.trans_a = ta, g.trans_b = tb;
          g.ab_type = ab, g.c = dc.get(), g.accumulate = acc;
          DevBuf<uint8_t> da(host_bytes(a, ab)), db(host_bytes(b, ab));
          g.a = da.get(), g.b = db.get();
          cuda::gemm(g);
          expect_close(gemm_name(acc ? "gemm+=" : "gemm", m, n, k, ta, tb, batch), dtype_name(ab),
                       dc.download(), want, ab == DType::f32 ? tol<float>() : kTolMixed);
        }
      }
    }
  }
}

TEST_F(CudaNnKernels, GemmEpiloguesMatchCpu) {
  Rng rng;
  TS_TRACE_SEED(rng);
  // GPT-2's MLP up-projection shape (scaled down in m): x [m, 768] · W^T, W stored [3072, 768].
  const int64_t m = 64, n = 3072, k = 768;
  const std::vector<float> x = rng.normal(static_cast<size_t>(m * k));
  const std::vector<float> w = rng.normal(static_cast<size_t>(n * k), 0.05f);
  const std::vector<float> bias = rng.normal(static_cast<size_t>(n));
  for (DType ab : {DType::f32, DType::bf16}) {
    std::vector<float> xr = x, wr = w;
    if (ab == DType::bf16) xr = to_float(to_storage<bf16>(x)), wr = to_float(to_storage<bf16>(w));
    std::vector<float> pre(static_cast<size_t>(m * n));
    cpu::GemmArgs cg;
    cg.m = m, cg.n = n, cg.k = k, cg.trans_b = true;
    cg.a = xr.data(), cg.b = wr.data(), cg.bias = bias.data(), cg.c = pre.data();
    cpu::gemm(cg);
    std::vector<float> post(pre.size());
    cpu::activation_forward(kernels::Activation::gelu, pre.data(), post.data(),
                            int64_t(pre.size()));

    DevBuf<uint8_t> dx(host_bytes(x, ab)), dw(host_bytes(w, ab));
    DevBuf<float> dbias(bias), dc(pre.size()), daux(pre.size());
    const double t = ab == DType::f32 ? tol<float>() : kTolMixed;
    cuda::GemmArgs g;
    g.m = m, g.n = n, g.k = k, g.trans_b = true, g.ab_type = ab;
    g.a = dx.get(), g.b = dw.get(), g.bias = dbias.get(), g.c = dc.get();
    g.epilogue = cuda::Epilogue::bias;
    cuda::gemm(g);
    expect_close("gemm +bias", dtype_name(ab), dc.download(), pre, t);
    g.epilogue = cuda::Epilogue::bias_gelu;
    g.gelu_aux = daux.get();
    cuda::gemm(g);
    expect_close("gemm +bias+gelu", dtype_name(ab), dc.download(), post, kTolFusedGelu);
    expect_close("gemm +bias+gelu aux", dtype_name(ab), daux.download(), pre, t);
    // bf16 output (the epilogue runs as its own pass): the result rounded once to bf16.
    DevBuf<bf16> dc16(pre.size()), daux16(pre.size());
    g.c_type = DType::bf16, g.c = dc16.get(), g.gelu_aux = daux16.get();
    cuda::gemm(g);
    expect_close("gemm +bias+gelu ->bf16", dc16.download(), to_storage<bf16>(post));
    expect_close("gemm +bias+gelu aux ->bf16", daux16.download(), to_storage<bf16>(pre));
  }
  // k = 0: the product is empty, C is the bias alone.
  DevBuf<float> dbias(bias), dc(static_cast<size_t>(n));
  cuda::GemmArgs g;
  g.m = 1, g.n = n, g.k = 0, g.bias = dbias.get(), g.c = dc.get(),
  g.epilogue = cuda::Epilogue::bias;
  cuda::gemm(g);
  expect_exact("gemm k=0 +bias", "f32", dc.download(), bias);
}

void check_conv(Rng& rng, kernels::Conv2dDims d, DType compute) {
  d.infer_output();
  const std::string name = "conv2d " + std::to_string(d.kh) + "x" + std::to_string(d.kw) + " s" +
                           std::to_string(d.stride) + " p" + std::to_string(d.pad);
  const int64_t nx = d.n * d.cin * d.h * d.w, nw = d.cout * d.patch(),
                ny = d.n * d.cout * d.pixels();
  const std::vector<float> x = rng.normal(static_cast<size_t>(nx));
  const std::vector<float> w = rng.normal(static_cast<size_t>(nw), 0.2f);
  const std::vector<float> b = rng.normal(static_cast<size_t>(d.cout));
  const std::vector<float> dy = rng.normal(static_cast<size_t>(ny));
  std::vector<float> y(static_cast<size_t>(ny)), dx(static_cast<size_t>(nx)),
      dw(static_cast<size_t>(nw)), db(static_cast<size_t>(d.cout));
  DevBuf<float> gx(x), gw(w), gb(b), gdy(dy), gy(y.size()), gdx(dx.size()), gdw(dw.size()),
      gdb(db.size());
  const double t = compute == DType::f32 ? tol<float>() : kTolMixed;
  cpu::conv2d_forward(d, x.data(), w.data(), b.data(), y.data(), compute);
  cuda::conv2d_forward(d, gx.get(), gw.get(), gb.get(), gy.get(), compute);
  expect_close(name + " fwd", dtype_name(compute), gy.download(), y, t);
  cpu::conv2d_backward(d, x.data(), w.data(), dy.data(), dx.data(), dw.data(), db.data(), compute);
  cuda::conv2d_backward(d, gx.get(), gw.get(), gdy.get(), gdx.get(), gdw.get(), gdb.get(), compute);
  expect_close(name + " bwd dx", dtype_name(compute), gdx.download(), dx, t);
  expect_close(name + " bwd dw", dtype_name(compute), gdw.download(), dw, t);
  expect_close(name + " bwd db", dtype_name(compute), gdb.download(), db, 1e-5);  // f32 sums
}

template <class T>
void check_pool(Rng& rng, kernels::Pool2dDims d) {
  d.ho = (d.h - d.kernel) / d.stride + 1, d.wo = (d.w - d.kernel) / d.stride + 1;
  const int64_t nx = d.n * d.c * d.h * d.w, ny = d.n * d.c * d.ho * d.wo;
  // Values on a coarse grid make ties common (the first maximum must win), plus a NaN.
  std::vector<float> xf = rng.normal(static_cast<size_t>(nx));
  for (float& v : xf) v = std::round(v * 2.f) / 2.f;
  xf[static_cast<size_t>(nx / 3)] = NAN;
  const auto x = to_storage<T>(xf);
  const std::vector<float> dy = rng.normal(static_cast<size_t>(ny));
  std::vector<T> y(static_cast<size_t>(ny));
  std::vector<int32_t> am(static_cast<size_t>(ny));
  std::vector<float> dx(static_cast<size_t>(nx));
  DevBuf<T> gx(x), gy(y.size());
  DevBuf<int32_t> gam(am.size());
  DevBuf<float> gdy(dy), gdx(dx.size());
  const std::string name =
      "max_pool2d k" + std::to_string(d.kernel) + " s" + std::to_string(d.stride);
  cpu::max_pool2d_forward(d, x.data(), y.data(), am.data());
  cuda::max_pool2d_forward(d, gx.get(), gy.get(), gam.get());
  expect_exact(name + " fwd argmax", type_name<T>(), gam.download(), am);
  expect_exact(name + " fwd", type_name<T>(), canonical_bits(to_float(gy.download())),
               canonical_bits(to_float(y)));
  gam.upload(am);
  cpu::max_pool2d_backward(d, dy.data(), am.data(), dx.data());
  cuda::max_pool2d_backward(d, gdy.get(), gam.get(), gdx.get());
  expect_exact(name + " bwd", "f32", gdx.download(), dx);  // same sums in the same order
}

TEST_F(CudaNnKernels, ConvAndPoolMatchCpu) {
  Rng rng;
  TS_TRACE_SEED(rng);
  for (DType compute : {DType::f32, DType::bf16}) {
    kernels::Conv2dDims d;
    d.n = 3, d.cin = 5, d.h = 17, d.w = 13, d.cout = 7, d.kh = 3, d.kw = 3, d.stride = 2, d.pad = 1;
    check_conv(rng, d, compute);
    d.n = 2, d.cin = 1, d.h = 28, d.w = 28, d.cout = 32, d.kh = 5, d.kw = 5, d.stride = 1,
    d.pad = 0;
    check_conv(rng, d, compute);
  }
  kernels::Pool2dDims p;
  p.n = 2, p.c = 3, p.h = 11, p.w = 9, p.kernel = 3, p.stride = 2;  // overlapping windows
  check_pool<float>(rng, p);
  check_pool<bf16>(rng, p);
  check_pool<f16>(rng, p);
  p.kernel = 2, p.stride = 2;
  check_pool<float>(rng, p);
}

void check_attention(Rng& rng, kernels::AttentionDims d) {
  const int64_t nqkv = d.batch * d.seq * kernels::attention_qkv_width(d);
  const int64_t nout = d.batch * d.seq * d.channels, nlse = d.batch * d.heads * d.seq;
  const std::string name = "attention T" + std::to_string(d.seq) + " hs" +
                           std::to_string(d.channels / d.heads) +
                           (d.kv_heads == d.heads ? "" : " kv" + std::to_string(d.kv_heads));
  const std::vector<float> qkv = rng.normal(static_cast<size_t>(nqkv));
  const std::vector<float> dout = rng.normal(static_cast<size_t>(nout));
  std::vector<float> out(static_cast<size_t>(nout)), lse(static_cast<size_t>(nlse)),
      dqkv(static_cast<size_t>(nqkv));
  DevBuf<float> gdout(dout), glse(lse.size());
  {  // f32
    cpu::attention_forward(d, qkv.data(), out.data(), lse.data());
    DevBuf<float> gqkv(qkv), gout(out.size()), gdqkv(dqkv.size());
    cuda::attention_forward(d, gqkv.get(), gout.get(), glse.get());
    expect_close(name + " fwd", "f32", gout.download(), out, tol<float>());
    expect_close(name + " fwd lse", "f32", glse.download(), lse, tol<float>());
    gout.upload(out);
    glse.upload(lse);
    cpu::attention_backward(d, qkv.data(), out.data(), lse.data(), dout.data(), dqkv.data());
    cuda::attention_backward(d, gqkv.get(), gout.get(), glse.get(), gdout.get(), gdqkv.get());
    expect_close(name + " bwd", "f32", gdqkv.download(), dqkv, tol<float>());
  }
  {  // bf16 storage: the CPU (f32 only) computes on the same rounded qkv
    const auto qkv16 = to_storage<bf16>(qkv);
    const std::vector<float> qkvr = to_float(qkv16);
    cpu::attention_forward(d, qkvr.data(), out.data(), lse.data());
    DevBuf<bf16> gqkv(qkv16), gout(out.size()), gdqkv(dqkv.size());
    cuda::attention_forward(d, gqkv.get(), gout.get(), glse.get());
    expect_close(name + " fwd", gout.download(), to_storage<bf16>(out));
    expect_close(name + " fwd lse", "bf16", glse.download(), lse, tol<float>());
    // The backward on both sides sees the bf16-rounded output and the same lse.
    const auto out16 = to_storage<bf16>(out);
    const std::vector<float> outr = to_float(out16);
    gout.upload(out16);
    glse.upload(lse);
    cpu::attention_backward(d, qkvr.data(), outr.data(), lse.data(), dout.data(), dqkv.data());
    cuda::attention_backward(d, gqkv.get(), gout.get(), glse.get(), gdout.get(), gdqkv.get());
    expect_close(name + " bwd", gdqkv.download(), to_storage<bf16>(dqkv));
  }
}

TEST_F(CudaNnKernels, AttentionMatchesCpu) {
  Rng rng;
  TS_TRACE_SEED(rng);
  check_attention(rng, {2, 77, 96, 2, 2});      // hs 48: partial tiles and lanes without a dim
  check_attention(rng, {2, 256, 768, 12, 12});  // GPT-2's head size 64
  check_attention(rng, {1, 40, 256, 2, 2});     // the largest head size, 128
}

// Grouped-query attention: the dk/dv kernel sums each kv head's query heads.
TEST_F(CudaNnKernels, GroupedQueryAttentionMatchesCpu) {
  Rng rng;
  TS_TRACE_SEED(rng);
  check_attention(rng, {2, 77, 4 * 48, 4, 2});  // GQA, hs 48
  check_attention(rng, {2, 45, 4 * 64, 4, 1});  // multi-query
  check_attention(rng, {1, 40, 6 * 32, 6, 3});  // 3 kv heads
}

// A window of queries at an offset over separate keys and values (the op attention_window):
// the CUDA-core kernels against the CPU's, f32 and bf16 storage, out, lse, dq and dkv. dkv
// starts as NaN on the device, so keys no query sees must be written (as zeros).
template <class T>
void check_attention_window(Rng& rng, const kernels::AttentionWindowDims& d) {
  const int64_t Ckv = kernels::attention_kv_channels(d);
  const auto nq = size_t(d.batch * d.q_seq * d.channels);
  const auto nkv = size_t(d.batch * d.kv_seq * 2 * Ckv), nlse = size_t(d.batch * d.heads * d.q_seq);
  const std::string name = "attention_window Tq" + std::to_string(d.q_seq) + " Tk" +
                           std::to_string(d.kv_seq) + " offset" + std::to_string(d.q_offset);
  const std::vector<T> q16 = to_storage<T>(rng.normal(nq)), kv16 = to_storage<T>(rng.normal(nkv));
  const std::vector<float> q = to_float(q16), kv = to_float(kv16), dout = rng.normal(nq);
  std::vector<float> out(nq), lse(nlse), dq(nq), dkv(nkv);
  cpu::attention_window_forward(d, q.data(), kv.data(), out.data(), lse.data());
  DevBuf<T> gq(q16), gkv(kv16), gout(nq), gdq(nq);
  DevBuf<float> glse(nlse), gdout(dout);
  DevBuf<T> gdkv(to_storage<T>(std::vector<float>(nkv, NAN)));
  cuda::attention_window_forward(d, gq.get(), gkv.get(), gout.get(), glse.get());
  expect_close(name + " fwd", gout.download(), to_storage<T>(out));
  expect_close(name + " fwd lse", type_name<T>(), glse.download(), lse, tol<float>());
  // The backward on both sides from the output as stored (rounded to T) and the same lse.
  const std::vector<float> out_stored = to_float(to_storage<T>(out));
  gout.upload(to_storage<T>(out));
  glse.upload(lse);
  cpu::attention_window_backward(d, q.data(), kv.data(), out_stored.data(), lse.data(), dout.data(),
                                 dq.data(), dkv.data());
  cuda::attention_window_backward(d, gq.get(), gkv.get(), gout.get(), glse.get(), gdout.get(),
                                  gdq.get(), gdkv.get());
  expect_close(name + " dq", gdq.download(), to_storage<T>(dq));
  expect_close(name + " dkv", gdkv.download(), to_storage<T>(dkv));
  const std::vector<float> got = to_float(gdkv.download());
  const int64_t seen = d.q_offset + d.q_seq;
  for (int64_t b = 0; b < d.batch; ++b)
    for (int64_t t = seen; t < d.kv_seq; ++t)
      for (int64_t c = 0; c < 2 * Ckv; ++c)
        ASSERT_EQ(got[size_t((b * d.kv_seq + t) * 2 * Ckv + c)], 0.f) << name << " key " << t;
}

kernels::AttentionWindowDims window(int64_t B, int64_t Tq, int64_t Tk, int64_t offset, int64_t H,
                                    int64_t Hkv, int64_t hs) {
  return {B, Tq, Tk, offset, H * hs, H, Hkv, H * hs, 2 * Hkv * hs, 0};
}

TEST_F(CudaNnKernels, AttentionWindowMatchesCpu) {
  Rng rng;
  TS_TRACE_SEED(rng);
  // Offsets inside a 32-key tile and past it, keys past the last query, GQA, MQA, hs 48 / 128.
  check_attention_window<float>(rng, window(2, 45, 100, 37, 4, 2, 48));
  check_attention_window<float>(rng, window(1, 8, 200, 130, 2, 1, 128));
  check_attention_window<float>(rng, window(2, 33, 33, 0, 2, 2, 32));
  check_attention_window<bf16>(rng, window(2, 40, 90, 20, 4, 2, 64));
}

}  // namespace
