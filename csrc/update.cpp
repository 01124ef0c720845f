// x <- x - alpha * d (or the sign step) and the new momentum, for every tensor of a bucket;
// nothing is written when the group state says the step was skipped. Math in opmath (float
// for fp32/bf16/fp16, double for fp64): a bf16 or fp16 value is rounded once, when stored.
#include <ATen/Dispatch.h>

#include <algorithm>
#include <vector>

#include "float_lanes.h"
#include "flat_lists.h"
#include "ops.h"

namespace secant_ext {

namespace {

// mean |v_i| per tensor from the sign columns of the stats table (float64, row order).
template <typename T>
void mean_abs(const at::Tensor& stats, at::TensorList x, std::vector<double>& out) {
  const int64_t rows = stats.size(0), cols = stats.size(1), n = static_cast<int64_t>(x.size());
  const T* p = stats.data_ptr<T>();
  out.assign(n, 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    const T* row = p + r * cols + layout::NUM_STATS;
    for (int64_t i = 0; i < n; ++i) out[i] += static_cast<double>(row[i]);
  }
  for (int64_t i = 0; i < n; ++i) out[i] /= static_cast<double>(std::max<int64_t>(x[i].numel(), 1));
}

}  // namespace

void update_cpu(at::TensorList x, at::TensorList g, at::TensorList m, const at::Tensor& stats_in,
                const at::Tensor& state, double momentum, bool nesterov, double weight_decay,
                int64_t sign_mode) {
  const char* op = "secant_ext::update";
  check_state(op, state);
  TORCH_CHECK(sign_mode == layout::SIGN_NONE || sign_mode == layout::SIGN_SCALED ||
                  sign_mode == layout::SIGN_UNSCALED,
              op, ": unknown sign_mode ", sign_mode, " (0 none, 1 scaled, 2 unscaled)");
  const auto dtype = check_lists(op, {{"x", x, false}, {"g", g, false}, {"m", m, true}});
  std::vector<double> scale;
  if (sign_mode == layout::SIGN_SCALED) {
    const int64_t need = layout::NUM_STATS + static_cast<int64_t>(x.size());
    TORCH_CHECK(stats_in.device().is_cpu(), op, ": stats is on ", stats_in.device());
    TORCH_CHECK(stats_in.dim() == 2 && stats_in.size(1) >= need, op,
                ": the scaled sign step needs a [P, ", need, "] stats table (one sum |v| "
                "column per tensor, from secant_stats(..., sign=True)), got shape ",
                stats_in.sizes());
    TORCH_CHECK(stats_in.scalar_type() == at::kFloat || stats_in.scalar_type() == at::kDouble,
                op, ": stats must be float32 or float64, got ", stats_in.scalar_type());
    const at::Tensor stats = stats_in.contiguous();
    if (stats.scalar_type() == at::kDouble) {
      mean_abs<double>(stats, x, scale);
    } else {
      mean_abs<float>(stats, x, scale);
    }
  }
  const double* st = state.data_ptr<double>();
  if (st[layout::LAST_SKIPPED] != 0) return;
  const double alpha = st[layout::ALPHA];
  const bool ready = st[layout::MOMENTUM_READY] != 0;
  const ChunkTable chunks = make_chunks(x);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "secant_ext::update", [&] {
    using L = Lanes<scalar_t>;
    using opmath_t = typename L::opmath_t;
    using fVec = typename L::fVec;
    const Direction<opmath_t> dir(!m.empty(), ready, nesterov, momentum, weight_decay);
    const auto xp = data_ptrs<scalar_t>(x), gp = data_ptrs<scalar_t>(g);
    const auto mp = data_ptrs<scalar_t>(m);
    // The step size of each tensor: alpha, times mean |v_i| for the scaled sign step (the
    // reference multiplies the two in the compute type before the sign).
    std::vector<opmath_t> coef(x.size(), static_cast<opmath_t>(alpha));
    for (size_t i = 0; i < scale.size(); ++i) coef[i] *= static_cast<opmath_t>(scale[i]);
    const bool use_sign = sign_mode != layout::SIGN_NONE;

    for_each_chunk(chunks, [&](int64_t, const Segment* seg, const Segment* seg_end) {
      for (; seg != seg_end; ++seg) {
        const int64_t t = seg->tensor;
        scalar_t* xt = xp[t];
        const scalar_t* gt = gp[t];
        scalar_t* mt = dir.has_momentum ? mp[t] : nullptr;
        const fVec step(coef[t]);
        L::blocks(seg->begin, seg->end, [&](int64_t i, int64_t cnt) {
          typename L::Block xv, gv, mv, m_new;
          L::load(xt + i, cnt, xv);
          L::load(gt + i, cnt, gv);
          if (dir.reads_momentum()) L::load(mt + i, cnt, mv);
          for (int j = 0; j < L::kVecs; ++j) {
            fVec d;
            dir.apply(gv[j], xv[j], mv[j], d, m_new[j]);
            xv[j] = xv[j] - step * (use_sign ? L::sign(d) : d);
          }
          L::store(xt + i, cnt, xv);
          if (mt) L::store(mt + i, cnt, m_new);
        });
      }
    });
  });
}

}  // namespace secant_ext
