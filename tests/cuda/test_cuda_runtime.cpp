// The CUDA runtime layer on a device: the caching allocator's size classes, same-stream and
// cross-stream reuse, statistics and cache release; tensor copies, strided (view) copies;
// pinned host buffers; cuBLASLt plan reuse. Without a device every device test is skipped; the
// strided copy's argument checks run everywhere.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>

#include "core/rng.h"
#include "cuda/allocator.h"
#include "cuda/copy.h"
#include "cuda_test_util.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/matmul.h"
#include "kernels/cuda/strided_copy.h"

using namespace tessera;
using namespace tessera::cudatest;

namespace {

class CudaRuntime : public CudaTest {};

struct Stream {
  Stream() { CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)); }
  ~Stream() {
    cuda::device_allocator().forget_stream(s);  // cached blocks must not name a dead stream
    cudaStreamDestroy(s);
  }
  cudaStream_t s = nullptr;
};

TEST_F(CudaRuntime, SameStreamReuseIsImmediateAndCountedInTheStats) {
  cuda::DeviceCachingAllocator& a = cuda::device_allocator();
  Stream st;
  a.reset_peak();
  const AllocatorStats s0 = a.stats();
  void* p = a.allocate_on(1000, st.s);
  const size_t cls = cuda::DeviceCachingAllocator::size_class(1000);
  EXPECT_EQ(a.stats().in_use, s0.in_use + cls);
  a.release(p, 1000);
  void* q = a.allocate_on(900, st.s);  // same class, same stream: the same block at once
  EXPECT_EQ(q, p);
  EXPECT_EQ(a.stats().cache_hits, s0.cache_hits + 1);
  void* r = a.allocate_on(1000, st.s);  // q is live: a new block
  EXPECT_NE(r, q);
  EXPECT_GE(a.stats().peak_in_use, s0.in_use + 2 * cls);
  a.release(q, 900);
  a.release(r, 1000);
  EXPECT_EQ(a.stats().in_use, s0.in_use);
  EXPECT_GE(a.stats().reserved, s0.reserved);
}

TEST_F(CudaRuntime, CrossStreamReuseWaitsForTheOldStream) {
  cuda::DeviceCachingAllocator& a = cuda::device_allocator();
  Stream s1, s2;
  const int64_t n = 1 << 22;  // 16 MiB: long enough for a race to show if the wait were missing
  const size_t bytes = static_cast<size_t>(n) * 4;
  auto* buf = static_cast<float*>(a.allocate_on(bytes, s1.s));
  std::vector<float> ones(static_cast<size_t>(n), 1.f);
  cuda::copy_h2d(buf, ones.data(), bytes, s1.s);
  for (int i = 0; i < 20; ++i) cuda::scale(buf, buf, 1.f, n, s1.s);  // work queued on s1
  const uint64_t cross0 = a.cross_stream_reuses();
  a.release(buf, bytes);  // freed while s1 may still be using it
  auto* again = static_cast<float*>(a.allocate_on(bytes, s2.s));
  ASSERT_EQ(again, buf) << "the only cached block of this class should be handed to s2";
  EXPECT_EQ(a.cross_stream_reuses(), cross0 + 1);
  // s2 writes 2s; had it not waited for s1, s1's trailing scales could rewrite them.
  std::vector<float> twos(static_cast<size_t>(n), 2.f);
  cuda::copy_h2d(again, twos.data(), bytes, s2.s);
  cuda::synchronize(s1.s);
  cuda::synchronize(s2.s);
  std::vector<float> back(static_cast<size_t>(n));
  CUDA_CHECK(cudaMemcpy(back.data(), again, bytes, cudaMemcpyDeviceToHost));
  EXPECT_EQ(back, twos);
  a.release(again, bytes);
}

TEST_F(CudaRuntime, BlocksOfAForgottenStreamAreReusedWithoutAnEvent) {
  cuda::DeviceCachingAllocator& a = cuda::device_allocator();
  const size_t bytes = size_t(5) << 20;
  void* p = nullptr;
  {
    Stream gone;
    p = a.allocate_on(bytes, gone.s);
    CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, gone.s));
    a.release(p, bytes);
  }  // forget_stream, then cudaStreamDestroy
  Stream next;
  const uint64_t cross0 = a.cross_stream_reuses();
  void* q = a.allocate_on(bytes, next.s);  // no event may be recorded on the dead stream
  EXPECT_EQ(q, p);
  EXPECT_EQ(a.cross_stream_reuses(), cross0);
  a.release(q, bytes);
}

TEST_F(CudaRuntime, EmptyCacheReturnsCachedBlocks) {
  cuda::DeviceCachingAllocator& a = cuda::device_allocator();
  void* p = a.allocate(size_t(3) << 20);
  a.release(p, size_t(3) << 20);
  const AllocatorStats before = a.stats();
  EXPECT_GT(before.reserved, before.in_use);
  a.empty_cache();
  EXPECT_EQ(a.stats().reserved, before.in_use);
}

