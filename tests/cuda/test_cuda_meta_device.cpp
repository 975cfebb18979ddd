// The meta device playing a GPU (meta::AllocatorModel::cuda, core/meta_device.h) against the
// CUDA device: every op of ops/ops.h (tests/meta_op_cases.h's cases, forward and backward; the
// GEMM ops under bf16 autocast too) and a tiny GPT-2's step give on the meta device the CUDA
// path's output and gradient shapes and dtypes, the CUDA caching allocator's peak and final
// bytes in use (with the buffers the CUDA kernel helpers take for themselves: ops/cuda_scratch.h)
// and the same kernels. The CUDA allocator keeps its state from test to test, so both sides are
// compared by deltas over a run, after a first GEMM has made cuBLASLt's workspace on each.
// Without a device every test skips, saying why.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/allocator.h"
#include "core/meta_device.h"
#include "cuda_test_util.h"
#include "meta_op_cases.h"
#include "ops/autocast.h"
#include "ops/cuda_scratch.h"
#include "ops/ops.h"

namespace tessera {
namespace {

using cudatest::CudaTest;
using namespace metatest;

const Device kGpu = Device::cuda(0);

class MetaAsCuda : public CudaTest {
 protected:
  void SetUp() override {
    CudaTest::SetUp();
    if (IsSkipped()) return;
    meta::reset_allocator(meta::AllocatorModel::cuda);
    ASSERT_TRUE(meta::plays_cuda());
    // cuBLASLt's workspace, kept by both from the first GEMM on.
    for (Device d : {kGpu, Device::meta()}) {
      const Tensor a = Tensor::empty(Shape{2, 2}, DType::f32, d);
      ops::matmul(a, a);
    }
  }
};

void check_op_as_cuda(const OpCase& c, DType autocast) {
  SCOPED_TRACE(c.name + " under autocast " + dtype_name(autocast));
  const RunResult gpu = run_op(c, kGpu, autocast);
  const RunResult on_meta = run_op(c, Device::meta(), autocast);
  EXPECT_EQ(on_meta.tensors, gpu.tensors);
  EXPECT_EQ(on_meta.peak, gpu.peak);
  EXPECT_EQ(on_meta.kept, gpu.kept);
  expect_same_kernels(gpu.kernels, on_meta.kernels);
  EXPECT_EQ(meta::live_allocations(), 0);
}

TEST_F(MetaAsCuda, EveryOpMatchesTheCudaDeviceInShapesAllocationsAndKernels) {
  for (const OpCase& c : op_cases()) check_op_as_cuda(c, DType::f32);
}

TEST_F(MetaAsCuda, GemmOpsUnderBf16AutocastMatchTheCudaDevice) {
  for (const OpCase& c : op_cases())
    if (c.gemm) check_op_as_cuda(c, DType::bf16);
}

TEST_F(MetaAsCuda, CublasLtsWorkspaceIsHeldFromTheFirstGemmOn) {
  // SetUp's GEMM has left the workspace allocated on both, and nothing else on the meta device.
  const size_t ws = cuda_size_class(ops::cuda_scratch::kGemmWorkspaceBytes);
  EXPECT_EQ(meta_allocator().stats().in_use, ws);
  EXPECT_GE(allocator_for(kGpu).stats().in_use, ws);
  // Held once: more GEMMs do not add to it.
  const Tensor a = Tensor::empty(Shape{4, 4}, DType::f32, Device::meta());
  ops::matmul(a, a);
  EXPECT_EQ(meta_allocator().stats().peak_in_use, ws + 2 * cuda_size_class(64));
}

TEST_F(MetaAsCuda, ThePlanTakesTheCudaPathNotTheCpus) {
  // linear_gelu under bf16 autocast: the CPU writes the bf16 GELU from the f32 GEMM output in
  // one pass; CUDA writes it in f32 and casts, so a GPU plan holds (and moves) the f32 buffer.
  std::vector<OpCase> cases = op_cases();
  const OpCase* c = nullptr;
  for (const OpCase& k : cases)
    if (k.name == "linear_gelu") c = &k;
  ASSERT_NE(c, nullptr);
  auto gelu_bytes = [](const RunResult& r) {
    for (const meta::KernelCost& k : r.kernels)
      if (std::string(k.name) == "linear_gelu_fwd") return k.bytes;
    return -1.0;
  };
  const double n = 2 * 3 * 12;  // the [2, 3, 12] pre-activation
  EXPECT_EQ(gelu_bytes(run_op(*c, Device::meta(), DType::bf16)), n * (4 + 4));
  meta::reset_allocator(meta::AllocatorModel::host);
  EXPECT_FALSE(meta::plays_cuda());
  EXPECT_EQ(gelu_bytes(run_op(*c, Device::meta(), DType::bf16)), n * (4 + 2));
  meta::reset_allocator(meta::AllocatorModel::cuda);
}

TEST_F(MetaAsCuda, GptStepMatchesTheCudaDevice) {
  for (DType ac : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(ac));
    const GptStep gpu = gpt_step(kGpu, 2, 12, ac);
    const GptStep on_meta = gpt_step(Device::meta(), 2, 12, ac);
    EXPECT_GT(gpu.kernels.size(), 20u);
    expect_same_kernels(gpu.kernels, on_meta.kernels);
    EXPECT_EQ(on_meta.peak, gpu.peak);
    EXPECT_GT(on_meta.peak, 0u);
    EXPECT_EQ(meta::live_allocations(), 0);
  }
}

}  // namespace
}  // namespace tessera
