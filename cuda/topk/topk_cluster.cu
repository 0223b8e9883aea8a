// CUDA OP-TOPK, the cluster kernel (SPEC §5, D7): one thread-block cluster of C CTAs per row, the
// row read from HBM once and kept in the cluster's shared memory, the radix passes run there.
// Bitwise equal to the CPU reference and to the one-block-per-row kernel of topk.cu.
//
// Why. A row of 128K fp32 scores is 512 KB: too big for one SM, so the single-block kernel streams
// it ~5 times through L2 and 64 rows use 64 SMs. Split over a cluster, each CTA holds a slice of at
// most ~17K keys (68 KB), every later pass reads shared memory, and the CTAs exchange 2048-bin
// histograms through distributed shared memory (DSMEM). Small batches get larger clusters so that
// rows·C fills the GPU (decode: 64 rows × 128K → 512 CTAs).
//
// Per row (every CTA of the cluster runs the same branches, decided from cluster-wide counts), with
// four cluster barriers:
//   1. load: CTA c converts its slice of [ks, ke) (aligned down to 16 bytes, so float4 loads) to
//      order-preserving keys in shared memory, counts the valid ones and histograms bits 31..21;
//   2. if k_eff = min(k, |V|) < |V|: three radix passes (11, 11, 10 bits) find T, the k_eff-th
//      largest key, and m, how many keys equal to T are taken ("ties go to the lowest columns").
//      Each pass: local histogram → remote atomic adds into the owners' merged bins (the 32
//      segments of a pass are owned round-robin by the CTAs) and segment totals; the local
//      histogram becomes a suffix-sum array → cluster barrier → warp 0 of every CTA scans the 32
//      segment totals, then the chosen segment's merged bins, and picks the digit;
//   3. count: every CTA's keys > T and == T follow from the published suffix sums (three loads
//      per CTA, no barrier): each CTA derives its output offset and its share of the ties from the
//      CTAs before it (column order), then per warp from a local count;
//   4. write: each warp walks its contiguous part in column order, ranks ties and output slots
//      with ballots, and writes (key, column) into CTA 0's shared buffer (sorted) or the index
//      straight to its final place (unsorted: ascending column, the reference's order) → cluster
//      barrier (the row's last);
//   5. sorted: CTA 0 sorts the ≤ 2048 (key, column) pairs descending with a stable
//      cub::BlockRadixSort (the buffer is in column order, so equal keys stay in ascending column
//      order) and writes indices (and scores) in the requested domain, −1 padding, k_eff, while
//      the other CTAs load the next row.
// No candidate buffer can overflow: every pass counts, the write step places exactly k_eff entries.
//
// Taken when: sorted and k ≤ 2048, or unsorted with any k; rows up to 16 × 46K keys (753K
// columns); compute capability ≥ 9.0 (clusters). Everything else runs topk.cu's kernel.
// Cluster size: the smallest power of two whose slices hold ≤ ~17K keys, doubled while rows·C
// covers the GPU less than twice; DSA_TOPK_CLUSTER=1|2|4|8|16 overrides it (a tuning knob).
#include <cooperative_groups.h>

#include <cstdlib>

#include <cub/block/block_radix_sort.cuh>

#include "topk/topk_shared.cuh"

