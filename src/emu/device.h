// What the parts of the emulated device share (not part of the CUDA API): queuing work on a
// stream, checking device pointers, raising a device fault, counting host waits. Used by the
// runtime (runtime.cpp), the kernel executor (launch.cpp) and the emulated libraries
// (cublaslt.cpp, nccl.cpp).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>

#include "emu/runtime.h"

namespace tessera::emu {

// A failure of device work (out of bounds, bad argument found while running, a trap). Thrown
// inside a stream task; the stream catches it, prints `what()` to stderr and makes the error
// sticky (every later runtime call answers `code`, cudaGetErrorString gives the report).
class DeviceFault : public std::runtime_error {
 public:
  DeviceFault(cudaError_t code, const std::string& report)
      : std::runtime_error(report), code_(code) {}
  cudaError_t code() const { return code_; }

 private:
  cudaError_t code_;
};

// Runs `task` on stream `s` (nullptr: the legacy default stream) after everything enqueued on it
// before, on that stream's host thread. `what` names the work in fault reports ("kernel
// add_kernel", "cublasLtMatmul", "ncclAllReduce"). Returns at once.
void enqueue(cudaStream_t s, std::string what, std::function<void()> task);

// Blocks the host until all work on `s` is done; counted as a host wait.
void wait_stream(cudaStream_t s);

// The name of the work the calling stream thread is running ("" on other threads).
const std::string& current_work();

enum class Access { read, write };
// Throws DeviceFault(cudaErrorIllegalAddress) unless [p, p + bytes) lies inside one live
// device allocation; the message names `what`, the address, and the allocation it is nearest
// to (or that it was freed). bytes == 0 always passes.
void check_device_range(const void* p, size_t bytes, Access access, const std::string& what);
// True when p points into a live device allocation (cudaMalloc).
bool is_device_pointer(const void* p);
// A caching allocator's block [p, p + capacity) (inside one cudaMalloc allocation) has its first
// `used` bytes in use (0: the block is free), from this point in stream `s`'s order on. With
// TESSERA_EMU_RACECHECK=1 a kernel, copy or library call touching the rest fails with an
// invalid memory access naming the block (streamrace.h, mark_in_use); otherwise nothing.
void mark_block_use(void* p, size_t capacity, size_t used, cudaStream_t s);

// Host waits since the process started: the synchronising calls (cudaStreamSynchronize,
// cudaEventSynchronize, cudaDeviceSynchronize, synchronous copies and memsets, cudaFree) made
// while the stream had work the host had not yet seen complete: the points where the host
// blocks and, on a GPU, the device runs dry behind it. A second synchronisation with nothing
// queued in between is not counted again.
uint64_t host_waits();
void count_host_wait();

// The sticky error (cudaSuccess when none) and its report; reset_device() clears both (tests
// that break a kernel on purpose call it afterwards, as a process would after cudaDeviceReset).
cudaError_t sticky_error();
std::string sticky_report();
void reset_device();

// For the kernel executor: the error cudaGetLastError will return (a bad launch
// configuration), the dynamic shared memory a kernel may use (cudaFuncSetAttribute), and a
// description of a faulting address ("12 bytes past the end of a 4096-byte device allocation at
// 0x...", "inside a device allocation of 512 bytes freed earlier"); empty when the address is
// not near device memory. describe_address takes no lock it might find held, so that the fault
// handler can call it.
void set_last_error(cudaError_t err);
// Installs the handler that reports faults (launch.cpp): invalid accesses in kernels, and the
// host's unsynchronised accesses to pinned memory (memory.h). Idempotent.
void install_fault_handler();
size_t kernel_shared_limit(const void* kernel);
std::string describe_address(const void* p);

// The emulated device's limits (an H200's, so that launch checks match the hardware's).
constexpr int kSmCount = 132;
constexpr int kMaxThreadsPerBlock = 1024;
constexpr size_t kDefaultSharedBytes = 48 * 1024;
constexpr size_t kOptinSharedBytes = 227 * 1024;

}  // namespace tessera::emu
