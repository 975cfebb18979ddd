// The emulated CUDA device catches what it claims to (docs/CUDA.md, "The emulated device"): each
// test breaks a kernel or a call on purpose and asserts the report, or shows that a missing
// wait gives wrong numbers; and the execution model (barriers, shuffles, votes, streams,
// events, launch limits) behaves as CUDA's does.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "emu/device.h"
#include "kernels/cuda/launch.cuh"

namespace {

using tessera::cuda::launch;
namespace emu = tessera::emu;

// ---- kernels ----
__global__ void write_index(float* p, int64_t index) {
  if (threadIdx.x == 7) p[index] = 1.f;
}

__global__ void fill(float* p, float v, int64_t n) {
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) p[i] = v;
}

__global__ void copy(const float* x, float* y, int64_t n) {
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) y[i] = x[i];
}

// Thread 0 returns early: the others wait at a barrier it never reaches... which CUDA allows
// (exited threads count as arrived); a thread waiting at __syncthreads while its warp waits at a
// shuffle does not.
__global__ void divergent_barrier(float* out) {
  float v = float(threadIdx.x);
  if (threadIdx.x == 0) {
    __syncthreads();
  } else {
    v = __shfl_xor_sync(0xffffffffu, v, 1);
  }
  out[threadIdx.x] = v;
}

__global__ void trap_in_block_3() {
  if (blockIdx.x == 3 && threadIdx.x == 5) __trap();
}

// Block-wide reversal through shared memory: correct only if the barrier really waits.
__global__ void reverse(const float* x, float* y) {
  __shared__ float s[256];
  s[threadIdx.x] = x[blockIdx.x * blockDim.x + threadIdx.x];
  __syncthreads();
  y[blockIdx.x * blockDim.x + threadIdx.x] = s[blockDim.x - 1 - threadIdx.x];
}

__global__ void warp_ops(float* sum, float* down, unsigned* ballot) {
  const unsigned t = threadIdx.x;
  float v = float(t);
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  sum[t] = v;
  down[t] = __shfl_down_sync(0xffffffffu, float(t), 3);
  const unsigned b = __ballot_sync(0xffffffffu, t % 3 == 0);
  if (t % 32 == 0) ballot[t / 32] = b;
}

// Reads a neighbour's shared-memory slot without a barrier after the write (a race on a GPU);
// with_barrier adds the __syncthreads that makes it correct.
__global__ void neighbour_through_shared(float* out, bool with_barrier) {
  TS_DYNAMIC_SHARED(float, s);
  const unsigned t = threadIdx.x;
  s[t] = float(t);
  if (with_barrier) __syncthreads();
  out[t] = s[(t + 1) % blockDim.x];
}

__global__ void read_dynamic_shared(float* out) {
  TS_DYNAMIC_SHARED(float, s);
  out[threadIdx.x] = s[threadIdx.x];
}

// ---- helpers ----
template <class T>
T* device_alloc(size_t n) {
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, n * sizeof(T)), cudaSuccess);
  return static_cast<T*>(p);
}

template <class T>
std::vector<T> download(const T* p, size_t n) {
  std::vector<T> h(n);
  EXPECT_EQ(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return h;
}

// A host function that holds a stream until the test opens the gate: makes "this stream has
// not run yet" certain.
struct Gate {
  std::atomic<bool> open{false};
  static void hold(void* p) {
    while (!static_cast<Gate*>(p)->open.load())
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  void close_on(cudaStream_t s) {
    ASSERT_EQ(cudaLaunchHostFunc(s, &Gate::hold, this), cudaSuccess);
  }
};

// Clears the sticky error a test provoked on purpose.
struct ResetAfter {
  ~ResetAfter() { emu::reset_device(); }
};

// ---- what the emulator catches ----
TEST(EmuDeviceDeathTest, KernelWritePastAnAllocationNamesKernelBlockThreadAndAllocation) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        float* p = device_alloc<float>(256);
        launch<write_index>(dim3(1), dim3(32), 0, nullptr, p, int64_t(256));
        (void)cudaDeviceSynchronize();
      },
      "invalid memory access in kernel .*write_index, block \\(0, 0, 0\\), thread \\(7, 0, "
      "0\\).*0 bytes past the end of a 1024-byte device allocation");
}

TEST(EmuDeviceDeathTest, KernelUseAfterFreeIsReported) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        float* p = device_alloc<float>(64);
        (void)cudaFree(p);
        launch<write_index>(dim3(1), dim3(32), 0, nullptr, p, int64_t(0));
        (void)cudaDeviceSynchronize();
      },
      "kernel .*write_index.*inside a 256-byte device allocation at .* that was freed");
}