namespace dsa::cuda_backend::topk_detail {

namespace {

namespace cg = cooperative_groups;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kSortItems = static_cast<int>(kClusterMaxSortedK) / kThreads;
// A slice is a whole number of (8 warps × 32 lanes × 4 keys), so every warp sweeps whole rows of
// uint4 and the loops need no tails.
constexpr int64_t kSliceQuantum = kWarps * 32 * 4;
constexpr int64_t kSliceTarget = 16 * 1024 + kSliceQuantum;  // ≈ 70 KB of keys: 2 CTAs per SM
constexpr int64_t kSliceMax = 46 * 1024;                     // 184 KB: the longest rows, 1 CTA per SM
constexpr int64_t kMinSliceToSplit = 4096;  // do not split rows finer than this to fill the GPU
constexpr int kMaxCluster = 16;             // non-portable on sm_90; 8 is the portable limit

constexpr int kBins0 = 2048, kBins1 = 2048, kBins2 = 1024;  // digits: bits 31..21, 20..10, 9..0
constexpr int kBinsTotal = kBins0 + kBins1 + kBins2;
constexpr int kSegments = 32;  // per pass; segment s is owned (merged) by CTA s mod C
__device__ __host__ __forceinline__ constexpr int seg_bins(int pass) { return (pass == 2 ? kBins2 : kBins0) / kSegments; }

using BlockSort = cub::BlockRadixSort<uint32_t, kThreads, kSortItems, int32_t>;

struct Shared {
  // This CTA's histograms of the three passes; after its pushes each becomes a suffix-sum array
  // (suffix[j] = keys with digit ≥ j), which the other CTAs read to derive this CTA's counts.
  int hist[kBinsTotal];
  union {
    struct {
      uint32_t key[kClusterMaxSortedK];
      int32_t col[kClusterMaxSortedK];
    } gather;  // CTA 0, sorted mode: the selected (key, column − ks), in column order
    typename BlockSort::TempStorage sort;
  } u;
  int seg_total[3][kSegments];  // cluster totals of the segments this CTA owns
  int warp_gt[kWarps], warp_eq[kWarps];
  int warp_off[kWarps], warp_take_eq[kWarps];
  int valid;  // valid keys of this CTA's slice
  int digit, need;  // warp 0 → block broadcast
  unsigned kmin, kmax;  // CTA 0: the range of the selected keys
};

__device__ __host__ __forceinline__ int64_t slice_keys(int64_t span, int64_t C) {
  return (span + C - 1) / C + kSliceQuantum - 1 - ((span + C - 1) / C + kSliceQuantum - 1) % kSliceQuantum;
}

// Ints of merged bins a CTA owns, per pass and in all: ceil(32 / C) segments of each pass.
__device__ __host__ __forceinline__ int merged_ints(int C) { return (kSegments + C - 1) / C * (kBinsTotal / kSegments); }
__device__ __forceinline__ int merged_base(int pass, int C) {
  const int segs = (kSegments + C - 1) / C;
  return pass == 0 ? 0 : (pass == 1 ? segs * seg_bins(0) : segs * (seg_bins(0) + seg_bins(1)));
}
// Where bin j of pass p lives in its owner's merged array.
__device__ __forceinline__ int merged_index(int pass, int j, int C) {
  const int seg = seg_bins(pass), s = j / seg;
  return merged_base(pass, C) + (s / C) * seg + j % seg;
}

__device__ __forceinline__ int clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

__device__ __forceinline__ int warp_inclusive(int v, int lane) {
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int t = __shfl_up_sync(0xffffffffu, v, o);
    if (lane >= o) v += t;
  }
  return v;
}

// After the local histogram of pass p is complete (block barrier): adds it into the owners'
// merged bins and segment totals (remote atomics; the cluster barrier that follows makes them
// visible), then turns it into a suffix-sum array in place. Each thread owns nbins/256 contiguous
// bins, so the 8 threads of a segment reduce its total with shuffles.
__device__ __forceinline__ void push_and_suffix(cg::cluster_group& cluster, Shared& sm, int* merged, int pass,
                                                int* hist, int nbins) {
  const int C = static_cast<int>(cluster.num_blocks());
  const int per = nbins / kThreads;  // 8 or 4
  const int j0 = threadIdx.x * per;
  const int lane = threadIdx.x & 31;
  int v[8];
  int sum = 0;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    v[i] = i < per ? hist[j0 + i] : 0;
    sum += v[i];
  }
  const int s = j0 / seg_bins(pass);
  const int owner = s % C;
  int* remote = cluster.map_shared_rank(merged, owner);
#pragma unroll
  for (int i = 0; i < 8; ++i)
    if (i < per && v[i] != 0) atomicAdd(remote + merged_index(pass, j0 + i, C), v[i]);
  int seg_sum = sum;  // the 8 consecutive threads of one segment
  seg_sum += __shfl_xor_sync(0xffffffffu, seg_sum, 1);
  seg_sum += __shfl_xor_sync(0xffffffffu, seg_sum, 2);
  seg_sum += __shfl_xor_sync(0xffffffffu, seg_sum, 4);
  if ((lane & 7) == 0 && seg_sum != 0) atomicAdd(cluster.map_shared_rank(&sm.seg_total[pass][s], owner), seg_sum);
  // Suffix sums over the whole histogram: within the thread, then over threads (higher bins first).
  // Suffix sums over the whole histogram: the lanes above in this warp, then the warps above.
  int incl = sum;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int t = __shfl_down_sync(0xffffffffu, incl, o);
    if (lane + o < 32) incl += t;
  }
  int above = incl - sum;
  __syncthreads();  // every thread has read hist[] and pushed
  const int warp = threadIdx.x >> 5;
  if (lane == 0) sm.warp_gt[warp] = incl;  // the warp's total (borrowed array, free here)
  __syncthreads();
  for (int w = warp + 1; w < kWarps; ++w) above += sm.warp_gt[w];
  int run = above;
