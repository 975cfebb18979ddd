// The tables ops::rope reads (Llama's rotary position embeddings), built once on the host in
// double precision: inverse frequencies f_i = theta^(-2i / hs), i < hs/2, optionally rescaled
// as Llama 3 does for long contexts, and cos / sin of position * f_i for every position.
#pragma once
#include <cstdint>
#include <optional>
#include <vector>

#include "core/tensor.h"

namespace tessera::ops {

// A Hugging Face config's rope_scaling with rope_type "llama3" (Llama 3.1's values by default).
struct Llama3RopeScaling {
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  double original_max_position_embeddings = 8192;
};

// f_i = theta^(-2i / head_size) for i < head_size / 2 (head_size even, theta > 0; Llama 3's
// rope_theta is 500000).
std::vector<double> rope_inverse_frequencies(int64_t head_size, double theta);

// Hugging Face's _compute_llama3_parameters: with L = original_max_position_embeddings and
// wavelength w = 2 pi / f, keep f where w < L / high_freq_factor, use f / factor where
// w > L / low_freq_factor, and in between blend (1 - s) f / factor + s f with
// s = (L / w - low_freq_factor) / (high_freq_factor - low_freq_factor).
std::vector<double> llama3_scale_frequencies(std::vector<double> inv_freq,
                                             const Llama3RopeScaling& s);

// The table [positions, 2, n]: row p holds cos(p f_i), then sin(p f_i), i < n = inv_freq's size
// (= head_size / 2), rounded to f32 from double, on `device`.
Tensor rope_table(const std::vector<double>& inv_freq, int64_t positions,
                  Device device = Device::cpu());

// The same from the model's settings: rope_table(llama3_scale_frequencies(...) when scaling is
// given, positions). positions is the longest context the model will see (training sequence
// length, or the KV cache's capacity).
Tensor rope_table(int64_t positions, int64_t head_size, double theta,
                  const std::optional<Llama3RopeScaling>& scaling = std::nullopt,
                  Device device = Device::cpu());

}  // namespace tessera::ops
