// CUDA OP-TOPK, the split kernels (SPEC §5, D7), for the decode regime: a few dozen to a few
// hundred rows of up to ~256K scores, k ≤ 2048. Bitwise equal to topk.cu's kernels and the CPU
// reference: the same set (the k best by key descending, column ascending), the same orders,
// indices, scores (the row's own float bits), padding and k_eff.
//
// Why. With one block per row (filter, stream kernels) 64 rows keep only 64 SMs busy and each
// block's loads alone must cover HBM latency. Here every row is cut into S slices, S chosen so
// that rows·S blocks fill one wave of kBlocksPerSmA blocks per SM (split_slices()), and each block
// reads its slice ONCE. No cluster barriers, no grid sync: two kernels on the stream.
//
// Kernel A (topk_split_select), grid rows·S, 384 threads, 2 blocks per SM (80 registers, 96 KB
// buffer each). Block (r, s) takes the 16-byte groups [v0, v1) of row r (the row's groups start at
// ks aligned down to 16 bytes; entries outside [ks, ke) read as NaN, invalid) in steps of
// kStepGroups groups (kGroupsA loads per thread, group = step base + u·384 + thread: a warp's load
// reads 512 contiguous bytes):
//   1. if the buffer could not take a whole step (n > kRoomA = kCapA − kStepEntries; uniform),
//      shrink() (topk_stream.cuh) drops entries below a key boundary that keeps ≥ k and
//      ≤ k + kSlack of them (a superset of the k best; exact compact() fallback on plateaus) and
//      raises the threshold to that boundary;
//   2. each thread tests its 16 entries against the running threshold in float form (beats():
//      exact, NaN / −∞ never admitted); a warp scan and one block barrier give every admitted
//      entry a slot of the kCapA-entry shared buffer (the order is irrelevant: every later step
//      depends on the set only). Two register buffers alternate (the loop unrolled by two, nothing
//      copied while loads fly): while a step is filtered the next one loads, and the one after is
//      issued as soon as this step's entries are written — up to 2 steps (8 16-byte loads per
//      thread) in flight;
//   3. at the end shrink() then compact() keep exactly min(k, held) — the k best of the slice: an entry dropped
//      anywhere had k better ones in its slice — and the block writes them as (score bits, column
//      relative to ks) to the workspace, [rows, S, k] × 8 bytes, and their count to [rows, S].
// Kernel B (topk_split_merge), one 1024-thread block per row: the row's S·count ≤ S·k ≤ 8192
// candidates into shared memory; they hold the row's k best (each is in its slice's k best), and
// every valid entry when fewer than k per slice are valid, so k_eff = min(k, held). shrink() and
// compact() to exactly k_eff, sort_and_write() (sorted: key desc, column asc; unsorted: column asc), the index
// domain mapping (to_domain), then −1 / −∞ padding and k_eff.
//
// Cost at 64 × 131072 (S = 4: 256 blocks ≤ 264 slots; a slice of 32768 is 5⅓ steps of 6144):
// A streams 32 MiB once (≈ 8–10 µs at HBM rate); in a random slice the first two steps fill the
// buffer, one shrink() of 12288 at step 3 (hidden behind the two steps of loads in flight) leaves
// ≤ 2304 and a threshold near rank 2304 / 12288, the later steps admit ~19% (~3.8K), and the end
// is one shrink() of ~6K plus a compact() of ≤ 2304 (≈ 1–2 µs of tail). B reads 64 × 64 KB from L2
// and runs a shrink() of 8192, a compact() of ≤ 2304 and a sort of 2048 per row (≈ 4–6 µs, one
// wave of 64 blocks); its launch overlaps A (programmatic dependent launch).
//
// Workspace: split_workspace_bytes() (256-byte aligned); run() checks it (kWorkspaceTooSmall).
// Taken when 1 ≤ k ≤ kSplitMaxK; DSA_TOPK_KERNEL=split forces it (topk.cu's dispatch).
#include <cub/block/block_radix_sort.cuh>

#include <cstdlib>
#include <string>

#include "topk/topk_shared.cuh"
#include "topk/topk_stream.cuh"

