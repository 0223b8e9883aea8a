// CUDA OP-TOPK (SPEC §5, D7): exact, deterministic top-k per row, bitwise equal to the CPU
// reference on identical scores.
//
// Order. Each valid score (not NaN, not −∞) maps to an order-preserving uint32 key (−0 is mapped
// to +0 first, so the two zeros tie, as they compare equal in fp32); invalid scores get key 0,
// below every valid key (the smallest, −FLT_MAX, maps to 0x00800000). The output order is
// (key descending, column ascending); +∞ ranks highest.
//
// Four kernels, the same bits (each runs the whole GPU suite; DSA_TOPK_KERNEL=row|filter|cluster|
// stream forces one):
//   - filter (below): sorted k ≤ 2048 or unsorted, from a quarter of the SMs' worth of rows up: the
//     row streamed twice by one block, the candidates of the k-th bin of an 11-bit histogram kept
//     in shared memory;
//   - cluster (topk_cluster.cu): fewer rows (decode) on sm_90: each row read once into a thread-
//     block cluster's shared memory, the radix passes there;
//   - row (this file): sorted k > 2048, and the filter kernel's per-row fallback when the
//     candidates do not fit (huge plateaus): multi-pass, exact for any input.
//   - stream (topk_stream.cu): 1 ≤ k ≤ 2048, each row read once, a running top k in shared memory;
//     only when forced (DSA_TOPK_KERNEL=stream): measured slower than filter except at 4096 × 128K
//     sorted (docs/performance.md).
// (A split kernel for decode — each row in ≤ 4 slices read once by separate blocks, then a merge
// kernel — was exact but slower than filter everywhere on the H200, 112 vs 80 µs at 64 × 128K;
// removed, last in commit c81d539.)
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

#include <cstdlib>
#include <string>

#include "common/op_list.hpp"
#include "topk/topk_shared.cuh"

namespace dsa::cuda_backend {

namespace {

using topk_detail::hist_add;
using topk_detail::row_range;
using topk_detail::score_key;
using topk_detail::sort_end_bit;
using topk_detail::to_domain;
using topk_detail::write_padding;
using topk_detail::write_ranked;
using topk_detail::TopKArgs;

constexpr int kThreads = 512;
constexpr int kItems = 4;
constexpr int kTile = kThreads * kItems;  // columns per collect step = ranks per segment

using BlockScanU64 = cub::BlockScan<unsigned long long, kThreads>;
using BlockScanI = cub::BlockScan<int, kThreads>;
using BlockSort = cub::BlockRadixSort<unsigned long long, kThreads, kItems>;
using BlockSortKV = cub::BlockRadixSort<uint32_t, kThreads, kItems, int32_t>;  // stable

struct Smem {
  union {
    typename BlockScanU64::TempStorage scan64;
    typename BlockScanI::TempStorage scan32;
    typename BlockSort::TempStorage sort;
    typename BlockSortKV::TempStorage sort_kv;
  } tmp;
  unsigned long long buf[kTile];
  int hist[256];
  int hist0[256];  // first-pass histogram (top 8 key bits of every valid entry), once per row
  int valid;
  uint32_t sel_prefix;
  int sel_need;
};

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

// Sorts sm.buf's `taken` composites (key << 32 | ~column; the rest of the buffer is zeroed here)
// descending and writes ranks [lo, hi) of row r.
__device__ __forceinline__ void sort_and_write(const TopKArgs& a, int64_t r, int64_t ks, const float* row, int taken,
                                               int64_t lo, int64_t hi, Smem& sm) {
  const int tid = threadIdx.x;
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
    write_ranked(a, r, ks, row, pos, c);
  }
}

__device__ __forceinline__ unsigned long long composite(uint32_t key, int c) {
  return (static_cast<unsigned long long>(key) << 32) | (0xffffffffu - static_cast<uint32_t>(c));
}

// Rows whose valid count and first histogram (sm.hist0, top 8 key bits) are known: the cuts and
// collect passes re-read the row from memory, for any k and any ties.
__device__ void finish_row_multipass(const TopKArgs& a, int64_t r, int64_t ks, const float* row, int n, int nvalid,
                                     int64_t keff, Smem& sm) {
  if (!a.sorted) {
    // Unsorted (the reference's order: ascending column): one cut of rank k_eff, then the
    // collect pass writes each winner straight to its scan position.
    if (keff > 0) {
      uint32_t t_hi;
      int m_hi;
      select_cut_or_all(row, n, static_cast<int>(keff), nvalid, sm, &t_hi, &m_hi);
      collect(row, n, false, 0u, 0, t_hi, m_hi, sm,
              [&](int slot, uint32_t, int c) { write_ranked(a, r, ks, row, slot, c); });
    }
    return;
  }
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
      if (slot < kTile) sm.buf[slot] = composite(key, c);
    });
    sort_and_write(a, r, ks, row, taken, lo, hi, sm);
    __syncthreads();
    has_lo = true;
    t_lo = t_hi;
    m_lo = m_hi;
  }
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

    finish_row_multipass(a, r, ks, row, n, nvalid, keff, sm);
    write_padding<kThreads>(a, r, keff);
    __syncthreads();
  }
}

