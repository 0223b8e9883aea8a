// CUDA OP-SMLA-FWD (sparse MLA prefill, SPEC §6.2–6.3, §12.1) and OP-SMLA-DEC (decode from the
// paged FP8 / bf16 caches, SPEC §6.4, §7.1) on sm_90a warpgroup MMA.
//
// Prefill: taken for bf16 q / kv when h_q is a multiple of 64, q rows / heads and kv rows are
// 16-byte aligned (last dims contiguous). Decode: the same for q and the cache rows (656-byte FP8
// or 1152-byte bf16), any num_splits (split partials in sparse_mla.cu's format; its combine_kernel
// merges them). Both need cc 9.0 and the sm_90a image in this binary; everything else stays on
// sparse_mla.cu's mma.sync kernel. Kill switch (both ops): DSA_SPARSE_MLA_WGMMA=0 (read once);
// dsa::sparse_mla_wgmma_for_testing(mode) overrides it in tests (−1 env, 0 off, 1 on).
//
// One 256-thread CTA per (query token, group of 64 heads): two warpgroups, both consumers and
// both loaders. Per tile of 64 selected keys (double-buffered, gathered by 16-byte cp.async while
// the previous tile computes; an invalid slot is never read, its row is zeroed and its score −∞):
//   S_w = Q[64 × 576] · K[32 keys of half w]ᵀ   wgmma m64n32k16 × 36, warpgroup w = key half w
//   row max of the tile exchanged through shared memory (both groups then hold the same bits),
//   P = exp2(S·τ·log2e − m) rounded to bf16 into shared memory (fp32 row sums stay per group),
//   O_w = α·O_w + P[64 × 64] · V[64 keys × 256 columns of half w]   wgmma m64n256k16 × 4.
// The online softmax is the mma.sync kernel's (base 2, running max from a finite −1e30, row sums
// of the two halves added in fixed order at the end), so results agree with it within rounding.
// Shared operands use the no-swizzle core-matrix layout (8 rows × 16 bytes contiguous = 128 B):
// a 576-wide row set (Q, a key tile) stores core matrix (row group r/8, 16-byte chunk c) at
// (r/8)·9216 + c·128, so a key tile is K-major B for S (LBO 128 = next chunk, SBO 9216 = next 8
// keys) and, read transposed (tnspB = 1), MN-major B for P·V: the same 8 keys × 8 columns blocks,
// SBO 128 = next 8 columns, LBO 9216 = next 8 keys. P [64 heads × 64 keys]: K-major, SBO 1024.
// Three CTA barriers per 64 keys (tile landed / row maxima / P written). No atomics, fixed order:
// bitwise reproducible, and a token's results do not depend on the other tokens.
// Decode differs only in the gather (template kSrc): a slot is a physical cache row (block
// idx / P, offset idx % P). bf16 rows go straight into the key tile as in prefill. FP8 rows: the
// raw 656 bytes go by cp.async into one staging tile (tile t + 1's copies run during tile t's
// MMAs); at the top of tile t each thread dequantizes its row's 16-byte chunks into the single
// bf16 key tile (bf16(e4m3 · scale), scale per 128 dims; k^R copied), one extra CTA barrier.
// Shared memory: prefill / bf16 decode q 72 KB + 2 key tiles 144 KB + P 8 KB + 1.5 KB = 230,912 B;
// FP8 decode q 72 KB + 1 key tile 72 KB + staging 41 KB + P 8 KB + 1.5 KB = 199,168 B: one CTA per
// SM. Registers (ptxas, nvcc 13): prefill 206, bf16 decode 216, FP8 decode 214; no spills.
#include "attention/sparse_mla_wgmma.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <atomic>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/cuda_common.cuh"
#include "common/sm90_ptx.cuh"
#include "dsa/version.hpp"

namespace dsa {
namespace {
std::atomic<int> g_smla_wgmma_override{-1};
}
}  // namespace dsa

