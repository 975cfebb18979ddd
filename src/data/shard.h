// llm.c token shards: a 256 x int32 little-endian header {magic 20240520, version 1, token
// count, 0...} followed by that many little-endian uint16 tokens. See
// docs/formats/token_shard.md.
#pragma once
#include <cstdint>
#include <string>

#include "core/tensor.h"

namespace tessera::data {

constexpr int32_t kShardMagic = 20240520;
constexpr int32_t kShardVersion = 1;  // uint16 tokens
constexpr int64_t kShardHeaderInts = 256;
constexpr int64_t kShardHeaderBytes = kShardHeaderInts * 4;

// Reads a shard's tokens as u16 [count]. Checks the magic, the version and that the file is
// exactly header + 2 * count bytes; each Error names the file and the header field.
Tensor read_token_shard(const std::string& path);

// Writes tokens (u16 [n], n < 2^31) as a shard, via a temporary file renamed into place.
void write_token_shard(const std::string& path, const Tensor& tokens);

}  // namespace tessera::data
