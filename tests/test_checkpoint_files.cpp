// The checkpoint folder's JSON files (ckpt/manifest.h): exact round trips, and defensive
// parsing -- every malformed or inconsistent document is refused with an Error naming the file
// and the field.
#include <gtest/gtest.h>

#include <string>

#include "ckpt/manifest.h"
#include "gradcheck.h"

using namespace tessera;
using namespace tessera::ckpt;
using tessera::testing::expect_error;

namespace {

Manifest sample_manifest() {
  Manifest m;
  m.step = 120;
  m.world_size = 2;
  m.files = {{"config.toml", 812, 0x0a1b2c3du},
             {"model.safetensors", 90112, 0xdeadbeefu},
             {"optimizer_rank0.safetensors", 4096, 0u}};
  return m;
}

TrainerState sample_state() {
  TrainerState s;
  s.step = 120;
  s.world_size = 2;
  s.zero_stage = 1;
  s.data = {1338, 960};
  s.rngs = {{"dropout", {0xcbf29ce484222325ull, 1ull << 40}}, {"sample", {1339, 0}}};
  s.loss_scale = 32768;
  s.loss_scale_clean_steps = 17;
  s.loss_scale_skipped_steps = 3;
  s.bad_steps_total = 3;
  s.bad_steps_in_a_row = 1;
  s.last_lr = 2.5e-4;
  s.samples_digest = 0xfedcba9876543210ull;  // all 64 bits must survive the JSON
  s.optimizer = "adamw";
  s.optimizer_steps = 117;
  s.flat_numel = 64;
  s.optimizer_shards = {{"optimizer_rank0.safetensors", 0, 32},
                        {"optimizer_rank1.safetensors", 32, 64}};
  return s;
}

// The sample state's JSON with one substring replaced (which must occur).
std::string state_with(const std::string& from, const std::string& to) {
  std::string s = trainer_state_to_json(sample_state());
  const size_t at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return at == std::string::npos ? s : s.replace(at, from.size(), to);
}

std::string manifest_with(const std::string& from, const std::string& to) {
  std::string s = manifest_to_json(sample_manifest());
  const size_t at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return at == std::string::npos ? s : s.replace(at, from.size(), to);
}

}  // namespace

TEST(CheckpointFiles, ManifestRoundTrips) {
  const Manifest m = sample_manifest();
  const Manifest back = parse_manifest(manifest_to_json(m), "m.json");
  EXPECT_EQ(back, m);
  ASSERT_NE(back.find("model.safetensors"), nullptr);
  EXPECT_EQ(back.find("model.safetensors")->crc32, 0xdeadbeefu);
  EXPECT_EQ(back.find("nope"), nullptr);
}

TEST(CheckpointFiles, TrainerStateRoundTripsIncludingFull64BitSeeds) {
  const TrainerState s = sample_state();
  EXPECT_EQ(parse_trainer_state(trainer_state_to_json(s), "t.json"), s);
  // A checkpoint from before sample accounting has no digest: it parses, without one.
  TrainerState old = s;
  old.samples_digest.reset();
  const std::string text = trainer_state_to_json(old);
  EXPECT_EQ(text.find("samples_digest"), std::string::npos);
  EXPECT_EQ(parse_trainer_state(text, "t.json"), old);
  expect_error([&] { parse_trainer_state(state_with("18364758544493064720", "-1"), "t.json"); },
               {"t.json", "samples_digest"});
}

TEST(CheckpointFiles, MalformedManifestsAreNamed) {
  const std::string f = "ck/manifest.json";
  expect_error([&] { parse_manifest("{\"format\": ", f); }, {f, "not valid JSON"});
  expect_error([&] { parse_manifest("[1, 2]", f); }, {f, "expected an object"});
  expect_error([&] { parse_manifest(manifest_with("tessera-checkpoint", "other"), f); },
               {f, "'format'", "\"other\""});
  expect_error([&] { parse_manifest(manifest_with("\"version\": 1", "\"version\": 7"), f); },
               {f, "version 7"});
  expect_error([&] { parse_manifest(manifest_with("\"step\": 120", "\"step\": -1"), f); },
               {f, "field 'step'", "-1"});
  expect_error([&] { parse_manifest(manifest_with("\"world_size\": 2,", ""), f); },
               {f, "field 'world_size' is missing"});
  expect_error([&] { parse_manifest(manifest_with("deadbeef", "DEADBEEF"), f); },
               {f, "files.model.safetensors.crc32", "hex"});
  expect_error([&] { parse_manifest(manifest_with("\"bytes\": 90112", "\"bytes\": 1.5"), f); },
               {f, "files.model.safetensors.bytes"});
  expect_error([&] { parse_manifest(manifest_with("config.toml", "../config.toml"), f); },
               {f, "\"../config.toml\"", "plain file name"});
  expect_error([&] { parse_manifest(manifest_with("config.toml", "manifest.json"), f); },
               {f, "manifest.json"});
  expect_error([&] { parse_manifest(std::string(2000, '[') + std::string(2000, ']'), f); },
               {f, "nested deeper"});
  expect_error([&] { parse_manifest(std::string(kMaxJsonBytes + 1, ' '), f); }, {f, "at most"});
}

TEST(CheckpointFiles, InconsistentTrainerStatesAreRefused) {
  const std::string f = "ck/trainer_state.json";
  // Shards must tile [0, flat_numel) in order.
  expect_error([&] { parse_trainer_state(state_with("\"begin\": 32", "\"begin\": 30"), f); },
               {f, "optimizer.shards[1]", "start at 32"});
  expect_error([&] { parse_trainer_state(state_with("\"end\": 64", "\"end\": 60"), f); },
               {f, "covers [0, 60)", "[0, 64)"});
  expect_error(
      [&] { parse_trainer_state(state_with("\"flat_numel\": 64", "\"flat_numel\": 16"), f); },
      {f, "optimizer.shards[0]"});
  expect_error(
      [&] { parse_trainer_state(state_with("optimizer_rank1.safetensors", "/etc/passwd"), f); },
      {f, "optimizer.shards[1].file", "plain file name"});
  expect_error([&] { parse_trainer_state(state_with("\"in_a_row\": 1", "\"in_a_row\": 9"), f); },
               {f, "bad_steps"});
  expect_error([&] { parse_trainer_state(state_with("\"steps\": 117", "\"steps\": 500"), f); },
               {f, "optimizer.steps", "500"});
  expect_error([&] { parse_trainer_state(state_with("\"adamw\"", "\"lion\""), f); },
               {f, "optimizer.name", "lion"});
  expect_error([&] { parse_trainer_state(state_with("\"scale\": 32768.0", "\"scale\": 0.0"), f); },
               {f, "loss_scale.scale"});
  expect_error([&] { parse_trainer_state(state_with("\"seed\": 1338", "\"seed\": \"x\""), f); },
               {f, "data.seed"});
  expect_error([&] { parse_trainer_state(state_with("\"rngs\"", "\"rngz\""), f); },
               {f, "field 'rngs' is missing"});
}

TEST(CheckpointFiles, SafeFileNames) {
  EXPECT_TRUE(is_safe_file_name("optimizer_rank12.safetensors"));
  for (const char* bad : {"", ".", "..", ".hidden", "a/b", "a\\b", "a b", "x\n"})
    EXPECT_FALSE(is_safe_file_name(bad)) << bad;
  EXPECT_FALSE(is_safe_file_name(std::string(256, 'a')));
}
