// cuda/topk/topk_shared.cuh — what the two CUDA top-k kernels share (topk.cu: one block per row;
// topk_cluster.cu: one thread-block cluster per row): the launch arguments, the order-preserving
// key and the index-domain mapping. nvcc only.
#pragma once

#include "common/cuda_common.cuh"

namespace dsa::cuda_backend::topk_detail {

struct TopKArgs {
  const float* scores;
  int64_t sc_s0;
  int64_t rows, cols;
  const int32_t* ks;
  int64_t ks_s0;
  const int32_t* ke;
  int64_t ke_s0;
  int32_t* idx;
  int64_t idx_s0;
  int64_t k;
  float* osc;
  int64_t osc_s0;
  int32_t* keff;
  int64_t keff_s0;
  int32_t domain;
  const int32_t* bt;
  int64_t bt_s0, bt_rows, bt_cols;
  int64_t rows_per_batch, P;
  bool sorted;
};

// Each valid score (not NaN, not −∞) maps to an order-preserving uint32 key; −0 is mapped to +0
// first, so the two zeros tie as they compare equal in fp32. Invalid scores get key 0, below every
// valid key (the smallest, −FLT_MAX, maps to 0x00800000).
__device__ __forceinline__ uint32_t score_key(float f) {
  uint32_t u = __float_as_uint(f);
  if (f != f || u == 0xff800000u) return 0u;  // NaN or −∞: not valid
  if (u == 0x80000000u) u = 0u;               // −0 ties +0
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Adds 1 to hist[bin] for every lane with `add`, one shared atomic per distinct bin of the warp
// (plateaus put whole warps into one bin).
__device__ __forceinline__ void hist_add(int* hist, int bin, bool add) {
  const unsigned peers = __match_any_sync(__activemask(), add ? bin : -1);
  if (add && __ffs(peers) - 1 == static_cast<int>(threadIdx.x & 31)) atomicAdd(&hist[bin], __popc(peers));
}

// The row's key range [ks, ke), clamped to [0, cols] with ke ≥ ks: bad values cannot be reported
// without a host synchronization, so the kernels stay in bounds instead (cuda/README.md).
__device__ __forceinline__ void row_range(const TopKArgs& a, int64_t r, int64_t* ks_out, int64_t* ke_out) {
  int64_t ks = a.ks ? a.ks[r * a.ks_s0] : 0;
  int64_t ke = a.ke ? a.ke[r * a.ke_s0] : a.cols;
  ks = ks < 0 ? 0 : (ks > a.cols ? a.cols : ks);
  ke = ke < ks ? ks : (ke > a.cols ? a.cols : ke);
  *ks_out = ks;
  *ke_out = ke;
}

// The output index of column ks + c_rel of row r in the requested domain (SPEC §5); a column whose
// page lies outside block_table gives −1.
__device__ __forceinline__ int32_t to_domain(const TopKArgs& a, int64_t r, int64_t ks, int64_t c_rel) {
  if (a.domain == static_cast<int32_t>(IndexDomain::kRelative)) return static_cast<int32_t>(c_rel);
  if (a.domain == static_cast<int32_t>(IndexDomain::kPagedSlot)) {
    const int64_t b = r / a.rows_per_batch, page = c_rel / a.P;
    if (b >= a.bt_rows || page >= a.bt_cols) return -1;
    return static_cast<int32_t>(static_cast<int64_t>(a.bt[b * a.bt_s0 + page]) * a.P + c_rel % a.P);
  }
  return static_cast<int32_t>(ks + c_rel);
}

// Rank `pos` of row r is column ks + c (`row` points at column ks): its index in the requested
// domain and, when asked for, its score. (Templated on the callers' index types, so each call
// keeps its own integer arithmetic.)
template <class Pos, class Col>
__device__ __forceinline__ void write_ranked(const TopKArgs& a, int64_t r, int64_t ks, const float* row, Pos pos, Col c) {
  a.idx[r * a.idx_s0 + pos] = to_domain(a, r, ks, c);
  if (a.osc) a.osc[r * a.osc_s0 + pos] = row[c];
}

// Ranks [k_eff, k) of row r hold −1 (and −∞), then k_eff itself; every thread of a kBlock-thread
// block calls it.
template <int kBlock, class Keff>
__device__ __forceinline__ void write_padding(const TopKArgs& a, int64_t r, Keff keff) {
  for (int64_t pos = keff + static_cast<Keff>(threadIdx.x); pos < a.k; pos += kBlock) {
    a.idx[r * a.idx_s0 + pos] = -1;
    if (a.osc) a.osc[r * a.osc_s0 + pos] = __uint_as_float(0xff800000u);
  }
  if (a.keff && threadIdx.x == 0) a.keff[r * a.keff_s0] = static_cast<int32_t>(keff);
}

// The key bits a stable descending sort of keys in [kmin, kmax] needs: every such key shares the
// bits above the highest one where kmin and kmax differ (at least one bit, so the sort is valid).
__device__ __forceinline__ int sort_end_bit(unsigned kmin, unsigned kmax) {
  const unsigned diff = kmin ^ kmax;
  return diff == 0u ? 1 : 32 - __clz(diff);
}

// The cluster kernel (topk_cluster.cu). Returns false, launching nothing, when the problem is not
// one it takes (k > kClusterMaxSortedK in sorted mode, rows too long, a device without clusters);
// else the launch status.
constexpr int64_t kClusterMaxSortedK = 2048;
bool cluster_takes(const TopKArgs& a, int cc_major);
Status launch_cluster(const TopKArgs& a, int sm_count, cudaStream_t stream);

// The stream kernel (topk_stream.cu): each row read once, a running top k in shared memory. Takes
// 1 ≤ k ≤ kStreamMaxK, sorted or unsorted; stream_takes() says so (launch_stream() assumes it).
constexpr int64_t kStreamMaxK = 2048;
bool stream_takes(const TopKArgs& a);
Status launch_stream(const TopKArgs& a, cudaStream_t stream);

}  // namespace dsa::cuda_backend::topk_detail
