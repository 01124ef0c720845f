// The CPU kernels of the secant_ext ops; schemas and registration in register.cpp.
#pragma once

#include <ATen/ATen.h>

namespace secant_ext {

void lookahead_cpu(at::TensorList x, at::TensorList s, at::TensorList out);

void lookahead_inplace_cpu(at::TensorList x, at::TensorList s, at::TensorList backup);

void restore_cpu(at::TensorList x, at::TensorList backup);

void average_cpu(at::TensorList avg, at::TensorList x, const at::Tensor& state);

at::Tensor secant_stats_cpu(at::TensorList s, at::TensorList g_plus, at::TensorList g,
                            at::TensorList x, at::TensorList m, const at::Tensor& state,
                            double momentum, bool nesterov, double weight_decay, int64_t sign_mode);

void secant_alpha_cpu(const at::Tensor& stats, const at::Tensor& state, int64_t rule,
                      bool safeguard, bool measure);

void update_cpu(at::TensorList x, at::TensorList g, at::TensorList m, const at::Tensor& stats,
                const at::Tensor& state, double momentum, bool nesterov, double weight_decay,
                int64_t sign_mode);

at::Tensor adam_stats_cpu(at::TensorList u, at::TensorList g_plus, at::TensorList s,
                          at::TensorList g, const at::Tensor& state);

void adam_alpha_cpu(const at::Tensor& stats, const at::Tensor& state, double beta1, double beta2,
                    double ema, double growth, bool measure, bool record);

void adam_update_cpu(at::TensorList x, at::TensorList g, at::TensorList m, at::TensorList v,
                     at::TensorList u, at::TensorList avg, const at::Tensor& state, double beta1,
                     double beta2, double eps, double weight_decay);

void adam_previous_step_cpu(at::TensorList x, at::TensorList m, at::TensorList v,
                            at::TensorList u, const at::Tensor& state, double eps,
                            double weight_decay);

}  // namespace secant_ext
