// Validators of the fused indexer → top-k (IndexerTopKParams): the input rules of OP-IDXLOGITS and
// the output rules of OP-TOPK (shared with those validators, validate/shared.hpp), the domain, the
// chunk size, and no aliasing between outputs and inputs (a chunk's outputs are written while
// later chunks still read ks, ke, q and weights). Key ranges are values, checked by the reference.
#include "validate/shared.hpp"

namespace dsa::detail {

void validate(const IndexerTopKParams& p, ArgCheck& c) {
  validate_indexer_logits_inputs(p, c);
  if (!c.ok()) return;

  c.require(p.domain != IndexDomain::kPagedSlot, StatusCode::kInvalidArgument,
            "domain = kPagedSlot is not supported by the fused op (prefill indices are absolute or "
            "relative key positions); run indexer_logits + topk for paged slots");
  validate_topk_outputs(p, "s_q", c);
  c.require(p.chunk_rows >= 0, StatusCode::kInvalidArgument,
            "chunk_rows = %d, expected >= 0 (0 = automatic)", (int)p.chunk_rows);

  const struct {
    const char* name;
    const TensorView* view;
  } outs[] = {{"indices", &p.indices}, {"out_scores", &p.out_scores}, {"k_eff", &p.k_eff}},
    ins[] = {{"q", &p.q},   {"k", &p.k},   {"k_scale", &p.k_scale}, {"weights", &p.weights},
             {"ks", &p.ks}, {"ke", &p.ke}};
  for (size_t o = 0; o < 3; ++o) {
    for (const auto& in : ins) require_no_overlap(c, outs[o].name, *outs[o].view, in.name, *in.view);
    for (size_t o2 = o + 1; o2 < 3; ++o2)
      require_no_overlap(c, outs[o].name, *outs[o].view, outs[o2].name, *outs[o2].view);
  }
}

}  // namespace dsa::detail
