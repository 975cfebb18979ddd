// The emulated device's shared-memory race check (src/emu/racecheck.h, TESSERA_EMU_RACECHECK):
// each racy kernel here is a correct one with a barrier taken out, and the report must name the
// kernel, the block, both threads and the memory; the correct versions, warp-level
// synchronisation and atomics must pass without a report.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "cuda/allocator.h"
#include "emu/device.h"
#include "emu/racecheck.h"
#include "kernels/cuda/launch.cuh"

namespace {

using tessera::cuda::launch;
namespace emu = tessera::emu;

// Each thread reads its neighbour's slot; without the barrier, thread 1 overwrites the slot
// thread 0 has read (or, run the other way round, thread 0 reads a slot thread 1 wrote).
__global__ void neighbour(float* out, bool with_barrier) {
  TS_DYNAMIC_SHARED(float, s);
  const unsigned t = threadIdx.x;
  s[t] = float(t);
  if (with_barrier) __syncthreads();
  out[blockIdx.x * blockDim.x + t] = s[(t + 1) % blockDim.x];
}

// A block sum whose result thread 0 leaves in partial[0]; every thread then reads it, which
// needs a second barrier.
__global__ void block_sum(const float* x, float* out, bool final_barrier) {
  __shared__ float partial[64];
  partial[threadIdx.x] = x[threadIdx.x];
  __syncthreads();
  if (threadIdx.x == 0) {
    float s = 0.f;
    for (int i = 0; i < 64; ++i) s += partial[i];
    partial[0] = s;
  }
  if (final_barrier) __syncthreads();
  out[threadIdx.x] = partial[0];
}

// __syncwarp orders the lanes of one warp, not two warps.
__global__ void through_warp_barrier(float* out, unsigned partner_xor) {
  TS_DYNAMIC_SHARED(float, s);
  const unsigned t = threadIdx.x;
  s[t] = float(t);
  __syncwarp();
  out[t] = s[t ^ partner_xor];
}

// A shuffle synchronises a warp's lanes but orders no memory (only __syncwarp does).
__global__ void through_shuffle(float* out) {
  TS_DYNAMIC_SHARED(float, s);
  const unsigned t = threadIdx.x;
  s[t] = float(t);
  const float v = __shfl_xor_sync(0xffffffffu, float(t), 1);
  out[t] = s[t ^ 1] + v;
}

// Atomics on one shared word from every thread are not a race.
__global__ void count_with_atomics(float* out) {
  __shared__ float count;
  if (threadIdx.x == 0) count = 0.f;
  __syncthreads();
  atomicAdd(&count, 1.f);
  __syncthreads();
  out[threadIdx.x] = count;
}

__global__ void fill(float* x, float v, int64_t n) {
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) x[i] = v;
}

__global__ void copy(const float* x, float* y, int64_t n) {
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) y[i] = x[i];
}

template <class T>
T* device_alloc(size_t n) {
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, n * sizeof(T)), cudaSuccess);
  return static_cast<T*>(p);
}

