// Cross-entropy over logits whose vocabulary is split across ranks (tensor parallelism's
// vocabulary-parallel head: no rank ever holds a row's full logits). In three phases around one
// small exchange:
//   1. stats     each rank, per row of its logits [rows, V] (vocabulary ids first_id ..
//                first_id + V - 1): the row's log-sum-exp over its columns and the target's
//                logit when it holds the target;
//   2. combine   every rank, from all ranks' stats gathered in rank order: the whole row's
//                log-sum-exp and the loss (the same arithmetic on every rank: the same bits);
//   3. backward  each rank, its own columns' gradient from the whole row's log-sum-exp.
// f32 arithmetic, exp as math::exp_f32 (the unsharded kernel's), rows summed in row order.
#pragma once
#include <cstdint>

#include "core/half.h"
#include "kernels/common/cross_entropy.h"

namespace tessera::cpu {

// stats [2, rows]: stats[r] = log sum_c exp(logits[r, c]) (-inf when V is 0), stats[rows + r] =
// logits[r, target - first_id] when first_id <= target < first_id + V, else 0. Ignored rows
// (target == ignore_index) get 0 and 0.
void sharded_cross_entropy_stats(const float* logits, const int32_t* targets, float* stats,
                                 int64_t rows, int64_t V, int64_t first_id, int32_t ignore_index);

// all [ranks, 2, rows]: every rank's stats. Writes lse[r] = log sum over ranks of exp(their
// stats), 0 for ignored rows, and returns the summed loss sum_r (lse[r] - target logit) over the
// counted rows, in row order.
kernels::CrossEntropySum sharded_cross_entropy_combine(const float* all, int64_t ranks,
                                                       const int32_t* targets, float* lse,
                                                       int64_t rows, int32_t ignore_index);

// gx[r, c] = scale * (exp(logits[r, c] - lse[r]) - [first_id + c == target]), 0 for ignored
// rows; stored as TG (f32, or bf16 for a bf16 GEMM's backward).
template <class TG>
void sharded_cross_entropy_backward(const float* logits, const int32_t* targets, const float* lse,
                                    float scale, TG* gx, int64_t rows, int64_t V, int64_t first_id,
                                    int32_t ignore_index);

}  // namespace tessera::cpu
