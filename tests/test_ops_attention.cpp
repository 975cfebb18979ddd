// Fused causal attention (multi-head and grouped-query) and its window form (context
// parallelism): gradients, a naive reference, causality, equalities between the two, and error
// messages.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <string>
#include <vector>

#include "autograd/grad_mode.h"
#include "gradcheck.h"
#include "ops/autocast.h"
#include "ops/ops.h"

using namespace tessera;
using namespace tessera::testing;

namespace {
Generator gen(7);

// Straight from the definition, in double: per (b, h) explicit scores, causal mask, softmax,
// weighted sum of values. qkv [B, T, C + 2 Ckv] (q heads | k heads | v heads); query head h
// reads kv head h / (H / Hkv) (Hkv = 0: H).
std::vector<double> reference_attention(const std::vector<float>& qkv, int64_t B, int64_t T,
                                        int64_t C, int64_t H, int64_t Hkv = 0) {
  if (Hkv == 0) Hkv = H;
  const int64_t hs = C / H, Ckv = Hkv * hs, width = C + 2 * Ckv;
  const double scale = 1.0 / std::sqrt(double(hs));
  auto at = [&](int64_t b, int64_t t, int64_t c) { return double(qkv[(b * T + t) * width + c]); };
  std::vector<double> out(size_t(B * T * C), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < T; ++i) {
        const int64_t k_col = C + h / (H / Hkv) * hs, v_col = k_col + Ckv;
        std::vector<double> s(size_t(T), -INFINITY);
        double mx = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < hs; ++d) dot += at(b, i, h * hs + d) * at(b, j, k_col + d);
          s[size_t(j)] = dot * scale;
          mx = std::max(mx, s[size_t(j)]);
        }
        double z = 0;
        for (int64_t j = 0; j <= i; ++j) z += std::exp(s[size_t(j)] - mx);
        for (int64_t j = 0; j <= i; ++j) {
          const double p = std::exp(s[size_t(j)] - mx) / z;
          for (int64_t d = 0; d < hs; ++d)
            out[size_t((b * T + i) * C + h * hs + d)] += p * at(b, j, v_col + d);
        }
      }
  return out;
}

double max_rel_diff(const std::vector<float>& got, const std::vector<double>& want) {
  double worst = 0, scale = 1e-6;
  for (double w : want) scale = std::max(scale, std::fabs(w));
  for (size_t i = 0; i < want.size(); ++i)
    worst = std::max(worst, std::fabs(double(got[i]) - want[i]) / scale);
  return worst;
}

struct Case {
  int64_t B, T, C, H;
};
}  // namespace

TEST(OpsAttention, GradientsMatchFiniteDifferences) {
  for (Case c : {Case{1, 1, 8, 2}, Case{2, 5, 8, 2}, Case{1, 17, 12, 3}, Case{2, 17, 6, 1},
                 Case{1, 5, 12, 3}, Case{2, 1, 6, 1}}) {
    SCOPED_TRACE(::testing::Message()
                 << "B=" << c.B << " T=" << c.T << " C=" << c.C << " H=" << c.H);
    const int H = int(c.H);
    check_gradients([H](auto& in) { return ops::attention(in[0], H); },
                    {Tensor::randn(Shape{c.B, c.T, 3 * c.C}, gen)});
  }
}

TEST(OpsAttention, GradientsAcrossQueryBlocksAndWideHeads) {
  // T crosses the kernel's 32-row query blocks and 16-lane padding; hs = 20 is not a lane
  // multiple. Check a random subset of the many elements.
  GradCheckOptions opt;
  opt.max_checks = 40;
  check_gradients([](auto& in) { return ops::attention(in[0], 2); },
                  {Tensor::randn(Shape{1, 37, 120}, gen, 0.f, 0.5f)}, opt);
}

