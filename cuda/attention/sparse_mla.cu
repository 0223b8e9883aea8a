// CUDA OP-SMLA-FWD and OP-SMLA-DEC: sparse MLA attention in MQA mode (SPEC §6.2–6.4, §7.1).
//
// One block per (query token, head group of HG = 16 or 64 heads; rows past h_q are zero queries
// whose results are not stored). The token's selected KV rows are gathered chunk by chunk (kBK = 32
// keys) into shared memory — bf16 rows by 16-byte cp.async (double-buffered), FP8 656-byte rows by
// cp.async into a staging buffer and dequantized to bf16 in shared memory (latent =
// bf16(e4m3 · scale), k^R as stored). An invalid slot (i ≥ topk_length, idx < 0, idx ≥ rows) is
// never read: its shared row is zero and its score −∞ by selection. S = Q·Kᵀ and O += P·V run on
// bf16 tensor cores (mma.sync m16n8k16, fp32 accumulate); the online softmax is fp32 in base 2
// (τ·log2e folded into one multiply), its running max starts at a finite −1e30 (no −∞ − −∞), and P
// is rounded to bf16 for the PV product. Warps: ROWW row groups of 16 heads × COLW column groups;
// a column group owns 1/COLW of each chunk's keys for S and 1/COLW of the 512 output columns for O.
// Row maxima are exchanged through shared memory; row sums stay per column group and are added at
// the end. No atomics and a fixed reduction order: results are bitwise reproducible and
// independent of the other tokens in the call.
//
// Decode is the same kernel over b·s_q query tokens with a paged loader. Bad values (topk_length
// out of range) are clamped to [0, topk] — the CPU reference rejects them.
//
// Split-KV (decode only, SparseMlaDecodeParams::num_splits): each query row's topk slots are cut
// into n_split contiguous ranges of split_chunks·kBK slots and one block runs each (token, group,
// split). num_splits = 1 (default) never splits; n ≥ 2 asks for n splits; 0 splits only when the
// b·s_q·groups blocks would leave SMs idle. A split stores its un-normalized fp32 O (512 columns)
// and its base-2 running max m and sum l into the caller's workspace; combine_kernel then merges
// the splits of a row in fixed order 0, 1, … (M = max m_s, w_s = 2^(m_s − M), L = Σ w_s·l_s,
// out = Σ w_s·O_s / L) and applies the same epilogue as the unsplit kernel (empty row, sink, lse
// base, out dtype).
// n_split depends only on the shape, num_splits and the SM count (split_plan), so reruns are
// bitwise equal; for num_splits ≠ 0 it depends on topk and num_splits only, so a row's bits do not
// depend on the other rows of the batch (SPEC D11). Automatic splitting (0) trades that away.
#include <cuda_bf16.h>

#include <climits>
#include <cmath>
#include <string>

#include "common/cuda_common.cuh"
#include "common/op_list.hpp"
#include "attention/sparse_mla_wgmma.cuh"

namespace dsa::cuda_backend {

namespace {

constexpr int kBK = 32;                   // keys per chunk
constexpr int kD = kMlaDimQK;             // 576
constexpr int kDV = kMlaDimV;             // 512
constexpr int kRowChunks = kD * 2 / 16;   // 72 16-byte chunks per bf16 row
constexpr int kFp8Row = kMlaFp8CacheBytes;  // 656
constexpr int kFp8RowChunks = kFp8Row / 16;  // 41
constexpr int kPPitch = kBK + 8;          // P tile pitch (bf16): 80 B rows, conflict-free ldmatrix
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kMaxInit = -1e30f;

enum class Kv : int { kBf16 = 0, kFp8 = 1 };

struct AttnArgs {
  const uint8_t* q;        // bf16
  const uint8_t* kv;       // bf16 rows or 656-byte FP8 rows
  const int32_t* indices;
  const int32_t* topk_length;  // null: topk
  const int32_t* ks;           // dense mode (non-null): keys [ks, ke) instead of an index list
  const int32_t* ke;
  int64_t ks_s, ke_s;
  const float* sink;           // null: none
  void* out;
  float* lse;
  float* max_logits;       // null: none
  // token r → (bi, si) = (r / s_inner, r % s_inner)
  int64_t tokens, s_inner;
  int64_t q_sb, q_ss, q_sh;        // elements
  int64_t i_sb, i_ss;              // elements
  int64_t tl_s, sink_s;
  int64_t o_sb, o_ss, o_sh;        // elements
  int64_t l_sb, l_ss, l_sh;
  int64_t m_sb, m_sh;
  // KV row address of slot: kv + (slot / P)·page_bytes + (slot % P)·row_bytes; P == 1: slot·page_bytes
  int64_t P, page_bytes, row_bytes, num_rows;
  int topk, h_q, groups;
  int n_split, split_chunks;  // n_split > 1: block = (tok·groups + group)·n_split + split
  float* part_o;              // split partials: [tok·h_q + h][n_split][512] un-normalized O
  float* part_ml;             // [tok·h_q + h][n_split][2]: running max (base 2, scaled), sum
  float scale_log2;
  bool out_f32, lse_base2, q_vec, kv_vec, out_vec;
};

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(dst)), "l"(src));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