namespace dsa::cuda_backend {

namespace {

constexpr int kD = 576;
constexpr int kDV = 512;
constexpr int kHeads = 64;                   // heads per CTA (wgmma M)
constexpr int kKeys = 64;                    // keys per tile
constexpr int kThreads = 256;                // two warpgroups
constexpr int kGroupBytes = kD * 2 / 16 * 128;  // 9216: 8 rows of 576 bf16 as 72 core matrices
constexpr int kTileBytes = 8 * kGroupBytes;  // 64 rows
constexpr int kFp8Row = kMlaFp8CacheBytes;  // 656: 512 e4m3 + 4 fp32 scales + 64 bf16 k^R
constexpr int kFp8Chunks = kFp8Row / 16;     // 41

// Shared memory plan. bf16 rows: two key tiles (gathered straight into the wgmma layout). FP8
// rows: one raw 656-byte staging tile (the next tile's cp.async lands there while this one
// computes) and one bf16 key tile that the CTA dequantizes into before S.
template <bool kFp8>
struct Lay {
  static constexpr int kKvBufs = kFp8 ? 1 : 2;
  static constexpr int kOffQ = 0;
  static constexpr int kOffKv = kTileBytes;
  static constexpr int kOffStage = kOffKv + kKvBufs * kTileBytes;
  static constexpr int kOffP = kOffStage + (kFp8 ? kKeys * kFp8Row : 0);
  static constexpr int kOffMax = kOffP + kHeads * kKeys * 2;  // float [2][64]: tile row max per group
  static constexpr int kOffSum = kOffMax + 2 * kHeads * 4;    // float [2][64]: final row sums per group
  static constexpr int kOffValid = kOffSum + 2 * kHeads * 4;  // int [2][64]: slot validity per buffer
  static constexpr int kSmem = kOffValid + 2 * kKeys * 4;
};
static_assert(Lay<false>::kSmem == 230912 && Lay<true>::kSmem == 199168, "shared memory plan");
constexpr int kSmemBytes = Lay<false>::kSmem;  // the larger of the two
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kMaxInit = -1e30f;

struct Args {
  // token tok → (bi, si) = (tok / s_inner, tok % s_inner); prefill: s_inner = 1, bi = tok
  const uint8_t* q;   // bf16; token (bi, si), head h at q + (bi·q_sb + si·q_ss + h·q_sh)·2
  const uint8_t* kv;  // row i at kv + (i / P)·page_bytes + (i % P)·row_bytes (P == 1: i·page_bytes)
  const int32_t* indices;      // row (bi, si) at indices + bi·i_sb + si·i_ss
  const int32_t* topk_length;  // null: topk; entry bi
  const float* sink;           // null: none
  void* out;
  float* lse;
  float* max_logits;  // null: none
  float* part_o;      // n_split > 1: [tok·h_q + h][n_split][512] un-normalized O (sparse_mla.cu's format)
  float* part_ml;     // [tok·h_q + h][n_split][2]: running max (base 2, scaled), row sum
  int64_t s_inner;
  int64_t q_sb, q_ss, q_sh, i_sb, i_ss, tl_s0, sink_s0;
  int64_t o_sb, o_ss, o_sh, l_sb, l_ss, l_sh, m_sb, m_sh;
  int64_t P, page_bytes, row_bytes, num_rows;
  int topk, groups, h_q, n_split, split_chunks;  // split_chunks: 32-slot chunks per split
  float scale_log2;
  bool out_f32, lse_base2, out_vec;
};

// D (+)= A·B, bf16 × bf16 → f32, A and B from shared memory; scale_d = 0 starts from zero.
// m64n32k16, both operands K-major (S = Q·Kᵀ).
template <int kScaleD>
__device__ __forceinline__ void wgmma_s_n32(float (&d)[16], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 "
      "{"
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15"
      "}, %16, %17, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
      : "l"(da), "l"(db), "n"(kScaleD)
      : "memory");
}

// m64n256k16, B transposed (imm-trans-b = 1: MN-major V for O += P·V).
template <int kScaleD>
__device__ __forceinline__ void wgmma_pv_n256(float (&d)[128], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 "
      "{"
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
      "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
      "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,"
      "%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79,"
      "%80,%81,%82,%83,%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95,"
      "%96,%97,%98,%99,%100,%101,%102,%103,%104,%105,%106,%107,%108,%109,%110,%111,"
      "%112,%113,%114,%115,%116,%117,%118,%119,%120,%121,%122,%123,%124,%125,%126,%127"
      "}, %128, %129, p, 1, 1, 0, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
        "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
        "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
        "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
        "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),
        "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
        "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
        "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),
        "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "l"(da), "l"(db), "n"(kScaleD)
      : "memory");
}

// The shared wgmma / cp.async / barrier wrappers (common/sm90_ptx.cuh).
using namespace dsa::cuda::sm90;
// Waits for all of this thread's cp.async groups (the literal form of sm90::cp_async_wait<0>).
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

