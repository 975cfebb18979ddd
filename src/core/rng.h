// Deterministic random numbers. A Generator is a counter-based stream (Philox-like mixing of
// a 64-bit seed and a 64-bit counter through SplitMix64), so any element's value depends only
// on (seed, offset): fills are identical for any thread count, and a generator's state is two
// integers that checkpoints can save.
#pragma once
#include <cstdint>

namespace tessera {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_state(uint64_t seed, uint64_t offset) { seed_ = seed, offset_ = offset; }

  // Reserves n draws and returns the offset of the first one.
  uint64_t advance(uint64_t n) {
    uint64_t o = offset_;
    offset_ += n;
    return o;
  }
  uint64_t next_u64() { return bits(seed_, advance(1)); }
  // Uniform in [0, 1).
  double next_double() { return double(next_u64() >> 11) * 0x1.0p-53; }

  // Stateless draws, usable from any thread.
  static uint64_t bits(uint64_t seed, uint64_t i) {
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
  static float uniform01(uint64_t seed, uint64_t i) {
    return float(bits(seed, i) >> 40) * 0x1.0p-24f;
  }

 private:
  uint64_t seed_;
  uint64_t offset_ = 0;
};

// The process-wide default generator (seeded by the trainer from the config).
Generator& default_generator();

}  // namespace tessera