namespace dsa::cuda_backend::topk_detail {

namespace {

using topk_stream::beats;
using topk_stream::RowSort;
using topk_stream::Scratch;
using topk_stream::Threshold;

constexpr int kThreadsA = 384;
constexpr int kWarpsA = kThreadsA / 32;
constexpr int kBlocksPerSmA = 2;
constexpr int kGroupsA = 4;                            // 16-byte loads per thread per step
constexpr int kStepGroups = kThreadsA * kGroupsA;      // 1536 groups per step
constexpr int kStepEntries = 4 * kStepGroups;          // 6144 entries per step
constexpr int kCapA = 12288;                           // candidate buffer (96 KB of 8-byte entries)
constexpr int kRoomA = kCapA - kStepEntries;           // shrink() when more are held: a step must fit
constexpr int kSlack = 256;                            // shrink() keeps at most k + kSlack
static_assert(kSplitMaxK + kSlack <= kRoomA, "after shrink() a whole step fits");
constexpr size_t kSmemA = static_cast<size_t>(kCapA) * 8;

constexpr int kThreadsB = 1024;
constexpr int kItemsB = 2;
static_assert(kThreadsB * kItemsB >= kSplitMaxK, "the final sort holds k entries");
using SortB = RowSort<kThreadsB, kItemsB>;
// The candidates (scores, then columns); the sort's storage aliases them (sort_and_write reads them
// into registers first).
constexpr size_t kCandB = static_cast<size_t>(kSplitMaxSlices) * kSplitMaxK;
constexpr size_t kSmemB = sizeof(typename SortB::TempStorage) > kCandB * 8 ? sizeof(typename SortB::TempStorage) : kCandB * 8;

// The row's 16-byte groups: they tile [vs, ke), vs = ks aligned down to 16 bytes; entries outside
// [ks, ke) read as NaN. Group v covers columns vs + 4v … vs + 4v + 3. Positions are kept relative
// to vs in 32 bits (ke − vs < 2^31 + 4) so that the streaming loop's loads keep their registers.
struct Groups {
  const float* base;  // column vs of the row
  uint32_t lo, hi;    // [ks, ke) − vs
  int nvec;

  __device__ Groups(const TopKArgs& a, int64_t r, int64_t ks, int64_t ke) {
    const float* row_abs = a.scores + r * a.sc_s0;
    lo = static_cast<uint32_t>((reinterpret_cast<uintptr_t>(row_abs + ks) >> 2) & 3u);
    base = row_abs + ks - lo;
    hi = static_cast<uint32_t>(ke - ks) + lo;
    nvec = static_cast<int>((static_cast<int64_t>(hi) + 3) / 4);
  }
  __device__ __forceinline__ void load(int v, int v_end, float f[4]) const {
    const uint32_t p = 4u * static_cast<uint32_t>(v);
    if (v < v_end && p >= lo && p + 4u <= hi) {
      const float4 x = __ldcs(reinterpret_cast<const float4*>(base + p));
      f[0] = x.x, f[1] = x.y, f[2] = x.z, f[3] = x.w;
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i)
        f[i] = (v < v_end && p + i >= lo && p + i < hi) ? base[p + i] : __int_as_float(0x7fffffff);
    }
  }
  // Column of entry i of group v relative to ks (meaningless, and never admitted, outside [ks, ke)).
  __device__ __forceinline__ int32_t col(int v, int i) const {
    return static_cast<int32_t>(4u * static_cast<uint32_t>(v) + static_cast<uint32_t>(i) - lo);
  }
};

struct SplitWs {
  uint2* cand;     // [rows, S, k]: (score bits, column relative to ks)
  int32_t* count;  // [rows, S]
  int S;
};

// This thread's admitted count among its step entries.
__device__ __forceinline__ int count_admitted(const Groups& g, int vb, const float (&f)[kGroupsA][4], Threshold t) {
  int cnt = 0;
#pragma unroll
  for (int u = 0; u < kGroupsA; ++u) {
    const int v = vb + u * kThreadsA;
#pragma unroll
    for (int i = 0; i < 4; ++i) cnt += beats(f[u][i], g.col(v, i), t);
  }
  return cnt;
}

// Block-wide exclusive prefix of cnt (warp scan + one barrier); *total = the block's sum. The two
// parities of warp_cnt let consecutive calls go without a second barrier.
__device__ __forceinline__ int block_prefix(int cnt, int (*warp_cnt)[kWarpsA], int& parity, int* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int incl = cnt;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int t = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += t;
  }
  if (lane == 31) warp_cnt[parity][warp] = incl;
  __syncthreads();
  int before = 0, sum = 0;
#pragma unroll
  for (int w = 0; w < kWarpsA; ++w) {
    const int c = warp_cnt[parity][w];
    before += w < warp ? c : 0;
    sum += c;
  }
  parity ^= 1;
  *total = sum;
  return before + incl - cnt;
}

