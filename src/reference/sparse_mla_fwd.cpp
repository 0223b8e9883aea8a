// CPU reference of OP-SMLA-FWD: sparse MLA forward in MQA mode (SPEC §6.2–6.3).
// Per query token: gather the valid kv rows once (fp32 or fp64), then the shared attention core
// (reference/attention_core.hpp): one GEMM for all heads' scores, fp32/fp64 softmax, one GEMM for
// P·V. Invalid slots (i ≥ topk_length[t], idx < 0, idx ≥ s_kv) are skipped and never read;
// duplicates count every occurrence.
#include "common/op_list.hpp"
#include "common/parallel.hpp"
#include "reference/access.hpp"
#include "reference/attention_core.hpp"

namespace dsa::detail {
namespace {

constexpr const char* kOp = "sparse_mla_fwd";

template <typename T>
Status run_sparse_fwd(const SparseMlaFwdParams& p) {
  const int64_t s_q = p.q.shape[0], h = p.q.shape[1], d_qk = p.q.shape[2];
  const int64_t s_kv = p.kv.shape[0], topk = p.indices.shape[1], d_v = p.out.shape[2];
  const bool has_len = p.topk_length.present();
  if (has_len)
    for (int64_t t = 0; t < s_q; ++t) {
      const int32_t n = at<int32_t>(p.topk_length, t);
      if (n < 0 || n > topk)
        return attn::value_error(kOp, "topk_length[%lld] = %d is out of range [0, topk = %lld]", (long long)t, n,
                                 (long long)topk);
    }
  std::vector<float> sink;
  if (p.attn_sink.present())
    for (int64_t i = 0; i < h; ++i) sink.push_back(at<float>(p.attn_sink, i));
  const TensorView* max_logits = p.max_logits.present() ? &p.max_logits : nullptr;
  const T scale = static_cast<T>(p.sm_scale);

  parallel_for(s_q, 1, [&](int64_t begin, int64_t end) {
    attn::Core<T> core(h, d_qk, d_v, topk);
    std::vector<int32_t> rows;
    rows.reserve(static_cast<size_t>(topk));
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n_t = has_len ? at<int32_t>(p.topk_length, t) : topk;
      rows.clear();
      for (int64_t i = 0; i < n_t; ++i) {
        const int32_t idx = at<int32_t>(p.indices, t, i);
        if (idx >= 0 && idx < s_kv) rows.push_back(idx);
      }
      for (int64_t hh = 0; hh < h; ++hh)
        attn::convert_row(attn::elem_ptr(p.q, offset(p.q, t, hh, 0)), p.q.dtype, d_qk, core.q_row(hh));
      core.run(static_cast<int64_t>(rows.size()), scale, [&](int64_t first, int64_t count, T* dst) {
        for (int64_t j = 0; j < count; ++j)
          attn::convert_row(attn::elem_ptr(p.kv, offset(p.kv, rows[first + j], 0)), p.kv.dtype, d_qk,
                            dst + j * core.ld());
      });
      attn::store_token(
          core, h, d_v, sink.empty() ? nullptr : sink.data(), p.lse_base, p.out,
          [&](int64_t hh) { return offset(p.out, t, hh, 0); }, p.lse,
          [&](int64_t hh) { return offset(p.lse, t, hh); }, max_logits,
          max_logits ? t * p.max_logits.stride[0] : 0, max_logits ? p.max_logits.stride[1] : 0);
    }
  });
  return Status();
}

}  // namespace

Status reference(const SparseMlaFwdParams& p, Accum accum) {
  return accum == Accum::kF64 ? run_sparse_fwd<double>(p) : run_sparse_fwd<float>(p);
}

}  // namespace dsa::detail