TEST(OpsAttention, ForwardMatchesNaiveReference) {
  for (Case c : {Case{1, 1, 8, 2}, Case{2, 5, 8, 2}, Case{1, 17, 12, 3}, Case{2, 33, 6, 1},
                 Case{2, 70, 48, 4}, Case{1, 64, 192, 3}}) {
    SCOPED_TRACE(::testing::Message()
                 << "B=" << c.B << " T=" << c.T << " C=" << c.C << " H=" << c.H);
    // Scale 2 makes softmaxes peaked, exercising the max shift and exp range.
    Tensor qkv = Tensor::randn(Shape{c.B, c.T, 3 * c.C}, gen, 0.f, 2.f);
    Tensor out = ops::attention(qkv, int(c.H));
    ASSERT_EQ(out.shape(), (Shape{c.B, c.T, c.C}));
    EXPECT_LT(
        max_rel_diff(out.to_vector(), reference_attention(qkv.to_vector(), c.B, c.T, c.C, c.H)),
        5e-6);  // f32 rounding over <= 70 keys x 64 dims is ~1e-6 of the output scale
  }
}

TEST(OpsAttention, BackwardAtGpt2HeadSizeMatchesFiniteDifferences) {
  // The real head size (64) and several query blocks; a spot check of the largest case.
  GradCheckOptions opt;
  opt.max_checks = 24;
  check_gradients([](auto& in) { return ops::attention(in[0], 2); },
                  {Tensor::randn(Shape{1, 40, 384}, gen, 0.f, 0.5f)}, opt);
}

TEST(OpsAttention, IsCausal) {
  const int64_t B = 2, T = 19, C = 12;
  Tensor qkv = Tensor::randn(Shape{B, T, 3 * C}, gen);
  std::vector<float> base = ops::attention(qkv, 3).to_vector();
  for (int64_t t : {0, 7, 18}) {
    Tensor changed = qkv.clone();
    float* p = changed.data<float>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t c = 0; c < 3 * C; ++c) p[(b * T + t) * 3 * C + c] += 1.5f;
    std::vector<float> got = ops::attention(changed, 3).to_vector();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t s = 0; s < T; ++s) {
        bool differs = false;
        for (int64_t c = 0; c < C; ++c) {
          const size_t i = size_t((b * T + s) * C + c);
          differs = differs || got[i] != base[i];
        }
        if (s < t) {
          EXPECT_FALSE(differs) << "token " << t << " changed output " << s << " (b=" << b << ")";
        } else if (s == t) {
          EXPECT_TRUE(differs) << "token " << t << " did not change its own output";
        }
      }
  }
}

TEST(OpsAttention, FirstTokenAttendsOnlyToItself) {
  // Output 0 is exactly v_0 (softmax over one key), whatever q and k are.
  Tensor qkv = Tensor::randn(Shape{1, 4, 3 * 8}, gen);
  std::vector<float> out = ops::attention(qkv, 2).to_vector();
  std::vector<float> in = qkv.to_vector();
  for (int c = 0; c < 8; ++c) EXPECT_FLOAT_EQ(out[size_t(c)], in[size_t(16 + c)]);
}

