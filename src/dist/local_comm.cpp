#include "dist/local_comm.h"

#include <cstring>

#include "dist/clock.h"

namespace tessera::dist {
namespace {

class DoneWork final : public Work {
 public:
  DoneWork() : t_(monotonic_seconds()) {}
  void wait() override {}
  bool done() const override { return true; }
  double start_time() const override { return t_; }
  double end_time() const override { return t_; }

 private:
  double t_;
};

WorkHandle done() {
  return std::make_shared<DoneWork>();
}

void check_counts(const char* op, const std::vector<int64_t>& counts, int64_t n) {
  TS_CHECK(counts.size() == 1 && counts[0] == n,
           "{}: counts has {} entries ({} elements on rank 0), expected 1 entry of {} on a "
           "1-rank communicator",
           op, counts.size(), counts.empty() ? 0 : counts[0], n);
}

void copy_if_distinct(const Tensor& in, const Tensor& out) {
  if (in.raw_data() != out.raw_data())
    std::memcpy(out.raw_data(), in.raw_data(), size_t(in.numel()) * sizeof(float));
}

}  // namespace

std::string LocalCommunicator::describe() const {
  return "local (one process)";
}

WorkHandle LocalCommunicator::all_reduce_async(Tensor t, ReduceOp) {
  check_collective_tensor("all_reduce: t", t);
  return done();
}

WorkHandle LocalCommunicator::reduce_scatter_async(Tensor in, Tensor out,
                                                   std::vector<int64_t> counts, ReduceOp) {
  check_collective_tensor("reduce_scatter: in", in);
  check_collective_tensor("reduce_scatter: out", out);
  check_counts("reduce_scatter", counts, in.numel());
  TS_CHECK(out.numel() == in.numel(), "reduce_scatter: out {} for in {}: expected {} elements",
           out.desc(), in.desc(), in.numel());
  copy_if_distinct(in, out);
  return done();
}

WorkHandle LocalCommunicator::all_gather_async(Tensor in, Tensor out, std::vector<int64_t> counts) {
  check_collective_tensor("all_gather: in", in);
  check_collective_tensor("all_gather: out", out);
  check_counts("all_gather", counts, in.numel());
  TS_CHECK(out.numel() == in.numel(), "all_gather: out {} for in {}: expected {} elements",
           out.desc(), in.desc(), in.numel());
  copy_if_distinct(in, out);
  return done();
}

WorkHandle LocalCommunicator::broadcast_async(Tensor t, int root) {
  check_collective_tensor("broadcast: t", t);
  TS_CHECK(root == 0, "broadcast: root {} out of range for a 1-rank communicator", root);
  return done();
}

WorkHandle LocalCommunicator::barrier_async() {
  return done();
}

std::vector<std::string> LocalCommunicator::all_gather_bytes(const std::string& mine) {
  return {mine};
}

std::unique_ptr<Communicator> LocalCommunicator::split(int, int) {
  return std::make_unique<LocalCommunicator>();
}

}  // namespace tessera::dist
