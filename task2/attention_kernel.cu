// Task 2: attention from separate CUDA kernels (the file you edit).
//
//   scores = Q K^T            (GEMM_NT, step 2)
//   scores = scores * scale,  future keys -> -inf if causal   (scale_and_causal_mask, provided)
//   probs  = softmax(scores)  (batched softmax, one block per row, step 1)
//   out    = probs V          (GEMM_NN, step 2)
//   custom_attention() calls them in that order (step 3).
//
// Work through the TODOs in the order of the README (Task 2, steps 1-3). Build
// with `python -m task2.compile`, test one step at a time with
// `python -m task2.test --softmax`, `--gemm`, then `--attention`.
// Each launcher you have not finished yet raises NotImplementedError on its
// first line; delete that line when its kernel is written.
// The parts marked "provided" are given: you may read them, but the tests
// rely on them as they are.

#include <torch/extension.h>

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include "kit_checks.cuh"  // KIT_CHECK and the input checks (harness/csrc; provided)

#include <algorithm>
#include <cmath>
#include <string>

// ============================================================================
// Provided: layout helpers (the input checks are in kit_checks.cuh)
// ============================================================================

// The largest head_dim the attention functions accept (as in Task 4).
constexpr int MAX_HEAD_DIM = 128;

// [B, S, heads*head_dim] -> contiguous [B*heads, S, head_dim]
static torch::Tensor split_heads(const torch::Tensor& x, int64_t num_heads) {
  const int64_t B = x.size(0), S = x.size(1), d = x.size(2) / num_heads;
  return x.view({B, S, num_heads, d}).permute({0, 2, 1, 3}).contiguous().view(
      {B * num_heads, S, d});
}

// [B*heads, S, head_dim] -> [B, S, heads*head_dim]
static torch::Tensor merge_heads(const torch::Tensor& o, int64_t B, int64_t num_heads) {
  const int64_t S = o.size(1), d = o.size(2);
  return o.view({B, num_heads, S, d}).permute({0, 2, 1, 3}).contiguous().view(
      {B, S, num_heads * d});
}

// ============================================================================
// Provided kernel: scale_and_causal_mask
// ============================================================================
// Multiplies every score by `scale`, the factor it is GIVEN (custom_attention
// passes 1/sqrt(head_dim); the kernel itself knows nothing about head_dim).
// With causal = true it also sets the scores of future keys (column > row) to
// -inf, so that softmax gives them probability 0.
// scores: [batch, rows, cols], contiguous. One thread per element (grid-stride loop).
__global__ void scale_and_causal_mask(float* scores, int64_t batch, int rows, int cols,
                                      float scale, bool causal) {
  const int64_t total = batch * rows * cols;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int col = static_cast<int>(idx % cols);
    const int row = static_cast<int>((idx / cols) % rows);
    scores[idx] = (causal && col > row) ? -INFINITY : scores[idx] * scale;
  }
}

// ============================================================================
// Step 1: batched softmax, one thread block per row
// ============================================================================
// blockDim.x is a power of two (32 ... 1024); the dynamic shared memory holds
// blockDim.x floats for the reductions.
//
// Numerically stable: softmax(x) = exp(x - max) / sum(exp(x - max)). Without
// subtracting the maximum, exp(100) already overflows float32 to inf.

// TODO (step 1): write the batched softmax kernel.
//   * One block computes one row: the row is blockIdx.x, it has n_cols elements,
//     input + blockIdx.x * n_cols is its start (use size_t for the offset).
//   * blockDim.x may be smaller than n_cols: let each thread loop over the
//     columns threadIdx.x, threadIdx.x + blockDim.x, ...
//   * Pass 1: each thread finds the maximum of its columns; combine the
//     blockDim.x partial maxima with a parallel reduction in shared memory
//     (`reduce_buf` has blockDim.x floats; halve the active threads each round,
//     with a __syncthreads() between rounds).
//   * Pass 2: the same for the sum of expf(x - row_max).
//   * Pass 3: y = expf(x - row_max) / sum.
//   Remember a __syncthreads() before reusing reduce_buf for the second reduction.
__global__ void batched_softmax_kernel(const float* __restrict__ input, float* __restrict__ output,
                                       int n_cols) {
  extern __shared__ float reduce_buf[];  // blockDim.x floats
  // TODO (step 1)
}

