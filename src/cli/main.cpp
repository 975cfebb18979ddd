// The `tessera` command: train, plan, eval, generate, plot, supervise, tokenizer, prepare.
#include <omp.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <thread>

#include "autograd/grad_mode.h"
#include "ckpt/signals.h"
#include "ckpt/supervisor.h"
#include "core/error.h"
#include "core/file_system.h"
#include "dist/bootstrap.h"
#include "dist/mpi_comm.h"
#include "dist/world.h"
#include "nn/weights.h"
#include "plan/cluster.h"
#include "plan/fit_check.h"
#include "plan/planner.h"
#include "plan/search.h"
#include "tokenizer/commands.h"
#include "tokenizer/prepare.h"
#include "tokenizer/tokenizer.h"
#include "train/config.h"
#include "train/fault_stall.h"
#include "train/generate.h"
#include "train/model_kinds.h"
#include "train/plot.h"
#include "train/task.h"
#include "train/trainer.h"

namespace fs = std::filesystem;
using namespace tessera;

namespace {

// "configs/gpt_kjv.toml" -> "runs/gpt_kjv"
std::string default_run_dir(const std::string& config_path) {
  return (fs::path("runs") / fs::path(config_path).stem()).string();
}

// Exit status: 0 done; ckpt::kInterruptedExitCode (75) stopped by SIGTERM / SIGINT after saving
// a checkpoint (resume with --resume latest); 2 error.
// TESSERA_FAULT_FS=enospc[:BYTES[:SECONDS]]: the disk fills up after BYTES more bytes (0 when
// omitted) are written through the checkpoint file system, and has room again SECONDS later
// (never, when omitted). For fault-injection runs (tests/mpi/soak_tests.sh). Returns the file
// system to install, or null. The value's grammar: parse_fault_fs_setting (core/file_system.h).
std::unique_ptr<FileSystem> fault_file_system_from_env() {
  const char* v = std::getenv("TESSERA_FAULT_FS");
  const std::optional<FillingDiskSetting> s = parse_fault_fs_setting(v ? v : "");
  if (!s) return nullptr;
  std::cerr << "tessera: TESSERA_FAULT_FS=" << v << ": the disk fills up after " << s->free_bytes
            << " more bytes\n";
  return filling_file_system(s->free_bytes, s->full_for_s);
}

// TESSERA_FAULT_STALL=RANK:STEP:SECONDS (train/fault_stall.h): the step callback that stalls
// this rank, or null when the variable is unset or names another rank.
train::StepCallback stall_from_env() {
  const char* v = std::getenv("TESSERA_FAULT_STALL");
  const std::optional<train::FaultStall> f = train::parse_fault_stall(v ? v : "");
  if (!f || dist::detect_launch().rank != f->rank) return nullptr;
  return [f = *f](int64_t s, double, dist::DataParallel&) {
    if (s != f.step) return;
    std::fprintf(stderr,
                 "tessera: TESSERA_FAULT_STALL: rank %d stalls for %lld s after step %lld\n",
                 f.rank, static_cast<long long>(f.seconds), static_cast<long long>(s));
    std::this_thread::sleep_for(std::chrono::seconds(f.seconds));
  };
}

// A run the planner predicts not to fit its ranks' memory is refused before its model is built
// (plan/fit_check.h), naming the overrides that would make it fit: the trainer asks on every
// rank with that rank's memory and gathers the verdicts.
std::string planned_fit(const train::Config& cfg, int world, double capacity,
                        const std::string& capacity_text) {
  const plan::FitCheck f = plan::check_fit(cfg, world, capacity, capacity_text);
  return f.fits ? std::string() : f.message;
}

// `tessera train`'s flags.
struct TrainFlags {
  bool no_plot = false, no_fit_check = false, profile = false;
};

int cmd_train(const std::string& config, const std::vector<std::string>& overrides, std::string out,
              const std::string& resume, const TrainFlags& flags) {
  train::Config cfg = train::load_config(config, overrides);
  train::RunOptions opt;
  opt.out_dir = out.empty() ? default_run_dir(config) : out;
  opt.plot = !flags.no_plot;
  opt.profile = flags.profile;
  if (!flags.no_fit_check) opt.fit_check = planned_fit;
  opt.resume = resume;
  opt.handle_signals = true;
  opt.on_step = stall_from_env();
  const train::RunSummary s = train::run_training(cfg, opt);
  return s.interrupted ? ckpt::kInterruptedExitCode : 0;
}

// `tessera plan`: the report, or its JSON; exit status 1 when the run would not fit. --search:
// the layouts that fit, fastest first; exit status 1 when none does.
int cmd_plan(const std::string& config, const std::vector<std::string>& overrides,
             const std::string& cluster_name, int ranks, bool json, bool search, int top) {
  train::Config cfg = train::load_config(config, overrides);
  // A local plan is calibrated with the threads the run will use.
  if (cfg.train.threads > 0) omp_set_num_threads(int(cfg.train.threads));
  const plan::ClusterSpec cluster = plan::parse_cluster(cluster_name);
  if (search) {
    const plan::SearchResult r = plan::search_layouts(cfg, cluster, ranks, {.top = top});
    if (json)
      std::cout << plan::search_json(r).dump(2) << "\n";
    else
      std::cout << plan::format_search(r);
    return r.best.empty() ? 1 : 0;
  }
  const plan::Plan p = plan::make_plan(cfg, cluster, ranks);
  if (json)
    std::cout << plan::plan_json(p).dump(2) << "\n";
  else
    std::cout << plan::format_plan(p);
  return p.fits() ? 0 : 1;
}

int cmd_eval(const std::string& config, const std::vector<std::string>& overrides,
             const std::string& weights) {
  train::Config cfg = train::load_config(config, overrides);
  auto task = train::make_task(cfg);
  train::model_kind(cfg.model.kind).load_weights(task->model(), weights);  // format detected
  nlohmann::json e = task->evaluate(train::EvalShare{});
  TS_CHECK(!e.empty(), "eval: {} has no evaluation split (data.val_fraction / data.val_path)",
           config);
  std::cout << e.dump() << "\n";
  return 0;
}

int cmd_generate(const std::string& run, std::string config, std::string weights,
                 const std::string& prompt, const train::SampleOptions& so, uint64_t seed) {
  if (!run.empty()) {
    if (config.empty()) config = (fs::path(run) / "config.toml").string();
    if (weights.empty()) weights = (fs::path(run) / "model.safetensors").string();
  }
  TS_CHECK(!config.empty() && !weights.empty(),
           "generate: give a run folder (--run DIR) or both --config and --weights");
  train::Config cfg = train::load_config(config);
  const train::ModelKind& kind = train::model_kind(cfg.model.kind);
  TS_CHECK(kind.language_model, "generate: {} describes a '{}' model, expected a language model",
           config, cfg.model.kind);
  Generator init(0);
  std::unique_ptr<nn::Decoder> model = train::make_decoder(cfg, init);
  kind.load_weights(*model, weights);  // format detected from the file
  model->eval();
  Generator gen(seed);
  const std::unique_ptr<tokenizer::Tokenizer> tok = train::load_data_tokenizer(cfg);
  std::cout << prompt << train::generate_text(*model, prompt, so, gen, tok.get()) << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Tessera: fast neural-network training on CPUs and GPUs"};
  app.require_subcommand(1);

  std::string config, out, weights, run, prompt, resume;
  std::vector<std::string> overrides;
  TrainFlags train_flags;
  train::SampleOptions so;
  uint64_t seed = 1;

  auto* tr = app.add_subcommand("train", "Train the model a TOML config describes");
  tr->add_option("config", config, "config file (keys: docs/CONFIG.md)")->required();
  tr->add_option("overrides", overrides, "key=value overrides, e.g. train.steps=100");
  tr->add_option("--out", out, "run folder (default runs/<config name>)");
  tr->add_flag("--no-plot", train_flags.no_plot, "do not draw loss.png at the end");
  tr->add_flag("--profile", train_flags.profile,
               "time each op family, kernel and communication wait of every step after the "
               "first, on every rank: OUT/profile_rank<R>.txt (docs/PERF.md)");
  tr->add_flag("--no-fit-check", train_flags.no_fit_check,
               "start even when the planner predicts the run does not fit its ranks' memory "
               "(the GPU's, or on the CPU the machine's shared by its ranks)");
  tr->add_option("--resume", resume,
                 "continue from a checkpoint: 'latest' (the newest in OUT/checkpoints that "
                 "verifies; the default when the flag has no value) or a checkpoint folder")
      ->expected(0, 1)
      ->default_str("latest");

  std::string cluster = "local";
  int ranks = 0;
  bool json = false, search = false;
  int top = 10;
  auto* pn = app.add_subcommand(
      "plan", "Predict memory per rank and step time of a config on a cluster (docs/PLAN.md)");
  pn->add_option("config", config, "config file (keys: docs/CONFIG.md)")->required();
  pn->add_option("overrides", overrides, "key=value overrides, e.g. parallel.tp=8");
  pn->add_option("--cluster", cluster,
                 "a100x8, h100x64, h200x16, b200x4096 (8-GPU nodes), local or localxN (this "
                 "machine, calibrated)")
      ->default_str("local");
  pn->add_option("--ranks", ranks, "ranks to plan for (default: every device of the cluster)")
      ->check(CLI::Range(0, 1 << 20));
  pn->add_flag("--json", json, "print the plan as JSON");
  pn->add_flag("--search", search,
               "plan the config's layouts (tp, pp, cp, ZeRO, micro-batches, recompute) and list "
               "those that fit, fastest first, as overrides to paste");
  pn->add_option("--top", top, "layouts --search lists")->check(CLI::Range(1, 1000));

  auto* ev = app.add_subcommand("eval", "Evaluate saved weights on the config's held-out data");
  ev->add_option("config", config, "config file")->required();
  ev->add_option("overrides", overrides, "key=value overrides");
  ev->add_option("--weights", weights, "model.safetensors to evaluate")->required();

  auto* ge = app.add_subcommand(
      "generate",
      "Sample text from a trained language model (byte-level, or with its data.tokenizer)");
  ge->add_option("--run", run, "run folder (uses its config.toml and model.safetensors)");
  ge->add_option("--config", config, "config file (instead of --run)");
  ge->add_option("--weights", weights, "weights file (instead of --run)");
  ge->add_option("--prompt", prompt, "text to continue");
  ge->add_option("--tokens", so.tokens, "bytes to generate")->check(CLI::Range(1, 1000000));
  ge->add_option("--temperature", so.temperature, "0 = greedy")->check(CLI::Range(0.0, 100.0));
  ge->add_option("--top-k", so.top_k, "sample among the k likeliest (0 = all)")
      ->check(CLI::Range(0, 1 << 30));
  ge->add_option("--top-p", so.top_p, "then sample among the likeliest whose probability reaches p")
      ->check(CLI::Range(1e-6, 1.0));
  ge->add_option("--seed", seed, "sampling seed");

  auto* pl = app.add_subcommand("plot", "Draw RUN_DIR/loss.png from RUN_DIR/metrics.jsonl");
  pl->add_option("run_dir", run, "run folder")->required();

  std::vector<std::string> command;
  ckpt::SuperviseOptions sup_opt;
  auto* su = app.add_subcommand(
      "supervise",
      "Run a training command, restarting it when it fails (give it --resume): "
      "tessera supervise --max-restarts 5 -- mpirun -np 8 tessera train job.toml --resume");
  su->add_option("--max-restarts", sup_opt.max_restarts, "restarts before giving up")
      ->check(CLI::Range(0, 1000000));
  su->add_option("--restart-delay", sup_opt.restart_delay_s,
                 "seconds between a failure and "
                 "the restart")
      ->check(CLI::Range(0.0, 3600.0));
  su->add_option("command", command, "the command, after --")->required();

  auto* tk = app.add_subcommand("tokenizer", "Train or run a byte-level BPE tokenizer");
  tk->require_subcommand(1);
  std::vector<std::string> files, specials;
  int64_t vocab_size = 0;
  std::string pattern = "gpt2", tokenizer_json;
  bool count_only = false;
  auto* tt =
      tk->add_subcommand("train", "Learn a vocabulary from text files; write tokenizer.json");
  tt->add_option("--vocab-size", vocab_size, "tokens in the vocabulary (bytes, specials, merges)")
      ->required();
  tt->add_option("--pattern", pattern, "pre-tokenization: gpt2, llama3 or a regex");
  tt->add_option("--special", specials, "special token, e.g. '<|endoftext|>' (repeatable)");
  tt->add_option("--out", out, "tokenizer.json to write")->required();
  tt->add_option("files", files, "UTF-8 text files")->required();
  auto* te = tk->add_subcommand("encode", "Print a file's token ids (speed on stderr)");
  te->add_option("--tokenizer", tokenizer_json, "tokenizer.json")->required();
  te->add_flag("--count", count_only, "print only the number of tokens");
  te->add_option("file", run, "UTF-8 text file")->required();

  tokenizer::PrepareOptions prep;
  auto* pr = app.add_subcommand(
      "prepare", "Tokenize text / JSON Lines files or folders into token shards for training");
  pr->add_option("--tokenizer", prep.tokenizer, "tokenizer.json")->required();
  pr->add_option("--out", prep.out_dir, "output folder")->required();
  pr->add_option("--name", prep.name, "shard name prefix (default: the first input's name)");
  auto* vf = pr->add_option("--val-fraction", prep.val_fraction,
                            "fraction of the tokens, at the start, held out for validation")
                 ->check(CLI::Range(0.0, 0.999999));
  pr->add_option("--val-tokens", prep.val_tokens, "the first N tokens are the validation split")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 40))
      ->excludes(vf);
  pr->add_option("--shard-tokens", prep.shard_tokens, "tokens per shard file (default 1e8)")
      ->check(CLI::Range(int64_t(1), (int64_t(1) << 31) - 1));
  pr->add_option("--eot", prep.eot, "end-of-text token (default <|endoftext|> or <|end_of_text|>)");
  pr->add_flag("!--no-progress", prep.progress, "no progress bar");
  pr->add_option("inputs", prep.inputs, "text files, *.jsonl files or folders")->required();

  auto* fe = app.add_subcommand("features",
                                "Show the backends built in (MPI, ...) and the launch environment");

  CLI11_PARSE(app, argc, argv);
  // Errors name the rank when several processes print them.
  std::string who;
  try {
    if (dist::LaunchInfo li = dist::detect_launch(); li.distributed())
      who = fmt::format("rank {}: ", li.rank);
  } catch (const std::exception&) {
  }
  auto report = [&](const char* what) {
    std::cerr << "tessera: " << who << "error: " << what << std::endl;
    // A rank that fails alone would leave the others waiting in a collective: take the whole
    // job down (MPI_Abort) rather than hang. No-op when MPI is not running.
    dist::mpi_abort(2);
    return 2;
  };
  try {
    if (fe->parsed()) {
      std::cout << dist::features_report();
      return 0;
    }
    if (tr->parsed()) {
      if (tr->count("--resume") > 0 && resume.empty()) resume = "latest";
      const std::unique_ptr<FileSystem> faults = fault_file_system_from_env();
      std::optional<ScopedFileSystem> use_faults;
      if (faults) use_faults.emplace(*faults);
      int rc = cmd_train(config, overrides, out, resume, train_flags);
      dist::mpi_shutdown();
      return rc;
    }
    if (su->parsed()) {
      if (std::find(command.begin(), command.end(), "--resume") == command.end())
        std::cerr << "tessera supervise: warning: the command has no --resume: a restart "
                     "would train from the start\n";
      return ckpt::supervise(command, sup_opt, stderr).exit_code;
    }
    if (tt->parsed()) {
      std::cerr << tokenizer::train_tokenizer_files(files, vocab_size, pattern, specials, out)
                << "\n";
      return 0;
    }
    if (te->parsed()) {
      tokenizer::encode_file(tokenizer_json, run, count_only, std::cout, std::cerr);
      return 0;
    }
    if (pr->parsed()) {
      std::cout << tokenizer::describe(tokenizer::prepare(prep)) << "\n";
      return 0;
    }
    if (pn->parsed()) return cmd_plan(config, overrides, cluster, ranks, json, search, top);
    if (ev->parsed()) return cmd_eval(config, overrides, weights);
    if (ge->parsed()) return cmd_generate(run, config, weights, prompt, so, seed);
    if (pl->parsed()) {
      std::cout << train::plot_run(run) << "\n";
      return 0;
    }
  } catch (const Error& e) {
    return report(e.what());
  } catch (const std::exception& e) {
    return report(e.what());
  }
  return 0;
}