TEST(EmuDevice, CopyPastAnAllocationIsAStickyErrorWithAReport) {
  ResetAfter reset;
  float* p = device_alloc<float>(10);
  std::vector<float> h(11, 1.f);
  EXPECT_EQ(cudaMemcpy(p, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice),
            cudaErrorIllegalAddress);
  const std::string report = cudaGetErrorString(cudaErrorIllegalAddress);
  EXPECT_NE(report.find("cudaMemcpy: dst: write of 44 bytes"), std::string::npos) << report;
  EXPECT_NE(report.find("4 bytes past the end of a 40-byte device allocation"), std::string::npos)
      << report;
  // Sticky, as after a device fault: every later call fails with it.
  EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorIllegalAddress);
  emu::reset_device();
  EXPECT_EQ(cudaFree(p), cudaSuccess);
}

TEST(EmuDevice, HostPointerPassedAsDeviceMemoryIsReported) {
  ResetAfter reset;
  std::vector<float> host(4);
  EXPECT_EQ(cudaMemsetAsync(host.data(), 0, 16, nullptr), cudaErrorIllegalAddress);
  const std::string report = emu::sticky_report();
  EXPECT_NE(report.find("cudaMemsetAsync: write of 16 bytes"), std::string::npos) << report;
  EXPECT_NE(report.find("not device memory"), std::string::npos) << report;
}

TEST(EmuDevice, BarrierDeadlockIsReportedNotHung) {
  ResetAfter reset;
  float* out = device_alloc<float>(64);
  launch<divergent_barrier>(dim3(1), dim3(64), 0, nullptr, out);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorLaunchFailure);
  const std::string report = emu::sticky_report();
  EXPECT_NE(report.find("kernel "), std::string::npos) << report;
  EXPECT_NE(report.find("divergent_barrier, block (0, 0, 0): barrier deadlock: thread 0 waits at "
                        "__syncthreads"),
            std::string::npos)
      << report;
}

TEST(EmuDevice, TrapNamesKernelBlockAndThread) {
  ResetAfter reset;
  launch<trap_in_block_3>(dim3(8), dim3(32), 0, nullptr);
  EXPECT_EQ(cudaStreamSynchronize(nullptr), cudaErrorLaunchFailure);
  const std::string report = emu::sticky_report();
  EXPECT_NE(report.find("trap_in_block_3, block (3, 0, 0), thread (5, 0, 0): __trap()"),
            std::string::npos)
      << report;
}

TEST(EmuDevice, MissingEventWaitBetweenStreamsGivesStaleData) {
  cudaStream_t a, b;
  ASSERT_EQ(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking), cudaSuccess);
  constexpr int64_t n = 100;
  float* x = device_alloc<float>(n);
  float* y = device_alloc<float>(n);
  ASSERT_EQ(cudaMemset(x, 0, n * sizeof(float)), cudaSuccess);
  {  // No wait: b copies x before a has filled it.
    Gate gate;
    gate.close_on(a);
    launch<fill>(dim3(1), dim3(64), 0, a, x, 3.f, n);
    launch<copy>(dim3(1), dim3(64), 0, b, x, y, n);
    ASSERT_EQ(cudaStreamSynchronize(b), cudaSuccess);
    gate.open = true;
    ASSERT_EQ(cudaStreamSynchronize(a), cudaSuccess);
    EXPECT_EQ(download(y, n)[0], 0.f) << "the copy ran after the fill without a wait";
  }
  {  // With the event wait: the copy sees the fill, however late stream a runs.
    ASSERT_EQ(cudaMemset(x, 0, n * sizeof(float)), cudaSuccess);
    cudaEvent_t filled;
    ASSERT_EQ(cudaEventCreateWithFlags(&filled, cudaEventDisableTiming), cudaSuccess);
    Gate gate;
    gate.close_on(a);
    launch<fill>(dim3(1), dim3(64), 0, a, x, 3.f, n);
    ASSERT_EQ(cudaEventRecord(filled, a), cudaSuccess);
    ASSERT_EQ(cudaStreamWaitEvent(b, filled, 0), cudaSuccess);
    launch<copy>(dim3(1), dim3(64), 0, b, x, y, n);
    EXPECT_EQ(cudaStreamQuery(b), cudaErrorNotReady);  // held behind a's gate
    gate.open = true;
    ASSERT_EQ(cudaStreamSynchronize(b), cudaSuccess);
    EXPECT_EQ(download(y, n), std::vector<float>(n, 3.f));
    ASSERT_EQ(cudaEventDestroy(filled), cudaSuccess);
  }
  ASSERT_EQ(cudaStreamDestroy(a), cudaSuccess);
  ASSERT_EQ(cudaStreamDestroy(b), cudaSuccess);
}