// Shared memory descriptor, no swizzle: start >> 4 (bits 0–13), LBO >> 4 (16–29), SBO >> 4 (32–45).
// Unlike sm90::smem_desc (fixed LBO 128 / SBO 1024) LBO and SBO are arguments: the 576-wide rows
// use SBO 9216 and the transposed V read swaps them. This overload hides sm90's in this file.
__device__ __forceinline__ uint64_t smem_desc(uint32_t saddr, uint32_t lbo, uint32_t sbo) {
  return static_cast<uint64_t>((saddr & 0x3FFFFu) >> 4) | (static_cast<uint64_t>(lbo >> 4) << 16) |
         (static_cast<uint64_t>(sbo >> 4) << 32);
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// Two e4m3 codes (low byte first) → bf16x2 of (code · scale): e4m3 → f16 is exact (cvt), f16 → f32
// exact, then one fp32 multiply and round to bf16 — the same values as sparse_mla.cu's
// bf16(e4m3_to_float(c) · scale) (SPEC §7.1).
__device__ __forceinline__ uint32_t dequant2(uint32_t codes, float scale) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  uint32_t h2;
  asm("{\n.reg .b16 t;\ncvt.u16.u32 t, %1;\ncvt.rn.f16x2.e4m3x2 %0, t;\n}\n" : "=r"(h2) : "r"(codes & 0xFFFFu));
  const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&h2));
  return pack_bf16(__fmul_rn(f.x, scale), __fmul_rn(f.y, scale));
#else
  return pack_bf16(__fmul_rn(e4m3_to_float(static_cast<uint8_t>(codes)), scale),
                   __fmul_rn(e4m3_to_float(static_cast<uint8_t>(codes >> 8)), scale));
#endif
}

// The gather of each variant: prefill (bf16 rows, kv + i·page_bytes), decode from a paged bf16
// cache, decode from a paged FP8 cache.
enum Src : int { kSrcPrefill = 0, kSrcPagedBf16 = 1, kSrcPagedFp8 = 2 };

template <int kSrc>
__global__ void __launch_bounds__(kThreads, 1) sparse_mla_wgmma_kernel(const __grid_constant__ Args a) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr bool kFp8 = kSrc == kSrcPagedFp8, kPaged = kSrc != kSrcPrefill;
  using L = Lay<kFp8>;
  // Prefill: compile-time 1 (no split, bi = token), so its code is the unsplit prefill kernel's.
  const int n_split = kPaged ? a.n_split : 1;
  const int64_t s_inner = kPaged ? a.s_inner : 1;
  extern __shared__ __align__(128) uint8_t smem[];
  const uint32_t sbase = smem_addr(smem);
  float* smax = reinterpret_cast<float*>(smem + L::kOffMax);
  float* ssum = reinterpret_cast<float*>(smem + L::kOffSum);
  int* svalid = reinterpret_cast<int*>(smem + L::kOffValid);

  const int tid = threadIdx.x, wg = tid >> 7, warp = (tid & 127) >> 5, lane = tid & 31;
  const int g = lane >> 2, q4 = lane & 3;
  const unsigned block = blockIdx.x / static_cast<unsigned>(n_split);
  const int split = static_cast<int>(blockIdx.x % static_cast<unsigned>(n_split));
  const int64_t tok = block / static_cast<unsigned>(a.groups);
  const int head0 = static_cast<int>(block % static_cast<unsigned>(a.groups)) * kHeads;
  const int64_t bi = tok / s_inner, si = tok % s_inner;

  int n_t = a.topk;
  if (a.topk_length) {  // clamped to [0, topk] as in sparse_mla.cu (the CPU reference rejects others)
    const int v = a.topk_length[bi * a.tl_s0];
    n_t = v < 0 ? 0 : (v > a.topk ? a.topk : v);
  }
  // This CTA's slots [s_begin, s_end): all, or one split's whole 32-slot chunks (may be empty), as
  // sparse_mla.cu deals them out.
  int s_begin = 0, s_end = n_t;
  if (n_split > 1) {
    const int nchunks = static_cast<int>((static_cast<int64_t>(n_t) + 31) / 32);
    const int64_t lo = static_cast<int64_t>(split) * a.split_chunks;
    const int c_begin = lo < nchunks ? static_cast<int>(lo) : nchunks;
    const int c_end = nchunks - c_begin < a.split_chunks ? nchunks : c_begin + a.split_chunks;
    s_begin = c_begin * 32;
    s_end = static_cast<int64_t>(c_end) * 32 < n_t ? c_end * 32 : n_t;
    if (s_end < s_begin) s_end = s_begin;
  }
  const int ntiles = static_cast<int>((static_cast<unsigned>(s_end - s_begin) + kKeys - 1) / kKeys);
  const int32_t* idx_row = a.indices + bi * a.i_sb + si * a.i_ss;

  // Loader role: thread → row lr of a 64-row set, 16-byte chunks lc + 4j (j < 18). A warp's 8
  // lanes of one phase write 8 different rows of a core matrix (distinct bank quads); a row's 4
  // lanes read 64 contiguous bytes.
  const int lr = (tid & 7) | ((tid >> 5) << 3), lc = (tid >> 3) & 3;
  const uint32_t lofs = (lr >> 3) * kGroupBytes + lc * 128 + (lr & 7) * 16;
  {
    const uint8_t* src = a.q + (bi * a.q_sb + si * a.q_ss + static_cast<int64_t>(head0 + lr) * a.q_sh) * 2 + lc * 16;
#pragma unroll
    for (int j = 0; j < 18; ++j) cp_async16(sbase + L::kOffQ + lofs + j * 512, src + j * 64);
  }
  // The index of this thread's row in tile t (−1 past the list); loaded a tile ahead of its use.
  auto load_idx = [&](int t) -> int32_t {
    const unsigned off = static_cast<unsigned>(t) * kKeys + lr;  // no int overflow near 2^31
    return t < ntiles && off < static_cast<unsigned>(s_end - s_begin) ? idx_row[s_begin + off] : -1;
  };
  auto row_addr = [&](int64_t idx) -> const uint8_t* {
    if (!kPaged || a.P == 1) return a.kv + idx * a.page_bytes;
    return a.kv + (idx / a.P) * a.page_bytes + (idx % a.P) * a.row_bytes;
  };
  // Gathers tile t (row index idx) into buffer buf (FP8: the raw rows into the staging tile);
  // commits a group even past the end (uniform wait counts).
  auto issue = [&](int t, int buf, int32_t idx32) {
    if (t < ntiles) {
      const int64_t idx = idx32;
      const bool ok = idx >= 0 && idx < a.num_rows;
      if (lc == 0) svalid[buf * kKeys + lr] = ok ? 1 : 0;
      if constexpr (kFp8) {
        if (ok) {  // an invalid row is never read: the dequantizer writes zeros for it
          const uint8_t* src = row_addr(idx) + lc * 16;
          const uint32_t dst = sbase + L::kOffStage + lr * kFp8Row + lc * 16;
#pragma unroll
          for (int j = 0; j < (kFp8Chunks + 3) / 4; ++j)
            if (lc + 4 * j < kFp8Chunks) cp_async16(dst + j * 64, src + j * 64);
        }
      } else {
        const uint32_t dofs = L::kOffKv + buf * kTileBytes + lofs;
        if (ok) {
          const uint8_t* src = row_addr(idx) + lc * 16;
#pragma unroll
          for (int j = 0; j < 18; ++j) cp_async16(sbase + dofs + j * 512, src + j * 64);
        } else {  // zeros, so that P = 0 never meets stale (possibly NaN) bits in V
#pragma unroll
          for (int j = 0; j < 18; ++j) *reinterpret_cast<uint4*>(smem + dofs + j * 512) = make_uint4(0u, 0u, 0u, 0u);
        }
      }
    }
    cp_async_commit();
  };
  issue(0, 0, load_idx(0));  // one group with q
  int32_t idx_next = load_idx(1);

  float o[128];
