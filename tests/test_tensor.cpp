// Tensor storage, views, dtypes, allocator and RNG.
#include <gtest/gtest.h>

#include "core/allocator.h"
#include "core/rng.h"
#include "core/tensor.h"

using namespace tessera;

TEST(Tensor, FactoriesAndViewsShareStorage) {
  Tensor t = Tensor::from_vector({0, 1, 2, 3, 4, 5}, Shape{2, 3});
  EXPECT_EQ(t.shape(), (Shape{2, 3}));
  EXPECT_EQ(t.numel(), 6);
  EXPECT_TRUE(t.is_contiguous());
  Tensor v = t.view(Shape{3, 2});
  v.data<float>()[0] = 42.f;
  EXPECT_EQ(t.to_vector()[0], 42.f);  // views alias

  Tensor s = t.slice_rows(1, 2);
  EXPECT_EQ(s.shape(), (Shape{1, 3}));
  EXPECT_EQ(s.to_vector(), (std::vector<float>{3, 4, 5}));

  Tensor tr = t.transpose_view(0, 1);
  EXPECT_FALSE(tr.is_contiguous());
  EXPECT_EQ(tr.contiguous().to_vector(), (std::vector<float>{42, 3, 1, 4, 2, 5}));
}

TEST(Tensor, FiveDimsAndSizeOneDims) {
  Tensor t = Tensor::zeros(Shape{1, 2, 1, 3, 1});
  EXPECT_EQ(t.numel(), 6);
  EXPECT_TRUE(t.transpose_view(0, 2).is_contiguous());  // swapping size-1 dims moves nothing
  EXPECT_THROW(Tensor::zeros(Shape{1, 1, 1, 1, 1, 1}), Error);
}

TEST(Tensor, CastsRoundTrip) {
  Tensor t = Tensor::from_vector({1.f, -2.5f, 3.140625f, 65504.f, 1e-3f}, Shape{5});
  EXPECT_EQ(t.to(DType::f16).to(DType::f32).to_vector()[3], 65504.f);
  auto bf = t.to(DType::bf16).to(DType::f32).to_vector();
  EXPECT_EQ(bf[0], 1.f);
  EXPECT_EQ(bf[1], -2.5f);
  EXPECT_NEAR(bf[2], 3.140625f, 0.02f);
  EXPECT_EQ(t.to(DType::i32).to_vector()[1], -2.f);
  EXPECT_EQ(Tensor::full(Shape{3}, 7, DType::u16).to_vector()[2], 7.f);
  EXPECT_EQ(Tensor::full(Shape{3}, -7, DType::i64).to_vector()[2], -7.f);
}

TEST(Tensor, BF16RoundsToNearestEven) {
  // 1 + 2^-8 is exactly halfway between two bf16 values: ties go to the even mantissa (1.0).
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.f + 1.f / 256)), 1.f);
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.f + 3.f / 256)), 1.f + 4.f / 256);
  EXPECT_EQ(f16_to_float(float_to_f16(5.9604644775390625e-08f)), 5.9604644775390625e-08f);
  EXPECT_TRUE(std::isinf(f16_to_float(float_to_f16(1e6f))));
}

TEST(Tensor, CheckedAccessNamesTheDtype) {
  Tensor t = Tensor::zeros(Shape{2}, DType::bf16);
  try {
    t.data<float>();
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bf16[2]"), std::string::npos) << e.what();
  }
}

TEST(Allocator, ReusesFreedBlocksAndAligns) {
  auto& a = allocator_for(Device::cpu());
  a.empty_cache();
  void* p;
  {
    Tensor t = Tensor::empty(Shape{1000});
    p = t.raw_data();
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u);
  }
  auto before = a.stats();
  Tensor t2 = Tensor::empty(Shape{1000});
  EXPECT_EQ(t2.raw_data(), p);
  EXPECT_EQ(a.stats().system_allocs, before.system_allocs);
  EXPECT_EQ(a.stats().cache_hits, before.cache_hits + 1);
}

TEST(Allocator, SizeClassesBoundWaste) {
  for (size_t b : {1ul, 64ul, 65ul, 4096ul, 4097ul, 1000000ul, 123456789ul}) {
    size_t c = CpuCachingAllocator::size_class(b);
    EXPECT_GE(c, b);
    EXPECT_LE(double(c), std::max(64.0, 1.125 * double(b) + 64));
    EXPECT_EQ(c % 64, 0u);
  }
}

TEST(Rng, DeterministicAndWellDistributed) {
  Generator g1(7), g2(7), g3(8);
  Tensor a = Tensor::randn(Shape{10001}, g1), b = Tensor::randn(Shape{10001}, g2);
  Tensor c = Tensor::randn(Shape{10001}, g3);
  EXPECT_EQ(a.to_vector(), b.to_vector());
  EXPECT_NE(a.to_vector(), c.to_vector());
  auto v = a.to_vector();
  double m = 0, s = 0;
  for (float x : v) m += x;
  m /= double(v.size());
  for (float x : v) s += (x - m) * (x - m);
  s = std::sqrt(s / double(v.size()));
  EXPECT_NEAR(m, 0.0, 0.05);
  EXPECT_NEAR(s, 1.0, 0.05);
  Tensor u = Tensor::rand(Shape{10000}, g1, -2.f, 3.f);
  for (float x : u.to_vector()) ASSERT_TRUE(x >= -2.f && x < 3.f);
  // A generator continues where it left off: the second fill differs from the first.
  Generator g4(7);
  Tensor d1 = Tensor::randn(Shape{4}, g4), d2 = Tensor::randn(Shape{4}, g4);
  EXPECT_NE(d1.to_vector(), d2.to_vector());
}

TEST(Tensor, UnavailableDeviceIsAClearError) {
  // No CUDA allocator is registered in a CPU-only process: asking for device memory must say
  // which device and why, not crash.
  try {
    Tensor::empty(Shape{4}, DType::f32, Device::cuda(0));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cuda:0"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("not available"), std::string::npos) << e.what();
  }
}
