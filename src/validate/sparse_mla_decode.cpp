// Validator of OP-SMLA-DEC, sparse MLA decode from a paged cache (SPEC §6.4, §7.1).
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>

#include "common/op_list.hpp"

namespace dsa::detail {
namespace {

// lse has logical shape [b, s_q, h_q] with arbitrary (non-negative, non-overlapping) strides, so
// that FlashMLA's [b, h_q, s_q] storage is expressible: its innermost stride need not be 1, which
// ArgCheck::tensor requires. A contiguous-innermost lse goes through ArgCheck::tensor as usual;
// otherwise the same rules are checked here and the lse storage is registered with the checker
// (for the device-location check) as a flat view of its addressed extent.
void check_lse(const TensorView& lse, ArgCheck& c) {
  if (!lse.present() || lse.rank != 3 || lse.stride[2] == 1 || lse.shape[2] <= 1 ||
      mask_of(lse.dtype) != kF32) {
    c.tensor("lse", lse, {"b", "s_q", "h_q"}, kF32);
  } else {
    const char* sym[3] = {"b", "s_q", "h_q"};
    for (int i = 0; i < 3 && c.ok(); ++i) {
      if (!c.require(lse.shape[i] >= 0, StatusCode::kInvalidArgument, "lse.shape[%d] = %lld is negative", i,
                     (long long)lse.shape[i]))
        break;
      if (!c.require(lse.stride[i] >= 0, StatusCode::kInvalidArgument,
                     "lse.stride[%d] = %lld is negative (negative strides are not supported)", i,
                     (long long)lse.stride[i]))
        break;
      char origin[32];
      std::snprintf(origin, sizeof(origin), "lse.shape[%d]", i);
      c.bind(sym[i], lse.shape[i], origin);
    }
    if (!c.ok()) return;
    int64_t last = 0;
    bool overflow = false;
    for (int i = 0; i < 3; ++i) {
      int64_t term = 0;
      if (lse.shape[i] > 0 && (__builtin_mul_overflow(lse.shape[i] - 1, lse.stride[i], &term) ||
                               __builtin_add_overflow(last, term, &last)))
        overflow = true;
    }
    if (!c.require(!overflow && last < (INT64_MAX / 4), StatusCode::kInvalidArgument,
                   "lse: shape and strides address more than 2^61 elements"))
      return;
    // Outputs must not overlap themselves: sorted by stride, each dim must step past the previous.
    int order[3] = {0, 1, 2};
    std::sort(order, order + 3, [&](int a, int b) { return lse.stride[a] < lse.stride[b]; });
    int64_t span = 1;
    bool overlap = false;
    for (int k = 0; k < 3; ++k) {
      const int d = order[k];
      if (lse.shape[d] <= 1) continue;
      if (lse.stride[d] < span) overlap = true;
      span = lse.stride[d] * lse.shape[d];
    }
    if (!c.require(!overlap || lse.numel() == 0, StatusCode::kInvalidArgument,
                   "lse strides (%lld, %lld, %lld) make distinct elements overlap", (long long)lse.stride[0],
                   (long long)lse.stride[1], (long long)lse.stride[2]))
      return;
    // Registered as its flat storage extent [last + 1] (null / alignment checks, device location).
    thread_local TensorView flat;
    flat = lse.numel() == 0 ? make_view(lse.data, DType::kF32, {0}) : make_view(lse.data, DType::kF32, {last + 1});
    c.tensor("lse", flat, {"*"}, kF32);
  }
}

}  // namespace

void validate(const SparseMlaDecodeParams& p, ArgCheck& c) {
  c.tensor("q", p.q, {"b", "s_q", "h_q", "576"}, kBF16);
  const bool fp8 = p.cache.dtype == DType::kU8;
  if (fp8 || !p.cache.present())
    c.tensor("cache", p.cache, {"num_blocks", "P", "656"}, kU8 | kBF16);
  else
    c.tensor("cache", p.cache, {"num_blocks", "P", "576"}, kU8 | kBF16);
  c.require(c.dim("P") >= 1, StatusCode::kUnsupportedShape, "cache.shape[1] = P = %lld must be at least 1",
            (long long)c.dim("P"));
  c.tensor("indices", p.indices, {"b", "s_q", "topk"}, kI32);
  c.require(c.dim("topk") >= 1, StatusCode::kUnsupportedShape, "indices.shape[2] = topk = %lld must be at least 1",
            (long long)c.dim("topk"));
  c.tensor("topk_length", p.topk_length, {"b"}, kI32, Need::kOptional);
  c.tensor("attn_sink", p.attn_sink, {"h_q"}, kF32, Need::kOptional);
  c.tensor("out", p.out, {"b", "s_q", "h_q", "512"}, kBF16 | kF32);
  check_lse(p.lse, c);
  c.require(std::isfinite(p.sm_scale) && p.sm_scale > 0.0f, StatusCode::kInvalidArgument,
            "sm_scale = %g must be finite and > 0 (V3.2: 0.1352337789)", (double)p.sm_scale);
  c.require(p.lse_base == LseBase::kNatural || p.lse_base == LseBase::kBase2, StatusCode::kInvalidArgument,
            "lse_base = %d is not a LseBase", (int)p.lse_base);
}

}  // namespace dsa::detail
