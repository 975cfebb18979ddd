// Device and pinned host memory of the emulated device (memory.cpp; internal to src/emu).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "emu/device.h"

struct CUstream_st;

namespace tessera::emu {

cudaError_t device_malloc(void** out, size_t bytes);
cudaError_t device_free(void* p);  // the caller has waited for the device
cudaError_t pinned_malloc(void** out, size_t bytes);
cudaError_t pinned_free(void* p);
// [p, p + bytes) lies inside one pinned block.
bool is_pinned(const void* p, size_t bytes);

// Unsynchronised host access to pinned memory. A pinned block is mapped twice: the host's view
// (the pointer cudaHostAlloc returns) and the streams' view of the same pages. While a queued
// copy uses a block and the host has not yet seen that copy complete (a synchronisation, or a
// query that found it done), the host's view is closed: to every access if the copy writes the
// block, to writes if it reads it. A host access then faults, and the fault handler
// (launch.cpp) reports it with describe_pinned_fault, where a GPU would silently give the host
// stale data (or send the copy new data). Granularity: a whole pinned allocation.
//
// The view a stream task uses for p (p itself when p is not pinned memory).
void* stream_view(const void* p);
// The copy `what`, queued on `s` as its task `pos`, reads (device_writes false) or writes the
// pinned block holding p.
void pinned_in_use(const void* p, bool device_writes, CUstream_st* s, uint64_t pos,
                   const std::string& what);
// The host has seen `s` complete its first `pos` tasks.
void pinned_observed(CUstream_st* s, uint64_t pos);
// Why a host access to p faulted, when p lies in a pinned block closed for it ("" otherwise).
// Takes no lock it might find held, like describe_address.
std::string describe_pinned_fault(const void* p, bool write);

}  // namespace tessera::emu