// The rare paths (kept inline: out-of-line calls spill more around the call sites).
__device__ __forceinline__ Threshold shrink_a(float* sc, int32_t* cc, int* n, int k, Scratch& s) {
  return topk_stream::shrink<kThreadsA>(sc, cc, n, k, k + kSlack, s);
}

// Keeps exactly the k best of the n > k held entries in [0, k): shrink() first (cheap 32-bit key
// histograms, no match_any) when many more are held, then the exact compact() over the few left.
template <int kThreads>
__device__ __forceinline__ void keep_best(float* sc, int32_t* cc, int n, int k, Scratch& s) {
  if (n > k + kSlack) (void)topk_stream::shrink<kThreads>(sc, cc, &n, k, k + kSlack, s);
  if (n > k) topk_stream::compact<kThreads>(sc, cc, n, k, s);
  __syncthreads();
}

__global__ void __launch_bounds__(kThreadsA, kBlocksPerSmA)
    topk_split_select(const __grid_constant__ TopKArgs a, const SplitWs w) {
  extern __shared__ __align__(16) unsigned char smem_a[];
  float* sc = reinterpret_cast<float*>(smem_a);
  int32_t* cc = reinterpret_cast<int32_t*>(sc + kCapA);
  __shared__ Scratch scratch;
  __shared__ int warp_cnt[2][kWarpsA];
  const int tid = threadIdx.x;
  const int k = static_cast<int>(a.k);  // 1 ≤ k ≤ kSplitMaxK (split_takes)
  const int S = w.S;
  int parity = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // The merge kernel may launch now (programmatic dependent launch): it waits for this grid's
  // completion before it reads anything, and a block triggers only once resident, so the merge
  // blocks can never hold SMs that this grid's blocks still need.
  asm volatile("griddepcontrol.launch_dependents;");
#endif

  for (int64_t b = blockIdx.x; b < a.rows * S; b += gridDim.x) {
    const int64_t r = b / S;
    const int s = static_cast<int>(b - r * S);
    int64_t ks, ke;
    row_range(a, r, &ks, &ke);
    const Groups g(a, r, ks, ke);
    const int per = (g.nvec + S - 1) / S;
    const int v0 = min(g.nvec, s * per), v1 = min(g.nvec, v0 + per);

    Threshold thr{__int_as_float(0xff800000), -1};  // admits every valid entry
    int n = 0;                                        // entries held (block-uniform)
    // Two register buffers, the loop unrolled by two so that neither is copied while its loads
    // fly: while step i is filtered, steps i + 1 and (once i's entries are written) i + 2 load.
    float fa[kGroupsA][4], fb[kGroupsA][4];
    auto load_step = [&](float(&f)[kGroupsA][4], int vb) {
#pragma unroll
      for (int u = 0; u < kGroupsA; ++u) g.load(vb + u * kThreadsA + tid, v1, f[u]);
    };
    auto filter_step = [&](const float(&f)[kGroupsA][4], int vb) {
      // Room for a whole step first (uniform; n > kRoomA > k): shrink() to ≤ k + kSlack.
      if (n > kRoomA) thr = shrink_a(sc, cc, &n, k, scratch);
      int total;
      int pos = n + block_prefix(count_admitted(g, vb + tid, f, thr), warp_cnt, parity, &total);
#pragma unroll
      for (int u = 0; u < kGroupsA; ++u) {
        const int v = vb + tid + u * kThreadsA;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int32_t c = g.col(v, i);
          if (beats(f[u][i], c, thr)) {
            sc[pos] = f[u][i];
            cc[pos] = c;
            ++pos;
          }
        }
      }
      n += total;
    };
    load_step(fa, v0);
    if (v0 + kStepGroups < v1) load_step(fb, v0 + kStepGroups);
    for (int vb = v0; vb < v1; vb += 2 * kStepGroups) {
      filter_step(fa, vb);
      if (vb + 2 * kStepGroups < v1) load_step(fa, vb + 2 * kStepGroups);
      if (vb + kStepGroups >= v1) break;
      filter_step(fb, vb + kStepGroups);
      if (vb + 3 * kStepGroups < v1) load_step(fb, vb + 3 * kStepGroups);
    }
    if (n > k) {
      keep_best<kThreadsA>(sc, cc, n, k, scratch);
      n = k;
    } else {
      __syncthreads();  // the last step's writes
    }
    uint2* out = w.cand + b * k;
    for (int i = tid; i < n; i += kThreadsA) out[i] = make_uint2(__float_as_uint(sc[i]), static_cast<uint32_t>(cc[i]));
    if (tid == 0) w.count[b] = n;
    __syncthreads();  // the buffer is refilled by the next slice
  }
}

