#include "dist/data_parallel.h"

#include <cstring>

#include "dist/ddp.h"
#include "dist/zero.h"

namespace tessera::dist {

std::unique_ptr<DataParallel> make_data_parallel(nn::Module& model, Communicator& comm,
                                                 const DataParallelOptions& opt, Tracer* tracer,
                                                 const ParameterUnits& units) {
  TS_CHECK(opt.zero_stage >= 0 && opt.zero_stage <= 3,
           "parallel.zero_stage = {}: expected 0, 1, 2 or 3", opt.zero_stage);
  TS_CHECK(opt.bucket_mb > 0, "parallel.bucket_mb = {}: expected > 0", opt.bucket_mb);
  if (opt.zero_stage == 0) return std::make_unique<DDP>(model, comm, opt, tracer);
  return std::make_unique<Zero>(model, comm, opt, tracer, units);
}

uint64_t fnv1a(const float* p, int64_t n, uint64_t h) {
  const auto* b = reinterpret_cast<const unsigned char*>(p);
  for (int64_t i = 0; i < n * int64_t(sizeof(float)); ++i) {
    h ^= b[i];
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace tessera::dist