TEST_F(CudaRuntime, RecordStreamMakesReuseWaitForTheOtherStream) {
  cuda::DeviceCachingAllocator& a = cuda::device_allocator();
  Stream s1, s2;
  const int64_t n = 1 << 20;
  const size_t bytes = static_cast<size_t>(n) * 4;
  auto* buf = static_cast<float*>(a.allocate_on(bytes, s1.s));
  CUDA_CHECK(cudaMemsetAsync(buf, 0, bytes, s1.s));
  cuda::synchronize(s1.s);
  for (int i = 0; i < 10; ++i) cuda::scale(buf, buf, 1.f, n, s2.s);  // used on s2 too
  a.record_stream(buf, s2.s);
  a.release(buf, bytes);
  auto* again = static_cast<float*>(a.allocate_on(bytes, s1.s));  // same stream, but s2 pending
  EXPECT_EQ(again, buf);
  std::vector<float> ones(static_cast<size_t>(n), 1.f), back(static_cast<size_t>(n));
  cuda::copy_h2d(again, ones.data(), bytes, s1.s);
  cuda::synchronize(s1.s);
  cuda::synchronize(s2.s);
  CUDA_CHECK(cudaMemcpy(back.data(), again, bytes, cudaMemcpyDeviceToHost));
  EXPECT_EQ(back, ones);
  a.release(again, bytes);
}

TEST_F(CudaRuntime, TensorsRoundTripThroughTheDevice) {
  Generator gen(7);
  for (DType t : {DType::f32, DType::bf16, DType::i32}) {
    Tensor host = Tensor::randn({3, 5, 7}, gen).to(t);
    Tensor dev = cuda::to_device(host);
    EXPECT_EQ(dev.device(), Device::cuda(0));
    EXPECT_EQ(dev.shape(), host.shape());
    EXPECT_EQ(dev.dtype(), t);
    Tensor back = cuda::to_host(dev);
    EXPECT_TRUE(back.device().is_cpu());
    EXPECT_EQ(std::memcmp(back.raw_data(), host.raw_data(), host.nbytes()), 0) << dtype_name(t);
  }
  // A non-contiguous source is made contiguous first.
  Tensor m = Tensor::randn({4, 6}, gen);
  Tensor mt = m.transpose_view(0, 1);
  EXPECT_EQ(cuda::to_host(cuda::to_device(mt)).to_vector(), mt.contiguous().to_vector());
  Tensor z = cuda::zeros({100}, DType::f32);
  EXPECT_EQ(cuda::to_host(z).to_vector(), std::vector<float>(100, 0.f));
  EXPECT_THROW(cuda::to_host(m), Error);  // a CPU tensor is not a device tensor
}

TEST_F(CudaRuntime, PinnedBuffersAreReusedOnlyAfterTheirCopies) {
  cuda::PinnedHostAllocator& pa = cuda::pinned_allocator();
  Stream st;
  const size_t bytes = size_t(8) << 20;
  void* dev = cuda::device_allocator().allocate_on(bytes, st.s);
  void* first = nullptr;
  {
    cuda::PinnedBuffer pb(bytes);
    first = pb.data();
    std::memset(pb.data(), 0x5a, bytes);
    cuda::copy_h2d(dev, pb.data(), bytes, st.s);  // async from pinned memory
    pa.record_use(pb.data(), st.s);
  }  // released while the copy may be in flight
  cuda::synchronize(st.s);
  cuda::PinnedBuffer again(bytes);  // the copy is done: the block may be reused
  EXPECT_EQ(again.data(), first);
  std::vector<uint8_t> back(bytes);
  CUDA_CHECK(cudaMemcpy(back.data(), dev, bytes, cudaMemcpyDeviceToHost));
  EXPECT_EQ(back, std::vector<uint8_t>(bytes, 0x5a));
  cuda::device_allocator().release(dev, bytes);
  EXPECT_GT(pa.stats().reserved, 0u);
}

// read_async: the copy lands in pinned memory; after a later synchronisation of the same stream
// wait() returns it without waiting again (the training loop's loss read).
TEST_F(CudaRuntime, AsyncReadsLandWithALaterSynchronisation) {
  const std::vector<float> values = {1.5f, -2.f, 3.25f};
  Tensor dev = cuda::to_device(Tensor::from_vector(values, {3}));
  std::unique_ptr<HostRead> r = cuda::read_async(dev.raw_data(), 3 * sizeof(float));
  Tensor z = cuda::zeros({1000}, DType::f32);  // more work behind the copy
  cuda::synchronize(cuda::current_stream());
  const int64_t waits = cuda::host_waits();
  std::vector<float> got(3);
  std::memcpy(got.data(), r->wait(), got.size() * sizeof(float));
  EXPECT_EQ(got, values);
  EXPECT_EQ(cuda::host_waits(), waits);  // -1 == -1 where no one counts (a GPU)
  // Without the synchronisation, wait() itself waits for the copy.
  std::unique_ptr<HostRead> r2 = cuda::read_async(dev.raw_data(), sizeof(float));
  float first = 0.f;
  std::memcpy(&first, r2->wait(), sizeof first);
  EXPECT_EQ(first, 1.5f);
}

