// The [P, K] table of partial sums of one bucket: per chunk, <s,y>, |s|^2, |y|^2, |g|^2 and,
// for the sign variant, sum |v_i| of each tensor's update direction (y = g_plus - s).
// secant_alpha sums the rows in order, in float64.
#include <ATen/Dispatch.h>

#include <algorithm>

#include "float_lanes.h"
#include "flat_lists.h"
#include "ops.h"

namespace secant_ext {

at::Tensor secant_stats_cpu(at::TensorList s, at::TensorList g_plus, at::TensorList g,
                            at::TensorList x, at::TensorList m, const at::Tensor& state,
                            double momentum, bool nesterov, double weight_decay, bool sign) {
  const char* op = "secant_ext::secant_stats";
  check_state(op, state);
  const auto dtype = check_lists(op, {{"s", s, false}, {"g_plus", g_plus, false},
                                      {"g", g, true}, {"x", x, true}, {"m", m, true}});
  TORCH_CHECK(!sign || weight_decay == 0 || !x.empty(), op,
              ": the sign variant with weight_decay=", weight_decay,
              " needs the parameters x to form its direction, got an empty x");
  const int64_t n = static_cast<int64_t>(s.size());
  const int64_t K = layout::NUM_STATS + (sign ? n : 0);
  const ChunkTable chunks = make_chunks(s);
  const auto table_dtype = dtype == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor table = at::empty({chunks.num_chunks(), K}, state.options().dtype(table_dtype));
  const bool ready = state.data_ptr<double>()[layout::TAKEN] >= 1;
  const bool has_g = !g.empty();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "secant_ext::secant_stats", [&] {
    using L = Lanes<scalar_t>;
    using opmath_t = typename L::opmath_t;
    using fVec = typename L::fVec;
    const Direction<opmath_t> dir(!m.empty(), ready, nesterov, momentum, weight_decay);
    const auto sp = data_ptrs<scalar_t>(s), gpp = data_ptrs<scalar_t>(g_plus);
    const auto gp = data_ptrs<scalar_t>(g), xp = data_ptrs<scalar_t>(x);
    const auto mp = data_ptrs<scalar_t>(m);
    opmath_t* rows = table.data_ptr<opmath_t>();

    for_each_chunk(chunks, [&](int64_t c, const Segment* seg, const Segment* seg_end) {
      opmath_t* row = rows + c * K;
      std::fill(row, row + K, opmath_t(0));
      CascadeSum<scalar_t, layout::NUM_STATS> sums;  // dot, |s|^2, |y|^2, |g|^2 of the chunk
      for (; seg != seg_end; ++seg) {
        const int64_t t = seg->tensor;
        const scalar_t* st = sp[t];
        const scalar_t* gpt = gpp[t];
        const scalar_t* gt = has_g ? gp[t] : nullptr;
        const scalar_t* xt = dir.reads_params() ? xp[t] : nullptr;
        const scalar_t* mt = sign && dir.reads_momentum() ? mp[t] : nullptr;
        CascadeSum<scalar_t, 1> abs_sum;  // sum |v| of this tensor's part of the chunk
        L::blocks(seg->begin, seg->end, [&](int64_t i, int64_t cnt) {
          typename L::Block sv, gpv, gv, xv, mv;
          L::load(st + i, cnt, sv);
          L::load(gpt + i, cnt, gpv);
          if (has_g) L::load(gt + i, cnt, gv);
          auto* acc = sums.front();
          for (int j = 0; j < L::kVecs; ++j) {
            const fVec y = gpv[j] - sv[j];
            acc[layout::COL_DOT][j] = acc[layout::COL_DOT][j] + sv[j] * y;
            acc[layout::COL_S_SQ][j] = acc[layout::COL_S_SQ][j] + sv[j] * sv[j];
            acc[layout::COL_Y_SQ][j] = acc[layout::COL_Y_SQ][j] + y * y;
            if (has_g) acc[layout::COL_G_SQ][j] = acc[layout::COL_G_SQ][j] + gv[j] * gv[j];
          }
          sums.done();
          if (sign) {
            if (xt) L::load(xt + i, cnt, xv);
            if (mt) L::load(mt + i, cnt, mv);
            auto* abs_acc = abs_sum.front();
            for (int j = 0; j < L::kVecs; ++j) {
              fVec d, m_new;
              dir.apply(has_g ? gv[j] : sv[j], xv[j], mv[j], d, m_new);
              abs_acc[0][j] = abs_acc[0][j] + d.abs();
            }
            abs_sum.done();
          }
        });
        if (sign) row[layout::NUM_STATS + t] = abs_sum.total(0);
      }
      row[layout::COL_DOT] = sums.total(layout::COL_DOT);
      row[layout::COL_S_SQ] = sums.total(layout::COL_S_SQ);
      row[layout::COL_Y_SQ] = sums.total(layout::COL_Y_SQ);
      // Without a separate g, g = s: the same sum, in the same order.
      row[layout::COL_G_SQ] = has_g ? sums.total(layout::COL_G_SQ) : row[layout::COL_S_SQ];
    });
  });
  return table;
}

}  // namespace secant_ext
