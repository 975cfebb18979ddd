// Races between streams on device memory (part of TESSERA_EMU_RACECHECK=1; docs/CUDA.md).
//
// CUDA orders work on two streams only through events (cudaEventRecord + cudaStreamWaitEvent),
// the legacy default stream's implicit waits, and the host: work queued after the host has
// synchronised with a stream comes after that stream's work. Every stream task gets a vector
// clock when it is queued (what of each stream it comes after, through those three), and every
// 4-byte word of device memory remembers the last task that wrote it and a task that read it
// since. A task touching a word that a task of another stream wrote, or writing one that
// another stream read, when neither comes after the other, is a race: a GPU may run the two in
// either order. (A delay that makes the race give wrong numbers, TESSERA_EMU_STREAM_DELAY_US,
// shows it only when the timing falls that way; this finds it whatever the timing.)
//
// Kernels' loads and stores arrive through the instrumentation hooks (racecheck.cpp); the
// emulator's own copies, memsets, cuBLASLt and NCCL calls report what they touch through
// `access`. The first race is reported as the sticky error of the task that found it, naming
// both tasks, both streams and the word. One reader is kept per word (the earliest that the
// later readers do not come after), so a race can be missed, never invented; streams writing
// different bytes of one word are reported although a GPU would not mix them up.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "emu/runtime.h"  // dim3

struct CUstream_st;

namespace tessera::emu::streamrace {

// A queued task's place in the happens-before order (opaque outside streamrace.cpp).
struct Clock;

// A task was queued on `s` at position `pos` (1-based), after the tasks `deps` name (stream,
// number of its tasks). Returns the task's clock, or null while the check is off.
struct After {
  CUstream_st* stream;
  uint64_t pos;
};
std::shared_ptr<const Clock> queued(CUstream_st* s, uint64_t pos, const std::vector<After>& deps,
                                    const std::string& what);
// The host has seen `s` complete its first `pos` tasks: work it queues from now on comes after
// them.
void host_observed(CUstream_st* s, uint64_t pos);

// The stream thread runs the task with this clock (null: unchecked) / has finished it;
// end_task returns the task's first race ("" when none).
void begin_task(const Clock* clock);
std::string end_task();

// A kernel thread's place in its launch, for races between the threads of one launch: threads
// of different blocks are never ordered (no grid-wide barrier is used), threads of one block are
// ordered by a __syncthreads between them (a new `epoch`), lanes of one warp also by __syncwarp
// (a new `warp_epoch`).
struct Lane {
  uint64_t block = 0;  // linear index in the grid
  uint32_t thread = 0, epoch = 0, warp_epoch = 0;
  dim3 grid{1, 1, 1}, block_dim{1, 1, 1};  // to name them in a report
};

// "x, y, z" of the block or thread with this linear index in a grid or block of shape d.
std::string index_name(uint64_t linear, dim3 d);

// The running task reads or writes [p, p + bytes); memory outside device allocations is
// ignored. Cheap when no checked task runs on this thread. Also checks that every byte is in
// use (see mark_in_use): one that is not is an invalid access. A kernel's access comes with its
// `lane`, and is also checked against the launch's other threads; what a kernel's access finds
// is described into *kernel_report (the caller names the thread), anything else is reported
// as the task's fault.
void access(const void* p, size_t bytes, bool write, std::string* kernel_report = nullptr,
            const Lane* lane = nullptr);

// Bytes in use. A GPU faults only past the end of an allocation's pages, and a caching
// allocator hands out blocks rounded up to its size classes, so an access a little past a
// tensor's end goes unseen there (and reads another tensor's data once the block is reused).
// Here every watched allocation knows which bytes are in use: those cudaMalloc was asked for,
// less what a caching allocator says a block does not use. The running task (on the block's
// stream, in order) marks the block [p, p + capacity) as having its first `used` bytes in use
// (0: a free block, so a use after release is caught too).
void mark_in_use(const void* p, size_t capacity, size_t used);

// Device allocations (memory.cpp): watched from cudaMalloc while the check is on; forgotten at
// cudaFree (accesses after it fault anyway) and released when the mapping is unmapped.
void allocated(const void* user, size_t bytes);
void freed(const void* user);
void unmapped(const void* user);

}  // namespace tessera::emu::streamrace
