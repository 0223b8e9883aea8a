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
// Per row (every CTA of the cluster runs the same branches, decided from cluster-wide counts):
//   1. load: CTA c converts its slice of [ks, ke) (aligned down to 16 bytes, so float4 loads) to
//      order-preserving keys in shared memory, counts the valid ones and histograms bits 31..21;
//   2. if k_eff = min(k, |V|) < |V|: three radix passes (11, 11, 10 bits) find T, the k_eff-th
//      largest key, and m, how many keys equal to T are taken ("ties go to the lowest columns").
//      Each pass: local histogram → cluster barrier → CTA c sums, over all CTAs, the bins of the
//      32-bin-group "segments" s ≡ c (mod C) in place (nobody else reads those bins of its
//      histogram) with one total per segment → cluster barrier → warp 0 of every CTA scans the 32
//      segment totals, then the chosen segment's bins, and picks the digit;
//   3. count: each warp counts keys > T and == T over its contiguous eighth of the slice; CTAs
//      publish their counts → cluster barrier → each CTA derives its output offset and how many of
//      its ties it takes, from the CTAs before it (column order), then per warp the same;
//   4. write: each warp walks its part in column order, ranks ties and output slots with warp
//      scans, and writes (key, column) into CTA 0's shared buffer (sorted) or the index straight to
//      its final place (unsorted: ascending column, the reference's order);
//   5. sorted: cluster barrier, then CTA 0 sorts the ≤ 2048 (key, column) pairs descending with a
//      stable cub::BlockRadixSort (the buffer is in column order, so equal keys stay in ascending
//      column order) and writes indices (and scores) in the requested domain, −1 padding, k_eff.
// No candidate buffer can overflow: every pass counts, the write step places exactly k_eff entries.
//
// Taken when: sorted and k ≤ 2048, or unsorted with any k; rows up to 16 × 48K keys (786K
// columns); compute capability ≥ 9.0 (clusters). Everything else runs topk.cu's kernel.
#include <cooperative_groups.h>

#include <mutex>

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
constexpr int64_t kSliceMax = 48 * 1024;                     // 192 KB: the longest rows, 1 CTA per SM
constexpr int64_t kMinSliceToSplit = 4096;  // do not split rows finer than this to fill the GPU
constexpr int kMaxCluster = 16;             // non-portable on sm_90; 8 is the portable limit

constexpr int kBins0 = 2048, kBins1 = 2048, kBins2 = 1024;  // digits: bits 31..21, 20..10, 9..0
constexpr int kSegments = 32;

using BlockSort = cub::BlockRadixSort<uint32_t, kThreads, kSortItems, int32_t>;

struct Shared {
  union {
    int hist[kBins0 + kBins1 + kBins2];  // the three passes' histograms, one after the other; CTA
                                         // c's bins of its own segments end up holding cluster sums
    struct {
      uint32_t key[kClusterMaxSortedK];
      int32_t col[kClusterMaxSortedK];
    } gather;  // CTA 0, sorted mode: the selected (key, column − ks), in column order
    typename BlockSort::TempStorage sort;
  } u;
  int seg_total[3][kSegments];
  int warp_gt[kWarps], warp_eq[kWarps];
  int warp_off[kWarps], warp_take_eq[kWarps];
  int valid[2];        // published: valid keys of this CTA's slice (by row parity, see the loop)
  int cta_gt, cta_eq;  // published: keys > T and == T in this CTA's slice
  int digit, need;     // warp 0 → block broadcast
};

__device__ __host__ __forceinline__ int64_t slice_keys(int64_t span, int64_t C) {
  return (span + C - 1) / C + kSliceQuantum - 1 - ((span + C - 1) / C + kSliceQuantum - 1) % kSliceQuantum;
}

__device__ __forceinline__ int clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

// Inclusive and exclusive warp prefix sums.
__device__ __forceinline__ int warp_inclusive(int v, int lane) {
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int t = __shfl_up_sync(0xffffffffu, v, o);
    if (lane >= o) v += t;
  }
  return v;
}

