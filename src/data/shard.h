// llm.c token shards: a 256 x int32 little-endian header {magic, version, token count, 0...}
// followed by that many little-endian tokens: uint16 in GPT-2 shards (magic 20240520, version
// 1), uint32 in llm.c's Llama 3 shards (magic 20240801, version 7), for vocabularies over 65,536
// ids. See docs/formats/token_shard.md.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace tessera::data {

constexpr int32_t kShardMagic = 20240520;
constexpr int32_t kShardVersion = 1;  // uint16 tokens
constexpr int32_t kShardMagicU32 = 20240801;
constexpr int32_t kShardVersionU32 = 7;  // uint32 tokens
constexpr int64_t kShardHeaderInts = 256;
constexpr int64_t kShardHeaderBytes = kShardHeaderInts * 4;

// Reads a shard's tokens: u16 [count] from a uint16 shard, i32 [count] from a uint32 one (ids
// of 2^31 and up are refused). Checks the magic, the version and that the file is exactly
// header + count tokens; each Error names the file and the header field.
Tensor read_token_shard(const std::string& path);

// Writes tokens as a shard, via a temporary file renamed into place: u16 [n] as a uint16 shard,
// i32 [n] (no negative ids) as a uint32 shard; n < 2^31.
void write_token_shard(const std::string& path, const Tensor& tokens);

// The shard files `where` names, in order: a shard file; a folder (its *.bin files, sorted by
// name); a glob ("data/kjv_train_*.bin", sorted); or a list file (*.list: one shard path per
// line, relative to the list's folder, '#' comments). An Error names a missing file or a
// pattern nothing matches.
std::vector<std::string> shard_files(const std::string& where);

// The shards `where` names read as one stream of tokens, u16 when every shard is uint16, else
// i32. vocab_size > 0: a token id >= vocab_size is an Error naming its shard file.
Tensor read_token_shards(const std::string& where, int64_t vocab_size = 0);

// The largest id in u16 or i32 tokens; -1 when there are none.
int64_t max_token_id(const Tensor& tokens);

}  // namespace tessera::data
