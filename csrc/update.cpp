// x <- x - alpha * d (or the sign step) and the new momentum, for every tensor of a bucket;
// nothing is written when the group state says the step was skipped. Math in opmath (float
// for fp32/bf16/fp16, double for fp64): a bf16 or fp16 value is rounded once, when stored.
#include <ATen/Dispatch.h>

#include <algorithm>
#include <vector>
#include <torch/library.h>

#include "float_lanes.h"
#include "flat_lists.h"
#include "direct_calls.h"

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

// f(Variant<...>{}) for the runtime flags; ready and nesterov only matter with momentum, so
// that leaves 20 variants per dtype instead of 32.
template <typename F>
void dispatch_variant(bool decay, bool momentum, bool ready, bool nesterov, bool sign,
                      const F& f) {
  with_flag(decay, [&](auto kDecay) {
    with_flag(sign, [&](auto kSign) {
      if (!momentum) return f(Variant<kDecay.value, false, false, false, kSign.value>{});
      with_flag(ready, [&](auto kReady) {
        with_flag(nesterov, [&](auto kNesterov) {
          f(Variant<kDecay.value, true, kReady.value, kNesterov.value, kSign.value>{});
        });
      });
    });
  });
}

// x[begin, end) -= step * d (or * sign(d)), and m[begin, end) = m_new when V has momentum.
// dir is taken by value: a local copy stays in registers across the stores.
template <typename V, typename scalar_t, typename opmath_t>
void update_segment(scalar_t* x, const scalar_t* g, scalar_t* m, int64_t begin, int64_t end,
                    const Direction<opmath_t> dir, opmath_t step_size) {
  using L = Lanes<scalar_t>;
  using fVec = typename L::fVec;
  const fVec step(step_size);
  const auto block = [&](int64_t i, int64_t cnt) {
    typename L::Block xv, gv, mv, m_new;
    L::load(x + i, cnt, xv);
    L::load(g + i, cnt, gv);
    if constexpr (V::momentum && V::ready) L::load(m + i, cnt, mv);
    for (int j = 0; j < L::kVecs; ++j) {
      fVec d;
      dir.apply_as(V::decay, V::momentum, V::ready, V::nesterov, gv[j], xv[j], mv[j], d,
                   m_new[j]);
      if constexpr (V::sign) d = L::sign(d);
      xv[j] = xv[j] - step * d;
    }
    L::store(x + i, cnt, xv);
    if constexpr (V::momentum) L::store(m + i, cnt, m_new);
  };
  int64_t i = begin;
  for (; i + L::kWidth <= end; i += L::kWidth) block(i, L::kWidth);
  if (i < end) block(i, end - i);
}

}  // namespace

void update_cpu(at::TensorList x, at::TensorList g, at::TensorList m, const at::Tensor& stats_in,
                const at::Tensor& state, double momentum, bool nesterov, double weight_decay,
                int64_t sign_mode) {
  const char* op = "secant_ext::update";
  check_state(op, state);
  check_sign_mode(op, sign_mode);
  const auto dtype = check_lists(op, {{"x", x, false}, {"g", g, false}, {"m", m, true}});
  std::vector<double> scale;
  if (sign_mode == layout::SIGN_SCALED) {
    const int64_t need = layout::NUM_STATS + static_cast<int64_t>(x.size());
    TORCH_CHECK(stats_in.device().is_cpu(), op, ": stats is on ", stats_in.device());
    TORCH_CHECK(stats_in.dim() == 2 && stats_in.size(1) >= need, op,
                ": the scaled sign step needs a [P, ", need, "] stats table (one sum |v| "
                "column per tensor, from secant_stats(..., sign_mode=SIGN_SCALED)), got shape ",
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
  const double alpha = st[layout::STEP_SIZE];  // alpha * lr * clip
  const bool ready = st[layout::MOMENTUM_READY] != 0;
  const ChunkTable chunks = make_chunks(x);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "secant_ext::update", [&] {
    using L = Lanes<scalar_t>;
    using opmath_t = typename L::opmath_t;
    const Direction<opmath_t> dir(!m.empty(), ready, nesterov, momentum, weight_decay);
    const auto xp = data_ptrs<scalar_t>(x), gp = data_ptrs<scalar_t>(g);
    const auto mp = data_ptrs<scalar_t>(m);
    // The step size of each tensor: alpha, times mean |v_i| for the scaled sign step (the
    // reference multiplies the two in the compute type before the sign).
    std::vector<opmath_t> coef(x.size(), static_cast<opmath_t>(alpha));
    for (size_t i = 0; i < scale.size(); ++i) coef[i] *= static_cast<opmath_t>(scale[i]);

    dispatch_variant(dir.has_decay, dir.has_momentum, ready, nesterov,
                     sign_mode != layout::SIGN_NONE, [&](auto variant) {
      using V = decltype(variant);
      for_each_chunk(chunks, [&](int64_t, const Segment* seg, const Segment* seg_end) {
        for (; seg != seg_end; ++seg) {
          const int64_t t = seg->tensor;
          update_segment<V>(xp[t], gp[t], V::momentum ? mp[t] : nullptr, seg->begin, seg->end,
                            dir, coef[t]);
        }
      });
    });
  });
}

}  // namespace secant_ext

// The CPU kernels of this file's ops and their direct calls (direct_calls.h); their schemas
// are secant_ext/_op_table.py's, which secant_ext._ops defines before the ops are used.
TORCH_LIBRARY_IMPL(secant_ext, CPU, m) {
  secant_ext::direct_calls::impl<&secant_ext::update_cpu>(m, "update");
}
