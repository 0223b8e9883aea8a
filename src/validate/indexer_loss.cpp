// Validators of the indexer KL losses, OP-LOSS-DENSE and OP-LOSS-SPARSE (SPEC §8.1–8.4).
#include <cmath>

#include "common/op_list.hpp"

namespace dsa::detail {
namespace {

// Teacher inputs, student inputs, options and outputs shared by both ops. `keys` declares the
// op's own valid-set arguments (ks/ke or indices/topk_length) between teacher and student.
template <class P, class Keys>
void validate_common(const P& p, ArgCheck& c, Keys&& keys) {
  c.tensor("q", p.q, {"s_q", "h_q", "d_qk"}, kBF16 | kF32);
  c.tensor("kv", p.kv, {"s_kv", "d_qk"}, kBF16 | kF32);
  c.tensor("lse", p.lse, {"s_q", "h_q"}, kF32);
  c.require(c.dim("h_q") != 0, StatusCode::kUnsupportedShape,
            "q.shape[1] = 0: the teacher needs at least one head");
  c.require(std::isfinite(p.sm_scale) && p.sm_scale > 0.0f, StatusCode::kInvalidArgument,
            "sm_scale = %g must be finite and > 0 (SPEC D5: pass it explicitly)", (double)p.sm_scale);
  c.require(p.lse_base == LseBase::kNatural || p.lse_base == LseBase::kBase2,
            StatusCode::kInvalidArgument, "lse_base = %d is not a LseBase", (int)p.lse_base);
  keys();
  c.tensor("q_idx", p.q_idx, {"s_q", "h_idx", "d_idx"}, kBF16 | kF32);
  c.tensor("k_idx", p.k_idx, {"s_kv", "d_idx"}, kBF16 | kF32);
  c.tensor("weights", p.weights, {"s_q", "h_idx"}, kF32);
  c.tensor("row_mask", p.row_mask, {"s_q"}, kU8 | kI32, Need::kOptional);
  c.require(p.reduction == LossReduction::kSum || p.reduction == LossReduction::kMean,
            StatusCode::kInvalidArgument, "reduction = %d is not a LossReduction (0 sum, 1 mean)",
            (int)p.reduction);
  c.require(std::isfinite(p.coefficient), StatusCode::kInvalidArgument,
            "coefficient = %g must be finite", (double)p.coefficient);
  c.tensor("loss", p.loss, {"1"}, kF32 | kF64);
  c.tensor("row_kl", p.row_kl, {"s_q"}, kF32 | kF64, Need::kOptional);
  c.tensor("dq_idx", p.dq_idx, {"s_q", "h_idx", "d_idx"}, kF32 | kF64, Need::kOptional);
  c.tensor("dk_idx", p.dk_idx, {"s_kv", "d_idx"}, kF32 | kF64, Need::kOptional);
  c.tensor("dweights", p.dweights, {"s_q", "h_idx"}, kF32 | kF64, Need::kOptional);
  c.require(c.dim("s_kv") <= INT32_MAX, StatusCode::kUnsupportedShape,
            "kv.shape[0] = %lld exceeds the int32 key index range", (long long)c.dim("s_kv"));
}

}  // namespace

void validate(const IndexerLossDenseParams& p, ArgCheck& c) {
  validate_common(p, c, [&] {
    c.tensor("ks", p.ks, {"s_q"}, kI32);
    c.tensor("ke", p.ke, {"s_q"}, kI32);
  });
}

void validate(const IndexerLossSparseParams& p, ArgCheck& c) {
  validate_common(p, c, [&] {
    c.tensor("indices", p.indices, {"s_q", "topk"}, kI32);
    c.tensor("topk_length", p.topk_length, {"s_q"}, kI32, Need::kOptional);
    c.require(p.teacher == SparseTeacher::kSparseHeadMean ||
                  p.teacher == SparseTeacher::kDenseRenormalized,
              StatusCode::kInvalidArgument, "teacher = %d is not a SparseTeacher", (int)p.teacher);
    c.require(p.teacher != SparseTeacher::kDenseRenormalized, StatusCode::kNotImplemented,
              "teacher = kDenseRenormalized (SPEC §8.3 alternative reading) is reserved and not "
              "implemented; use kSparseHeadMean (SPEC D8)");
  });
}

}  // namespace dsa::detail
