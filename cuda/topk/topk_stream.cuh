// cuda/topk/topk_stream.cuh — exact top-k of a row that arrives as a stream and never exists
// whole: a candidate buffer in shared memory, a running threshold, and block-wide compaction.
// Used by the fused indexer → top-k kernel (indexer_logits_wgmma.cu, IndexerTopKParams), whose
// scores exist only in registers. nvcc only.
//
// The order is OP-TOPK's (topk.cu): valid scores (score_key ≠ 0) by key descending, then column
// ascending. rank_of() packs it into one unsigned 64-bit number, larger = better and distinct for
// distinct columns, so "the k best" is always one exact set, whatever the ties:
//   - a stream admits an entry only when its rank beats the buffer's threshold — the rank of the
//     k-th best entry seen so far (kNoThreshold before the first compaction);
//   - when the buffer runs full, compact() keeps exactly the k best (a radix select over the
//     ranks, 8 bits per pass, stopping as soon as the cut bucket is taken whole) and returns the
//     new threshold. Entries dropped there can never re-enter the top k: k better ones were seen;
//   - at the end, compact() once more to exactly k, then sort_and_write() orders the survivors.
// The buffer's order (arrival, atomics) never reaches the output: every step above depends only on
// the set of entries, so the output is bitwise deterministic and equal to topk.cu's.
#pragma once

#include <cub/block/block_radix_sort.cuh>

#include "topk/topk_shared.cuh"

namespace dsa::cuda_backend::topk_stream {

using topk_detail::hist_add;
using topk_detail::score_key;

// Rank of (key, column) in the output order: key above, ~column below (column ≥ 0).
__device__ __forceinline__ unsigned long long rank_of(uint32_t key, int32_t col) {
  return (static_cast<unsigned long long>(key) << 32) | (0xffffffffu - static_cast<uint32_t>(col));
}
// rank_of(0, c) ≤ this for every column c ≥ 0: invalid entries (key 0) never pass `rank > threshold`.
constexpr unsigned long long kNoThreshold = 0xffffffffull;

// The float of a valid key (score_key's inverse; key 0x80000000 gives +0).
__device__ __forceinline__ float key_float(uint32_t key) {
  return __uint_as_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

// An admission threshold in float form, for the stream's hot loop: (v, c) beats it ⇔
// v > f || (v == f && c < col). Equivalent to rank_of(score_key(v), c) > rank_of(key, col) for every
// v, NaN (never admitted) and −0 (equal to +0) included; f = −∞, col = −1 admits every valid v.
struct Threshold {
  float f;
  int32_t col;
};
__device__ __forceinline__ bool beats(float v, int32_t c, Threshold t) { return v > t.f || (v == t.f && c < t.col); }
__device__ __forceinline__ Threshold threshold_of_rank(unsigned long long r) {
  return {key_float(static_cast<uint32_t>(r >> 32)), static_cast<int32_t>(0xffffffffu - static_cast<uint32_t>(r))};
}
// Admits every entry whose key is ≥ key (any column < 2^31 − 1).
__device__ __forceinline__ Threshold threshold_at_key(uint32_t key) { return {key_float(key), 0x7fffffff}; }

// Block-shared scratch of compact() and shrink(); any 8-byte-aligned shared location.
struct Scratch {
  int hist[256];
  int warp_cnt[2][32];
  unsigned long long min_kept;
  int digit, need, bucket, above;
  unsigned kmin, kmax;
};

// Warp 0: the digit d of s.hist (256 bins, descending) with count(> d) < need ≤ count(≥ d); stores
// d, need − count(> d), count(= d) and count(> d). Needs 1 ≤ need ≤ the total. Callers sync after.
__device__ __forceinline__ void pick_digit(Scratch& s, int need) {
  const int lane = threadIdx.x & 31;
  int bins[8], sum = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) sum += (bins[j] = s.hist[255 - (lane * 8 + j)]);
  int incl = sum;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int v = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += v;
  }
  int cum = incl - sum;
  if (cum < need && need <= incl) {
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      if (cum + bins[j] >= need) {
        s.digit = 255 - (lane * 8 + j);
        s.need = need - cum;
        s.bucket = bins[j];
        s.above = cum;
        break;
      }
      cum += bins[j];
    }
  }
}

