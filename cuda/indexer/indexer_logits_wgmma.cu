// CUDA OP-IDXLOGITS prefill on sm_90a warpgroup MMA (SPEC §4.2 step 7, §4.3, §12.3):
//   logits[t, s] = σ_k[s] · Σ_j w[t, j] · ReLU(q[t, j] · k[s])   for ks[t] ≤ s < ke[t],
//   −∞ elsewhere in [0, s_kv) when clean_logits (untouched otherwise) — as indexer_logits.cu.
//
// Taken when q and k are e4m3, h_idx = 64, d_idx = 128, a token's 64 heads are contiguous (head
// stride 128 B), q / k bases and row strides are 16-byte aligned, the device is cc 9.0 and this
// binary holds the sm_90a image of the kernel. Everything else stays on indexer_logits.cu's kernels.
// Kill switch: DSA_INDEXER_WGMMA=0 in the environment (read once, cached) forces the mma.sync
// kernel; =1 takes kernel version 1, =2 (or unset) version 2 (below). The test hook
// dsa::indexer_logits_wgmma_for_testing(mode) overrides it (−1 env, 0 off, 1 on, 2 v1, 3 v2).
//
// Layout of the product: KEYS on the wgmma M dimension, (token, head) on N, so the head sum of a
// key is nearly thread-local. D[key, 64·t + j] = K_tile[64 keys × 128] · Q^T with
// wgmma.m64n256k32.f32.e4m3.e4m3 (kT = 4 tokens per CTA), the 4 k32 steps chained in the
// tensor-core accumulator (no per-k32 promotion to IEEE fp32 as in the mma.sync kernel; the
// §9.4 tolerance is expected to hold, the GPU tests check it). 192 registers, no spills,
// 101,632 B dynamic shared memory, one 256-thread CTA per SM.
//   - A work item (one CTA) is a block of kT consecutive tokens × a chunk of keys (a multiple of
//     64, absolute-aligned). Only key tiles meeting some token's range are computed (causal
//     prefill skips the upper triangle). The CTA's q (kT·8 KB) stays in shared memory.
//   - Two consumer warpgroups take alternate key tiles and issue their MMAs in turn (named
//     barriers 3, 4), so one group's epilogue overlaps the other's MMA; each streams its tiles
//     through its own 4-stage cp.async ring (named barriers 1, 2).
//   - Shared operands use the no-swizzle K-major "core matrix" layout: 8 rows × 16 bytes
//     contiguous; core matrix (row group g, 16-byte k chunk c) at g·1024 + c·128. Descriptor:
//     LBO (next core matrix along K) = 128 B, SBO (next 8-row group along M/N) = 1024 B; k step
//     s starts at +256·s bytes.
//   - Epilogue: thread (warp w, lane l) holds keys 16w + l/4 (+8) and, per token, the heads
//     8i + 2(l%4) + {0,1}, i = 0…7 (the f32 accumulator fragment). Fixed order: 16 FMAs
//     w·ReLU(acc) per (key, token), then xor-shuffles 1 and 2 over the quad, then × σ_k.
//     Every output element comes from the same instruction sequence whatever the token block,
//     chunk or warpgroup, so results are bitwise reproducible and batch invariant.
//   - Version 2 (default) runs the same arithmetic per output (bitwise equal to version 1) with
//     a cheaper epilogue: the lane's 64 weights live in registers, the 8 sums are interleaved
//     FMA chains, a transpose-reduce (6 shuffles instead of 16) and 2 unbranched stores per lane;
//     the next tile's cp.async are issued after the MMAs. 244 registers, no spills (v1: 192).
//     Version 1's branchy epilogue (a shuffle pair and a conditional store per (token, row))
//     serialised the FMA chains; the epilogue then outlasted the other group's MMA.
// Keys outside every range of the CTA are not loaded; their accumulator rows (stale shared
// memory) are never stored. Ranges are clamped to 0 ≤ ks ≤ ke ≤ s_kv as in indexer_logits.cu.
//
// The fused indexer → top-k (indexer_topk_wgmma_kernel, IndexerTopKParams' streaming path) is
// version 2 with kSelect: one CTA per 4 tokens over their whole ranges, and where version 2 stores
// a score, it is compared with its token's admission threshold and, if it beats it, appended to
// the token's candidate buffer in shared memory (one atomic per warp and token). Buffers are
// shrunk in compaction rounds that start only at an issue point (see the loop: the issue order of
// the two groups orders their requests), so no epilogue is in flight while one runs; the end
// sorts each token's survivors and writes its k best (topk/topk_stream.cuh). 254 registers, no
// spills, 231,008 B shared. Same per-score instructions, so the selection is bitwise that of
// logits + topk.
#include "indexer/indexer_logits_wgmma.cuh"

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/cuda_common.cuh"
#include "common/sm90_ptx.cuh"
#include "dsa/version.hpp"
#include "topk/topk_stream.cuh"

namespace dsa {
namespace {
std::atomic<int> g_wgmma_override{-1};
}
}  // namespace dsa

