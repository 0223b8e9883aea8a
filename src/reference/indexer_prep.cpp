// CPU reference of OP-IDXPREP (SPEC §4.2 steps 1–6, §4.6, §7.2). Per q head and per k row:
//   1–2. non-interleaved RoPE on dims [0, 64) (pairs (i, i + 32)), rounded to bf16;
//   3.   Hadamard-128 (FP8 mode always; exact mode when `hadamard`), rounded to bf16;
//   4.   FP8 block quantization (FP8 mode): one block per (token, head) for q, per token for k;
//   5.   weight fold w = ((w_raw·2^-3)·σ_q)·fl32(128^-0.5) (σ_q = 1 in exact mode);
//   6.   k outputs and the paged 132-byte cache write (page = [P×128 codes | P fp32 scales]).
// Every step is a bit-exact recipe (SPEC §9.1); Accum does not apply. Bad positions and slots are
// rejected before anything is written.
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "common/op_list.hpp"
#include "common/parallel.hpp"
#include "reference/access.hpp"
#include "reference/quant_block.hpp"
#include "reference/transform_kernels.hpp"

namespace dsa::detail {

namespace {

// RoPE (non-interleaved, dims [0, 64)) then, when `rotate`, the Hadamard; v holds 128 bf16 values
// as floats and receives the bf16-rounded result as floats.
void rope_and_rotate(float* v, const TensorView& cos, const TensorView& sin, int32_t pos, bool rotate) {
  constexpr int half = kIndexerRopeDim / 2;
  for (int i = 0; i < half; ++i) {
    float ya, yb;
    rope_rotate(v[i], v[i + half], at<float>(cos, pos, i), at<float>(sin, pos, i), &ya, &yb);
    v[i] = round_bf16(ya);
    v[i + half] = round_bf16(yb);
  }
  if (rotate) {
    hadamard128_inplace(v);
    for (int i = 0; i < kIndexerDim; ++i) v[i] = round_bf16(v[i]);
  }
}

Status value_error(const char* fmt, int64_t i, int64_t value, int64_t bound) {
  char msg[200];
  std::snprintf(msg, sizeof(msg), fmt, i, value, bound);
  return Status(StatusCode::kInvalidArgument, std::string("indexer_prep: ") + msg);
}

}  // namespace

Status reference(const IndexerPrepParams& p, Accum) {
  const int64_t T = p.positions.shape[0];
  const int64_t max_pos = p.rope_cos.shape[0];
  const bool fp8 = p.mode == IndexerMode::kFp8;
  const bool rotate = fp8 || p.hadamard;

  // Values first: nothing is written when a position or a slot is bad.
  for (int64_t t = 0; t < T; ++t) {
    const int32_t pos = at<int32_t>(p.positions, t);
    if (pos < 0 || pos >= max_pos)
      return value_error("positions[%" PRId64 "] = %" PRId64 " is out of range [0, max_pos = %" PRId64 ")", t,
                         pos, max_pos);
  }
  const bool write_cache = p.k.present() && p.k_cache.present();
  const int64_t P = p.page_block_size;
  if (write_cache) {
    const int64_t slots = p.k_cache.shape[0] * P;
    std::unordered_map<int64_t, int64_t> first;
    for (int64_t t = 0; t < T; ++t) {
      const int32_t slot = at<int32_t>(p.slot_mapping, t);
      if (slot < 0) continue;  // skipped token
      if (slot >= slots)
        return value_error("slot_mapping[%" PRId64 "] = %" PRId64
                           " is out of range [0, num_blocks * page_block_size = %" PRId64 ") (negative = skip)",
                           t, slot, slots);
      auto [it, inserted] = first.emplace(slot, t);
      if (!inserted)
        return value_error("slot_mapping[%" PRId64 "] = %" PRId64 " repeats slot_mapping[%" PRId64
                           "] (each slot is written at most once)",
                           t, slot, it->second);
    }
  }

  if (p.q.present()) {
    const int64_t H = p.q.shape[1];
    parallel_for(T * H, 64, [&](int64_t begin, int64_t end) {
      float v[kIndexerDim];
      uint8_t codes[kIndexerDim];
      for (int64_t r = begin; r < end; ++r) {
        const int64_t t = r / H, j = r % H;
        for (int i = 0; i < kIndexerDim; ++i) v[i] = bf16_to_float(at<bf16_t>(p.q, t, j, i));
        rope_and_rotate(v, p.rope_cos, p.rope_sin, at<int32_t>(p.positions, t), rotate);
        float sigma = 1.0f;
        if (fp8) {
          sigma = quantize_block(v, p.scale_format, codes);
          for (int i = 0; i < kIndexerDim; ++i) at<uint8_t>(p.q_out, t, j, i) = codes[i];
        } else {
          for (int i = 0; i < kIndexerDim; ++i) at<bf16_t>(p.q_out, t, j, i) = float_to_bf16(v[i]);
        }
        at<float>(p.weights_out, t, j) = indexer_fold_weight(at<float>(p.weights, t, j), sigma);
      }
    });
  }

  if (p.k.present()) {
    parallel_for(T, 64, [&](int64_t begin, int64_t end) {
      float v[kIndexerDim];
      uint8_t codes[kIndexerDim];
      for (int64_t t = begin; t < end; ++t) {
        for (int i = 0; i < kIndexerDim; ++i) v[i] = bf16_to_float(at<bf16_t>(p.k, t, i));
        rope_and_rotate(v, p.rope_cos, p.rope_sin, at<int32_t>(p.positions, t), rotate);
        if (!fp8) {
          for (int i = 0; i < kIndexerDim; ++i) at<bf16_t>(p.k_out, t, i) = float_to_bf16(v[i]);
          continue;
        }
        const float sigma = quantize_block(v, p.scale_format, codes);
        if (p.k_out.present()) {
          for (int i = 0; i < kIndexerDim; ++i) at<uint8_t>(p.k_out, t, i) = codes[i];
          at<float>(p.k_scale_out, t) = sigma;
        }
        if (write_cache) {
          const int32_t slot = at<int32_t>(p.slot_mapping, t);
          if (slot < 0) continue;
          const int64_t page = slot / P, o = slot % P;
          for (int i = 0; i < kIndexerDim; ++i) at<uint8_t>(p.k_cache, page, o * kIndexerDim + i) = codes[i];
          uint8_t bytes[4];
          std::memcpy(bytes, &sigma, 4);  // little-endian fp32, as the GPU writes it
          for (int b = 0; b < 4; ++b) at<uint8_t>(p.k_cache, page, P * kIndexerDim + o * 4 + b) = bytes[b];
        }
      }
    });
  }
  return Status();
}

}  // namespace dsa::detail