// Under bf16 autocast q, k, v, and in the backward the incoming gradient, are rounded to bf16
// and the arithmetic stays f32 (ops/attention.cpp): on the CPU exactly the f32 attention of the
// rounded values, output and gradient f32 (the GPU's tensor-core kernels, which run at head
// size 64, are compared with this in tests/cuda/test_cuda_attention_tc.cpp). The rounding is
// visible: rms relative differences from unrounded f32 of about u / sqrt(3) = 2.3e-3 (u = 2^-8)
// a few times over, far above f32's 1e-7 and below 1e-2.
TEST(OpsAttention, Bf16AutocastIsF32AttentionOfBf16RoundedInputs) {
  for (int64_t hs : {16, 64}) {
    SCOPED_TRACE("head size " + std::to_string(hs));
    const int64_t H = 2, C = H * hs;
    const Tensor x = Tensor::randn(Shape{2, 37, 3 * C}, gen);
    const Tensor r = Tensor::randn(Shape{2, 37, C}, gen);
    auto run = [&](const Tensor& in, const Tensor& w, DType ac, Tensor& grad) {
      AutocastGuard guard(ac);
      Tensor leaf = in.clone().set_requires_grad();
      Tensor y = ops::attention(leaf, int(H));
      ops::sum(ops::mul(y, w)).backward();  // attention's incoming gradient is w
      grad = leaf.grad();
      return y;
    };
    auto bf16_rounded = [](const Tensor& t) { return t.to(DType::bf16).to(DType::f32); };
    Tensor g16, g_ref, g32;
    const Tensor y16 = run(x, r, DType::bf16, g16);
    const Tensor y_ref = run(bf16_rounded(x), bf16_rounded(r), DType::f32, g_ref);
    const Tensor y32 = run(x, r, DType::f32, g32);
    EXPECT_EQ(y16.dtype(), DType::f32);
    ASSERT_TRUE(g16.defined());
    EXPECT_EQ(g16.dtype(), DType::f32);
    EXPECT_EQ(relative_error(y16, y_ref), 0.0);
    EXPECT_EQ(relative_error(g16, g_ref), 0.0);
    EXPECT_GT(relative_error(y16, y32), 1e-4) << "forward: inputs not rounded";
    EXPECT_LT(relative_error(y16, y32), 1e-2);
    EXPECT_GT(relative_error(g16, g32), 1e-4) << "gradient: inputs not rounded";
    EXPECT_LT(relative_error(g16, g32), 1e-2);
  }
}

TEST(OpsAttention, NoGradModeSkipsTheTape) {
  Tensor qkv = Tensor::randn(Shape{1, 3, 12}, gen).set_requires_grad();
  {
    NoGradGuard ng;
    EXPECT_FALSE(ops::attention(qkv, 2).requires_grad());
  }
  EXPECT_TRUE(ops::attention(qkv, 2).requires_grad());
}

TEST(OpsAttention, BadCallsNameOpShapesAndExpectation) {
  expect_error(
      [] {
        ops::attention(Tensor::randn(Shape{2, 3, 24}, gen), 5);
      },
      {"attention", "f32[2, 3, 24]", "n_head = 5", "divisible by 15"});
  expect_error(
      [] {
        ops::attention(Tensor::randn(Shape{2, 3, 25}, gen), 1);
      },
      {"attention", "f32[2, 3, 25]", "divisible by 3"});
  expect_error(
      [] {
        ops::attention(Tensor::randn(Shape{3, 24}, gen), 2);
      },
      {"attention", "f32[3, 24]", "expected 3 dims"});
  expect_error(
      [] {
        ops::attention(Tensor::randn(Shape{1, 3, 24}, gen).to(DType::bf16), 2);
      },
      {"attention", "bf16[1, 3, 24]", "expected dtype f32"});
  expect_error(
      [] {
        ops::attention(Tensor::randn(Shape{1, 3, 24}, gen), 0);
      },
      {"attention", "n_head = 0"});
  expect_error(
      [] {
        ops::attention(Tensor::randn(Shape{1, 3, 24}, gen), 4, 3);
      },
      {"attention", "n_head = 4", "n_kv_head = 3", "dividing n_head"});
  expect_error(
      [] {
        ops::attention(Tensor::randn(Shape{1, 3, 26}, gen), 4, 2);
      },
      {"attention", "f32[1, 3, 26]", "n_kv_head = 2", "divisible by 8"});
}

// ---- grouped-query attention: qkv [B, T, (H + 2 Hkv) * hs] ----

struct GqaCase {
  int64_t B, T, H, Hkv, hs;
};

std::string gqa_name(const GqaCase& c) {
  return "B=" + std::to_string(c.B) + " T=" + std::to_string(c.T) + " H=" + std::to_string(c.H) +
         " Hkv=" + std::to_string(c.Hkv) + " hs=" + std::to_string(c.hs);
}

Shape gqa_shape(const GqaCase& c) {
  return Shape{c.B, c.T, (c.H + 2 * c.Hkv) * c.hs};
}