namespace dsa::cuda_backend {

namespace {

constexpr int kT = 4;                 // query tokens per CTA
constexpr int kN = 64 * kT;           // wgmma N
constexpr int kAcc = kN / 2;          // f32 accumulators per thread
constexpr int kTileKeys = 64;         // wgmma M
constexpr int kStages = 4;            // cp.async ring per consumer warpgroup
constexpr int kThreads = 256;         // two consumer warpgroups
constexpr int kTileBytes = kTileKeys * 128;
constexpr int kStageBytes = kTileBytes + kTileKeys * 4;  // keys, then their scales
constexpr int kQBytes = kN * 128;
constexpr int kWOff = kQBytes;                           // float w[kT][4][16], see the epilogue
constexpr int kRangeOff = kWOff + kT * 64 * 4;           // int32 lo[kT], hi[kT]
constexpr int kStageOff = (kRangeOff + 2 * kT * 4 + 127) / 128 * 128;
constexpr int kSmemBytes = kStageOff + 2 * kStages * kStageBytes + 128;  // + base alignment slack

// The fused indexer → top-k variant (kSelect) keeps, after the rings, each token's candidate
// buffer (score bits, column; kCand entries) and the selection state (topk/topk_stream.cuh).
// A tile adds at most 64 entries per token; a compaction can only start at an issue point, and
// between one issue point's count read (taken during the group's previous MMAs) and the last
// chance to compact, at most 5 epilogues land (3 not yet counted at the read — the group's own
// previous one and the other group's two around it — and 2 more): so a buffer is compacted above
// kCand − 5·64 entries.
constexpr int kCand = 4000;
constexpr int kCompactAbove = kCand - 5 * kTileKeys;
constexpr int kSelOff = kStageOff + 2 * kStages * kStageBytes;
constexpr int kCandScOff = kSelOff;                                       // float [kT][kCand]
constexpr int kCandColOff = kCandScOff + kT * kCand * 4;                  // int32 [kT][kCand]
constexpr int kSelStateOff = kCandColOff + kT * kCand * 4;                // SelectState
struct SelectState {
  topk_stream::Scratch scratch;
  topk_stream::Threshold threshold[kT];  // what an entry must beat to enter (≤ the k-th best so far)
  int count[kT];                     // entries in each token's buffer
  int request;                       // a group asked for a compaction round (see the loop)
};
constexpr int kSelSmemBytes = kSelStateOff + static_cast<int>(sizeof(SelectState)) + 128;
// The final sort reuses the rings (idle by then): up to 256 × 9 survivors, the k best among them.
constexpr int kFinalItems = 9;
using FinalSort = topk_stream::RowSort<kThreads, kFinalItems>;
static_assert(sizeof(FinalSort::TempStorage) <= 2 * kStages * kStageBytes, "final sort storage fits the rings");
static_assert(kCompactAbove >= kIndexerTopKStreamMaxK + 8 * kTileKeys, "room between compactions");

// The shared wgmma / cp.async / barrier wrappers (common/sm90_ptx.cuh).
using namespace dsa::cuda::sm90;
// 4-byte cp.async (.ca: the scales); only this kernel copies 4-byte pieces.
__device__ __forceinline__ void cp_async4(uint32_t saddr, const void* gmem) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(saddr), "l"(gmem) : "memory");
}