__global__ void __launch_bounds__(kThreadsB) topk_split_merge(const __grid_constant__ TopKArgs a, const SplitWs w) {
  extern __shared__ __align__(16) unsigned char smem_b[];
  float* sc = reinterpret_cast<float*>(smem_b);
  int32_t* cc = reinterpret_cast<int32_t*>(sc + kCandB);
  auto& sort_temp = *reinterpret_cast<typename SortB::TempStorage*>(smem_b);
  __shared__ Scratch scratch;
  const int tid = threadIdx.x;
  const int k = static_cast<int>(a.k);
  const int S = w.S;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // Launched as a programmatic dependent of the select kernel: wait for its completion and its
  // memory (a no-op on a plain launch).
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif

  for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
    int64_t ks, ke;
    row_range(a, r, &ks, &ke);
    // The S counts first (independent loads), then every candidate load of the row at once.
    int cnt[kSplitMaxSlices];
#pragma unroll
    for (int s = 0; s < kSplitMaxSlices; ++s) {
      const int c = s < S ? w.count[r * S + s] : 0;
      cnt[s] = c < 0 ? 0 : (c > k ? k : c);
    }
    int n = 0;
#pragma unroll
    for (int s = 0; s < kSplitMaxSlices; ++s) {
      const uint2* in = w.cand + (r * S + s) * k;
      for (int i = tid; i < cnt[s]; i += kThreadsB) {
        const uint2 e = in[i];
        sc[n + i] = __uint_as_float(e.x);
        cc[n + i] = static_cast<int32_t>(e.y);
      }
      n += cnt[s];
    }
    __syncthreads();
    if (n > k) {
      keep_best<kThreadsB>(sc, cc, n, k, scratch);
      n = k;
    }
    const int keff = n;
    if (keff > 0) {
      const int64_t len = ke - ks;  // columns are < len ≤ 2^31 − 1
      const int col_bits = len > 1 ? 64 - __clzll(static_cast<unsigned long long>(len - 1)) : 1;
      topk_stream::sort_and_write<kThreadsB, kItemsB>(
          sc, cc, n, a.sorted, col_bits, sort_temp, scratch, [&](int pos, int32_t c, float v) {
            a.idx[r * a.idx_s0 + pos] = to_domain(a, r, ks, c);
            if (a.osc) a.osc[r * a.osc_s0 + pos] = v;
          });
    }
    write_padding<kThreadsB>(a, r, keff);
    __syncthreads();  // the buffer and scratch are refilled by the next row
  }
}

