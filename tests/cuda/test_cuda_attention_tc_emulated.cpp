// The tensor-core attention kernels' device code (src/kernels/cuda/attention_tc_kernels.cuh)
// compiled by the host compiler and run under cuda_emulation.h: no GPU needed. This checks what
// can go wrong in a kernel short of the hardware itself: tile and row indexing, the causal and
// partial-tile masks, the online-softmax rescaling, the lane layout of the element-wise passes,
// the shared-memory layout (WMMA's 32-byte alignment and ldm rules are enforced by the
// emulation), and the split of dq / dk / dv between the kernels. What it cannot check: WMMA's
// real fragment layouts and accumulation order, races that only real warps expose, register
// and shared-memory limits, and launch configuration: test_cuda_attention_tc.cpp does, on a
// device.
//
// Reference: cpu::attention on the same 16-bit-rounded q/k/v and dout. Bounds as in
// test_cuda_attention_tc.cpp (tol: one unit roundoff of the 16-bit type a few times over, for
// the roundings of P and dS); the emulated sums are f32 in k order, so the log-sum-exp agrees to
// f32 rounding (1e-5 here, 1e-4 on tensor cores).
#include "cuda_emulation.h"  // first: it defines the CUDA keywords and built-ins

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/attention.h"

namespace tessera::cuda {
namespace {
// The kernels' dynamic shared memory (extern __shared__ smem[] inside them refers to this).
alignas(128) unsigned char smem[256 * 1024];
}  // namespace
}  // namespace tessera::cuda

#include "kernels/cuda/attention_tc_kernels.cuh"

namespace tessera::cuda {
namespace {

using cuda_emulation::launch;

static_assert(dq_smem(128) <= sizeof smem && dkv_smem(128) <= sizeof smem);

// max |got - want| / max |want|; NaN anywhere in got is +inf.
double rel_error(const std::vector<float>& got, const std::vector<float>& want) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(got[i])) return INFINITY;
    diff = std::max(diff, std::fabs(double(got[i]) - double(want[i])));
    scale = std::max(scale, std::fabs(double(want[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

std::vector<float> third(const std::vector<float>& dqkv, int64_t rows, int64_t C, int which) {
  std::vector<float> out;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < C; ++c) out.push_back(dqkv[size_t(r * 3 * C + which * C + c)]);
  return out;
}

template <class S>
std::vector<float> rounded(std::vector<float> v) {
  for (float& x : v) x = to_f32(from_f32<S>(x));
  return v;
}

struct Case {
  int64_t B, T, H;
  float stddev = 1.f;  // of q, k, v (2: sharp softmax, frequent max updates)
};

template <class S, int HS>
void check(const Case& c, std::mt19937& eng) {
  SCOPED_TRACE(std::string(std::is_same_v<S, bf16> ? "bf16" : "f16") + " hs" + std::to_string(HS) +
               " B" + std::to_string(c.B) + " T" + std::to_string(c.T) + " H" +
               std::to_string(c.H) + " stddev " + std::to_string(c.stddev));
  const int64_t C = c.H * HS, rows = c.B * c.H * c.T;
  const auto nqkv = static_cast<size_t>(c.B * c.T * 3 * C);
  const auto nout = static_cast<size_t>(c.B * c.T * C), nlse = static_cast<size_t>(rows);
  std::normal_distribution<float> dist(0.f, c.stddev), unit(0.f, 1.f);
  std::vector<float> qkv(nqkv), dout(nout);
  for (float& x : qkv) x = dist(eng);
  for (float& x : dout) x = unit(eng);
  qkv = rounded<S>(qkv);
  std::vector<S> qkv16(qkv.size());
  for (size_t i = 0; i < qkv.size(); ++i) qkv16[i] = from_f32<S>(qkv[i]);

  const cpu::AttentionDims d{c.B, c.T, C, c.H};
  std::vector<float> out(nout), lse(nlse), dqkv(nqkv);
  cpu::attention_forward(d, qkv.data(), out.data(), lse.data());
  const std::vector<float> dout_r = rounded<S>(dout);  // as the kernels round it
  cpu::attention_backward(d, qkv.data(), out.data(), lse.data(), dout_r.data(), dqkv.data());

  Geo g;
  g.T = c.T, g.C = C, g.H = c.H, g.row = 3 * C;
  g.scale = 1.f / std::sqrt(float(HS));
  g.scale_log2 = kLog2e / std::sqrt(float(HS));
  const dim3 grid(unsigned((c.T + kTile - 1) / kTile), unsigned(c.B * c.H));
  std::vector<float> k_out(out.size(), NAN), k_lse(lse.size(), NAN), k_dqkv(dqkv.size(), NAN);
  std::vector<float> delta(lse.size(), NAN);
  const S* q = qkv16.data();
  launch(tc_forward_kernel<S, HS>, grid, kBlock, g, q, k_out.data(), k_lse.data());
  // The backward from the CPU's out and lse (as on the device), f32 dout rounded inside.
  const int64_t per_block = kThreads / kWarp;
  launch(tc_delta_kernel<S>, dim3(unsigned((rows + per_block - 1) / per_block)), kThreads, g, HS,
         out.data(), dout.data(), delta.data(), rows);
  launch(tc_dq_kernel<S, HS>, grid, kBlock, g, q, lse.data(), delta.data(), dout.data(),
         k_dqkv.data());
  launch(tc_dkv_kernel<S, HS>, grid, kBlock, g, q, lse.data(), delta.data(), dout.data(),
         k_dqkv.data());

  const double tol = std::is_same_v<S, bf16> ? 1e-2 : 2e-3;
  EXPECT_LE(rel_error(k_out, out), tol) << "forward output";
  EXPECT_LE(rel_error(k_lse, lse), 1e-5) << "log-sum-exp";
  if (c.T == 1) {  // dq, dk: rounding noise on both sides (dS = dP - delta = 0)
    EXPECT_LE(rel_error(k_dqkv, dqkv), tol) << "dqkv";
    return;
  }
  const char* names[] = {"dq", "dk", "dv"};
  for (int p = 0; p < 3; ++p)
    EXPECT_LE(rel_error(third(k_dqkv, c.B * c.T, C, p), third(dqkv, c.B * c.T, C, p)), tol)
        << names[p];
}

// Every T below exercises a different tile situation: one row; a partial single tile; exactly
// one tile; a full tile plus a partial one; two full tiles plus two rows.
TEST(AttentionTcEmulated, KernelsMatchCpuOnRoundedInputs) {
  std::mt19937 eng(20261129);
  check<bf16, 64>({2, 1, 1}, eng);
  check<f16, 128>({1, 1, 2}, eng);
  check<bf16, 64>({2, 17, 1}, eng);
  check<f16, 64>({1, 64, 2}, eng);
  check<bf16, 128>({1, 100, 1}, eng);
  check<f16, 128>({1, 130, 1}, eng);
  check<bf16, 64>({1, 130, 1, 2.f}, eng);
  check<f16, 64>({1, 100, 1, 2.f}, eng);
}

}  // namespace
}  // namespace tessera::cuda