// ---- The filter kernel: two streaming reads of the row, the candidates kept in shared memory ----
//
// For many rows (prefill) the row is streamed twice and never held whole: pass A counts the valid
// keys and histograms bits 31..21 (2048 bins) with 16-byte loads, many in flight; warp 0 finds
// the bin d0 that holds rank k_eff. Pass B streams the row again in column order and keeps every
// key ≥ d0·2^21 — the sure winners above the bin and the bin itself — as (key, column) candidates
// in shared memory, placed by warp scans and one block barrier per 8192 columns. Two radix passes over
// the candidates (bits 20..10, 9..0) find T and m; a collect over the candidates (column order)
// takes keys > T and the first m ties; the sorted order comes from the block sort of the row kernel.
// A row whose candidates would not fit (kCandCap: plateaus, or k_eff > 2048 when sorted) takes the
// row kernel's multi-pass path, which is exact for any input.
constexpr int kCandCap = 8192;
constexpr int kBins11 = 2048;
constexpr int kWarps = kThreads / 32;

struct FilterSmem {
  int hist[kBins11];
  int warp_cnt[2][kWarps];
  int digit, need, above;
  unsigned kmin, kmax;  // the range of the selected keys (the sort needs only the bits that differ)
};

// Warp 0: the digit d of a block histogram (nbins bins, descending scan) with
// count(> d) < need ≤ count(≥ d); stores d, need − count(> d) and count(> d). Callers sync after.
__device__ __forceinline__ void pick_digit(const int* hist, int nbins, int need, FilterSmem& fs) {
  if (threadIdx.x >= 32) return;
  const int lane = threadIdx.x;
  const int per = nbins / 32;  // 64 or 32 bins per lane, lane 0 the highest
  const int top = nbins - 1 - lane * per;
  int sum = 0;
  for (int j = 0; j < per; ++j) sum += hist[top - j];
  int incl = sum;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int t = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += t;
  }
  const unsigned cross = __ballot_sync(0xffffffffu, incl - sum < need && need <= incl);
  if (lane == __ffs(cross) - 1) {
    int cum = incl - sum, d = top;
    for (int j = 0; j < per; ++j) {
      const int b = hist[top - j];
      if (cum + b >= need) {
        d = top - j;
        break;
      }
      cum += b;
    }
    fs.digit = d;
    fs.need = need - cum;
    fs.above = cum;
  }
}

// The row's 16-byte groups: they tile [vs, ke), vs = ks aligned down to 16 bytes; entries outside
// [ks, ke) read as invalid (NaN). Group v covers columns vs + 4v … vs + 4v + 3.
struct RowGroups {
  const float* row_abs;  // the row's column 0
  int64_t ks, ke, vs;
  int nvec;

