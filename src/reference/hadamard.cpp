// CPU reference of OP-HAD (SPEC §4.5): y = bf16(fl32(128^-0.5) · H128 · x) by the fp32 butterfly
// with strides 1, 2, …, 64. Bit-exact recipe (SPEC §9.1); Accum does not apply. In place allowed.
#include "common/op_list.hpp"
#include "common/parallel.hpp"
#include "reference/access.hpp"
#include "reference/transform_kernels.hpp"

namespace dsa::detail {

Status reference(const HadamardParams& p, Accum) {
  const int64_t n = p.x.shape[0];
  parallel_for(n, 64, [&](int64_t begin, int64_t end) {
    float v[128];
    for (int64_t r = begin; r < end; ++r) {
      for (int i = 0; i < 128; ++i) v[i] = bf16_to_float(at<bf16_t>(p.x, r, i));
      hadamard128_inplace(v);
      for (int i = 0; i < 128; ++i) at<bf16_t>(p.out, r, i) = float_to_bf16(v[i]);
    }
  });
  return Status();
}

}  // namespace dsa::detail
