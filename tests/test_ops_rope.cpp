// Rotary position embeddings: the frequency tables (Llama 3 scaling against hand-computed
// values), known rotations, Hugging Face's rotate_half formula in double, the position offset,
// gradients, dtypes and error messages.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <string>
#include <vector>

#include "gradcheck.h"
#include "ops/ops.h"
#include "ops/rope_table.h"

using namespace tessera;
using namespace tessera::testing;

namespace {
Generator gen(11);

struct RopeCase {
  int64_t B, T, H, Hkv, hs, offset;
};

Shape qkv_shape(const RopeCase& c) {
  return Shape{c.B, c.T, (c.H + 2 * c.Hkv) * c.hs};
}

// Hugging Face's apply_rotary_pos_emb in double: x * cos + rotate_half(x) * sin on every q and
// k head, rotate_half(x) = cat(-x[hs/2:], x[:hs/2]), cos / sin = cat(c, c) / cat(s, s) of the
// angles (p * f_i) computed here from the frequencies.
std::vector<double> hf_rope(const std::vector<float>& x, const RopeCase& c,
                            const std::vector<double>& f) {
  const int64_t half = c.hs / 2, width = (c.H + 2 * c.Hkv) * c.hs;
  std::vector<double> y(x.begin(), x.end());
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t t = 0; t < c.T; ++t)
      for (int64_t head = 0; head < c.H + c.Hkv; ++head) {
        const int64_t base = (b * c.T + t) * width + head * c.hs;
        for (int64_t j = 0; j < c.hs; ++j) {
          const int64_t i = j % half;
          const double angle = double(c.offset + t) * f[size_t(i)];
          const double rotated_half =
              j < half ? -double(x[size_t(base + j + half)]) : double(x[size_t(base + j - half)]);
          y[size_t(base + j)] =
              double(x[size_t(base + j)]) * std::cos(angle) + rotated_half * std::sin(angle);
        }
      }
  return y;
}

double max_abs_diff(const std::vector<float>& got, const std::vector<double>& want) {
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i)
    worst = std::max(worst, std::fabs(double(got[i]) - want[i]));
  return worst;
}

}  // namespace

// ---- tables ----

TEST(OpsRope, InverseFrequenciesAreThetaPowers) {
  const std::vector<double> f = ops::rope_inverse_frequencies(8, 10000.0);
  ASSERT_EQ(f.size(), 4u);
  EXPECT_DOUBLE_EQ(f[0], 1.0);
  EXPECT_DOUBLE_EQ(f[1], 0.1);  // 10000^(-2/8)
  EXPECT_DOUBLE_EQ(f[2], 0.01);
  EXPECT_NEAR(f[3], 0.001, 1e-18);
}

// Llama 3.1's settings (theta 500000, hs 128, factor 8, low 1, high 4, original context 8192):
// wavelengths below 8192 / 4 = 2048 keep their frequency, above 8192 / 1 are divided by 8,
// in between blend. Expected values worked by hand from f_i = 500000^(-i / 64):
//   i = 28: f = 3.211445994752591e-3, w = 2 pi / f = 1956.5 < 2048: kept;
//   i = 30: f = 2.1311195369119653e-3, w = 2948.30, s = (8192 / w - 1) / 3 = 0.592849295,
//           (1 - s) f / 8 + s f = 1.3718935677611381e-3;
//   i = 34: f = 9.384738703573802e-4, w = 6695.11, s = 0.0745265642, scaled 1.785078127679964e-4;
//   i = 35: f = 7.644969883171747e-4, w = 8218.7 > 8192: f / 8 = 9.556212353964683e-5.
TEST(OpsRope, Llama3ScalingMatchesHandComputedValues) {
  const std::vector<double> f = ops::rope_inverse_frequencies(128, 500000.0);
  const std::vector<double> s = ops::llama3_scale_frequencies(f, ops::Llama3RopeScaling{});
  ASSERT_EQ(s.size(), 64u);
  EXPECT_DOUBLE_EQ(s[0], 1.0);
  EXPECT_DOUBLE_EQ(s[28], 3.211445994752591e-3);
  EXPECT_NEAR(s[30], 1.3718935677611381e-3, 1e-15);
  EXPECT_NEAR(s[34], 1.785078127679964e-4, 1e-16);
  EXPECT_NEAR(s[35], 9.556212353964683e-5, 1e-17);
  EXPECT_DOUBLE_EQ(s[63], f[63] / 8);
  // Other settings move the bands: factor 4, low 2, high 8 at context 4096 keeps w < 512.
  ops::Llama3RopeScaling other;
  other.factor = 4, other.low_freq_factor = 2, other.high_freq_factor = 8;
  other.original_max_position_embeddings = 4096;
  const std::vector<double> o = ops::llama3_scale_frequencies(f, other);
  for (size_t i = 0; i < f.size(); ++i) {
    const double w = 2 * std::numbers::pi / f[i];
    if (w < 512) {
      EXPECT_EQ(o[i], f[i]) << i;
    } else if (w > 2048) {
      EXPECT_DOUBLE_EQ(o[i], f[i] / 4) << i;
    } else {
      EXPECT_LT(o[i], f[i]) << i;
      EXPECT_GT(o[i], f[i] / 4) << i;
    }
  }
}

