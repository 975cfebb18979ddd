#include "core/rng.h"

namespace tessera {

Generator& default_generator() {
  static Generator g(0);
  return g;
}

}  // namespace tessera