TEST(OpsAttention, GroupedQueryGradientsMatchFiniteDifferences) {
  // GQA (2 query heads per kv head), MQA (Hkv = 1) and MHA (Hkv = H); T crosses a query block.
  for (GqaCase c : {GqaCase{2, 5, 4, 2, 4}, GqaCase{1, 37, 4, 2, 6}, GqaCase{2, 6, 4, 1, 4},
                    GqaCase{1, 35, 4, 1, 5}, GqaCase{2, 5, 4, 4, 4}, GqaCase{1, 1, 6, 3, 4}}) {
    SCOPED_TRACE(gqa_name(c));
    const int H = int(c.H), Hkv = int(c.Hkv);
    GradCheckOptions opt;
    opt.max_checks = 40;
    check_gradients([H, Hkv](auto& in) { return ops::attention(in[0], H, Hkv); },
                    {Tensor::randn(gqa_shape(c), gen, 0.f, 0.7f)}, opt);
  }
}

TEST(OpsAttention, GroupedQueryForwardMatchesNaiveReference) {
  for (GqaCase c : {GqaCase{2, 33, 4, 2, 8}, GqaCase{1, 70, 8, 1, 16}, GqaCase{2, 17, 6, 3, 12},
                    GqaCase{1, 40, 4, 2, 64}}) {
    SCOPED_TRACE(gqa_name(c));
    Tensor qkv = Tensor::randn(gqa_shape(c), gen, 0.f, 2.f);
    Tensor out = ops::attention(qkv, int(c.H), int(c.Hkv));
    const int64_t C = c.H * c.hs;
    ASSERT_EQ(out.shape(), (Shape{c.B, c.T, C}));
    EXPECT_LT(max_rel_diff(out.to_vector(),
                           reference_attention(qkv.to_vector(), c.B, c.T, C, c.H, c.Hkv)),
              5e-6);
  }
}

// n_kv_head = n_head is today's multi-head layout: the same bits, forward and backward.
TEST(OpsAttention, KvHeadsEqualToHeadsIsMultiHeadAttentionBitForBit) {
  const Tensor x = Tensor::randn(Shape{2, 45, 3 * 48}, gen);
  const Tensor r = Tensor::randn(Shape{2, 45, 48}, gen);
  auto run = [&](int kv, Tensor& grad) {
    Tensor leaf = x.clone().set_requires_grad();
    Tensor y = kv == 0 ? ops::attention(leaf, 4) : ops::attention(leaf, 4, kv);
    ops::sum(ops::mul(y, r)).backward();
    grad = leaf.grad();
    return y.to_vector();
  };
  Tensor g_mha, g_gqa;
  EXPECT_EQ(run(0, g_mha), run(4, g_gqa));
  EXPECT_EQ(g_mha.to_vector(), g_gqa.to_vector());
}

// Grouped-query attention is multi-head attention with each kv head repeated for its group:
// the same output, and each kv head's gradient is the sum of its copies' gradients.
TEST(OpsAttention, GroupedQueryEqualsMultiHeadWithRepeatedKvHeads) {
  const int64_t B = 2, T = 21, H = 6, Hkv = 2, hs = 8, G = H / Hkv;
  const int64_t C = H * hs, Ckv = Hkv * hs;
  const Tensor x = Tensor::randn(Shape{B, T, C + 2 * Ckv}, gen);
  std::vector<float> xv = x.to_vector(), rep(size_t(B * T * 3 * C));
  for (int64_t bt = 0; bt < B * T; ++bt)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t d = 0; d < hs; ++d) {
        const float* row = xv.data() + bt * (C + 2 * Ckv);
        float* out = rep.data() + bt * 3 * C;
        out[h * hs + d] = row[h * hs + d];
        out[C + h * hs + d] = row[C + h / G * hs + d];
        out[2 * C + h * hs + d] = row[C + Ckv + h / G * hs + d];
      }
  const Tensor r = Tensor::randn(Shape{B, T, C}, gen);
  Tensor gqa_leaf = x.clone().set_requires_grad();
  Tensor mha_leaf = Tensor::from_vector(rep, Shape{B, T, 3 * C}).set_requires_grad();
  Tensor y_gqa = ops::attention(gqa_leaf, int(H), int(Hkv));
  Tensor y_mha = ops::attention(mha_leaf, int(H));
  EXPECT_LT(relative_error(y_gqa, y_mha), 1e-6);
  ops::sum(ops::mul(y_gqa, r)).backward();
  ops::sum(ops::mul(y_mha, r)).backward();
  std::vector<float> g_mha = mha_leaf.grad().to_vector(), folded(xv.size(), 0.f);
  for (int64_t bt = 0; bt < B * T; ++bt)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t d = 0; d < hs; ++d) {
        const float* in = g_mha.data() + bt * 3 * C;
        float* row = folded.data() + bt * (C + 2 * Ckv);
        row[h * hs + d] = in[h * hs + d];
        row[C + h / G * hs + d] += in[C + h * hs + d];
        row[C + Ckv + h / G * hs + d] += in[2 * C + h * hs + d];
      }
  EXPECT_LT(relative_error(gqa_leaf.grad(), Tensor::from_vector(folded, x.shape())), 1e-6);
}

