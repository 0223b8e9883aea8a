// Validators of OP-TOPK (SPEC §5, D7, §12.5). Row ranges and block_table entries are values,
// checked by the reference.
#include "validate/shared.hpp"

namespace dsa::detail {

void validate(const TopKParams& p, ArgCheck& c) {
  c.tensor("scores", p.scores, {"rows", "cols"}, kF32);
  c.require(c.dim("cols") <= INT32_MAX, StatusCode::kUnsupportedShape,
            "scores.shape[1] = cols = %lld exceeds the int32 index range", (long long)c.dim("cols"));
  c.tensor("ks", p.ks, {"rows"}, kI32, Need::kOptional);
  c.tensor("ke", p.ke, {"rows"}, kI32, Need::kOptional);
  validate_topk_outputs(p, "rows", c);
  if (p.domain == IndexDomain::kPagedSlot) {
    c.require(p.rows_per_batch >= 1, StatusCode::kInvalidArgument, "rows_per_batch = %d, expected >= 1",
              (int)p.rows_per_batch);
    c.require(p.page_block_size >= 1, StatusCode::kInvalidArgument, "page_block_size = %d, expected >= 1",
              (int)p.page_block_size);
    c.tensor("block_table", p.block_table, {"batches", "max_blocks"}, kI32);
    if (c.ok()) {
      const int64_t rows = c.dim("rows"), need = (rows + p.rows_per_batch - 1) / p.rows_per_batch;
      c.require(c.dim("batches") >= need, StatusCode::kInvalidArgument,
                "block_table.shape[0] = %lld is less than ceil(rows / rows_per_batch) = ceil(%lld / %d) = %lld",
                (long long)c.dim("batches"), (long long)rows, (int)p.rows_per_batch, (long long)need);
    }
  }
}

}  // namespace dsa::detail
