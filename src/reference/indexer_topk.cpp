// CPU reference of the fused indexer → top-k (IndexerTopKParams): row chunk by row chunk, the
// OP-IDXLOGITS reference writes the chunk's logits into a temporary, then the OP-TOPK reference
// selects from it. The result is bitwise the result of the two references run on the whole
// problem:
//   - top-k handles each row on its own, from its scores alone;
//   - the logits reference computes blocks of 8 query rows (its kRowBlock) with one Eigen GEMM
//     each, and a row's rounding can depend on its position inside that GEMM. Chunks therefore
//     start at multiples of 8 here (chunk_rows is rounded up to a multiple of 8), so every row
//     sees the same GEMM as in the unfused call.
// All key ranges are checked before anything is written, as the unfused pair does.
#include <cstdarg>
#include <cstdio>
#include <string>
#include <vector>

#include "common/indexer_topk_plan.hpp"
#include "common/op_list.hpp"
#include "reference/access.hpp"

namespace dsa::detail {
namespace {

constexpr int64_t kLogitsRowBlock = 8;  // src/reference/indexer_logits.cpp kRowBlock

Status fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
Status fail(const char* fmt, ...) {
  char buf[256];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  return Status(StatusCode::kInvalidArgument, std::string("indexer_topk: ") + buf);
}

}  // namespace

Status reference(const IndexerTopKParams& p, Accum accum) {
  const int64_t s_q = p.q.shape[0], s_kv = p.k.shape[0];
  for (int64_t t = 0; t < s_q; ++t) {
    const long long ks = at<int32_t>(p.ks, t), ke = at<int32_t>(p.ke, t);
    if (ks < 0) return fail("ks[%lld] = %lld is negative (need 0 <= ks <= ke <= s_kv = %lld)", (long long)t, ks, (long long)s_kv);
    if (ke < ks) return fail("ke[%lld] = %lld is less than ks[%lld] = %lld", (long long)t, ke, (long long)t, ks);
    if (ke > s_kv) return fail("ke[%lld] = %lld exceeds s_kv = %lld", (long long)t, ke, (long long)s_kv);
  }
  if (s_q == 0) return Status();

  int64_t chunk = indexer_topk_chunk_rows(p);
  chunk = std::min(s_q, (chunk + kLogitsRowBlock - 1) / kLogitsRowBlock * kLogitsRowBlock);
  const int64_t ld = indexer_topk_ld(s_kv);
  std::vector<float> scratch(static_cast<size_t>(chunk * ld));
  for (int64_t r0 = 0; r0 < s_q; r0 += chunk) {
    const int64_t n = std::min(chunk, s_q - r0);
    const TensorView logits = make_view(scratch.data(), DType::kF32, {n, s_kv}, {ld, 1});
    Status s = reference(indexer_topk_logits_part(p, r0, n, logits, /*clean=*/true), accum);
    if (s.ok()) s = reference(indexer_topk_select_part(p, r0, n, logits), accum);
    if (!s.ok()) return s;  // unreachable after the range checks above
  }
  return Status();
}

}  // namespace dsa::detail
