// Validator of OP-IDXPREP (SPEC §4.2 steps 1–6, §4.6, §7.2, §11.2).
#include "common/op_list.hpp"

namespace dsa::detail {

void validate(const IndexerPrepParams& p, ArgCheck& c) {
  const bool fp8 = p.mode == IndexerMode::kFp8;
  c.require(p.mode == IndexerMode::kFp8 || p.mode == IndexerMode::kExact, StatusCode::kInvalidArgument,
            "mode = %d is not an IndexerMode", (int)p.mode);
  c.require(!fp8 || p.hadamard, StatusCode::kInvalidArgument,
            "hadamard = false is not allowed in FP8 mode: the Hadamard rotation is part of the "
            "FP8 recipe and must be applied to both q and k (SPEC §4.2 step 3, §11.2)");
  c.require(p.scale_format == ScaleFormat::kUe8m0 || p.scale_format == ScaleFormat::kRaw,
            StatusCode::kInvalidArgument, "scale_format = %d is not a ScaleFormat", (int)p.scale_format);
  c.require(p.q.present() || p.k.present(), StatusCode::kNullPointer,
            "q and k are both absent: give q, k or both");

  c.tensor("positions", p.positions, {"T"}, kI32);
  c.tensor("rope_cos", p.rope_cos, {"max_pos", "32"}, kF32);
  c.tensor("rope_sin", p.rope_sin, {"max_pos", "32"}, kF32);

  const DTypeMask out_dtype = fp8 ? kE4M3 : kBF16;
  // q side.
  if (p.q.present()) {
    c.tensor("q", p.q, {"T", "h_idx", "128"}, kBF16);
    c.tensor("weights", p.weights, {"T", "h_idx"}, kF32);
    c.tensor("q_out", p.q_out, {"T", "h_idx", "128"}, out_dtype);
    c.tensor("weights_out", p.weights_out, {"T", "h_idx"}, kF32);
  } else {
    c.require(!p.weights.present(), StatusCode::kInvalidArgument, "weights is given but q is absent");
    c.require(!p.q_out.present(), StatusCode::kInvalidArgument, "q_out is given but q is absent");
    c.require(!p.weights_out.present(), StatusCode::kInvalidArgument, "weights_out is given but q is absent");
  }
  // k side.
  if (p.k.present()) {
    c.tensor("k", p.k, {"T", "128"}, kBF16);
    c.require(p.k_out.present() || p.k_cache.present(), StatusCode::kNullPointer,
              "k is given but neither k_out nor k_cache is (nothing to write)");
    c.tensor("k_out", p.k_out, {"T", "128"}, out_dtype, Need::kOptional);
    if (fp8) {
      if (p.k_out.present())
        c.tensor("k_scale_out", p.k_scale_out, {"T"}, kF32);
      else
        c.require(!p.k_scale_out.present(), StatusCode::kInvalidArgument,
                  "k_scale_out is given but k_out is absent");
    } else {
      c.require(!p.k_scale_out.present(), StatusCode::kInvalidArgument,
                "k_scale_out is given in exact mode (there is no k scale; SPEC §4.6)");
      c.require(!p.k_cache.present(), StatusCode::kInvalidArgument,
                "k_cache is given in exact mode (the 132-byte cache holds FP8 keys; SPEC §7.2)");
    }
    if (p.k_cache.present()) {
      c.require(p.page_block_size > 0, StatusCode::kInvalidArgument,
                "page_block_size = %d must be positive", p.page_block_size);
      c.tensor("k_cache", p.k_cache, {"num_blocks", "page_bytes"}, kU8);
      c.require(c.dim("page_bytes") < 0 ||
                    c.dim("page_bytes") >= int64_t{kIndexerCacheBytes} * p.page_block_size,
                StatusCode::kInvalidArgument,
                "k_cache.shape[1] = %lld bytes per page is less than 132 * page_block_size = %lld",
                (long long)c.dim("page_bytes"), (long long)kIndexerCacheBytes * p.page_block_size);
      c.tensor("slot_mapping", p.slot_mapping, {"T"}, kI32);
    } else {
      c.require(!p.slot_mapping.present(), StatusCode::kInvalidArgument,
                "slot_mapping is given but k_cache is absent");
    }
  } else {
    c.require(!p.k_out.present(), StatusCode::kInvalidArgument, "k_out is given but k is absent");
    c.require(!p.k_scale_out.present(), StatusCode::kInvalidArgument, "k_scale_out is given but k is absent");
    c.require(!p.k_cache.present(), StatusCode::kInvalidArgument, "k_cache is given but k is absent");
    c.require(!p.slot_mapping.present(), StatusCode::kInvalidArgument, "slot_mapping is given but k is absent");
  }

  // Outputs alias nothing.
  const struct { const char* name; const TensorView* v; } all[] = {
      {"q", &p.q}, {"weights", &p.weights}, {"k", &p.k}, {"positions", &p.positions},
      {"rope_cos", &p.rope_cos}, {"rope_sin", &p.rope_sin}, {"slot_mapping", &p.slot_mapping},
      {"q_out", &p.q_out}, {"weights_out", &p.weights_out}, {"k_out", &p.k_out},
      {"k_scale_out", &p.k_scale_out}, {"k_cache", &p.k_cache}};
  constexpr int kFirstOutput = 7;
  const int count = static_cast<int>(sizeof(all) / sizeof(all[0]));
  for (int o = kFirstOutput; o < count; ++o)
    for (int i = 0; i < count; ++i)
      if (i != o && (i < kFirstOutput || i < o))
        require_no_overlap(c, all[o].name, *all[o].v, all[i].name, *all[i].v);
  for (int o = kFirstOutput; o < count; ++o) require_distinct_elements(c, all[o].name, *all[o].v);
}

}  // namespace dsa::detail