std::vector<float> download(const float* p, size_t n) {
  std::vector<float> h(n);
  EXPECT_EQ(cudaMemcpy(h.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  return h;
}

// Turns the check on for one test; clears the error a racy kernel leaves.
struct RaceCheckOn {
  RaceCheckOn() { emu::racecheck::set_enabled(true); }
  ~RaceCheckOn() {
    (void)cudaDeviceSynchronize();
    emu::reset_device();
    emu::racecheck::set_enabled(false);
  }
};

// The launch's error and report (empty when it ran clean).
std::string report_of_last_launch() {
  if (cudaDeviceSynchronize() == cudaSuccess) return {};
  std::string r = emu::sticky_report();
  emu::reset_device();
  return r.empty() ? "(an error without a report)" : r;
}

TEST(EmuRaceCheck, MissingBarrierOnDynamicSharedMemoryNamesBothThreadsAndTheByte) {
  RaceCheckOn on;
  float* out = device_alloc<float>(128);
  launch<neighbour>(dim3(2), dim3(64), 64 * sizeof(float), nullptr, out, true);
  EXPECT_EQ(report_of_last_launch(), "");
  launch<neighbour>(dim3(2), dim3(64), 64 * sizeof(float), nullptr, out, false);
  const std::string r = report_of_last_launch();
  // In the forward order thread 0 reads slot 1 first; thread 1 then writes it.
  EXPECT_NE(r.find("kernel "), std::string::npos) << r;
  EXPECT_NE(r.find("neighbour, block (0, 0, 0), thread (1, 0, 0): race on shared memory: it "
                   "writes byte 4 of dynamic shared memory, which thread (0, 0, 0) read with no "
                   "barrier between them"),
            std::string::npos)
      << r;
  EXPECT_NE(r.find("(instruction at 0x"), std::string::npos) << r;
  ASSERT_EQ(cudaFree(out), cudaSuccess);
}

TEST(EmuRaceCheck, MissingBarrierOnAStaticSharedVariableNamesTheVariable) {
  RaceCheckOn on;
  std::vector<float> x(64);
  for (int i = 0; i < 64; ++i) x[size_t(i)] = float(i);
  float* dx = device_alloc<float>(64);
  float* out = device_alloc<float>(64);
  ASSERT_EQ(cudaMemcpy(dx, x.data(), sizeof(float) * 64, cudaMemcpyHostToDevice), cudaSuccess);
  launch<block_sum>(dim3(1), dim3(64), 0, nullptr, dx, out, true);
  EXPECT_EQ(report_of_last_launch(), "");
  EXPECT_EQ(download(out, 64), std::vector<float>(64, 2016.f));
  launch<block_sum>(dim3(1), dim3(64), 0, nullptr, dx, out, false);
  const std::string r = report_of_last_launch();
  EXPECT_NE(r.find("block_sum, block (0, 0, 0), thread (1, 0, 0): race on shared memory: it "
                   "reads byte 0 of __shared__ (anonymous namespace)::block_sum(float const*, "
                   "float*, bool)::partial, which thread (0, 0, 0) wrote with no barrier"),
            std::string::npos)
      << r;
  // The write is located too.
  EXPECT_NE(r.find("; the write: instruction at"), std::string::npos) << r;
  ASSERT_EQ(cudaFree(dx), cudaSuccess);
  ASSERT_EQ(cudaFree(out), cudaSuccess);
}

TEST(EmuRaceCheck, SyncwarpOrdersOneWarpNotTwo) {
  RaceCheckOn on;
  float* out = device_alloc<float>(64);
  launch<through_warp_barrier>(dim3(1), dim3(64), 64 * sizeof(float), nullptr, out, 1u);
  EXPECT_EQ(report_of_last_launch(), "");
  std::vector<float> want(64);
  for (unsigned t = 0; t < 64; ++t) want[t] = float(t ^ 1u);
  EXPECT_EQ(download(out, 64), want);
  launch<through_warp_barrier>(dim3(1), dim3(64), 64 * sizeof(float), nullptr, out, 32u);
  const std::string r = report_of_last_launch();
  EXPECT_NE(r.find("through_warp_barrier, block (0, 0, 0), thread (0, 0, 0): race on shared "
                   "memory: it reads byte 128 of dynamic shared memory, which thread (32, 0, 0) "
                   "wrote"),
            std::string::npos)
      << r;
}

TEST(EmuRaceCheck, AShuffleIsNotAMemoryBarrier) {
  RaceCheckOn on;
  float* out = device_alloc<float>(32);
  launch<through_shuffle>(dim3(1), dim3(32), 32 * sizeof(float), nullptr, out);
  const std::string r = report_of_last_launch();
  EXPECT_NE(r.find("through_shuffle, block (0, 0, 0), thread (0, 0, 0): race on shared memory: it "
                   "reads byte 4 of dynamic shared memory, which thread (1, 0, 0) wrote"),
            std::string::npos)
      << r;
}

TEST(EmuRaceCheck, AtomicsAreNotRaces) {
  RaceCheckOn on;
  float* out = device_alloc<float>(128);
  launch<count_with_atomics>(dim3(1), dim3(128), 0, nullptr, out);
  EXPECT_EQ(report_of_last_launch(), "");
  EXPECT_EQ(download(out, 128), std::vector<float>(128, 128.f));
}

TEST(EmuRaceCheck, OffByDefaultUnlessTheEnvironmentSaysSo) {
  float* out = device_alloc<float>(64);
  launch<neighbour>(dim3(1), dim3(64), 64 * sizeof(float), nullptr, out, false);
  const std::string r = report_of_last_launch();
  if (emu::racecheck::enabled())
    EXPECT_NE(r.find("race on shared memory"), std::string::npos) << r;
  else
    EXPECT_EQ(r, "");
}

// ---- races between streams on device memory (streamrace.h) ----

struct TwoStreams {
  cudaStream_t a = nullptr, b = nullptr;
  explicit TwoStreams(unsigned flags = cudaStreamNonBlocking) {
    EXPECT_EQ(cudaStreamCreateWithFlags(&a, flags), cudaSuccess);
    EXPECT_EQ(cudaStreamCreateWithFlags(&b, flags), cudaSuccess);
  }
  ~TwoStreams() {
    (void)cudaStreamDestroy(a);
    (void)cudaStreamDestroy(b);
  }
};

constexpr int64_t kN = 100;

TEST(EmuStreamRace, AKernelReadingWhatAnotherStreamWritesWithoutAWaitIsReported) {
  RaceCheckOn on;
  TwoStreams s;
  float* x = device_alloc<float>(kN);
  float* y = device_alloc<float>(kN);
  launch<fill>(dim3(1), dim3(64), 0, s.a, x, 3.f, kN);
  launch<copy>(dim3(1), dim3(64), 0, s.b, x, y, kN);
  const std::string r = report_of_last_launch();
  // Whichever stream ran first, the other finds the race: the copy reading what the fill wrote,
  // or the fill writing what the copy read.
  EXPECT_NE(r.find("race between streams on device memory"), std::string::npos) << r;
  EXPECT_NE(r.find("of the 400-byte device allocation at"), std::string::npos) << r;
  const bool copy_found = r.find("copy on stream") < r.find("fill on stream");
  EXPECT_NE(r.find(copy_found ? "reads bytes" : "writes bytes"), std::string::npos) << r;
  EXPECT_NE(r.find(copy_found ? " wrote, and no event wait" : " read, and no event wait"),
            std::string::npos)
      << r;
  EXPECT_NE(r.find("fill on stream 0x"), std::string::npos) << r;
  EXPECT_NE(r.find("copy on stream 0x"), std::string::npos) << r;
}

TEST(EmuStreamRace, AnEventWaitOrdersTheStreams) {
  RaceCheckOn on;
  TwoStreams s;
  float* x = device_alloc<float>(kN);
  float* y = device_alloc<float>(kN);
  cudaEvent_t filled;
  ASSERT_EQ(cudaEventCreateWithFlags(&filled, cudaEventDisableTiming), cudaSuccess);
  launch<fill>(dim3(1), dim3(64), 0, s.a, x, 3.f, kN);
  ASSERT_EQ(cudaEventRecord(filled, s.a), cudaSuccess);
  ASSERT_EQ(cudaStreamWaitEvent(s.b, filled, 0), cudaSuccess);
  launch<copy>(dim3(1), dim3(64), 0, s.b, x, y, kN);
  // And back: a overwrites x only after b's copy has read it.
  ASSERT_EQ(cudaEventRecord(filled, s.b), cudaSuccess);
  ASSERT_EQ(cudaStreamWaitEvent(s.a, filled, 0), cudaSuccess);
  launch<fill>(dim3(1), dim3(64), 0, s.a, x, 4.f, kN);
  EXPECT_EQ(report_of_last_launch(), "");
  EXPECT_EQ(download(y, kN), std::vector<float>(kN, 3.f));
  ASSERT_EQ(cudaEventDestroy(filled), cudaSuccess);
}

TEST(EmuStreamRace, AWriteAfterAnotherStreamsReadNeedsTheWaitToo) {
  RaceCheckOn on;
  TwoStreams s;
  float* x = device_alloc<float>(kN);
  float* y = device_alloc<float>(kN);
  launch<fill>(dim3(1), dim3(64), 0, s.a, x, 3.f, kN);
  ASSERT_EQ(cudaStreamSynchronize(s.a), cudaSuccess);  // the host orders the fill before both
  launch<copy>(dim3(1), dim3(64), 0, s.b, x, y, kN);
  // No wait for b. (The call itself may already return the race's error, raised as it ran.)
  (void)cudaMemsetAsync(x, 0, kN * sizeof(float), s.a);
  const std::string r = report_of_last_launch();
  EXPECT_NE(r.find("race between streams on device memory"), std::string::npos) << r;
  EXPECT_NE(r.find("cudaMemsetAsync"), std::string::npos) << r;
  EXPECT_NE(r.find("copy on stream"), std::string::npos) << r;
}

TEST(EmuStreamRace, CopiesAreCheckedLikeKernels) {
  RaceCheckOn on;
  TwoStreams s;
  float* x = device_alloc<float>(kN);
  float* y = device_alloc<float>(kN);
  launch<fill>(dim3(1), dim3(64), 0, s.a, x, 3.f, kN);
  (void)cudaMemcpyAsync(y, x, kN * sizeof(float), cudaMemcpyDeviceToDevice, s.b);
  const std::string r = report_of_last_launch();
  EXPECT_NE(r.find("race between streams on device memory"), std::string::npos) << r;
  EXPECT_NE(r.find("a cudaMemcpyAsync"), std::string::npos) << r;
  EXPECT_NE(r.find("fill on stream"), std::string::npos) << r;
}

TEST(EmuStreamRace, TheHostAndTheLegacyDefaultStreamOrderStreams) {
  RaceCheckOn on;
  float* x = device_alloc<float>(kN);
  float* y = device_alloc<float>(kN);
  {  // The host waits for a, then queues on b.
    TwoStreams s;
    launch<fill>(dim3(1), dim3(64), 0, s.a, x, 3.f, kN);
    ASSERT_EQ(cudaStreamSynchronize(s.a), cudaSuccess);
    launch<copy>(dim3(1), dim3(64), 0, s.b, x, y, kN);
    EXPECT_EQ(report_of_last_launch(), "");
  }
  {  // Blocking streams: the legacy default stream waits for a, and b waits for it.
    TwoStreams s(cudaStreamDefault);
    launch<fill>(dim3(1), dim3(64), 0, s.a, x, 5.f, kN);
    launch<copy>(dim3(1), dim3(64), 0, nullptr, x, y, kN);
    launch<fill>(dim3(1), dim3(64), 0, s.b, x, 6.f, kN);
    EXPECT_EQ(report_of_last_launch(), "");
    EXPECT_EQ(download(y, kN), std::vector<float>(kN, 5.f));
  }
}

// ---- races on global memory within one launch (streamrace.h, Lane) ----

// Each block sums its 64 inputs into out[0] (should be out[blockIdx.x]).
__global__ void sum_into_one(const float* x, float* out) {
  if (threadIdx.x == 0) {
    float s = 0.f;
    for (int i = 0; i < 64; ++i) s += x[blockIdx.x * 64 + i];
    out[0] = s;
  }
}

// Thread 0 writes a scale to global memory that the block's other threads then read: ordered
// only by the barrier.
__global__ void broadcast_through_global(float* scale, float* out, bool with_barrier) {
  if (threadIdx.x == 0) scale[blockIdx.x] = 2.f;
  if (with_barrier) __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = scale[blockIdx.x];
}

// Every block reads the same weights and adds into one total with atomics: no race.
__global__ void shared_input_atomic_total(const float* w, float* total) {
  atomicAdd(total, w[threadIdx.x]);
}

TEST(EmuLaunchRace, BlocksWritingOneWordAreReported) {
  RaceCheckOn on;
  float* x = device_alloc<float>(128);
  float* out = device_alloc<float>(2);
  launch<fill>(dim3(1), dim3(64), 0, nullptr, x, 1.f, 128);
  launch<sum_into_one>(dim3(2), dim3(32), 0, nullptr, x, out);
  const std::string r = report_of_last_launch();
  EXPECT_NE(r.find("sum_into_one"), std::string::npos) << r;
  EXPECT_NE(r.find("block (1, 0, 0), thread (0, 0, 0): race on global memory within the launch: "
                   "it writes bytes 0-3 of the 8-byte device allocation at "),
            std::string::npos)
      << r;
  EXPECT_NE(r.find("which block (0, 0, 0), thread (0, 0, 0) wrote, and nothing orders them"),
            std::string::npos)
      << r;
}

TEST(EmuLaunchRace, ABarrierOrdersABlocksThreadsThroughGlobalMemory) {
  RaceCheckOn on;
  float* scale = device_alloc<float>(2);
  float* out = device_alloc<float>(128);
  launch<broadcast_through_global>(dim3(2), dim3(64), 0, nullptr, scale, out, true);
  EXPECT_EQ(report_of_last_launch(), "");
  launch<broadcast_through_global>(dim3(2), dim3(64), 0, nullptr, scale, out, false);
  const std::string r = report_of_last_launch();
  // Thread 0 writes the scale first; thread 1 reads it with no barrier between.
  EXPECT_NE(r.find("block (0, 0, 0), thread (1, 0, 0): race on global memory within the launch: "
                   "it reads bytes 0-3 of the 8-byte device allocation at "),
            std::string::npos)
      << r;
  EXPECT_NE(r.find("which block (0, 0, 0), thread (0, 0, 0) wrote"), std::string::npos) << r;
}

TEST(EmuLaunchRace, ReadsFromManyBlocksAndAtomicsAreNotRaces) {
  RaceCheckOn on;
  float* w = device_alloc<float>(64);
  float* total = device_alloc<float>(1);
  launch<fill>(dim3(1), dim3(64), 0, nullptr, w, 1.f, 64);
  ASSERT_EQ(cudaMemset(total, 0, sizeof(float)), cudaSuccess);
  launch<shared_input_atomic_total>(dim3(4), dim3(64), 0, nullptr, w, total);
  EXPECT_EQ(report_of_last_launch(), "");
  EXPECT_EQ(download(total, 1), std::vector<float>{256.f});
}

// ---- bytes in use (streamrace.h, mark_in_use): accesses a GPU would not fault on ----

TEST(EmuBytesInUse, AKernelReadingPastATensorInsideItsCachedBlockIsReported) {
  RaceCheckOn on;
  tessera::cuda::DeviceCachingAllocator& alloc = tessera::cuda::device_allocator();
  // 100 floats in a 512-byte block: a GPU runs the 101st read without a fault.
  auto* x = static_cast<float*>(alloc.allocate_on(kN * sizeof(float), nullptr));
  float* y = device_alloc<float>(kN + 1);
  launch<fill>(dim3(1), dim3(64), 0, nullptr, x, 1.f, kN);
  launch<copy>(dim3(1), dim3(64), 0, nullptr, x, y, kN);
  EXPECT_EQ(report_of_last_launch(), "");  // the tensor's own bytes
  launch<copy>(dim3(1), dim3(64), 0, nullptr, x, y, kN + 1);
  const std::string r = report_of_last_launch();
  // Thread 36 reads element 100 in its second pass.
  EXPECT_NE(r.find("::copy, block (0, 0, 0)"), std::string::npos) << r;
  EXPECT_NE(r.find("block (0, 0, 0), thread (36, 0, 0): invalid memory access: it reads 4 bytes "
                   "at "),
            std::string::npos)
      << r;
  EXPECT_NE(r.find("0 bytes past the 400 bytes in use of a 512-byte block of the caching "
                   "allocator at"),
            std::string::npos)
      << r;
  alloc.release(x, kN * sizeof(float));
}

TEST(EmuBytesInUse, AReadPastACudaMallocSizeInsideItsRoundingIsReported) {
  RaceCheckOn on;
  float* x = device_alloc<float>(kN);  // 400 bytes; the guard page starts at 512
  float* y = device_alloc<float>(kN + 1);
  launch<copy>(dim3(1), dim3(64), 0, nullptr, x, y, kN + 1);
  const std::string r = report_of_last_launch();
  EXPECT_NE(r.find("thread (36, 0, 0): invalid memory access: it reads 4 bytes at"),
            std::string::npos)
      << r;
  EXPECT_NE(r.find("0 bytes past the end of a 400-byte device allocation at"), std::string::npos)
      << r;
}

TEST(EmuBytesInUse, UseOfAReleasedBlockAndCopiesPastTheEndAreReported) {
  RaceCheckOn on;
  tessera::cuda::DeviceCachingAllocator& alloc = tessera::cuda::device_allocator();
  float* y = device_alloc<float>(kN + 1);
  auto* x = static_cast<float*>(alloc.allocate_on(kN * sizeof(float), nullptr));
  (void)cudaMemcpyAsync(y, x, (kN + 1) * sizeof(float), cudaMemcpyDeviceToDevice, nullptr);
  std::string r = report_of_last_launch();
  EXPECT_NE(r.find("cudaMemcpyAsync"), std::string::npos) << r;
  EXPECT_NE(r.find("invalid memory access: it reads 404 bytes at"), std::string::npos) << r;
  EXPECT_NE(r.find("0 bytes past the 400 bytes in use of a 512-byte block"), std::string::npos)
      << r;
  alloc.release(x, kN * sizeof(float));
  launch<copy>(dim3(1), dim3(64), 0, nullptr, x, y, 1);
  r = report_of_last_launch();
  EXPECT_NE(r.find("thread (0, 0, 0): invalid memory access: it reads 4 bytes at"),
            std::string::npos)
      << r;
  EXPECT_NE(r.find("inside a free 512-byte block of the caching allocator"), std::string::npos)
      << r;
}

TEST(EmuBytesInUse, MarksTakeEffectInStreamOrder) {
  RaceCheckOn on;
  tessera::cuda::DeviceCachingAllocator& alloc = tessera::cuda::device_allocator();
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  // The stream is held back until everything below is queued.
  static std::atomic<bool> go{false};
  go = false;
  ASSERT_EQ(cudaLaunchHostFunc(
                s,
                [](void*) {
                  while (!go) std::this_thread::sleep_for(std::chrono::milliseconds(1));
                },
                nullptr),
            cudaSuccess);
  // A 128-float tensor used, released, and its block handed out again for 100 floats on the
  // same stream: the first fill still touches all 128 when it runs, which is correct.
  auto* a = static_cast<float*>(alloc.allocate_on(128 * sizeof(float), s));
  launch<fill>(dim3(1), dim3(64), 0, s, a, 1.f, 128);
  alloc.release(a, 128 * sizeof(float));
  auto* b = static_cast<float*>(alloc.allocate_on(kN * sizeof(float), s));
  ASSERT_EQ(a, b);  // the same block (same stream, same size class)
  launch<fill>(dim3(1), dim3(64), 0, s, b, 2.f, kN);
  go = true;
  EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(report_of_last_launch(), "");
  alloc.release(b, kN * sizeof(float));
  alloc.forget_stream(s);
  ASSERT_EQ(cudaStreamDestroy(s), cudaSuccess);
}

}  // namespace