  __device__ RowGroups(const TopKArgs& a, int64_t r, int64_t ks_, int64_t ke_)
      : row_abs(a.scores + r * a.sc_s0), ks(ks_), ke(ke_) {
    vs = ks - static_cast<int64_t>((reinterpret_cast<uintptr_t>(row_abs + ks) >> 2) & 3u);
    nvec = static_cast<int>((ke - vs + 3) / 4);
  }
  __device__ __forceinline__ void load(int v, int v_end, float f[4]) const {
    const int64_t g = vs + 4 * static_cast<int64_t>(v);
    if (v < v_end && g >= ks && g + 4 <= ke) {
      const float4 x = __ldcs(reinterpret_cast<const float4*>(row_abs + g));
      f[0] = x.x, f[1] = x.y, f[2] = x.z, f[3] = x.w;
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i)
        f[i] = (v < v_end && g + i >= ks && g + i < ke) ? row_abs[g + i] : __int_as_float(0x7fffffff);
    }
  }
};

// Pass A over the row's groups: adds the 11-bit digits of the valid keys to hist (zeroed by the
// caller) and returns this thread's valid count, with kUnroll 16-byte loads in flight per thread.
template <int kUnroll>
__device__ __forceinline__ int pass_a(const RowGroups& g, int* hist) {
  const int v1 = g.nvec;
  int valid = 0;
  for (int vb = static_cast<int>(threadIdx.x); vb < v1; vb += kUnroll * kThreads) {
    float f[kUnroll][4];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) g.load(vb + u * kThreads, v1, f[u]);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      uint32_t kk[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) kk[i] = score_key(f[u][i]);
      const int nv = (kk[0] != 0u) + (kk[1] != 0u) + (kk[2] != 0u) + (kk[3] != 0u);
      valid += nv;
      const uint32_t b = kk[0] >> 21;
      if (nv == 4 && (kk[1] >> 21) == b && (kk[2] >> 21) == b && (kk[3] >> 21) == b) {
        atomicAdd(&hist[b], 4);
      } else {
#pragma unroll
        for (int i = 0; i < 4; ++i)
          if (kk[i] != 0u) atomicAdd(&hist[kk[i] >> 21], 1);
      }
    }
  }
  return valid;
}

// Pass B over the row's groups in column order (steps of 512·kGroups groups: warp-major, kGroups
// consecutive groups per lane; the next step's loads are issued before this step's barrier): every
// key ≥ lo_key goes to (out_key, out_col)[its rank], the column relative to ks (the caller has
// counted them: at most kCandCap). Ends after a block barrier.
template <int kGroups>
__device__ __forceinline__ void pass_b(const RowGroups& g, uint32_t lo_key, uint32_t* out_key, int32_t* out_col,
                                       FilterSmem& fs) {
  constexpr int kStepVecs = kThreads * kGroups;
  const int v1 = g.nvec;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int written = 0, parity = 0;
  float cur[kGroups][4], nxt[kGroups][4];
  const int v_lane = warp * 32 * kGroups + lane * kGroups;
#pragma unroll
  for (int j = 0; j < kGroups; ++j) g.load(v_lane + j, v1, cur[j]);
  for (int step = 0; step * kStepVecs < v1; ++step) {
    const int vb = v_lane + step * kStepVecs;
#pragma unroll
    for (int j = 0; j < kGroups; ++j) g.load(vb + kStepVecs + j, v1, nxt[j]);
    uint32_t kk[4 * kGroups];
    int cnt = 0;
#pragma unroll
    for (int i = 0; i < 4 * kGroups; ++i) {
      kk[i] = score_key(cur[i / 4][i % 4]);
      cnt += kk[i] >= lo_key;
    }
    int incl = cnt;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int t = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += t;
    }
    if (lane == 31) fs.warp_cnt[parity][warp] = incl;
    __syncthreads();
    int before = 0, total = 0;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const int c = fs.warp_cnt[parity][w];
      before += w < warp ? c : 0;
      total += c;
    }
    int pos = written + before + incl - cnt;
