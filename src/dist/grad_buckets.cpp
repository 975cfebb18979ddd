#include "dist/grad_buckets.h"

#include "dist/clock.h"

namespace tessera::dist {

std::vector<Bucket> plan_buckets(const std::vector<ParamSegment>& segs, int64_t numel,
                                 double bucket_mb) {
  TS_CHECK(bucket_mb > 0, "plan_buckets: bucket_mb {} must be > 0", bucket_mb);
  TS_CHECK(!segs.empty(), "plan_buckets: no parameters");
  const int64_t cap = std::max<int64_t>(1, int64_t(bucket_mb * 1024 * 1024 / sizeof(float)));
  auto seg_end = [&](size_t i) { return i + 1 < segs.size() ? segs[i + 1].offset : numel; };
  std::vector<Bucket> out;
  Bucket cur;
  for (size_t k = segs.size(); k-- > 0;) {
    if (cur.params.empty()) cur.end = seg_end(k);
    cur.params.push_back(k);
    cur.begin = segs[k].offset;
    if (cur.numel() >= cap || k == 0) {
      cur.index = int(out.size());
      out.push_back(std::move(cur));
      cur = Bucket();
    }
  }
  return out;
}

struct BucketScheduler::State {
  std::vector<Bucket> buckets;
  std::vector<int> bucket_of;    // parameter -> bucket
  std::vector<int> pending;      // per bucket: gradients still to come
  std::vector<char> seen;        // per parameter: hook fired in this backward
  std::vector<WorkHandle> work;  // per bucket, while in flight
  Launch launch;
  Tracer* tracer = nullptr;
  bool armed = false;
  int by_hooks = 0;

  void start(int b) { work[size_t(b)] = launch(buckets[size_t(b)]); }
  void ready(size_t param) {
    if (!armed || seen[param]) return;
    seen[param] = 1;
    const int b = bucket_of[param];
    if (--pending[size_t(b)] == 0) {
      start(b);
      ++by_hooks;
    }
  }
};

BucketScheduler::BucketScheduler(const std::vector<Tensor>& params, std::vector<Bucket> buckets,
                                 Launch launch, Tracer* tracer)
    : state_(std::make_shared<State>()) {
  State& s = *state_;
  s.buckets = std::move(buckets);
  s.launch = std::move(launch);
  s.tracer = tracer;
  s.bucket_of.assign(params.size(), -1);
  for (const Bucket& b : s.buckets)
    for (size_t p : b.params) s.bucket_of.at(p) = b.index;
  for (size_t p = 0; p < params.size(); ++p)
    TS_CHECK(s.bucket_of[p] >= 0, "BucketScheduler: parameter #{} is in no bucket", p);
  s.pending.assign(s.buckets.size(), 0);
  s.seen.assign(params.size(), 0);
  s.work.resize(s.buckets.size());
  std::weak_ptr<State> weak = state_;
  for (size_t p = 0; p < params.size(); ++p) {
    Tensor t = params[p];
    t.on_grad_ready([weak, p](Tensor&) {
      if (auto st = weak.lock()) st->ready(p);
    });
  }
  if (tracer)
    for (const Bucket& b : s.buckets)
      tracer->name_track(1 + b.index, fmt::format("bucket {} ({:.2f} MB, {} tensors)", b.index,
                                                  double(b.numel()) * 4 / 1e6, b.params.size()));
}

BucketScheduler::~BucketScheduler() = default;

void BucketScheduler::arm(bool on) {
  State& s = *state_;
  s.armed = on;
  if (!on) return;
  for (const Bucket& b : s.buckets) s.pending[size_t(b.index)] = int(b.params.size());
  std::fill(s.seen.begin(), s.seen.end(), 0);
  s.by_hooks = 0;
}

void BucketScheduler::finish() {
  State& s = *state_;
  if (!s.armed) return;
  s.armed = false;
  for (const Bucket& b : s.buckets)
    if (!s.work[size_t(b.index)]) s.start(b.index);
  {
    ScopedSpan wait(s.tracer, "wait for gradients", SpanKind::wait);
    for (WorkHandle& w : s.work) w->wait();
  }
  for (const Bucket& b : s.buckets) {
    WorkHandle& w = s.work[size_t(b.index)];
    if (s.tracer)
      s.tracer->add({fmt::format("bucket {}", b.index), SpanKind::comm, 1 + b.index,
                     w->start_time(), w->end_time(), s.tracer->step()});
    w.reset();
  }
}

const std::vector<Bucket>& BucketScheduler::buckets() const {
  return state_->buckets;
}

int BucketScheduler::launched_by_hooks() const {
  return state_->by_hooks;
}

}  // namespace tessera::dist
