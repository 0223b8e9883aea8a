// CPU reference of OP-SMLA-DEC: sparse MLA decode from a paged cache (SPEC §6.4, §7.1).
// Indices are physical slots page·P + offset; a slot is valid iff 0 ≤ idx < num_blocks·P (and
// i < topk_length[b] when given). Valid slots are dequantized once per query token —
// latent_i = bf16(e4m3_i · scale_{i/128}), k_pe as stored — or read as bf16, then the shared
// attention core runs (reference/attention_core.hpp). Invalid slots are never read, so unused
// cache slots may hold anything (NaN included).
#include <array>
#include <cstring>

#include "common/op_list.hpp"
#include "common/parallel.hpp"
#include "reference/access.hpp"
#include "reference/attention_core.hpp"

namespace dsa::detail {
namespace {

constexpr const char* kOp = "sparse_mla_decode";

const std::array<float, 256>& e4m3_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int c = 0; c < 256; ++c) t[c] = e4m3_to_float(static_cast<uint8_t>(c));
    return t;
  }();
  return table;
}

// One 656-byte token (SPEC §7.1) → 576 dequantized values.
template <typename T>
void dequant_fp8_token(const uint8_t* tok, T* dst) {
  const auto& lut = e4m3_table();
  float scales[kMlaDimV / kQuantBlock];
  std::memcpy(scales, tok + kMlaDimV, sizeof(scales));
  for (int b = 0; b < kMlaDimV / kQuantBlock; ++b)
    for (int i = b * kQuantBlock; i < (b + 1) * kQuantBlock; ++i)
      dst[i] = static_cast<T>(round_bf16(lut[tok[i]] * scales[b]));
  uint16_t pe[kMlaDimRope];
  std::memcpy(pe, tok + kMlaDimV + sizeof(scales), sizeof(pe));
  for (int i = 0; i < kMlaDimRope; ++i) dst[kMlaDimV + i] = static_cast<T>(bf16_to_float(bf16_t{pe[i]}));
}

template <typename T>
Status run_decode(const SparseMlaDecodeParams& p) {
  const int64_t b = p.q.shape[0], s_q = p.q.shape[1], h = p.q.shape[2];
  const int64_t num_blocks = p.cache.shape[0], page = p.cache.shape[1], topk = p.indices.shape[2];
  const int64_t slots = num_blocks * page;
  const bool fp8 = p.cache.dtype == DType::kU8;
  const bool has_len = p.topk_length.present();
  if (has_len)
    for (int64_t i = 0; i < b; ++i) {
      const int32_t n = at<int32_t>(p.topk_length, i);
      if (n < 0 || n > topk)
        return attn::value_error(kOp, "topk_length[%lld] = %d is out of range [0, topk = %lld]", (long long)i, n,
                                 (long long)topk);
    }
  std::vector<float> sink;
  if (p.attn_sink.present())
    for (int64_t i = 0; i < h; ++i) sink.push_back(at<float>(p.attn_sink, i));
  const T scale = static_cast<T>(p.sm_scale);

  parallel_for(b * s_q, 1, [&](int64_t begin, int64_t end) {
    attn::Core<T> core(h, kMlaDimQK, kMlaDimV, topk);
    std::vector<int64_t> rows;
    rows.reserve(static_cast<size_t>(topk));
    for (int64_t r = begin; r < end; ++r) {
      const int64_t bi = r / s_q, si = r % s_q;
      const int64_t n_t = has_len ? at<int32_t>(p.topk_length, bi) : topk;
      rows.clear();
      for (int64_t i = 0; i < n_t; ++i) {
        const int64_t idx = at<int32_t>(p.indices, bi, si, i);
        if (idx >= 0 && idx < slots) rows.push_back(idx);
      }
      for (int64_t hh = 0; hh < h; ++hh)
        attn::convert_row(attn::elem_ptr(p.q, offset(p.q, bi, si, hh, 0)), p.q.dtype, kMlaDimQK, core.q_row(hh));
      core.run(static_cast<int64_t>(rows.size()), scale, [&](int64_t first, int64_t count, T* dst) {
        for (int64_t j = 0; j < count; ++j) {
          const int64_t slot = rows[first + j];
          const int64_t off = offset(p.cache, slot / page, slot % page, 0);
          if (fp8)
            dequant_fp8_token(static_cast<const uint8_t*>(p.cache.data) + off, dst + j * core.ld());
          else
            attn::convert_row(attn::elem_ptr(p.cache, off), DType::kBF16, kMlaDimQK, dst + j * core.ld());
        }
      });
      attn::store_token(
          core, h, kMlaDimV, sink.empty() ? nullptr : sink.data(), p.lse_base, p.out,
          [&](int64_t hh) { return offset(p.out, bi, si, hh, 0); }, p.lse,
          [&](int64_t hh) { return offset(p.lse, bi, si, hh); }, nullptr, 0, 0);
    }
  });
  return Status();
}

}  // namespace

Status reference(const SparseMlaDecodeParams& p, Accum accum) {
  return accum == Accum::kF64 ? run_decode<double>(p) : run_decode<float>(p);
}

}  // namespace dsa::detail
