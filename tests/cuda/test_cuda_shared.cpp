// CPU-only checks of the CUDA backend (they run, and must pass, without a device): the
// host/device copy of the dropout hash agrees with core/rng.h, CUDA errors become clear
// tessera::Errors, NCCL links, the allocator's size classes, and argument errors are raised
// before anything touches a device.
#include <gtest/gtest.h>

#include <nccl.h>

#include <string>

#include "core/error.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "cuda/allocator.h"
#include "cuda/cuda_check.h"
#include "cuda/device.h"
#include "cuda/nccl.h"
#include "cuda_test_util.h"
#include "kernels/cuda/counter_rng.cuh"
#include "kernels/cuda/kernels.h"  // the dispatch seam: every kernel header compiles as C++

using namespace tessera;
using tessera::cudatest::expect_error;

namespace {

TEST(CudaShared, CounterRngCopyAgreesWithGenerator) {
  const uint64_t seeds[] = {0, 1, 42, 0x9e3779b97f4a7c15ull, ~0ull, 1ull << 63};
  const uint64_t starts[] = {0, 1000, (1ull << 32) - 7, ~0ull - 2000};
  for (uint64_t seed : seeds)
    for (uint64_t start : starts)
      for (uint64_t i = start; i < start + 2000 && i >= start; ++i) {
        ASSERT_EQ(rng::counter_bits(seed, i), Generator::bits(seed, i)) << seed << " " << i;
        ASSERT_EQ(rng::counter_uniform01(seed, i), Generator::uniform01(seed, i));
      }
  // Not a constant function: distinct counters give distinct draws.
  EXPECT_NE(rng::counter_bits(1, 0), rng::counter_bits(1, 1));
}

TEST(CudaShared, CudaCheckThrowsWithCallFileLineAndDescription) {
  expect_error([] { CUDA_CHECK(cudaErrorInvalidValue); },
               {"CUDA error in cudaErrorInvalidValue",
                "test_cuda_shared.cpp:", "cudaErrorInvalidValue: invalid argument"});
  expect_error([] { CUBLAS_CHECK(7); }, {"cuBLASLt error", "CUBLAS_STATUS_INVALID_VALUE (7)"});
  expect_error([] { NCCL_CHECK(ncclInvalidArgument); }, {"NCCL error in ncclInvalidArgument"});
  EXPECT_NO_THROW(CUDA_CHECK(cudaSuccess));
}

TEST(CudaShared, NcclLinksAndReportsItsVersion) {
  EXPECT_EQ(cuda::nccl_version_string(), std::to_string(NCCL_MAJOR) + "." +
                                             std::to_string(NCCL_MINOR) + "." +
                                             std::to_string(NCCL_PATCH));
}

TEST(CudaShared, ProbeSaysWhyThereIsNoDevice) {
  const cuda::DeviceProbe& p = cuda::probe_devices();
  if (p.count == 0) {
    EXPECT_FALSE(p.reason.empty());
    EXPECT_NE(cuda::device_summary().find("no CUDA device"), std::string::npos);
  } else {
    EXPECT_TRUE(p.reason.empty()) << p.reason;
  }
}

TEST(CudaShared, AllocationWithoutADeviceIsAClearError) {
  const cuda::DeviceProbe& p = cuda::probe_devices();
  if (p.count > 0) GTEST_SKIP() << "a device is present (this checks the no-device path)";
  cuda::init();  // registers the allocator even without a device
  expect_error([] { cuda::device_allocator().allocate(100); },
               {"no CUDA device", p.reason.c_str()});
  expect_error([] { Tensor::empty({4}, DType::f32, Device::cuda(0)); }, {"no CUDA device"});
}

TEST(CudaShared, DeviceSizeClasses) {
  using A = cuda::DeviceCachingAllocator;
  EXPECT_EQ(A::size_class(0), 512u);
  EXPECT_EQ(A::size_class(1), 512u);
  EXPECT_EQ(A::size_class(512), 512u);
  EXPECT_EQ(A::size_class(513), 1024u);
  EXPECT_EQ(A::size_class(1u << 20), size_t(1) << 20);
  size_t prev = 0;
  for (size_t b = 1; b < (size_t(1) << 34); b = b * 3 / 2 + 1) {
    const size_t c = A::size_class(b);
    EXPECT_GE(c, b);
    EXPECT_GE(c, prev);  // monotone
    EXPECT_EQ(c % 512, 0u);
    if (b > (1u << 20)) {
      EXPECT_LE(double(c - b), 0.125 * double(b)) << b;
    }
    prev = c;
  }
}

TEST(CudaShared, ArgumentErrorsComeBeforeAnyDeviceWork) {
  kernels::AttentionDims d{1, 16, 512, 2, 2};  // head size 256
  expect_error([&] { cuda::attention_forward<float>(d, nullptr, nullptr, nullptr); },
               {"head size 256", "exceeds 128"});
  d = {1, 16, 100, 3, 3};
  expect_error([&] { cuda::attention_forward<float>(d, nullptr, nullptr, nullptr); },
               {"channels 100", "heads 3"});
  d = {1, 16, 128, 4, 3};
  expect_error([&] { cuda::attention_forward<float>(d, nullptr, nullptr, nullptr); },
               {"heads 4", "kv_heads 3"});
  kernels::Conv2dDims c;
  c.n = 1, c.cin = 1, c.h = 4, c.w = 4, c.cout = 1, c.kh = 3, c.kw = 3;
  c.infer_output();
  expect_error([&] { cuda::conv2d_forward(c, nullptr, nullptr, nullptr, nullptr, DType::f16); },
               {"compute dtype f16"});
  cuda::GemmArgs g;
  g.m = 2, g.n = 2, g.k = 2, g.label = "lm_head";
  expect_error([&] { cuda::gemm(g); }, {"cuda lm_head", "null operand"});
  float dummy = 0;
  g.a = g.b = g.c = &dummy;
  g.epilogue = cuda::Epilogue::bias;
  expect_error([&] { cuda::gemm(g); }, {"needs a bias pointer"});
}

}  // namespace
