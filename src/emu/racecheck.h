// Shared-memory race detection on the emulated device (TESSERA_EMU_RACECHECK=1; docs/CUDA.md).
//
// Code that holds kernels is compiled with ThreadSanitizer's instrumentation, a call before
// every load and store (cmake/cuda_emulation.cmake), and racecheck.cpp defines those calls. While
// a block runs with the check on, every byte of its shared memory (the dynamic buffer and the
// static __shared__ variables) remembers which thread last wrote it and which read it since the
// last __syncthreads. A thread that touches a byte another thread wrote, or writes one another
// read, with no barrier in between (a __syncthreads, or a __syncwarp when both are in one warp)
// is a race: a GPU may run the two in either order. The first race of a block
// fails the launch with a report naming the kernel, the block, both threads, the variable or
// offset, and the instruction. Atomics are not races. With the check off the calls return at
// once.
//
// The executor (launch.cpp) drives it from the stream thread that runs the block. The same
// hooks feed the check for races between streams on device memory (streamrace.h).
#pragma once
#include <cstddef>
#include <string>

#include "emu/runtime.h"

namespace tessera::emu::racecheck {

// TESSERA_EMU_RACECHECK=1 (read once), or what set_enabled last said. Read when a grid starts
// running on its stream: a test that turns it on or off synchronises around its launches.
bool enabled();
void set_enabled(bool on);

// Before a grid's first block: the dynamic shared memory its blocks use, the block's shape and
// the kernel's name (for reports).
void begin_grid(const void* dynamic_base, size_t dynamic_bytes, dim3 block);
// A new block starts, or the block's threads all passed __syncthreads: every earlier access is
// ordered before every later one.
void block_barrier();
// The threads of warp `warp` (linear thread ids 32 * warp ...) all passed __syncwarp. (A
// shuffle or vote synchronises the warp's execution but, in CUDA's memory model, orders no
// memory: the executor does not call this for them.)
void warp_barrier(unsigned warp);
// The thread (linear id in the block) about to run.
void set_thread(unsigned linear);
// After the grid's last block (or its fault): the instrumentation goes quiet on this thread.
void end_grid();
// The first race found since begin_grid ("" when none); cleared by the call.
std::string take_report();

}  // namespace tessera::emu::racecheck
