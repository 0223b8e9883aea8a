// CUDA OP-TOPK (SPEC §5, D7): exact, deterministic top-k per row, bitwise equal to the CPU
// reference on identical scores.
//
// Order. Each valid score (not NaN, not −∞) maps to an order-preserving uint32 key (−0 is mapped
// to +0 first, so the two zeros tie, as they compare equal in fp32); invalid scores get key 0,
// below every valid key (the smallest, −FLT_MAX, maps to 0x00800000). The output order is
// (key descending, column ascending); +∞ ranks highest.
//
// Two kernels. Sorted k ≤ 2048 (DSA's k) and unsorted outputs of rows up to 753K columns run the
// cluster kernel of topk_cluster.cu on sm_90 (one thread-block cluster per row, the row held in
// shared memory, read from HBM once). Everything else — sorted k > 2048, longer rows, devices
// without clusters — runs this file's kernel. Both give the same bits.
//
// This file's algorithm, one 512-thread block per row, for any k:
//   1. count the valid entries of [ks, ke): k_eff = min(k, |V|), and build the first radix pass's
//      histogram, which every cut of the row shares;
//   2. the output is produced in segments of 2048 ranks [lo, hi). For each segment, a radix select
//      (4 passes of 8 bits, block-wide shared histograms with warp-aggregated atomics) finds the cut of rank hi: the threshold
//      key T and the number m of entries equal to T that belong to the top hi (the rest of the top
//      hi is every key > T). "Ties go to the lowest columns", so the top-hi set is
//      {key > T} ∪ {the first m columns with key == T}. Warp 0 picks each digit with a scan over
//      the 256 bins. A cut of rank |V| (rows shorter than k) needs no search: T = 0, m = 0;
//   3. a collect pass walks the row in column order, 2048 columns at a time (4 consecutive columns
//      per thread), and uses block-wide exclusive scans to give every tied entry its rank among the
//      ties — no atomics decide membership — and every taken entry (in top-hi, not in top-lo) a
//      unique slot of a 2048-entry shared buffer of composite keys (key << 32 | ~column);
//   4. cub::BlockRadixSort sorts the buffer descending (composites are unique, so the order is
//      the total order above and independent of slot assignment) and writes ranks [lo, hi).
// sorted = false gives the reference's unsorted order, ascending column: one cut of rank k_eff and
// one collect pass that writes each winner at its scan position.
// There is no candidate buffer that can overflow: a segment holds exactly hi − lo ≤ 2048 entries
// by construction, whatever the ties. Rows past 2^31 − 1 columns are rejected by supports().
//
// Bad values cannot be reported without a host synchronization: ks and ke are clamped to
// [0, cols] (ke ≥ ks); in the paged-slot domain, a column whose page lies outside block_table
// gives −1 (the CPU reference rejects such calls).
#include <cub/block/block_radix_sort.cuh>
#include <cub/block/block_scan.cuh>

#include "common/op_list.hpp"
#include "topk/topk_shared.cuh"

