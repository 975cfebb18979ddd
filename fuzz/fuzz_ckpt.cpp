// Fuzzes the checkpoint folder's JSON parsers (src/ckpt/manifest.cpp): manifest.json (files,
// sizes, CRC-32s) and trainer_state.json (step, data cursor, RNG streams, loss scale, counters,
// optimizer shards). A document that parses must read back equal from its own serialisation.
//
// Input layout: byte 0 picks the file (even: manifest.json, odd: trainer_state.json); the rest
// is the JSON text.
#include <string>
#include <string_view>

#include "ckpt/manifest.h"
#include "fuzz_common.h"

using namespace tessera;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  fuzz::expect_success_or_error([&] {
    if (data[0] % 2 == 0) {
      const ckpt::Manifest m = ckpt::parse_manifest(text, "fuzz/manifest.json");
      const std::string json = ckpt::manifest_to_json(m);
      if (!(ckpt::parse_manifest(json, "manifest_to_json output") == m))
        fuzz::property_failed("manifest changed in a round trip: " + json);
    } else {
      const ckpt::TrainerState s = ckpt::parse_trainer_state(text, "fuzz/trainer_state.json");
      const std::string json = ckpt::trainer_state_to_json(s);
      if (!(ckpt::parse_trainer_state(json, "trainer_state_to_json output") == s))
        fuzz::property_failed("trainer state changed in a round trip: " + json);
    }
  });
  return 0;
}