Status split_attributes() {
  static cuda::OncePerDevice once;
  const cudaError_t e = once.run([] {
    cudaError_t err =
        cudaFuncSetAttribute(topk_split_select, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSmemA));
    if (err == cudaSuccess)
      err = cudaFuncSetAttribute(topk_split_merge, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSmemB));
    return err;
  });
  if (e == cudaSuccess) return Status();
  return Status(StatusCode::kCudaError,
                std::string("topk: setting the attributes of the split kernels failed: ") + cudaGetErrorString(e));
}

bool split_pdl() {
  static const bool on = [] {
    const char* e = std::getenv("DSA_TOPK_SPLIT_PDL");
    return !(e && std::string(e) == "0");
  }();
  return on;
}

size_t align256(size_t b) { return (b + 255) & ~static_cast<size_t>(255); }

size_t cand_bytes(int64_t rows, int S, int64_t k) {
  return align256(static_cast<size_t>(rows) * S * static_cast<size_t>(k) * sizeof(uint2));
}

}  // namespace

bool split_takes(int64_t k) { return k >= 1 && k <= kSplitMaxK; }

// S minimizing (waves of kBlocksPerSmA blocks per SM) / S — a bandwidth-bound wave takes about
// its slice's time — ties to the smaller S (less merging, less workspace). Rows enough for a wave
// take S = 1 (many waves quantize little), and slices stay ≥ 4·k columns: shorter ones would pass
// most of their entries on to the merge.
int split_slices(int64_t rows, int64_t cols, int64_t k, int sm_count) {
  const int64_t slots = static_cast<int64_t>(sm_count > 0 ? sm_count : 1) * kBlocksPerSmA;
  if (rows >= slots) return 1;
  const int64_t max_s = cols / (4 * (k > 0 ? k : 1));
  int best = 1;
  double best_cost = 1.0;
  for (int S = 2; S <= kSplitMaxSlices && S <= max_s; ++S) {
    const double cost = static_cast<double>((rows * S + slots - 1) / slots) / S;
    if (cost < best_cost) best = S, best_cost = cost;
  }
  return best;
}

size_t split_workspace_bytes(int64_t rows, int64_t cols, int64_t k, int sm_count) {
  if (rows <= 0 || !split_takes(k)) return 0;
  const int S = split_slices(rows, cols, k, sm_count);
  return cand_bytes(rows, S, k) + align256(static_cast<size_t>(rows) * S * sizeof(int32_t));
}

Status launch_split(const TopKArgs& a, int sm_count, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  const size_t need = split_workspace_bytes(a.rows, a.cols, a.k, sm_count);
  if (workspace_bytes < need || (need > 0 && workspace == nullptr))
    return Status(StatusCode::kWorkspaceTooSmall,
                  "topk: the split kernel needs a workspace of " + std::to_string(need) + " bytes (workspace_size()); got " +
                      std::to_string(workspace == nullptr ? 0 : workspace_bytes));
  if (Status st = split_attributes(); !st.ok()) return st;
  SplitWs w{};
  w.S = split_slices(a.rows, a.cols, a.k, sm_count);
  w.cand = static_cast<uint2*>(workspace);
  w.count = reinterpret_cast<int32_t*>(static_cast<char*>(workspace) + cand_bytes(a.rows, w.S, a.k));
  topk_split_select<<<cuda::grid_for(a.rows * w.S, 1), kThreadsA, kSmemA, stream>>>(a, w);
  if (Status st = cuda::launch_status("topk", "topk_split_select"); !st.ok()) return st;
  // The merge kernel as a programmatic dependent launch: its launch overlaps the select kernel's
  // tail (DSA_TOPK_SPLIT_PDL=0: a plain launch).
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(cuda::grid_for(a.rows, 1));
  cfg.blockDim = dim3(kThreadsB);
  cfg.dynamicSmemBytes = kSmemB;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = split_pdl() ? 1 : 0;
  const cudaError_t e = cudaLaunchKernelEx(&cfg, topk_split_merge, a, w);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return Status(StatusCode::kCudaError, std::string("topk: launch of topk_split_merge failed: ") + cudaGetErrorName(e) +
                                              ": " + cudaGetErrorString(e));
  }
  return cuda::launch_status("topk", "topk_split_merge");
}

}  // namespace dsa::cuda_backend::topk_detail
