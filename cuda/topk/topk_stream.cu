// CUDA OP-TOPK, the stream kernel (SPEC §5, D7): one block per row reads the row from HBM ONCE and
// keeps a running candidate set in shared memory (topk/topk_stream.cuh). Bitwise equal to the CPU
// reference and to topk.cu's kernels: the same set (the k best by key descending, column
// ascending), the same orders, indices, scores, padding and k_eff.
//
// Why. The filter kernel (topk.cu) reads a many-rows batch twice (histogram, then candidates);
// here the row is streamed once with 16-byte loads, the next step's loads in flight while the
// current step is filtered, and only entries that beat the running threshold touch shared memory.
//
// Per row, in steps of kStepVecs 16-byte groups (kVecs per thread, group v = step base + u·512 +
// thread: each load instruction of a warp reads 512 contiguous bytes):
//   1. if the buffer could not take a whole step (count > kCap − kStepEntries, block-uniform),
//      shrink() (topk_stream.cuh) drops every entry below a key boundary L that still has ≥ k
//      entries at or above it, keeping at most target = k + kSlack (a superset of the k best, in
//      buffer order); the new threshold admits key ≥ L. Cheap: min/max, then one or two 8-bit
//      histograms over the buffer's own key range with plain shared atomics (no match_any, no
//      64-bit ranks). A plateau of equal keys larger than target falls back to the exact
//      compact() (k kept, threshold = the k-th's rank). Entries dropped can never re-enter: at
//      least k better ones were seen;
//   2. each thread tests its 4·kVecs entries against the threshold in the float domain (valid
//      entries that can still be in the top k);
//   3. a warp scan of packed per-load counts and one block barrier give every admitted entry its
//      slot IN COLUMN ORDER (no atomics): the buffer is always in column order, and shrink() /
//      compact() keep it so;
//   4. at the end the buffer holds a superset of the k best (every valid entry if it never
//      shrank: k_eff = min(k, count)). Sorted: shrink() once more only if more than kSortCap are
//      held, then a stable block radix sort of ALL held keys (descending, only the bits where
//      they differ; ties stay in column order, the buffer slot as the value) and ranks [0, k_eff)
//      are written — no exact selection at all. Unsorted (ascending column): shrink() to ≤ target
//      if more are held, compact() to exactly k, and the buffer is written as it is. Then −1 / −∞
//      padding and k_eff.
// Every step depends on the set of entries only (slots follow columns): deterministic (D11).
//
// Cost. Random 128K rows, k = 2048: 22 steps of 6144; the first shrink at 12K entries seen (no
// threshold before), then ~19% admitted, a second shrink at ~43K seen, then ~5%: about two
// shrinks in the stream and one at the end (≤ ~7K entries each), then the sort of ≤ 2304
// (sorted) or an exact compact() of ≤ 2304 (unsorted). Worst case, scores ascending along the
// row: every entry is admitted, one shrink per step of ≤ target + kStepEntries entries — linear
// in the row.
//
// Taken when 1 ≤ k ≤ kStreamMaxK (sorted or unsorted); DSA_TOPK_KERNEL=stream forces it
// (topk.cu's dispatch).
#include <cub/block/block_radix_sort.cuh>

#include <string>

#include "topk/topk_shared.cuh"
#include "topk/topk_stream.cuh"