#pragma unroll
  for (int i = 0; i < 128; ++i) o[i] = 0.0f;
  float m_run[2] = {kMaxInit, kMaxInit};
  float l_part[2] = {0.0f, 0.0f};
  const int row0 = warp * 16 + g;  // this thread's accumulator rows: row0, row0 + 8
  const uint64_t dq = smem_desc(sbase + L::kOffQ, 128, kGroupBytes);
  const uint64_t dp = smem_desc(sbase + L::kOffP, 128, 1024);

#pragma unroll 1
  for (int t = 0; t < ntiles; ++t) {
    const int buf = t & 1;
    cp_async_wait_all();  // tile t (and q) landed for this thread's copies
    if constexpr (!kFp8) fence_proxy_async();
    __syncthreads();      // ... for everyone; both groups are done with tile t − 1, P and smax
    if constexpr (kFp8) {
      // Dequantize row lr of the staging tile into the bf16 key tile (same core-matrix layout
      // as the bf16 loader): chunks lc + 4j, j < 16 latent (scale j / 4), j = 16, 17 k^R.
      const uint8_t* srow = smem + L::kOffStage + lr * kFp8Row;
      uint8_t* drow = smem + L::kOffKv + lofs;
      if (svalid[buf * kKeys + lr]) {
#pragma unroll
        for (int j = 0; j < 16; ++j) {
          const float sc = *reinterpret_cast<const float*>(srow + kDV + (j >> 2) * 4);
          const uint2 codes = *reinterpret_cast<const uint2*>(srow + (lc + 4 * j) * 8);
          *reinterpret_cast<uint4*>(drow + j * 512) =
              make_uint4(dequant2(codes.x, sc), dequant2(codes.x >> 16, sc), dequant2(codes.y, sc),
                         dequant2(codes.y >> 16, sc));
        }
#pragma unroll
        for (int j = 16; j < 18; ++j)
          *reinterpret_cast<uint4*>(drow + j * 512) =
              *reinterpret_cast<const uint4*>(srow + kDV + 16 + (lc + 4 * (j - 16)) * 16);
      } else {  // zeros, so that P = 0 never meets stale bits in V
#pragma unroll
        for (int j = 0; j < 18; ++j) *reinterpret_cast<uint4*>(drow + j * 512) = make_uint4(0u, 0u, 0u, 0u);
      }
      fence_proxy_async();
      __syncthreads();  // key tile complete; the staging tile is free for tile t + 1
    }
    const uint32_t tile = sbase + L::kOffKv + (kFp8 ? 0 : buf * kTileBytes);

    // ---- S = Q · Kᵀ over this group's 32 keys; the gathers of tile t + 1 go out meanwhile ----
    float s[16];
#pragma unroll
    for (int i = 0; i < 16; ++i) s[i] = 0.0f;
    const uint64_t dk = smem_desc(tile + wg * 4 * kGroupBytes, 128, kGroupBytes);
    wgmma_fence();
    wgmma_s_n32<0>(s, dq, dk);
#pragma unroll
    for (int k = 1; k < kD / 16; ++k) wgmma_s_n32<1>(s, dq + 16 * k, dk + 16 * k);  // +256 B per k16
    wgmma_commit();
    issue(t + 1, buf ^ 1, idx_next);  // buffer buf ^ 1 and its flags: untouched by S
    idx_next = load_idx(t + 2);
    wgmma_wait_all();
    fence_regs(s);

    // ---- scale, mask by selection, tile row max over both groups ----
    const int* valid = svalid + buf * kKeys;
    float mx[2] = {kMaxInit, kMaxInit};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const bool v = valid[wg * 32 + 8 * i + 2 * q4 + e] != 0;
        s[4 * i + e] = v ? s[4 * i + e] * a.scale_log2 : -INFINITY;
        s[4 * i + 2 + e] = v ? s[4 * i + 2 + e] * a.scale_log2 : -INFINITY;
        mx[0] = fmaxf(mx[0], s[4 * i + e]);
        mx[1] = fmaxf(mx[1], s[4 * i + 2 + e]);
      }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
    }
    if (q4 == 0) {
      smax[wg * kHeads + row0] = mx[0];
      smax[wg * kHeads + row0 + 8] = mx[1];
    }
    __syncthreads();
    float alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = row0 + 8 * r;
      const float m_new = fmaxf(m_run[r], fmaxf(smax[row], smax[kHeads + row]));
      alpha[r] = exp2f(m_run[r] - m_new);
      m_run[r] = m_new;
    }
    // ---- P = exp2(s − m): fp32 sums, bf16 into shared memory for P·V ----
    float ls[2] = {0.0f, 0.0f};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float p0 = exp2f(s[4 * i] - m_run[0]), p1 = exp2f(s[4 * i + 1] - m_run[0]);
      const float p2 = exp2f(s[4 * i + 2] - m_run[1]), p3 = exp2f(s[4 * i + 3] - m_run[1]);
      ls[0] += p0 + p1;
      ls[1] += p2 + p3;
      const int key = wg * 32 + 8 * i + 2 * q4;
      const int pofs = L::kOffP + (row0 >> 3) * 1024 + (key >> 3) * 128 + (row0 & 7) * 16 + (key & 7) * 2;
      *reinterpret_cast<uint32_t*>(smem + pofs) = pack_bf16(p0, p1);
      *reinterpret_cast<uint32_t*>(smem + pofs + 1024) = pack_bf16(p2, p3);  // row0 + 8
    }
    l_part[0] = l_part[0] * alpha[0] + ls[0];
    l_part[1] = l_part[1] * alpha[1] + ls[1];
    if (alpha[0] != 1.0f || alpha[1] != 1.0f) {  // × 1 is exact: skipped (the max rarely moves late)
#pragma unroll
      for (int i = 0; i < 32; ++i) {
        o[4 * i] *= alpha[0];
        o[4 * i + 1] *= alpha[0];
        o[4 * i + 2] *= alpha[1];
        o[4 * i + 3] *= alpha[1];
      }
    }
    fence_proxy_async();
    __syncthreads();  // P complete (both groups)

    // ---- O_w += P · V[:, 256·w …]: B transposed (MN-major), k16 = 2 key groups = +18432 B ----
    const uint64_t dv = smem_desc(tile + wg * (kDV / 2 / 8) * 128, kGroupBytes, 128);
    wgmma_fence();
