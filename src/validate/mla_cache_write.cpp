// Validator of OP-MLACACHE (SPEC §7.1): bf16 latent rows [n, 576] into a paged cache, either the
// 656-byte FP8 format ([num_blocks, P, 656] u8) or plain bf16 ([num_blocks, P, 576] bf16).
#include "common/op_list.hpp"

namespace dsa::detail {

void validate(const MlaCacheWriteParams& p, ArgCheck& c) {
  c.require(p.scale_format == ScaleFormat::kUe8m0 || p.scale_format == ScaleFormat::kRaw,
            StatusCode::kInvalidArgument, "scale_format = %d is not a ScaleFormat", (int)p.scale_format);
  c.tensor("kv", p.kv, {"n", "576"}, kBF16);
  c.tensor("slot_mapping", p.slot_mapping, {"n"}, kI32);
  if (p.cache.dtype == DType::kBF16)
    c.tensor("cache", p.cache, {"num_blocks", "P", "576"}, kBF16);
  else
    c.tensor("cache", p.cache, {"num_blocks", "P", "656"}, kU8 | kBF16);
  require_no_overlap(c, "cache", p.cache, "kv", p.kv);
  require_no_overlap(c, "cache", p.cache, "slot_mapping", p.slot_mapping);
  require_distinct_elements(c, "cache", p.cache);
}

}  // namespace dsa::detail