#pragma unroll
  for (int i = 7; i >= 0; --i) {
    if (i >= per) continue;
    run += v[i];
    hist[j0 + i] = run;
  }
  __syncthreads();
}

// After the cluster barrier that follows every CTA's push of pass p: the digit d with
// count(digits > d) < need ≤ count(digits ≥ d) and need − count(digits > d). Warp 0 scans the 32
// segment totals (from their owners), then the chosen segment's merged bins. Ends with a block
// barrier; every thread returns the same values.
__device__ __forceinline__ void cluster_pick(cg::cluster_group& cluster, Shared& sm, int* merged, int pass,
                                             int need, int* digit_out, int* need_out) {
  const int C = static_cast<int>(cluster.num_blocks());
  const int seg = seg_bins(pass);
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    const int s = kSegments - 1 - lane;
    const int tot = *cluster.map_shared_rank(&sm.seg_total[pass][s], s % C);
    const int incl = warp_inclusive(tot, lane);
    const unsigned cross = __ballot_sync(0xffffffffu, incl - tot < need && need <= incl);
    const int src = __ffs(cross) - 1;
    const int s_star = kSegments - 1 - src;
    const int rest = need - __shfl_sync(0xffffffffu, incl - tot, src);
    const int* owner = cluster.map_shared_rank(merged, s_star % C);
    const int per = seg / 32;  // 2 or 1 bins per lane, descending
    const int top = s_star * seg + seg - 1;
    const int b0 = owner[merged_index(pass, top - lane * per, C)];
    const int b1 = per > 1 ? owner[merged_index(pass, top - lane * per - 1, C)] : 0;
    const int mine = b0 + b1;
    const int incl2 = warp_inclusive(mine, lane);
    const unsigned cross2 = __ballot_sync(0xffffffffu, incl2 - mine < rest && rest <= incl2);
    if (lane == __ffs(cross2) - 1) {
      int cum = incl2 - mine;
      int d = top - lane * per;
      if (per > 1 && cum + b0 < rest) {
        cum += b0;
        d -= 1;
      }
      sm.digit = d;
      sm.need = rest - cum;
    }
  }
  __syncthreads();
  *digit_out = sm.digit;
  *need_out = sm.need;
}

// Zeroes this CTA's merged bins and segment totals of pass p (once nobody reads them any more).
__device__ __forceinline__ void clear_merged(Shared& sm, int* merged, int pass, int C) {
  const int n = ((kSegments + C - 1) / C) * seg_bins(pass), b = merged_base(pass, C);
  for (int i = threadIdx.x; i < n; i += kThreads) merged[b + i] = 0;
  if (threadIdx.x < kSegments) sm.seg_total[pass][threadIdx.x] = 0;
}