// A host read of pinned memory that a queued copy writes, before the host has seen the copy
// done, is reported: on a GPU it would read whatever was there before.
TEST(EmuDeviceDeathTest, HostReadOfPinnedMemoryBeforeTheCopyIsSeenDoneIsReported) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        float* d = device_alloc<float>(4);
        float* pinned = nullptr;
        (void)cudaHostAlloc(&pinned, 4 * sizeof(float), cudaHostAllocDefault);
        launch<fill>(dim3(1), dim3(4), 0, nullptr, d, 7.f, int64_t(4));
        (void)cudaMemcpyAsync(pinned, d, 4 * sizeof(float), cudaMemcpyDeviceToHost, nullptr);
        std::printf("%f\n", double(pinned[0]));
      },
      "unsynchronised read at address .*: host read of the 16-byte pinned block at .*, which a "
      "cudaMemcpyAsync from the device on stream .* writes, before the host synchronised with "
      "that stream");
}

// The host overwriting the pinned source of a copy that may not have run yet is reported too.
TEST(EmuDeviceDeathTest, HostWriteToThePinnedSourceOfAQueuedCopyIsReported) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        float* d = device_alloc<float>(4);
        float* pinned = nullptr;
        (void)cudaHostAlloc(&pinned, 4 * sizeof(float), cudaHostAllocDefault);
        (void)cudaMemcpyAsync(d, pinned, 4 * sizeof(float), cudaMemcpyHostToDevice, nullptr);
        pinned[0] = 1.f;
      },
      "unsynchronised write at address .*: host write to the 16-byte pinned block at .*, which a "
      "cudaMemcpyAsync to the device on stream .* reads");
}

// Once the host has seen the copy done (here through an event), the block is the host's again;
// while a copy only reads it, the host may read it too.
TEST(EmuDevice, PinnedMemoryIsTheHostsOnceItHasSeenTheCopyDone) {
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  float* d = device_alloc<float>(4);
  float* pinned = nullptr;
  ASSERT_EQ(cudaHostAlloc(&pinned, 4 * sizeof(float), cudaHostAllocDefault), cudaSuccess);
  for (int i = 0; i < 4; ++i) pinned[i] = -1.f;
  cudaEvent_t copied;
  ASSERT_EQ(cudaEventCreateWithFlags(&copied, cudaEventDisableTiming), cudaSuccess);
  Gate gate;
  gate.close_on(s);
  launch<fill>(dim3(1), dim3(4), 0, s, d, 7.f, int64_t(4));
  ASSERT_EQ(cudaMemcpyAsync(pinned, d, 4 * sizeof(float), cudaMemcpyDeviceToHost, s), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(copied, s), cudaSuccess);
  EXPECT_EQ(cudaEventQuery(copied), cudaErrorNotReady);
  gate.open = true;
  ASSERT_EQ(cudaEventSynchronize(copied), cudaSuccess);
  EXPECT_EQ(pinned[0], 7.f);
  // A copy from the block: reads stay open, and the host's next write waits for a sync.
  Gate second;
  second.close_on(s);
  ASSERT_EQ(cudaMemcpyAsync(d, pinned, 4 * sizeof(float), cudaMemcpyHostToDevice, s), cudaSuccess);
  EXPECT_EQ(pinned[3], 7.f);
  second.open = true;
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  pinned[3] = 2.f;
  EXPECT_EQ(pinned[3], 2.f);
  ASSERT_EQ(cudaEventDestroy(copied), cudaSuccess);
  ASSERT_EQ(cudaFreeHost(pinned), cudaSuccess);
  ASSERT_EQ(cudaStreamDestroy(s), cudaSuccess);
}