__device__ __forceinline__ void ldm_x4(uint32_t r[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldm_x2(uint32_t r[2], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldm_x4_t(uint32_t r[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}
__device__ __forceinline__ void mma_bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Byte offset of element `col` (multiple of 8 for 16-byte access) of row `r` in a swizzled
// [rows, 576] bf16 tile: 16-byte chunk c lives at c ^ (r & 7) (72 chunks: whole groups of 8).
__device__ __forceinline__ int swz(int r, int col) {
  return r * (kD * 2) + ((((col >> 3) ^ (r & 7))) << 4) + ((col & 7) << 1);
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

template <int ROWW, int COLW, Kv KV>
struct Cfg {
  static constexpr int HG = 16 * ROWW;
  static constexpr int kWarps = ROWW * COLW;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kKvBufs = KV == Kv::kFp8 ? 1 : 2;
  static constexpr int kStageBufs = KV == Kv::kFp8 ? 2 : 0;
  static constexpr int kQBytes = HG * kD * 2;
  static constexpr int kKvBytes = kBK * kD * 2;
  static constexpr int kStageBytes = kBK * kFp8Row;
  static constexpr int kPBytes = HG * kPPitch * 2;
  static constexpr int kOffKv = kQBytes;
  static constexpr int kOffStage = kOffKv + kKvBufs * kKvBytes;
  static constexpr int kOffP = kOffStage + kStageBufs * kStageBytes;
  static constexpr int kOffMax = kOffP + kPBytes;
  static constexpr int kOffSum = kOffMax + COLW * HG * 4;
  static constexpr int kOffValid = kOffSum + COLW * HG * 4;
  static constexpr int kSmem = kOffValid + 2 * kBK * 4;
  static constexpr int kNtS = kBK / 8 / COLW;   // S n-tiles (8 keys) per warp
  static constexpr int kNtO = kDV / 8 / COLW;   // O n-tiles (8 columns) per warp
  static_assert(kNtS >= 1 && kNtO % 2 == 0, "warp split");
};

template <int ROWW, int COLW, Kv KV>
__global__ void __launch_bounds__(Cfg<ROWW, COLW, KV>::kThreads, 1)
    sparse_mla_kernel(const __grid_constant__ AttnArgs a) {
  using C = Cfg<ROWW, COLW, KV>;
  constexpr int HG = C::HG;
  extern __shared__ __align__(128) uint8_t smem[];
  uint8_t* sq = smem;
  uint8_t* skv = smem + C::kOffKv;
  uint8_t* sstage = smem + C::kOffStage;
  __nv_bfloat16* sp = reinterpret_cast<__nv_bfloat16*>(smem + C::kOffP);
  float* smax = reinterpret_cast<float*>(smem + C::kOffMax);
  float* ssum = reinterpret_cast<float*>(smem + C::kOffSum);
  int* svalid = reinterpret_cast<int*>(smem + C::kOffValid);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int rg = warp / COLW, cg = warp % COLW;
  const int64_t block = static_cast<int64_t>(blockIdx.x) / a.n_split;
  const int split = static_cast<int>(blockIdx.x % static_cast<unsigned>(a.n_split));
  const int64_t tok = block / a.groups;
  const int group = static_cast<int>(block % a.groups);
  const int64_t bi = tok / a.s_inner, si = tok % a.s_inner;
  const int head0 = group * HG;

  int n_t = a.topk;
  int64_t dense_first = 0;
  if (a.ks) {  // dense: [ks, ke) clamped to [0, s_kv] (the CPU reference rejects other values)
    int64_t lo = a.ks[tok * a.ks_s], hi = a.ke[tok * a.ke_s];
    lo = lo < 0 ? 0 : (lo > a.num_rows ? a.num_rows : lo);
    hi = hi < lo ? lo : (hi > a.num_rows ? a.num_rows : hi);
    dense_first = lo;
    n_t = static_cast<int>(hi - lo);
  } else if (a.topk_length) {
    const int v = a.topk_length[bi * a.tl_s];
    n_t = v < 0 ? 0 : (v > a.topk ? a.topk : v);
  }
  const int nchunks = (n_t + kBK - 1) / kBK;
  // This block's chunk range [c_begin, c_end): all chunks, or one split's (may be empty).
  int c_begin = 0, c_end = nchunks;
  if (a.n_split > 1) {
    const int64_t lo = static_cast<int64_t>(split) * a.split_chunks;
    c_begin = lo < nchunks ? static_cast<int>(lo) : nchunks;
    c_end = nchunks - c_begin < a.split_chunks ? nchunks : c_begin + a.split_chunks;
  }
  const int32_t* idx_row = a.ks ? nullptr : a.indices + bi * a.i_sb + si * a.i_ss;

  // ---- Q tile (rows ≥ h_q are zero) ----
  {
    const uint8_t* qbase = a.q + (bi * a.q_sb + si * a.q_ss) * 2;
    for (int i = tid; i < HG * kRowChunks; i += C::kThreads) {
      const int r = i / kRowChunks, c = i % kRowChunks;
      uint8_t* dst = sq + swz(r, c * 8);
      const int h = head0 + r;
      if (h >= a.h_q) {
        *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
      } else {
        const uint8_t* src = qbase + (static_cast<int64_t>(h) * a.q_sh + c * 8) * 2;
        if (a.q_vec) {
          cp_async16(dst, src);
        } else {
          const uint16_t* s16 = reinterpret_cast<const uint16_t*>(src);
          uint16_t* d16 = reinterpret_cast<uint16_t*>(dst);
#pragma unroll
          for (int e = 0; e < 8; ++e) d16[e] = s16[e];
        }
      }
    }
  }

  auto row_valid = [&](int slot, int64_t* idx_out) -> bool {
    if (slot >= n_t) return false;
    const int64_t idx = a.ks ? dense_first + slot : static_cast<int64_t>(idx_row[slot]);
    *idx_out = idx;
    return idx >= 0 && idx < a.num_rows;
  };
  auto row_addr = [&](int64_t idx) -> const uint8_t* {
    if (a.P == 1) return a.kv + idx * a.page_bytes;
    return a.kv + (idx / a.P) * a.page_bytes + (idx % a.P) * a.row_bytes;
  };

  // Issues the loads of chunk `ch` into buffer `buf` (bf16: KV tile; FP8: staging).
  auto issue = [&](int ch, int buf) {
    if (tid < kBK) {
      int64_t idx = 0;
      svalid[buf * kBK + tid] = row_valid(ch * kBK + tid, &idx) ? 1 : 0;
    }
    if constexpr (KV == Kv::kBf16) {
      uint8_t* tile = skv + buf * C::kKvBytes;
      for (int i = tid; i < kBK * kRowChunks; i += C::kThreads) {
        const int r = i / kRowChunks, c = i % kRowChunks;
        uint8_t* dst = tile + swz(r, c * 8);
        int64_t idx = 0;
        if (!row_valid(ch * kBK + r, &idx)) {
          *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
          continue;
        }
        const uint8_t* src = row_addr(idx) + c * 16;
        if (a.kv_vec) {
          cp_async16(dst, src);
        } else {
          const uint16_t* s16 = reinterpret_cast<const uint16_t*>(src);
          uint16_t* d16 = reinterpret_cast<uint16_t*>(dst);
#pragma unroll
          for (int e = 0; e < 8; ++e) d16[e] = s16[e];
        }
      }
    } else {
      uint8_t* stage = sstage + buf * C::kStageBytes;
      for (int i = tid; i < kBK * kFp8RowChunks; i += C::kThreads) {
        const int r = i / kFp8RowChunks, c = i % kFp8RowChunks;
        int64_t idx = 0;
        if (!row_valid(ch * kBK + r, &idx)) continue;  // dequantized as zeros
        uint8_t* dst = stage + r * kFp8Row + c * 16;
        const uint8_t* src = row_addr(idx) + c * 16;
        if (a.kv_vec) {
          cp_async16(dst, src);
        } else {
#pragma unroll
          for (int e = 0; e < 16; ++e) dst[e] = src[e];
        }
      }
    }
    cp_async_commit();
  };

  float o[C::kNtO][4];
#pragma unroll
  for (int j = 0; j < C::kNtO; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m_run[2] = {kMaxInit, kMaxInit};
  float l_part[2] = {0.0f, 0.0f};

  if (c_begin < c_end) issue(c_begin, 0);
  else cp_async_commit();

  const int qrow = rg * 16;
  for (int ch = c_begin; ch < c_end; ++ch) {
    const int buf = (ch - c_begin) & 1;
    cp_async_wait_all();
    __syncthreads();  // chunk ch landed (and Q); every warp is done with chunk ch − 1
    if (ch + 1 < c_end) issue(ch + 1, buf ^ 1);
    const uint8_t* tile;
    if constexpr (KV == Kv::kFp8) {
      const uint8_t* stage = sstage + buf * C::kStageBytes;
      for (int i = tid; i < kBK * kRowChunks; i += C::kThreads) {
        const int r = i / kRowChunks, c = i % kRowChunks;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (svalid[buf * kBK + r]) {
          const uint8_t* row = stage + r * kFp8Row;
          if (c < kDV / 8) {
            const uint2 codes = *reinterpret_cast<const uint2*>(row + c * 8);
            const float scale = *reinterpret_cast<const float*>(row + kDV + (c / 16) * 4);
            const uint32_t w[2] = {codes.x, codes.y};
            uint32_t outw[4];
#pragma unroll
            for (int k = 0; k < 4; ++k) {
              const uint32_t word = w[k / 2];
              const int sh = (k & 1) * 16;
              const float lo = __fmul_rn(e4m3_to_float(static_cast<uint8_t>(word >> sh)), scale);
              const float hi = __fmul_rn(e4m3_to_float(static_cast<uint8_t>(word >> (sh + 8))), scale);
              outw[k] = pack_bf16(lo, hi);
            }
            v = make_uint4(outw[0], outw[1], outw[2], outw[3]);
          } else {
            v = *reinterpret_cast<const uint4*>(row + kDV + 16 + (c - kDV / 8) * 16);
          }
        }
        *reinterpret_cast<uint4*>(skv + swz(r, c * 8)) = v;
      }
      __syncthreads();
      tile = skv;
    } else {
      tile = skv + buf * C::kKvBytes;
    }
    const int* valid = svalid + buf * kBK;

    // ---- S = Q·Kᵀ: 16 heads × kNtS·8 keys per warp ----
    float s[C::kNtS][4];
#pragma unroll
    for (int j = 0; j < C::kNtS; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
    const int key0 = cg * (C::kNtS * 8);
#pragma unroll 4
    for (int kk = 0; kk < kD / 16; ++kk) {
      uint32_t af[4];
      ldm_x4(af, sq + swz(qrow + (lane & 15), kk * 16 + (lane >> 4) * 8));
#pragma unroll
      for (int j = 0; j < C::kNtS; ++j) {
        uint32_t bf[2];
        ldm_x2(bf, tile + swz(key0 + j * 8 + (lane & 7), kk * 16 + ((lane >> 3) & 1) * 8));
        mma_bf16(s[j], af, bf[0], bf[1]);
      }
    }
    // ---- scale, mask by selection, row max ----
    float mx[2] = {kMaxInit, kMaxInit};
#pragma unroll
    for (int j = 0; j < C::kNtS; ++j) {
      const int k = key0 + j * 8 + (lane & 3) * 2;
      const bool v0 = valid[k] != 0, v1 = valid[k + 1] != 0;
      s[j][0] = v0 ? s[j][0] * a.scale_log2 : -INFINITY;
      s[j][1] = v1 ? s[j][1] * a.scale_log2 : -INFINITY;
      s[j][2] = v0 ? s[j][2] * a.scale_log2 : -INFINITY;
      s[j][3] = v1 ? s[j][3] * a.scale_log2 : -INFINITY;
      mx[0] = fmaxf(mx[0], fmaxf(s[j][0], s[j][1]));
      mx[1] = fmaxf(mx[1], fmaxf(s[j][2], s[j][3]));
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
    }
    const int r0 = qrow + (lane >> 2), r1 = r0 + 8;
    if (COLW > 1) {
      if ((lane & 3) == 0) {
        smax[cg * HG + r0] = mx[0];
        smax[cg * HG + r1] = mx[1];
      }
      __syncthreads();
#pragma unroll
      for (int w = 0; w < COLW; ++w) {
        mx[0] = fmaxf(mx[0], smax[w * HG + r0]);
        mx[1] = fmaxf(mx[1], smax[w * HG + r1]);
      }
    }
    float alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float m_new = fmaxf(m_run[r], mx[r]);
      alpha[r] = exp2f(m_run[r] - m_new);
      m_run[r] = m_new;
    }
    // ---- P = exp2(s − m) (fp32 sums; bf16 for the PV product) ----
    float ls[2] = {0.0f, 0.0f};
#pragma unroll
    for (int j = 0; j < C::kNtS; ++j) {
      const float p0 = exp2f(s[j][0] - m_run[0]), p1 = exp2f(s[j][1] - m_run[0]);
      const float p2 = exp2f(s[j][2] - m_run[1]), p3 = exp2f(s[j][3] - m_run[1]);
      ls[0] += p0 + p1;
      ls[1] += p2 + p3;
      const int k = key0 + j * 8 + (lane & 3) * 2;
      *reinterpret_cast<uint32_t*>(sp + r0 * kPPitch + k) = pack_bf16(p0, p1);
      *reinterpret_cast<uint32_t*>(sp + r1 * kPPitch + k) = pack_bf16(p2, p3);
    }
    l_part[0] = l_part[0] * alpha[0] + ls[0];
    l_part[1] = l_part[1] * alpha[1] + ls[1];
#pragma unroll
    for (int j = 0; j < C::kNtO; ++j) {
      o[j][0] *= alpha[0];
      o[j][1] *= alpha[0];
      o[j][2] *= alpha[1];
      o[j][3] *= alpha[1];
    }
    __syncthreads();  // P complete (all column groups)
    // ---- O += P·V: 16 heads × kNtO·8 columns per warp ----
    const int col0 = cg * (C::kNtO * 8);
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) {
      uint32_t af[4];
      ldm_x4(af, sp + (qrow + (lane & 15)) * kPPitch + kk * 16 + (lane >> 4) * 8);
#pragma unroll
      for (int j = 0; j < C::kNtO; j += 2) {
        uint32_t bf[4];
        ldm_x4_t(bf, tile + swz(kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, col0 + j * 8 + (lane >> 4) * 8));
        mma_bf16(o[j], af, bf[0], bf[1]);
        mma_bf16(o[j + 1], af, bf[2], bf[3]);
      }
    }
  }
  cp_async_wait_all();

  // ---- epilogue: row sums over column groups, normalize, store ----
  float l[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l_part[r] += __shfl_xor_sync(0xffffffffu, l_part[r], 1);
    l_part[r] += __shfl_xor_sync(0xffffffffu, l_part[r], 2);
  }
  const int r0 = qrow + (lane >> 2), r1 = r0 + 8;
  if (COLW > 1) {
    __syncthreads();
    if ((lane & 3) == 0) {
      ssum[cg * HG + r0] = l_part[0];
      ssum[cg * HG + r1] = l_part[1];
    }
    __syncthreads();
    l[0] = l[1] = 0.0f;
#pragma unroll
    for (int w = 0; w < COLW; ++w) {
      l[0] += ssum[w * HG + r0];
      l[1] += ssum[w * HG + r1];
    }
  } else {
    l[0] = l_part[0];
    l[1] = l_part[1];
  }
  const int col0 = cg * (C::kNtO * 8) + (lane & 3) * 2;
  if (a.n_split > 1) {  // split partial: raw O, m, l; combine_kernel finishes the row
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int h = head0 + (r ? r1 : r0);
      if (h >= a.h_q) continue;
      const int64_t prow = (tok * a.h_q + h) * a.n_split + split;
      float* po = a.part_o + prow * kDV + col0;
#pragma unroll
      for (int j = 0; j < C::kNtO; ++j)
        *reinterpret_cast<float2*>(po + j * 8) = make_float2(o[j][2 * r], o[j][2 * r + 1]);
      if (cg == 0 && (lane & 3) == 0) {
        a.part_ml[prow * 2] = m_run[r];
        a.part_ml[prow * 2 + 1] = l[r];
      }
    }
    return;
  }
  const int64_t ob = bi * a.o_sb + si * a.o_ss;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int h = head0 + (r ? r1 : r0);
    if (h >= a.h_q) continue;
    const bool empty = !(l[r] > 0.0f);
    float lse2 = INFINITY, mlog = -INFINITY, mul = 0.0f;
    if (!empty) {
      lse2 = m_run[r] + log2f(l[r]);
      mlog = m_run[r] * kLn2;
      mul = 1.0f / l[r];
      if (a.sink) {
        const float denom = 1.0f + expf(a.sink[h * a.sink_s] - lse2 * kLn2);
        mul = mul / denom;
      }
    }
    const int64_t orow = ob + h * a.o_sh;
#pragma unroll
    for (int j = 0; j < C::kNtO; ++j) {
      const float v0 = empty ? 0.0f : o[j][2 * r] * mul;
      const float v1 = empty ? 0.0f : o[j][2 * r + 1] * mul;
      const int64_t off = orow + col0 + j * 8;
      if (a.out_f32) {
        float* dst = static_cast<float*>(a.out) + off;
        if (a.out_vec) {
          *reinterpret_cast<float2*>(dst) = make_float2(v0, v1);
        } else {
          dst[0] = v0;
          dst[1] = v1;
        }
      } else {
        __nv_bfloat16* dst = static_cast<__nv_bfloat16*>(a.out) + off;
        if (a.out_vec) {
          *reinterpret_cast<uint32_t*>(dst) = pack_bf16(v0, v1);
        } else {
          dst[0] = __float2bfloat16_rn(v0);
          dst[1] = __float2bfloat16_rn(v1);
        }
      }
    }
    if (cg == 0 && (lane & 3) == 0) {
      a.lse[bi * a.l_sb + si * a.l_ss + h * a.l_sh] = empty ? INFINITY : (a.lse_base2 ? lse2 : lse2 * kLn2);
      if (a.max_logits) a.max_logits[bi * a.m_sb + h * a.m_sh] = mlog;
    }
  }
}

// Merges the n_split partials of one (token, head) row per block; thread t owns columns 4t..4t+3.
// Fixed split order and the unsplit kernel's epilogue (empty row, sink, lse base, max_logits).
constexpr int kCombineThreads = kDV / 4;

__global__ void __launch_bounds__(kCombineThreads) combine_kernel(const __grid_constant__ AttnArgs a) {
  const int64_t row = blockIdx.x;  // tok·h_q + h
  const int64_t tok = row / a.h_q;
  const int h = static_cast<int>(row % a.h_q);
  const int64_t bi = tok / a.s_inner, si = tok % a.s_inner;
  const int ns = a.n_split;
  const float* ml = a.part_ml + row * ns * 2;
  float M = kMaxInit;
  for (int s = 0; s < ns; ++s) M = fmaxf(M, ml[2 * s]);
  float L = 0.0f;
  for (int s = 0; s < ns; ++s) L += exp2f(ml[2 * s] - M) * ml[2 * s + 1];
  const int col = threadIdx.x * 4;
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  const float* po = a.part_o + row * ns * kDV + col;
  for (int s = 0; s < ns; ++s) {
    const float w = exp2f(ml[2 * s] - M);
    const float4 v = *reinterpret_cast<const float4*>(po + static_cast<int64_t>(s) * kDV);
    acc[0] += w * v.x;
    acc[1] += w * v.y;
    acc[2] += w * v.z;
    acc[3] += w * v.w;
  }
  const bool empty = !(L > 0.0f);
  float lse2 = INFINITY, mlog = -INFINITY, mul = 0.0f;
  if (!empty) {
    lse2 = M + log2f(L);
    mlog = M * kLn2;
    mul = 1.0f / L;
    if (a.sink) {
      const float denom = 1.0f + expf(a.sink[h * a.sink_s] - lse2 * kLn2);
      mul = mul / denom;
    }
  }
  float v[4];
#pragma unroll
  for (int e = 0; e < 4; ++e) v[e] = empty ? 0.0f : acc[e] * mul;
  const int64_t off = bi * a.o_sb + si * a.o_ss + h * a.o_sh + col;
  if (a.out_f32) {
    float* dst = static_cast<float*>(a.out) + off;
    if (a.out_vec) {
      *reinterpret_cast<float2*>(dst) = make_float2(v[0], v[1]);
      *reinterpret_cast<float2*>(dst + 2) = make_float2(v[2], v[3]);
    } else {
#pragma unroll
      for (int e = 0; e < 4; ++e) dst[e] = v[e];
    }
  } else {
    __nv_bfloat16* dst = static_cast<__nv_bfloat16*>(a.out) + off;
    if (a.out_vec) {
      *reinterpret_cast<uint32_t*>(dst) = pack_bf16(v[0], v[1]);
      *reinterpret_cast<uint32_t*>(dst + 2) = pack_bf16(v[2], v[3]);
    } else {
#pragma unroll
      for (int e = 0; e < 4; ++e) dst[e] = __float2bfloat16_rn(v[e]);
    }
  }
  if (threadIdx.x == 0) {
    a.lse[bi * a.l_sb + si * a.l_ss + h * a.l_sh] = empty ? INFINITY : (a.lse_base2 ? lse2 : lse2 * kLn2);
    if (a.max_logits) a.max_logits[bi * a.m_sb + h * a.m_sh] = mlog;
  }
}

template <int ROWW, int COLW, Kv KV>
Status launch(const char* op, const AttnArgs& a, Stream stream) {
  using C = Cfg<ROWW, COLW, KV>;
  auto kernel = sparse_mla_kernel<ROWW, COLW, KV>;
  static cuda::OncePerDevice attributes;
  const cudaError_t e =
      attributes.run([&] { return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmem); });
  if (e != cudaSuccess)
    return Status(StatusCode::kCudaError, std::string(op) + ": cudaFuncSetAttribute failed: " + cudaGetErrorString(e));
  const int64_t blocks = a.tokens * a.groups * a.n_split;
  kernel<<<static_cast<unsigned>(blocks), C::kThreads, C::kSmem, static_cast<cudaStream_t>(stream)>>>(a);
  Status s = cuda::launch_status(op, "sparse_mla_kernel");
  if (!s.ok() || a.n_split <= 1) return s;
  combine_kernel<<<static_cast<unsigned>(a.tokens * a.h_q), kCombineThreads, 0, static_cast<cudaStream_t>(stream)>>>(a);
  return cuda::launch_status(op, "combine_kernel");
}

// HG = 64 when it is at least half used, else 16.
bool wide_groups(int h_q) { return h_q > 32; }

// `a.n_split`, `split_chunks` and the partial pointers are set by the caller (1 / null: no split).
Status dispatch(const char* op, AttnArgs a, bool fp8, Stream stream) {
  const int hg = wide_groups(a.h_q) ? 64 : 16;
  a.groups = (a.h_q + hg - 1) / hg;
  if (a.n_split < 1) a.n_split = 1;
  if (a.tokens == 0 || a.h_q == 0) return Status();
  if (hg == 64)
    return fp8 ? launch<4, 2, Kv::kFp8>(op, a, stream) : launch<4, 2, Kv::kBf16>(op, a, stream);
  return fp8 ? launch<1, 4, Kv::kFp8>(op, a, stream) : launch<1, 4, Kv::kBf16>(op, a, stream);
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Two adjacent out elements can be stored as one 4-byte (bf16) / 8-byte (f32) word.
bool out_pairs(const TensorView& out) {
  const uintptr_t bytes = out.dtype == DType::kF32 ? 8 : 4;
  if ((reinterpret_cast<uintptr_t>(out.data) & (bytes - 1)) != 0) return false;
  for (int i = 0; i + 1 < out.rank; ++i)
    if (out.stride[i] % 2 != 0) return false;
  return true;
}

Status check_grid(const char* op, int64_t tokens, int h_q) {
  const int hg = wide_groups(h_q) ? 64 : 16;
  const int64_t groups = (h_q + hg - 1) / hg;
  if (tokens > 0 && groups > 0 && tokens > static_cast<int64_t>(INT_MAX) / groups)
    return Status(StatusCode::kUnsupportedShape,
                  std::string(op) + ": " + std::to_string(tokens) + " query tokens × " + std::to_string(groups) +
                      " head groups exceed the CUDA grid limit (2^31 − 1 blocks)");
  return Status();
}

}  // namespace

// ---- OP-SMLA-FWD and dense MLA forward --------------------------------------------------------------

namespace {

template <typename P>
Status supports_prefill(const char* op, const P& p) {
  if (p.q.dtype != DType::kBF16 || p.kv.dtype != DType::kBF16)
    return Status(StatusCode::kUnsupportedDtype,
                  std::string(op) + ": the CUDA path takes bf16 q and kv (q.dtype = " + dtype_name(p.q.dtype) +
                      ", kv.dtype = " + dtype_name(p.kv.dtype) + "); pass host pointers for the f32 CPU reference");
  if (p.q.shape[2] != kD || p.out.shape[2] != kDV)
    return Status(StatusCode::kUnsupportedShape,
                  std::string(op) + ": the CUDA path takes d_qk = 576 and d_v = 512 (q.shape[2] = " +
                      std::to_string(p.q.shape[2]) + ", out.shape[2] = " + std::to_string(p.out.shape[2]) + ")");
  if (p.q.shape[1] > INT_MAX || p.kv.shape[0] > INT_MAX)
    return Status(StatusCode::kUnsupportedShape, std::string(op) + ": h_q and s_kv must be below 2^31");
  if (p.out.dtype != DType::kBF16 && p.out.dtype != DType::kF32)
    return Status(StatusCode::kUnsupportedDtype, std::string(op) + ": out.dtype must be bf16 or f32");
  return check_grid(op, p.q.shape[0], static_cast<int>(p.q.shape[1]));
}

// The fields shared by the sparse and dense prefill ops (q, kv, out, lse, max_logits, scale).
template <typename P>
AttnArgs prefill_args(const P& p) {
  AttnArgs a{};
  a.n_split = 1;
  a.q = static_cast<const uint8_t*>(p.q.data);
  a.kv = static_cast<const uint8_t*>(p.kv.data);
  a.out = p.out.data;
  a.lse = static_cast<float*>(p.lse.data);
  a.max_logits = p.max_logits.present() ? static_cast<float*>(p.max_logits.data) : nullptr;
  a.tokens = p.q.shape[0];
  a.s_inner = 1;
  a.q_sb = p.q.stride[0], a.q_ss = 0, a.q_sh = p.q.stride[1];
  a.o_sb = p.out.stride[0], a.o_ss = 0, a.o_sh = p.out.stride[1];
  a.l_sb = p.lse.stride[0], a.l_ss = 0, a.l_sh = p.lse.stride[1];
  a.m_sb = a.max_logits ? p.max_logits.stride[0] : 0;
  a.m_sh = a.max_logits ? p.max_logits.stride[1] : 0;
  a.P = 1;
  a.page_bytes = p.kv.stride[0] * 2;
  a.row_bytes = 0;
  a.num_rows = p.kv.shape[0];
  a.h_q = static_cast<int>(p.q.shape[1]);
  a.scale_log2 = p.sm_scale * kLog2e;
  a.out_f32 = p.out.dtype == DType::kF32;
  a.lse_base2 = p.lse_base == LseBase::kBase2;
  a.q_vec = aligned16(p.q.data) && (p.q.stride[0] * 2) % 16 == 0 && (p.q.stride[1] * 2) % 16 == 0;
  a.kv_vec = aligned16(p.kv.data) && a.page_bytes % 16 == 0;
  a.out_vec = out_pairs(p.out);
  return a;
}

}  // namespace

Status supports(const SparseMlaFwdParams& p) {
  constexpr const char* op = "sparse_mla_fwd";
  if (p.indices.shape[1] > INT_MAX)
    return Status(StatusCode::kUnsupportedShape, std::string(op) + ": topk must be below 2^31");
  return supports_prefill(op, p);
}
size_t workspace_size(const SparseMlaFwdParams&) { return 0; }

Status run(const SparseMlaFwdParams& p, void*, size_t, Stream stream) {
  Status s = cuda_backend::supports(p);
  if (!s.ok()) return s;
  if (sparse_mla_wgmma_applies(p)) return run_sparse_mla_wgmma(p, stream);  // sm_90a fast path
  AttnArgs a = prefill_args(p);
  a.indices = static_cast<const int32_t*>(p.indices.data);
  a.i_sb = p.indices.stride[0], a.i_ss = 0;
  a.topk_length = p.topk_length.present() ? static_cast<const int32_t*>(p.topk_length.data) : nullptr;
  a.tl_s = p.topk_length.present() ? p.topk_length.stride[0] : 0;
  a.sink = p.attn_sink.present() ? static_cast<const float*>(p.attn_sink.data) : nullptr;
  a.sink_s = p.attn_sink.present() ? p.attn_sink.stride[0] : 0;
  a.topk = static_cast<int>(p.indices.shape[1]);
  return dispatch("sparse_mla_fwd", a, false, stream);
}

Status supports(const DenseMlaFwdParams& p) { return supports_prefill("dense_mla_fwd", p); }
size_t workspace_size(const DenseMlaFwdParams&) { return 0; }

Status run(const DenseMlaFwdParams& p, void*, size_t, Stream stream) {
  Status s = cuda_backend::supports(p);
  if (!s.ok()) return s;
  AttnArgs a = prefill_args(p);
  a.ks = static_cast<const int32_t*>(p.ks.data);
  a.ke = static_cast<const int32_t*>(p.ke.data);
  a.ks_s = p.ks.stride[0];
  a.ke_s = p.ke.stride[0];
  a.topk = static_cast<int>(p.kv.shape[0]);
  return dispatch("dense_mla_fwd", a, false, stream);
}

// ---- OP-SMLA-DEC ----------------------------------------------------------------------------------

namespace {

constexpr int kMinSplitChunks = 4;  // ≥ 128 keys per split: amortizes the Q tile load and the partial

// The split-KV decision for decode. num_splits = 1: none. num_splits = n ≥ 2: want n (a function of
// topk and n only, so batch-invariant). num_splits = 0 (automatic; depends on the batch and the SM
// count): base = b·s_q·groups blocks; with one resident block per SM (HG = 64), a grid below one
// wave leaves SMs idle. Split only when base ≤ sm_count / 2; then want the most splits that still
// fit in one wave (⌊sm_count / base⌋), at most ⌈chunks / 4⌉ so that every split has ≥ 4 key chunks.
// Either way (deal) the chunks are dealt out evenly (split_chunks = ⌈chunks / n⌉, n ≤ chunks) and
// n_split is recomputed so that no split is entirely past topk. Rows with a shorter topk_length
// just leave their last splits empty.
struct SplitPlan {
  int n_split = 1, split_chunks = 0;
  size_t o_bytes = 0, ml_bytes = 0;  // each rounded up to 256 bytes
  size_t bytes() const { return o_bytes + ml_bytes; }
};

size_t round256(size_t n) { return (n + 255) / 256 * 256; }

// sm_count is read only for num_splits = 0 (automatic); with 0 there, automatic means no split.
SplitPlan split_plan(const SparseMlaDecodeParams& p, int sm_count) {
  SplitPlan plan;
  if (p.num_splits == 1 || p.num_splits < 0 || p.q.rank != 4 || p.indices.rank != 3) return plan;
  const int64_t tokens = p.q.shape[0] * p.q.shape[1], h_q = p.q.shape[2], topk = p.indices.shape[2];
  if (tokens <= 0 || h_q <= 0 || h_q > INT_MAX || topk <= 0 || topk > INT_MAX) return plan;
  const int64_t chunks = (topk + kBK - 1) / kBK;
  int64_t n = p.num_splits;
  if (n == 0) {
    if (sm_count <= 0) return plan;
    const int hg = wide_groups(static_cast<int>(h_q)) ? 64 : 16;
    const int64_t base = tokens * ((h_q + hg - 1) / hg);
    if (base > sm_count / 2) return plan;
    n = sm_count / base;
    const int64_t n_max = (chunks + kMinSplitChunks - 1) / kMinSplitChunks;
    if (n > n_max) n = n_max;
  }
  // deal: at most one split per chunk, equal chunk counts, none wholly past topk.
  if (n > chunks) n = chunks;
  if (n < 2) return plan;
  const int64_t per = (chunks + n - 1) / n;
  n = (chunks + per - 1) / per;
  if (n < 2) return plan;
  plan.n_split = static_cast<int>(n);
  plan.split_chunks = static_cast<int>(per);
  // supports() bounds tokens·h_q·n (explicit n); automatic n keeps it below a wave's rows.
  const size_t rows = static_cast<size_t>(tokens * h_q) * static_cast<size_t>(n);
  plan.o_bytes = round256(rows * kDV * sizeof(float));
  plan.ml_bytes = round256(rows * 2 * sizeof(float));
  return plan;
}

}  // namespace

Status supports(const SparseMlaDecodeParams& p) {
  constexpr const char* op = "sparse_mla_decode";
  if (p.indices.shape[2] > INT_MAX || p.q.shape[2] > INT_MAX)
    return Status(StatusCode::kUnsupportedShape, std::string(op) + ": topk and h_q must be below 2^31");
  if (p.out.dtype != DType::kBF16 && p.out.dtype != DType::kF32)
    return Status(StatusCode::kUnsupportedDtype, std::string(op) + ": out.dtype must be bf16 or f32");
  if (p.q.shape[0] > 0 && p.q.shape[1] > INT64_MAX / p.q.shape[0])
    return Status(StatusCode::kUnsupportedShape, std::string(op) + ": b·s_q overflows");
  const int64_t tokens = p.q.shape[0] * p.q.shape[1];
  const Status s = check_grid(op, tokens, static_cast<int>(p.q.shape[2]));
  if (!s.ok()) return s;
  // An explicit num_splits multiplies the grid and sizes the partials (automatic splits only grids
  // under half a wave). Limits: (tokens·groups)·n blocks and tokens·h_q combine blocks below 2^31;
  // tokens·h_q·n partial rows of 2 KiB within int64 bytes.
  const SplitPlan plan = split_plan(p, 0);
  if (plan.n_split > 1) {
    const int64_t h_q = p.q.shape[2], hg = wide_groups(static_cast<int>(h_q)) ? 64 : 16;
    const int64_t blocks = tokens * ((h_q + hg - 1) / hg);
    if (blocks > INT_MAX / plan.n_split || tokens > INT_MAX / h_q ||
        tokens * h_q > (INT64_MAX / 4096) / plan.n_split)
      return Status(StatusCode::kUnsupportedShape,
                    std::string(op) + ": num_splits = " + std::to_string(p.num_splits) + " (" +
                        std::to_string(plan.n_split) + " splits) over " + std::to_string(tokens) +
                        " query tokens exceeds the CUDA grid limit (2^31 − 1 blocks) or the workspace size range");
  }
  return Status();
}

size_t workspace_size(const SparseMlaDecodeParams& p) {
  if (!cuda_backend::supports(p).ok()) return 0;
  cuda::DeviceInfo info;
  if (!cuda::device_info("sparse_mla_decode", &info).ok()) return 0;  // run() reports the error
  return split_plan(p, info.sm_count).bytes();
}

Status run(const SparseMlaDecodeParams& p, void* workspace, size_t workspace_bytes, Stream stream) {
  constexpr const char* op = "sparse_mla_decode";
  Status s = cuda_backend::supports(p);
  if (!s.ok()) return s;
  cuda::DeviceInfo info;
  const Status si = cuda::device_info(op, &info);
  if (!si.ok()) return si;
  const SplitPlan plan = split_plan(p, info.sm_count);
  if (workspace_bytes < plan.bytes() || (plan.bytes() > 0 && workspace == nullptr))
    return Status(StatusCode::kWorkspaceTooSmall, std::string(op) + ": workspace_bytes = " +
                                                      std::to_string(workspace_bytes) + " is smaller than workspace_size() = " +
                                                      std::to_string(plan.bytes()));
  const bool fp8 = p.cache.dtype == DType::kU8;
  const int64_t esz = fp8 ? 1 : 2;
  AttnArgs a{};
  a.q = static_cast<const uint8_t*>(p.q.data);
  a.kv = static_cast<const uint8_t*>(p.cache.data);
  a.indices = static_cast<const int32_t*>(p.indices.data);
  a.topk_length = p.topk_length.present() ? static_cast<const int32_t*>(p.topk_length.data) : nullptr;
  a.tl_s = p.topk_length.present() ? p.topk_length.stride[0] : 0;
  a.sink = p.attn_sink.present() ? static_cast<const float*>(p.attn_sink.data) : nullptr;
  a.sink_s = p.attn_sink.present() ? p.attn_sink.stride[0] : 0;
  a.out = p.out.data;
  a.lse = static_cast<float*>(p.lse.data);
  a.max_logits = nullptr;
  a.tokens = p.q.shape[0] * p.q.shape[1];
  a.s_inner = p.q.shape[1] > 0 ? p.q.shape[1] : 1;
  a.q_sb = p.q.stride[0], a.q_ss = p.q.stride[1], a.q_sh = p.q.stride[2];
  a.i_sb = p.indices.stride[0], a.i_ss = p.indices.stride[1];
  a.o_sb = p.out.stride[0], a.o_ss = p.out.stride[1], a.o_sh = p.out.stride[2];
  a.l_sb = p.lse.stride[0], a.l_ss = p.lse.stride[1], a.l_sh = p.lse.stride[2];
  a.P = p.cache.shape[1];
  a.page_bytes = p.cache.stride[0] * esz;
  a.row_bytes = p.cache.stride[1] * esz;
  if (a.P == 1) a.row_bytes = 0;
  a.num_rows = p.cache.shape[0] * p.cache.shape[1];
  a.topk = static_cast<int>(p.indices.shape[2]);
  a.h_q = static_cast<int>(p.q.shape[2]);
  a.scale_log2 = p.sm_scale * kLog2e;
  a.out_f32 = p.out.dtype == DType::kF32;
  a.lse_base2 = p.lse_base == LseBase::kBase2;
  a.q_vec = aligned16(p.q.data) && (p.q.stride[0] * 2) % 16 == 0 && (p.q.stride[1] * 2) % 16 == 0 &&
            (p.q.stride[2] * 2) % 16 == 0;
  a.kv_vec = aligned16(p.cache.data) && a.page_bytes % 16 == 0 && a.row_bytes % 16 == 0;
  a.out_vec = out_pairs(p.out);
  a.n_split = plan.n_split;
  a.split_chunks = plan.split_chunks;
  if (plan.n_split > 1) {
    a.part_o = static_cast<float*>(workspace);
    a.part_ml = reinterpret_cast<float*>(static_cast<uint8_t*>(workspace) + plan.o_bytes);
  }
  // sm_90a wgmma kernel (h_q % 64 == 0): same partial format, so splits reuse combine_kernel.
  if (sparse_mla_wgmma_decode_applies(p)) {
    const Status ws = run_sparse_mla_wgmma_decode(p, plan.n_split, plan.split_chunks, a.part_o, a.part_ml, stream);
    if (!ws.ok() || plan.n_split <= 1 || a.tokens == 0) return ws;
    combine_kernel<<<static_cast<unsigned>(a.tokens * a.h_q), kCombineThreads, 0, static_cast<cudaStream_t>(stream)>>>(a);
    return cuda::launch_status(op, "combine_kernel");
  }
  return dispatch(op, a, fp8, stream);
}

}  // namespace dsa::cuda_backend
