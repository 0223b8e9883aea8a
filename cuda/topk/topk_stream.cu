// CUDA OP-TOPK, the stream kernel (SPEC §5, D7): one block per row reads the row from HBM ONCE and
// keeps a running top k in shared memory (topk/topk_stream.cuh). Bitwise equal to the CPU
// reference and to topk.cu's kernels: the same set (the k best by key descending, column
// ascending), the same orders, indices, scores, padding and k_eff.
//
// Why. The filter kernel (topk.cu) reads a many-rows batch twice (histogram, then candidates);
// here the row is streamed once with 16-byte loads, the next step's loads in flight while the
// current step is filtered, and only entries that beat the running threshold touch shared memory.
//
// Per row, in steps of kStepVecs 16-byte groups (kVecs per thread, group v = step base + u·512 +
// thread: each load instruction of a warp reads 512 contiguous bytes):
//   1. each thread tests its 4·kVecs entries against the threshold (rank of the k-th best seen so
//      far, kNoThreshold before the first compaction) — rank_of(key, column) > threshold admits
//      only valid entries;
//   2. a warp scan and one block barrier give every admitted entry its slot (no atomics); if the
//      step would overflow the buffer (count + admitted > kCap), compact() keeps exactly the k best
//      of the buffer first, the step is re-tested against the new threshold and re-scanned. The
//      step then fits: the overflow needs count > kCap − kStepEntries ≥ k, and after compaction
//      k + kStepEntries ≤ kCap;
//   3. at the end, compact() to exactly k if more are held (k_eff = min(k, count): a row that
//      never compacted admitted every valid entry), sort_and_write() orders them and writes the
//      indices in the requested domain and the scores; then −1 / −∞ padding and k_eff.
// Every step depends on the set of entries only, never on slot order: deterministic (D11).
//
// Cost. Random rows: the first compaction at ~2·kStepEntries entries, then ~k·ln(n/kStep)
// admissions over the rest of the row (128K: ~4.3K), so one mid-row compaction and a final one.
// Worst case, scores ascending along the row: every entry is admitted, one compaction per step
// over ≤ k + 2·kStepEntries entries — linear in the row, about 4–5× the load time (not quadratic).
//
// Taken when 1 ≤ k ≤ kStreamMaxK (sorted or unsorted: the final block sort holds 2048 entries);
// DSA_TOPK_KERNEL=stream forces it (topk.cu's dispatch).
#include <string>

#include "topk/topk_shared.cuh"
#include "topk/topk_stream.cuh"

namespace dsa::cuda_backend::topk_detail {

namespace {

using topk_stream::kNoThreshold;

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kVecs = 4;                                 // 16-byte loads per thread per step
constexpr int kStepVecs = kThreads * kVecs;              // groups per step
constexpr int kStepEntries = 4 * kStepVecs;              // 8192 entries per step
constexpr int kSortItems = static_cast<int>(kStreamMaxK) / kThreads;
constexpr int kCap = 13824;                              // candidate buffer entries (108 KB)
static_assert(kCap - kStepEntries >= kStreamMaxK, "a step always fits after a compaction");
static_assert(kSortItems * kThreads == kStreamMaxK, "the final sort holds k entries");

using Sort = topk_stream::RowSort<kThreads, kSortItems>;
// The final sort's storage aliases the buffer (sort_and_write reads the buffer before it sorts).
static_assert(sizeof(typename Sort::TempStorage) <= kCap * sizeof(float), "sort storage fits the buffer");
constexpr size_t kDynSmem = 2 * kCap * sizeof(uint32_t);  // scores, then columns

// The row's 16-byte groups (as topk.cu's RowGroups): they tile [vs, ke), vs = ks aligned down to
// 16 bytes; entries outside [ks, ke) read as NaN (key 0, never admitted).
struct Groups {
  const float* row_abs;  // the row's column 0
  int64_t ks, ke, vs;
  int nvec;

  __device__ Groups(const TopKArgs& a, int64_t r, int64_t ks_, int64_t ke_)
      : row_abs(a.scores + r * a.sc_s0), ks(ks_), ke(ke_) {
    vs = ks - static_cast<int64_t>((reinterpret_cast<uintptr_t>(row_abs + ks) >> 2) & 3u);
    nvec = static_cast<int>((ke - vs + 3) / 4);
  }
  __device__ __forceinline__ void load(int v, float f[4]) const {
    const int64_t g = vs + 4 * static_cast<int64_t>(v);
    if (v < nvec && g >= ks && g + 4 <= ke) {
      const float4 x = __ldcs(reinterpret_cast<const float4*>(row_abs + g));
      f[0] = x.x, f[1] = x.y, f[2] = x.z, f[3] = x.w;
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i)
        f[i] = (v < nvec && g + i >= ks && g + i < ke) ? row_abs[g + i] : __int_as_float(0x7fffffff);
    }
  }
  // A step's kVecs groups of this thread: v0, v0 + kThreads, ... Steps inside the row (all but
  // the first and the last; block-uniform test) take unconditional 16-byte loads.
  __device__ __forceinline__ void load_step(int base, int v0, float (&f)[kVecs][4]) const {
    if (vs + 4 * static_cast<int64_t>(base) >= ks && vs + 4 * static_cast<int64_t>(base + kStepVecs) <= ke) {
      const float4* p = reinterpret_cast<const float4*>(row_abs + vs) + v0;
#pragma unroll
      for (int u = 0; u < kVecs; ++u) {
        const float4 x = __ldcs(p + u * kThreads);
        f[u][0] = x.x, f[u][1] = x.y, f[u][2] = x.z, f[u][3] = x.w;
      }
    } else {
#pragma unroll
      for (int u = 0; u < kVecs; ++u) load(v0 + u * kThreads, f[u]);
    }
  }
  // Column of entry i of group v, relative to ks (entries outside the range are never admitted).
  __device__ __forceinline__ int32_t col(int v, int i) const {
    return static_cast<int32_t>(vs + 4 * static_cast<int64_t>(v) + i - ks);
  }
};

struct StreamSmem {
  topk_stream::Scratch scratch;
  int warp_cnt[2][kWarps];
};

// Bit 4u + i: entry i of this thread's group v0 + u·kThreads passes the threshold thr, i.e.
// rank_of(key, column) > thr, split into 32-bit halves: key > tk, or key == tk and column < tcol
// (unsigned). kNoThreshold gives tk = 0, tcol = 0: every valid key and no invalid one.
__device__ __forceinline__ unsigned admit_mask(const Groups& g, int v0, const float (&f)[kVecs][4],
                                               unsigned long long thr) {
  const uint32_t tk = static_cast<uint32_t>(thr >> 32);
  const uint32_t tcol = 0xffffffffu - static_cast<uint32_t>(thr & 0xffffffffu);
  const uint32_t c0 = static_cast<uint32_t>(g.col(v0, 0));
  unsigned m = 0u;
#pragma unroll
  for (int u = 0; u < kVecs; ++u)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t key = topk_stream::score_key(f[u][i]);
      const uint32_t c = c0 + static_cast<uint32_t>(4 * u * kThreads + i);
      m |= (key > tk || (key == tk && c < tcol) ? 1u : 0u) << (4 * u + i);
    }
  return m;
}