#pragma unroll
    for (int k = 0; k < kKeys / 16; ++k)
      wgmma_pv_n256<1>(o, dp + 16 * k, dv + static_cast<uint64_t>((2 * kGroupBytes) >> 4) * k);
    wgmma_commit();
    wgmma_wait_all();
    fence_regs(o);
  }
  cp_async_wait_all();

  // ---- epilogue: row sums of both halves (fixed order), normalize, store ----
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l_part[r] += __shfl_xor_sync(0xffffffffu, l_part[r], 1);
    l_part[r] += __shfl_xor_sync(0xffffffffu, l_part[r], 2);
  }
  if (q4 == 0) {
    ssum[wg * kHeads + row0] = l_part[0];
    ssum[wg * kHeads + row0 + 8] = l_part[1];
  }
  __syncthreads();
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + 8 * r;
    const int h = head0 + row;
    const float l = ssum[row] + ssum[kHeads + row];
    if (n_split > 1) {  // split partial: raw O, m, l; sparse_mla.cu's combine_kernel finishes the row
      const int64_t prow = (tok * a.h_q + h) * n_split + split;
      float* po = a.part_o + prow * kDV + wg * (kDV / 2) + 2 * q4;
#pragma unroll
      for (int i = 0; i < 32; ++i)
        *reinterpret_cast<float2*>(po + 8 * i) = make_float2(o[4 * i + 2 * r], o[4 * i + 2 * r + 1]);
      if (wg == 0 && q4 == 0) {
        a.part_ml[prow * 2] = m_run[r];
        a.part_ml[prow * 2 + 1] = l;
      }
      continue;
    }
    const bool empty = !(l > 0.0f);
    float lse2 = INFINITY, mlog = -INFINITY, mul = 0.0f;
    if (!empty) {
      lse2 = m_run[r] + log2f(l);
      mlog = m_run[r] * kLn2;
      mul = 1.0f / l;
      if (a.sink) {
        const float denom = 1.0f + expf(a.sink[h * a.sink_s0] - lse2 * kLn2);
        mul = mul / denom;
      }
    }
    const int64_t orow = bi * a.o_sb + si * a.o_ss + h * a.o_sh + wg * (kDV / 2) + 2 * q4;
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      const float v0 = empty ? 0.0f : o[4 * i + 2 * r] * mul;
      const float v1 = empty ? 0.0f : o[4 * i + 2 * r + 1] * mul;
      const int64_t off = orow + 8 * i;
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
    if (wg == 0 && q4 == 0) {
      a.lse[bi * a.l_sb + si * a.l_ss + h * a.l_sh] = empty ? INFINITY : (a.lse_base2 ? lse2 : lse2 * kLn2);
      if (a.max_logits) a.max_logits[bi * a.m_sb + h * a.m_sh] = mlog;
    }
  }
