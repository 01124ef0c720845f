// out = x + s: the lookahead point. x is only read, so restoring it afterwards is exact.
#include <ATen/Dispatch.h>

#include <cstring>
#include <torch/library.h>

#include "float_lanes.h"
#include "flat_lists.h"
#include "direct_calls.h"

namespace secant_ext {

void lookahead_cpu(at::TensorList x, at::TensorList s, at::TensorList out) {
  const char* op = "secant_ext::lookahead";
  const auto dtype = check_lists(op, {{"x", x, false}, {"s", s, false}, {"out", out, false}});
  const ChunkTable chunks = make_chunks(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "secant_ext::lookahead", [&] {
    using L = Lanes<scalar_t>;
    const auto xp = data_ptrs<scalar_t>(x), sp = data_ptrs<scalar_t>(s);
    const auto op_ = data_ptrs<scalar_t>(out);
    for_each_chunk(chunks, [&](int64_t, const Segment* seg, const Segment* seg_end) {
      for (; seg != seg_end; ++seg) {
        const scalar_t* xt = xp[seg->tensor];
        const scalar_t* st = sp[seg->tensor];
        scalar_t* ot = op_[seg->tensor];
        L::blocks(seg->begin, seg->end, [&](int64_t i, int64_t n) {
          typename L::Block a, b;
          L::load(xt + i, n, a);
          L::load(st + i, n, b);
          for (int j = 0; j < L::kVecs; ++j) a[j] = a[j] + b[j];
          L::store(ot + i, n, a);
        });
      }
    });
  });
}

}  // namespace secant_ext

namespace secant_ext {

// The in-place lookahead, for code that reads the parameters' own storage (FSDP2's
// all-gather, captured CUDA graphs): backup = x, then x = x + s, in one pass. `restore`
// copies the backup back, which is exact; (x + s) - s is not.
void lookahead_inplace_cpu(at::TensorList x, at::TensorList s, at::TensorList backup) {
  const char* op = "secant_ext::lookahead_inplace";
  const auto dtype =
      check_lists(op, {{"x", x, false}, {"s", s, false}, {"backup", backup, false}});
  const ChunkTable chunks = make_chunks(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "secant_ext::lookahead_inplace", [&] {
    using L = Lanes<scalar_t>;
    const auto xp = data_ptrs<scalar_t>(x), sp = data_ptrs<scalar_t>(s);
    const auto bp = data_ptrs<scalar_t>(backup);
    for_each_chunk(chunks, [&](int64_t, const Segment* seg, const Segment* seg_end) {
      for (; seg != seg_end; ++seg) {
        scalar_t* xt = xp[seg->tensor];
        const scalar_t* st = sp[seg->tensor];
        scalar_t* bt = bp[seg->tensor];
        L::blocks(seg->begin, seg->end, [&](int64_t i, int64_t n) {
          // The bits of x, copied as bytes: no conversion can touch a NaN payload.
          std::memcpy(static_cast<void*>(bt + i), xt + i, n * sizeof(scalar_t));
          typename L::Block a, b;
          L::load(xt + i, n, a);
          L::load(st + i, n, b);
          for (int j = 0; j < L::kVecs; ++j) a[j] = a[j] + b[j];
          L::store(xt + i, n, a);
        });
      }
    });
  });
}

void restore_cpu(at::TensorList x, at::TensorList backup) {
  const char* op = "secant_ext::restore";
  check_lists(op, {{"x", x, false}, {"backup", backup, false}});
  const ChunkTable chunks = make_chunks(x);
  const auto xp = data_ptrs<uint8_t>(x), bp = data_ptrs<uint8_t>(backup);
  const int64_t item = x.empty() ? 0 : x[0].element_size();
  for_each_chunk(chunks, [&](int64_t, const Segment* seg, const Segment* seg_end) {
    for (; seg != seg_end; ++seg) {
      std::memcpy(xp[seg->tensor] + seg->begin * item, bp[seg->tensor] + seg->begin * item,
                  static_cast<size_t>((seg->end - seg->begin) * item));
    }
  });
}

}  // namespace secant_ext

// The CPU kernels of this file's ops and their direct calls (direct_calls.h); their schemas
// are secant_ext/_op_table.py's, which secant_ext._ops defines before the ops are used.
TORCH_LIBRARY_IMPL(secant_ext, CPU, m) {
  secant_ext::direct_calls::impl<&secant_ext::lookahead_cpu>(m, "lookahead");
  secant_ext::direct_calls::impl<&secant_ext::lookahead_inplace_cpu>(m, "lookahead_inplace");
  secant_ext::direct_calls::impl<&secant_ext::restore_cpu>(m, "restore");
}