// The kv gradients sum over the group in a fixed order: the same bits on 1 and 2 threads.
TEST(OpsAttention, GroupedQueryBackwardIsReproducible) {
  const Tensor x = Tensor::randn(Shape{3, 70, (8 + 2 * 2) * 32}, gen);
  const Tensor r = Tensor::randn(Shape{3, 70, 8 * 32}, gen);
  auto grad = [&](int threads) {
    omp_set_num_threads(threads);
    Tensor leaf = x.clone().set_requires_grad();
    ops::sum(ops::mul(ops::attention(leaf, 8, 2), r)).backward();
    return leaf.grad().to_vector();
  };
  const int before = omp_get_max_threads();
  const std::vector<float> one = grad(1), two = grad(2), again = grad(2);
  omp_set_num_threads(before);
  EXPECT_EQ(one, two);
  EXPECT_EQ(two, again);
}

// ---- attention_window: a window of queries at an offset over separate keys and values ----

namespace {

// Rows [r0, r1) and columns [c0, c1) of a [B, T, W] tensor, as a new f32 tensor.
Tensor block(const Tensor& x, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
  const int64_t B = x.dim(0), T = x.dim(1), W = x.dim(2);
  const std::vector<float> v = x.to_vector();
  std::vector<float> out;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = r0; t < r1; ++t)
      for (int64_t c = c0; c < c1; ++c) out.push_back(v[size_t((b * T + t) * W + c)]);
  return Tensor::from_vector(out, Shape{B, r1 - r0, c1 - c0});
}

// One window: q [B, Tq, H hs] at q_offset over kv [B, Tk, 2 Hkv hs].
struct WindowCase {
  int64_t B, Tq, Tk, offset, H, Hkv, hs;
};

std::string window_name(const WindowCase& c) {
  return "B=" + std::to_string(c.B) + " Tq=" + std::to_string(c.Tq) +
         " Tk=" + std::to_string(c.Tk) + " offset=" + std::to_string(c.offset) +
         " H=" + std::to_string(c.H) + " Hkv=" + std::to_string(c.Hkv) +
         " hs=" + std::to_string(c.hs);
}

// Output and input gradients of sum(op(leaves) * r): the op's value and its backward.
struct Grads {
  Tensor y;
  std::vector<Tensor> grads;
};

Grads run_with_grads(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                     const std::vector<Tensor>& inputs, const Tensor& r) {
  std::vector<Tensor> leaves;
  for (const Tensor& x : inputs) leaves.push_back(x.clone().set_requires_grad());
  Grads run{f(leaves), {}};
  ops::sum(ops::mul(run.y, r)).backward();
  for (const Tensor& l : leaves) run.grads.push_back(l.grad());
  return run;
}

}  // namespace

