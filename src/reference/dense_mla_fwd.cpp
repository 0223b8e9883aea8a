// CPU reference of dense MLA forward (MQA mode): the SPEC §6.2 math over every key of the
// per-row range [ks[t], ke[t]) of packed tokens (a ragged causal batch: ks = sequence start,
// ke = t + 1). Same attention core as the sparse ops (reference/attention_core.hpp); long ranges
// are processed in key chunks with an online softmax.
#include <algorithm>

#include "common/op_list.hpp"
#include "common/parallel.hpp"
#include "reference/access.hpp"
#include "reference/attention_core.hpp"

namespace dsa::detail {
namespace {

constexpr const char* kOp = "dense_mla_fwd";

template <typename T>
Status run_dense_fwd(const DenseMlaFwdParams& p) {
  const int64_t s_q = p.q.shape[0], h = p.q.shape[1], d_qk = p.q.shape[2];
  const int64_t s_kv = p.kv.shape[0], d_v = p.out.shape[2];
  int64_t max_keys = 0;
  for (int64_t t = 0; t < s_q; ++t) {
    const int32_t ks = at<int32_t>(p.ks, t), ke = at<int32_t>(p.ke, t);
    if (ks < 0 || ks > s_kv)
      return attn::value_error(kOp, "ks[%lld] = %d is out of range [0, s_kv = %lld]", (long long)t, ks,
                               (long long)s_kv);
    if (ke < ks || ke > s_kv)
      return attn::value_error(kOp, "ke[%lld] = %d is out of range [ks[%lld] = %d, s_kv = %lld]", (long long)t, ke,
                               (long long)t, ks, (long long)s_kv);
    max_keys = std::max<int64_t>(max_keys, ke - ks);
  }
  const TensorView* max_logits = p.max_logits.present() ? &p.max_logits : nullptr;
  const T scale = static_cast<T>(p.sm_scale);

  parallel_for(s_q, 1, [&](int64_t begin, int64_t end) {
    attn::Core<T> core(h, d_qk, d_v, max_keys);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t ks = at<int32_t>(p.ks, t), ke = at<int32_t>(p.ke, t);
      for (int64_t hh = 0; hh < h; ++hh)
        attn::convert_row(attn::elem_ptr(p.q, offset(p.q, t, hh, 0)), p.q.dtype, d_qk, core.q_row(hh));
      core.run(ke - ks, scale, [&](int64_t first, int64_t count, T* dst) {
        for (int64_t j = 0; j < count; ++j)
          attn::convert_row(attn::elem_ptr(p.kv, offset(p.kv, ks + first + j, 0)), p.kv.dtype, d_qk,
                            dst + j * core.ld());
      });
      attn::store_token(
          core, h, d_v, nullptr, p.lse_base, p.out, [&](int64_t hh) { return offset(p.out, t, hh, 0); }, p.lse,
          [&](int64_t hh) { return offset(p.lse, t, hh); }, max_logits,
          max_logits ? t * p.max_logits.stride[0] : 0, max_logits ? p.max_logits.stride[1] : 0);
    }
  });
  return Status();
}

}  // namespace

Status reference(const DenseMlaFwdParams& p, Accum accum) {
  return accum == Accum::kF64 ? run_dense_fwd<double>(p) : run_dense_fwd<float>(p);
}

}  // namespace dsa::detail