// Given the local histograms `hist` of every CTA (complete: called right after a cluster barrier)
// and the rank `need` (1 ≤ need ≤ the number of keys counted), finds the digit d with
// count(digits > d) < need ≤ count(digits ≥ d) and returns need − count(digits > d). Ends with a
// block barrier; every thread returns the same values.
__device__ __forceinline__ void cluster_pick(cg::cluster_group& cluster, Shared& sm, int* hist, int nbins,
                                             int pass, int need, int* digit_out, int* need_out) {
  const int C = static_cast<int>(cluster.num_blocks());
  const int me = static_cast<int>(cluster.block_rank());
  const int seg = nbins / kSegments;
  // A: the cluster sums of the bins of my segments, in place, and their segment totals.
  for (int j = threadIdx.x; j < nbins; j += kThreads) {
    const int s = j / seg;
    if (s % C != me) continue;
    // Unrolled to the largest cluster so the C remote loads are in flight together (a DSMEM load
    // costs hundreds of cycles; one at a time, 16 of them would cost microseconds per pass).
    int part[kMaxCluster];
#pragma unroll
    for (int c = 0; c < kMaxCluster; ++c) part[c] = c < C ? cluster.map_shared_rank(hist, c)[j] : 0;
    int sum = 0;
#pragma unroll
    for (int c = 0; c < kMaxCluster; ++c) sum += part[c];
    hist[j] = sum;
    atomicAdd(&sm.seg_total[pass][s], sum);
  }
  __syncthreads();
  cluster.sync();
  // B: warp 0 scans segments from the highest down, then the bins of the one that crosses `need`.
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    const int s = kSegments - 1 - lane;
    const int tot = *cluster.map_shared_rank(&sm.seg_total[pass][s], s % C);
    const int incl = warp_inclusive(tot, lane);
    const unsigned cross = __ballot_sync(0xffffffffu, incl - tot < need && need <= incl);
    const int src = __ffs(cross) - 1;
    const int s_star = kSegments - 1 - src;
    int rest = need - __shfl_sync(0xffffffffu, incl - tot, src);
    const int* owner = cluster.map_shared_rank(hist, s_star % C);
    const int per = seg / 32;  // 2 or 1 bins per lane, descending
    const int top = s_star * seg + seg - 1;
    int b0 = owner[top - lane * per], b1 = per > 1 ? owner[top - lane * per - 1] : 0;
    const int mine = b0 + b1;
    const int incl2 = warp_inclusive(mine, lane);
    const unsigned cross2 = __ballot_sync(0xffffffffu, incl2 - mine < rest && rest <= incl2);
    const int src2 = __ffs(cross2) - 1;
    if (lane == src2) {
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

__global__ void __launch_bounds__(kThreads, 2) topk_cluster_kernel(const __grid_constant__ TopKArgs a) {
  extern __shared__ uint4 dyn_keys[];  // this CTA's slice as keys
  uint32_t* keys = reinterpret_cast<uint32_t*>(dyn_keys);
  __shared__ Shared sm;
  cg::cluster_group cluster = cg::this_cluster();
  const int C = static_cast<int>(cluster.num_blocks());
  const int me = static_cast<int>(cluster.block_rank());
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t n_clusters = gridDim.x / C;

  int parity = 0;
  for (int64_t r = blockIdx.x / C; r < a.rows; r += n_clusters, parity ^= 1) {
    int64_t ks, ke;
    row_range(a, r, &ks, &ke);
    const float* row = a.scores + r * a.sc_s0;
    // The slices tile [vs, ke), vs = ks aligned down to 16 bytes; keys outside [ks, ke) are 0.
    const int64_t vs = ks - static_cast<int64_t>((reinterpret_cast<uintptr_t>(row + ks) >> 2) & 3u);
    const int64_t L = slice_keys(ke - vs, C);
    const int64_t base = vs + me * L;
    const int nvec = static_cast<int>(L / 4);

    int* h0 = sm.u.hist;
    int* h1 = h0 + kBins0;
    int* h2 = h1 + kBins1;
    for (int i = tid; i < kBins0 + kBins1 + kBins2; i += kThreads) h0[i] = 0;
    for (int i = tid; i < 3 * kSegments; i += kThreads) sm.seg_total[i / kSegments][i % kSegments] = 0;
    // valid is double-buffered by row parity: a CTA that finds k_eff = 0 goes on to the next row
    // without another cluster barrier while slower CTAs may still read this row's counts.
    if (tid == 0) sm.valid[parity] = 0;
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
    if (lane == 0 && valid) atomicAdd(&sm.valid[parity], valid);
    __syncthreads();
    cluster.sync();

    int nvalid = lane < C ? *cluster.map_shared_rank(&sm.valid[parity], lane) : 0;
    nvalid = __reduce_add_sync(0xffffffffu, nvalid);
    const int keff = static_cast<int>(a.k < nvalid ? a.k : nvalid);

    if (keff > 0) {
      // 2. The cut: T and m. A cut at |V| needs no search (T = 0 takes every valid key).
      uint32_t T = 0u;
      int m = 0;
      if (keff < nvalid) {
        int d0, d1, d2, need;
        cluster_pick(cluster, sm, h0, kBins0, 0, keff, &d0, &need);
        for (int v = tid; v < nvec; v += kThreads) {
          const uint4 k4 = dyn_keys[v];
          const uint32_t kk[4] = {k4.x, k4.y, k4.z, k4.w};
#pragma unroll
          for (int i = 0; i < 4; ++i)
            if ((kk[i] >> 21) == static_cast<uint32_t>(d0)) atomicAdd(&h1[(kk[i] >> 10) & 2047u], 1);
        }
        __syncthreads();
        cluster.sync();
        cluster_pick(cluster, sm, h1, kBins1, 1, need, &d1, &need);
        const uint32_t p22 = (static_cast<uint32_t>(d0) << 11) | static_cast<uint32_t>(d1);
        for (int v = tid; v < nvec; v += kThreads) {
          const uint4 k4 = dyn_keys[v];
          const uint32_t kk[4] = {k4.x, k4.y, k4.z, k4.w};
#pragma unroll
          for (int i = 0; i < 4; ++i)
            if ((kk[i] >> 10) == p22) atomicAdd(&h2[kk[i] & 1023u], 1);
        }
        __syncthreads();
        cluster.sync();
        cluster_pick(cluster, sm, h2, kBins2, 2, need, &d2, &need);
        T = (p22 << 10) | static_cast<uint32_t>(d2);
        m = need;
      }

      // 3. Counts per warp (each warp owns a contiguous run of the slice), per CTA, then offsets.
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
      if (lane == 0) sm.warp_gt[warp] = gt, sm.warp_eq[warp] = eq;
      __syncthreads();
      if (tid == 0) {
        int g = 0, e = 0;
        for (int w = 0; w < kWarps; ++w) g += sm.warp_gt[w], e += sm.warp_eq[w];
        sm.cta_gt = g;
        sm.cta_eq = e;
      }
      __syncthreads();
      cluster.sync();
      if (warp == 0) {
        // Ties go to the lowest columns: CTA by CTA, then warp by warp, in column order. Lane c
        // loads CTA c's counts (all remote loads in flight at once), then prefix sums over lanes.
        const int g = lane < me ? *cluster.map_shared_rank(&sm.cta_gt, lane) : 0;
        const int e = lane < me ? *cluster.map_shared_rank(&sm.cta_eq, lane) : 0;
        const int e_incl = warp_inclusive(e, lane);
        const int take = clampi(m - (e_incl - e), 0, e);  // CTA lane's share of the ties
        const int off_all = __reduce_add_sync(0xffffffffu, g + take);
        const int eq_before = __shfl_sync(0xffffffffu, e_incl, 31);
        if (lane == 0) {
          const int my_m = clampi(m - eq_before, 0, sm.cta_eq);
          int off = off_all, eq_w = 0;
          for (int w = 0; w < kWarps; ++w) {
            const int t = clampi(my_m - eq_w, 0, sm.warp_eq[w]);
            sm.warp_off[w] = off;
            sm.warp_take_eq[w] = t;
            off += sm.warp_gt[w] + t;
            eq_w += sm.warp_eq[w];
          }
        }
      }
      __syncthreads();

      // 4. Write: ranks of ties and output slots from warp scans, in column order.
      uint32_t* gkey = a.sorted ? cluster.map_shared_rank(sm.u.gather.key, 0) : nullptr;
      int32_t* gcol = a.sorted ? cluster.map_shared_rank(sm.u.gather.col, 0) : nullptr;
      int slot = sm.warp_off[warp];
      const int take_eq = sm.warp_take_eq[warp];
      int ties = 0;
      for (int it = 0; it < per_warp; it += 32) {
        const int v = v_begin + it + lane;
        const uint4 k4 = dyn_keys[v];
        const uint32_t kk[4] = {k4.x, k4.y, k4.z, k4.w};
        const int n_eq = (kk[0] == T) + (kk[1] == T) + (kk[2] == T) + (kk[3] == T);
        const int n_gt = (kk[0] > T) + (kk[1] > T) + (kk[2] > T) + (kk[3] > T);
        if (__ballot_sync(0xffffffffu, (n_eq | n_gt) != 0) == 0u) continue;
        const int eq_incl = warp_inclusive(n_eq, lane);
        int tie_rank = ties + eq_incl - n_eq;
        bool take[4];
        int n_take = 0;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          take[i] = kk[i] > T;
          if (kk[i] == T) take[i] = tie_rank++ < take_eq;
          n_take += take[i];
        }
        const int take_incl = warp_inclusive(n_take, lane);
        int pos = slot + take_incl - n_take;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          if (!take[i]) continue;
          const int64_t c_rel = base + 4 * static_cast<int64_t>(v) + i - ks;
          if (a.sorted) {
            gkey[pos] = kk[i];
            gcol[pos] = static_cast<int32_t>(c_rel);
          } else {
            a.idx[r * a.idx_s0 + pos] = to_domain(a, r, ks, c_rel);
            if (a.osc) a.osc[r * a.osc_s0 + pos] = row[ks + c_rel];
          }
          ++pos;
        }
        ties += __shfl_sync(0xffffffffu, eq_incl, 31);
        slot += __shfl_sync(0xffffffffu, take_incl, 31);
      }

      // 5. Sorted: CTA 0 orders the k_eff pairs (key descending; stable, so columns ascending).
      if (a.sorted) {
        cluster.sync();
        if (me == 0) {
          uint32_t sk[kSortItems];
          int32_t sc[kSortItems];
#pragma unroll
          for (int i = 0; i < kSortItems; ++i) {
            const int p = tid * kSortItems + i;
            sk[i] = p < keff ? sm.u.gather.key[p] : 0u;  // 0 is below every selected key
            sc[i] = p < keff ? sm.u.gather.col[p] : 0;
          }
          __syncthreads();
          BlockSort(sm.u.sort).SortDescendingBlockedToStriped(sk, sc);
#pragma unroll
          for (int i = 0; i < kSortItems; ++i) {
            const int p = i * kThreads + tid;
            if (p >= keff) continue;
            a.idx[r * a.idx_s0 + p] = to_domain(a, r, ks, sc[i]);
            if (a.osc) a.osc[r * a.osc_s0 + p] = row[ks + sc[i]];
          }
          __syncthreads();  // the sort's storage aliases the next row's histograms
        }
      }
    }

    // Padding and k_eff.
    if (me == 0) {
      for (int64_t p = keff + tid; p < a.k; p += kThreads) {
        a.idx[r * a.idx_s0 + p] = -1;
        if (a.osc) a.osc[r * a.osc_s0 + p] = __uint_as_float(0xff800000u);
      }
      if (a.keff && tid == 0) a.keff[r * a.keff_s0] = keff;
    }
  }
  // Hazards between rows: every remote read of row i's histograms, segment totals and counts comes
  // before a cluster barrier of row i that the owner also waits at, except the reads of valid (made
  // double-buffered above) and of cta_gt/cta_eq (rewritten only after the next row's first
  // barrier). CTA 0's gather buffer is written only after the barrier that follows the counts. So
  // no barrier per row is needed here, and CTA 0 sorts while the others load the next row. A CTA
  // must not exit while another may still read its shared memory:
  cluster.sync();
}

}  // namespace