TEST(OpsAttentionWindow, GradientsMatchFiniteDifferences) {
  // Offsets inside and past a query block, keys past the last query (zero gradient), GQA and
  // MQA, one query, a whole sequence (offset 0).
  for (WindowCase c : {WindowCase{1, 3, 5, 2, 2, 2, 4}, WindowCase{2, 5, 9, 3, 4, 2, 4},
                       WindowCase{1, 37, 60, 13, 2, 1, 6}, WindowCase{2, 1, 4, 3, 2, 2, 4},
                       WindowCase{1, 6, 6, 0, 4, 2, 5}, WindowCase{1, 4, 45, 40, 3, 3, 4}}) {
    SCOPED_TRACE(window_name(c));
    const int H = int(c.H), Hkv = int(c.Hkv);
    const int64_t off = c.offset;
    GradCheckOptions opt;
    opt.max_checks = 40;
    check_gradients([=](auto& in) { return ops::attention_window(in[0], in[1], H, Hkv, off); },
                    {Tensor::randn(Shape{c.B, c.Tq, c.H * c.hs}, gen, 0.f, 0.7f),
                     Tensor::randn(Shape{c.B, c.Tk, 2 * c.Hkv * c.hs}, gen, 0.f, 0.7f)},
                    opt);
  }
}

// Offset 0 over the query rows' own keys is self-attention: the same kernels, the same bits.
TEST(OpsAttentionWindow, AtOffsetZeroIsAttentionBitForBit) {
  for (GqaCase c : {GqaCase{2, 45, 4, 4, 12}, GqaCase{3, 70, 8, 2, 32}, GqaCase{1, 37, 4, 1, 64},
                    GqaCase{2, 1, 2, 2, 4}}) {
    SCOPED_TRACE(gqa_name(c));
    const int64_t C = c.H * c.hs, Ckv = c.Hkv * c.hs;
    const Tensor qkv = Tensor::randn(gqa_shape(c), gen);
    const Tensor r = Tensor::randn(Shape{c.B, c.T, C}, gen);
    const int H = int(c.H), Hkv = int(c.Hkv);
    const Grads full =
        run_with_grads([=](auto& in) { return ops::attention(in[0], H, Hkv); }, {qkv}, r);
    const Grads win =
        run_with_grads([=](auto& in) { return ops::attention_window(in[0], in[1], H, Hkv, 0); },
                       {block(qkv, 0, c.T, 0, C), block(qkv, 0, c.T, C, C + 2 * Ckv)}, r);
    EXPECT_EQ(win.y.to_vector(), full.y.to_vector());
    EXPECT_EQ(win.grads[0].to_vector(), block(full.grads[0], 0, c.T, 0, C).to_vector());
    EXPECT_EQ(win.grads[1].to_vector(), block(full.grads[0], 0, c.T, C, C + 2 * Ckv).to_vector());
  }
}

