// Start-up check that every rank runs the same job: each rank hashes a list of (key, value)
// entries (the resolved config, the model's parameter names and shapes) and the hashes are
// compared. Only when they differ are the full lists exchanged, to name the first key that
// differs and its values on the ranks concerned.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "dist/communicator.h"

namespace tessera::dist {

using Entries = std::vector<std::pair<std::string, std::string>>;

// Throws Error on every rank when the ranks' entries differ, e.g. "ranks disagree on
// train.batch_size: 16 on rank 0, 8 on rank 1". `what` names the entries ("config").
// Collective: every rank of comm calls it.
void check_same_on_all_ranks(Communicator& comm, const Entries& entries, const std::string& what);

}  // namespace tessera::dist