#else
  // No sm_90a image: the host never launches this variant (see image_present()).
  __shared__ volatile int no_sm90a_marker;
  no_sm90a_marker = 0;
#endif
}

// sm_90a image present: its static shared size is 0 (the fallback has a 4-byte marker) and its
// binary version is 90.
bool image_present() {
  cudaFuncAttributes attr{};
  if (cudaFuncGetAttributes(&attr, sparse_mla_wgmma_kernel<kSrcPrefill>) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return attr.binaryVersion == 90 && attr.sharedSizeBytes == 0;
}

bool env_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("DSA_SPARSE_MLA_WGMMA");
    return !(v && std::strcmp(v, "0") == 0);
  }();
  return on;
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace

bool sparse_mla_wgmma_usable() {
  const int mode = g_smla_wgmma_override.load();
  if (mode == 0 || (mode < 0 && !env_enabled())) return false;
  cuda::DeviceInfo info;
  if (!cuda::device_info("sparse_mla_fwd", &info).ok()) return false;
  if (info.cc_major != 9 || info.cc_minor != 0 || info.max_smem_optin < kSmemBytes) return false;
  // Per device: 0 unknown, 1 present, 2 absent.
  static std::atomic<int> present[64];
  if (info.device < 0 || info.device >= 64) return false;
  int p = present[info.device].load();
  if (p == 0) {
    p = image_present() ? 1 : 2;
    present[info.device].store(p);
  }
  return p == 1;
}

bool sparse_mla_wgmma_applies(const SparseMlaFwdParams& p) {
  if (p.q.dtype != DType::kBF16 || p.kv.dtype != DType::kBF16) return false;
  if (p.q.rank != 3 || p.kv.rank != 2 || p.indices.rank != 2 || p.out.rank != 3 || p.lse.rank != 2) return false;
  const int64_t s_q = p.q.shape[0], h = p.q.shape[1];
  if (s_q <= 0 || h <= 0 || h % kHeads != 0 || p.q.shape[2] != kD || p.out.shape[2] != kDV) return false;
  if (s_q > static_cast<int64_t>(INT_MAX) / (h / kHeads)) return false;
  if (p.indices.shape[1] > INT_MAX || p.kv.shape[0] > INT_MAX) return false;
  if (p.q.stride[2] != 1 || p.kv.stride[1] != 1 || p.indices.stride[1] != 1 || p.out.stride[2] != 1) return false;
  if (!aligned16(p.q.data) || (p.q.stride[0] * 2) % 16 != 0 || (p.q.stride[1] * 2) % 16 != 0) return false;
  if (!aligned16(p.kv.data) || (p.kv.stride[0] * 2) % 16 != 0) return false;
  if (p.out.dtype != DType::kBF16 && p.out.dtype != DType::kF32) return false;
  return sparse_mla_wgmma_usable();
}

