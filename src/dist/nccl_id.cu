#include "dist/nccl_id.h"

#include <nccl.h>

#include "core/error.h"
#include "cuda/cuda_check.h"

namespace tessera::dist {
namespace {

// Rank 0's message: a tag byte, then the id or the reason it has none.
constexpr char kTagId = 'I';
constexpr char kTagError = 'E';

std::string root_payload(const std::function<std::string()>& make_id, size_t id_bytes) {
  try {
    std::string id = make_id();
    if (id.size() != id_bytes)
      return kTagError +
             fmt::format("the new unique id has {} bytes, expected {}", id.size(), id_bytes);
    return kTagId + id;
  } catch (const std::exception& e) {
    return kTagError + std::string(e.what());
  }
}

}  // namespace

std::string exchange_unique_id(Communicator& comm, const std::function<std::string()>& make_id,
                               size_t id_bytes) {
  const std::string mine = comm.rank() == 0 ? root_payload(make_id, id_bytes) : std::string();
  const std::vector<std::string> all = comm.all_gather_bytes(mine);
  TS_CHECK(!all.empty(), "nccl: unique id exchange over {}: no ranks answered", comm.backend());
  const std::string& root = all[0];
  TS_CHECK(!root.empty(), "nccl: unique id exchange over {}: rank 0 sent nothing", comm.backend());
  if (root[0] == kTagError)
    fail("nccl: rank 0 could not create the NCCL unique id (exchanged over {}): {}", comm.backend(),
         root.substr(1));
  TS_CHECK(root[0] == kTagId && root.size() == id_bytes + 1,
           "nccl: unique id exchange over {}: rank 0 sent {} bytes with tag {}, expected the tag "
           "'{}' and {} id bytes",
           comm.backend(), root.size(), int(root[0]), kTagId, id_bytes);
  return root.substr(1);
}

std::string new_nccl_unique_id() {
  static_assert(sizeof(ncclUniqueId) == kNcclUniqueIdBytes, "NCCL's unique id changed size");
  ncclUniqueId id{};
  NCCL_CHECK(ncclGetUniqueId(&id));
  return std::string(id.internal, sizeof id.internal);
}

}  // namespace tessera::dist