TEST(OpsRope, TableHoldsCosThenSinPerPosition) {
  const std::vector<double> f{1.0, 0.25};
  const Tensor t = ops::rope_table(f, 5);
  ASSERT_EQ(t.shape(), (Shape{5, 2, 2}));
  const std::vector<float> v = t.to_vector();
  for (int p = 0; p < 5; ++p)
    for (int i = 0; i < 2; ++i) {
      EXPECT_EQ(v[size_t(p * 4 + i)], float(std::cos(p * f[size_t(i)])));
      EXPECT_EQ(v[size_t(p * 4 + 2 + i)], float(std::sin(p * f[size_t(i)])));
    }
  const Tensor scaled = ops::rope_table(3, 128, 500000.0, ops::Llama3RopeScaling{});
  EXPECT_EQ(scaled.shape(), (Shape{3, 2, 64}));
  EXPECT_EQ(scaled.to_vector()[2 * 128 + 63],
            float(std::cos(2 * ops::rope_inverse_frequencies(128, 500000.0)[63] / 8)));
}

// ---- the op ----

TEST(OpsRope, PositionZeroIsTheIdentity) {
  const Tensor table = ops::rope_table(4, 8, 10000.0);
  const Tensor x = Tensor::randn(Shape{2, 1, (4 + 2 * 2) * 8}, gen);
  EXPECT_EQ(ops::rope(x, table, 4, 2).to_vector(), x.to_vector());
}

// hs = 4, theta = 10000: frequencies (1, 0.01); at position 1 the pairs (0, 2) and (1, 3) of
// q and k turn by 1 and 0.01 radians; v is untouched.
TEST(OpsRope, PositionOneRotatesEachPairByItsFrequency) {
  const Tensor table = ops::rope_table(2, 4, 10000.0);
  const std::vector<float> x{1, 2, 3, 4, /*k*/ -1, 0.5f, 2, -3, /*v*/ 7, 8, 9, 10};
  const std::vector<float> y =
      ops::rope(Tensor::from_vector(x, Shape{1, 1, 12}), table, 1, 1, 1).to_vector();
  const double c1 = std::cos(1.0), s1 = std::sin(1.0), c2 = std::cos(0.01), s2 = std::sin(0.01);
  const double want[12] = {1 * c1 - 3 * s1,
                           2 * c2 - 4 * s2,
                           3 * c1 + 1 * s1,
                           4 * c2 + 2 * s2,
                           -1 * c1 - 2 * s1,
                           0.5 * c2 + 3 * s2,
                           2 * c1 + -1 * s1,
                           -3 * c2 + 0.5 * s2,
                           7,
                           8,
                           9,
                           10};
  for (int i = 0; i < 12; ++i) EXPECT_NEAR(y[size_t(i)], want[i], 1e-6) << i;
}

TEST(OpsRope, MatchesHuggingFaceRotateHalfInDouble) {
  for (RopeCase c :
       {RopeCase{2, 7, 4, 2, 8, 0}, RopeCase{1, 33, 4, 1, 16, 5}, RopeCase{2, 5, 3, 3, 64, 100}}) {
    SCOPED_TRACE("H=" + std::to_string(c.H) + " Hkv=" + std::to_string(c.Hkv) +
                 " hs=" + std::to_string(c.hs) + " offset=" + std::to_string(c.offset));
    std::vector<double> f = ops::rope_inverse_frequencies(c.hs, 500000.0);
    f = ops::llama3_scale_frequencies(f, ops::Llama3RopeScaling{});
    const Tensor table = ops::rope_table(f, c.offset + c.T);
    const Tensor x = Tensor::randn(qkv_shape(c), gen);
    const Tensor y = ops::rope(x, table, int(c.H), int(c.Hkv), c.offset);
    ASSERT_EQ(y.shape(), x.shape());
    // f32 table entries (<= 6e-8 off) and f32 products: a few 1e-7 at |x| ~ 4.
    EXPECT_LT(max_abs_diff(y.to_vector(), hf_rope(x.to_vector(), c, f)), 2e-6);
  }
}

