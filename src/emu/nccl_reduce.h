// The emulated NCCL's arithmetic: element sizes and names of NCCL's data types and operators,
// and the element-wise reduction rank 0 applies to every rank's contribution.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include <nccl.h>

namespace tessera::emu::nccl {

// Bytes per element; 0 for a value that is not an ncclDataType_t.
size_t type_size(ncclDataType_t type);
// "ncclFloat32", ... ("invalid type N" otherwise).
std::string type_name(ncclDataType_t type);
// "ncclSum", ... ("invalid op N" otherwise).
std::string op_name(ncclRedOp_t op);
// Whether `type` can be reduced with the built-in operators (fp8 cannot, here).
bool reducible(ncclDataType_t type);

// out[i] = in[0][i] op in[1][i] op ... op in[n-1][i] for i < count, folding left in rank order.
// 16-bit floats are accumulated in f32 and rounded once; ncclAvg divides the sum by n once at
// the end. `out` may be one of the inputs (each element is read before it is written). The
// type must be reducible and the op built-in.
void reduce(const std::vector<const void*>& in, void* out, size_t count, ncclDataType_t type,
            ncclRedOp_t op);

}  // namespace tessera::emu::nccl
