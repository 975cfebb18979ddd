// What an MPI rank's heartbeat carries (mpi_comm.cpp), as three 64-bit integers: how many
// operations its callers have submitted, whether one of them waits on communication now, and
// its oldest unfinished operation (its index in the rank's submission order, its kind, and the
// peer of a send or recv). With these a rank can tell a peer that is dead (no beats), stuck
// outside communication (alive, not waiting, submitting nothing) and a deadlock (every rank
// waiting, none submitting: collectives called in different orders, a recv without its send),
// and name what each rank waits in.
#pragma once
#include <array>
#include <string>
#include <string_view>

namespace tessera::dist {

enum class OpKind : int {
  none,  // nothing unfinished
  all_reduce,
  reduce_scatter,
  all_gather,
  broadcast,
  barrier,
  send,
  recv,
  all_gather_bytes,
  other,
};

// The kind named by an operation's description's first word ("recv of f32[4] from rank 0").
OpKind op_kind_of(std::string_view what);

struct Beat {
  long long submitted = 0;
  bool waiting = false;
  long long oldest_index = -1;  // -1: nothing unfinished
  OpKind oldest_kind = OpKind::none;
  int oldest_peer = -1;  // send and recv only

  using Wire = std::array<long long, 3>;
  Wire encode() const;
  static Beat decode(const Wire& w);  // out-of-range fields read as other / -1

  // "#12 recv from rank 0", "#3 barrier", "nothing unfinished"
  std::string oldest() const;
};

}  // namespace tessera::dist
