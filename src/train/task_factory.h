// Constructors of the concrete tasks (one file each), dispatched on model.kind by make_task.
#pragma once
#include "train/task.h"

namespace tessera::train {

std::unique_ptr<Task> make_lm_task(const Config& cfg, TaskPlacement placement);
std::unique_ptr<Task> make_classifier_task(const Config& cfg, TaskPlacement placement);

}  // namespace tessera::train