// A window is rows [offset, offset + Tq) of attention over the whole sequence: the output, the
// gradient of the window's queries, and the keys' gradients when only the window's outputs
// reach the loss. The kv passed is the sequence's first Tk rows (Tk = offset + Tq, or all T:
// keys past the window are ignored and get a zero gradient).
TEST(OpsAttentionWindow, IsAWindowOfFullAttention) {
  struct Case {
    GqaCase seq;
    int64_t offset, Tq, Tk;
  };
  for (Case c : {Case{{2, 90, 4, 2, 8}, 33, 40, 73}, Case{{2, 90, 4, 2, 8}, 33, 40, 90},
                 Case{{1, 70, 6, 3, 12}, 69, 1, 70}, Case{{1, 100, 2, 1, 64}, 64, 32, 100},
                 Case{{2, 50, 4, 4, 16}, 0, 17, 50}}) {
    const GqaCase& s = c.seq;
    SCOPED_TRACE(gqa_name(s) + " offset=" + std::to_string(c.offset) +
                 " Tq=" + std::to_string(c.Tq) + " Tk=" + std::to_string(c.Tk));
    const int64_t C = s.H * s.hs, Ckv = s.Hkv * s.hs, end = c.offset + c.Tq;
    const Tensor qkv = Tensor::randn(gqa_shape(s), gen, 0.f, 1.5f);
    // The loss weights: random on the window's rows, zero elsewhere.
    std::vector<float> rv = Tensor::randn(Shape{s.B, s.T, C}, gen).to_vector();
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t t = 0; t < s.T; ++t)
        if (t < c.offset || t >= end)
          for (int64_t x = 0; x < C; ++x) rv[size_t((b * s.T + t) * C + x)] = 0.f;
    const Tensor r = Tensor::from_vector(rv, Shape{s.B, s.T, C});
    const int H = int(s.H), Hkv = int(s.Hkv);
    const int64_t off = c.offset;
    const Grads full =
        run_with_grads([=](auto& in) { return ops::attention(in[0], H, Hkv); }, {qkv}, r);
    const Grads win =
        run_with_grads([=](auto& in) { return ops::attention_window(in[0], in[1], H, Hkv, off); },
                       {block(qkv, c.offset, end, 0, C), block(qkv, 0, c.Tk, C, C + 2 * Ckv)},
                       block(r, c.offset, end, 0, C));
    ASSERT_EQ(win.y.shape(), (Shape{s.B, c.Tq, C}));
    EXPECT_LT(relative_error(win.y, block(full.y, c.offset, end, 0, C)), 1e-6);
    EXPECT_LT(relative_error(win.grads[0], block(full.grads[0], c.offset, end, 0, C)), 1e-6);
    EXPECT_LT(relative_error(win.grads[1], block(full.grads[0], 0, c.Tk, C, C + 2 * Ckv)), 1e-6);
    // Keys past the last query's position: seen by nobody, exactly zero.
    const std::vector<float> unseen = block(win.grads[1], end, c.Tk, 0, 2 * Ckv).to_vector();
    for (float g : unseen) ASSERT_EQ(g, 0.f);
    // ... and the keys the window sees do get a gradient (the check above is not vacuous).
    EXPECT_GT(relative_error(block(win.grads[1], 0, end, 0, 2 * Ckv),
                             Tensor::zeros(Shape{s.B, end, 2 * Ckv}, DType::f32, Device::cpu())),
              0.5);
  }
}

// The window's value matches a double-precision reference of the definition: rows of the
// reference attention over the whole sequence (kept apart from the kernels' own paths).
TEST(OpsAttentionWindow, ForwardMatchesNaiveReference) {
  const GqaCase s{2, 61, 4, 2, 8};
  const int64_t C = s.H * s.hs, Ckv = s.Hkv * s.hs, offset = 21, Tq = 35;
  const Tensor qkv = Tensor::randn(gqa_shape(s), gen, 0.f, 2.f);
  const std::vector<double> ref = reference_attention(qkv.to_vector(), s.B, s.T, C, s.H, s.Hkv);
  std::vector<double> want;
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t t = offset; t < offset + Tq; ++t)
      for (int64_t x = 0; x < C; ++x) want.push_back(ref[size_t((b * s.T + t) * C + x)]);
  const Tensor y = ops::attention_window(block(qkv, offset, offset + Tq, 0, C),
                                         block(qkv, 0, s.T, C, C + 2 * Ckv), 4, 2, offset);
  EXPECT_LT(max_rel_diff(y.to_vector(), want), 5e-6);
}

