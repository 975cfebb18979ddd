#include "dist/store_channel.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"
#include "dist/clock.h"

namespace tessera::dist {
namespace {

void put_u32(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s.push_back(char((v >> (8 * i)) & 0xff));
}
void put_u64(std::string& s, uint64_t v) {
  for (int i = 0; i < 8; ++i) s.push_back(char((v >> (8 * i)) & 0xff));
}
uint64_t get_le(const unsigned char* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
std::string bytes(const StoreNonce& n) {
  return std::string(reinterpret_cast<const char*>(n.data()), n.size());
}

// Waits until fd is readable (POLLIN) or writable (POLLOUT), or throws at the deadline.
void wait_ready(int fd, short events, double deadline, const char* what) {
  for (;;) {
    int ms = -1;
    if (deadline > 0) {
      const double left = deadline - monotonic_seconds();
      if (left <= 0) throw ChannelError(fmt::format("timed out {}", what));
      ms = int(left * 1000) + 1;
    }
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, ms);
    if (r > 0) return;
    if (r < 0 && errno != EINTR) throw ChannelError(fmt::format("poll: {}", std::strerror(errno)));
  }
}

constexpr char kMagic[4] = {'T', 'S', 'S', '1'};

std::string client_proof_input(const StoreNonce& sn, const StoreNonce& cn, int rank, int world) {
  std::string s = "client" + bytes(sn) + bytes(cn);
  put_u32(s, uint32_t(rank));
  put_u32(s, uint32_t(world));
  return s;
}
std::string session_key(const std::string& token, const StoreNonce& sn, const StoreNonce& cn) {
  const StoreMac k = hmac_sha256(token, "session" + bytes(sn) + bytes(cn));
  return std::string(reinterpret_cast<const char*>(k.data()), k.size());
}

}  // namespace

StoreNonce random_nonce() {
  StoreNonce n{};
  TS_CHECK(RAND_bytes(n.data(), int(n.size())) == 1, "store: RAND_bytes failed");
  return n;
}

StoreMac hmac_sha256(const std::string& key, const std::string& data) {
  StoreMac out{};
  unsigned int len = 0;
  const unsigned char* r =
      HMAC(EVP_sha256(), key.data(), int(key.size()),
           reinterpret_cast<const unsigned char*>(data.data()), data.size(), out.data(), &len);
  TS_CHECK(r && len == out.size(), "store: HMAC-SHA256 failed");
  return out;
}

bool macs_equal(const StoreMac& a, const StoreMac& b) {
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

void write_all(int fd, const void* data, size_t n, double deadline) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    wait_ready(fd, POLLOUT, deadline, "sending to the peer");
    const ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL);
    if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (k <= 0) throw ChannelError(fmt::format("send: {}", std::strerror(errno)));
    p += k;
    n -= size_t(k);
  }
}

void read_all(int fd, void* data, size_t n, double deadline) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    wait_ready(fd, POLLIN, deadline, "waiting for the peer");
    const ssize_t k = ::recv(fd, p, n, 0);
    if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (k == 0) throw ChannelError("the peer closed the connection");
    if (k < 0) throw ChannelError(fmt::format("recv: {}", std::strerror(errno)));
    p += k;
    n -= size_t(k);
  }
}

StoreMac StoreChannel::mac(char direction, uint64_t seq, const std::string& payload) const {
  std::string s(1, direction);
  put_u64(s, seq);
  put_u32(s, uint32_t(payload.size()));
  return hmac_sha256(key_, s + payload);
}

std::string StoreChannel::frame(const std::string& payload, uint64_t seq) const {
  TS_CHECK(payload.size() <= kMaxStorePayload, "store: a message of {} bytes is over the {} limit",
           payload.size(), kMaxStorePayload);
  std::string s;
  put_u64(s, seq);
  put_u32(s, uint32_t(payload.size()));
  s += payload;
  const StoreMac m = mac(server_ ? 'S' : 'C', seq, payload);
  s.append(reinterpret_cast<const char*>(m.data()), m.size());
  return s;
}

void StoreChannel::send(const std::string& payload, double deadline) {
  const std::string f = frame(payload, send_seq_++);
  write_all(fd_, f.data(), f.size(), deadline);
}

