// TESSERA_FAULT_STALL's parser (src/train/fault_stall.h); the stall itself runs in
// tests/emu/train_2_ranks.sh and train_torchrun_2_ranks.sh.
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "train/fault_stall.h"

using tessera::train::FaultStall;
using tessera::train::parse_fault_stall;

TEST(FaultStall, ParsesRankStepSeconds) {
  EXPECT_EQ(parse_fault_stall(""), std::nullopt);
  EXPECT_EQ(parse_fault_stall("1:3:120"), (FaultStall{1, 3, 120}));
  EXPECT_EQ(parse_fault_stall("0:0:0"), (FaultStall{0, 0, 0}));
  EXPECT_EQ(parse_fault_stall("999999:999999999999:999999"),
            (FaultStall{999999, 999999999999LL, 999999}));
}

TEST(FaultStall, RefusesAnythingElseQuotingIt) {
  for (const char* bad :
       {"1:3", "1:3:", ":3:120", "1:3:120:", "1:3:inf", "1:3:1e9", "-1:3:120", "1:3:1.5",
        "1 :3:120", "1234567:3:120", "1:3:1234567", "1:1234567890123:1"}) {
    try {
      parse_fault_stall(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const tessera::Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("TESSERA_FAULT_STALL = '") + bad +
                                           "': expected RANK:STEP:SECONDS"),
                std::string::npos)
          << e.what();
    }
  }
}