#pragma unroll
    for (int i = 0; i < 4 * kGroups; ++i) {
      if (kk[i] < lo_key) continue;
      if (pos < kCandCap) {
        out_key[pos] = kk[i];
        out_col[pos] = static_cast<int32_t>(g.vs + 4 * static_cast<int64_t>(vb) + i - g.ks);
      }
      ++pos;
    }
    written += total;
    parity ^= 1;
#pragma unroll
    for (int j = 0; j < kGroups; ++j)
#pragma unroll
      for (int i = 0; i < 4; ++i) cur[j][i] = nxt[j][i];
  }
  __syncthreads();
}

// The selection among n_cand candidates held in column order (keys ≥ d0·2^21, or every valid key
// when keff = nvalid): two radix passes over them give T and m, then a collect takes keys > T and
// the first m ties, sorted (k_eff ≤ 2048) or written in column order. fs.hist is scratch.
__device__ void finish_candidates(const TopKArgs& a, int64_t r, int64_t ks, const float* row, int n_cand,
                                  int64_t keff, int nvalid, int d0, int need, const uint32_t* cand_key,
                                  const int32_t* cand_col, Smem& sm, FilterSmem& fs) {
  const int tid = threadIdx.x;
  uint32_t T = 0u;
  int m = 0;
  if (keff < nvalid) {
    for (int i = tid; i < kBins11; i += kThreads) fs.hist[i] = 0;
    __syncthreads();
    for (int i = tid; i < n_cand; i += kThreads) {
      const uint32_t key = cand_key[i];
      if ((key >> 21) == static_cast<uint32_t>(d0)) atomicAdd(&fs.hist[(key >> 10) & 2047u], 1);
    }
    __syncthreads();
    pick_digit(fs.hist, kBins11, need, fs);
    __syncthreads();
    const uint32_t p22 = (static_cast<uint32_t>(d0) << 11) | static_cast<uint32_t>(fs.digit);
    need = fs.need;
    __syncthreads();
    for (int i = tid; i < 1024; i += kThreads) fs.hist[i] = 0;
    __syncthreads();
    for (int i = tid; i < n_cand; i += kThreads) {
      const uint32_t key = cand_key[i];
      if ((key >> 10) == p22) atomicAdd(&fs.hist[key & 1023u], 1);
    }
    __syncthreads();
    pick_digit(fs.hist, 1024, need, fs);
    __syncthreads();
    T = (p22 << 10) | static_cast<uint32_t>(fs.digit);
    m = fs.need;
  }

  // Collect in column order: ranks of ties and slots from block scans.
  if (tid == 0) fs.kmin = 0xffffffffu, fs.kmax = 0u;
  __syncthreads();
  int run_eq = 0, run_take = 0;
  for (int base = 0; base < n_cand; base += kTile) {
    uint32_t keys[kItems];
    int eq = 0;
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      const int j = base + tid * kItems + i;
      keys[i] = j < n_cand ? cand_key[j] : 0u;
      eq += keys[i] == T && keys[i] != 0u;
    }
    int rank, eq_total;
    BlockScanI(sm.tmp.scan32).ExclusiveSum(eq, rank, eq_total);
    __syncthreads();
    rank += run_eq;
    bool take[kItems];
    int takes = 0;
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      take[i] = keys[i] != 0u && (keys[i] > T || (keys[i] == T && rank++ < m));
      takes += take[i];
    }
    int slot, take_total;
    BlockScanI(sm.tmp.scan32).ExclusiveSum(takes, slot, take_total);
    __syncthreads();
    slot += run_take;
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      if (!take[i]) continue;
      const int c = cand_col[base + tid * kItems + i];
      if (a.sorted) {
        sm.buf[slot] = (static_cast<unsigned long long>(keys[i]) << 32) | static_cast<uint32_t>(c);
        atomicMin(&fs.kmin, keys[i]);
        atomicMax(&fs.kmax, keys[i]);
      } else {
        write_ranked(a, r, ks, row, slot, c);
      }
      ++slot;
    }
    run_eq += eq_total;
    run_take += take_total;
  }
  if (a.sorted) {
    // A stable sort on the key alone (the buffer is in column order, so ties stay in ascending
    // column order), on the bits where the selected keys differ: every key in [kmin, kmax] shares
    // their common prefix. The padding (key 0) comes after every entry and sorts last.
    __syncthreads();
    const int end_bit = sort_end_bit(fs.kmin, fs.kmax);
    uint32_t sk[kItems];
    int32_t sc[kItems];
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      const int j = tid * kItems + i;
      const unsigned long long e = j < run_take ? sm.buf[j] : 0ull;
      sk[i] = static_cast<uint32_t>(e >> 32);
      sc[i] = static_cast<int32_t>(e & 0xffffffffu);
    }
    __syncthreads();
    BlockSortKV(sm.tmp.sort_kv).SortDescendingBlockedToStriped(sk, sc, 0, end_bit);
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      const int64_t pos = i * kThreads + tid;
      if (pos >= keff) continue;
      write_ranked(a, r, ks, row, pos, sc[i]);
    }
  }
}

