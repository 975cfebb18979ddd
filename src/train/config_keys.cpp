// The one declaration of every configuration key: name, type, default, doc line and valid
// values. Everything else (parsing, overrides, defaults, TOML output, docs/CONFIG.md) reads it.
#include <limits>

#include "train/config.h"
#include "train/model_kinds.h"

namespace tessera::train {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

ValueRange at_least(double lo) {
  return {lo, kInf};
}
ValueRange above(double lo) {
  return {lo, kInf, /*lo_open=*/true};
}
ValueRange between(double lo, double hi) {
  return {lo, hi};
}
// [0, 1): probabilities and decay rates, for which 1 would never forget or always drop.
ValueRange unit_interval_open() {
  return {0, 1, false, /*hi_open=*/true};
}
ValueRange any_value() {
  return {-kInf, kInf};
}

// Field accessors from a section and a member of it; the value type follows the member's.
template <auto Section, auto Field>
ConfigValue get_field(const Config& c) {
  return ConfigValue((c.*Section).*Field);
}
template <auto Section, auto Field>
void set_field(Config& c, const ConfigValue& v) {
  using T = std::remove_cvref_t<decltype((c.*Section).*Field)>;
  (c.*Section).*Field = std::get<T>(v);
}

template <auto Section, auto Field>
ConfigKey int_key(std::string_view name, int64_t def, ValueRange range, std::string_view doc) {
  return {name,
          KeyType::Int,
          def,
          doc,
          range,
          {},
          &get_field<Section, Field>,
          &set_field<Section, Field>};
}
template <auto Section, auto Field>
ConfigKey float_key(std::string_view name, double def, ValueRange range, std::string_view doc) {
  return {name,
          KeyType::Float,
          def,
          doc,
          range,
          {},
          &get_field<Section, Field>,
          &set_field<Section, Field>};
}
template <auto Section, auto Field>
ConfigKey string_key(std::string_view name, std::string_view def,
                     std::vector<std::string_view> choices, std::string_view doc) {
  return {name,        KeyType::String, std::string(def),           doc,
          any_value(), choices,         &get_field<Section, Field>, &set_field<Section, Field>};
}

constexpr auto M = &Config::model;
constexpr auto D = &Config::data;
constexpr auto O = &Config::optim;
constexpr auto T = &Config::train;
constexpr auto P = &Config::parallel;

std::vector<std::string_view> kind_choices() {
  std::vector<std::string_view> names;
  for (const ModelKind& k : model_kinds()) names.push_back(k.name);
  return names;
}

std::vector<std::string_view> preset_choices() {
  std::vector<std::string_view> names{""};
  for (const ModelKind& k : model_kinds())
    for (const ModelPreset& p : k.presets) names.push_back(p.name);
  return names;
}

std::vector<ConfigKey> make_keys() {
  return {
      // [model]
      string_key<M, &ModelConfig::kind>(
          "model.kind", "gpt", kind_choices(),
          "model family: GPT-2 or Llama 3 language model, MLP or CNN image classifier"),
      string_key<M, &ModelConfig::preset>(
          "model.preset", "", preset_choices(),
          "a size of the kind (see Model presets below) that sets the shape keys; explicit keys "
          "win"),
      int_key<M, &ModelConfig::n_layer>("model.n_layer", 4, at_least(1), "transformer blocks"),
      int_key<M, &ModelConfig::n_head>("model.n_head", 4, at_least(1),
                                       "attention heads per block; divides n_embd"),
      int_key<M, &ModelConfig::n_embd>("model.n_embd", 128, at_least(1),
                                       "embedding width (residual stream)"),
      int_key<M, &ModelConfig::context>("model.context", 256, at_least(1),
                                        "block size: longest sequence the positions cover"),
      int_key<M, &ModelConfig::vocab_size>("model.vocab_size", 256, at_least(1),
                                           "token vocabulary (256 for byte-level text)"),
      int_key<M, &ModelConfig::n_kv_head>(
          "model.n_kv_head", 0, at_least(0),
          "Llama: key/value heads, dividing n_head (grouped-query attention; 0 = n_head)"),
      int_key<M, &ModelConfig::ffn_hidden>(
          "model.ffn_hidden", 0, at_least(0),
          "Llama: SwiGLU MLP width (0 = Meta's rule: 8 n_embd / 3 rounded up to 256)"),
      float_key<M, &ModelConfig::rope_theta>("model.rope_theta", 0.0, at_least(0),
                                             "Llama: rotary embedding base (0 = 500000)"),
      float_key<M, &ModelConfig::rope_scaling>(
          "model.rope_scaling", 0.0, at_least(0),
          "Llama: Llama 3 rotary frequency scaling factor (0 = none; low/high frequency "
          "factors 1 and 4 over an original context of 8192, as Llama 3.1)"),
      string_key<M, &ModelConfig::head>("model.head", "tied", {"tied", "untied"},
                                        "Llama: output head tied to the token embedding or its "
                                        "own matrix (GPT-2's is always tied)"),
      float_key<M, &ModelConfig::dropout>("model.dropout", 0.0, unit_interval_open(),
                                          "dropout probability (0 = off)"),
      string_key<M, &ModelConfig::recompute>(
          "model.recompute", "none", {"none", "blocks"},
          "language models: activations recomputed in backward instead of kept: none, or each "
          "transformer "
          "block's (same gradients, less memory, about one more forward)"),
      string_key<M, &ModelConfig::init_weights>(
          "model.init_weights", "", {},
          "start from these weights instead of the seed's (\"\" = seed): a run's "
          "model.safetensors, Hugging Face GPT-2 model.safetensors, or an llm.c checkpoint "
          "(gpt2_124M.bin); the format is detected from the file, whose shapes must match the "
          "model keys. A resumed run takes its weights from the checkpoint instead"),
      int_key<M, &ModelConfig::mlp_hidden>("model.mlp_hidden", 256, at_least(1),
                                           "MLP: width of each hidden layer"),
      int_key<M, &ModelConfig::mlp_layers>("model.mlp_layers", 2, at_least(1),
                                           "MLP: number of hidden layers"),
      int_key<M, &ModelConfig::cnn_channels>("model.cnn_channels", 32, at_least(1),
                                             "CNN: channels of the first conv (base width)"),
      // [data]
      string_key<D, &DataConfig::kind>(
          "data.kind", "text", {"text", "shards", "random", "fashion-mnist"},
          "dataset: byte-level text, llm.c token shards, uniformly random token ids (benchmarks "
          "and plans: no file), or images"),
      string_key<D, &DataConfig::path>("data.path", "data/kjv.txt", {},
                                       "text file; shard file, folder, glob or .list; or IDX "
                                       "directory"),
      float_key<D, &DataConfig::val_fraction>("data.val_fraction", 0.1, unit_interval_open(),
                                              "text: fraction at the end held out for validation"),
      string_key<D, &DataConfig::val_path>(
          "data.val_path", "", {},
          "shards: validation shard file, folder, glob or .list (\"\" = none)"),
      string_key<D, &DataConfig::tokenizer>(
          "data.tokenizer", "", {},
          "shards: the tokenizer.json that wrote them, so that text samples while training and "
          "`tessera generate` speak text (\"\" = none; byte-level text needs none)"),
      // [optim]
      string_key<O, &OptimConfig::name>("optim.name", "adamw", {"adamw", "sgd"}, "optimizer"),
      float_key<O, &OptimConfig::lr>("optim.lr", 1e-3, above(0), "peak learning rate"),
      float_key<O, &OptimConfig::min_lr>("optim.min_lr", 0.0, at_least(0),
                                         "cosine: learning rate at the last step; <= lr"),
      float_key<O, &OptimConfig::weight_decay>("optim.weight_decay", 0.1, at_least(0),
                                               "decoupled weight decay (AdamW) or L2 (SGD)"),
      float_key<O, &OptimConfig::beta1>("optim.beta1", 0.9, unit_interval_open(),
                                        "AdamW: first-moment decay"),
      float_key<O, &OptimConfig::beta2>("optim.beta2", 0.95, unit_interval_open(),
                                        "AdamW: second-moment decay"),
      float_key<O, &OptimConfig::eps>("optim.eps", 1e-8, above(0), "AdamW: denominator epsilon"),
      float_key<O, &OptimConfig::momentum>("optim.momentum", 0.9, unit_interval_open(),
                                           "SGD: momentum (0 = plain SGD)"),
      float_key<O, &OptimConfig::grad_clip>("optim.grad_clip", 1.0, at_least(0),
                                            "clip the global gradient norm to this (0 = off)"),
      string_key<O, &OptimConfig::schedule>("optim.schedule", "cosine", {"constant", "cosine"},
                                            "learning-rate schedule after warm-up"),
      int_key<O, &OptimConfig::warmup_steps>("optim.warmup_steps", 100, at_least(0),
                                             "linear warm-up steps from 0 to lr"),
      // [train]
      int_key<T, &TrainConfig::steps>("train.steps", 2000, at_least(1), "optimizer steps"),
      int_key<T, &TrainConfig::batch_size>("train.batch_size", 16, at_least(1),
                                           "examples (sequences or images) per step"),
      int_key<T, &TrainConfig::micro_batches>(
          "train.micro_batches", 1, at_least(1),
          "gradient accumulation: batch_size is split into this many; divides batch_size"),
      int_key<T, &TrainConfig::seq_len>(
          "train.seq_len", 128, at_least(1),
          "language models: tokens per training sequence; <= model.context"),
      string_key<T, &TrainConfig::precision>("train.precision", "f32", {"f32", "bf16", "fp16"},
                                             "compute precision of activations (weights in f32)"),
      string_key<T, &TrainConfig::device>(
          "train.device", "cpu", {"cpu", "cuda", "meta"},
          "where to train: the CPU, or a GPU (rank r uses GPU r % count; ranks talk over NCCL); "
          "meta computes nothing (shapes only: what `tessera plan` runs)"),
      float_key<T, &TrainConfig::loss_scale>(
          "train.loss_scale", 65536.0, above(0),
          "fp16: initial dynamic loss scale (halved on an inf/NaN gradient, which skips the step)"),
      int_key<T, &TrainConfig::loss_scale_window>(
          "train.loss_scale_window", 2000, at_least(1),
          "fp16: clean steps in a row after which the loss scale doubles"),
      float_key<T, &TrainConfig::peak_tflops>(
          "train.peak_tflops", 0.0, at_least(0),
          "one device's peak TFLOP/s in train.precision, for MFU in place of the datasheet peak "
          "(0 = the device's datasheet peak: docs/PERF.md, \"What MFU means\")"),
      int_key<T, &TrainConfig::seed>("train.seed", 1337, at_least(0),
                                     "seed of initialisation, batching and dropout"),
      int_key<T, &TrainConfig::eval_every>("train.eval_every", 250, at_least(0),
                                           "steps between validation passes (0 = off)"),
      int_key<T, &TrainConfig::eval_batches>("train.eval_batches", 20, at_least(1),
                                             "batches per validation pass"),
      int_key<T, &TrainConfig::log_every>("train.log_every", 10, at_least(1),
                                          "steps between log lines"),
      int_key<T, &TrainConfig::sample_every>(
          "train.sample_every", 0, at_least(0),
          "language models: steps between text samples (0 = off)"),
      int_key<T, &TrainConfig::sample_tokens>("train.sample_tokens", 256, at_least(1),
                                              "language models: tokens per text sample"),
      int_key<T, &TrainConfig::checkpoint_every>(
          "train.checkpoint_every", 0, at_least(0),
          "steps between checkpoints in RUN/checkpoints (0 = none); docs/CHECKPOINTS.md"),
      int_key<T, &TrainConfig::checkpoint_keep>(
          "train.checkpoint_keep", 3, at_least(1),
          "newest checkpoints kept; older ones are deleted after each save"),
      int_key<T, &TrainConfig::checkpoint_async>(
          "train.checkpoint_async", 1, between(0, 1),
          "1: write checkpoint files on a background thread while training continues; 0: wait"),
      int_key<T, &TrainConfig::max_bad_steps>(
          "train.max_bad_steps", 8, at_least(0),
          "a step with a non-finite loss or gradient is skipped; stop after this many in a row "
          "(0 = never stop)"),
      int_key<T, &TrainConfig::threads>("train.threads", 0, at_least(0),
                                        "CPU threads (0 = all cores)"),
      // [parallel]
      int_key<P, &ParallelConfig::tp>(
          "parallel.tp", 1, at_least(1),
          "tensor-parallel ranks per model replica (Megatron-LM style: heads, MLP units and "
          "vocabulary split over consecutive ranks); the data-parallel size is ranks / (tp x pp "
          "x cp); docs/DISTRIBUTED.md"),
      int_key<P, &ParallelConfig::sequence_parallel>(
          "parallel.sequence_parallel", 0, between(0, 1),
          "1: with parallel.tp > 1, the norms, dropout and residual stream keep only each "
          "rank's rows of the tokens (reduce-scatter and all-gather in place of all-reduce: "
          "the same bytes, their activations / tp)"),
      int_key<P, &ParallelConfig::pp>(
          "parallel.pp", 1, at_least(1),
          "pipeline-parallel ranks per model replica: the blocks cut into consecutive stages, "
          "micro-batches (train.micro_batches) scheduled by parallel.pp_schedule"),
      string_key<P, &ParallelConfig::pp_schedule>(
          "parallel.pp_schedule", "1f1b", {"1f1b", "interleaved_1f1b", "gpipe"},
          "pipeline schedule: 1f1b (PipeDream-flush), interleaved_1f1b (Megatron-LM's, "
          "parallel.pp_virtual_stages stages per rank) or gpipe (all forwards, then all "
          "backwards)"),
      int_key<P, &ParallelConfig::pp_virtual_stages>(
          "parallel.pp_virtual_stages", 1, at_least(1),
          "stages per pipeline rank for interleaved_1f1b (bubble (pp-1)/(v m + pp-1))"),
      int_key<P, &ParallelConfig::cp>(
          "parallel.cp", 1, at_least(1),
          "context-parallel ranks: each sequence cut into 2 cp chunks, rank i taking chunks i and "
          "2 cp - 1 - i; attention all-gathers the keys and values (Llama 3's form)"),
      int_key<P, &ParallelConfig::zero_stage>(
          "parallel.zero_stage", 0, between(0, 3),
          "ZeRO: 0 = replicate, 1 = shard optimizer state, 2 = + gradients, 3 = + weights"),
      float_key<P, &ParallelConfig::bucket_mb>("parallel.bucket_mb", 25.0, above(0),
                                               "gradient all-reduce bucket size in MiB"),
      string_key<P, &ParallelConfig::overlap>(
          "parallel.overlap", "auto", {"auto", "on", "off"},
          "whether MPI collectives progress while the ranks compute (gradients overlapping the "
          "backward pass): auto = when each rank has a core to spare beyond train.threads; "
          "without one, progressing them takes the computation's cycles and they move only "
          "while a rank waits"),
      float_key<P, &ParallelConfig::timeout_s>(
          "parallel.timeout_s", 60.0, above(0),
          "seconds without a heartbeat before the other ranks declare a rank dead and exit "
          "(over MPI, and over rank 0's store in a torchrun-style launch, where it is also how "
          "long the ranks wait at the store for all to arrive)"),
      float_key<P, &ParallelConfig::stuck_timeout_s>(
          "parallel.stuck_timeout_s", 600.0, at_least(0),
          "a rank that has waited this long on a collective or transfer, while another rank "
          "alive (heartbeats arrive) has started no communication for as long, ends the job "
          "naming that rank, whose training thread is stuck; when every rank waits and none "
          "starts any, the job ends naming what each waits in (a deadlock, MPI); in a "
          "torchrun-style launch, how long a host exchange over rank 0's store waits for a rank "
          "that is connected and beating (0 = never)"),
      float_key<P, &ParallelConfig::slow_rank_factor>(
          "parallel.slow_rank_factor", 1.5, at_least(0),
          "warn naming a rank whose median compute time per step exceeds this many times the "
          "other ranks' median on 3 logged steps in a row (0 = never; otherwise above 1)"),
  };
}

}  // namespace

std::span<const ConfigKey> config_keys() {
  static const std::vector<ConfigKey> keys = make_keys();
  return keys;
}

const ConfigKey* find_config_key(std::string_view name) {
  for (const ConfigKey& key : config_keys())
    if (key.name == name) return &key;
  return nullptr;
}

std::string_view key_type_name(KeyType type) {
  switch (type) {
    case KeyType::Int:
      return "integer";
    case KeyType::Float:
      return "float";
    case KeyType::String:
      return "string";
  }
  return "?";
}

Config::Config() {
  for (const ConfigKey& key : config_keys()) key.set(*this, key.default_value);
}

}  // namespace tessera::train