std::string StoreChannel::receive(double deadline) {
  unsigned char head[12];
  read_all(fd_, head, sizeof head, deadline);
  const uint64_t seq = get_le(head, 8);
  const uint64_t len = get_le(head + 8, 4);
  // Before allocating: a peer must not choose how much memory this process reserves.
  if (len > kMaxStorePayload)
    throw ChannelError(
        fmt::format("refused a message: length prefix {} is over the limit of {} bytes", len,
                    kMaxStorePayload));
  std::string payload(len, '\0');
  read_all(fd_, payload.data(), len, deadline);
  StoreMac got{};
  read_all(fd_, got.data(), got.size(), deadline);
  if (!macs_equal(got, mac(server_ ? 'C' : 'S', seq, payload)))
    throw ChannelError("refused a message: its HMAC does not verify (forged or altered)");
  if (seq != recv_seq_)
    throw ChannelError(
        fmt::format("refused a message: sequence number {}, expected {} (replayed or out of order)",
                    seq, recv_seq_));
  ++recv_seq_;
  return payload;
}

std::string store_client_handshake(int fd, const std::string& token, int rank, int world,
                                   double deadline) {
  char magic[4];
  StoreNonce sn{};
  read_all(fd, magic, sizeof magic, deadline);
  if (std::memcmp(magic, kMagic, sizeof magic) != 0)
    throw ChannelError("the peer is not a Tessera store (wrong greeting)");
  read_all(fd, sn.data(), sn.size(), deadline);
  const StoreNonce cn = random_nonce();
  std::string hello = bytes(cn);
  put_u32(hello, uint32_t(rank));
  put_u32(hello, uint32_t(world));
  const StoreMac proof = hmac_sha256(token, client_proof_input(sn, cn, rank, world));
  hello.append(reinterpret_cast<const char*>(proof.data()), proof.size());
  write_all(fd, hello.data(), hello.size(), deadline);
  char verdict = 0;
  try {
    read_all(fd, &verdict, 1, deadline);
  } catch (const ChannelError&) {
    verdict = 'R';  // the server closes on a wrong token
  }
  if (verdict != 'A')
    throw ChannelError(
        "the store refused this rank's handshake (a job token different from rank 0's, or the "
        "rank is taken or out of range: rank 0's log says which)");
  StoreMac server_proof{};
  read_all(fd, server_proof.data(), server_proof.size(), deadline);
  if (!macs_equal(server_proof, hmac_sha256(token, "server" + bytes(sn) + bytes(cn))))
    throw ChannelError("the store did not prove that it knows the job token");
  return session_key(token, sn, cn);
}

ServerHandshake store_server_handshake(
    int fd, const std::string& token, double deadline,
    const std::function<std::string(int rank, int world)>& admit) {
  const StoreNonce sn = random_nonce();
  std::string greeting(kMagic, sizeof kMagic);
  greeting += bytes(sn);
  write_all(fd, greeting.data(), greeting.size(), deadline);
  unsigned char hello[kStoreNonceBytes + 8 + kStoreMacBytes];
  read_all(fd, hello, sizeof hello, deadline);
  StoreNonce cn{};
  std::memcpy(cn.data(), hello, cn.size());
  ServerHandshake h;
  h.rank = int(int32_t(get_le(hello + kStoreNonceBytes, 4)));
  h.world = int(int32_t(get_le(hello + kStoreNonceBytes + 4, 4)));
  StoreMac proof{};
  std::memcpy(proof.data(), hello + kStoreNonceBytes + 8, proof.size());
  if (!macs_equal(proof, hmac_sha256(token, client_proof_input(sn, cn, h.rank, h.world)))) {
    const char no = 'R';
    try {
      write_all(fd, &no, 1, deadline);
    } catch (const ChannelError&) {
    }
    throw ChannelError("refused a client: wrong job token (its handshake HMAC does not verify)");
  }
  if (const std::string why = admit(h.rank, h.world); !why.empty()) {
    const char no = 'R';
    write_all(fd, &no, 1, deadline);
    throw ChannelError("refused rank " + std::to_string(h.rank) + ": " + why);
  }
  std::string yes(1, 'A');
  const StoreMac mine = hmac_sha256(token, "server" + bytes(sn) + bytes(cn));
  yes.append(reinterpret_cast<const char*>(mine.data()), mine.size());
  write_all(fd, yes.data(), yes.size(), deadline);
  h.session_key = session_key(token, sn, cn);
  return h;
}

}  // namespace tessera::dist
