#include "plan/meta_run.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

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

// The config as a plan runs it.
train::Config meta_config(const train::Config& cfg, int64_t steps) {
  train::Config c = cfg;
  c.train.device = "meta";
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

}  // namespace

RankRun run_rank_on_meta(const train::Config& cfg, int rank, int world, meta::AllocatorModel model,
                         int64_t steps) {
  TS_CHECK(steps >= 2, "plan: run_rank_on_meta needs 2 steps or more, got {}", steps);
  const train::Config c = meta_config(cfg, steps);
  meta::reset_allocator(model);
  meta::Trace trace;
  RankRun out;
  {
    ScratchFolder folder;
    std::unique_ptr<FILE, int (*)(FILE*)> devnull(std::fopen("/dev/null", "w"), &std::fclose);
    train::RunOptions opt;
    opt.out_dir = folder.path();
    opt.plot = false;
    opt.console = devnull.get();
    opt.comm = std::make_shared<dist::MetaCommunicator>(rank, world);
    opt.on_step = [](int64_t step, double, dist::DataParallel&) {
      meta::record_mark(step_mark(step));
    };
    meta::TraceScope scope(trace);
    out.summary = train::run_training(c, opt);
    out.persistent = out.summary.memory;
  }
  out.rank = rank;
  const int per_stage = world / int(cfg.parallel.pp);
  out.pp_stage = rank / per_stage;
  out.memory = meta_allocator().stats();
  out.step = between_marks(trace.events(), step_mark(steps - 1), step_mark(steps));
  return out;
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
