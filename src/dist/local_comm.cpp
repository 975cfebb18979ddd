#include "dist/local_comm.h"

namespace tessera::dist {
namespace {

// One rank accepts tensors on any device: a collective is a copy or nothing.
void check_tensor(const char* what, const Tensor& t) {
  check_collective_tensor(what, t, /*cpu_only=*/false);
}

// The checks of a one-rank reduce-scatter or all-gather: `out` receives all of `in`.
void check_in_out(const char* op, const Tensor& in, const Tensor& out,
                  const std::vector<int64_t>& counts) {
  const std::string name(op);
  check_tensor((name + ": in").c_str(), in);
  check_tensor((name + ": out").c_str(), out);
  TS_CHECK(counts.size() == 1 && counts[0] == in.numel(),
           "{}: counts has {} entries ({} elements on rank 0), expected 1 entry of {} on a "
           "1-rank communicator",
           op, counts.size(), counts.empty() ? 0 : counts[0], in.numel());
  TS_CHECK(out.numel() == in.numel(), "{}: out {} for in {}: expected {} elements", op, out.desc(),
           in.desc(), in.numel());
  TS_CHECK(out.device() == in.device(), "{}: out {} is on {}, in {} on {}: expected one device", op,
           out.desc(), out.device().str(), in.desc(), in.device().str());
}

// out <- in as flat element ranges on their device (a memcpy on the CPU, a copy queued on the
// current stream on a GPU); nothing to do when they are the same elements (in place).
void copy_if_distinct(const Tensor& in, const Tensor& out) {
  if (in.numel() == 0 || in.raw_data() == out.raw_data()) return;
  const Shape flat{in.numel()};
  out.view(flat).copy_from(in.view(flat));
}

// Point-to-point on one rank: there is no other rank to talk to.
[[noreturn]] void no_peer(const char* op, const Tensor& t, int peer) {
  fail(
      "{}(peer {}) of {}: the local communicator has one rank (rank 0), which has no peer; "
      "point-to-point transfers need several ranks (mpirun, or a GPU job's NCCL communicator)",
      op, peer, t.defined() ? t.desc() : std::string("an undefined tensor"));
}

}  // namespace

std::string LocalCommunicator::describe() const {
  return "local (one process)";
}

WorkHandle LocalCommunicator::all_reduce_async(Tensor t, ReduceOp) {
  check_tensor("all_reduce: t", t);
  return completed_work();
}

WorkHandle LocalCommunicator::reduce_scatter_async(Tensor in, Tensor out,
                                                   std::vector<int64_t> counts, ReduceOp) {
  check_in_out("reduce_scatter", in, out, counts);
  copy_if_distinct(in, out);
  return completed_work();
}

WorkHandle LocalCommunicator::all_gather_async(Tensor in, Tensor out, std::vector<int64_t> counts) {
  check_in_out("all_gather", in, out, counts);
  copy_if_distinct(in, out);
  return completed_work();
}

WorkHandle LocalCommunicator::broadcast_async(Tensor t, int root) {
  check_tensor("broadcast: t", t);
  TS_CHECK(root == 0, "broadcast: root {} out of range for a 1-rank communicator", root);
  return completed_work();
}

WorkHandle LocalCommunicator::barrier_async() {
  return completed_work();
}

WorkHandle LocalCommunicator::send_async(Tensor t, int peer) {
  no_peer("send", t, peer);
}

WorkHandle LocalCommunicator::recv_async(Tensor t, int peer) {
  no_peer("recv", t, peer);
}

std::vector<std::string> LocalCommunicator::all_gather_bytes(const std::string& mine) {
  return {mine};
}

std::unique_ptr<Communicator> LocalCommunicator::split(int, int) {
  return std::make_unique<LocalCommunicator>();
}

}  // namespace tessera::dist