// ReLU in one instruction; NaN propagates. ReLU(−0) is +0 here (−0 in the reference): the sign
// of a zero term never changes a sum that starts from +0, so the results are the same bits.
__device__ __forceinline__ float relu(float x) {
  float y;
  asm("max.NaN.f32 %0, %1, 0f00000000;\n" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float neg_inf() { return __int_as_float(static_cast<int>(0xff800000u)); }

// kSelect, after the last epilogue (the caller drained its cp.async groups): each token's buffer
// to exactly its k best (or all, when fewer are valid), ordered and written, then −1 / −∞ padding
// and k_eff — OP-TOPK's output for the row. All 256 threads.
__device__ __forceinline__ void select_finish(const WgmmaLogitsArgs& a, const WgmmaSelectArgs& sel, int64_t t0,
                                              uint8_t* smem, const int32_t* lo_s, SelectState* ss, float* cand_sc,
                                              int32_t* cand_col) {
  __syncthreads();  // every append landed; the rings are idle
  auto& temp = *reinterpret_cast<FinalSort::TempStorage*>(smem + kStageOff);
  const int col_bits = a.cols > 1 ? 64 - __clzll(a.cols - 1) : 1;
  const int tid = threadIdx.x;
#pragma unroll 1
  for (int t = 0; t < kT; ++t) {
    const int64_t row = t0 + t;
    if (row >= a.rows) break;
    float* const sc = cand_sc + t * kCand;
    int32_t* const cc = cand_col + t * kCand;
    // Sorted: the survivors (shrunk to what one sort holds) sorted whole, ranks [0, k) written —
    // the k best, since every shrink keeps them. Unsorted (column order): exactly the k best first.
    int n = ss->count[t];
    constexpr int kSortCap = kThreads * kFinalItems;
    if (sel.sorted && n > kSortCap)
      (void)topk_stream::shrink<kThreads>(sc, cc, &n, sel.k, kSortCap, ss->scratch);
    if (!sel.sorted && n > sel.k) {
      topk_stream::compact<kThreads>(sc, cc, n, sel.k, ss->scratch);
      n = sel.k;
    }
    const int n_out = n < sel.k ? n : sel.k;
    const int32_t base = sel.relative ? lo_s[t] : 0;
    int32_t* const idx = sel.idx + row * sel.idx_s0;
    float* const osc = sel.osc ? sel.osc + row * sel.osc_s0 : nullptr;
    topk_stream::sort_and_write<kThreads, kFinalItems>(
        sc, cc, n, sel.sorted, col_bits, temp, ss->scratch,
        [&](int pos, int32_t c, float v) {
          idx[pos] = c - base;
          if (osc) osc[pos] = v;
        },
        n_out);
    for (int pos = n_out + tid; pos < sel.k; pos += kThreads) {
      idx[pos] = -1;
      if (osc) osc[pos] = neg_inf();
    }
    if (sel.keff && tid == 0) sel.keff[row * sel.keff_s0] = n_out;
    __syncthreads();  // the sort storage and the scratch serve the next token
  }
}

// The kernel body, shared by the logits kernel (kSelect = false: scores stored to a.out) and the
// fused indexer → top-k kernel (kSelect = true, version 2 only: scores admitted into the
// candidate buffers, the k best written to sel). Every score is the same instruction sequence in
// both, so the fused op's selection is bitwise that of logits + topk.
template <int kVer, bool kSelect>
__device__ __forceinline__ void logits_wgmma_body(const WgmmaLogitsArgs& a, const WgmmaSelectArgs& sel) {
  static_assert(!kSelect || kVer == 2, "the selecting variant is built on version 2");
  extern __shared__ uint8_t smem_raw[];
  // 128-byte aligned by pointer arithmetic on the __shared__ array (not through an integer), so
  // the compiler knows every pointer below is shared memory and emits LDS/STS/ATOMS, not generic
  // (or, for volatile, system-scope) loads.
  uint8_t* smem = smem_raw + ((128u - (smem_addr(smem_raw) & 127u)) & 127u);
  const uint32_t sbase = smem_addr(smem);
  float* w_s = reinterpret_cast<float*>(smem + kWOff);
  int32_t* lo_s = reinterpret_cast<int32_t*>(smem + kRangeOff);
  int32_t* hi_s = lo_s + kT;

  const int tid = threadIdx.x, wg = tid >> 7, wtid = tid & 127;
  // v2 launches the token blocks last to first: under causal masks the late blocks hold the
  // longest rows, so the long items start first and the tail is made of short ones.
  const int64_t bx_tb = static_cast<int64_t>(blockIdx.x) % a.ntb;
  const int64_t tb = kVer == 1 ? bx_tb : a.ntb - 1 - bx_tb, chunk = static_cast<int64_t>(blockIdx.x) / a.ntb;
  const int64_t t0 = tb * kT;
  const int64_t c0 = chunk * a.chunk, c1 = c0 + a.chunk < a.cols ? c0 + a.chunk : a.cols;

  if (tid < kT) {
    const int64_t row = t0 + tid;
    int64_t lo = 0, hi = 0;  // a token past s_q has an empty range
    if (row < a.rows) {
      lo = min(max(static_cast<int64_t>(a.ks[row * a.ks_s0]), int64_t{0}), a.cols);
      hi = min(max(static_cast<int64_t>(a.ke[row * a.ke_s0]), lo), a.cols);
    }
    lo_s[tid] = static_cast<int32_t>(lo);
    hi_s[tid] = static_cast<int32_t>(hi);
  }
  SelectState* const ss = reinterpret_cast<SelectState*>(smem + kSelStateOff);
  float* const cand_sc = reinterpret_cast<float*>(smem + kCandScOff);
  int32_t* const cand_col = reinterpret_cast<int32_t*>(smem + kCandColOff);
  if constexpr (kSelect) {
    if (tid < kT) {
      ss->threshold[tid] = {neg_inf(), -1};
      ss->count[tid] = 0;
    }
    if (tid == 0) ss->request = 0;
  }
  // w_s[t][q][e] = w[t, 8(e/2) + 2q + e%2]: quad lane q's 16 heads of token t, in its order.
  for (int i = tid; i < kT * 64; i += kThreads) {
    const int64_t row = t0 + i / 64;
    const int q = (i % 64) / 16, e = i % 16;
    const int head = 8 * (e / 2) + 2 * q + (e % 2);
    w_s[i] = row < a.rows ? a.w[row * a.w_s0 + head * a.w_s1] : 0.0f;
  }
  // q of the kT tokens: B row n = 64·t + j (token t, head j), 8 chunks of 16 bytes; zeros past
  // s_q. cp.async group 0 of every thread; it lands while the −∞ pass and the first key loads go.
  for (int i = tid; i < kN * 8; i += kThreads) {
    const int n = i >> 3, c = i & 7;
    const int64_t row = t0 + n / 64;
    if (row < a.rows)
      cp_async16(sbase + core_off(n, c), a.q + row * a.q_s0 + (n % 64) * 128 + c * 16);
    else
      *reinterpret_cast<uint4*>(smem + core_off(n, c)) = make_uint4(0u, 0u, 0u, 0u);
  }
  cp_async_commit();
  __syncthreads();  // ranges and weights

  // Per-token store windows and the CTA's key window (union of the ranges, within the chunk).
  int64_t vlo[kT], vhi[kT];
  int64_t ulo = c1, uhi = c0;
#pragma unroll
  for (int t = 0; t < kT; ++t) {
    vlo[t] = max(static_cast<int64_t>(lo_s[t]), c0);
    vhi[t] = min(static_cast<int64_t>(hi_s[t]), c1);
    if (vlo[t] < vhi[t]) {
      ulo = min(ulo, vlo[t]);
      uhi = max(uhi, vhi[t]);
    }
  }
  if (a.clean) {
#pragma unroll 1
    for (int t = 0; t < kT; ++t) {
      const int64_t row = t0 + t;
      if (row >= a.rows) break;
      float* orow = a.out + row * a.out_s0;
      const int64_t lo = lo_s[t], hi = hi_s[t];
      if constexpr (kVer == 1) {
        for (int64_t c = c0 + tid; c < c1; c += kThreads)
          if (c < lo || c >= hi) orow[c] = neg_inf();
      } else {
        // The same stores without walking [lo, hi) (whole-row work items): [c0, lo) and [hi, c1).
        const int64_t e0 = lo < c1 ? lo : c1, b1 = hi > c0 ? hi : c0;
        for (int64_t c = c0 + tid; c < e0; c += kThreads) orow[c] = neg_inf();
        for (int64_t c = b1 + tid; c < c1; c += kThreads) orow[c] = neg_inf();
      }
    }
  }
  if (ulo >= uhi) {  // block-uniform; no copy may still target this block's shared memory
    cp_async_wait<0>();
    if constexpr (kSelect) select_finish(a, sel, t0, smem, lo_s, ss, cand_sc, cand_col);
    return;
  }

  // Warpgroup wg computes the tiles j ≡ wg (mod 2) of [tile0, tile0 + ntiles); after the q
  // barrier below no block-wide barrier: named barrier 1 + wg inside a group, 3 and 4 for the
  // MMA issue order.
  const int64_t tile0 = ulo / kTileKeys;
  const int64_t ntiles = (uhi + kTileKeys - 1) / kTileKeys - tile0;
  const int64_t my_n = (ntiles - wg + 1) / 2;
  const uint32_t ring = sbase + kStageOff + wg * (kStages * kStageBytes);

  // Loads local tile i (global tile tile0 + wg + 2i) into its stage; always commits a group so
  // the wait counts stay uniform.
  auto issue = [&](int64_t i) {
    if (i < my_n) {
      const int64_t kb = (tile0 + wg + 2 * i) * kTileKeys;
      const uint32_t st = ring + static_cast<uint32_t>(i % kStages) * kStageBytes;
      // 16 consecutive threads: 8 rows × 2 adjacent chunks (whole 32-byte sectors, and each
      // group of 8 threads writes 8 different bank quads).
#pragma unroll
      for (int it = 0; it < 4; ++it) {
        const int idx = it * 128 + wtid;
        const int r = (idx & 7) | (((idx >> 4) & 7) << 3);
        const int c = ((idx >> 7) << 1) | ((idx >> 3) & 1);
        const int64_t key = kb + r;
        if (key >= ulo && key < uhi) cp_async16(st + core_off(r, c), a.k + key * a.k_s0 + c * 16);
      }
      if (wtid < kTileKeys) {
        const int64_t key = kb + wtid;
        if (key >= ulo && key < uhi) cp_async4(st + kTileBytes + 4 * wtid, a.k_scale + key * a.sc_s0);
      }
    }
    cp_async_commit();
  };

#pragma unroll 1
  for (int i = 0; i < kStages - 1; ++i) issue(i);
  // Groups so far: q, then kStages − 1 tiles. q landed for everyone → visible to wgmma.
  cp_async_wait<kStages - 1>();
  fence_proxy_async();
  __syncthreads();
  if (!kSelect && my_n <= 0) return;  // the selecting variant still writes its rows at the end

  const int warp = wtid >> 5, lane = wtid & 31, g = lane >> 2, q4 = lane & 3;
  const uint64_t desc_b = smem_desc(sbase);
  float acc[kAcc];
  if constexpr (kVer == 1) {
#pragma unroll 1
    for (int64_t i = 0; i < my_n; ++i) {
      cp_async_wait<kStages - 2>();  // this thread's copies of tile i landed (group 1 + i)
      fence_proxy_async();
      named_barrier(1 + wg, 128);    // everyone's copies landed; everyone left epilogue i − 1
      issue(i + kStages - 1);        // refills the stage of tile i − 1
      const uint32_t st = ring + static_cast<uint32_t>(i % kStages) * kStageBytes;
      const uint64_t desc_a = smem_desc(st);
      // Issue order alternates between the groups (global tile j after j − 1), so the tensor
      // cores run one group's tile while the other group runs its epilogue. Barrier 3 + wg is
      // "group wg may issue"; an arrival is made only where the other group has that tile.
      const int64_t j = wg + 2 * i;
      if (j > 0) named_barrier(3 + wg, 256);
      wgmma_fence();
      // k step s: bytes [32s, 32s + 32) of every row = chunks 2s, 2s + 1 → +256·s bytes (>> 4 = 16s).
      wgmma_n256<0>(acc, desc_a, desc_b);
      wgmma_n256<1>(acc, desc_a + 16, desc_b + 16);
      wgmma_n256<1>(acc, desc_a + 32, desc_b + 32);
      wgmma_n256<1>(acc, desc_a + 48, desc_b + 48);
      wgmma_commit();
      if (j + 1 < ntiles) named_arrive(3 + (wg ^ 1), 256);
      wgmma_wait_all();

      const int64_t kb = (tile0 + wg + 2 * i) * kTileKeys;
      const float* sc = reinterpret_cast<const float*>(smem + (st - sbase) + kTileBytes);
#pragma unroll
      for (int t = 0; t < kT; ++t) {
        float wt[16];
#pragma unroll
        for (int m = 0; m < 4; ++m) {
          const float4 w4 = *reinterpret_cast<const float4*>(w_s + 64 * t + 16 * q4 + 4 * m);
          wt[4 * m] = w4.x;
          wt[4 * m + 1] = w4.y;
          wt[4 * m + 2] = w4.z;
          wt[4 * m + 3] = w4.w;
        }
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          float s = 0.0f;
#pragma unroll
          for (int jj = 0; jj < 8; ++jj) {
            s = __fmaf_rn(wt[2 * jj], relu(acc[4 * (8 * t + jj) + 2 * r]), s);
            s = __fmaf_rn(wt[2 * jj + 1], relu(acc[4 * (8 * t + jj) + 2 * r + 1]), s);
          }
          s = __fadd_rn(s, __shfl_xor_sync(0xffffffffu, s, 1));
          s = __fadd_rn(s, __shfl_xor_sync(0xffffffffu, s, 2));
          // The quad holds the same bits in all 4 lanes; lane (2t + r) % 4 stores.
          if (((2 * t + r) & 3) == q4) {
            const int kr = 16 * warp + g + 8 * r;
            const int64_t key = kb + kr;
            if (key >= vlo[t] && key < vhi[t]) a.out[(t0 + t) * a.out_s0 + key] = __fmul_rn(s, sc[kr]);
          }
        }
      }
    }
  } else {
    // Version 2: the same arithmetic per output (bitwise equal to version 1), fewer instructions
    // and no branches inside the epilogue:
    //   - the 64 weights of this lane (4 tokens × its 16 heads) stay in registers;
    //   - the 8 (token, row) partial sums are independent FMA chains, interleaved (ILP 8);
    //   - the quad reduction is a transpose-reduce: 6 shuffles leave lane q4 the sums of
    //     p = 2t + r ∈ {q4, q4 + 4}, each the same tree (v0 + v1) + (v2 + v3) as the butterfly;
    //   - every lane stores 2 outputs (one key row kr, tokens q4 / 2 and 2 + q4 / 2) unbranched;
    //   - the next tile's loads are issued after the MMAs, so they no longer delay the issue.
    static_assert(kT == 4, "the epilogue below assumes 4 tokens (8 sums per lane, 2 stores)");
    float wr[kT][16];
#pragma unroll
    for (int t = 0; t < kT; ++t)
#pragma unroll
      for (int m = 0; m < 4; ++m) {
        const float4 w4 = *reinterpret_cast<const float4*>(w_s + 64 * t + 16 * q4 + 4 * m);
        wr[t][4 * m] = w4.x;
        wr[t][4 * m + 1] = w4.y;
        wr[t][4 * m + 2] = w4.z;
        wr[t][4 * m + 3] = w4.w;
      }
    const int b1 = q4 & 1, b2 = q4 >> 1;
    const int kr = 16 * warp + g + 8 * b1;  // this lane's key row in the tile
    // Windows and output rows of this lane's two tokens (b2 and 2 + b2), selected without
    // dynamic register indexing.
    const int64_t lo0 = b2 ? vlo[1] : vlo[0], hi0 = b2 ? vhi[1] : vhi[0];
    const int64_t lo1 = b2 ? vlo[3] : vlo[2], hi1 = b2 ? vhi[3] : vhi[2];
    float* const o0 = a.out + (t0 + b2) * a.out_s0;
    float* const o1 = a.out + (t0 + 2 + b2) * a.out_s0;
    // kSelect: a compaction round, run by all 256 threads while no epilogue is in flight; each
    // token buffer past the midpoint of [k, kCompactAbove] is shrunk to at most k + 128 entries
    // (topk_stream::shrink: cheap, keeps a superset of the k best, raises the threshold).
    const int shrink_above = (sel.k + kCompactAbove) / 2, shrink_to = sel.k + 128;
    auto compaction_round = [&]() {
      __syncthreads();
#pragma unroll 1
      for (int t = 0; t < kT; ++t) {
        int n = ss->count[t];
        if (n > shrink_above) {
          const topk_stream::Threshold thr = topk_stream::shrink<kThreads>(cand_sc + t * kCand, cand_col + t * kCand,
                                                                            &n, sel.k, shrink_to, ss->scratch);
          if (tid == 0) {
            ss->count[t] = n;
            ss->threshold[t] = thr;
          }
        }
      }
      if (tid == 0) ss->request = 0;
      __syncthreads();
    };
    // kSelect: appends the lanes' admitted (score, column) to token t's buffer (t = slot + b2: the
    // two halves of the warp feed two tokens), one shared atomic per token and warp.
    auto append = [&](bool admit, int t, float v, int32_t c) {
      const unsigned m0 = __ballot_sync(0xffffffffu, admit && b2 == 0);
      const unsigned m1 = __ballot_sync(0xffffffffu, admit && b2 == 1);
      const unsigned mine = b2 ? m1 : m0;
      const int leader = mine ? __ffs(mine) - 1 : 0;
      int base = 0;
      if (admit && lane == leader) base = atomicAdd(&ss->count[t], __popc(mine));
      base = __shfl_sync(0xffffffffu, base, leader);
      if (admit) {
        const int pos = base + __popc(mine & ((1u << lane) - 1u));
        cand_sc[t * kCand + pos] = v;
        cand_col[t * kCand + pos] = c;
      }
    };
    // kSelect: this group's look at the buffers for its next issue point, taken by one thread while
    // the previous tile's MMAs run (so no load sits in front of the barrier that shares it).
    bool want_next = false;
#pragma unroll 1
    for (int64_t i = 0; i < my_n; ++i) {
      bool want = want_next;
      cp_async_wait<kStages - 2>();  // this thread's copies of tile i landed (group 1 + i)
      fence_proxy_async();
      // Everyone's copies landed; everyone left epilogue i − 1 (kSelect: and everyone has `want`).
      if constexpr (kSelect)
        want = named_barrier_or(1 + wg, 128, want);
      else
        named_barrier(1 + wg, 128);
      const uint32_t st = ring + static_cast<uint32_t>(i % kStages) * kStageBytes;
      const uint64_t desc_a = smem_desc(st);
      const int64_t j = wg + 2 * i;
      if (j > 0) named_barrier(3 + wg, 256);
      if constexpr (kSelect) {
        // Compaction rounds start only here, at an issue point, where the issue order (tile j
        // after j − 1, alternating groups) orders the two groups' decisions. A group that wants
        // one raises `request` and makes the other group's next issue wait pass without issuing
        // (a stand-in arrival); the other group sees the request there and joins. After the
        // round the requester issues its tile and arrives as usual; the joiner waits again.
        // One call site for both roles: the round's block barriers are .aligned (every thread of
        // the block must execute the same barrier instructions).
        const bool join = j > 0 && *reinterpret_cast<const volatile int*>(&ss->request);
        const bool ask = !join && want && j + 1 < ntiles;
        if (ask) {
          if (wtid == 0) ss->request = 1;
          named_arrive(3 + (wg ^ 1), 256);
        }
        if (join || ask) compaction_round();
        if (join) named_barrier(3 + wg, 256);
      }
      wgmma_fence();
      wgmma_n256<0>(acc, desc_a, desc_b);
      wgmma_n256<1>(acc, desc_a + 16, desc_b + 16);
      wgmma_n256<1>(acc, desc_a + 32, desc_b + 32);
      wgmma_n256<1>(acc, desc_a + 48, desc_b + 48);
      wgmma_commit();
      if (j + 1 < ntiles) named_arrive(3 + (wg ^ 1), 256);
      issue(i + kStages - 1);        // refills the stage of tile i − 1 while the MMAs run
      // kSelect: the thresholds of this lane's two tokens (they change only in rounds, which start
      // before an issue), and the count look for the next issue point; both land during the MMAs.
      topk_stream::Threshold thr0{}, thr1{};
      if constexpr (kSelect) {
        thr0 = ss->threshold[b2];
        thr1 = ss->threshold[2 + b2];
        if (wtid == 0) {
          const volatile int* cnt = ss->count;
          want_next = (cnt[0] > kCompactAbove) | (cnt[1] > kCompactAbove) | (cnt[2] > kCompactAbove) |
                      (cnt[3] > kCompactAbove);
        }
      }
      wgmma_wait_all();
      fence_regs(acc);

      float v[8];  // v[2t + r]: token t, key row 16·warp + g + 8r
#pragma unroll
      for (int p = 0; p < 8; ++p) v[p] = 0.0f;
#pragma unroll
      for (int jj = 0; jj < 8; ++jj)
#pragma unroll
        for (int e = 0; e < 2; ++e)
#pragma unroll
          for (int t = 0; t < kT; ++t)
#pragma unroll
            for (int r = 0; r < 2; ++r)
              v[2 * t + r] = __fmaf_rn(wr[t][2 * jj + e], relu(acc[4 * (8 * t + jj) + 2 * r + e]), v[2 * t + r]);
      // Round 1 (lanes q4, q4 ^ 1): u[k] = Σ over the pair of v[2k + b1].
      float u[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const float send = b1 ? v[2 * k] : v[2 * k + 1];
        const float keep = b1 ? v[2 * k + 1] : v[2 * k];
        u[k] = __fadd_rn(keep, __shfl_xor_sync(0xffffffffu, send, 1));
      }
      // Round 2 (lanes q4, q4 ^ 2): z[m] = Σ over the quad of v[4m + q4].
      float z[2];
#pragma unroll
      for (int m = 0; m < 2; ++m) {
        const float send = b2 ? u[2 * m] : u[2 * m + 1];
        const float keep = b2 ? u[2 * m + 1] : u[2 * m];
        z[m] = __fadd_rn(keep, __shfl_xor_sync(0xffffffffu, send, 2));
      }
      const int64_t key = (tile0 + j) * kTileKeys + kr;
      const float sck = reinterpret_cast<const float*>(smem + (st - sbase) + kTileBytes)[kr];
      if constexpr (kSelect) {
        const float v0 = __fmul_rn(z[0], sck), v1 = __fmul_rn(z[1], sck);
        const int32_t c = static_cast<int32_t>(key);
        const bool ad0 = key >= lo0 && key < hi0 && topk_stream::beats(v0, c, thr0);
        const bool ad1 = key >= lo1 && key < hi1 && topk_stream::beats(v1, c, thr1);
        if (__any_sync(0xffffffffu, ad0 || ad1)) {
          append(ad0, b2, v0, c);
          append(ad1, 2 + b2, v1, c);
        }
      } else {
        if (key >= lo0 && key < hi0) o0[key] = __fmul_rn(z[0], sck);
        if (key >= lo1 && key < hi1) o1[key] = __fmul_rn(z[1], sck);
      }
    }
  }
  cp_async_wait<0>();
  if constexpr (kSelect) select_finish(a, sel, t0, smem, lo_s, ss, cand_sc, cand_col);
}

template <int kVer>
__global__ void __launch_bounds__(kThreads, 1) logits_wgmma_kernel(const __grid_constant__ WgmmaLogitsArgs a) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  logits_wgmma_body<kVer, false>(a, WgmmaSelectArgs{});
#else
  // No sm_90a image: the host never launches this variant (see wgmma_image_present()).
  __shared__ volatile int no_sm90a_marker;
  no_sm90a_marker = 0;
#endif
}

