// Fuzzes the safetensors reader (src/nn/safetensors.cpp): the 8-byte header length, the JSON
// header (dtypes, shapes, data_offsets, __metadata__) and the data section. A file that reads
// must also survive a write / read round trip unchanged.
#include <cstring>

#include "fuzz_common.h"
#include "nn/safetensors.h"

using namespace tessera;

namespace {

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() && a.nbytes() == b.nbytes() &&
         (a.nbytes() == 0 || std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static fuzz::MemFile file("safetensors");
  static fuzz::TempPath round_trip("safetensors");
  file.write(data, size);
  fuzz::expect_success_or_error([&] {
    const nn::SafetensorsFile in = nn::read_safetensors(file.path());
    nn::write_safetensors(round_trip.path(), in.tensors, in.metadata);
    const nn::SafetensorsFile back = nn::read_safetensors(round_trip.path());
    if (back.metadata != in.metadata) fuzz::property_failed("metadata changed in a round trip");
    if (back.tensors.size() != in.tensors.size())
      fuzz::property_failed("tensor count changed in a round trip");
    for (const auto& [name, t] : in.tensors) {
      auto it = back.tensors.find(name);
      if (it == back.tensors.end() || !same_bytes(t, it->second))
        fuzz::property_failed("a tensor changed in a round trip: " + name);
    }
  });
  return 0;
}