namespace {

template <int kSrc>
Status launch(const char* op, const Args& a, int64_t blocks, Stream stream) {
  constexpr bool kFp8 = kSrc == kSrcPagedFp8;
  if (blocks == 0) return Status();
  auto kernel = sparse_mla_wgmma_kernel<kSrc>;
  static cuda::OncePerDevice attributes;
  const cudaError_t e = attributes.run(
      [&] { return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Lay<kFp8>::kSmem); });
  if (e != cudaSuccess)
    return Status(StatusCode::kCudaError, std::string(op) + ": cudaFuncSetAttribute failed: " + cudaGetErrorString(e));
  kernel<<<static_cast<unsigned>(blocks), kThreads, Lay<kFp8>::kSmem, static_cast<cudaStream_t>(stream)>>>(a);
  return cuda::launch_status(op, "sparse_mla_wgmma_kernel");
}

}  // namespace

bool sparse_mla_wgmma_decode_applies(const SparseMlaDecodeParams& p) {
  const bool fp8 = p.cache.dtype == DType::kU8;
  if (p.q.dtype != DType::kBF16 || (!fp8 && p.cache.dtype != DType::kBF16)) return false;
  if (p.q.rank != 4 || p.cache.rank != 3 || p.indices.rank != 3 || p.out.rank != 4 || p.lse.rank != 3) return false;
  const int64_t tokens = p.q.shape[0] * p.q.shape[1], h = p.q.shape[2];
  if (tokens < 0 || h <= 0 || h % kHeads != 0 || p.q.shape[3] != kD || p.out.shape[3] != kDV) return false;
  if (p.cache.shape[2] != (fp8 ? kFp8Row : kD)) return false;
  if (tokens > static_cast<int64_t>(INT_MAX) / (h / kHeads) || h > INT_MAX) return false;
  if (p.indices.shape[2] > INT_MAX) return false;
  if (p.q.stride[3] != 1 || p.cache.stride[2] != 1 || p.indices.stride[2] != 1 || p.out.stride[3] != 1) return false;
  if (!aligned16(p.q.data) || (p.q.stride[0] * 2) % 16 != 0 || (p.q.stride[1] * 2) % 16 != 0 ||
      (p.q.stride[2] * 2) % 16 != 0)
    return false;
  const int64_t esz = fp8 ? 1 : 2;
  if (!aligned16(p.cache.data) || (p.cache.stride[0] * esz) % 16 != 0 ||
      (p.cache.shape[1] > 1 && (p.cache.stride[1] * esz) % 16 != 0))
    return false;
  if (p.out.dtype != DType::kBF16 && p.out.dtype != DType::kF32) return false;
  return sparse_mla_wgmma_usable();
}

Status run_sparse_mla_wgmma_decode(const SparseMlaDecodeParams& p, int n_split, int split_chunks, float* part_o,
                                   float* part_ml, Stream stream) {
  const bool fp8 = p.cache.dtype == DType::kU8;
  const int64_t esz = fp8 ? 1 : 2;
  Args a{};
  a.q = static_cast<const uint8_t*>(p.q.data);
  a.kv = static_cast<const uint8_t*>(p.cache.data);
  a.indices = static_cast<const int32_t*>(p.indices.data);
  a.topk_length = p.topk_length.present() ? static_cast<const int32_t*>(p.topk_length.data) : nullptr;
  a.sink = p.attn_sink.present() ? static_cast<const float*>(p.attn_sink.data) : nullptr;
  a.out = p.out.data;
  a.lse = static_cast<float*>(p.lse.data);
  a.max_logits = nullptr;
  a.n_split = n_split > 1 ? n_split : 1;
  a.split_chunks = split_chunks;
  a.part_o = part_o;
  a.part_ml = part_ml;
  a.s_inner = p.q.shape[1] > 0 ? p.q.shape[1] : 1;
  a.q_sb = p.q.stride[0], a.q_ss = p.q.stride[1], a.q_sh = p.q.stride[2];
  a.i_sb = p.indices.stride[0], a.i_ss = p.indices.stride[1];
  a.tl_s0 = p.topk_length.present() ? p.topk_length.stride[0] : 0;
  a.sink_s0 = p.attn_sink.present() ? p.attn_sink.stride[0] : 0;
  a.o_sb = p.out.stride[0], a.o_ss = p.out.stride[1], a.o_sh = p.out.stride[2];
  a.l_sb = p.lse.stride[0], a.l_ss = p.lse.stride[1], a.l_sh = p.lse.stride[2];
  a.P = p.cache.shape[1];
  a.page_bytes = p.cache.stride[0] * esz;
  a.row_bytes = a.P == 1 ? 0 : p.cache.stride[1] * esz;
  a.num_rows = p.cache.shape[0] * p.cache.shape[1];
  a.topk = static_cast<int>(p.indices.shape[2]);
  a.h_q = static_cast<int>(p.q.shape[2]);
  a.groups = a.h_q / kHeads;
  a.scale_log2 = p.sm_scale * kLog2e;
  a.out_f32 = p.out.dtype == DType::kF32;
  a.lse_base2 = p.lse_base == LseBase::kBase2;
  {  // two adjacent out elements as one 4-byte (bf16) / 8-byte (f32) word
    const uintptr_t bytes = a.out_f32 ? 8 : 4;
    a.out_vec = (reinterpret_cast<uintptr_t>(p.out.data) & (bytes - 1)) == 0 && p.out.stride[0] % 2 == 0 &&
                p.out.stride[1] % 2 == 0 && p.out.stride[2] % 2 == 0;
  }
  const int64_t blocks = p.q.shape[0] * p.q.shape[1] * a.groups * a.n_split;
  return fp8 ? launch<kSrcPagedFp8>("sparse_mla_decode", a, blocks, stream)
             : launch<kSrcPagedBf16>("sparse_mla_decode", a, blocks, stream);
}

