#include "optim/bias_corrections.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/backend.h"

namespace tessera {

const double* DeviceBiasCorrections::covering(int64_t max_t, float beta1, float beta2, Device d) {
  const bool same = beta1 == beta1_ && beta2 == beta2_ && table_.defined() && table_.device() == d;
  if (!same || max_t > max_t_) {
    const int64_t cap = std::max<int64_t>(max_t * 2, 1024);
    Tensor host = Tensor::empty({2 * (cap + 1)}, DType::i64, Device::cpu());
    auto* pairs = static_cast<double*>(host.raw_data());
    for (int64_t t = 0; t <= cap; ++t) {  // as AdamWScalars::at
      const double bc1 = 1.0 - std::pow(double(beta1), double(t));
      const double bc2 = 1.0 - std::pow(double(beta2), double(t));
      std::memcpy(&pairs[2 * t], &bc1, sizeof bc1);
      std::memcpy(&pairs[2 * t + 1], &bc2, sizeof bc2);
    }
    table_ = backend_for(d, "adamw bias corrections").upload_async(host, d.index);
    max_t_ = cap, beta1_ = beta1, beta2_ = beta2;
  }
  return static_cast<const double*>(table_.raw_data());
}

}  // namespace tessera
