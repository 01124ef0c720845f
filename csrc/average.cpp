// avg <- avg + w * (x - avg) for every tensor of a bucket, w = AVG_WEIGHT of the group state
// (max(1 / steps taken, AVG_FLOOR)): the averaged iterate of `average=True`, one pass after
// the update. Math in opmath, one rounding when stored; nothing is written when the group
// state says the step was skipped.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "float_lanes.h"
#include "flat_lists.h"
#include "direct_calls.h"

namespace secant_ext {

void average_cpu(at::TensorList avg, at::TensorList x, const at::Tensor& state) {
  const char* op = "secant_ext::average";
  check_state(op, state);
  const auto dtype = check_lists(op, {{"avg", avg, false}, {"x", x, false}});
  const double* st = state.data_ptr<double>();
  if (st[layout::LAST_SKIPPED] != 0) return;
  const double weight = st[layout::AVG_WEIGHT];
  const ChunkTable chunks = make_chunks(avg);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "secant_ext::average", [&] {
    using L = Lanes<scalar_t>;
    using fVec = typename L::fVec;
    const fVec w(static_cast<typename L::opmath_t>(weight));
    const auto ap = data_ptrs<scalar_t>(avg), xp = data_ptrs<scalar_t>(x);
    for_each_chunk(chunks, [&](int64_t, const Segment* seg, const Segment* seg_end) {
      for (; seg != seg_end; ++seg) {
        scalar_t* at_ = ap[seg->tensor];
        const scalar_t* xt = xp[seg->tensor];
        L::blocks(seg->begin, seg->end, [&](int64_t i, int64_t n) {
          typename L::Block a, b;
          L::load(at_ + i, n, a);
          L::load(xt + i, n, b);
          for (int j = 0; j < L::kVecs; ++j) a[j] = a[j] + w * (b[j] - a[j]);
          L::store(at_ + i, n, a);
        });
      }
    });
  });
}

}  // namespace secant_ext

// The CPU kernels of this file's ops and their direct calls (direct_calls.h); their schemas
// are secant_ext/_op_table.py's, which secant_ext._ops defines before the ops are used.
TORCH_LIBRARY_IMPL(secant_ext, CPU, m) {
  secant_ext::direct_calls::impl<&secant_ext::average_cpu>(m, "average");
}
