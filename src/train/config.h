// The training configuration: one plain struct with a section per concern, filled from a TOML
// file plus `key=value` command-line overrides, checked, and written back as TOML for run folders
// and checkpoints.
//
// Every key is declared once, in the table of config_keys.cpp (name, type, default, doc, valid
// range or choices). Parsing, overrides, the defaults, serialisation and docs/CONFIG.md all come
// from that table, so adding a field means adding it to a section below and one row there.
#pragma once
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace tessera::train {

struct ModelConfig {
  std::string kind;    // a model kind (train/model_kinds.h): "gpt" | "llama" | "mlp" | "cnn"
  std::string preset;  // "" or a size of the kind; sets the shape fields below
  int64_t n_layer = 0;
  int64_t n_head = 0;
  int64_t n_embd = 0;
  int64_t context = 0;  // block size: the longest sequence the positional embedding covers
  int64_t vocab_size = 0;
  int64_t n_kv_head = 0;    // Llama: key/value heads (0 = n_head)
  int64_t ffn_hidden = 0;   // Llama: SwiGLU width (0 = Meta's rule from n_embd)
  double rope_theta = 0;    // Llama: rotary base (0 = the kind's, 500000)
  double rope_scaling = 0;  // Llama: Llama 3 frequency scaling factor (0 = none)
  std::string head;         // Llama: "tied" | "untied" output head
  double dropout = 0;
  std::string recompute;     // language models: "none" | "blocks" (activation recomputation)
  std::string init_weights;  // "" = from train.seed, else a weights file (nn::load_any_weights)
  int64_t mlp_hidden = 0;
  int64_t mlp_layers = 0;
  int64_t cnn_channels = 0;
  bool operator==(const ModelConfig&) const = default;
};

struct DataConfig {
  std::string kind;  // "text" | "shards" | "fashion-mnist"
  std::string path;
  double val_fraction = 0;  // text: tail of the corpus held out for validation
  std::string val_path;     // shards: validation shards
  std::string tokenizer;    // shards: their tokenizer.json, for text samples ("" = none)
  bool operator==(const DataConfig&) const = default;
};

struct OptimConfig {
  std::string name;  // "adamw" | "sgd"
  double lr = 0;
  double min_lr = 0;
  double weight_decay = 0;
  double beta1 = 0;
  double beta2 = 0;
  double eps = 0;
  double momentum = 0;
  double grad_clip = 0;  // 0 = off
  std::string schedule;  // "constant" | "cosine"
  int64_t warmup_steps = 0;
  bool operator==(const OptimConfig&) const = default;
};

struct TrainConfig {
  int64_t steps = 0;
  int64_t batch_size = 0;
  int64_t micro_batches = 0;      // gradient accumulation; divides batch_size
  int64_t seq_len = 0;            // GPT only; <= model.context
  std::string precision;          // "f32" | "bf16" | "fp16"
  std::string device;             // "cpu" | "cuda"
  double loss_scale = 0;          // fp16: the dynamic loss scale's initial value
  int64_t loss_scale_window = 0;  // fp16: clean steps in a row before the scale doubles
  double peak_tflops = 0;         // MFU's per-device peak override (0: the datasheet peak)
  int64_t seed = 0;
  int64_t eval_every = 0;  // 0 = off
  int64_t eval_batches = 0;
  int64_t log_every = 0;
  int64_t sample_every = 0;  // 0 = off
  int64_t sample_tokens = 0;
  int64_t checkpoint_every = 0;  // 0 = no periodic checkpoints
  int64_t checkpoint_keep = 0;   // newest checkpoints kept
  int64_t checkpoint_async = 0;  // 1: write checkpoint files while training continues
  int64_t max_bad_steps = 0;     // stop after this many non-finite steps in a row (0 = never)
  int64_t threads = 0;           // 0 = all cores
  bool operator==(const TrainConfig&) const = default;
};

struct ParallelConfig {
  int64_t tp = 1;                 // tensor-parallel ranks per model replica
  int64_t sequence_parallel = 0;  // 1: norm/dropout regions split by rows over the tp ranks
  int64_t pp = 1;                 // pipeline stages
  std::string pp_schedule;        // "1f1b" | "interleaved_1f1b" | "gpipe"
  int64_t pp_virtual_stages = 1;  // stages per pipeline rank (interleaved_1f1b)
  int64_t cp = 1;                 // context-parallel ranks
  int64_t zero_stage = 0;         // 0..3
  double bucket_mb = 0;
  std::string overlap;          // "auto" | "on" | "off": MPI collectives progress while computing
  double timeout_s = 0;         // a rank silent this long is declared dead
  double stuck_timeout_s = 0;   // a rank alive but starting no communication this long: stuck
  double slow_rank_factor = 0;  // warn about a rank this many times slower (0 = never)
  bool operator==(const ParallelConfig&) const = default;
};

struct Config {
  // The defaults of the key table (the sections alone are zero-initialised).
  Config();

  ModelConfig model;
  DataConfig data;
  OptimConfig optim;
  TrainConfig train;
  ParallelConfig parallel;
  bool operator==(const Config&) const = default;
};

// Reads a TOML file, applies `overrides` ("key=value", later ones win), applies the model preset
// (explicit keys, from the file or an override, win over the preset's values) and validates.
// Every error is a tessera::Error naming the file (or "command line"), the key and the value.
Config load_config(const std::filesystem::path& path, std::span<const std::string> overrides = {});

// As load_config, from TOML text; `source` stands for the file name in errors.
Config parse_config(std::string_view toml_text, std::string_view source,
                    std::span<const std::string> overrides = {});

// Checks the rules that join several keys (divisibility, seq_len <= context, model and data
// kinds that fit together, ...). `source` names the config in errors. The per-key ranges and
// choices are checked as values are parsed; this re-checks them too, for configs built in code.
void validate(const Config& config, std::string_view source);

// One sentence per rule that validate() checks across keys, for docs/CONFIG.md.
std::span<const std::string_view> config_rules();

// The resolved config as TOML, every key explicit with its doc as a comment, so parsing it
// back gives an equal Config whatever the defaults become.
std::string to_toml(const Config& config);

// docs/CONFIG.md: the key table rendered as markdown (tests keep the committed file equal).
std::string config_reference_markdown();

// ---- The key table (for tools that list or complete keys) ----

enum class KeyType { Int, Float, String };
std::string_view key_type_name(KeyType type);  // "integer", "float", "string"

using ConfigValue = std::variant<int64_t, double, std::string>;

// Inclusive bounds unless the *_open flag says otherwise; +-infinity for none.
struct ValueRange {
  double lo;
  double hi;
  bool lo_open = false;
  bool hi_open = false;
};

struct ConfigKey {
  std::string_view name;  // "section.field"
  KeyType type;
  ConfigValue default_value;
  std::string_view doc;
  ValueRange range;                       // numbers only
  std::vector<std::string_view> choices;  // strings only; empty = any string
  // Reads and writes the field in a Config.
  ConfigValue (*get)(const Config&);
  void (*set)(Config&, const ConfigValue&);
};

std::span<const ConfigKey> config_keys();
// What a key accepts, as errors and docs say it: ">= 1", "[0, 1)", "one of \"f32\", \"bf16\"".
std::string describe_valid_values(const ConfigKey& key);
const ConfigKey* find_config_key(std::string_view name);  // nullptr when unknown
// A value as TOML writes it (strings quoted and escaped, floats that read back exactly): for
// config files and for messages that name a value.
std::string config_value_text(const ConfigValue& v);

}  // namespace tessera::train