// ---- the execution model ----
TEST(EmuDevice, SyncthreadsReallyWaitsForTheWholeBlock) {
  constexpr int blocks = 3, threads = 256;
  std::vector<float> x(blocks * threads);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(i);
  float* dx = device_alloc<float>(x.size());
  float* dy = device_alloc<float>(x.size());
  ASSERT_EQ(cudaMemcpy(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  launch<reverse>(dim3(blocks), dim3(threads), 0, nullptr, dx, dy);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const std::vector<float> y = download(dy, x.size());
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < threads; ++t)
      ASSERT_EQ(y[size_t(b * threads + t)], float(b * threads + threads - 1 - t));
}

TEST(EmuDevice, ShufflesAndBallotsFollowCudaSemantics) {
  constexpr int n = 64;
  float* sum = device_alloc<float>(n);
  float* down = device_alloc<float>(n);
  unsigned* ballot = device_alloc<unsigned>(2);
  launch<warp_ops>(dim3(1), dim3(n), 0, nullptr, sum, down, ballot);
  const std::vector<float> s = download(sum, n), d = download(down, n);
  const std::vector<unsigned> b = download(ballot, 2);
  for (int t = 0; t < n; ++t) {
    const int w = t / 32 * 32;
    EXPECT_EQ(s[size_t(t)], float(32 * w + 31 * 32 / 2)) << t;         // sum over the warp
    EXPECT_EQ(d[size_t(t)], float(t % 32 + 3 < 32 ? t + 3 : t)) << t;  // past the end: own
  }
  unsigned expect0 = 0, expect1 = 0;
  for (int l = 0; l < 32; ++l) {
    if (l % 3 == 0) expect0 |= 1u << l;
    if ((32 + l) % 3 == 0) expect1 |= 1u << l;
  }
  EXPECT_EQ(b[0], expect0);
  EXPECT_EQ(b[1], expect1);
}

TEST(EmuDevice, LaunchLimitsAreTheGpus) {
  ResetAfter reset;
  float* out = device_alloc<float>(1024);
  launch<fill>(dim3(1), dim3(1025), 0, nullptr, out, 1.f, int64_t(1));
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  launch<fill>(dim3(1, 65536), dim3(32), 0, nullptr, out, 1.f, int64_t(1));
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  // Dynamic shared memory above 48 KiB needs the opt-in, and the opt-in stops at 227 KiB.
  launch<read_dynamic_shared>(dim3(1), dim3(32), 64 * 1024, nullptr, out);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaFuncSetAttribute(read_dynamic_shared, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 228 * 1024),
            cudaErrorInvalidValue);
  ASSERT_EQ(cudaFuncSetAttribute(read_dynamic_shared, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 64 * 1024),
            cudaSuccess);
  launch<read_dynamic_shared>(dim3(1), dim3(32), 64 * 1024, nullptr, out);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  // Shared memory no thread wrote reads as NaN, never as a convenient zero.
  EXPECT_TRUE(std::isnan(download(out, 1)[0]));
}

// TESSERA_EMU_SCHEDULE (launch.cpp) changes the order of a block's threads between barriers:
// a race on shared memory then gives other numbers, which is how CI's second run of the kernel
// tests (emu_reverse_schedule) catches one. The correct kernel gives the same under any order.
TEST(EmuDevice, SharedMemoryRaceDependsOnTheScheduleAndABarrierFixesIt) {
  constexpr int n = 64;
  float* out = device_alloc<float>(n);
  launch<neighbour_through_shared>(dim3(1), dim3(n), n * sizeof(float), nullptr, out, true);
  const std::vector<float> good = download(out, n);
  for (int t = 0; t < n; ++t) ASSERT_EQ(good[size_t(t)], float((t + 1) % n));
  launch<neighbour_through_shared>(dim3(1), dim3(n), n * sizeof(float), nullptr, out, false);
  const std::vector<float> racy = download(out, n);
  const char* order = std::getenv("TESSERA_EMU_SCHEDULE");
  if (order && std::string(order) == "reverse") {
    // Thread t + 1 ran first: t sees its write, as the barrier would have ensured...
    for (int t = 0; t + 1 < n; ++t) EXPECT_EQ(racy[size_t(t)], float(t + 1)) << t;
    EXPECT_TRUE(std::isnan(racy[n - 1]));  // ...except the last, which ran before thread 0
  } else if (!order || std::string(order) == "forward") {
    for (int t = 0; t + 1 < n; ++t) EXPECT_TRUE(std::isnan(racy[size_t(t)])) << t;
    EXPECT_EQ(racy[n - 1], 0.f);
  }
}

TEST(EmuDevice, LegacyDefaultStreamOrdersBlockingStreams) {
  cudaStream_t blocking;
  ASSERT_EQ(cudaStreamCreate(&blocking), cudaSuccess);
  constexpr int64_t n = 32;
  float* x = device_alloc<float>(n);
  float* y = device_alloc<float>(n);
  Gate gate;
  gate.close_on(nullptr);
  launch<fill>(dim3(1), dim3(32), 0, nullptr, x, 5.f, n);      // legacy stream, held
  launch<copy>(dim3(1), dim3(32), 0, blocking, x, y, n);       // must wait for it
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // give a wrong order its chance
  gate.open = true;
  ASSERT_EQ(cudaStreamSynchronize(blocking), cudaSuccess);
  EXPECT_EQ(download(y, n), std::vector<float>(n, 5.f));
  ASSERT_EQ(cudaStreamDestroy(blocking), cudaSuccess);
}

TEST(EmuDevice, HostWaitsAreCounted) {
  float* d = device_alloc<float>(1);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const uint64_t before = emu::host_waits();
  ASSERT_EQ(cudaStreamSynchronize(nullptr), cudaSuccess);  // nothing new queued: not a wait
  EXPECT_EQ(emu::host_waits(), before);
  float h = 0;
  ASSERT_EQ(cudaMemcpy(&h, d, 4, cudaMemcpyDeviceToHost), cudaSuccess);  // waits for the copy
  ASSERT_EQ(cudaStreamSynchronize(nullptr), cudaSuccess);                // already seen done
  EXPECT_EQ(emu::host_waits(), before + 1);
}

}  // namespace
