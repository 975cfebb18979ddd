#include "dist/job_token.h"

#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "core/error.h"

namespace tessera::dist {
namespace {

std::string read_token_file(const std::string& path) {
  struct stat st {};
  TS_CHECK(::stat(path.c_str(), &st) == 0, "{}={}: cannot read the job token file",
           kJobTokenFileEnv, path);
  TS_CHECK(S_ISREG(st.st_mode), "{}={}: not a regular file", kJobTokenFileEnv, path);
  // Whoever can read the token can join the job, forge and replay store messages.
  TS_CHECK((st.st_mode & (S_IRWXG | S_IRWXO)) == 0,
           "{}={}: the job token file is open to group or others (mode {:o}): chmod 600 it",
           kJobTokenFileEnv, path, st.st_mode & 0777);
  std::ifstream in(path, std::ios::binary);
  TS_CHECK(in, "{}={}: cannot open the job token file", kJobTokenFileEnv, path);
  std::ostringstream s;
  s << in.rdbuf();
  std::string token = s.str();
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
  return token;
}

}  // namespace

std::string load_job_token(const EnvLookup& env) {
  const std::optional<std::string> value = env(kJobTokenEnv), file = env(kJobTokenFileEnv);
  TS_CHECK(value || file,
           "a torchrun-style launch needs a job token shared by every rank, so that rank 0's "
           "store admits only this job's ranks: set {} (e.g. export {}=$(openssl rand -hex 32), "
           "the same on every rank) or {} (a file of mode 600 holding it)",
           kJobTokenEnv, kJobTokenEnv, kJobTokenFileEnv);
  TS_CHECK(!(value && file), "both {} and {} are set: set one", kJobTokenEnv, kJobTokenFileEnv);
  const std::string token = value ? *value : read_token_file(*file);
  TS_CHECK(token.size() >= kMinJobTokenBytes,
           "the job token ({}) has {} bytes, expected at least {} (e.g. openssl rand -hex 32)",
           value ? kJobTokenEnv : kJobTokenFileEnv, token.size(), kMinJobTokenBytes);
  return token;
}

}  // namespace tessera::dist