__device__ __forceinline__ bool candidates_fit(const TopKArgs& a, int n_cand, int64_t keff) {
  return n_cand <= kCandCap && (!a.sorted || keff <= kTile);
}

// Two shapes of one kernel: many rows run two blocks per SM with 4 loads in flight per thread
// (Deep = false: the SM's two rows cover the latency); fewer rows run one block per SM with 8
// (Deep = true: a row's own loads must cover it). Measured on the H200: docs/performance.md.
template <bool Deep>
__global__ void __launch_bounds__(kThreads, Deep ? 1 : 2) topk_filter_kernel(const __grid_constant__ TopKArgs a) {
  __shared__ Smem sm;  // the row kernel's storage: its fallback path and the final sort
  __shared__ FilterSmem fs;
  extern __shared__ uint32_t cand_mem[];
  uint32_t* cand_key = cand_mem;
  int32_t* cand_col = reinterpret_cast<int32_t*>(cand_mem + kCandCap);
  const int tid = threadIdx.x, lane = tid & 31;

  for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
    int64_t ks, ke;
    row_range(a, r, &ks, &ke);
    const int n = static_cast<int>(ke - ks);
    const RowGroups g(a, r, ks, ke);
    const float* row = g.row_abs + ks;

    for (int i = tid; i < kBins11; i += kThreads) fs.hist[i] = 0;
    if (tid == 0) sm.valid = 0;
    __syncthreads();
    int valid = pass_a<Deep ? 8 : 4>(g, fs.hist);
    valid = __reduce_add_sync(0xffffffffu, valid);
    if (lane == 0 && valid) atomicAdd(&sm.valid, valid);
    __syncthreads();
    const int nvalid = sm.valid;
    const int64_t keff = a.k < nvalid ? a.k : nvalid;

    // Candidates: every valid key when the whole row is taken, else keys ≥ d0·2^21.
    uint32_t lo_key = 1u;
    int d0 = 0, need = 0, n_cand = nvalid;
    if (keff > 0 && keff < nvalid) {
      pick_digit(fs.hist, kBins11, static_cast<int>(keff), fs);
      __syncthreads();
      d0 = fs.digit;
      need = fs.need;
      n_cand = fs.above + fs.hist[d0];
      lo_key = static_cast<uint32_t>(d0) << 21;
    }
    if (keff > 0 && !candidates_fit(a, n_cand, keff)) {
      // The row kernel's path needs its 8-bit first histogram: sums of 8 consecutive 11-bit bins.
      for (int i = tid; i < 256; i += kThreads) {
        int s8 = 0;
#pragma unroll
        for (int j = 0; j < 8; ++j) s8 += fs.hist[i * 8 + j];
        sm.hist0[i] = s8;
      }
      __syncthreads();
      finish_row_multipass(a, r, ks, row, n, nvalid, keff, sm);
    } else if (keff > 0) {
      pass_b<Deep ? 4 : 2>(g, lo_key, cand_key, cand_col, fs);
      finish_candidates(a, r, ks, row, n_cand, keff, nvalid, d0, need, cand_key, cand_col, sm, fs);
    }
    write_padding<kThreads>(a, r, keff);
    __syncthreads();
  }
}

