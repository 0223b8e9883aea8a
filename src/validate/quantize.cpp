// Validators of OP-QUANT (quantize and dequantize), SPEC §4.4.
#include "common/op_list.hpp"

namespace dsa::detail {

void validate(const QuantizeParams& p, ArgCheck& c) {
  c.tensor("x", p.x, {"n", "d"}, kBF16 | kF32);
  c.require(c.dim("d") % kQuantBlock == 0, StatusCode::kUnsupportedShape,
            "x.shape[1] = %lld is not a multiple of the 128-element scale block", (long long)c.dim("d"));
  c.tensor("codes", p.codes, {"n", "d"}, kE4M3);
  c.tensor("scales", p.scales, {"n", "blocks"}, kF32);
  c.require(c.dim("blocks") * kQuantBlock == c.dim("d"), StatusCode::kInvalidArgument,
            "scales.shape[1] = %lld, expected d / 128 = %lld", (long long)c.dim("blocks"),
            (long long)(c.dim("d") / kQuantBlock));
  c.require(p.scale_format == ScaleFormat::kUe8m0 || p.scale_format == ScaleFormat::kRaw,
            StatusCode::kInvalidArgument, "scale_format = %d is not a ScaleFormat", (int)p.scale_format);
}

void validate(const DequantizeParams& p, ArgCheck& c) {
  c.tensor("codes", p.codes, {"n", "d"}, kE4M3);
  c.require(c.dim("d") % kQuantBlock == 0, StatusCode::kUnsupportedShape,
            "codes.shape[1] = %lld is not a multiple of the 128-element scale block",
            (long long)c.dim("d"));
  c.tensor("scales", p.scales, {"n", "blocks"}, kF32);
  c.require(c.dim("blocks") * kQuantBlock == c.dim("d"), StatusCode::kInvalidArgument,
            "scales.shape[1] = %lld, expected d / 128 = %lld", (long long)c.dim("blocks"),
            (long long)(c.dim("d") / kQuantBlock));
  c.tensor("out", p.out, {"n", "d"}, kBF16 | kF32);
}

}  // namespace dsa::detail