// Token t at offset o is token o + t of an offset-0 sequence: what a KV cache relies on.
TEST(OpsRope, OffsetShiftsPositions) {
  const Tensor table = ops::rope_table(16, 8, 10000.0);
  const int64_t width = (2 + 2 * 1) * 8;
  const Tensor one = Tensor::randn(Shape{1, 1, width}, gen);
  std::vector<float> repeated;
  for (int t = 0; t < 9; ++t)
    for (float v : one.to_vector()) repeated.push_back(v);
  const std::vector<float> all =
      ops::rope(Tensor::from_vector(repeated, Shape{1, 9, width}), table, 2, 1).to_vector();
  const std::vector<float> at7 = ops::rope(one, table, 2, 1, 7).to_vector();
  EXPECT_EQ(at7, std::vector<float>(all.begin() + 7 * width, all.begin() + 8 * width));
}

TEST(OpsRope, GradientsMatchFiniteDifferences) {
  const Tensor table = ops::rope_table(40, 8, 10000.0);
  for (RopeCase c :
       {RopeCase{2, 5, 4, 2, 8, 0}, RopeCase{1, 6, 4, 1, 8, 3}, RopeCase{2, 3, 2, 2, 8, 30}}) {
    SCOPED_TRACE("H=" + std::to_string(c.H) + " Hkv=" + std::to_string(c.Hkv) +
                 " offset=" + std::to_string(c.offset));
    const int H = int(c.H), Hkv = int(c.Hkv);
    const int64_t offset = c.offset;
    check_gradients(
        [&, H, Hkv, offset](auto& in) { return ops::rope(in[0], table, H, Hkv, offset); },
        {Tensor::randn(qkv_shape(c), gen)});
  }
}

TEST(OpsRope, SixteenBitInputsKeepTheirDtype) {
  const Tensor table = ops::rope_table(8, 16, 10000.0);
  const Tensor x = Tensor::randn(Shape{2, 8, (4 + 2 * 2) * 16}, gen);
  for (DType t : {DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(t));
    const Tensor y = ops::rope(x.to(t), table, 4, 2);
    EXPECT_EQ(y.dtype(), t);
    // The f32 rotation of the rounded input, rounded once.
    EXPECT_EQ(y.to_vector(), ops::rope(x.to(t).to(DType::f32), table, 4, 2).to(t).to_vector());
    const double e =
        low_precision_error([&](auto& in) { return ops::rope(in[0], table, 4, 2); }, {x}, t);
    EXPECT_LT(e, 1e-2);
  }
}

TEST(OpsRope, BadCallsNameOpShapesAndExpectation) {
  const Tensor table = ops::rope_table(8, 8, 10000.0);
  expect_error(
      [&] {
        ops::rope(Tensor::randn(Shape{1, 4, 36}, gen), table, 4, 2);
      },
      {"rope", "f32[1, 4, 36]", "even head_size", "divisible by 16"});
  expect_error(
      [&] {
        ops::rope(Tensor::randn(Shape{1, 4, 48}, gen), table, 4, 3);
      },
      {"rope", "n_head = 4", "n_kv_head = 3"});
  expect_error(
      [&] {
        ops::rope(Tensor::randn(Shape{1, 4, 128}, gen), table, 4, 2);
      },
      {"rope", "table is f32[8, 2, 4]", "head size 16", "expected [positions, 2, 8]"});
  expect_error(
      [&] {
        ops::rope(Tensor::randn(Shape{1, 4, 32}, gen), table, 2, 1, 5);
      },
      {"rope", "positions 5..8", "position_offset 5", "8 positions"});
  expect_error(
      [&] {
        ops::rope(Tensor::randn(Shape{4, 32}, gen), table, 1, 1);
      },
      {"rope", "f32[4, 32]"});
  expect_error(
      [&] {
        ops::rope(Tensor::randn(Shape{1, 4, 32}, gen), table.to(DType::bf16), 2, 1);
      },
      {"rope", "table", "expected dtype f32"});
  expect_error([] { ops::rope_inverse_frequencies(7, 10000.0); }, {"head_size = 7", "even"});
}
