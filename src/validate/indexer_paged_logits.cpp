// Validators of OP-IDXLOGITS decode (SPEC §7.2, §12.4). Page ids and context lengths are values,
// checked by the reference.
#include "common/op_list.hpp"

namespace dsa::detail {

void validate(const IndexerPagedLogitsParams& p, ArgCheck& c) {
  c.tensor("q", p.q, {"b", "next_n", "h_idx", "d_idx"}, kE4M3);
  if (!c.ok()) return;
  c.require(c.dim("next_n") >= 1, StatusCode::kUnsupportedShape, "q.shape[1] = next_n = %lld, expected >= 1",
            (long long)c.dim("next_n"));
  c.require(c.dim("h_idx") >= 1, StatusCode::kUnsupportedShape, "q.shape[2] = h_idx = %lld, expected >= 1",
            (long long)c.dim("h_idx"));
  c.require(c.dim("d_idx") >= 1, StatusCode::kUnsupportedShape, "q.shape[3] = d_idx = %lld, expected >= 1",
            (long long)c.dim("d_idx"));
  c.require(p.page_block_size >= 1, StatusCode::kInvalidArgument, "page_block_size = %d, expected >= 1",
            (int)p.page_block_size);
  c.tensor("k_cache", p.k_cache, {"num_blocks", "page_bytes"}, kU8);
  // SPEC §7.2: a page holds P × d_idx e4m3 codes (token-major), then P fp32 scales.
  const int64_t need = (c.dim("d_idx") + 4) * int64_t{p.page_block_size};
  c.require(c.dim("page_bytes") >= need, StatusCode::kInvalidArgument,
            "k_cache.shape[1] = %lld bytes per page is less than (d_idx + 4) * page_block_size = %lld",
            (long long)c.dim("page_bytes"), (long long)need);
  c.bind("rows", c.dim("b") * c.dim("next_n"), "q.shape[0] * q.shape[1]");
  c.tensor("weights", p.weights, {"rows", "h_idx"}, kF32);
  if (p.context_lens.present() && p.context_lens.rank == 1)
    c.tensor("context_lens", p.context_lens, {"b"}, kI32);
  else
    c.tensor("context_lens", p.context_lens, {"b", "next_n"}, kI32);
  c.tensor("block_table", p.block_table, {"b", "max_blocks"}, kI32);
  c.tensor("logits", p.logits, {"rows", "max_context_len"}, kF32);
  c.require(c.dim("max_context_len") <= INT32_MAX, StatusCode::kUnsupportedShape,
            "logits.shape[1] = max_context_len = %lld exceeds int32", (long long)c.dim("max_context_len"));
}

}  // namespace dsa::detail