// Provided launcher: softmax of `inp` along `dim`, computed by the kernel above.
torch::Tensor test_batched_softmax(torch::Tensor inp, int64_t dim) {
  // Delete the next line once batched_softmax_kernel is written.
  TORCH_CHECK_NOT_IMPLEMENTED(
      false, "not implemented yet: the batched softmax kernel (README, Task 2, step 1)");
  check_float_cuda(inp, "inp");
  TORCH_CHECK(inp.dim() >= 1, "inp must have at least one dimension");
  const int64_t ndim = inp.dim();
  KIT_CHECK(dim >= -ndim && dim < ndim, "dim=", dim, " is out of range for a ", ndim, "-D tensor");
  if (dim < 0) dim += ndim;
  const c10::cuda::CUDAGuard guard(inp.device());
  // The kernel normalises contiguous rows: move `dim` last (a copy), and back afterwards.
  torch::Tensor x = inp.transpose(dim, ndim - 1).contiguous();
  torch::Tensor y = torch::empty_like(x);
  const int64_t n_cols = x.size(ndim - 1);
  const int64_t rows = n_cols == 0 ? 0 : x.numel() / n_cols;
  if (rows > 0) {
    TORCH_CHECK(rows <= INT32_MAX && n_cols <= INT32_MAX, "softmax input too large");
    int threads = 32;  // a power of two: one thread per element, at most 1024
    while (threads < n_cols && threads < 1024) threads *= 2;
    // gridDim.x = number of rows: one block per row. Shared memory: one float per thread.
    batched_softmax_kernel<<<static_cast<unsigned>(rows), threads, threads * sizeof(float),
                             c10::cuda::getCurrentCUDAStream()>>>(
        x.data_ptr<float>(), y.data_ptr<float>(), static_cast<int>(n_cols));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return y.transpose(dim, ndim - 1).contiguous();
}

// ============================================================================
// Step 2: tiled batched GEMMs (row-major; batch = blockIdx.z)
// ============================================================================
// TODO (step 2): write the two tiled GEMM kernels.
//   * The launchers below use blocks of TILE x TILE threads; thread (tx, ty) of
//     block (bx, by, bz) computes C[bz][by*TILE + ty][bx*TILE + tx].
//   * Walk along K in steps of TILE: the block copies a TILE x TILE tile of A and
//     one of B into __shared__ arrays, __syncthreads(), every thread does TILE
//     multiply-adds from shared memory, __syncthreads() again before the next tiles.
//   * M, N and K need not be multiples of TILE: load 0 outside the matrices and
//     store only inside C.
//   * GEMM_NT: B is stored [N, K] (row-major), so B^T[k][n] = B[n][k]. Read B along its
//     rows (neighbouring threads, neighbouring addresses) and write the tile transposed.
//   * Batch b starts at A + b*M*K, B + b*K*N (or b*N*K), C + b*M*N (use size_t).
// You may change TILE (the launchers use it).
constexpr int TILE = 16;

// C[b] = A[b] @ B[b]: A [M, K], B [K, N], C [M, N]
__global__ void gemm_nn_kernel(const float* __restrict__ A, const float* __restrict__ B,
                               float* __restrict__ C, int M, int N, int K) {
  // TODO (step 2)
}

// C[b] = A[b] @ B[b]^T: A [M, K], B [N, K], C [M, N]
__global__ void gemm_nt_kernel(const float* __restrict__ A, const float* __restrict__ B,
                               float* __restrict__ C, int M, int N, int K) {
  // TODO (step 2)
}

// Provided launchers. Grid: x = column tiles of C, y = row tiles, z = batch.
torch::Tensor test_batched_GEMM_NN(torch::Tensor a, torch::Tensor b) {
  // Delete the next line once gemm_nn_kernel is written.
  TORCH_CHECK_NOT_IMPLEMENTED(
      false, "not implemented yet: the GEMM_NN kernel (README, Task 2, step 2)");
  check_gemm_inputs(a, b, /*b_transposed=*/false);
  const c10::cuda::CUDAGuard guard(a.device());
  const int64_t batch = a.size(0), M = a.size(1), K = a.size(2), N = b.size(2);
  torch::Tensor c = torch::empty({batch, M, N}, a.options());
  if (c.numel() == 0) return c;
  KIT_CHECK((M + TILE - 1) / TILE <= MAX_GRID_YZ, "M=", M, " has too many row tiles");
  const dim3 threads(TILE, TILE);
  const dim3 blocks((N + TILE - 1) / TILE, (M + TILE - 1) / TILE, batch);
  gemm_nn_kernel<<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      a.data_ptr<float>(), b.data_ptr<float>(), c.data_ptr<float>(), M, N, K);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return c;
}