namespace dsa::cuda_backend {

namespace {

using topk_detail::row_range;
using topk_detail::score_key;
using topk_detail::to_domain;
using topk_detail::TopKArgs;

constexpr int kThreads = 512;
constexpr int kItems = 4;
constexpr int kTile = kThreads * kItems;  // columns per collect step = ranks per segment

using BlockScanU64 = cub::BlockScan<unsigned long long, kThreads>;
using BlockScanI = cub::BlockScan<int, kThreads>;
using BlockSort = cub::BlockRadixSort<unsigned long long, kThreads, kItems>;

struct Smem {
  union {
    typename BlockScanU64::TempStorage scan64;
    typename BlockScanI::TempStorage scan32;
    typename BlockSort::TempStorage sort;
  } tmp;
  unsigned long long buf[kTile];
  int hist[256];
  int hist0[256];  // first-pass histogram (top 8 key bits of every valid entry), once per row
  int valid;
  uint32_t sel_prefix;
  int sel_need;
};

// Adds 1 to hist[bin] for every lane with `add`, one shared atomic per distinct bin of the warp
// (plateaus put whole warps into one bin).
__device__ __forceinline__ void hist_add(int* hist, int bin, bool add) {
  const unsigned peers = __match_any_sync(__activemask(), add ? bin : -1);
  if (add && __ffs(peers) - 1 == static_cast<int>(threadIdx.x & 31)) atomicAdd(&hist[bin], __popc(peers));
}

// The cut of rank R (1 ≤ R ≤ |V|): T = the R-th largest key, m = how many entries equal to T are in
// the top R. Every thread returns the same values.
__device__ void select_cut(const float* row, int n, int R, Smem& sm, uint32_t* T, int* m) {
  uint32_t prefix = 0u, mask = 0u;
  int need = R;
  for (int pass = 0; pass < 4; ++pass) {
    const int shift = 24 - 8 * pass;
    const int* hist = sm.hist0;  // pass 0: every valid key matches the empty prefix
    if (pass > 0) {
      for (int i = threadIdx.x; i < 256; i += kThreads) sm.hist[i] = 0;
      __syncthreads();
      for (int c = threadIdx.x; c < n; c += kThreads) {
        const uint32_t key = score_key(row[c]);
        hist_add(sm.hist, static_cast<int>((key >> shift) & 255u), key != 0u && (key & mask) == prefix);
      }
      __syncthreads();
      hist = sm.hist;
    }
    if (threadIdx.x < 32) {
      // Warp 0 finds the digit d with count(digits > d) < need ≤ count(digits ≥ d): lane l holds
      // bins 255 − 8l … 248 − 8l (descending), an inclusive scan over lanes finds the one lane
      // whose range crosses `need` (R ≤ the matching count, so exactly one does), and that lane
      // walks its 8 bins.
      const int lane = threadIdx.x;
      int bins[8], sum = 0;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        bins[j] = hist[255 - (lane * 8 + j)];
        sum += bins[j];
      }
      int incl = sum;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const int v = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += v;
      }
      int cum = incl - sum;
      if (cum < need && need <= incl) {
        int d = 255 - (lane * 8 + 7);
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          if (cum + bins[j] >= need) {
            d = 255 - (lane * 8 + j);
            break;
          }
          cum += bins[j];
        }
        sm.sel_prefix = prefix | (static_cast<uint32_t>(d) << shift);
        sm.sel_need = need - cum;
      }
    }
    __syncthreads();
    prefix = sm.sel_prefix;
    need = sm.sel_need;
    mask |= 255u << shift;
  }
  *T = prefix;
  *m = need;
}

// The cut of rank R, where R = |V| needs no search: every valid entry is in (T = 0, m = 0; key 0
// marks the invalid ones, which are never taken). The common case of rows shorter than k.
__device__ __forceinline__ void select_cut_or_all(const float* row, int n, int R, int nvalid, Smem& sm, uint32_t* T,
                                                  int* m) {
  if (R == nvalid) {
    *T = 0u;
    *m = 0;
    return;
  }
  select_cut(row, n, R, sm, T, m);
}

// The collect pass: walks the row in column order, kTile columns at a time (kItems consecutive
// columns per thread), and calls sink(slot, key, column) for every entry of top-hi that is not in
// top-lo (the cuts of select_cut; has_lo = false: top-lo is empty). Ranks among ties and slots come
// from block-wide exclusive scans in column order, so they are deterministic; slot counts from 0
// in column order. Returns the number of entries taken (every thread gets it).
template <class Sink>
__device__ int collect(const float* row, int n, bool has_lo, uint32_t t_lo, int m_lo, uint32_t t_hi, int m_hi,
                       Smem& sm, Sink&& sink) {
  const int tid = threadIdx.x;
  int run_lo = 0, run_hi = 0, run_take = 0;
  for (int64_t base = 0; base < n; base += kTile) {
    uint32_t keys[kItems];
    int eq_lo = 0, eq_hi = 0;
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      const int64_t c = base + tid * kItems + i;
      keys[i] = c < n ? score_key(row[c]) : 0u;
      eq_lo += has_lo && keys[i] == t_lo;
      eq_hi += keys[i] == t_hi;
    }
    unsigned long long pre, agg;
    BlockScanU64(sm.tmp.scan64)
        .ExclusiveSum((static_cast<unsigned long long>(eq_lo) << 32) | static_cast<unsigned>(eq_hi), pre, agg);
    __syncthreads();
    int rank_lo = run_lo + static_cast<int>(pre >> 32);
    int rank_hi = run_hi + static_cast<int>(pre & 0xffffffffu);
    bool take[kItems];
    int takes = 0;
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      const uint32_t key = keys[i];
      bool in_hi = key > t_hi, in_lo = has_lo && key > t_lo;
      if (key == t_hi) in_hi = rank_hi++ < m_hi;
      if (has_lo && key == t_lo) in_lo = rank_lo++ < m_lo;
      take[i] = key != 0u && in_hi && !in_lo;
      takes += take[i];
    }
    int slot, total;
    BlockScanI(sm.tmp.scan32).ExclusiveSum(takes, slot, total);
    __syncthreads();
    slot += run_take;
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      if (!take[i]) continue;
      sink(slot, keys[i], static_cast<int>(base + tid * kItems + i));
      ++slot;
    }
    run_lo += static_cast<int>(agg >> 32);
    run_hi += static_cast<int>(agg & 0xffffffffu);
    run_take += total;
  }
  return run_take;
}

