// CPU reference of OP-IDXLOGITS decode (SPEC §4.2 step 7, §7.2, §12.4): scores of next_n query
// tokens per request against the paged key cache. Page layout (P = page_block_size, d = d_idx):
// bytes [0, d·P) hold the e4m3 codes token-major, bytes [d·P, (d + 4)·P) the P fp32 scales; the
// page stride is k_cache.stride[0] bytes. Same evaluation order as the prefill reference: dot in
// Acc, ReLU, × w, head sum in head order, × σ_k. Entries at or past a row's length are −∞.
//
// Work items are (request, group of pages) with fixed boundaries; each item is one Eigen GEMM of
// the request's next_n·h_idx query heads against the group's keys, computed by one thread, so the
// output is bitwise independent of the thread count.
// GCC 12 reports false -Wmaybe-uninitialized inside Eigen's AVX-512 GEMM kernels (-march=native).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <Eigen/Core>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "common/op_list.hpp"
#include "common/parallel.hpp"
#include "reference/access.hpp"

namespace dsa::detail {
namespace {

constexpr int64_t kGroupKeys = 256;

template <typename Acc>
using RowMat = Eigen::Matrix<Acc, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

Status fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
Status fail(const char* fmt, ...) {
  char buf[320];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  return Status(StatusCode::kInvalidArgument, std::string("indexer_paged_logits: ") + buf);
}

struct Shape {
  int64_t b, next_n, h, d, page, num_blocks, max_blocks, max_ctx;
};

// Per-row visible lengths, after checking context_lens and the block_table pages they use.
Status read_lengths(const IndexerPagedLogitsParams& p, const Shape& z, std::vector<int64_t>& len) {
  len.assign(z.b * z.next_n, 0);
  const bool two_d = p.context_lens.rank == 2;
  const int64_t cap = std::min(z.max_ctx, z.max_blocks * z.page);
  for (int64_t i = 0; i < z.b; ++i) {
    for (int64_t j = 0; j < (two_d ? z.next_n : 1); ++j) {
      const int64_t L = two_d ? at<int32_t>(p.context_lens, i, j) : at<int32_t>(p.context_lens, i);
      char name[64];
      if (two_d)
        std::snprintf(name, sizeof(name), "context_lens[%lld][%lld]", (long long)i, (long long)j);
      else
        std::snprintf(name, sizeof(name), "context_lens[%lld]", (long long)i);
      if (L < 0) return fail("%s = %lld is negative", name, (long long)L);
      if (L > z.max_ctx)
        return fail("%s = %lld exceeds max_context_len = %lld (logits.shape[1])", name, (long long)L,
                    (long long)z.max_ctx);
      if (L > cap)
        return fail("%s = %lld exceeds max_blocks * page_block_size = %lld * %lld", name, (long long)L,
                    (long long)z.max_blocks, (long long)z.page);
      if (two_d) {
        len[i * z.next_n + j] = L;
      } else {
        for (int64_t jj = 0; jj < z.next_n; ++jj)
          len[i * z.next_n + jj] = std::max<int64_t>(0, L - z.next_n + 1 + jj);
      }
    }
    int64_t lmax = 0;
    for (int64_t j = 0; j < z.next_n; ++j) lmax = std::max(lmax, len[i * z.next_n + j]);
    for (int64_t pg = 0; pg * z.page < lmax; ++pg) {
      const int32_t id = at<int32_t>(p.block_table, i, pg);
      if (id < 0 || id >= z.num_blocks)
        return fail("block_table[%lld][%lld] = %d is out of range [0, num_blocks = %lld) (request %lld uses %lld keys)",
                    (long long)i, (long long)pg, id, (long long)z.num_blocks, (long long)i, (long long)lmax);
    }
  }
  return Status();
}

template <typename Acc>
void compute(const IndexerPagedLogitsParams& p, const Shape& z, const std::vector<int64_t>& len) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const auto* cache = static_cast<const uint8_t*>(p.k_cache.data);
  const int64_t page_stride = p.k_cache.stride[0];
  const int64_t group_pages = std::max<int64_t>(1, kGroupKeys / z.page);
  const int64_t group_keys = group_pages * z.page;

