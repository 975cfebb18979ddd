// model.init_weights: a task's model starts from a weights file instead of the seed's values.
#pragma once
#include "nn/module.h"
#include "train/config.h"

namespace tessera::train {

// Loads cfg.model.init_weights (any format the model kind's loader detects, train/model_kinds.h)
// into a freshly built model; nothing when the key is "". Called by the tasks on every rank, right
// after building the model and before the trainer moves it to a device (so the file is read on
// every rank: each rank's task is complete on its own, and a mismatch fails on every rank alike;
// the trainer's broadcast of rank 0's values then changes nothing). A resumed run loads it too and
// the checkpoint's weights overwrite it. Errors start "config: model.init_weights = '<path>': ".
void load_init_weights(nn::Module& model, const Config& cfg);

}  // namespace tessera::train