__global__ void __launch_bounds__(kThreads) topk_kernel(const __grid_constant__ TopKArgs a) {
  __shared__ Smem sm;
  const int tid = threadIdx.x;
  for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
    int64_t ks, ke;
    row_range(a, r, &ks, &ke);
    const int n = static_cast<int>(ke - ks);
    const float* row = a.scores + r * a.sc_s0 + ks;

    // 1. Valid count and the first radix pass's histogram.
    if (tid == 0) sm.valid = 0;
    for (int i = tid; i < 256; i += kThreads) sm.hist0[i] = 0;
    __syncthreads();
    int local = 0;
    for (int c = tid; c < n; c += kThreads) {
      const uint32_t key = score_key(row[c]);
      local += key != 0u;
      hist_add(sm.hist0, static_cast<int>(key >> 24), key != 0u);
    }
    if (local) atomicAdd(&sm.valid, local);
    __syncthreads();
    const int nvalid = sm.valid;
    const int64_t keff = a.k < nvalid ? a.k : nvalid;
    __syncthreads();  // sm.valid and sm.hist0 are rewritten for the next row

    if (!a.sorted) {
      // Unsorted (the reference's order: ascending column): one cut of rank k_eff, then the
      // collect pass writes each winner straight to its scan position.
      if (keff > 0) {
        uint32_t t_hi;
        int m_hi;
        select_cut_or_all(row, n, static_cast<int>(keff), nvalid, sm, &t_hi, &m_hi);
        collect(row, n, false, 0u, 0, t_hi, m_hi, sm, [&](int slot, uint32_t, int c) {
          a.idx[r * a.idx_s0 + slot] = to_domain(a, r, ks, c);
          if (a.osc) a.osc[r * a.osc_s0 + slot] = row[c];
        });
      }
    } else {
      // 2–4. Segments of ranks [lo, hi).
      bool has_lo = false;
      uint32_t t_lo = 0u;
      int m_lo = 0;
      for (int64_t lo = 0; lo < keff; lo += kTile) {
        const int hi = static_cast<int>(lo + kTile < keff ? lo + kTile : keff);
        uint32_t t_hi;
        int m_hi;
        select_cut_or_all(row, n, hi, nvalid, sm, &t_hi, &m_hi);
        const int taken = collect(row, n, has_lo, t_lo, m_lo, t_hi, m_hi, sm, [&](int slot, uint32_t key, int c) {
          if (slot < kTile)
            sm.buf[slot] = (static_cast<unsigned long long>(key) << 32) | (0xffffffffu - static_cast<uint32_t>(c));
        });
        for (int i = taken + tid; i < kTile; i += kThreads) sm.buf[i] = 0ull;  // below every entry
        __syncthreads();
        unsigned long long comp[kItems];
#pragma unroll
        for (int i = 0; i < kItems; ++i) comp[i] = sm.buf[tid * kItems + i];
        __syncthreads();
        BlockSort(sm.tmp.sort).SortDescending(comp);
        __syncthreads();
#pragma unroll
        for (int i = 0; i < kItems; ++i) {
          const int64_t pos = lo + tid * kItems + i;
          if (pos >= hi) continue;
          const int c = static_cast<int>(0xffffffffu - static_cast<uint32_t>(comp[i] & 0xffffffffu));
          a.idx[r * a.idx_s0 + pos] = to_domain(a, r, ks, c);
          if (a.osc) a.osc[r * a.osc_s0 + pos] = row[c];
        }
        has_lo = true;
        t_lo = t_hi;
        m_lo = m_hi;
      }
    }

    // Padding and k_eff.
    for (int64_t pos = keff + tid; pos < a.k; pos += kThreads) {
      a.idx[r * a.idx_s0 + pos] = -1;
      if (a.osc) a.osc[r * a.osc_s0 + pos] = __uint_as_float(0xff800000u);
    }
    if (a.keff && tid == 0) a.keff[r * a.keff_s0] = static_cast<int32_t>(keff);
    __syncthreads();
  }
}

}  // namespace