Status run_sparse_mla_wgmma(const SparseMlaFwdParams& p, Stream stream) {
  Args a{};
  a.q = static_cast<const uint8_t*>(p.q.data);
  a.kv = static_cast<const uint8_t*>(p.kv.data);
  a.indices = static_cast<const int32_t*>(p.indices.data);
  a.topk_length = p.topk_length.present() ? static_cast<const int32_t*>(p.topk_length.data) : nullptr;
  a.sink = p.attn_sink.present() ? static_cast<const float*>(p.attn_sink.data) : nullptr;
  a.out = p.out.data;
  a.lse = static_cast<float*>(p.lse.data);
  a.max_logits = p.max_logits.present() ? static_cast<float*>(p.max_logits.data) : nullptr;
  a.n_split = 1;
  a.s_inner = 1;  // bi = token, si = 0
  a.q_sb = p.q.stride[0], a.q_sh = p.q.stride[1];
  a.i_sb = p.indices.stride[0];
  a.tl_s0 = p.topk_length.present() ? p.topk_length.stride[0] : 0;
  a.sink_s0 = p.attn_sink.present() ? p.attn_sink.stride[0] : 0;
  a.o_sb = p.out.stride[0], a.o_sh = p.out.stride[1];
  a.l_sb = p.lse.stride[0], a.l_sh = p.lse.stride[1];
  a.m_sb = a.max_logits ? p.max_logits.stride[0] : 0;
  a.m_sh = a.max_logits ? p.max_logits.stride[1] : 0;
  a.P = 1;
  a.page_bytes = p.kv.stride[0] * 2;
  a.num_rows = p.kv.shape[0];
  a.topk = static_cast<int>(p.indices.shape[1]);
  a.h_q = static_cast<int>(p.q.shape[1]);
  a.groups = static_cast<int>(p.q.shape[1] / kHeads);
  a.scale_log2 = p.sm_scale * kLog2e;
  a.out_f32 = p.out.dtype == DType::kF32;
  a.lse_base2 = p.lse_base == LseBase::kBase2;
  {  // two adjacent out elements as one 4-byte (bf16) / 8-byte (f32) word
    const uintptr_t bytes = a.out_f32 ? 8 : 4;
    a.out_vec = (reinterpret_cast<uintptr_t>(p.out.data) & (bytes - 1)) == 0 && p.out.stride[0] % 2 == 0 &&
                p.out.stride[1] % 2 == 0;
  }
  return launch<kSrcPrefill>("sparse_mla_fwd", a, p.q.shape[0] * a.groups, stream);
}

}  // namespace dsa::cuda_backend

namespace dsa {
// Test hooks (declared by tests/gpu/test_gpu_sparse_mla.cpp, not in a public header).
// mode −1 follows DSA_SPARSE_MLA_WGMMA, 0 forces the mma.sync kernel, 1 allows the wgmma kernel
// (still only where it applies).
DSA_API void sparse_mla_wgmma_for_testing(int mode) { g_smla_wgmma_override.store(mode); }
// Whether qualifying prefill and decode calls on the current device take the wgmma kernel now.
DSA_API bool sparse_mla_wgmma_active() { return cuda_backend::sparse_mla_wgmma_usable(); }
}  // namespace dsa
