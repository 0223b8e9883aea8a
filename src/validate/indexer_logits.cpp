// Validators of OP-IDXLOGITS prefill (SPEC §4.2 step 7, §4.6, §12.3). The key ranges [ks, ke) are
// values, checked by the reference (validate never reads contents).
#include "validate/shared.hpp"

namespace dsa::detail {

void validate_indexer_logits_inputs(const IndexerLogitsParams& p, ArgCheck& c) {
  c.tensor("q", p.q, {"s_q", "h_idx", "d_idx"}, kE4M3 | kBF16 | kF32);
  c.tensor("k", p.k, {"s_kv", "d_idx"}, kE4M3 | kBF16 | kF32);
  if (!c.ok()) return;
  const bool fp8 = p.q.dtype == DType::kE4M3;
  c.require(fp8 == (p.k.dtype == DType::kE4M3), StatusCode::kUnsupportedDtype,
            "q.dtype = %s and k.dtype = %s: FP8 mode needs both e4m3, exact mode both bf16 or f32",
            dtype_name(p.q.dtype), dtype_name(p.k.dtype));
  c.require(c.dim("h_idx") >= 1, StatusCode::kUnsupportedShape, "q.shape[1] = h_idx = %lld, expected >= 1",
            (long long)c.dim("h_idx"));
  c.require(c.dim("d_idx") >= 1, StatusCode::kUnsupportedShape, "q.shape[2] = d_idx = %lld, expected >= 1",
            (long long)c.dim("d_idx"));
  c.require(c.dim("s_kv") <= INT32_MAX, StatusCode::kUnsupportedShape,
            "k.shape[0] = s_kv = %lld exceeds the int32 key ranges", (long long)c.dim("s_kv"));
  if (fp8) {
    c.tensor("k_scale", p.k_scale, {"s_kv"}, kF32);
  } else {
    c.require(!p.k_scale.present(), StatusCode::kInvalidArgument,
              "k_scale is given but q and k are %s/%s (exact mode takes no key scale; FP8 mode needs e4m3)",
              dtype_name(p.q.dtype), dtype_name(p.k.dtype));
  }
  c.tensor("weights", p.weights, {"s_q", "h_idx"}, kF32);
  c.tensor("ks", p.ks, {"s_q"}, kI32);
  c.tensor("ke", p.ke, {"s_q"}, kI32);
}

void validate(const IndexerLogitsParams& p, ArgCheck& c) {
  validate_indexer_logits_inputs(p, c);
  c.tensor("logits", p.logits, {"s_q", "s_kv"}, kF32);
}

}  // namespace dsa::detail