torch::Tensor test_batched_GEMM_NT(torch::Tensor a, torch::Tensor b) {
  // Delete the next line once gemm_nt_kernel is written.
  TORCH_CHECK_NOT_IMPLEMENTED(
      false, "not implemented yet: the GEMM_NT kernel (README, Task 2, step 2)");
  check_gemm_inputs(a, b, /*b_transposed=*/true);
  const c10::cuda::CUDAGuard guard(a.device());
  const int64_t batch = a.size(0), M = a.size(1), K = a.size(2), N = b.size(1);
  torch::Tensor c = torch::empty({batch, M, N}, a.options());
  if (c.numel() == 0) return c;
  KIT_CHECK((M + TILE - 1) / TILE <= MAX_GRID_YZ, "M=", M, " has too many row tiles");
  const dim3 threads(TILE, TILE);
  const dim3 blocks((N + TILE - 1) / TILE, (M + TILE - 1) / TILE, batch);
  gemm_nt_kernel<<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      a.data_ptr<float>(), b.data_ptr<float>(), c.data_ptr<float>(), M, N, K);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return c;
}

// ============================================================================
// Step 3: attention = GEMM_NT -> scale/mask -> softmax -> GEMM_NN (you write the launches)
// ============================================================================
torch::Tensor custom_attention(torch::Tensor q, torch::Tensor k, torch::Tensor v,
                               int64_t num_heads, bool causal) {
  // Delete the next line once custom_attention is written.
  TORCH_CHECK_NOT_IMPLEMENTED(
      false, "not implemented yet: custom_attention (README, Task 2, step 3)");
  const int64_t head_dim = check_attention_inputs(q, k, v, num_heads, MAX_HEAD_DIM);
  const c10::cuda::CUDAGuard guard(q.device());
  const int64_t B = q.size(0), S = q.size(1);
  KIT_CHECK(B * num_heads <= MAX_GRID_YZ, "batch*heads=", B * num_heads,
            " is larger than 65535 (it is the grid's z dimension)");
  if (q.numel() == 0) return torch::empty_like(q);
  torch::Tensor qh = split_heads(q, num_heads);  // [BH, S, d]
  torch::Tensor kh = split_heads(k, num_heads);
  torch::Tensor vh = split_heads(v, num_heads);
  const int64_t BH = qh.size(0);

  torch::Tensor scores = torch::empty({BH, S, S}, q.options());  // Q K^T, then scaled/masked
  torch::Tensor probs = torch::empty_like(scores);                 // softmax of each row
  torch::Tensor out = torch::empty_like(qh);                       // P V: [BH, S, head_dim]

  // TODO (step 3): launch, in this order, on the stream c10::cuda::getCurrentCUDAStream(),
  // each launch followed by C10_CUDA_KERNEL_LAUNCH_CHECK():
  //   1. gemm_nt_kernel:  scores = qh @ kh^T   (M = S, N = S, K = head_dim, batch = BH)
  //   2. scale_and_causal_mask(scores, BH, S, S, scale, causal) with
  //      scale = 1 / sqrt(head_dim): the kernel multiplies by the scale you give it
  //   3. batched_softmax_kernel: probs = softmax of each of the BH * S rows of length S
  //   4. gemm_nn_kernel:  out = probs @ vh      (M = S, N = head_dim, K = S, batch = BH)
  // The launchers test_batched_softmax and test_batched_GEMM_* above show the grid
  // and block shapes your kernels expect.

  return merge_heads(out, B, num_heads);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("test_batched_softmax", &test_batched_softmax,
        "softmax of a float32 CUDA tensor along dim (one block per row)", py::arg("inp"),
        py::arg("dim") = -1);
  m.def("test_batched_GEMM_NN", &test_batched_GEMM_NN, "a @ b for [b,M,K] x [b,K,N]",
        py::arg("a"), py::arg("b"));
  m.def("test_batched_GEMM_NT", &test_batched_GEMM_NT, "a @ b^T for [b,M,K] x [b,N,K]",
        py::arg("a"), py::arg("b"));
  m.def("custom_attention", &custom_attention,
        "attention from separate kernels: q, k, v [B, S, heads*head_dim] float32 (CUDA)",
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("num_heads"), py::arg("causal") = false);
}
