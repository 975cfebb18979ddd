// The shared secret of a torchrun-style job: every rank must hold the same token, and rank 0's
// store (tcp_store.h) admits only clients that prove they know it. Tessera does not generate
// it: the launcher or the user does, once per job, and hands it to every rank, e.g.
//   export TESSERA_JOB_TOKEN=$(openssl rand -hex 32)
// or writes it to a file only its owner can read and sets TESSERA_JOB_TOKEN_FILE to its path
// (a file readable or writable by group or others is refused: anyone who can read the token can
// join the job). docs/DISTRIBUTED.md, "torchrun-style launch (GPU, no MPI)".
#pragma once
#include <string>

#include "dist/bootstrap.h"

namespace tessera::dist {

constexpr const char* kJobTokenEnv = "TESSERA_JOB_TOKEN";
constexpr const char* kJobTokenFileEnv = "TESSERA_JOB_TOKEN_FILE";
// Shorter tokens are refused: the HMAC is only as strong as the secret.
constexpr size_t kMinJobTokenBytes = 16;

// The token from TESSERA_JOB_TOKEN, else from the file TESSERA_JOB_TOKEN_FILE names (trailing
// whitespace dropped). Throws Error saying how to set one when neither is set, when both are,
// when the file is unreadable or open to group/others, or when the token is too short.
std::string load_job_token(const EnvLookup& env = process_env);

}  // namespace tessera::dist
