#include "plan/meta_run.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "core/error.h"
#include "core/rng.h"
#include "dist/meta_comm.h"
#include "train/model_kinds.h"
#include "train/trainer.h"

namespace tessera::plan {
namespace {

// A scratch run folder (the trainer writes its config and metrics there), removed afterwards.
class ScratchFolder {
 public:
  ScratchFolder() {
    std::string pattern = (std::filesystem::temp_directory_path() / "tessera-plan-XXXXXX").string();
    TS_CHECK(mkdtemp(pattern.data()) != nullptr, "plan: cannot create a scratch folder in {}",
             std::filesystem::temp_directory_path().string());
    path_ = pattern;
  }
  ~ScratchFolder() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string step_mark(int64_t step) {
  return "step " + std::to_string(step);
}

// The timed kernels between two marks: each lasts until the next event (the closing mark for
// the last one); `seconds` is from mark to mark.
TimedStep timed_step(const std::vector<meta::Event>& all, const std::string& from,
                     const std::string& to) {
  TimedStep out;
  double begin = -1, last = -1;
  const meta::KernelCost* open = nullptr;
  for (const meta::Event& e : all) {
    if (begin < 0) {
      if (e.kind == meta::EventKind::mark && e.mark == from) begin = last = e.seconds;
      continue;
    }
    if (open)
      out.kernels.push_back({*open, e.seconds - last});
    else
      out.before_first_kernel += e.seconds - last;
    open = e.kind == meta::EventKind::kernel ? &e.kernel : nullptr;
    last = e.seconds;
    if (e.kind == meta::EventKind::mark && e.mark == to) {
      out.seconds = e.seconds - begin;
      return out;
    }
  }
  fail("internal error: plan: the trace has no mark '{}' after '{}'", to, from);
}

// Kernel by kernel the shorter time of two runs of the same step (what the machine can do; a
// longer one met other work); `a` alone when the steps ran different kernels.
TimedStep faster_of(TimedStep a, const TimedStep& b) {
  if (a.kernels.size() != b.kernels.size()) return a;
  for (size_t i = 0; i < a.kernels.size(); ++i)
    if (std::string_view(a.kernels[i].cost.name) != b.kernels[i].cost.name) return a;
  double total = a.before_first_kernel = std::min(a.before_first_kernel, b.before_first_kernel);
  for (size_t i = 0; i < a.kernels.size(); ++i) {
    a.kernels[i].seconds = std::min(a.kernels[i].seconds, b.kernels[i].seconds);
    total += a.kernels[i].seconds;
  }
  a.seconds = total;
  return a;
}

// The events after `from`'s mark up to `to`'s.
std::vector<meta::Event> between_marks(const std::vector<meta::Event>& all, const std::string& from,
                                       const std::string& to) {
  std::vector<meta::Event> out;
  bool in = false;
  for (const meta::Event& e : all) {
    if (e.kind == meta::EventKind::mark) {
      if (e.mark == from) in = true;
      if (e.mark == to) return out;
      continue;
    }
    if (in) out.push_back(e);
  }
  fail("internal error: plan: the trace has no mark '{}' after '{}'", to, from);
}

}  // namespace

train::Config planned_config(const train::Config& cfg, int64_t steps, const std::string& device) {
  train::Config c = cfg;
  c.train.device = device;
  c.train.steps = steps;
  c.train.eval_every = 0;
  c.train.sample_every = 0;
  c.train.checkpoint_every = 0;
  c.train.log_every = steps;
  c.optim.warmup_steps = 0;  // the schedule changes no shape or time; `steps` could not hold it
  c.model.init_weights.clear();
  if (train::model_kind(c.model.kind).language_model) {
    c.data.kind = "random";
    c.data.val_path.clear();
    c.data.tokenizer.clear();
  }
  return c;
}

namespace {

// Runs `c` with a scratch run folder, no console output, `comm` (null: the trainer's own), and
// a mark recorded into the active trace after each step.
train::RunSummary run_marked(const train::Config& c, std::shared_ptr<dist::Communicator> comm) {
  ScratchFolder folder;
  std::unique_ptr<FILE, int (*)(FILE*)> devnull(std::fopen("/dev/null", "w"), &std::fclose);
  train::RunOptions opt;
  opt.out_dir = folder.path();
  opt.plot = false;
  opt.console = devnull.get();
  opt.evaluate = false;
  opt.comm = std::move(comm);
  opt.on_step = [](int64_t step, double, dist::DataParallel&) {
    meta::record_mark(step_mark(step));
  };
  return train::run_training(c, opt);
}

}  // namespace

RankRun run_rank_on_meta(const train::Config& cfg, int rank, int world, meta::AllocatorModel model,
                         int64_t steps) {
  TS_CHECK(steps >= 2, "plan: run_rank_on_meta needs 2 steps or more, got {}", steps);
  const train::Config c = planned_config(cfg, steps, "meta");
  meta::reset_allocator(model);
  meta::Trace trace;
  RankRun out;
  {
    meta::TraceScope scope(trace);
    out.summary = run_marked(c, std::make_shared<dist::MetaCommunicator>(rank, world));
    out.persistent = out.summary.memory;
  }
  out.rank = rank;
  const int per_stage = world / int(cfg.parallel.pp);
  out.pp_stage = rank / per_stage;
  out.memory = meta_allocator().stats();
  out.step = between_marks(trace.events(), step_mark(steps - 1), step_mark(steps));
  return out;
}

void run_untimed_on_this_cpu(const train::Config& cfg, int64_t steps) {
  run_marked(planned_config(cfg, steps, "cpu"), nullptr);
}

TimedStep run_on_this_cpu(const train::Config& cfg, int64_t steps) {
  TS_CHECK(steps >= 2, "plan: run_on_this_cpu needs 2 steps or more, got {}", steps);
  const int64_t layout = cfg.parallel.tp * cfg.parallel.pp * cfg.parallel.cp;
  TS_CHECK(layout == 1, "plan: run_on_this_cpu runs one rank; the config's layout needs {}",
           layout);
  meta::Trace trace(/*timed=*/true);
  {
    meta::TraceScope scope(trace);
    run_marked(planned_config(cfg, steps, "cpu"), nullptr);
  }
  const std::vector<meta::Event> events = trace.events();
  TimedStep best = timed_step(events, step_mark(steps - 1), step_mark(steps));
  for (int64_t s = 1; s < steps - 1; ++s)  // step 0 builds primitives and touches pages
    best = faster_of(best, timed_step(events, step_mark(s), step_mark(s + 1)));
  return best;
}

std::vector<int> representative_ranks(const train::Config& cfg, int world) {
  const int pp = int(cfg.parallel.pp);
  TS_CHECK(pp >= 1 && world % pp == 0, "config: parallel.pp = {} does not divide {} ranks", pp,
           world);
  std::vector<int> ranks;
  for (int s = 0; s < pp; ++s) ranks.push_back(s * (world / pp));
  return ranks;
}

double model_flops_per_step(const train::Config& cfg) {
  if (!train::model_kind(cfg.model.kind).language_model) return 0;
  meta::BuildOnMeta on_meta;
  Generator g(uint64_t(cfg.train.seed));
  const std::unique_ptr<nn::Decoder> d = train::make_decoder(cfg, g);
  return nn::decoder_flops_per_token(d->decoder_config(), cfg.train.seq_len) *
         double(cfg.train.batch_size) * double(cfg.train.seq_len);
}

}  // namespace tessera::plan