TEST_F(CudaRuntime, GemmPlansAreBuiltOncePerShape) {
  DevBuf<float> a(64 * 32), b(32 * 48), c(64 * 48);
  cuda::GemmArgs g;
  g.m = 64, g.n = 48, g.k = 32, g.a = a.get(), g.b = b.get(), g.c = c.get();
  cuda::gemm(g);
  const int64_t plans = cuda::gemm_plan_count();
  for (int i = 0; i < 3; ++i) cuda::gemm(g);
  EXPECT_EQ(cuda::gemm_plan_count(), plans);
  g.n = 40;
  cuda::gemm(g);
  EXPECT_EQ(cuda::gemm_plan_count(), plans + 1);
  cuda::synchronize(cuda::current_stream());
  std::printf("device: %s\n", cuda::device_summary().c_str());
}

// Tensor::contiguous() of strided CUDA views (the strided copy kernel) against the CPU's
// contiguous() of the same views: the same bytes, for every element size and several ranks.
TEST_F(CudaRuntime, StridedCopiesMatchCpuContiguousBitForBit) {
  Generator gen(23);
  const Device gpu = Device::cuda(0);
  using View = Tensor (*)(const Tensor&);
  const std::pair<const char*, View> views[] = {
      {"2-D transpose",
       [](const Tensor& t) {
         return t.view(Shape{12, 35}).transpose_view(0, 1);
       }},
      {"5-D transpose (1, 3)",
       [](const Tensor& t) {
         return t.view(Shape{2, 3, 5, 7, 2}).transpose_view(1, 3);
       }},
      {"3-D two transposes",
       [](const Tensor& t) {
         return t.view(Shape{4, 5, 21}).transpose_view(0, 2).transpose_view(1, 2);
       }},
      {"rows of a transpose",
       [](const Tensor& t) {
         return t.view(Shape{20, 21}).transpose_view(0, 1).slice_rows(3, 17);
       }},
      {"transpose of rows",
       [](const Tensor& t) {
         return t.view(Shape{20, 21}).slice_rows(5, 12).transpose_view(0, 1);
       }},
      {"size-1 dims",
       [](const Tensor& t) {
         return t.view(Shape{1, 14, 1, 30}).transpose_view(1, 3);
       }},
      {"no rows",
       [](const Tensor& t) {
         return t.view(Shape{20, 21}).transpose_view(0, 1).slice_rows(4, 4);
       }},
  };
  for (DType dt : {DType::f32, DType::bf16, DType::f16, DType::i32, DType::i64, DType::u16}) {
    Tensor host = Tensor::rand(Shape{420}, gen, 0.f, 1000.f).to(dt);
    Tensor dev = host.to(gpu);
    for (const auto& [name, view] : views) {
      const std::string label = std::string("contiguous of ") + name;
      Tensor hv = view(host), dv = view(dev);
      ASSERT_EQ(hv.is_contiguous(), dv.is_contiguous()) << label;
      Tensor hc = hv.contiguous(), dc = dv.contiguous();
      ASSERT_TRUE(dc.is_cuda()) << label;
      ASSERT_TRUE(dc.is_contiguous()) << label;
      ASSERT_EQ(dc.shape(), hv.shape()) << label;
      Tensor back = dc.to(Device::cpu());
      const auto* hb = static_cast<const uint8_t*>(hc.raw_data());
      const auto* db = static_cast<const uint8_t*>(back.raw_data());
      expect_exact(label, dtype_name(dt), std::vector<uint8_t>(db, db + back.nbytes()),
                   std::vector<uint8_t>(hb, hb + hc.nbytes()));
    }
    // A strided device view straight to the host goes through the same copy.
    Tensor t = dev.view(Shape{20, 21}).transpose_view(0, 1);
    expect_exact("to(cpu) of a transposed view", dtype_name(dt), t.to(Device::cpu()).to_vector(),
                 host.view(Shape{20, 21}).transpose_view(0, 1).contiguous().to_vector());
  }
}

// Argument errors are raised on the host before any launch: no device needed.
TEST(CudaStridedCopyArgs, UnsupportedElementSizesAndRanksAreRefused) {
  cuda::StridedView v;
  v.ndim = 2, v.sizes[0] = 3, v.sizes[1] = 4, v.strides[0] = 1, v.strides[1] = 3;
  try {
    cuda::strided_copy(nullptr, nullptr, v, 3);
    FAIL() << "an element size of 3 bytes did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("element size 3"), std::string::npos) << e.what();
  }
  v.ndim = kMaxDims + 1;
  EXPECT_THROW(cuda::strided_copy(nullptr, nullptr, v, 4), Error);
  v.ndim = 2, v.sizes[1] = 0;  // nothing to copy: no launch, no error
  EXPECT_NO_THROW(cuda::strided_copy(nullptr, nullptr, v, 4));
}

}  // namespace