// Under bf16 autocast q, k, v and the incoming gradient are rounded as ops::attention rounds
// them: on the CPU exactly the f32 window of the rounded inputs, and within bf16's error of the
// f32 window (low_precision_error: the op run on bf16-cast inputs, widened to f32 under bf16
// autocast, against the f32 run).
TEST(OpsAttentionWindow, Bf16AutocastRoundsLikeAttention) {
  const WindowCase c{2, 20, 50, 30, 4, 2, 16};
  const Tensor q = Tensor::randn(Shape{c.B, c.Tq, c.H * c.hs}, gen);
  const Tensor kv = Tensor::randn(Shape{c.B, c.Tk, 2 * c.Hkv * c.hs}, gen);
  const Tensor r = Tensor::randn(Shape{c.B, c.Tq, c.H * c.hs}, gen);
  auto window = [&](DType ac) {
    return [ac](auto& in) {
      AutocastGuard guard(ac);
      return ops::attention_window(in[0], in[1], 4, 2, 30);
    };
  };
  auto bf16_rounded = [](const Tensor& t) { return t.to(DType::bf16).to(DType::f32); };
  const Grads r16 = run_with_grads(window(DType::bf16), {q, kv}, r);
  const Grads ref =
      run_with_grads(window(DType::f32), {bf16_rounded(q), bf16_rounded(kv)}, bf16_rounded(r));
  EXPECT_EQ(r16.y.to_vector(), ref.y.to_vector());
  EXPECT_EQ(r16.grads[0].to_vector(), ref.grads[0].to_vector());
  EXPECT_EQ(r16.grads[1].to_vector(), ref.grads[1].to_vector());

  const double err = low_precision_error(
      [](auto& in) {
        const bool low = in[0].dtype() != DType::f32;
        AutocastGuard guard(low ? in[0].dtype() : DType::f32);
        return ops::attention_window(ops::cast(in[0], DType::f32), ops::cast(in[1], DType::f32), 4,
                                     2, 30);
      },
      {q, kv}, DType::bf16);
  EXPECT_GT(err, 1e-4) << "inputs not rounded";
  EXPECT_LT(err, 1e-2);
}

TEST(OpsAttentionWindow, NoQueriesGiveAnEmptyOutputAndZeroGradients) {
  Tensor q = Tensor::randn(Shape{2, 0, 8}, gen).set_requires_grad();
  Tensor kv = Tensor::randn(Shape{2, 3, 16}, gen).set_requires_grad();
  Tensor y = ops::attention_window(q, kv, 2, 2, 3);
  ASSERT_EQ(y.shape(), (Shape{2, 0, 8}));
  ops::sum(y).backward();
  ASSERT_TRUE(kv.grad().defined());
  for (float g : kv.grad().to_vector()) EXPECT_EQ(g, 0.f);
}

TEST(OpsAttentionWindow, BadCallsNameOpShapesAndExpectation) {
  auto q = [](int64_t B, int64_t T, int64_t W) { return Tensor::randn(Shape{B, T, W}, gen); };
  expect_error([&] { ops::attention_window(q(2, 4, 8), q(2, 5, 16), 2, 2, 2); },
               {"attention_window", "f32[2, 4, 8]", "q_offset = 2", "f32[2, 5, 16]", "Tk = 5",
                "q_offset + Tq = 6"});
  expect_error([&] { ops::attention_window(q(1, 4, 8), q(1, 4, 16), 2, 2, -1); },
               {"attention_window", "q_offset = -1", "q_offset >= 0"});
  expect_error([&] { ops::attention_window(q(1, 4, 8), q(1, 4, 12), 2, 2, 0); },
               {"attention_window", "f32[1, 4, 8]", "f32[1, 4, 12]", "n_kv_head = 2",
                "expected kv [1, Tk, 16]", "head size 4"});
  expect_error([&] { ops::attention_window(q(2, 4, 8), q(3, 4, 16), 2, 2, 0); },
               {"attention_window", "f32[3, 4, 16]", "expected kv [2, Tk, 16]"});
  expect_error([&] { ops::attention_window(q(1, 4, 9), q(1, 4, 8), 2, 2, 0); },
               {"attention_window", "f32[1, 4, 9]", "n_head = 2", "n_head * head_size"});
  expect_error([&] { ops::attention_window(q(1, 4, 8), q(1, 4, 8), 4, 3, 0); },
               {"attention_window", "n_head = 4", "n_kv_head = 3", "dividing n_head"});
  expect_error(
      [&] {
        ops::attention_window(Tensor::randn(Shape{4, 8}, gen), q(1, 4, 8), 2, 2, 0);
      },
      {"attention_window", "f32[4, 8]", "expected 3 dims"});
  expect_error([&] { ops::attention_window(q(1, 4, 8), q(1, 4, 16).to(DType::bf16), 2, 2, 0); },
               {"attention_window", "bf16[1, 4, 16]", "expected dtype f32"});
}