namespace dsa::cuda_backend::topk_detail {

namespace {

using topk_stream::Threshold;

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
// Three 16-byte loads per thread per step (24 KB per block in flight): with four, the shrink call
// inside the loop pushes 16 of the loop's registers to local memory on every step (64-register
// budget at 2 × 512 threads); with three, about 5.
constexpr int kVecs = 3;
constexpr int kStepVecs = kThreads * kVecs;              // groups per step
constexpr int kStepEntries = 4 * kStepVecs;              // 6144 entries per step
constexpr int kSlack = 256;                              // shrink target: k + kSlack entries
constexpr int kSortItems = 5;
constexpr int kSortCap = kSortItems * kThreads;          // 2560 entries in the final sort
constexpr int kCap = 13824;                              // candidate buffer entries (108 KB)
static_assert(kCap - kStepEntries >= kStreamMaxK + kSlack, "a step always fits after a shrink");
static_assert(kSortCap >= kStreamMaxK + kSlack, "the final sort holds every shrink survivor");

// The final sort: the keys of the ≤ kSortCap held entries, descending and stable, their buffer
// slots as values. Its storage lies in the buffer's score array past slot kSortCap (the held
// entries occupy [0, count ≤ kSortCap) then).
using Sort = cub::BlockRadixSort<uint32_t, kThreads, kSortItems, int32_t>;
static_assert(sizeof(typename Sort::TempStorage) + 16 <= (kCap - kSortCap) * sizeof(float),
              "sort storage fits the buffer's free part");
constexpr size_t kDynSmem = 2 * kCap * sizeof(uint32_t);  // scores, then columns

// The row's 16-byte groups (as topk.cu's RowGroups, in coordinates relative to vs): they tile
// [vs, ke), vs = ks aligned down to 16 bytes; entries outside [ks, ke) read as NaN (key 0, never
// admitted). Group v holds row columns vs + 4v … vs + 4v + 3.
struct Groups {
  const float* p;  // the row's column vs (16-byte aligned)
  int64_t hi;      // ke − vs
  int lo;          // ks − vs, 0…3
  int nvec;

  __device__ Groups(const TopKArgs& a, int64_t r, int64_t ks, int64_t ke) {
    const float* row_abs = a.scores + r * a.sc_s0;
    lo = static_cast<int>((reinterpret_cast<uintptr_t>(row_abs + ks) >> 2) & 3u);
    p = row_abs + ks - lo;
    hi = ke - ks + lo;
    nvec = static_cast<int>((hi + 3) / 4);
  }
  __device__ __forceinline__ void load(int v, float f[4]) const {
    const int64_t g = 4 * static_cast<int64_t>(v);
    if (v < nvec && g >= lo && g + 4 <= hi) {
      const float4 x = __ldcs(reinterpret_cast<const float4*>(p + g));
      f[0] = x.x, f[1] = x.y, f[2] = x.z, f[3] = x.w;
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i)
        f[i] = (v < nvec && g + i >= lo && g + i < hi) ? p[g + i] : __int_as_float(0x7fffffff);
    }
  }
  // A step's kVecs groups of this thread: v0, v0 + kThreads, ... Steps inside the row (all but
  // the first and the last; block-uniform test) take unconditional 16-byte loads.
  __device__ __forceinline__ void load_step(int base, int v0, float (&f)[kVecs][4]) const {
    if (4 * static_cast<int64_t>(base) >= lo && 4 * static_cast<int64_t>(base + kStepVecs) <= hi) {
      const float4* q = reinterpret_cast<const float4*>(p) + v0;
#pragma unroll
      for (int u = 0; u < kVecs; ++u) {
        const float4 x = __ldcs(q + u * kThreads);
        f[u][0] = x.x, f[u][1] = x.y, f[u][2] = x.z, f[u][3] = x.w;
      }
    } else {
#pragma unroll
      for (int u = 0; u < kVecs; ++u) load(v0 + u * kThreads, f[u]);
    }
  }
  // Column of entry i of group v, relative to ks (32-bit wrap-around arithmetic: exact for every
  // entry of the range, whose columns are < 2^31; the others are never admitted).
  __device__ __forceinline__ int32_t col(int v, int i) const {
    return static_cast<int32_t>(4u * static_cast<uint32_t>(v) + static_cast<uint32_t>(i - lo));
  }
};

struct StreamSmem {
  topk_stream::Scratch scratch;
  unsigned long long warp_cnt[2][kWarps];  // per warp: kVecs 16-bit admitted counts, one per load
  unsigned kmin, kmax;                     // the survivors' key range (the sort's bits)
};

// The admission test in the float domain (topk_stream::beats, branch-free): key > tk, or key == tk
// and column < col. For valid scores key order is float order (±0 tie as they compare equal); NaN
// compares false. admit_all() = {−∞, 0} admits every valid score, −∞ and NaN not. Columns
// compare unsigned (relative columns of in-range entries are < 2^31; out-of-range entries are NaN).
// (Exact as long as subnormals are kept — no -ftz / --use_fast_math for this file.)
__device__ __forceinline__ Threshold admit_all() { return {__int_as_float(static_cast<int>(0xff800000u)), 0}; }

// Bit 4u + i: entry i of this thread's group v0 + u·kThreads passes the threshold.
__device__ __forceinline__ unsigned admit_mask(const Groups& g, int v0, const float (&f)[kVecs][4],
                                               const Threshold& t) {
  const uint32_t c0 = static_cast<uint32_t>(g.col(v0, 0));
  unsigned m = 0u;
#pragma unroll
  for (int u = 0; u < kVecs; ++u)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float x = f[u][i];
      const uint32_t c = c0 + static_cast<uint32_t>(4 * u * kThreads + i);
      const bool pass = (x > t.f) | ((x == t.f) & (c < static_cast<uint32_t>(t.col)));  // no branches
      m |= static_cast<unsigned>(pass) << (4 * u + i);
    }
  return m;
}