// Block-wide slots of the admitted entries: this thread's first slot offset (`before`, in buffer
// order: warp-major, lanes in order) and the block's total. One barrier; parity alternates the
// per-warp count words so consecutive calls need no second barrier.
__device__ __forceinline__ void block_slots(int cnt, StreamSmem& ss, int& parity, int* before, int* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int incl = cnt;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int t = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += t;
  }
  if (lane == 31) ss.warp_cnt[parity][warp] = incl;
  __syncthreads();
  int b = 0, s = 0;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    const int c = ss.warp_cnt[parity][w];
    b += w < warp ? c : 0;
    s += c;
  }
  *before = b + incl - cnt;
  *total = s;
  parity ^= 1;
}

// compact() out of line: the streaming loop keeps the next step's loads in registers across it,
// and inlined, its register needs would push the loop's state to local memory on every step.
__device__ __noinline__ unsigned long long compact_buffer(float* sc, int32_t* cc, int n, int k,
                                                          topk_stream::Scratch& scratch) {
  return topk_stream::compact<kThreads>(sc, cc, n, k, scratch);
}

__global__ void __launch_bounds__(kThreads, 2) topk_stream_kernel(const __grid_constant__ TopKArgs a) {
  __shared__ StreamSmem ss;
  extern __shared__ __align__(16) uint32_t stream_mem[];
  float* const sc = reinterpret_cast<float*>(stream_mem);
  int32_t* const cc = reinterpret_cast<int32_t*>(stream_mem + kCap);
  auto& temp = *reinterpret_cast<typename Sort::TempStorage*>(stream_mem);
  const int tid = threadIdx.x;
  const int k = static_cast<int>(a.k);  // 1 ≤ k ≤ kStreamMaxK (stream_takes)
  int parity = 0;

  for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
    int64_t ks, ke;
    row_range(a, r, &ks, &ke);
    const Groups g(a, r, ks, ke);

    unsigned long long thr = kNoThreshold;
    int count = 0;  // entries in the buffer (block-uniform: every thread sums the same warp counts)
    float cur[kVecs][4], nxt[kVecs][4];
    g.load_step(0, tid, cur);
    for (int base = 0; base < g.nvec; base += kStepVecs) {
      const int v0 = base + tid;
      // Room for a whole step first (uniform). Here, before the next step's loads are issued, only
      // this step's groups are live across the compaction. count > kCap − kStepEntries ≥ k.
      if (count > kCap - kStepEntries) {
        thr = compact_buffer(sc, cc, count, k, ss.scratch);
        count = k;
      }
      // The next step's loads fly while this one is filtered (past the end they read nothing).
      g.load_step(base + kStepVecs, v0 + kStepVecs, nxt);
      const unsigned m = admit_mask(g, v0, cur, thr);
      int before, total;
      block_slots(__popc(m), ss, parity, &before, &total);
      if (m) {
        int pos = count + before;
#pragma unroll
        for (int u = 0; u < kVecs; ++u)
#pragma unroll
          for (int i = 0; i < 4; ++i)
            if (m >> (4 * u + i) & 1u) {
              sc[pos] = cur[u][i];
              cc[pos] = g.col(v0 + u * kThreads, i);
              ++pos;
            }
      }
      count += total;
#pragma unroll
      for (int u = 0; u < kVecs; ++u)
#pragma unroll
        for (int i = 0; i < 4; ++i) cur[u][i] = nxt[u][i];
    }
    if (count > k) {
      compact_buffer(sc, cc, count, k, ss.scratch);  // barriers inside
      count = k;
    }
    const int n = static_cast<int>(ke - ks);
    const int col_bits = n > 1 ? 32 - __clz(n - 1) : 1;
    if (count > 0) {
      topk_stream::sort_and_write<kThreads, kSortItems>(sc, cc, count, a.sorted, col_bits, temp, ss.scratch,
                                                         [&](int pos, int32_t c, float v) {
                                                           a.idx[r * a.idx_s0 + pos] = to_domain(a, r, ks, c);
                                                           if (a.osc) a.osc[r * a.osc_s0 + pos] = v;
                                                         });
    }
    write_padding<kThreads>(a, r, static_cast<int64_t>(count));
    __syncthreads();  // the sort storage (the buffer) and the scratch serve the next row
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