Status supports(const TopKParams& p) {
  if (p.scores.shape[1] > 0x7fffffffLL)
    return Status(StatusCode::kUnsupportedShape,
                  "topk: scores.shape[1] = " + std::to_string(p.scores.shape[1]) +
                      " exceeds 2^31 - 1 columns (int32 indices)");
  if (p.domain == IndexDomain::kPagedSlot && (p.rows_per_batch <= 0 || p.page_block_size <= 0))
    return Status(StatusCode::kInvalidArgument,
                  "topk: rows_per_batch = " + std::to_string(p.rows_per_batch) + " and page_block_size = " +
                      std::to_string(p.page_block_size) + " must be positive in the paged-slot domain");
  if (p.domain == IndexDomain::kPagedSlot && !p.block_table.present())
    return Status(StatusCode::kNullPointer, "topk: block_table is required in the paged-slot domain");
  return Status();
}

size_t workspace_size(const TopKParams&) { return 0; }

Status run(const TopKParams& p, void*, size_t, Stream stream) {
  Status s = cuda_backend::supports(p);
  if (!s.ok()) return s;
  TopKArgs a{};
  a.scores = static_cast<const float*>(p.scores.data);
  a.sc_s0 = p.scores.stride[0];
  a.rows = p.scores.shape[0];
  a.cols = p.scores.shape[1];
  if (p.ks.present()) {
    a.ks = static_cast<const int32_t*>(p.ks.data);
    a.ks_s0 = p.ks.stride[0];
  }
  if (p.ke.present()) {
    a.ke = static_cast<const int32_t*>(p.ke.data);
    a.ke_s0 = p.ke.stride[0];
  }
  a.idx = static_cast<int32_t*>(p.indices.data);
  a.idx_s0 = p.indices.stride[0];
  a.k = p.indices.shape[1];
  if (p.out_scores.present()) {
    a.osc = static_cast<float*>(p.out_scores.data);
    a.osc_s0 = p.out_scores.stride[0];
  }
  if (p.k_eff.present()) {
    a.keff = static_cast<int32_t*>(p.k_eff.data);
    a.keff_s0 = p.k_eff.stride[0];
  }
  a.domain = static_cast<int32_t>(p.domain);
  a.sorted = p.sorted;
  if (p.domain == IndexDomain::kPagedSlot) {
    a.bt = static_cast<const int32_t*>(p.block_table.data);
    a.bt_s0 = p.block_table.stride[0];
    a.bt_rows = p.block_table.shape[0];
    a.bt_cols = p.block_table.shape[1];
    a.rows_per_batch = p.rows_per_batch;
    a.P = p.page_block_size;
  }
  if (a.rows == 0) return Status();
  cuda::DeviceInfo dev;
  if (Status d = cuda::device_info("topk", &dev); !d.ok()) return d;
  if (topk_detail::cluster_takes(a, dev.cc_major)) return topk_detail::launch_cluster(a, dev.sm_count, stream);
  topk_kernel<<<cuda::grid_for(a.rows, 1), kThreads, 0, stream>>>(a);
  return cuda::launch_status("topk", "topk_kernel");
}

}  // namespace dsa::cuda_backend
