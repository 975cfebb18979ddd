// What the multi-rank gtest binaries of tests/mpi share: the world communicator (MPI, a 30 s
// heartbeat timeout so a dead rank fails the test instead of hanging it; TESSERA_TEST_MPI_OVERLAP
// = on or off sets MpiOptions::overlap, automatic otherwise) and main()'s body:
//   int main(int argc, char** argv) { return tessera::testing::run_mpi_tests(argc, argv); }
// Tests reach the communicator through world() (or world_comm() where a shared_ptr is needed).
#pragma once
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "dist/mpi_comm.h"
#include "mpi/rank_output.h"
#include "scratch.h"

namespace tessera::testing {

// Every rank of the job; set while run_mpi_tests runs the tests.
inline std::shared_ptr<dist::Communicator>& world_comm() {
  static std::shared_ptr<dist::Communicator> world;
  return world;
}
inline dist::Communicator& world() {
  return *world_comm();
}

// A scratch folder for one test's job (scratch.h), made by rank 0; every rank gets its path.
inline std::filesystem::path job_scratch_dir(const std::string& name) {
  std::string path;
  if (world().rank() == 0) path = scratch_dir(name).string();
  return world().all_gather_bytes(path)[0];
}

// Starts MPI, runs every test on every rank (rank 0 prints as usual, the others only their
// failures), then releases the communicator and shuts MPI down. Returns main()'s status.
inline int run_mpi_tests(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  dist::MpiOptions mo;
  mo.timeout_s = 30;
  if (const char* overlap = std::getenv("TESSERA_TEST_MPI_OVERLAP"))
    mo.overlap = dist::MpiOptions::overlap_named(overlap);
  world_comm() = dist::mpi_world(mo);
  print_passes_on_rank0_only(world().rank());
  const int rc = RUN_ALL_TESTS();
  if (rc != 0) std::fprintf(stderr, "rank %d: tests FAILED\n", world().rank());
  world_comm().reset();
  dist::mpi_shutdown();
  return rc;
}

}  // namespace tessera::testing
