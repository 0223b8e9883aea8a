// CPU reference of OP-MLACACHE (SPEC §7.1). Per token written to slot = page·P + offset:
//   FP8 (u8, 656 B): bytes 0–511 the e4m3 codes of c^KV in 4 tiles of 128 (OP-QUANT, ue8m0 by
//     default or raw), bytes 512–527 the 4 fp32 scales, bytes 528–655 the 64 bf16 k^R copied as is;
//   bf16 (576 values): the row copied bit for bit.
// Negative slots are skipped; slots ≥ num_blocks·P and repeated slots are rejected before anything
// is written. Bit-exact (SPEC §9.1); Accum does not apply.
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <unordered_map>

#include "common/op_list.hpp"
#include "common/parallel.hpp"
#include "reference/access.hpp"
#include "reference/quant_block.hpp"

namespace dsa::detail {

Status reference(const MlaCacheWriteParams& p, Accum) {
  const int64_t n = p.kv.shape[0];
  const int64_t P = p.cache.shape[1];
  const int64_t slots = p.cache.shape[0] * P;
  std::unordered_map<int64_t, int64_t> first;
  for (int64_t t = 0; t < n; ++t) {
    const int32_t slot = at<int32_t>(p.slot_mapping, t);
    if (slot < 0) continue;
    char msg[200];
    if (slot >= slots) {
      std::snprintf(msg, sizeof(msg),
                    "mla_cache_write: slot_mapping[%" PRId64 "] = %d is out of range [0, num_blocks * P = %" PRId64
                    ") (negative = skip)",
                    t, slot, slots);
      return Status(StatusCode::kInvalidArgument, msg);
    }
    auto [it, inserted] = first.emplace(slot, t);
    if (!inserted) {
      std::snprintf(msg, sizeof(msg),
                    "mla_cache_write: slot_mapping[%" PRId64 "] = %d repeats slot_mapping[%" PRId64
                    "] (each slot is written at most once)",
                    t, slot, it->second);
      return Status(StatusCode::kInvalidArgument, msg);
    }
  }
  const bool fp8 = p.cache.dtype == DType::kU8;
  parallel_for(n, 64, [&](int64_t begin, int64_t end) {
    float tile[kQuantBlock];
    uint8_t codes[kQuantBlock];
    for (int64_t t = begin; t < end; ++t) {
      const int32_t slot = at<int32_t>(p.slot_mapping, t);
      if (slot < 0) continue;
      const int64_t page = slot / P, o = slot % P;
      if (!fp8) {
        for (int i = 0; i < kMlaDimQK; ++i) at<bf16_t>(p.cache, page, o, i) = at<bf16_t>(p.kv, t, i);
        continue;
      }
      for (int b = 0; b < kMlaDimV / kQuantBlock; ++b) {
        for (int i = 0; i < kQuantBlock; ++i) tile[i] = bf16_to_float(at<bf16_t>(p.kv, t, b * kQuantBlock + i));
        const float scale = quantize_block(tile, p.scale_format, codes);
        for (int i = 0; i < kQuantBlock; ++i) at<uint8_t>(p.cache, page, o, b * kQuantBlock + i) = codes[i];
        uint8_t bytes[4];
        std::memcpy(bytes, &scale, 4);
        for (int k = 0; k < 4; ++k) at<uint8_t>(p.cache, page, o, kMlaDimV + 4 * b + k) = bytes[k];
      }
      for (int i = 0; i < kMlaDimRope; ++i) {
        const bf16_t v = at<bf16_t>(p.kv, t, kMlaDimV + i);
        uint8_t bytes[2];
        std::memcpy(bytes, &v, 2);
        at<uint8_t>(p.cache, page, o, kMlaDimV + 16 + 2 * i) = bytes[0];
        at<uint8_t>(p.cache, page, o, kMlaDimV + 16 + 2 * i + 1) = bytes[1];
      }
    }
  });
  return Status();
}

}  // namespace dsa::detail
