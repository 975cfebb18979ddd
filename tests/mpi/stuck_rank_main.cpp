// Ranks that stop making progress with every heartbeat on time (tests/mpi/stuck_rank_tests.sh
// runs this under mpirun with MpiOptions::stuck_timeout_s = argv[1]):
//   stuck     after a first barrier, rank 1's thread sleeps for a minute while the other ranks
//             wait in a second barrier: they must end the job naming rank 1;
//   deadlock  after a first barrier, rank 1 waits in a recv from rank 0 while every other rank
//             waits in a second barrier (the calls in different orders): every rank waits on
//             another, and they must end the job naming what each waits in. The recv is on a
//             communicator split with the ranks in reverse order (rank 0 is its last rank):
//             the reports must still name world rank 0.
// Within the timeout plus a heartbeat or two; this program returning means they did not.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "core/tensor.h"
#include "dist/mpi_comm.h"

int main(int argc, char** argv) {
  using namespace tessera;
  dist::MpiOptions options;
  options.timeout_s = 30;
  options.stuck_timeout_s = argc > 1 ? std::atof(argv[1]) : 2;
  const bool deadlock = argc > 2 && std::strcmp(argv[2], "deadlock") == 0;
  auto world = dist::mpi_world(options);
  world->barrier();
  const int n = world->world_size();
  const auto reversed = world->split(0, n - 1 - world->rank());
  if (world->rank() == 1) {
    if (deadlock)
      reversed->recv(Tensor::zeros({4}), n - 1);  // world rank 0
    else
      std::this_thread::sleep_for(std::chrono::seconds(60));
  }
  world->barrier();
  std::printf("rank %d: the second barrier returned: the %s was not detected\n", world->rank(),
              deadlock ? "deadlock" : "stuck rank");
  return 1;
}
