#include "train/init_weights.h"

#include "core/error.h"
#include "train/model_kinds.h"

namespace tessera::train {

void load_init_weights(nn::Module& model, const Config& cfg) {
  const std::string& path = cfg.model.init_weights;
  if (path.empty()) return;
  try {
    model_kind(cfg.model.kind).load_weights(model, path);
  } catch (const Error& e) {
    throw Error(fmt::format("config: model.init_weights = '{}': {}", path, e.what()));
  }
}

}  // namespace tessera::train
