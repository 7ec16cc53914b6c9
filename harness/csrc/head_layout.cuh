// head_layout.cuh: the head layout the task-4 kernels run on, and back.
//
// What it is: split_heads turns [B, S, heads*head_dim] into a contiguous
// [B*heads, S, padded_dim] (one matrix per head, columns zero-padded to what the kernel
// was built for), and merge_heads turns the kernel's output back (dropping the padding).
//
// Why it exists: one definition for task 4's two kernel files (the fused float32 kernel
// and the bonus tensor-core kernels) and their reference solutions, which each carried
// a copy. Provided: students don't edit it; harness/build.py puts the kit's own copy on
// the include path of every build (see kit_checks.cuh).

#pragma once

#include <torch/extension.h>

#include <cstdint>

// [B, S, heads*head_dim] -> contiguous [B*heads, S, padded_dim] (zero-padded columns).
static inline torch::Tensor split_heads(const torch::Tensor& x, int64_t num_heads, int64_t padded_dim) {
  const int64_t B = x.size(0), S = x.size(1), d = x.size(2) / num_heads;
  torch::Tensor t = x.view({B, S, num_heads, d}).permute({0, 2, 1, 3});
  if (padded_dim != d) t = torch::constant_pad_nd(t, {0, padded_dim - d}, 0.0);
  return t.contiguous().view({B * num_heads, S, padded_dim});
}

// [B*heads, S, padded_dim] -> [B, S, heads*head_dim] (drops the padding).
static inline torch::Tensor merge_heads(const torch::Tensor& o, int64_t B, int64_t num_heads,
                                        int64_t head_dim) {
  const int64_t S = o.size(1);
  torch::Tensor t = o.view({B, num_heads, S, o.size(2)});
  if (o.size(2) != head_dim) t = t.narrow(3, 0, head_dim);
  return t.permute({0, 2, 1, 3}).contiguous().view({B, S, num_heads * head_dim});
}