  // −∞ past each row's length.
  if (z.max_ctx > 0) parallel_for(z.b * z.next_n, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* row = &at<float>(p.logits, r, 0);
      for (int64_t c = len[r]; c < z.max_ctx; ++c) row[c] = kNegInf;
    }
  });

  struct Item {
    int64_t req, key0;
  };
  std::vector<Item> items;
  for (int64_t i = 0; i < z.b; ++i) {
    int64_t lmax = 0;
    for (int64_t j = 0; j < z.next_n; ++j) lmax = std::max(lmax, len[i * z.next_n + j]);
    for (int64_t k0 = 0; k0 < lmax; k0 += group_keys) items.push_back({i, k0});
  }

  parallel_for(static_cast<int64_t>(items.size()), 1, [&](int64_t b_begin, int64_t b_end) {
    RowMat<Acc> q(z.next_n * z.h, z.d), keys(group_keys, z.d), dots;
    std::vector<Acc> sigma(group_keys), acc(group_keys);
    for (int64_t it = b_begin; it < b_end; ++it) {
      const int64_t i = items[it].req, k0 = items[it].key0;
      int64_t lmax = 0;
      for (int64_t j = 0; j < z.next_n; ++j) lmax = std::max(lmax, len[i * z.next_n + j]);
      const int64_t n = std::min(group_keys, lmax - k0);
      for (int64_t c = 0; c < n; ++c) {
        const int64_t pos = k0 + c, off = pos % z.page;
        const uint8_t* page = cache + int64_t{at<int32_t>(p.block_table, i, pos / z.page)} * page_stride;
        const uint8_t* codes = page + off * z.d;
        for (int64_t x = 0; x < z.d; ++x) keys(c, x) = static_cast<Acc>(e4m3_to_float(codes[x]));
        float s;
        std::memcpy(&s, page + z.d * z.page + 4 * off, sizeof(float));
        sigma[c] = static_cast<Acc>(s);
      }
      for (int64_t j = 0; j < z.next_n; ++j)
        for (int64_t hh = 0; hh < z.h; ++hh)
          for (int64_t x = 0; x < z.d; ++x)
            q(j * z.h + hh, x) = static_cast<Acc>(e4m3_to_float(at<uint8_t>(p.q, i, j, hh, x)));
      dots.noalias() = q * keys.topRows(n).transpose();
      for (int64_t j = 0; j < z.next_n; ++j) {
        const int64_t r = i * z.next_n + j;
        const int64_t e = std::min(n, len[r] - k0);
        if (e <= 0) continue;
        std::fill(acc.begin(), acc.begin() + e, Acc(0));
        for (int64_t hh = 0; hh < z.h; ++hh) {
          const Acc w = static_cast<Acc>(at<float>(p.weights, r, hh));
          const Acc* dot = dots.row(j * z.h + hh).data();
          for (int64_t c = 0; c < e; ++c) {
            const Acc relu = dot[c] < Acc(0) ? Acc(0) : dot[c];  // NaN propagates
            acc[c] += w * relu;
          }
        }
        float* row = &at<float>(p.logits, r, k0);
        for (int64_t c = 0; c < e; ++c) row[c] = static_cast<float>(acc[c] * sigma[c]);
      }
    }
  });
}

}  // namespace

Status reference(const IndexerPagedLogitsParams& p, Accum accum) {
  Shape z;
  z.b = p.q.shape[0];
  z.next_n = p.q.shape[1];
  z.h = p.q.shape[2];
  z.d = p.q.shape[3];
  z.page = p.page_block_size;
  z.num_blocks = p.k_cache.shape[0];
  z.max_blocks = p.block_table.shape[1];
  z.max_ctx = p.logits.shape[1];
  std::vector<int64_t> len;
  Status s = read_lengths(p, z, len);
  if (!s.ok()) return s;
  if (accum == Accum::kF64)
    compute<double>(p, z, len);
  else
    compute<float>(p, z, len);
  return Status();
}

}  // namespace dsa::detail
