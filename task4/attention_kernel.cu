// Task 4: FlashAttention forward as ONE fused CUDA kernel (the file you edit).
//
//   O = softmax(Q K^T * scale  [+ causal mask]) V        (per batch item and head)
//
// Translate your Task 3 tiles into CUDA: each thread block takes B_r query rows
// of one head, keeps them in shared memory, and walks over the keys and values
// in tiles of B_c rows, keeping a running maximum m, a running sum l and a
// running output o for each of its rows. The S x S score matrix is never
// stored. Follow the TODOs (README, Task 4), build with `python -m task4.compile`
// and test with `python -m task4.test` (`--no-perf` skips the timings).
//
// The parts marked "provided" are given. The host function custom_flash_attention
// at the bottom is yours to change too: the tile sizes B_r and B_c (and the
// threads per block) are the tuning knobs of this task.

#include <torch/extension.h>

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include "kit_checks.cuh"  // KIT_CHECK and the input checks (harness/csrc; provided)
#include "head_layout.cuh"  // split_heads, merge_heads (harness/csrc; provided)

#include <cmath>
#include <string>

// ============================================================================
// Provided: layout helpers (the input checks and allow_dynamic_shared_memory()
// are in kit_checks.cuh)
// ============================================================================

// The largest head_dim this kernel supports (the shared-memory tiles are sized for it).
constexpr int MAX_HEAD_DIM = 128;

// split_heads and merge_heads (the head layout the kernels run on) are in head_layout.cuh.

// ============================================================================
// Your kernel
// ============================================================================

// Tile sizes: your tuning knobs (README, Task 4). Shared memory grows with them;
// allow_dynamic_shared_memory() raises the 48 KB default and tells you when a
// choice no longer fits. Start with 32 x 32, then measure larger ones.
constexpr int B_r = 32;       // query rows per block
constexpr int B_c = 32;       // key/value rows per step
constexpr int THREADS = B_r;  // threads per block (one per query row, to start with)

// Q, K, V, O: [batch*heads, seq_len, head_dim], contiguous (one matrix per head).
// Grid: blockIdx.x = query tile, blockIdx.y = batch*head (see the host code below).
__global__ void flash_attention_kernel(const float* __restrict__ Q, const float* __restrict__ K,
                                       const float* __restrict__ V, float* __restrict__ O,
                                       int seq_len, int head_dim, float scale, bool causal) {
  // Shared memory reserved by the host code (dynamic: head_dim is known only at run time).
  extern __shared__ __align__(16) float smem[];
  // ([[maybe_unused]] only silences the compiler until your code uses them.)
  [[maybe_unused]] float* Q_tile = smem;                     // [B_r][head_dim] queries
  [[maybe_unused]] float* K_tile = Q_tile + B_r * head_dim;  // [B_c][head_dim] key tile
  [[maybe_unused]] float* V_tile = K_tile + B_c * head_dim;  // [B_c][head_dim] value tile
  [[maybe_unused]] float* S_tile = V_tile + B_c * head_dim;  // [B_r][B_c] scores, probabilities

  const int bh = blockIdx.y;                         // which (batch, head) matrix
  [[maybe_unused]] const int q0 = blockIdx.x * B_r;  // first query row of this block
  const size_t head_offset = static_cast<size_t>(bh) * seq_len * head_dim;
  Q += head_offset;
  K += head_offset;
  V += head_offset;
  O += head_offset;

  // TODO step 1: copy the query tile (rows q0 .. q0 + B_r - 1) into Q_tile. Rows
  //   at or past seq_len do not exist: store zeros for them. __syncthreads().
  //
  // TODO step 2: for each of your query rows, start a running maximum m = -INFINITY,
  //   a running sum l = 0 and an output row o = 0 (head_dim values; with one thread
  //   per row, a register array `float o[MAX_HEAD_DIM]` works).
  //
  // TODO step 3: loop over the key tiles k0 = 0, B_c, 2*B_c, ... With causal = true
  //   a query row i may see keys 0..i only, so tiles that start after the block's
  //   last query row are skipped entirely. For each tile:
  //   a. copy K and V rows k0 .. k0 + B_c - 1 into K_tile, V_tile (zeros past
  //      seq_len), then __syncthreads();
  //   b. S_tile = Q_tile K_tile^T * scale; set a score to -INFINITY where the key is
  //      at or past seq_len, or (causal) where the key comes after the query;
  //   c. online softmax, per row (Task 3, lines 9-10 of Algorithm 1):
  //        m_new = max(m, max_j S_ij)
  //        P_ij  = exp(S_ij - m_new)
  //        l     = exp(m - m_new) * l + sum_j P_ij
  //        o     = exp(m - m_new) * o + sum_j P_ij V_j
  //        m     = m_new
  //      Careful: while a row has seen only masked keys, m_new is -inf and
  //      exp(-inf - (-inf)) is NaN.
  //   d. __syncthreads() before the next tile overwrites K_tile and V_tile.
  //
  // TODO step 4: write o / l to O for the rows that exist (q0 + r < seq_len).
}

// ============================================================================
// Host side: checks, layout, launch. Yours to tune (tile sizes, threads, grid).
// ============================================================================
torch::Tensor custom_flash_attention(torch::Tensor q, torch::Tensor k, torch::Tensor v,
                                     int64_t num_heads, bool causal) {
  // Delete the next line once flash_attention_kernel is written.
  TORCH_CHECK_NOT_IMPLEMENTED(
      false, "not implemented yet: the fused FlashAttention kernel (README, Task 4)");
  const int64_t head_dim = check_attention_inputs(q, k, v, num_heads, MAX_HEAD_DIM);
  const c10::cuda::CUDAGuard guard(q.device());
  const int64_t B = q.size(0), S = q.size(1);
  if (q.numel() == 0) return torch::empty_like(q);

  // [B, S, heads*head_dim] -> [B*heads, S, head_dim]: one contiguous matrix per head.
  torch::Tensor qh = split_heads(q, num_heads, head_dim);
  torch::Tensor kh = split_heads(k, num_heads, head_dim);
  torch::Tensor vh = split_heads(v, num_heads, head_dim);
  torch::Tensor oh = torch::empty_like(qh);

  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
  const size_t smem_bytes = sizeof(float) * (B_r * head_dim + 2 * B_c * head_dim + B_r * B_c);
  allow_dynamic_shared_memory(reinterpret_cast<const void*>(flash_attention_kernel), smem_bytes);

  const int64_t n_qtiles = (S + B_r - 1) / B_r;
  KIT_CHECK(qh.size(0) <= MAX_GRID_YZ, "batch*heads=", qh.size(0),
            " is larger than 65535 (the grid's y dimension)");
  const dim3 grid(static_cast<unsigned>(n_qtiles), static_cast<unsigned>(qh.size(0)));
  flash_attention_kernel<<<grid, THREADS, smem_bytes, c10::cuda::getCurrentCUDAStream()>>>(
      qh.data_ptr<float>(), kh.data_ptr<float>(), vh.data_ptr<float>(), oh.data_ptr<float>(),
      static_cast<int>(S), static_cast<int>(head_dim), scale, causal);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return merge_heads(oh, B, num_heads, head_dim);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("custom_flash_attention", &custom_flash_attention,
        "Fused FlashAttention forward: q, k, v [B, S, heads*head_dim] float32 (CUDA)",
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("num_heads"), py::arg("causal") = false);
}