// The fused indexer → top-k kernel: version 2 over whole rows, selecting instead of storing.
__global__ void __launch_bounds__(kThreads, 1)
    indexer_topk_wgmma_kernel(const __grid_constant__ WgmmaLogitsArgs a, const __grid_constant__ WgmmaSelectArgs sel) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  logits_wgmma_body<2, true>(a, sel);
#else
  __shared__ volatile int no_sm90a_marker;
  no_sm90a_marker = 0;
#endif
}

// sm_90a image of the kernel present: its static shared size is 0 (the fallback variant has a
// marker of 4 bytes) and its binary version is 90.
template <int kVer>
bool wgmma_image_present_v() {
  cudaFuncAttributes attr{};
  if (cudaFuncGetAttributes(&attr, logits_wgmma_kernel<kVer>) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return attr.binaryVersion == 90 && attr.sharedSizeBytes == 0;
}
bool wgmma_image_present() {
  cudaFuncAttributes attr{};
  if (cudaFuncGetAttributes(&attr, indexer_topk_wgmma_kernel) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return wgmma_image_present_v<1>() && wgmma_image_present_v<2>() && attr.binaryVersion == 90 &&
         attr.sharedSizeBytes == 0;
}

// DSA_INDEXER_WGMMA: "0" off, "1" kernel version 1, anything else (or unset) version 2.
int env_version() {
  static const int v = [] {
    const char* e = std::getenv("DSA_INDEXER_WGMMA");
    if (e && std::strcmp(e, "0") == 0) return 0;
    if (e && std::strcmp(e, "1") == 0) return 1;
    return 2;
  }();
  return v;
}

// The version the next launch takes (0: none): test override first, then the environment.
int wgmma_version() {
  const int mode = g_wgmma_override.load();
  if (mode == 0) return 0;
  if (mode == 2) return 1;
  if (mode == 3) return 2;
  const int v = env_version();
  return mode == 1 && v == 0 ? 2 : v;  // mode 1: on even where the environment says 0
}

}  // namespace

bool indexer_wgmma_usable() {
  if (wgmma_version() == 0) return false;
  cuda::DeviceInfo info;
  if (!cuda::device_info("indexer_logits", &info).ok()) return false;
  if (info.cc_major != 9 || info.cc_minor != 0 || info.max_smem_optin < kSmemBytes) return false;
  // Per device: 0 unknown, 1 present, 2 absent.
  static std::atomic<int> present[64];
  if (info.device < 0 || info.device >= 64) return false;
  int p = present[info.device].load();
  if (p == 0) {
    p = wgmma_image_present() ? 1 : 2;
    present[info.device].store(p);
  }
  return p == 1;
}

Status launch_indexer_logits_wgmma(WgmmaLogitsArgs a, Stream stream) {
  cuda::DeviceInfo info;
  Status s = cuda::device_info("indexer_logits", &info);
  if (!s.ok()) return s;
  const int sms = info.sm_count > 0 ? info.sm_count : 132;
  a.ntb = (a.rows + kT - 1) / kT;
  const int64_t tiles = (a.cols + kTileKeys - 1) / kTileKeys;
  const bool v1 = wgmma_version() == 1;
  int64_t per;
  if (v1) {
    // Keys per work item: about 16 items per SM over the full (uncausal) grid, 8…128 tiles.
    per = (a.ntb * tiles + 16LL * sms - 1) / (16LL * sms);
    per = per < 8 ? 8 : (per > 128 ? 128 : per);
  } else {
    // Version 2: the number of key chunks n that minimises the modelled time of the full grid,
    // ⌈ntb·n / SMs⌉ waves (one CTA per SM) × (⌈tiles / n⌉ + 6 tiles of per-item start-up: q,
    // ranges, pipeline fill). At 4096 × 32K this takes whole rows (8 waves of 512 tiles, 4144
    // units) instead of 128-tile chunks (32 waves, 4288); chunks at least 8 tiles. The split
    // never changes a result (each output's arithmetic is the same in every work item).
    const int64_t max_n = tiles / 8 > 1 ? tiles / 8 : 1;
    int64_t best_n = 1;
    double best = -1.0;
    for (int64_t n = 1; n <= max_n && n <= 4096; ++n) {
      const int64_t p = (tiles + n - 1) / n;
      if (n > 1 && (tiles + p - 1) / p < n) continue;  // same chunking as a smaller n
      const double waves = static_cast<double>((a.ntb * n + sms - 1) / sms);
      const double t = waves * static_cast<double>(p + 6);
      if (best < 0.0 || t < best) {
        best = t;
        best_n = n;
      }
    }
    per = (tiles + best_n - 1) / best_n;
  }
  if (per > tiles) per = tiles;
  if (per < 1) per = 1;
  a.chunk = per * kTileKeys;
  const int64_t nchunks = (a.cols + a.chunk - 1) / a.chunk;
  int64_t blocks = a.ntb * nchunks;
  if (blocks > 0x7fffffffLL) {  // whole rows per item (gridDim.x limit; ntb < 2^31 for any int32 ranges)
    a.chunk = tiles * kTileKeys;
    blocks = a.ntb;
  }
  auto* kernel = v1 ? logits_wgmma_kernel<1> : logits_wgmma_kernel<2>;
  static cuda::OncePerDevice attributes;
  const cudaError_t e = attributes.run([] {
    cudaError_t err = cudaFuncSetAttribute(logits_wgmma_kernel<1>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
    if (err == cudaSuccess)
      err = cudaFuncSetAttribute(logits_wgmma_kernel<2>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
    return err;
  });
  if (e != cudaSuccess)
    return Status(StatusCode::kCudaError,
                  std::string("indexer_logits: cudaFuncSetAttribute failed: ") + cudaGetErrorString(e));
  kernel<<<static_cast<unsigned>(blocks), kThreads, kSmemBytes, stream>>>(a);
  return cuda::launch_status("indexer_logits", "logits_wgmma_kernel");
}

bool indexer_topk_wgmma_fits() {
  cuda::DeviceInfo info;
  return cuda::device_info("indexer_topk", &info).ok() && info.max_smem_optin >= kSelSmemBytes;
}

Status launch_indexer_topk_wgmma(WgmmaLogitsArgs a, const WgmmaSelectArgs& sel, Stream stream) {
  if (sel.k < 1 || sel.k > kIndexerTopKStreamMaxK)
    return Status(StatusCode::kUnsupportedShape, "indexer_topk: the streaming kernel takes 1 ≤ k ≤ " +
                                                      std::to_string(kIndexerTopKStreamMaxK) + ", got " +
                                                      std::to_string(sel.k));
  // One CTA per 4 tokens over their whole key ranges (the selection needs the whole row).
  a.ntb = (a.rows + kT - 1) / kT;
  const int64_t tiles = (a.cols + kTileKeys - 1) / kTileKeys;
  a.chunk = (tiles > 0 ? tiles : 1) * kTileKeys;
  a.out = nullptr;
  a.out_s0 = 0;
  a.clean = false;
  if (a.ntb > 0x7fffffffLL)
    return Status(StatusCode::kUnsupportedShape, "indexer_topk: s_q = " + std::to_string(a.rows) + " needs more than 2^31 − 1 blocks");
  static cuda::OncePerDevice attributes;
  const cudaError_t e = attributes.run([] {
    return cudaFuncSetAttribute(indexer_topk_wgmma_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSelSmemBytes);
  });
  if (e != cudaSuccess)
    return Status(StatusCode::kCudaError,
                  std::string("indexer_topk: cudaFuncSetAttribute failed: ") + cudaGetErrorString(e));
  indexer_topk_wgmma_kernel<<<static_cast<unsigned>(a.ntb), kThreads, kSelSmemBytes, stream>>>(a, sel);
  return cuda::launch_status("indexer_topk", "indexer_topk_wgmma_kernel");
}

}  // namespace dsa::cuda_backend

namespace dsa {
// Test hooks (declared by tests/gpu/test_gpu_indexer.cpp, not in a public header).
// mode −1 follows DSA_INDEXER_WGMMA, 0 forces the mma.sync kernel, 1 allows the wgmma kernel
// (still only where it applies; its version from DSA_INDEXER_WGMMA, 2 unless that says 1),
// 2 allows it as version 1, 3 as version 2.
DSA_API void indexer_logits_wgmma_for_testing(int mode) { g_wgmma_override.store(mode); }
// Whether qualifying prefill calls on the current device take the wgmma kernel now.
DSA_API bool indexer_logits_wgmma_active() { return cuda_backend::indexer_wgmma_usable(); }
}  // namespace dsa
