// A host/device copy of Generator::bits and Generator::uniform01 (core/rng.h), which are not
// marked TS_HD and so cannot be called from a kernel. Dropout masks must be bit-identical on
// both backends (a run resumed on the other backend, or a gradient check across them, relies on
// it), so tests/cuda/test_cuda_shared.cpp checks on the CPU that these agree with the originals.
// Plain C++ apart from TS_HD: it compiles under g++ and nvcc alike.
#pragma once
#include <cstdint>

#include "core/half.h"  // TS_HD

namespace tessera::rng {

TS_HD inline uint64_t counter_bits(uint64_t seed, uint64_t i) {
  uint64_t z = seed * 0x9e3779b97f4a7c15ull + i * 0xbf58476d1ce4e5b9ull + 0x94d049bb133111ebull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  z += seed;  // second round keyed again by the seed
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Uniform float in [0, 1) with 24 random bits.
TS_HD inline float counter_uniform01(uint64_t seed, uint64_t i) {
  return float(counter_bits(seed, i) >> 40) * 0x1.0p-24f;
}

}  // namespace tessera::rng
