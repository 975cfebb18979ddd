// Fuzzes the llm.c token shard reader (src/data/shard.cpp): the 256 x int32 header (magic,
// version, token count) and the uint16 token payload. A shard that reads must also survive a
// write / read round trip unchanged.
#include <cstring>

#include "data/shard.h"
#include "fuzz_common.h"

using namespace tessera;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static fuzz::MemFile file("shard");
  static fuzz::TempPath round_trip("shard");
  file.write(data, size);
  fuzz::expect_success_or_error([&] {
    const Tensor tokens = data::read_token_shard(file.path());
    if (uint64_t(data::kShardHeaderBytes) + tokens.nbytes() != size)
      fuzz::property_failed("token count does not account for the file size");
    data::write_token_shard(round_trip.path(), tokens);
    const Tensor back = data::read_token_shard(round_trip.path());
    if (back.shape() != tokens.shape() ||
        (tokens.nbytes() > 0 && std::memcmp(back.raw_data(), tokens.raw_data(), tokens.nbytes())))
      fuzz::property_failed("tokens changed in a round trip");
  });
  return 0;
}
