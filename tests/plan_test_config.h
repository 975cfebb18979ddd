// The tiny configs the planner's tests plan and train.
#pragma once
#include <string>
#include <vector>

#include <fmt/format.h>

#include "train/config.h"

namespace tessera::testing {

// A tiny GPT or Llama on random ids: nothing to read, every layout key available.
// `model` replaces the model's shape keys (a preset's name, say).
inline train::Config tiny_config(const std::string& kind,
                                 const std::vector<std::string>& overrides = {},
                                 std::string model = "") {
  if (model.empty())
    model = kind == "gpt" ? "n_layer = 2\nn_head = 4\nn_embd = 64\ncontext = 64\nvocab_size = 300"
                          : "n_layer = 4\nn_head = 4\nn_kv_head = 2\nn_embd = 64\n"
                            "ffn_hidden = 160\ncontext = 64\nvocab_size = 300";
  return train::parse_config(fmt::format(R"([model]
kind = "{}"
{}
dropout = 0.0
[data]
kind = "random"
[optim]
warmup_steps = 0
[train]
steps = 3
batch_size = 8
micro_batches = 2
seq_len = 64
seed = 3
eval_every = 0
log_every = 1
threads = 1
)",
                                         kind, model),
                             "plan_test.toml", overrides);
}

}  // namespace tessera::testing
