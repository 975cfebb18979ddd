// Gradient buckets: contiguous ranges of the flat gradient buffer, each holding whole
// parameters, formed from the LAST parameter backwards (backward produces gradients roughly in
// reverse order of registration, so bucket 0 is ready first). A BucketScheduler counts the
// gradient-ready hooks autograd fires (Tensor::on_grad_ready: a leaf's gradient is final) and
// starts a bucket's collective the moment its last gradient arrives, while the rest of the
// backward pass is still running.
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "dist/communicator.h"
#include "dist/trace.h"
#include "optim/flat_params.h"

namespace tessera::dist {

struct Bucket {
  int index = 0;
  int64_t begin = 0, end = 0;  // [begin, end) of the flat buffers, trailing padding included
  std::vector<size_t> params;  // indices into the segment list
  int64_t numel() const { return end - begin; }
};

// Buckets of about bucket_mb MiB (a parameter larger than that gets a bucket of its own) that
// tile [0, numel).
std::vector<Bucket> plan_buckets(const std::vector<ParamSegment>& segments, int64_t numel,
                                 double bucket_mb);

class BucketScheduler {
 public:
  // Starts a bucket's collective; called from a gradient-ready hook or from finish().
  using Launch = std::function<WorkHandle(const Bucket&)>;

  // Registers one hook per parameter. Hooks outlive nothing: once the scheduler is destroyed
  // they do nothing.
  BucketScheduler(const std::vector<Tensor>& params, std::vector<Bucket> buckets, Launch launch,
                  Tracer* tracer);
  ~BucketScheduler();

  // On: the coming backward's hooks launch buckets (counts reset). Off: hooks are ignored
  // (earlier micro-batches of an accumulation only accumulate).
  void arm(bool on);
  // Launches buckets no hook launched (unused parameters), in index order, then waits for all.
  void finish();
  const std::vector<Bucket>& buckets() const;
  // How many buckets the hooks (not finish()) launched in the last armed backward.
  int launched_by_hooks() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace tessera::dist