// Keeps the entries i with keep(rank_of(key_i, col_i)) in buffer order (an entry only moves to a
// lower slot and a step's writes land below the next step's reads, so one barrier per step — all
// reads before any write — is enough). Returns the kept count; s.min_kept = the lowest kept rank.
template <int kThreads, class Keep>
__device__ int keep_if(float* sc, int32_t* col, int n, Scratch& s, Keep&& keep_rank) {
  constexpr int kWarps = kThreads / 32, kItems = 4;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  __syncthreads();  // s.min_kept / s.warp_cnt readers of a previous call are done
  if (tid == 0) s.min_kept = ~0ull;
  int written = 0, parity = 0;
  unsigned long long my_min = ~0ull;
  for (int base = 0; base < n; base += kThreads * kItems) {
    float v[kItems];
    int32_t c[kItems];
    bool keep[kItems];
    int cnt = 0;
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      const int j = base + tid * kItems + i;
      keep[i] = false;
      if (j < n) {
        v[i] = sc[j];
        c[i] = col[j];
        const unsigned long long r = rank_of(score_key(v[i]), c[i]);
        keep[i] = keep_rank(r);
        if (keep[i] && r < my_min) my_min = r;
      }
      cnt += keep[i];
    }
    int incl = cnt;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int t = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += t;
    }
    if (lane == 31) s.warp_cnt[parity][warp] = incl;
    __syncthreads();
    int before = 0, total = 0;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const int wc = s.warp_cnt[parity][w];
      before += w < warp ? wc : 0;
      total += wc;
    }
    int pos = written + before + incl - cnt;
#pragma unroll
    for (int i = 0; i < kItems; ++i)
      if (keep[i]) {
        sc[pos] = v[i];
        col[pos] = c[i];
        ++pos;
      }
    written += total;
    parity ^= 1;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const unsigned long long t = __shfl_xor_sync(0xffffffffu, my_min, o);
    my_min = t < my_min ? t : my_min;
  }
  if (lane == 0 && my_min != ~0ull) atomicMin(&s.min_kept, my_min);
  __syncthreads();
  return written;
}


// Keeps the k best of the n entries (score bits sc[i], column col[i]) in sc/col[0, k), in their
// buffer order, and returns the rank of the worst one kept. Needs 0 < k < n and every entry valid;
// every thread of the kThreads-thread block calls it (block barriers inside).
template <int kThreads>
__device__ unsigned long long compact(float* sc, int32_t* col, int n, int k, Scratch& s) {
  static_assert(kThreads >= 256 && kThreads % 32 == 0 && kThreads <= 1024, "256 bins, one per thread");
  const int tid = threadIdx.x;
  // Radix select over the 64-bit ranks, top byte first: after the pass at `shift`, the kept set
  // is {rank >> shift > prefix >> shift} plus `need` entries of the bucket prefix; the select stops
  // when the bucket is taken whole (ranks are distinct, so by shift 0 at the latest).
  unsigned long long prefix = 0ull;
  int need = k, shift = 56;
  __syncthreads();  // the previous call's readers of s are done
  for (;;) {
    if (tid < 256) s.hist[tid] = 0;
    __syncthreads();
    const unsigned long long hi = shift == 56 ? 0ull : prefix >> (shift + 8);
#pragma unroll 4
    for (int i = tid; i < n; i += kThreads) {
      const unsigned long long r = rank_of(score_key(sc[i]), col[i]);
      hist_add(s.hist, static_cast<int>((r >> shift) & 255u), shift == 56 || (r >> (shift + 8)) == hi);
    }
    __syncthreads();
    if (tid < 32) pick_digit(s, need);
    __syncthreads();
    prefix |= static_cast<unsigned long long>(s.digit) << shift;
    need = s.need;
    if (s.bucket == need || shift == 0) break;
    shift -= 8;
  }
  const unsigned long long cut = prefix >> shift;  // keep ⇔ rank >> shift ≥ cut
  keep_if<kThreads>(sc, col, n, s, [&](unsigned long long r) { return (r >> shift) >= cut; });
  return s.min_kept;
}

