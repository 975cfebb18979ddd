// Getting NCCL's unique id from rank 0 to every rank. NCCL cannot find its peers by itself:
// rank 0 creates a 128-byte ncclUniqueId (its bootstrap address), every rank must pass the same
// bytes to ncclCommInitRank, and carrying them is the job of a communicator that already works
// (MPI under mpirun / srun, or the LocalCommunicator for one process).
//
// The bytes travel through Communicator::all_gather_bytes, the control plane for small host
// data, rather than a broadcast of an f32 tensor: they are opaque bytes (no reinterpretation as
// floats), and rank 0 can send an error instead of an id, so that a failure to create the id
// (no network interface for NCCL's bootstrap, say) reaches every rank as an Error naming rank 0's
// reason instead of leaving the other ranks waiting. The cost, world_size x 129 bytes once per
// communicator, does not matter.
//
// Nothing here touches a GPU: the exchange is tested without one.
#pragma once
#include <functional>
#include <string>

#include "dist/communicator.h"

namespace tessera::dist {

// sizeof(ncclUniqueId) (NCCL_UNIQUE_ID_BYTES; nccl_comm.cu checks they agree).
constexpr size_t kNcclUniqueIdBytes = 128;

// Collective over `comm` (every rank calls it): rank 0 calls make_id() and every rank returns
// its bytes. make_id must return exactly `id_bytes` bytes; if it throws or returns another size,
// every rank throws an Error carrying rank 0's reason.
std::string exchange_unique_id(Communicator& comm, const std::function<std::string()>& make_id,
                               size_t id_bytes = kNcclUniqueIdBytes);

// ncclGetUniqueId's bytes (needs NCCL's network bootstrap, not a GPU).
std::string new_nccl_unique_id();

}  // namespace tessera::dist
