// Rank 0's TCP store of torchrun-style launches (src/dist/tcp_store.h) and the store
// communicator over it, on loopback: threads act as ranks, raw sockets act as attackers.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "core/error.h"
#include "dist/clock.h"
#include "dist/job_token.h"
#include "dist/store_comm.h"
#include "dist/tcp_store.h"
#include "dist/world.h"
#include "store_testing.h"

using namespace tessera;
using namespace tessera::dist;
using namespace tessera::dist::testing;

namespace {

// A TCP connection to host:port, or -1 with errno set.
int connect_to(const char* host, int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  ::inet_pton(AF_INET, host, &a.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    const int e = errno;
    ::close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

// True when the server closes `fd` within 5 s (reads until EOF).
bool dropped(int fd) {
  try {
    char c;
    for (;;) read_all(fd, &c, 1, monotonic_seconds() + 5);
  } catch (const ChannelError& e) {
    return std::string(e.what()) == "the peer closed the connection";
  }
}

// The set request's payload, as TcpStoreClient encodes it ('S', key, value, length-prefixed).
std::string set_request(const std::string& key, const std::string& value) {
  std::string s = "S";
  for (const std::string* v : {&key, &value}) {
    for (int i = 0; i < 8; ++i) s.push_back(char((v->size() >> (8 * i)) & 0xff));
    s += *v;
  }
  return s;
}

// An authenticated raw connection as `rank`: the attacker who knows the token is the test's way
// to put well-framed but bad messages on an established session.
struct RawSession {
  int fd;
  std::unique_ptr<StoreChannel> ch;
  RawSession(int port, int rank, int world) : fd(connect_to("127.0.0.1", port)) {
    const std::string key =
        store_client_handshake(fd, kToken, rank, world, monotonic_seconds() + 5);
    ch = std::make_unique<StoreChannel>(fd, key, false);
  }
  ~RawSession() { ::close(fd); }
  void write(const std::string& bytes) { write_all(fd, bytes.data(), bytes.size(), 0); }
};

bool any_contains(const std::vector<std::string>& lines, const std::string& part) {
  for (const std::string& l : lines)
    if (l.find(part) != std::string::npos) return true;
  return false;
}

// The server logs a refusal just after it answers or drops the peer: wait up to 5 s for it.
bool refused_with(const TcpStoreServer& server, const std::string& part) {
  for (int i = 0; i < 500; ++i) {
    if (any_contains(server.refusals(), part)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

}  // namespace

TEST(TcpStore, SetGetAddWaitAcrossRankThreads) {
  const int world = 4;  // and a fifth client (rank 4) that checks the result
  TcpStoreServer server(options(world + 1));
  StoreOptions o = options(world + 1);
  o.port = server.port();
  std::vector<std::string> got(world * world);
  std::vector<int64_t> counts(world);
  std::vector<std::thread> ranks;
  for (int r = 0; r < world; ++r)
    ranks.emplace_back([&, r] {
      TcpStoreClient c(o, r);
      counts[size_t(r)] = c.add("counter", 1);
      c.set(fmt::format("k{}", r), std::string(size_t(r) + 1, char('a' + r)));
      std::vector<std::string> keys;
      for (int q = 0; q < world; ++q) keys.push_back(fmt::format("k{}", q));
      EXPECT_TRUE(c.wait(keys, 10).empty());
      for (int q = 0; q < world; ++q) got[size_t(r * world + q)] = c.get(keys[size_t(q)]);
    });
  for (std::thread& t : ranks) t.join();
  for (int r = 0; r < world; ++r)
    for (int q = 0; q < world; ++q)
      EXPECT_EQ(got[size_t(r * world + q)], std::string(size_t(q) + 1, char('a' + q)));
  std::sort(counts.begin(), counts.end());
  EXPECT_EQ(counts, (std::vector<int64_t>{1, 2, 3, 4}));
  TcpStoreClient c(o, 4);
  EXPECT_EQ(c.add("counter", 0), 4);
  // A key that never comes: the wait times out and names it.
  EXPECT_EQ(c.wait({"k0", "never"}, 0.2), (std::vector<std::string>{"never"}));
  EXPECT_TRUE(server.refusals().empty());
}

TEST(TcpStore, BindsOnlyToTheConfiguredAddress) {
  TcpStoreServer server(options(1));
  EXPECT_EQ(server.bound_address(), "127.0.0.1:" + std::to_string(server.port()));
  // 127.0.0.2 is this host too (all of 127/8 is loopback on Linux) but not the bound address.
  const int fd = connect_to("127.0.0.2", server.port());
  const int err = errno;
  if (fd >= 0) ::close(fd);
  EXPECT_LT(fd, 0) << "a connection to 127.0.0.2 reached a store bound to 127.0.0.1";
  EXPECT_EQ(err, ECONNREFUSED);
}

TEST(TcpStore, RefusesWrongSecretForgedReplayedAlteredOversized) {
  const int world = 8;
  TcpStoreServer server(options(world));
  StoreOptions good = options(world);
  good.port = server.port();
  TcpStoreClient rank0(good, 0);
  int refused = 0;

  // 1. A client with another token: refused at the handshake; its rank stays free.
  StoreOptions bad = good;
  bad.token = "not the job token, but long enough";
  const std::string e = error_of([&] { TcpStoreClient c(bad, 1); });
  EXPECT_NE(e.find("refused this rank's handshake"), std::string::npos) << e;
  if (refused_with(server, "wrong job token")) ++refused;
  TcpStoreClient rank1(good, 1);

  // 2. A forged message: valid framing and sequence number, a MAC not made with the session key.
  {
    RawSession s(server.port(), 2, world);
    std::string f = s.ch->frame(set_request("evil", "forged"), 0);
    for (size_t i = f.size() - kStoreMacBytes; i < f.size(); ++i) f[i] = char(0x5a);
    s.write(f);
    EXPECT_TRUE(dropped(s.fd));
    if (refused_with(server, "rank 2: refused a message: its HMAC does not verify")) ++refused;
  }
  // 3. A replayed message: a genuine set, sent twice.
  {
    RawSession s(server.port(), 3, world);
    const std::string f = s.ch->frame(set_request("replayed", "once"), 0);
    s.write(f);
    EXPECT_EQ(s.ch->receive(monotonic_seconds() + 5), "K");  // the first one is served
    s.write(f);
    EXPECT_TRUE(dropped(s.fd));
    if (refused_with(server, "rank 3: refused a message: sequence number 0, expected 1 (replayed"))
      ++refused;
  }
  // 4. An altered payload: a genuine frame with one value byte changed.
  {
    RawSession s(server.port(), 4, world);
    std::string f = s.ch->frame(set_request("altered", "genuine"), 0);
    f[12 + set_request("altered", "genuine").size() - 1] ^= 1;  // the last byte of the value
    s.write(f);
    EXPECT_TRUE(dropped(s.fd));
    if (refused_with(server, "rank 4: refused a message: its HMAC does not verify")) ++refused;
  }
  // 5. A length prefix over the limit: refused from the 12-byte header, before any allocation.
  {
    RawSession s(server.port(), 5, world);
    std::string head(8, '\0');
    head += std::string(4, char(0xff));  // 4 GiB - 1
    s.write(head);
    EXPECT_TRUE(dropped(s.fd));
    if (refused_with(server,
                     "rank 5: refused a message: length prefix 4294967295 is over the limit"))
      ++refused;
  }
  for (const std::string& r : server.refusals()) std::printf("[store refusal] %s\n", r.c_str());
  EXPECT_EQ(refused, 5);
  EXPECT_EQ(server.refusals().size(), 5u);
  std::printf(
      "[figure] store refused: wrong secret, forged message, replay, altered payload, oversized "
      "length prefix (%d/5)\n",
      refused);

  // The good clients are served on; nothing the refused messages carried was stored, the
  // replayed set took effect once.
  rank0.set("after", "still serving");
  EXPECT_EQ(rank1.get("after"), "still serving");
  EXPECT_EQ(rank1.wait({"evil", "altered"}, 0.2), (std::vector<std::string>{"evil", "altered"}));
  EXPECT_EQ(rank1.get("replayed"), "once");
}

TEST(TcpStore, RefusesARankTakenOrOutOfRange) {
  TcpStoreServer server(options(2));
  StoreOptions o = options(2);
  o.port = server.port();
  TcpStoreClient r1(o, 1);
  EXPECT_NE(error_of([&] { TcpStoreClient c(o, 1); }).find("refused"), std::string::npos);
  EXPECT_NE(error_of([&] { TcpStoreClient c(o, 7); }).find("refused"), std::string::npos);
  EXPECT_TRUE(refused_with(server, "refused rank 1: that rank is already connected"));
  EXPECT_TRUE(refused_with(server, "refused rank 7: rank out of range [0, 2)"));
}

TEST(TcpStore, BoundsConnectionsInTheirHandshake) {
  TcpStoreServer server(options(1));
  std::vector<int> idle;  // connected, never sending a byte: each holds a handshake slot
  for (int i = 0; i < 64; ++i) idle.push_back(connect_to("127.0.0.1", server.port()));
  // The server may not have accepted all of them yet: the 65th is refused once it has.
  bool refused = false;
  for (int attempt = 0; attempt < 50 && !refused; ++attempt) {
    const int extra = connect_to("127.0.0.1", server.port());
    char greeting[4];
    try {
      read_all(extra, greeting, sizeof greeting, monotonic_seconds() + 5);
    } catch (const ChannelError&) {
      refused = true;  // closed without a greeting
    }
    ::close(extra);
  }
  EXPECT_TRUE(refused);
  EXPECT_TRUE(refused_with(server, "others are in their handshake"));
  for (int fd : idle) ::close(fd);
  StoreOptions o = options(1);
  o.port = server.port();
  // Served again once the server has seen the idle ones go (it drops them at their EOF).
  std::unique_ptr<TcpStoreClient> c;
  for (int attempt = 0; attempt < 100 && !c; ++attempt) {
    try {
      c = std::make_unique<TcpStoreClient>(o, 0);
    } catch (const Error&) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  ASSERT_TRUE(c);
  c->set("k", "v");
  EXPECT_EQ(c->get("k"), "v");
}

TEST(TcpStore, ClientGivesUpOnAnUnreachableStoreNamingIt) {
  StoreOptions o = options(2, 0.5);
  o.port = free_port();
  const double t0 = monotonic_seconds();
  const std::string e = error_of([&] { TcpStoreClient c(o, 1); });
  EXPECT_LT(monotonic_seconds() - t0, 3.0);
  EXPECT_NE(e.find("could not reach rank 0's store at 127.0.0.1:" + std::to_string(o.port)),
            std::string::npos)
      << e;
}

TEST(StoreCommunicator, TimeoutNamesTheRanksThatNeverArrived) {
  StoreOptions o = options(4, 1);
  o.port = free_port();
  std::string e0, e1;
  const double t0 = monotonic_seconds();
  std::thread rank1([&] { e1 = error_of([&] { StoreCommunicator c(o, 1); }); });
  e0 = error_of([&] { StoreCommunicator c(o, 0); });
  rank1.join();
  const double took = monotonic_seconds() - t0;
  const std::string want = "rank 0's store at 127.0.0.1:" + std::to_string(o.port) +
                           ": ranks 2 and 3 of 4 never arrived within 1 s";
  EXPECT_NE(e0.find(want), std::string::npos) << e0;
  EXPECT_NE(e1.find(want), std::string::npos) << e1;
  EXPECT_LT(took, 8.0);
  std::printf("[figure] store rendezvous timeout 1 s: both waiting ranks failed after %.2f s: %s\n",
              took, e0.c_str());
}

TEST(StoreCommunicator, ARankWhoseProcessEndedIsNamedAtTheNextCollective) {
  StoreOptions o = options(2, 10);
  o.port = free_port();
  std::thread rank1([&] { StoreCommunicator c(o, 1); });  // arrives, then leaves
  StoreCommunicator rank0(o, 0);
  rank1.join();
  const double t0 = monotonic_seconds();
  const std::string e = error_of([&] { rank0.all_gather_bytes("x"); });
  const double took = monotonic_seconds() - t0;
  EXPECT_NE(e.find("rank 1 of 2 left (the connection to the store closed) before "
                   "all_gather_bytes #0"),
            std::string::npos)
      << e;
  EXPECT_LT(took, 5.0);  // named at once, not after collective_timeout_s (600 s)
  std::printf("[figure] a departed rank named after %.2f s: %s\n", took, e.c_str());
}

TEST(StoreCommunicator, UniqueIdAllGatherBarrierSplitOverFourRanks) {
  const int world = 4;
  StoreOptions o = options(world);
  o.port = free_port();
  std::string id(128, '\0');
  for (size_t i = 0; i < id.size(); ++i) id[i] = char((i * 37 + 11) & 0xff);  // NULs included
  std::vector<std::string> ids(world), errors(world), p2p_errors(world);
  std::vector<std::vector<std::string>> gathered(world), sub_gathered(world);
  std::vector<double> sums(world);
  std::vector<std::string> descriptions(world);
  std::vector<std::thread> ranks;
  for (int r = 0; r < world; ++r)
    ranks.emplace_back([&, r] {
      StoreCommunicator c(o, r);
      // The NCCL unique-id exchange: rank 0's 128 bytes to everyone (nccl_id.h's shape).
      ids[size_t(r)] = c.all_gather_bytes(r == 0 ? id : std::string())[0];
      gathered[size_t(r)] = c.all_gather_bytes(fmt::format("rank {}", r));
      c.barrier();
      sums[size_t(r)] = c.sum_f64(0.1 * (r + 1));
      std::unique_ptr<Communicator> half = c.split(r % 2, -r);  // reversed order within a half
      descriptions[size_t(r)] =
          std::to_string(half->rank()) + "/" + std::to_string(half->world_size());
      sub_gathered[size_t(r)] = half->all_gather_bytes(std::to_string(r));
      errors[size_t(r)] = error_of([&] { c.broadcast(Tensor::zeros({2}), 0); });
      p2p_errors[size_t(r)] = error_of([&] { c.send(Tensor::zeros({2}), (r + 1) % world); });
    });
  for (std::thread& t : ranks) t.join();
  for (int r = 0; r < world; ++r) {
    EXPECT_EQ(ids[size_t(r)], id) << "rank " << r;
    EXPECT_EQ(gathered[size_t(r)],
              (std::vector<std::string>{"rank 0", "rank 1", "rank 2", "rank 3"}));
    EXPECT_EQ(sums[size_t(r)], sums[0]);  // bit-identical on every rank
    EXPECT_NE(errors[size_t(r)].find("broadcast of tensors is not supported"), std::string::npos);
    EXPECT_NE(p2p_errors[size_t(r)].find(
                  fmt::format("send (to peer {}) of tensors is not supported", (r + 1) % world)),
              std::string::npos)
        << p2p_errors[size_t(r)];
  }
  EXPECT_NEAR(sums[0], 1.0, 1e-12);
  // color 0 = ranks {0, 2}, key -r: rank 2 first.
  EXPECT_EQ(descriptions, (std::vector<std::string>{"1/2", "1/2", "0/2", "0/2"}));
  EXPECT_EQ(sub_gathered[0], (std::vector<std::string>{"2", "0"}));
  EXPECT_EQ(sub_gathered[1], (std::vector<std::string>{"3", "1"}));
  std::printf(
      "[figure] 128-byte unique id through the store to 4 rank threads: identical on 4/4\n");
}

TEST(JobToken, FromTheEnvironmentOrAPrivateFile) {
  std::map<std::string, std::string> vars;
  const EnvLookup env = [&](const std::string& n) -> std::optional<std::string> {
    auto it = vars.find(n);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
  EXPECT_NE(error_of([&] { load_job_token(env); }).find("openssl rand -hex 32"), std::string::npos);
  vars["TESSERA_JOB_TOKEN"] = "short";
  EXPECT_NE(error_of([&] { load_job_token(env); }).find("has 5 bytes, expected at least 16"),
            std::string::npos);
  vars["TESSERA_JOB_TOKEN"] = kToken;
  EXPECT_EQ(load_job_token(env), kToken);

  vars.clear();
  const std::string path =
      (std::filesystem::temp_directory_path() / ("tessera_token_" + std::to_string(::getpid())))
          .string();
  std::ofstream(path) << kToken << "\n";
  ::chmod(path.c_str(), 0644);
  vars["TESSERA_JOB_TOKEN_FILE"] = path;
  EXPECT_NE(error_of([&] { load_job_token(env); }).find("open to group or others (mode 644)"),
            std::string::npos);
  ::chmod(path.c_str(), 0600);
  EXPECT_EQ(load_job_token(env), kToken);  // trailing newline dropped
  std::filesystem::remove(path);
}

TEST(Launch, TorchrunStyleCpuRanksAreToldToUseMpi) {
  LaunchInfo l;
  l.launcher = "torchrun";
  l.rank = 0;
  l.world_size = 2;
  l.master_addr = "127.0.0.1";
  l.master_port = 29500;
  const std::string e = error_of([&] { communicator_for_launch(l, {}, /*gpu_job=*/false); });
  EXPECT_NE(e.find("CPU ranks need MPI: start them with mpirun or srun --mpi=pmix"),
            std::string::npos)
      << e;
}