__global__ void __launch_bounds__(kThreads, 2) topk_cluster_kernel(const __grid_constant__ TopKArgs a, int L_cap) {
  extern __shared__ uint4 dyn[];  // this CTA's slice as keys (L_cap), then its merged bins
  uint4* dyn_keys = dyn;
  int* merged = reinterpret_cast<int*>(dyn + L_cap / 4);
  __shared__ Shared sm;
  cg::cluster_group cluster = cg::this_cluster();
  const int C = static_cast<int>(cluster.num_blocks());
  const int me = static_cast<int>(cluster.block_rank());
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t n_clusters = gridDim.x / C;
  int* h0 = sm.hist;
  int* h1 = h0 + kBins0;
  int* h2 = h1 + kBins1;

  // Merged bins receive other CTAs' remote adds: zero them before anyone can push.
  for (int p = 0; p < 3; ++p) clear_merged(sm, merged, p, C);
  cluster.sync();

  for (int64_t r = blockIdx.x / C; r < a.rows; r += n_clusters) {
    int64_t ks, ke;
    row_range(a, r, &ks, &ke);
    const float* row = a.scores + r * a.sc_s0;
    // The slices tile [vs, ke), vs = ks aligned down to 16 bytes; keys outside [ks, ke) are 0.
    const int64_t vs = ks - static_cast<int64_t>((reinterpret_cast<uintptr_t>(row + ks) >> 2) & 3u);
    const int64_t L = slice_keys(ke - vs, C);
    const int64_t base = vs + me * L;
    const int nvec = static_cast<int>(L / 4);

    for (int i = tid; i < kBinsTotal; i += kThreads) h0[i] = 0;
    if (tid == 0) sm.valid = 0;
    __syncthreads();

    // 1. Load, convert, count, first histogram. Four float4 loads in flight per thread.
    int valid = 0;
    for (int v0 = tid; v0 < nvec; v0 += 4 * kThreads) {
      float f[4][4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int v = v0 + u * kThreads;
        const int64_t g = base + 4 * static_cast<int64_t>(v);
        if (v < nvec && g >= ks && g + 4 <= ke) {
          const float4 x = __ldcs(reinterpret_cast<const float4*>(row + g));
          f[u][0] = x.x, f[u][1] = x.y, f[u][2] = x.z, f[u][3] = x.w;
        } else {
#pragma unroll
          for (int i = 0; i < 4; ++i) f[u][i] = (v < nvec && g + i >= ks && g + i < ke) ? row[g + i] : __int_as_float(0x7fffffff);
        }
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int v = v0 + u * kThreads;
        if (v >= nvec) continue;
        uint4 k4;
        k4.x = score_key(f[u][0]), k4.y = score_key(f[u][1]), k4.z = score_key(f[u][2]), k4.w = score_key(f[u][3]);
        dyn_keys[v] = k4;
        const uint32_t kk[4] = {k4.x, k4.y, k4.z, k4.w};
        const int nv = (kk[0] != 0u) + (kk[1] != 0u) + (kk[2] != 0u) + (kk[3] != 0u);
        valid += nv;
        const uint32_t b = kk[0] >> 21;
        if (nv == 4 && (kk[1] >> 21) == b && (kk[2] >> 21) == b && (kk[3] >> 21) == b) {
          atomicAdd(&h0[b], 4);  // plateaus and smooth rows: one atomic for the four
        } else {
#pragma unroll
          for (int i = 0; i < 4; ++i)
            if (kk[i] != 0u) atomicAdd(&h0[kk[i] >> 21], 1);
        }
      }
    }
    valid = __reduce_add_sync(0xffffffffu, valid);
    if (lane == 0 && valid) atomicAdd(&sm.valid, valid);
    __syncthreads();
    push_and_suffix(cluster, sm, merged, 0, h0, kBins0);
    cluster.sync();  // barrier 1: pass-0 histograms merged, valid counts published

    int nvalid = lane < C ? *cluster.map_shared_rank(&sm.valid, lane) : 0;
    nvalid = __reduce_add_sync(0xffffffffu, nvalid);
    const int keff = static_cast<int>(a.k < nvalid ? a.k : nvalid);

    if (keff == 0 || keff == nvalid) {
      clear_merged(sm, merged, 0, C);  // read by nobody this row; every push landed before barrier 1
    }
    if (keff > 0) {
      // 2. The cut: T and m. A cut at |V| needs no search (T = 0 takes every valid key).
      uint32_t T = 0u;
      int m = 0, d0 = 0, d1 = 0, d2 = 0;
      if (keff < nvalid) {
        int need;
        cluster_pick(cluster, sm, merged, 0, keff, &d0, &need);
        for (int v = tid; v < nvec; v += kThreads) {
          const uint4 k4 = dyn_keys[v];
          const uint32_t kk[4] = {k4.x, k4.y, k4.z, k4.w};
#pragma unroll
          for (int i = 0; i < 4; ++i)
            if ((kk[i] >> 21) == static_cast<uint32_t>(d0)) atomicAdd(&h1[(kk[i] >> 10) & 2047u], 1);
        }
        __syncthreads();
        push_and_suffix(cluster, sm, merged, 1, h1, kBins1);
        cluster.sync();  // barrier 2: every CTA is past its pass-0 reads
        clear_merged(sm, merged, 0, C);
        cluster_pick(cluster, sm, merged, 1, need, &d1, &need);
        const uint32_t p22 = (static_cast<uint32_t>(d0) << 11) | static_cast<uint32_t>(d1);
        for (int v = tid; v < nvec; v += kThreads) {
          const uint4 k4 = dyn_keys[v];
          const uint32_t kk[4] = {k4.x, k4.y, k4.z, k4.w};
#pragma unroll
          for (int i = 0; i < 4; ++i)
            if ((kk[i] >> 10) == p22) atomicAdd(&h2[kk[i] & 1023u], 1);
        }
        __syncthreads();
        push_and_suffix(cluster, sm, merged, 2, h2, kBins2);
        cluster.sync();  // barrier 3
        clear_merged(sm, merged, 1, C);
        cluster_pick(cluster, sm, merged, 2, need, &d2, &need);
        T = (p22 << 10) | static_cast<uint32_t>(d2);
        m = need;
      }

      // 3. Counts. Each CTA's keys > T and == T follow from its published suffix sums:
      //    > T: digit0 > d0, or digit0 = d0 and digit1 > d1, or both equal and digit2 > d2.
      if (warp == 0) {
        int g = 0, e = 0;
        if (lane < C) {
          const int* hc = cluster.map_shared_rank(sm.hist, lane);
          if (keff < nvalid) {
            const int s2 = d2 + 1 < kBins2 ? hc[kBins0 + kBins1 + d2 + 1] : 0;
            g = (d0 + 1 < kBins0 ? hc[d0 + 1] : 0) + (d1 + 1 < kBins1 ? hc[kBins0 + d1 + 1] : 0) + s2;
            e = hc[kBins0 + kBins1 + d2] - s2;
          } else {
            g = *cluster.map_shared_rank(&sm.valid, lane);  // T = 0: every valid key
          }
        }
        // Ties go to the lowest columns: CTA by CTA (lanes), then warp by warp.
        const int e_incl = warp_inclusive(lane < me ? e : 0, lane);
        const int e_mine = __shfl_sync(0xffffffffu, e, me);
        const int before_eq = __shfl_sync(0xffffffffu, e_incl, 31);
        const int take = lane < me ? clampi(m - (e_incl - e), 0, e) : 0;
        const int off = __reduce_add_sync(0xffffffffu, lane < me ? g + take : 0);
        if (lane == 0) {
          sm.warp_off[0] = off;                                 // this CTA's first output slot
          sm.warp_take_eq[0] = clampi(m - before_eq, 0, e_mine);  // its share of the ties
        }
      }
      // Per warp (each warp owns a contiguous run of the slice): counts, then offsets.
      const int per_warp = nvec / kWarps;  // a multiple of 32
      const int v_begin = warp * per_warp;
      int gt = 0, eq = 0;
      for (int it = 0; it < per_warp; it += 32) {
        const uint4 k4 = dyn_keys[v_begin + it + lane];
        gt += (k4.x > T) + (k4.y > T) + (k4.z > T) + (k4.w > T);
        eq += (k4.x == T) + (k4.y == T) + (k4.z == T) + (k4.w == T);
      }
      gt = __reduce_add_sync(0xffffffffu, gt);
      eq = __reduce_add_sync(0xffffffffu, eq);
      __syncthreads();  // warp 0's results are in warp_off[0] / warp_take_eq[0]
      if (lane == 0) sm.warp_gt[warp] = gt, sm.warp_eq[warp] = eq;
      __syncthreads();
      if (tid == 0) {
        int off = sm.warp_off[0], eq_w = 0;
        const int my_m = sm.warp_take_eq[0];
        for (int w = 0; w < kWarps; ++w) {
          const int t = clampi(my_m - eq_w, 0, sm.warp_eq[w]);
          sm.warp_off[w] = off;
          sm.warp_take_eq[w] = t;
          off += sm.warp_gt[w] + t;
          eq_w += sm.warp_eq[w];
        }
      }
      __syncthreads();

      // 4. Write: ranks of ties and output slots from ballots, in column order (lane-major, then
      // the lane's 4 keys).
      uint32_t* gkey = a.sorted ? cluster.map_shared_rank(sm.u.gather.key, 0) : nullptr;
      int32_t* gcol = a.sorted ? cluster.map_shared_rank(sm.u.gather.col, 0) : nullptr;
      int slot = sm.warp_off[warp];
      const int take_eq = sm.warp_take_eq[warp];
      int ties = 0;
      const unsigned lt_mask = (1u << lane) - 1u;
      for (int it = 0; it < per_warp; it += 32) {
        const int v = v_begin + it + lane;
        const uint4 k4 = dyn_keys[v];
        const uint32_t kk[4] = {k4.x, k4.y, k4.z, k4.w};
        unsigned bal_eq[4], bal_gt[4];
        unsigned any = 0u;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          bal_eq[i] = __ballot_sync(0xffffffffu, kk[i] == T);
          bal_gt[i] = __ballot_sync(0xffffffffu, kk[i] > T);
          any |= bal_eq[i] | bal_gt[i];
        }
        if (any == 0u) continue;
        // Ties before this lane's first key, in column order, then the taken ones.
        int tie_rank = ties;
#pragma unroll
        for (int i = 0; i < 4; ++i) tie_rank += __popc(bal_eq[i] & lt_mask);
        bool take[4];
        unsigned bal_take[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          take[i] = kk[i] > T;
          if (kk[i] == T) take[i] = tie_rank++ < take_eq;
          bal_take[i] = __ballot_sync(0xffffffffu, take[i]);
        }
        int pos = slot;
        int total_take = 0, total_eq = 0;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          pos += __popc(bal_take[i] & lt_mask);
          total_take += __popc(bal_take[i]);
          total_eq += __popc(bal_eq[i]);
        }
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          if (!take[i]) continue;
          const int64_t c_rel = base + 4 * static_cast<int64_t>(v) + i - ks;
          if (a.sorted) {
            gkey[pos] = kk[i];
            gcol[pos] = static_cast<int32_t>(c_rel);
          } else {
            write_ranked(a, r, ks, row + ks, pos, c_rel);
          }
          ++pos;
        }
        ties += total_eq;
        slot += total_take;
      }
    }

    // The row's last barrier: every remote read of this row's histograms, counts and merged bins,
    // and every write into CTA 0's gather buffer, is done.
    cluster.sync();
    clear_merged(sm, merged, 1, C);
    clear_merged(sm, merged, 2, C);

    if (me == 0) {
      // 5. Sorted: CTA 0 orders the k_eff pairs (key descending; stable, so columns ascending).
      if (a.sorted && keff > 0) {
        uint32_t sk[kSortItems];
        int32_t sc[kSortItems];
        if (tid == 0) sm.kmin = 0xffffffffu, sm.kmax = 0u;
        __syncthreads();
        uint32_t lo = 0xffffffffu, hi = 0u;
#pragma unroll
        for (int i = 0; i < kSortItems; ++i) {
          const int p = tid * kSortItems + i;
          sk[i] = p < keff ? sm.u.gather.key[p] : 0u;  // padding: after every entry, sorts last
          sc[i] = p < keff ? sm.u.gather.col[p] : 0;
          if (p < keff) lo = min(lo, sk[i]), hi = max(hi, sk[i]);
        }
        atomicMin(&sm.kmin, lo);
        atomicMax(&sm.kmax, hi);
        __syncthreads();
        // Only the bits where the selected keys differ (every key in [kmin, kmax] shares their
        // common prefix); the sort is stable, so ties keep column order and the padding stays last.
        const int end_bit = sort_end_bit(sm.kmin, sm.kmax);
        BlockSort(sm.u.sort).SortDescendingBlockedToStriped(sk, sc, 0, end_bit);
#pragma unroll
        for (int i = 0; i < kSortItems; ++i) {
          const int p = i * kThreads + tid;
          if (p >= keff) continue;
          write_ranked(a, r, ks, row + ks, p, sc[i]);
        }
        __syncthreads();  // the sort's storage is the next row's gather buffer
      }
      write_padding<kThreads>(a, r, keff);
    }
  }
}

}  // namespace

