// The C ABI (dsa/dsa.h) mirrors the C++ API exactly: for every op, params_init gives the C++
// defaults; supports / workspace_size / run / run_reference give the same status, the same message
// and bitwise the same outputs on a small valid problem and on bad input; struct_size prefixes,
// ABI versions and null pointers are handled as docs/c_abi.md says.
#include <catch2/catch.hpp>

#include <cstddef>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "dsa/dsa.h"
#include "dsa/dsa.hpp"
#include "support/random.hpp"

using namespace dsa;

namespace {

// ---- the test's own field-by-field mirror of dsa/params.hpp (written from the headers) ----------

#define FIELDS_rope_table(F) \
  F(cos) F(sin) F(rope_dim) F(base) F(yarn_factor) F(original_max_position) F(beta_fast) F(beta_slow)
#define FIELDS_rope(F) F(x) F(out) F(positions) F(cos) F(sin) F(style) F(rope_offset) F(rope_dim) F(inverse)
#define FIELDS_hadamard(F) F(x) F(out)
#define FIELDS_quantize(F) F(x) F(codes) F(scales) F(scale_format)
#define FIELDS_dequantize(F) F(codes) F(scales) F(out)
#define FIELDS_indexer_prep(F)                                                                  \
  F(q) F(weights) F(k) F(positions) F(rope_cos) F(rope_sin) F(mode) F(hadamard) F(scale_format) \
  F(q_out) F(weights_out) F(k_out) F(k_scale_out) F(k_cache) F(slot_mapping) F(page_block_size)
#define FIELDS_indexer_logits(F) F(q) F(k) F(k_scale) F(weights) F(ks) F(ke) F(logits) F(clean_logits)
#define FIELDS_indexer_paged_logits(F) \
  F(q) F(k_cache) F(weights) F(context_lens) F(block_table) F(logits) F(page_block_size)
#define FIELDS_topk(F)                                                                           \
  F(scores) F(ks) F(ke) F(indices) F(out_scores) F(k_eff) F(domain) F(block_table) F(rows_per_batch) \
  F(page_block_size) F(sorted)
#define FIELDS_mla_cache_write(F) F(kv) F(slot_mapping) F(cache) F(scale_format)
#define FIELDS_sparse_mla_fwd(F) \
  F(q) F(kv) F(indices) F(topk_length) F(attn_sink) F(out) F(lse) F(max_logits) F(sm_scale) F(lse_base)
#define FIELDS_sparse_mla_decode(F) \
  F(q) F(cache) F(indices) F(topk_length) F(attn_sink) F(out) F(lse) F(sm_scale) F(lse_base) F(num_splits)
#define FIELDS_dense_mla_fwd(F) F(q) F(kv) F(ks) F(ke) F(out) F(lse) F(max_logits) F(sm_scale) F(lse_base)
#define FIELDS_indexer_topk(F)                                                                    \
  F(q) F(k) F(k_scale) F(weights) F(ks) F(ke) F(indices) F(out_scores) F(k_eff) F(domain) F(sorted) \
  F(chunk_rows)
#define FIELDS_sparse_mla_bwd(F)                                                                  \
  F(q) F(kv) F(indices) F(topk_length) F(attn_sink) F(out) F(lse) F(dout) F(dq) F(dkv) F(sm_scale) \
  F(lse_base)
#define FIELDS_indexer_bwd(F)                                                                   \
  F(q) F(k) F(weights) F(grad) F(grad_indices) F(ks) F(ke) F(q_positions) F(k_positions)        \
  F(rope_cos) F(rope_sin) F(hadamard) F(dq_raw) F(dk_raw) F(dw_raw)
#define FIELDS_indexer_loss_dense(F)                                                            \
  F(q) F(kv) F(lse) F(sm_scale) F(lse_base) F(q_idx) F(k_idx) F(weights) F(ks) F(ke) F(row_mask) \
  F(reduction) F(coefficient) F(loss) F(row_kl) F(dq_idx) F(dk_idx) F(dweights)
#define FIELDS_indexer_loss_sparse(F)                                                              \
  F(q) F(kv) F(lse) F(sm_scale) F(lse_base) F(indices) F(topk_length) F(teacher) F(q_idx) F(k_idx) \
  F(weights) F(row_mask) F(reduction) F(coefficient) F(loss) F(row_kl) F(dq_idx) F(dk_idx)         \
  F(dweights)

template <class A, class B>
void assign(A& a, const B& b) {
  if constexpr (std::is_same<A, dsa_tensor>::value || std::is_same<A, TensorView>::value)
    std::memcpy(static_cast<void*>(&a), &b, sizeof(A));
  else
    a = static_cast<A>(b);
}

template <class T, class S>
T converted(const S& s) {
  T t;
  assign(t, s);
  return t;
}

template <class A, class B>
bool same(const A& a, const B& b) {
  if constexpr (std::is_same<A, dsa_tensor>::value)
    return std::memcmp(&a, &b, sizeof(A)) == 0;
  else
    return static_cast<double>(a) == static_cast<double>(b);
}

template <class T>
constexpr bool is_tensor = std::is_same<T, dsa_tensor>::value;

// A value different from any default, per scalar type (for "beyond the prefix" fields).
template <class T>
T garble(T d) {
  if constexpr (std::is_same<T, uint8_t>::value) return static_cast<T>(d ^ 1);
  else return static_cast<T>(d + (std::is_floating_point<T>::value ? 3 : 41));
}
dsa_tensor garble(dsa_tensor t) { return t; }  // tensors all lie inside the minimal prefix

template <class P>
struct Op;

#define TEST_C_OP(Params, op)                                                                      \
  template <>                                                                                      \
  struct Op<Params> {                                                                              \
    using C = dsa_##op##_params;                                                                   \
    static constexpr const char* name = #op;                                                       \
    static constexpr const char* c_name = "dsa_" #op "_params";                                    \
    static dsa_status init(C* c) { return dsa_##op##_params_init(c); }                             \
    static dsa_status supports(const C* c) { return dsa_##op##_supports(c); }                      \
    static dsa_status workspace(const C* c, size_t* b) { return dsa_##op##_workspace_size(c, b); } \
    static dsa_status run(const C* c, void* w, size_t wb, void* s) { return dsa_##op##_run(c, w, wb, s); } \
    static dsa_status run_ref(const C* c, dsa_accum a) { return dsa_##op##_run_reference(c, a); }  \
    static void to_c(const Params& p, C& c) { FIELDS_##op(TO_C) }                                  \
    static void check_defaults(const C& c) { const Params p{}; FIELDS_##op(CHECK_DEFAULT) }        \
    static size_t min_size() { size_t m = 8; FIELDS_##op(MIN_SIZE) return m; }                     \
    static void garble_from(C& c, size_t cut) { const Params d{}; FIELDS_##op(GARBLE) }                              \
    static void default_from(Params& p, size_t cut) { const Params d{}; FIELDS_##op(DEFAULT) }     \
  };
#define TO_C(f) assign(c.f, p.f);
#define CHECK_DEFAULT(f) { INFO(c_name << "." #f); CHECK(same(c.f, p.f)); }
#define MIN_SIZE(f) \
  if (is_tensor<decltype(C::f)> && offsetof(C, f) + sizeof(C::f) > m) m = offsetof(C, f) + sizeof(C::f);
#define GARBLE(f) \
  if (offsetof(C, f) >= cut) { c.f = garble(converted<decltype(C::f)>(d.f)); }
#define DEFAULT(f) if (offsetof(C, f) >= cut) p.f = d.f;

TEST_C_OP(RopeTableParams, rope_table)
TEST_C_OP(RopeParams, rope)
TEST_C_OP(HadamardParams, hadamard)
TEST_C_OP(QuantizeParams, quantize)
TEST_C_OP(DequantizeParams, dequantize)
TEST_C_OP(IndexerPrepParams, indexer_prep)
TEST_C_OP(IndexerLogitsParams, indexer_logits)
TEST_C_OP(IndexerPagedLogitsParams, indexer_paged_logits)
TEST_C_OP(TopKParams, topk)
TEST_C_OP(MlaCacheWriteParams, mla_cache_write)
TEST_C_OP(SparseMlaFwdParams, sparse_mla_fwd)
TEST_C_OP(SparseMlaDecodeParams, sparse_mla_decode)
TEST_C_OP(DenseMlaFwdParams, dense_mla_fwd)
TEST_C_OP(IndexerTopKParams, indexer_topk)
TEST_C_OP(SparseMlaBwdParams, sparse_mla_bwd)
TEST_C_OP(IndexerBwdParams, indexer_bwd)
TEST_C_OP(IndexerLossDenseParams, indexer_loss_dense)
TEST_C_OP(IndexerLossSparseParams, indexer_loss_sparse)

// ---- small valid problems on fresh random data ----------------------------------------------------

struct Problem {
  test::Rng rng{0xCA61};
  std::vector<std::vector<uint8_t>> bufs;
  std::vector<std::pair<size_t, uint8_t>> outputs;  // buffer, poison byte

  TensorView alloc(DType dt, std::initializer_list<int64_t> shape) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    bufs.emplace_back(static_cast<size_t>(n) * dtype_size(dt));
    return make_view(bufs.back().data(), dt, shape);
  }
  TensorView in(DType dt, std::initializer_list<int64_t> shape) {
    TensorView v = alloc(dt, shape);
    auto& b = bufs.back();
    const size_t n = static_cast<size_t>(v.numel());
    if (dt == DType::kBF16) {
      auto r = test::randn_bf16(rng, n);
      std::memcpy(b.data(), r.data(), b.size());
    } else if (dt == DType::kF32) {
      auto r = test::randn_f32(rng, n, 0.5);
      std::memcpy(b.data(), r.data(), b.size());
    } else {  // e4m3 / u8: random bytes, never the e4m3 NaN codes 0x7F / 0xFF
      for (auto& x : b) x = static_cast<uint8_t>(rng.integer(0, 255) & (rng.integer(0, 1) ? 0xFE : 0xF7));
    }
    return v;
  }
  TensorView ints(std::initializer_list<int64_t> shape, std::vector<int32_t> values) {
    TensorView v = alloc(DType::kI32, shape);
    REQUIRE(values.size() == static_cast<size_t>(v.numel()));
    std::memcpy(bufs.back().data(), values.data(), bufs.back().size());
    return v;
  }
  TensorView out(DType dt, std::initializer_list<int64_t> shape) {
    TensorView v = alloc(dt, shape);
    outputs.emplace_back(bufs.size() - 1, dt == DType::kI32 ? 0x7F : 0xFF);
    return v;
  }
  void poison() {
    for (auto& [i, byte] : outputs) std::fill(bufs[i].begin(), bufs[i].end(), byte);
  }
  std::vector<std::vector<uint8_t>> snapshot() const {
    std::vector<std::vector<uint8_t>> s;
    for (auto& o : outputs) s.push_back(bufs[o.first]);
    return s;
  }
  bool untouched() const {
    for (auto& [i, byte] : outputs)
      for (uint8_t x : bufs[i])
        if (x != byte) return false;
    return true;
  }
  std::vector<int32_t> randint(size_t n, int32_t lo, int32_t hi) {
    std::vector<int32_t> v(n);
    for (auto& x : v) x = static_cast<int32_t>(rng.integer(lo, hi));
    return v;
  }
};

// Per op: a valid problem, and the argument bad-input cases break.
template <class P> void build(Problem&, P&);
template <class P> std::pair<TensorView P::*, const char*> bad_field();

template <> void build(Problem& b, RopeTableParams& p) {
  p.cos = b.out(DType::kF32, {17, 32});
  p.sin = b.out(DType::kF32, {17, 32});
}
template <> std::pair<TensorView RopeTableParams::*, const char*> bad_field() { return {&RopeTableParams::sin, "sin"}; }

template <> void build(Problem& b, RopeParams& p) {
  p.x = b.in(DType::kBF16, {3, 2, 96});
  p.out = b.out(DType::kBF16, {3, 2, 96});
  p.positions = b.ints({3}, b.randint(3, 0, 16));
  p.cos = b.in(DType::kF32, {17, 32});
  p.sin = b.in(DType::kF32, {17, 32});
  p.rope_offset = 16;
}
template <> std::pair<TensorView RopeParams::*, const char*> bad_field() { return {&RopeParams::positions, "positions"}; }

template <> void build(Problem& b, HadamardParams& p) {
  p.x = b.in(DType::kBF16, {5, 128});
  p.out = b.out(DType::kBF16, {5, 128});
}
template <> std::pair<TensorView HadamardParams::*, const char*> bad_field() { return {&HadamardParams::out, "out"}; }

template <> void build(Problem& b, QuantizeParams& p) {
  p.x = b.in(DType::kBF16, {3, 256});
  p.codes = b.out(DType::kE4M3, {3, 256});
  p.scales = b.out(DType::kF32, {3, 2});
}
template <> std::pair<TensorView QuantizeParams::*, const char*> bad_field() { return {&QuantizeParams::scales, "scales"}; }

template <> void build(Problem& b, DequantizeParams& p) {
  p.codes = b.in(DType::kE4M3, {3, 256});
  p.scales = b.in(DType::kF32, {3, 2});
  p.out = b.out(DType::kF32, {3, 256});
}
template <> std::pair<TensorView DequantizeParams::*, const char*> bad_field() { return {&DequantizeParams::codes, "codes"}; }

template <> void build(Problem& b, IndexerPrepParams& p) {
  const int64_t t = 3, h = 4;
  p.q = b.in(DType::kBF16, {t, h, 128});
  p.weights = b.in(DType::kF32, {t, h});
  p.k = b.in(DType::kBF16, {t, 128});
  p.positions = b.ints({t}, b.randint(t, 0, 9));
  p.rope_cos = b.in(DType::kF32, {10, 32});
  p.rope_sin = b.in(DType::kF32, {10, 32});
  p.q_out = b.out(DType::kE4M3, {t, h, 128});
  p.weights_out = b.out(DType::kF32, {t, h});
  p.k_out = b.out(DType::kE4M3, {t, 128});
  p.k_scale_out = b.out(DType::kF32, {t});
}
template <> std::pair<TensorView IndexerPrepParams::*, const char*> bad_field() { return {&IndexerPrepParams::positions, "positions"}; }

template <> void build(Problem& b, IndexerLogitsParams& p) {
  const int64_t s_q = 3, s_kv = 11, h = 4;
  p.q = b.in(DType::kBF16, {s_q, h, 64});
  p.k = b.in(DType::kBF16, {s_kv, 64});
  p.weights = b.in(DType::kF32, {s_q, h});
  p.ks = b.ints({s_q}, {0, 2, 5});
  p.ke = b.ints({s_q}, {4, 11, 6});
  p.logits = b.out(DType::kF32, {s_q, s_kv});
}
template <> std::pair<TensorView IndexerLogitsParams::*, const char*> bad_field() { return {&IndexerLogitsParams::weights, "weights"}; }

template <> void build(Problem& b, IndexerTopKParams& p) {
  const int64_t s_q = 5, s_kv = 13, h = 4;
  p.q = b.in(DType::kE4M3, {s_q, h, 32});
  p.k = b.in(DType::kE4M3, {s_kv, 32});
  p.k_scale = b.in(DType::kF32, {s_kv});
  p.weights = b.in(DType::kF32, {s_q, h});
  p.ks = b.ints({s_q}, {0, 2, 5, 0, 7});
  p.ke = b.ints({s_q}, {4, 13, 6, 0, 13});
  p.indices = b.out(DType::kI32, {s_q, 3});
  p.out_scores = b.out(DType::kF32, {s_q, 3});
  p.k_eff = b.out(DType::kI32, {s_q});
  p.domain = IndexDomain::kRelative;
  p.chunk_rows = 2;
}
template <> std::pair<TensorView IndexerTopKParams::*, const char*> bad_field() { return {&IndexerTopKParams::indices, "indices"}; }

template <> void build(Problem& b, IndexerPagedLogitsParams& p) {
  const int64_t batch = 2, h = 4, d = 128, pb = 16, blocks = 4;
  p.q = b.in(DType::kE4M3, {batch, 1, h, d});
  p.k_cache = b.in(DType::kU8, {blocks, 132 * pb});
  for (int64_t blk = 0; blk < blocks; ++blk)  // ue8m0 scales (SPEC §7.2): powers of two
    for (int64_t i = 0; i < pb; ++i) {
      const float s = std::ldexp(1.0f, static_cast<int>(b.rng.integer(-8, 2)));
      std::memcpy(b.bufs.back().data() + blk * 132 * pb + 128 * pb + 4 * i, &s, 4);
    }
  p.weights = b.in(DType::kF32, {batch, h});
  p.context_lens = b.ints({batch}, {20, 9});
  p.block_table = b.ints({batch, 2}, {3, 1, 0, 2});
  p.logits = b.out(DType::kF32, {batch, 32});
  p.page_block_size = static_cast<int32_t>(pb);
}
template <> std::pair<TensorView IndexerPagedLogitsParams::*, const char*> bad_field() { return {&IndexerPagedLogitsParams::block_table, "block_table"}; }

template <> void build(Problem& b, TopKParams& p) {
  p.scores = b.in(DType::kF32, {4, 23});
  p.indices = b.out(DType::kI32, {4, 6});
  p.out_scores = b.out(DType::kF32, {4, 6});
  p.k_eff = b.out(DType::kI32, {4});
}
template <> std::pair<TensorView TopKParams::*, const char*> bad_field() { return {&TopKParams::indices, "indices"}; }

template <> void build(Problem& b, MlaCacheWriteParams& p) {
  p.kv = b.in(DType::kBF16, {3, 576});
  p.slot_mapping = b.ints({3}, {5, -1, 17});
  p.cache = b.out(DType::kU8, {2, 16, 656});
}
template <> std::pair<TensorView MlaCacheWriteParams::*, const char*> bad_field() { return {&MlaCacheWriteParams::kv, "kv"}; }

template <> void build(Problem& b, SparseMlaFwdParams& p) {
  const int64_t s_q = 3, h = 4, s_kv = 9, topk = 5;
  p.q = b.in(DType::kBF16, {s_q, h, 576});
  p.kv = b.in(DType::kBF16, {s_kv, 576});
  p.indices = b.ints({s_q, topk}, {0, 3, 8, -1, 2, 1, 1, 4, 9, 7, 6, 5, 4, 3, 2});
  p.out = b.out(DType::kBF16, {s_q, h, 512});
  p.lse = b.out(DType::kF32, {s_q, h});
  p.max_logits = b.out(DType::kF32, {s_q, h});
  p.sm_scale = kSoftmaxScaleV32;
}
template <> std::pair<TensorView SparseMlaFwdParams::*, const char*> bad_field() { return {&SparseMlaFwdParams::indices, "indices"}; }

template <> void build(Problem& b, SparseMlaDecodeParams& p) {
  const int64_t batch = 2, h = 4, topk = 4;
  p.q = b.in(DType::kBF16, {batch, 1, h, 576});
  p.cache = b.in(DType::kBF16, {2, 16, 576});
  p.indices = b.ints({batch, 1, topk}, {0, 31, 17, -1, 5, 6, 40, 2});
  p.out = b.out(DType::kF32, {batch, 1, h, 512});
  p.lse = b.out(DType::kF32, {batch, 1, h});
  p.sm_scale = kSoftmaxScaleV32;
}
template <> std::pair<TensorView SparseMlaDecodeParams::*, const char*> bad_field() { return {&SparseMlaDecodeParams::q, "q"}; }

template <> void build(Problem& b, DenseMlaFwdParams& p) {
  const int64_t s_q = 3, h = 4;
  p.q = b.in(DType::kBF16, {s_q, h, 576});
  p.kv = b.in(DType::kBF16, {5, 576});
  p.ks = b.ints({s_q}, {0, 0, 3});
  p.ke = b.ints({s_q}, {1, 2, 5});
  p.out = b.out(DType::kBF16, {s_q, h, 512});
  p.lse = b.out(DType::kF32, {s_q, h});
  p.sm_scale = kSoftmaxScaleV32;
}
template <> std::pair<TensorView DenseMlaFwdParams::*, const char*> bad_field() { return {&DenseMlaFwdParams::lse, "lse"}; }

// The training ops: small problems (d_qk / d_v / d_idx are free on the CPU reference) whose
// forward quantities (out, lse) are random but finite — the C and C++ calls must agree bitwise.
template <> void build(Problem& b, SparseMlaBwdParams& p) {
  const int64_t s_q = 3, h = 2, s_kv = 7, topk = 4, d_qk = 40, d_v = 32;
  p.q = b.in(DType::kBF16, {s_q, h, d_qk});
  p.kv = b.in(DType::kBF16, {s_kv, d_qk});
  p.indices = b.ints({s_q, topk}, {0, 3, 6, -1, 2, 2, 5, 9, 4, 1, 0, 6});
  p.topk_length = b.ints({s_q}, {4, 3, 2});
  p.out = b.in(DType::kBF16, {s_q, h, d_v});
  p.lse = b.in(DType::kF32, {s_q, h});
  p.dout = b.in(DType::kBF16, {s_q, h, d_v});
  p.dq = b.out(DType::kF32, {s_q, h, d_qk});
  p.dkv = b.out(DType::kBF16, {s_kv, d_qk});
  p.sm_scale = 0.15f;
}
template <> std::pair<TensorView SparseMlaBwdParams::*, const char*> bad_field() { return {&SparseMlaBwdParams::dout, "dout"}; }

template <> void build(Problem& b, IndexerBwdParams& p) {
  const int64_t s_q = 3, h = 2, s_kv = 6, max_pos = 9;
  p.q = b.in(DType::kBF16, {s_q, h, 128});
  p.k = b.in(DType::kBF16, {s_kv, 128});
  p.weights = b.in(DType::kF32, {s_q, h});
  p.grad = b.in(DType::kF32, {s_q, s_kv});
  p.ks = b.ints({s_q}, {0, 1, 4});
  p.ke = b.ints({s_q}, {2, 6, 4});
  p.q_positions = b.ints({s_q}, b.randint(s_q, 0, max_pos - 1));
  p.k_positions = b.ints({s_kv}, b.randint(s_kv, 0, max_pos - 1));
  p.rope_cos = b.in(DType::kF32, {max_pos, 32});
  p.rope_sin = b.in(DType::kF32, {max_pos, 32});
  p.dq_raw = b.out(DType::kF32, {s_q, h, 128});
  p.dk_raw = b.out(DType::kBF16, {s_kv, 128});
  p.dw_raw = b.out(DType::kF32, {s_q, h});
}
template <> std::pair<TensorView IndexerBwdParams::*, const char*> bad_field() { return {&IndexerBwdParams::k_positions, "k_positions"}; }

template <> void build(Problem& b, IndexerLossDenseParams& p) {
  const int64_t s_q = 3, h = 2, s_kv = 5, d_qk = 24, h_idx = 3, d_idx = 16;
  p.q = b.in(DType::kBF16, {s_q, h, d_qk});
  p.kv = b.in(DType::kBF16, {s_kv, d_qk});
  p.lse = b.in(DType::kF32, {s_q, h});
  p.sm_scale = 0.2f;
  p.q_idx = b.in(DType::kBF16, {s_q, h_idx, d_idx});
  p.k_idx = b.in(DType::kF32, {s_kv, d_idx});
  p.weights = b.in(DType::kF32, {s_q, h_idx});
  p.ks = b.ints({s_q}, {0, 1, 2});
  p.ke = b.ints({s_q}, {3, 5, 2});
  p.row_mask = b.ints({s_q}, {1, 1, 0});
  p.coefficient = 0.75f;
  p.loss = b.out(DType::kF32, {1});
  p.row_kl = b.out(DType::kF64, {s_q});
  p.dq_idx = b.out(DType::kF32, {s_q, h_idx, d_idx});
  p.dk_idx = b.out(DType::kF64, {s_kv, d_idx});
  p.dweights = b.out(DType::kF32, {s_q, h_idx});
}
template <> std::pair<TensorView IndexerLossDenseParams::*, const char*> bad_field() { return {&IndexerLossDenseParams::ke, "ke"}; }

template <> void build(Problem& b, IndexerLossSparseParams& p) {
  const int64_t s_q = 3, h = 2, s_kv = 6, d_qk = 24, h_idx = 2, d_idx = 16, topk = 4;
  p.q = b.in(DType::kBF16, {s_q, h, d_qk});
  p.kv = b.in(DType::kF32, {s_kv, d_qk});
  p.lse = b.in(DType::kF32, {s_q, h});
  p.sm_scale = 0.2f;
  p.indices = b.ints({s_q, topk}, {0, 4, -1, 2, 5, 1, 1, 3, 2, 8, 0, 4});
  p.topk_length = b.ints({s_q}, {4, 4, 3});
  p.q_idx = b.in(DType::kBF16, {s_q, h_idx, d_idx});
  p.k_idx = b.in(DType::kBF16, {s_kv, d_idx});
  p.weights = b.in(DType::kF32, {s_q, h_idx});
  p.reduction = LossReduction::kMean;
  p.loss = b.out(DType::kF64, {1});
  p.row_kl = b.out(DType::kF32, {s_q});
  p.dq_idx = b.out(DType::kF32, {s_q, h_idx, d_idx});
  p.dk_idx = b.out(DType::kF32, {s_kv, d_idx});
  p.dweights = b.out(DType::kF64, {s_q, h_idx});
}
template <> std::pair<TensorView IndexerLossSparseParams::*, const char*> bad_field() { return {&IndexerLossSparseParams::q_idx, "q_idx"}; }

// ---- running both APIs ----------------------------------------------------------------------------

struct Result {
  int32_t code;
  std::string message;  // "" when ok
  std::vector<std::vector<uint8_t>> outputs;
};

// Poisons the outputs, runs `fn` (→ status code), and collects status, last error and outputs.
template <class Fn>
Result capture(Problem& b, Fn&& fn) {
  b.poison();
  Result r;
  r.code = fn();
  r.message = r.code == 0 ? "" : dsa_last_error_message();
  r.outputs = b.snapshot();
  return r;
}

void check_same(const Result& cpp, const Result& c) {
  INFO("C++: " << cpp.code << " '" << cpp.message << "'");
  INFO("C:   " << c.code << " '" << c.message << "'");
  CHECK(c.code == cpp.code);
  CHECK(c.message == cpp.message);
  REQUIRE(c.outputs.size() == cpp.outputs.size());
  for (size_t i = 0; i < c.outputs.size(); ++i) {
    INFO("output #" << i);
    CHECK(c.outputs[i] == cpp.outputs[i]);  // bitwise
  }
}

int32_t code(const Status& s) { return static_cast<int32_t>(s.code()); }

template <class P>
typename Op<P>::C to_c(const P& p) {
  typename Op<P>::C c;
  std::memset(&c, 0xA5, sizeof c);  // every field must be set by init or to_c
  REQUIRE(Op<P>::init(&c) == DSA_STATUS_OK);
  Op<P>::to_c(p, c);
  return c;
}

}  // namespace

#define ALL_PARAMS                                                                             \
  RopeTableParams, RopeParams, HadamardParams, QuantizeParams, DequantizeParams,               \
      IndexerPrepParams, IndexerLogitsParams, IndexerPagedLogitsParams, TopKParams,            \
      MlaCacheWriteParams, SparseMlaFwdParams, SparseMlaDecodeParams, DenseMlaFwdParams,       \
      SparseMlaBwdParams, IndexerBwdParams, IndexerLossDenseParams, IndexerLossSparseParams,   \
      IndexerTopKParams

TEMPLATE_TEST_CASE("C ABI: params_init gives the header and the C++ defaults", "[c_api]", ALL_PARAMS) {
  using O = Op<TestType>;
  typename O::C c;
  std::memset(&c, 0xA5, sizeof c);
  REQUIRE(O::init(&c) == DSA_STATUS_OK);
  CHECK(c.struct_size == sizeof c);
  CHECK(c.abi_version == DSA_ABI_VERSION);
  O::check_defaults(c);
  CHECK(O::init(nullptr) == DSA_STATUS_NULL_POINTER);
  CHECK(std::string(dsa_last_error_message()).find(O::c_name) != std::string::npos);

  // A caller with an older, shorter struct presets its header: only its prefix is written.
  struct Guarded {
    typename O::C c;
    unsigned char after[64];
  } g;
  const size_t min = O::min_size();
  std::memset(&g, 0x5B, sizeof g);
  g.c.struct_size = static_cast<uint32_t>(min);
  g.c.abi_version = DSA_ABI_VERSION_MAJOR << 16;
  REQUIRE(O::init(&g.c) == DSA_STATUS_OK);
  CHECK(g.c.struct_size == min);
  CHECK(g.c.abi_version == DSA_ABI_VERSION);
  const auto* bytes = reinterpret_cast<const unsigned char*>(&g);
  CHECK(std::all_of(bytes + min, bytes + sizeof g, [](unsigned char x) { return x == 0x5B; }));
  typename O::C full;
  REQUIRE(O::init(&full) == DSA_STATUS_OK);
  CHECK(std::memcmp(bytes + 8, reinterpret_cast<const unsigned char*>(&full) + 8, min - 8) == 0);
  // A preset larger than the library's struct: the library's struct is written, and declared.
  std::memset(&g, 0x5B, sizeof g);
  g.c.struct_size = sizeof g;
  g.c.abi_version = DSA_ABI_VERSION;
  REQUIRE(O::init(&g.c) == DSA_STATUS_OK);
  CHECK(g.c.struct_size == sizeof(typename O::C));
  CHECK(std::all_of(g.after, g.after + sizeof g.after, [](unsigned char x) { return x == 0x5B; }));
  // A preset below the minimal prefix is rejected, and nothing is written.
  std::memset(&g, 0x5B, sizeof g);
  g.c.struct_size = static_cast<uint32_t>(min - 4);
  g.c.abi_version = DSA_ABI_VERSION;
  CHECK(O::init(&g.c) == DSA_STATUS_INVALID_ARGUMENT);
  CHECK(std::string(dsa_last_error_message()).find(std::string(O::c_name) + ".struct_size = ") != std::string::npos);
  CHECK(std::all_of(bytes + 8, bytes + sizeof g, [](unsigned char x) { return x == 0x5B; }));
}

TEMPLATE_TEST_CASE("C ABI: a valid problem gives the C++ status, message and bitwise outputs",
                   "[c_api]", ALL_PARAMS) {
  using O = Op<TestType>;
  Problem b;
  TestType p;
  build(b, p);
  const auto c = to_c(p);

  check_same(capture(b, [&] { return code(dsa::supports(p)); }),
             capture(b, [&] { return O::supports(&c); }));

  size_t bytes = 12345;
  REQUIRE(O::workspace(&c, &bytes) == DSA_STATUS_OK);
  CHECK(bytes == dsa::workspace_size(p));

  const Result cpp_run = capture(b, [&] { return code(dsa::run(p)); });
  UNSCOPED_INFO(O::name << ": run → " << cpp_run.code << " " << cpp_run.message);
  check_same(cpp_run, capture(b, [&] { return O::run(&c, nullptr, 0, nullptr); }));
  // The problem is valid and every op has a CPU reference: it runs and writes.
  REQUIRE(cpp_run.code == DSA_STATUS_OK);
  CHECK_FALSE(b.untouched());
  // Host pointers: the stream is ignored, any workspace is accepted.
  alignas(256) static unsigned char ws[256];
  check_same(cpp_run, capture(b, [&] { return O::run(&c, ws, sizeof ws, nullptr); }));

  for (const Accum a : {Accum::kF32, Accum::kF64}) {
    INFO("accum " << static_cast<int>(a));
    check_same(capture(b, [&] { return code(dsa::ref::run(p, a)); }),
               capture(b, [&] { return O::run_ref(&c, static_cast<dsa_accum>(a)); }));
  }
  const Result bad_accum = capture(b, [&] { return O::run_ref(&c, 7); });
  CHECK(bad_accum.code == DSA_STATUS_INVALID_ARGUMENT);
  CHECK(bad_accum.message.find("accum = 7") != std::string::npos);
  CHECK(b.untouched());
}

TEMPLATE_TEST_CASE("C ABI: bad input gives the C++ status and a message naming the argument",
                   "[c_api]", ALL_PARAMS) {
  using O = Op<TestType>;
  Problem b;
  TestType p;
  build(b, p);
  const auto bad = bad_field<TestType>();
  TensorView& field = p.*bad.first;
  const std::string arg = bad.second;
  INFO("broken argument: " << arg);

  SECTION("null data") { field.data = nullptr; }
  SECTION("wrong dtype") { field.dtype = DType::kF64; }
  SECTION("bad innermost stride") { field.stride[field.rank - 1] = 2; }
  SECTION("absent") { field = TensorView{}; }

  const auto c = to_c(p);
  for (int call = 0; call < 3; ++call) {
    INFO("call " << call);
    const Result cpp = capture(b, [&] {
      return code(call == 0 ? dsa::supports(p) : call == 1 ? dsa::run(p) : dsa::ref::run(p));
    });
    const Result cr = capture(b, [&] {
      return call == 0 ? O::supports(&c) : call == 1 ? O::run(&c, nullptr, 0, nullptr) : O::run_ref(&c, DSA_ACCUM_F32);
    });
    check_same(cpp, cr);
    CHECK(cr.code != DSA_STATUS_OK);
    CHECK(b.untouched());
    CHECK(cr.message.rfind(std::string(O::name) + ": ", 0) == 0);
    // The message names the broken argument ("sin is required", "sin.dtype = f64", ...).
    CHECK(cr.code != DSA_STATUS_NOT_IMPLEMENTED);
    CHECK((cr.message.find(arg + " ") != std::string::npos || cr.message.find(arg + ".") != std::string::npos));
  }
}

TEMPLATE_TEST_CASE("C ABI: struct_size prefixes, ABI versions and null pointers", "[c_api]", ALL_PARAMS) {
  using O = Op<TestType>;
  using C = typename O::C;
  Problem b;
  TestType p;
  build(b, p);
  C c = to_c(p);
  const size_t min = O::min_size();
  REQUIRE(min > 8);
  REQUIRE(min <= sizeof(C));

  SECTION("a prefix ending after the last tensor: the fields beyond it take the C++ defaults") {
    O::garble_from(c, min);  // caller memory beyond its declared struct holds other values
    c.struct_size = static_cast<uint32_t>(min);
    TestType expect = p;
    O::default_from(expect, min);
    check_same(capture(b, [&] { return code(dsa::run(expect)); }),
               capture(b, [&] { return O::run(&c, nullptr, 0, nullptr); }));
    check_same(capture(b, [&] { return code(dsa::supports(expect)); }),
               capture(b, [&] { return O::supports(&c); }));
  }
  SECTION("a larger struct of a newer minor version: the known fields are read") {
    struct Bigger {
      C c;
      uint64_t appended[4];
    } big;
    std::memset(&big, 0x3C, sizeof big);
    big.c = c;
    big.c.struct_size = sizeof big;
    big.c.abi_version = DSA_ABI_VERSION + 3;
    check_same(capture(b, [&] { return code(dsa::run(p)); }),
               capture(b, [&] { return O::run(&big.c, nullptr, 0, nullptr); }));
  }
  SECTION("too small a prefix is rejected, naming the struct") {
    b.poison();
    c.struct_size = static_cast<uint32_t>(min - 1);
    for (dsa_status s : {O::supports(&c), O::run(&c, nullptr, 0, nullptr), O::run_ref(&c, 0)}) {
      CHECK(s == DSA_STATUS_INVALID_ARGUMENT);
      const std::string m = dsa_last_error_message();
      CHECK(m.find(std::string(O::c_name) + ".struct_size = " + std::to_string(min - 1)) != std::string::npos);
    }
    size_t bytes = 99;
    CHECK(O::workspace(&c, &bytes) == DSA_STATUS_INVALID_ARGUMENT);
    CHECK(bytes == 99);
    CHECK(b.untouched());
  }
  SECTION("another ABI major version is rejected, naming the struct") {
    b.poison();
    for (uint32_t v : {0u, (DSA_ABI_VERSION_MAJOR + 1u) << 16, 0xFFFFFFFFu}) {
      c.abi_version = v;
      CHECK(O::run(&c, nullptr, 0, nullptr) == DSA_STATUS_INVALID_ARGUMENT);
      CHECK(std::string(dsa_last_error_message()).find(std::string(O::c_name) + ".abi_version = " +
                                                       std::to_string(v)) != std::string::npos);
      CHECK(O::supports(&c) == DSA_STATUS_INVALID_ARGUMENT);
      CHECK(O::run_ref(&c, DSA_ACCUM_F64) == DSA_STATUS_INVALID_ARGUMENT);
    }
    CHECK(b.untouched());
  }
  SECTION("null pointers") {
    size_t bytes = 7;
    const std::string needle = std::string(O::name) + ": params (" + O::c_name + "*) is null";
    for (dsa_status s : {O::supports(nullptr), O::workspace(nullptr, &bytes), O::run(nullptr, nullptr, 0, nullptr),
                         O::run_ref(nullptr, DSA_ACCUM_F32)}) {
      CHECK(s == DSA_STATUS_NULL_POINTER);
      CHECK(std::string(dsa_last_error_message()) == needle);
    }
    CHECK(bytes == 7);
    CHECK(O::workspace(&c, nullptr) == DSA_STATUS_NULL_POINTER);
    CHECK(std::string(dsa_last_error_message()).find("bytes") != std::string::npos);
  }
}

TEST_CASE("C ABI: library calls", "[c_api]") {
  CHECK(std::string(dsa_version()) == dsa::version_string());
  CHECK(std::string(dsa_version()) == DSA_STRINGIFY(DSA_VERSION_MAJOR) "." DSA_STRINGIFY(
                                          DSA_VERSION_MINOR) "." DSA_STRINGIFY(DSA_VERSION_PATCH));
  CHECK(dsa_abi_version() == DSA_ABI_VERSION);
  CHECK(dsa_abi_version() >> 16 == DSA_ABI_VERSION_MAJOR);
  for (int32_t s = DSA_STATUS_OK; s <= DSA_STATUS_INTERNAL; ++s)
    CHECK(std::string(dsa_status_string(s)) == status_code_name(static_cast<StatusCode>(s)));
  CHECK(std::string(dsa_status_string(DSA_STATUS_NULL_POINTER)) == "null pointer");
  CHECK(std::string(dsa_status_string(12345)) == "unknown status");

  // The last error is per thread and is the message of the last failing call (C or C++).
  dsa_quantize_params q;
  REQUIRE(DSA_PARAMS_INIT(quantize, &q) == DSA_STATUS_OK);
  CHECK(q.struct_size == sizeof q);
  CHECK(dsa_quantize_run(&q, nullptr, 0, nullptr) == DSA_STATUS_NULL_POINTER);
  const std::string msg = dsa_last_error_message();
  CHECK(msg.find("quantize: x") == 0);
  CHECK(msg == dsa::last_error());
  std::string other_thread = "unset";
  std::thread([&] { other_thread = dsa_last_error_message(); }).join();
  CHECK(other_thread.empty());

  // dsa_tensor is dsa::TensorView.
  static_assert(sizeof(dsa_tensor) == sizeof(TensorView), "dsa_tensor size");
  static_assert(offsetof(dsa_tensor, stride) == offsetof(TensorView, stride), "dsa_tensor layout");
  const std::vector<float> data(6, 1.5f);
  const TensorView v = make_view(data.data(), DType::kF32, {2, 3});
  dsa_tensor t;
  std::memcpy(&t, &v, sizeof t);
  CHECK(t.data == data.data());
  CHECK(t.dtype == DSA_DTYPE_F32);
  CHECK(t.rank == 2);
  CHECK((t.shape[0] == 2 && t.shape[1] == 3 && t.stride[0] == 3 && t.stride[1] == 1));
}

TEST_CASE("C ABI: quantize prefix without scale_format uses ue8m0, not the caller's stale bytes",
          "[c_api]") {
  Problem b;
  QuantizeParams p;
  build(b, p);
  dsa_quantize_params c = to_c(p);
  c.scale_format = DSA_SCALE_FORMAT_RAW;
  const Result raw = capture(b, [&] { return dsa_quantize_run(&c, nullptr, 0, nullptr); });
  c.struct_size = offsetof(dsa_quantize_params, scale_format);
  const Result truncated = capture(b, [&] { return dsa_quantize_run(&c, nullptr, 0, nullptr); });
  p.scale_format = ScaleFormat::kUe8m0;
  const Result ue8m0 = capture(b, [&] { return code(dsa::run(p)); });
  REQUIRE(raw.code == DSA_STATUS_OK);
  check_same(ue8m0, truncated);
  CHECK(raw.outputs[1] != ue8m0.outputs[1]);  // raw scales differ from powers of two
  for (size_t i = 0; i < truncated.outputs[1].size(); i += 4) {
    float s;
    std::memcpy(&s, truncated.outputs[1].data() + i, 4);
    int e;
    CHECK(std::frexp(s, &e) == 0.5f);
  }
}

TEST_CASE("C ABI 1.3: sparse_mla_decode num_splits, an ABI 1.2 struct reads 1, negative is rejected",
          "[c_api]") {
#if UINTPTR_MAX == UINT64_MAX
  static_assert(offsetof(dsa_sparse_mla_decode_params, num_splits) == 576, "LP64 offset (docs/c_abi.md)");
  static_assert(sizeof(dsa_sparse_mla_decode_params) == 584, "LP64 size (docs/c_abi.md)");
#endif
  static_assert(DSA_ABI_VERSION_MINOR >= 3, "num_splits is ABI 1.3");
  Problem b;
  SparseMlaDecodeParams p;
  build(b, p);
  dsa_sparse_mla_decode_params c = to_c(p);
  CHECK(c.num_splits == 1);
  c.num_splits = -1;
  b.poison();
  CHECK(dsa_sparse_mla_decode_supports(&c) == DSA_STATUS_INVALID_ARGUMENT);
  CHECK(std::string(dsa_last_error_message()).find("num_splits = -1") != std::string::npos);
  CHECK(dsa_sparse_mla_decode_run(&c, nullptr, 0, nullptr) == DSA_STATUS_INVALID_ARGUMENT);
  CHECK(b.untouched());
  // A caller built against ABI 1.2 declares the struct without num_splits: the library reads the
  // default 1 (never split), whatever its memory holds there, and init leaves those bytes alone.
  c.struct_size = offsetof(dsa_sparse_mla_decode_params, num_splits);
  c.abi_version = (DSA_ABI_VERSION_MAJOR << 16) | 2;
  CHECK(dsa_sparse_mla_decode_supports(&c) == DSA_STATUS_OK);
  check_same(capture(b, [&] { return code(dsa::run(p)); }),
             capture(b, [&] { return dsa_sparse_mla_decode_run(&c, nullptr, 0, nullptr); }));
  CHECK(dsa_sparse_mla_decode_params_init(&c) == DSA_STATUS_OK);
  CHECK(c.num_splits == -1);
}