namespace {
// The kernel's attributes (the largest dynamic shared memory it may use, clusters of 16), set once
// per device: cudaFuncSetAttribute costs host time that small problems would otherwise pay per call.
Status set_attributes_once() {
  constexpr int kMaxDevices = 64;
  static std::once_flag once[kMaxDevices];
  static cudaError_t error[kMaxDevices];
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= kMaxDevices)
    return cuda::launch_status("topk", "topk_cluster_kernel (cudaGetDevice)");
  std::call_once(once[dev], [dev] {
    cudaError_t e = cudaFuncSetAttribute(topk_cluster_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(kSliceMax * sizeof(uint32_t)));
    if (e == cudaSuccess) e = cudaFuncSetAttribute(topk_cluster_kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
    error[dev] = e;
  });
  if (error[dev] == cudaSuccess) return Status();
  return Status(StatusCode::kCudaError, std::string("topk: setting the attributes of topk_cluster_kernel failed: ") +
                                            cudaGetErrorString(error[dev]));
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
  const int64_t L = slice_keys(span, C);
  const size_t smem = static_cast<size_t>(L) * sizeof(uint32_t);
  if (Status st = set_attributes_once(); !st.ok()) return st;
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
  cudaLaunchKernelEx(&cfg, topk_cluster_kernel, a);
  return cuda::launch_status("topk", "topk_cluster_kernel");
}

}  // namespace dsa::cuda_backend::topk_detail
