// Validator of OP-IDX-BWD, the indexer backward in exact mode (SPEC §8.4). Shapes, dtypes, strides
// and scalars only; the CPU reference checks the values (ranges, positions).
#include "common/op_list.hpp"

namespace dsa::detail {

void validate(const IndexerBwdParams& p, ArgCheck& c) {
  // The transforms-only form: any of dq_post, dk_post, dw_post selects it; then all three are
  // required, G and its selectors must be absent, and q, k, weights are optional (not read).
  const bool post = p.dq_post.present() || p.dk_post.present() || p.dw_post.present();
  const Need score_inputs = post ? Need::kOptional : Need::kRequired;
  c.tensor("q", p.q, {"s_q", "h_idx", "128"}, kBF16 | kF32, score_inputs);
  c.tensor("k", p.k, {"s_kv", "128"}, kBF16 | kF32, score_inputs);
  c.tensor("weights", p.weights, {"s_q", "h_idx"}, kF32, score_inputs);
  const bool sparse = p.grad_indices.present();
  if (post) {
    c.require(!p.grad.present(), StatusCode::kInvalidArgument,
              "grad is given together with dq_post/dk_post/dw_post (the transforms-only form takes "
              "no G: give either grad or dq_post, dk_post and dw_post)");
    c.require(!sparse, StatusCode::kInvalidArgument,
              "grad_indices is given together with dq_post/dk_post/dw_post (the transforms-only form "
              "takes no G)");
    c.require(!p.ks.present(), StatusCode::kInvalidArgument,
              "ks is given together with dq_post/dk_post/dw_post (the transforms-only form takes no "
              "key ranges)");
    c.require(!p.ke.present(), StatusCode::kInvalidArgument,
              "ke is given together with dq_post/dk_post/dw_post (the transforms-only form takes no "
              "key ranges)");
    c.tensor("dq_post", p.dq_post, {"s_q", "h_idx", "128"}, kF32);
    c.tensor("dk_post", p.dk_post, {"s_kv", "128"}, kF32);
    c.tensor("dw_post", p.dw_post, {"s_q", "h_idx"}, kF32);
  } else if (sparse) {
    c.tensor("grad", p.grad, {"s_q", "k_sel"}, kF32);
    c.tensor("grad_indices", p.grad_indices, {"s_q", "k_sel"}, kI32);
    c.require(!p.ks.present(), StatusCode::kInvalidArgument,
              "ks is given together with grad_indices (the sparse form takes no key ranges)");
    c.require(!p.ke.present(), StatusCode::kInvalidArgument,
              "ke is given together with grad_indices (the sparse form takes no key ranges)");
  } else {
    c.tensor("grad", p.grad, {"s_q", "s_kv"}, kF32);
    c.tensor("ks", p.ks, {"s_q"}, kI32, Need::kOptional);
    c.tensor("ke", p.ke, {"s_q"}, kI32, Need::kOptional);
  }
  c.tensor("q_positions", p.q_positions, {"s_q"}, kI32);
  c.tensor("k_positions", p.k_positions, {"s_kv"}, kI32);
  c.tensor("rope_cos", p.rope_cos, {"max_pos", "32"}, kF32);
  c.tensor("rope_sin", p.rope_sin, {"max_pos", "32"}, kF32);
  c.tensor("dq_raw", p.dq_raw, {"s_q", "h_idx", "128"}, kF32 | kBF16);
  c.tensor("dk_raw", p.dk_raw, {"s_kv", "128"}, kF32 | kBF16);
  c.tensor("dw_raw", p.dw_raw, {"s_q", "h_idx"}, kF32 | kBF16);
  // Outputs: distinct elements, and no aliasing of any input or of each other.
  require_distinct_elements(c, "dq_raw", p.dq_raw);
  require_distinct_elements(c, "dk_raw", p.dk_raw);
  require_distinct_elements(c, "dw_raw", p.dw_raw);
  const char* in_names[] = {"q", "k", "weights", "grad", "grad_indices", "ks", "ke",
                            "q_positions", "k_positions", "rope_cos", "rope_sin",
                            "dq_post", "dk_post", "dw_post"};
  const TensorView* ins[] = {&p.q, &p.k, &p.weights, &p.grad, &p.grad_indices, &p.ks, &p.ke,
                             &p.q_positions, &p.k_positions, &p.rope_cos, &p.rope_sin,
                             &p.dq_post, &p.dk_post, &p.dw_post};
  for (int i = 0; i < 14; ++i) {
    require_no_overlap(c, "dq_raw", p.dq_raw, in_names[i], *ins[i]);
    require_no_overlap(c, "dk_raw", p.dk_raw, in_names[i], *ins[i]);
    require_no_overlap(c, "dw_raw", p.dw_raw, in_names[i], *ins[i]);
  }
  require_no_overlap(c, "dk_raw", p.dk_raw, "dq_raw", p.dq_raw);
  require_no_overlap(c, "dw_raw", p.dw_raw, "dq_raw", p.dq_raw);
  require_no_overlap(c, "dw_raw", p.dw_raw, "dk_raw", p.dk_raw);
}

}  // namespace dsa::detail