namespace {
// The kernel's attributes (the largest dynamic shared memory it may use, clusters of 16), set once
// per device.
Status set_attributes() {
  static cuda::OncePerDevice once;
  const cudaError_t e = once.run([] {
    cudaError_t err = cudaFuncSetAttribute(topk_cluster_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>((kSliceMax + merged_ints(kMaxCluster)) * sizeof(uint32_t)));
    if (err == cudaSuccess) err = cudaFuncSetAttribute(topk_cluster_kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
    return err;
  });
  if (e == cudaSuccess) return Status();
  return Status(StatusCode::kCudaError, std::string("topk: setting the attributes of topk_cluster_kernel failed: ") +
                                            cudaGetErrorString(e));
}
}  // namespace

bool cluster_takes(const TopKArgs& a, int cc_major) {
  if (cc_major < 9) return false;
  if (a.sorted && a.k > kClusterMaxSortedK) return false;
  return slice_keys(a.cols + 3, kMaxCluster) <= kSliceMax;
}

Status launch_cluster(const TopKArgs& a, int sm_count, cudaStream_t stream) {
  const int64_t span = a.cols + 3;  // the slices may start up to 3 columns before ks
  int C = 1;
  while (C < kMaxCluster && slice_keys(span, C) > kSliceTarget) C *= 2;
  // Few rows: more CTAs per row until the grid covers the GPU twice.
  while (C < kMaxCluster && a.rows * C < 2 * static_cast<int64_t>(sm_count) && (span + 2 * C - 1) / (2 * C) >= kMinSliceToSplit)
    C *= 2;
  // Tuning knob (read once): DSA_TOPK_CLUSTER=C forces the cluster size where the slice still fits.
  static const int forced = [] {
    const char* e = std::getenv("DSA_TOPK_CLUSTER");
    const int v = e ? std::atoi(e) : 0;
    return (v == 1 || v == 2 || v == 4 || v == 8 || v == 16) ? v : 0;
  }();
  if (forced && slice_keys(span, forced) <= kSliceMax) C = forced;
  const int64_t L = slice_keys(span, C);
  const size_t smem = static_cast<size_t>(L + merged_ints(C)) * sizeof(uint32_t);
  if (Status st = set_attributes(); !st.ok()) return st;
  const int64_t clusters = a.rows < (1 << 20) ? a.rows : (1 << 20);  // rows loop past this

  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(clusters * C));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = static_cast<unsigned>(C);
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  cudaLaunchKernelEx(&cfg, topk_cluster_kernel, a, static_cast<int>(L));
  return cuda::launch_status("topk", "topk_cluster_kernel");
}

}  // namespace dsa::cuda_backend::topk_detail