// Column-order slots of a step's admitted entries (bit 4u + i of m: entry i of load u). Entry
// (u, warp, lane, i) precedes in column order every entry of a later load u, then of a later warp,
// lane, i. A warp scan of kVecs 8-bit counts (≤ 128 per warp each) and one barrier give, per load u,
// this thread's first slot (relative to the step's first) in first[u], and the step's total.
// Parity alternates the per-warp words so that consecutive calls need no second barrier.
__device__ __forceinline__ int step_slots(unsigned m, StreamSmem& ss, int& parity, int (&first)[kVecs]) {
  static_assert(kVecs <= 4, "up to four 8-bit / 16-bit count fields");
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  uint32_t mine = 0u;
#pragma unroll
  for (int u = 0; u < kVecs; ++u) mine |= static_cast<uint32_t>(__popc((m >> (4 * u)) & 15u)) << (8 * u);
  uint32_t incl = mine;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const uint32_t t = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += t;
  }
  if (lane == 31) {
    // Widen to 16-bit fields: a block's count per load reaches 2048.
    unsigned long long w = 0ull;
#pragma unroll
    for (int u = 0; u < kVecs; ++u) w |= static_cast<unsigned long long>((incl >> (8 * u)) & 255u) << (16 * u);
    ss.warp_cnt[parity][warp] = w;
  }
  __syncthreads();
  unsigned long long before = 0ull, total = 0ull;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    const unsigned long long c = ss.warp_cnt[parity][w];
    before += w < warp ? c : 0ull;
    total += c;
  }
  parity ^= 1;
  const uint32_t excl = incl - mine;
  int run = 0;
#pragma unroll
  for (int u = 0; u < kVecs; ++u) {
    first[u] = run + static_cast<int>((before >> (16 * u)) & 0xffffu) + static_cast<int>((excl >> (8 * u)) & 255u);
    run += static_cast<int>((total >> (16 * u)) & 0xffffu);
  }
  return run;
}

// shrink() and compact() out of line: the streaming loop keeps the next step's loads in registers
// across them, and inlined, their register needs would push the loop's state to local memory.
__device__ __noinline__ unsigned long long compact_buffer(float* sc, int32_t* cc, int n, int k,
                                                          topk_stream::Scratch& scratch) {
  return topk_stream::compact<kThreads>(sc, cc, n, k, scratch);
}
struct Shrunk {
  Threshold thr;
  int n;
};
// Needs k < n and k ≤ target.
__device__ __noinline__ Shrunk shrink_buffer(float* sc, int32_t* cc, int n, int k, int target,
                                             topk_stream::Scratch& scratch) {
  Shrunk r;
  r.n = n;
  r.thr = topk_stream::shrink<kThreads>(sc, cc, &r.n, k, target, scratch);
  return r;
}

