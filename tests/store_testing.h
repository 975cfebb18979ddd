// Shared by the tests of rank 0's TCP store and of the heartbeats over it: the job token, the
// options of a loopback store, and a free port.
#pragma once
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "dist/tcp_store.h"

namespace tessera::dist::testing {

inline const std::string kToken = "0123456789abcdef0123456789abcdef";

inline StoreOptions options(int world, double timeout_s = 10) {
  StoreOptions o;
  o.host = "127.0.0.1";
  o.token = kToken;
  o.world_size = world;
  o.timeout_s = timeout_s;
  o.log_refusals = std::getenv("STORE_LOG") != nullptr;
  return o;
}

// A port nobody listens on now (bound to 127.0.0.1:0 and released).
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

}  // namespace tessera::dist::testing
