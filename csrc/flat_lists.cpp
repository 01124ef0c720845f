#include "flat_lists.h"

#include <algorithm>

namespace secant_ext {

namespace {

bool supported_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf;
}

}  // namespace

at::ScalarType check_lists(const char* op, const std::vector<NamedList>& lists) {
  TORCH_CHECK(!lists.empty(), op, ": no tensor list given");
  const auto& lead = lists[0];
  const size_t n = lead.tensors.size();
  const at::Tensor* first = nullptr;  // the first tensor seen sets dtype for the call
  for (const auto& list : lists) {
    const bool absent = list.may_be_empty && list.tensors.empty();
    TORCH_CHECK(absent || list.tensors.size() == n, op, ": ", list.name, " has ",
                list.tensors.size(), " tensors but ", lead.name, " has ", n,
                list.may_be_empty ? " (pass an empty list to leave it out)" : "");
    for (size_t i = 0; i < list.tensors.size(); ++i) {
      const at::Tensor& t = list.tensors[i];
      const at::Tensor& ref = lead.tensors[i];
      TORCH_CHECK(t.defined(), op, ": ", list.name, "[", i, "] is an undefined tensor");
      TORCH_CHECK(t.device().is_cpu(), op, ": ", list.name, "[", i, "] is on ", t.device(),
                  "; these are the CPU kernels (use the triton backend for CUDA)");
      TORCH_CHECK(supported_dtype(t.scalar_type()), op, ": ", list.name, "[", i, "] has dtype ",
                  t.scalar_type(), "; supported: float32, float64, bfloat16, float16");
      if (first == nullptr) first = &t;
      TORCH_CHECK(t.scalar_type() == first->scalar_type(), op, ": ", list.name, "[", i,
                  "] has dtype ", t.scalar_type(), " but the call's first tensor has ",
                  first->scalar_type(), "; all tensors of one call share one dtype (the "
                  "optimizer buckets parameters by dtype)");
      TORCH_CHECK(t.sizes() == ref.sizes(), op, ": ", list.name, "[", i, "] has shape ",
                  t.sizes(), " but ", lead.name, "[", i, "] has shape ", ref.sizes());
      TORCH_CHECK(t.strides() == ref.strides(), op, ": ", list.name, "[", i, "] has strides ",
                  t.strides(), " but ", lead.name, "[", i, "] has strides ", ref.strides(),
                  "; the tensors of one parameter must share strides, because the kernel "
                  "walks them as flat storage");
      TORCH_CHECK(t.is_non_overlapping_and_dense(), op, ": ", list.name, "[", i,
                  "] (shape ", t.sizes(), ", strides ", t.strides(), ") is not dense; the "
                  "kernel walks each tensor as flat storage");
    }
  }
  return first == nullptr ? at::kFloat : first->scalar_type();
}

void check_state(const char* op, const at::Tensor& state) {
  TORCH_CHECK(state.device().is_cpu(), op, ": state is on ", state.device(),
              "; these are the CPU kernels");
  TORCH_CHECK(state.scalar_type() == at::kDouble, op, ": state must be float64, got ",
              state.scalar_type());
  TORCH_CHECK(state.dim() == 1 && state.numel() == layout::STATE_SIZE && state.is_contiguous(),
              op, ": state must be a contiguous 1-D tensor of ", layout::STATE_SIZE,
              " elements, got shape ", state.sizes());
}

namespace {

template <typename T>
void column_sums(const at::Tensor& stats, double (&sums)[layout::NUM_STATS]) {
  const int64_t rows = stats.size(0), cols = stats.size(1);
  const T* p = stats.data_ptr<T>();
  for (int64_t k = 0; k < layout::NUM_STATS; ++k) sums[k] = 0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < layout::NUM_STATS; ++k) sums[k] += static_cast<double>(p[r * cols + k]);
  }
}

}  // namespace

void stats_column_sums(const char* op, const at::Tensor& stats_in,
                       double (&sums)[layout::NUM_STATS]) {
  TORCH_CHECK(stats_in.device().is_cpu(), op, ": stats is on ", stats_in.device());
  TORCH_CHECK(stats_in.dim() == 2 && stats_in.size(1) >= layout::NUM_STATS, op,
              ": stats must be a [P, K] table with K >= ", layout::NUM_STATS, ", got shape ",
              stats_in.sizes());
  TORCH_CHECK(stats_in.scalar_type() == at::kFloat || stats_in.scalar_type() == at::kDouble, op,
              ": stats must be float32 or float64, got ", stats_in.scalar_type());
  const at::Tensor stats = stats_in.contiguous();
  if (stats.scalar_type() == at::kDouble) {
    column_sums<double>(stats, sums);
  } else {
    column_sums<float>(stats, sums);
  }
}

void check_sign_mode(const char* op, int64_t sign_mode) {
  TORCH_CHECK(sign_mode == layout::SIGN_NONE || sign_mode == layout::SIGN_SCALED ||
                  sign_mode == layout::SIGN_UNSCALED,
              op, ": unknown sign_mode ", sign_mode, " (", layout::SIGN_NONE, " none, ",
              layout::SIGN_SCALED, " scaled, ", layout::SIGN_UNSCALED, " unscaled)");
}

ChunkTable make_chunks(at::TensorList tensors) {
  int64_t total = 0;
  for (const auto& t : tensors) total += t.numel();
  const int64_t chunks = std::max<int64_t>(1, (total + kChunkNumel - 1) / kChunkNumel);
  ChunkTable table;
  table.first.assign(chunks + 1, 0);
  table.segments.reserve(tensors.size() + chunks);
  int64_t global = 0;  // global index of the next element
  for (size_t i = 0; i < tensors.size(); ++i) {
    const int64_t n = tensors[i].numel();
    for (int64_t done = 0; done < n;) {
      const int64_t chunk_end = (global / kChunkNumel + 1) * kChunkNumel;
      const int64_t len = std::min(n - done, chunk_end - global);
      table.segments.push_back({static_cast<int64_t>(i), done, done + len});
      ++table.first[global / kChunkNumel + 1];
      done += len;
      global += len;
    }
  }
  for (int64_t c = 0; c < chunks; ++c) table.first[c + 1] += table.first[c];
  return table;
}

}  // namespace secant_ext