// Warms L2 with the first two steps of row r (one prefetch per 128 bytes, addresses inside the row's
// range [ks, ke) only): its loads then wait on L2, not HBM, when the block turns to it, and HBM
// keeps working while this row's final selection and sort run. Holds no registers afterwards.
__device__ __forceinline__ void prefetch_row_head(const TopKArgs& a, int64_t r) {
  int64_t ks, ke;
  row_range(a, r, &ks, &ke);
  const Groups g(a, r, ks, ke);
  const int64_t end = g.hi < 2 * kStepEntries ? g.hi : 2 * kStepEntries;
  for (int64_t e = 32 * static_cast<int64_t>(threadIdx.x); e < end; e += 32 * kThreads) {
    const int64_t c = e < g.lo ? g.lo : e;
    if (c < end) asm volatile("prefetch.global.L2 [%0];" ::"l"(g.p + c));
  }
}

__global__ void __launch_bounds__(kThreads, 2) topk_stream_kernel(const __grid_constant__ TopKArgs a) {
  __shared__ StreamSmem ss;
  extern __shared__ __align__(16) uint32_t stream_mem[];
  float* const sc = reinterpret_cast<float*>(stream_mem);
  int32_t* const cc = reinterpret_cast<int32_t*>(stream_mem + kCap);
  auto& temp = *reinterpret_cast<typename Sort::TempStorage*>(stream_mem + kSortCap);
  const int tid = threadIdx.x;
  const int k = static_cast<int>(a.k);  // 1 ≤ k ≤ kStreamMaxK (stream_takes)
  const int target = k + kSlack;        // shrink() keeps at most this many (≥ k)
  int parity = 0;

  for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
    int64_t ks, ke;
    row_range(a, r, &ks, &ke);
    const Groups g(a, r, ks, ke);

    Threshold thr = admit_all();
    int count = 0;  // entries in the buffer (block-uniform: every thread sums the same warp counts)
    float cur[kVecs][4], nxt[kVecs][4];
    g.load_step(0, tid, cur);
    for (int base = 0; base < g.nvec; base += kStepVecs) {
      const int v0 = base + tid;
      // Room for a whole step first (uniform; count > kCap − kStepEntries ≥ target > k). Here,
      // before the next step's loads are issued, only this step's groups are live across the call.
      if (count > kCap - kStepEntries) {
        const Shrunk sh = shrink_buffer(sc, cc, count, k, target, ss.scratch);
        thr = sh.thr;
        count = sh.n;
      }
      // The next step's loads fly while this one is filtered (past the end they read nothing).
      g.load_step(base + kStepVecs, v0 + kStepVecs, nxt);
      const unsigned m = admit_mask(g, v0, cur, thr);
      int first[kVecs];
      const int total = step_slots(m, ss, parity, first);
      if (m) {
#pragma unroll
        for (int u = 0; u < kVecs; ++u) {
          int pos = count + first[u];
#pragma unroll
          for (int i = 0; i < 4; ++i)
            if (m >> (4 * u + i) & 1u) {
              sc[pos] = cur[u][i];
              cc[pos] = g.col(v0 + u * kThreads, i);
              ++pos;
            }
        }
      }
      count += total;
#pragma unroll
      for (int u = 0; u < kVecs; ++u)
#pragma unroll
        for (int i = 0; i < 4; ++i) cur[u][i] = nxt[u][i];
    }
    if (r + gridDim.x < a.rows) prefetch_row_head(a, r + gridDim.x);
    // The buffer holds every valid entry whose key is at or above the last threshold: a superset
    // of the k best (all valid entries if it never shrank). count is block-uniform.
    if (a.sorted) {
      if (count > kSortCap) count = shrink_buffer(sc, cc, count, k, target, ss.scratch).n;
    } else if (count > k) {
      if (count > target) count = shrink_buffer(sc, cc, count, k, target, ss.scratch).n;
      if (count > k) {
        compact_buffer(sc, cc, count, k, ss.scratch);  // barriers inside; column order kept
        count = k;
      }
    }
    // count ≤ kSortCap entries in column order in [0, count); unsorted: exactly the k_eff best.
    const int k_eff = count < k ? count : k;
    int32_t* const idx = a.idx + r * a.idx_s0;
    float* const osc = a.osc ? a.osc + r * a.osc_s0 : nullptr;
    if (tid == 0) ss.kmin = 0xffffffffu, ss.kmax = 0u;
    __syncthreads();  // the last step's entries landed; the key range is reset
    if (!a.sorted) {
      for (int j = tid; j < count; j += kThreads) {
        idx[j] = to_domain(a, r, ks, cc[j]);
        if (osc) osc[j] = sc[j];
      }
    } else if (count > 0) {
      uint32_t key[kSortItems];
      int32_t slot[kSortItems];
      uint32_t lo = 0xffffffffu, hi = 0u;
#pragma unroll
      for (int i = 0; i < kSortItems; ++i) {
        const int j = tid * kSortItems + i;  // blocked: the sort is stable in this order
        key[i] = j < count ? topk_stream::score_key(sc[j]) : 0u;  // padding: key 0, sorts last
        slot[i] = j;
        if (j < count) lo = key[i] < lo ? key[i] : lo, hi = key[i] > hi ? key[i] : hi;
      }
      if (lo != 0xffffffffu) atomicMin(&ss.kmin, lo);
      if (hi != 0u) atomicMax(&ss.kmax, hi);
      __syncthreads();
      // Every survivor's key lies in [kmin, kmax]: they share the bits above the highest one where
      // kmin and kmax differ, so the sort needs only the bits below it.
      Sort(temp).SortDescendingBlockedToStriped(key, slot, 0, sort_end_bit(ss.kmin, ss.kmax));
#pragma unroll
      for (int i = 0; i < kSortItems; ++i) {
        const int pos = i * kThreads + tid;
        if (pos < k_eff) {  // ranks [0, k_eff) of the held superset: the k_eff best
          idx[pos] = to_domain(a, r, ks, cc[slot[i]]);
          if (osc) osc[pos] = sc[slot[i]];
        }
      }
    }
    write_padding<kThreads>(a, r, static_cast<int64_t>(k_eff));
    __syncthreads();  // the buffer, the sort storage and the key range serve the next row
  }
}

Status stream_attributes() {
  static cuda::OncePerDevice once;
  const cudaError_t e = once.run([] {
    cudaError_t err = cudaFuncSetAttribute(topk_stream_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(kDynSmem));
    // Two blocks per SM need the largest shared-memory carveout (the loads bypass L1 anyway).
    if (err == cudaSuccess)
      err = cudaFuncSetAttribute(topk_stream_kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                 static_cast<int>(cudaSharedmemCarveoutMaxShared));
    return err;
  });
  if (e == cudaSuccess) return Status();
  return Status(StatusCode::kCudaError,
                std::string("topk: setting the attributes of topk_stream_kernel failed: ") + cudaGetErrorString(e));
}

}  // namespace

bool stream_takes(const TopKArgs& a) { return a.k >= 1 && a.k <= kStreamMaxK; }

Status launch_stream(const TopKArgs& a, cudaStream_t stream) {
  if (Status st = stream_attributes(); !st.ok()) return st;
  topk_stream_kernel<<<cuda::grid_for(a.rows, 1), kThreads, kDynSmem, stream>>>(a);
  return cuda::launch_status("topk", "topk_stream_kernel");
}

}  // namespace dsa::cuda_backend::topk_detail