// A cheaper, inexact compaction for the stream: drops every entry whose key is below L, the largest
// key boundary with at least k entries at or above it that 8-bit histograms over the buffer's own
// key range [kmin, kmax] can find, refining the boundary's bucket until at most `target` entries
// stay. Sets *n to the kept count and returns the admission threshold "key ≥ L"; the k best are
// always kept. Buckets of one key value above target (plateaus of equal scores) fall back to
// compact() — exact, k kept. Needs 0 < k < *n, k ≤ target, every entry valid; whole block.
template <int kThreads>
__device__ Threshold shrink(float* sc, int32_t* col, int* n_io, int k, int target, Scratch& s) {
  const int tid = threadIdx.x, lane = tid & 31, n = *n_io;
  __syncthreads();
  if (tid == 0) s.kmin = 0xffffffffu, s.kmax = 0u;
  __syncthreads();
  unsigned lo = 0xffffffffu, hi = 0u;
#pragma unroll 4
  for (int i = tid; i < n; i += kThreads) {
    const unsigned key = score_key(sc[i]);
    lo = key < lo ? key : lo;
    hi = key > hi ? key : hi;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    lo = min(lo, __shfl_xor_sync(0xffffffffu, lo, o));
    hi = max(hi, __shfl_xor_sync(0xffffffffu, hi, o));
  }
  if (lane == 0) atomicMin(&s.kmin, lo), atomicMax(&s.kmax, hi);
  __syncthreads();
  // The keys still undecided are [base, base + width), 256 bins of 2^shift keys; kept_above
  // entries lie above them.
  unsigned base = s.kmin;
  const unsigned range = s.kmax - s.kmin;
  unsigned long long width = static_cast<unsigned long long>(range) + 1ull;
  int shift = max(0, 32 - __clz(static_cast<int>(range)) - 8);
  int need = k, kept_above = 0;
  for (;;) {
    if (tid < 256) s.hist[tid] = 0;
    __syncthreads();
#pragma unroll 4
    for (int i = tid; i < n; i += kThreads) {
      const unsigned key = score_key(sc[i]);
      if (key >= base && static_cast<unsigned long long>(key - base) < width)
        atomicAdd(&s.hist[(key - base) >> shift], 1);
    }
    __syncthreads();
    if (tid < 32) pick_digit(s, need);
    __syncthreads();
    const int d = s.digit;
    const int total = kept_above + s.above + s.bucket;  // entries with key ≥ the bucket's lower edge
    kept_above += s.above;
    need = s.need;
    base += static_cast<unsigned>(d) << shift;
    width = 1ull << shift;
    if (total <= target) break;
    if (shift == 0) {  // one key value holds the cut and too many entries: exact selection
      const unsigned long long r = compact<kThreads>(sc, col, n, k, s);
      *n_io = k;
      return threshold_of_rank(r);
    }
    shift = shift >= 8 ? shift - 8 : 0;
  }
  const unsigned L = base;
  *n_io = keep_if<kThreads>(sc, col, n, s, [&](unsigned long long r) { return static_cast<unsigned>(r >> 32) >= L; });
  return threshold_at_key(L);
}

// Sorting the survivors: cub's block radix sort of kThreads × kItems 64-bit keys with a 32-bit
// value (the score bits), on only the bits that can differ, 6 bits per pass.
template <int kThreads, int kItems>
using RowSort = cub::BlockRadixSort<unsigned long long, kThreads, kItems, uint32_t, 6>;

// Orders the n ≤ kThreads·kItems entries of the buffer — sorted: key descending then column
// ascending; unsorted: column ascending (OP-TOPK's unsorted order) — and calls
// write(pos, column, score) for ranks [0, n_write) (n_write < 0: n). col_bits: columns are
// < 2^col_bits (≥ 1). Every thread of the block calls it; `temp` is the sort's shared storage, `s`
// the scratch.
template <int kThreads, int kItems, class Write>
__device__ void sort_and_write(const float* sc, const int32_t* col, int n, bool sorted, int col_bits,
                               typename RowSort<kThreads, kItems>::TempStorage& temp, Scratch& s, Write&& write,
                               int n_write = -1) {
  if (n_write < 0 || n_write > n) n_write = n;
  const int tid = threadIdx.x;
  // Sorted: sort ascending on (kmax − key) << col_bits | column — the key range needs only the bits
  // where the survivors' keys differ. kmin/kmax travel through the scratch's histogram words.
  unsigned* kr = reinterpret_cast<unsigned*>(s.hist);
  __syncthreads();
  if (tid == 0) kr[0] = 0xffffffffu, kr[1] = 0u;
  __syncthreads();
  if (sorted) {
    unsigned lo = 0xffffffffu, hi = 0u;
    for (int i = tid; i < n; i += kThreads) {
      const unsigned key = score_key(sc[i]);
      lo = key < lo ? key : lo;
      hi = key > hi ? key : hi;
    }
    if (lo != 0xffffffffu) atomicMin(&kr[0], lo);
    if (hi != 0u) atomicMax(&kr[1], hi);
  }
  __syncthreads();
  const unsigned kmin = kr[0], kmax = kr[1];
  const int key_bits = sorted && kmax > kmin ? 32 - __clz(static_cast<int>(kmax - kmin)) : 0;
  const int end_bit = key_bits + col_bits;
  unsigned long long keys[kItems];
  uint32_t vals[kItems];
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    const int j = tid * kItems + i;
    keys[i] = ~0ull;  // padding: after every entry (equal masked bits only to the last, stable)
    vals[i] = 0u;
    if (j < n) {
      const unsigned key = score_key(sc[j]);
      const unsigned long long d = sorted ? static_cast<unsigned long long>(kmax - key) : 0ull;
      keys[i] = (d << col_bits) | static_cast<uint32_t>(col[j]);
      vals[i] = __float_as_uint(sc[j]);
    }
  }
  __syncthreads();  // temp may alias storage the caller read above
  RowSort<kThreads, kItems>(temp).SortBlockedToStriped(keys, vals, 0, end_bit);
  const unsigned long long col_mask = (1ull << col_bits) - 1ull;
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    const int pos = i * kThreads + tid;
    if (pos < n_write) write(pos, static_cast<int32_t>(keys[i] & col_mask), __uint_as_float(vals[i]));
  }
}

}  // namespace dsa::cuda_backend::topk_stream
