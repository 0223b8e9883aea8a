// CPU reference of OP-TOPK (SPEC §5, D7, §12.5).
//
// Row r's valid set is V = {c ∈ [ks, ke) : scores[r, c] is neither −∞ nor NaN}; +∞ ranks highest.
// The k_eff = min(k, |V|) winners under the total order (score descending, column ascending) are
// found in O(cols) with nth_element, then sorted (sorted = true) or put in ascending column order
// (sorted = false: a deterministic order of the same set). −0.0 and +0.0 are equal scores, so
// their order is by column. Slots past k_eff hold −1 (and −∞ in out_scores) in every domain.
//
// Everything is computed and checked (ranges, block_table entries of the selected columns) into
// scratch first; the outputs are written only when the whole call succeeds. Each row is handled by
// one thread and the result depends on the scores alone, so it is bitwise independent of the
// thread count.
#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "common/op_list.hpp"
#include "common/parallel.hpp"
#include "reference/access.hpp"

namespace dsa::detail {
namespace {

Status fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
Status fail(const char* fmt, ...) {
  char buf[320];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  return Status(StatusCode::kInvalidArgument, std::string("topk: ") + buf);
}

using Entry = std::pair<float, int32_t>;  // (score, absolute column)

// The D7 total order: score descending, then column ascending.
inline bool better(const Entry& a, const Entry& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

}  // namespace

Status reference(const TopKParams& p, Accum) {
  const int64_t rows = p.scores.shape[0], cols = p.scores.shape[1], k = p.indices.shape[1];

  std::vector<int32_t> ks(rows, 0), ke(rows, static_cast<int32_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    if (p.ks.present()) ks[r] = at<int32_t>(p.ks, r);
    if (p.ke.present()) ke[r] = at<int32_t>(p.ke, r);
    if (ks[r] < 0) return fail("ks[%lld] = %d is negative", (long long)r, ks[r]);
    if (ke[r] > cols)
      return fail("ke[%lld] = %d exceeds cols = %lld (scores.shape[1])", (long long)r, ke[r], (long long)cols);
    if (ke[r] < ks[r]) return fail("ke[%lld] = %d is less than ks[%lld] = %d", (long long)r, ke[r], (long long)r, ks[r]);
  }

  const bool want_scores = p.out_scores.present();
  std::vector<int32_t> sel(static_cast<size_t>(rows * k), -1), count(rows, 0);
  std::vector<float> sel_scores(want_scores ? static_cast<size_t>(rows * k) : 0,
                                -std::numeric_limits<float>::infinity());
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, cols));
  parallel_for(rows, grain, [&](int64_t r0, int64_t r1) {
    std::vector<Entry> buf;
    for (int64_t r = r0; r < r1; ++r) {
      buf.clear();
      const float* s = cols > 0 ? &at<float>(p.scores, r, 0) : nullptr;
      for (int32_t c = ks[r]; c < ke[r]; ++c) {
        const float v = s[c];
        if (std::isnan(v) || v == -std::numeric_limits<float>::infinity()) continue;
        buf.emplace_back(v, c);
      }
      const int64_t n = static_cast<int64_t>(buf.size()), keff = std::min(k, n);
      if (keff < n) std::nth_element(buf.begin(), buf.begin() + keff, buf.end(), better);
      if (p.sorted)
        std::sort(buf.begin(), buf.begin() + keff, better);
      else
        std::sort(buf.begin(), buf.begin() + keff, [](const Entry& a, const Entry& b) { return a.second < b.second; });
      count[r] = static_cast<int32_t>(keff);
      for (int64_t i = 0; i < keff; ++i) {
        sel[r * k + i] = buf[i].second;
        if (want_scores) sel_scores[r * k + i] = buf[i].first;
      }
    }
  });

  // Index domain (−1 padding stays −1).
  for (int64_t r = 0; r < rows; ++r) {
    int32_t* out = sel.data() + r * k;
    if (p.domain == IndexDomain::kRelative) {
      for (int64_t i = 0; i < count[r]; ++i) out[i] -= ks[r];
    } else if (p.domain == IndexDomain::kPagedSlot) {
      const int64_t batch = r / p.rows_per_batch, P = p.page_block_size, max_blocks = p.block_table.shape[1];
      for (int64_t i = 0; i < count[r]; ++i) {
        const int64_t rel = out[i] - ks[r], pg = rel / P;
        if (pg >= max_blocks)
          return fail("row %lld selects column %d, page %lld of batch %lld, past block_table.shape[1] = %lld",
                      (long long)r, out[i], (long long)pg, (long long)batch, (long long)max_blocks);
        const int32_t id = at<int32_t>(p.block_table, batch, pg);
        const int64_t slot = int64_t{id} * P + rel % P;
        if (id < 0 || slot > INT32_MAX)
          return fail("block_table[%lld][%lld] = %d (used by row %lld) is not a valid page id (need 0 <= id and "
                      "id * page_block_size + offset <= INT32_MAX)",
                      (long long)batch, (long long)pg, id, (long long)r);
        out[i] = static_cast<int32_t>(slot);
      }
    }
  }

  parallel_for(rows, std::max<int64_t>(1, 65536 / std::max<int64_t>(1, k)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t i = 0; i < k; ++i) {
        at<int32_t>(p.indices, r, i) = sel[r * k + i];
        if (want_scores) at<float>(p.out_scores, r, i) = sel_scores[r * k + i];
      }
      if (p.k_eff.present()) at<int32_t>(p.k_eff, r) = count[r];
    }
  });
  return Status();
}

}  // namespace dsa::detail
