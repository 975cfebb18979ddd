// A rank alive but stuck outside communication (tests/mpi/stuck_rank_tests.sh runs this under
// mpirun): after a first barrier, rank 1's thread sleeps for a minute, its heartbeats still on
// time, while the other ranks wait in a second barrier. They must end the job naming rank 1
// within MpiOptions::stuck_timeout_s (argv[1]) plus a heartbeat or two; this program returning
// means they did not.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "dist/mpi_comm.h"

int main(int argc, char** argv) {
  using namespace tessera;
  dist::MpiOptions options;
  options.timeout_s = 30;
  options.stuck_timeout_s = argc > 1 ? std::atof(argv[1]) : 2;
  auto world = dist::mpi_world(options);
  world->barrier();
  if (world->rank() == 1) std::this_thread::sleep_for(std::chrono::seconds(60));
  world->barrier();
  std::printf("rank %d: the second barrier returned: the stuck rank was not detected\n",
              world->rank());
  return 1;
}