// The filter kernel's dynamic shared memory (the candidates), set once per device.
Status filter_attributes() {
  static cuda::OncePerDevice once;
  const cudaError_t e = once.run([] {
    const int bytes = static_cast<int>(2 * kCandCap * sizeof(uint32_t));
    cudaError_t err = cudaFuncSetAttribute(topk_filter_kernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    if (err == cudaSuccess)
      err = cudaFuncSetAttribute(topk_filter_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    return err;
  });
  if (e == cudaSuccess) return Status();
  return Status(StatusCode::kCudaError,
                std::string("topk: setting the attributes of topk_filter_kernel failed: ") + cudaGetErrorString(e));
}

// Which kernel: DSA_TOPK_KERNEL=row|filter|cluster|stream forces one where it applies (a tuning
// knob).
enum class Kernel { kAuto, kRow, kFilter, kCluster, kStream };
Kernel forced_kernel() {
  static const Kernel k = [] {
    const char* e = std::getenv("DSA_TOPK_KERNEL");
    if (!e) return Kernel::kAuto;
    const std::string v(e);
    return v == "row"       ? Kernel::kRow
           : v == "filter"  ? Kernel::kFilter
           : v == "cluster" ? Kernel::kCluster
           : v == "stream"  ? Kernel::kStream
                            : Kernel::kAuto;
  }();
  return k;
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
  // Rows enough for a quarter of the SMs: the filter kernel (two streaming reads per row); fewer:
  // the cluster kernel (each row spread over a cluster); the row kernel for sorted k > 2048.
  // Measured on the H200 (docs/performance.md). DSA_TOPK_KERNEL forces one where it applies.
  const Kernel forced = forced_kernel();
  // The stream kernel (topk_stream.cu, each row read once): forced only, for now.
  if (forced == Kernel::kStream && topk_detail::stream_takes(a)) return topk_detail::launch_stream(a, stream);
  const bool filter_ok = !a.sorted || a.k <= kTile;
  const bool cluster_ok = topk_detail::cluster_takes(a, dev.cc_major);
  const bool few_rows = a.rows * 4 < static_cast<int64_t>(dev.sm_count);
  Kernel use = Kernel::kRow;
  if (forced == Kernel::kCluster || (forced == Kernel::kAuto && few_rows && cluster_ok)) {
    use = cluster_ok ? Kernel::kCluster : Kernel::kRow;
  } else if (forced != Kernel::kRow && filter_ok) {
    use = Kernel::kFilter;
  }
  if (use == Kernel::kCluster) return topk_detail::launch_cluster(a, dev.sm_count, stream);
  if (use == Kernel::kFilter) {
    if (Status st = filter_attributes(); !st.ok()) return st;
    const size_t smem = 2 * kCandCap * sizeof(uint32_t);
    if (a.rows >= 2 * static_cast<int64_t>(dev.sm_count))
      topk_filter_kernel<false><<<cuda::grid_for(a.rows, 1), kThreads, smem, stream>>>(a);
    else
      topk_filter_kernel<true><<<cuda::grid_for(a.rows, 1), kThreads, smem, stream>>>(a);
    return cuda::launch_status("topk", "topk_filter_kernel");
  }
  topk_kernel<<<cuda::grid_for(a.rows, 1), kThreads, 0, stream>>>(a);
  return cuda::launch_status("topk", "topk_kernel");
}

}  // namespace dsa::cuda_backend
