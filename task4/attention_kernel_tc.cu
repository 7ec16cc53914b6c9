// Task 4 BONUS: FlashAttention on the tensor cores (the second file you may edit; optional).
//
//   O = softmax(Q K^T * scale  [+ causal mask]) V        (per batch item and head)
//
// Your task-4 kernel does every multiply-add on the ordinary float32 units. The tensor
// cores do a whole small matrix product per warp and per instruction (mma.sync), many
// times faster. This file is built as the extension custom_flash_attention_tc by
// `python -m task4.compile` (after task 4's own extension: if this file does not build,
// task 4 keeps its score and only the bonus scores 0) and tested by
// `python -m task4.test -- -k bonus`. README, "Task 4 bonus", explains fragments, the
// 3xTF32 split and what is measured. Two functions, one design:
//
//   custom_flash_attention_bf16(q, k, v, num_heads, causal)
//       q, k, v bfloat16 [B, S, heads*head_dim] -> bfloat16 output of the same shape.
//       Q K^T and P V on mma.sync.m16n8k16 (bf16 in, float32 accumulators); the softmax in
//       float32. Checked against float64 within a few times PyTorch's own bf16 SDPA error;
//       timed against SDPA's FlashAttention backend in bf16.
//   custom_flash_attention_3xtf32(q, k, v, num_heads, causal)
//       float32 in and out, at float32 accuracy: split every operand x into
//       x_hi = tf32(x) and x_lo = tf32(x - x_hi) and compute a*b as
//       a_lo*b_hi + a_hi*b_lo + a_hi*b_hi on mma.sync.m16n8k8 (tf32). Checked against float64
//       within a few times PyTorch's float32 SDPA error (plain TF32, one product, is ~1000x
//       too far off); timed against float32 SDPA.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16" and "... m16n8k8"): in a
// warp, lane = 4 * gid + tig (gid = lane / 4 in 0..7, tig = lane % 4 in 0..3).
//   * float accumulator C (16 x 8): c0, c1 = row gid, columns 2 tig, 2 tig + 1;
//     c2, c3 = row gid + 8, the same columns.
//   * bf16 A (16 x 16), 4 registers of two bf16 (the lower column in the low half):
//     rows gid, gid + 8, gid, gid + 8; columns 2 tig, 2 tig + 1 (+ 8 in the last two).
//   * bf16 B (16 x 8), 2 registers: rows (k) 2 tig, 2 tig + 1 (+ 8 in the second), column gid.
//   * tf32 A (16 x 8): a0..a3 = (gid, tig), (gid + 8, tig), (gid, tig + 4), (gid + 8, tig + 4).
//   * tf32 B (8 x 8): b0, b1 = (tig, gid), (tig + 4, gid).
//
// The parts marked "provided" are given; the rest, including the host functions at the
// bottom (tile sizes, threads, grid), is yours.

#include <torch/extension.h>

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kit_checks.cuh"  // KIT_CHECK and the input checks (harness/csrc; provided)
#include "head_layout.cuh"  // split_heads, merge_heads (harness/csrc; provided)

#include <cmath>
#include <cstdint>
#include <string>

// ============================================================================
// Provided: layout helpers (the input checks and allow_dynamic_shared_memory()
// are in kit_checks.cuh)
// ============================================================================

// The largest head_dim these kernels must support.
constexpr int MAX_HEAD_DIM = 128;

// split_heads and merge_heads (the head layout the kernels run on) are in head_layout.cuh.

// ============================================================================
// Provided: the warp-level matrix instructions (inline PTX)
// ============================================================================
// All 32 lanes of a warp must execute each of them together (never inside a branch that
// splits the warp).

// d += a * b on one m16n8k16 tile: bf16 A (16x16, 4 regs of 2) and B (16x8, 2 regs of 2),
// float32 accumulators d (16x8, 4 per thread). Fragment layouts: see the top of the file.
__device__ __forceinline__ void mma_bf16_m16n8k16(float (&d)[4], const uint32_t (&a)[4],
                                                  const uint32_t (&b)[2]) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// d += a * b on one m16n8k8 tile: tf32 A (16x8, 4 regs) and B (8x8, 2 regs), float32 d.
__device__ __forceinline__ void mma_tf32_m16n8k8(float (&d)[4], const uint32_t (&a)[4],
                                                 const uint32_t (&b)[2]) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// x rounded to the nearest tf32 (10 mantissa bits), as the 32-bit pattern the mma reads.
// The mask clears the 13 low bits, so __uint_as_float(to_tf32(x)) is that value exactly.
__device__ __forceinline__ uint32_t to_tf32(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r & 0xffffe000u;
}

// ============================================================================
// Your kernels
// ============================================================================
//
// TODO 1 (both): the FlashAttention loop of your task-4 kernel, with one warp per 16 query
//   rows: a block of W warps owns 16 W rows of one head; key and value tiles of B_c rows
//   go through shared memory (cp.async, as in your task-4 kernel, lets the next tile arrive
//   while this one is used).
//
// TODO 2 (bf16): S = Q K^T for the warp's 16 rows and B_c keys as B_c / 8 accumulator tiles
//   (m16n8), k16 steps over head_dim. Load Q's A fragments once (they never change), K's B
//   fragments per step. The K tile stored row-major [key][dim] is exactly the "col" B the mma
//   wants: register 0 of B is K[key gid][dims 2 tig, 2 tig + 1] of the step, two neighbouring
//   bf16, one 32-bit read (ldmatrix reads four 8 x 8 blocks in one instruction; optional).
//
// TODO 3 (both): the online softmax on the accumulators, in registers: a thread holds 2
//   columns of each n8 tile for rows gid and gid + 8, so a row's maximum and sum combine the
//   4 threads tig = 0..3 of its quad (__shfl_xor_sync with 1 and 2). Mask keys >= seq_len and
//   (causal) keys after the row with -INFINITY first; a row whose keys are all masked so far
//   must not produce NaN (see your task-4 kernel).
//
// TODO 4 (bf16): O += P V with P straight from the registers: the accumulators of score tiles
//   2j and 2j+1, rounded to bf16 pairs (__floats2bfloat162_rn), ARE the A fragment of k16 step
//   j (check it against the layouts above). V's B fragment needs V[keys 2 tig, 2 tig + 1][dim
//   gid]: two different rows (ldmatrix with .trans gives it in one instruction).
//
// TODO 5 (3xTF32): as 2-4, but every operand x is split into hi = to_tf32(x) and
//   lo = to_tf32(x - hi) and every product is three mma: lo*hi + hi*lo + hi*hi (the small
//   terms first). P's accumulator columns (2 tig, 2 tig + 1) are not A's (tig, tig + 4):
//   a sum over keys may take them in any order, as long as V's B fragment uses the same one.
//   A tensor core may round its sums towards zero: hundreds of mma accumulated into one
//   register drift beyond float32 accuracy, so give the three products of each k step a fresh
//   accumulator from zero and add it to the scores (or the output) with ordinary float adds.
//
// TODO 6 (both): divide by the row sums and write the rows that exist (row < seq_len); the bf16
//   output is rounded to bf16.
//
// Q, K, V, O: [batch*heads, seq_len, D] contiguous (one matrix per head; D = head_dim padded,
// see the host code). Grid and block shape are yours to choose in the host code.
__global__ void flash_attention_bf16_kernel(const __nv_bfloat16* __restrict__ Q,
                                            const __nv_bfloat16* __restrict__ K,
                                            const __nv_bfloat16* __restrict__ V,
                                            __nv_bfloat16* __restrict__ O, int seq_len, int D,
                                            float scale, bool causal) {
  // TODO: TODO 1-4 and 6 above.
}

__global__ void flash_attention_3xtf32_kernel(const float* __restrict__ Q, const float* __restrict__ K,
                                              const float* __restrict__ V, float* __restrict__ O,
                                              int seq_len, int D, float scale, bool causal) {
  // TODO: TODO 1, 3, 5 and 6 above.
}

// ============================================================================
// Host side: checks, layout, launch. Yours to tune (tiles, warps, grid).
// ============================================================================
torch::Tensor custom_flash_attention_bf16(torch::Tensor q, torch::Tensor k, torch::Tensor v,
                                          int64_t num_heads, bool causal) {
  // Delete the next line once flash_attention_bf16_kernel is written.
  TORCH_CHECK_NOT_IMPLEMENTED(
      false, "not implemented yet: the bf16 tensor-core kernel (README, Task 4 bonus)");
  const int64_t head_dim = check_attention_inputs(q, k, v, num_heads, MAX_HEAD_DIM, torch::kBFloat16);
  const c10::cuda::CUDAGuard guard(q.device());
  if (q.numel() == 0) return torch::empty_like(q);
  // head_dim padded to a multiple of 16 (the mma's k16 step); the zero columns change no dot product.
  const int64_t D = (head_dim + 15) / 16 * 16;
  torch::Tensor qh = split_heads(q, num_heads, D), kh = split_heads(k, num_heads, D);
  torch::Tensor vh = split_heads(v, num_heads, D), oh = torch::empty_like(qh);
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
  // TODO: your grid, block and shared memory (allow_dynamic_shared_memory above 48 KB).
  const int rows_per_block = 64, threads = 128, smem_bytes = 0;
  const int64_t blocks = qh.size(0) * ((q.size(1) + rows_per_block - 1) / rows_per_block);
  flash_attention_bf16_kernel<<<static_cast<unsigned>(blocks), threads, smem_bytes,
                                c10::cuda::getCurrentCUDAStream()>>>(
      static_cast<const __nv_bfloat16*>(qh.data_ptr()), static_cast<const __nv_bfloat16*>(kh.data_ptr()),
      static_cast<const __nv_bfloat16*>(vh.data_ptr()), static_cast<__nv_bfloat16*>(oh.data_ptr()),
      static_cast<int>(q.size(1)), static_cast<int>(D), scale, causal);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return merge_heads(oh, q.size(0), num_heads, head_dim);
}

torch::Tensor custom_flash_attention_3xtf32(torch::Tensor q, torch::Tensor k, torch::Tensor v,
                                            int64_t num_heads, bool causal) {
  // Delete the next line once flash_attention_3xtf32_kernel is written.
  TORCH_CHECK_NOT_IMPLEMENTED(
      false, "not implemented yet: the 3xTF32 tensor-core kernel (README, Task 4 bonus)");
  const int64_t head_dim = check_attention_inputs(q, k, v, num_heads, MAX_HEAD_DIM);
  const c10::cuda::CUDAGuard guard(q.device());
  if (q.numel() == 0) return torch::empty_like(q);
  // head_dim padded to a multiple of 8 (the tf32 mma's k8 step).
  const int64_t D = (head_dim + 7) / 8 * 8;
  torch::Tensor qh = split_heads(q, num_heads, D), kh = split_heads(k, num_heads, D);
  torch::Tensor vh = split_heads(v, num_heads, D), oh = torch::empty_like(qh);
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
  // TODO: your grid, block and shared memory.
  const int rows_per_block = 64, threads = 128, smem_bytes = 0;
  const int64_t blocks = qh.size(0) * ((q.size(1) + rows_per_block - 1) / rows_per_block);
  flash_attention_3xtf32_kernel<<<static_cast<unsigned>(blocks), threads, smem_bytes,
                                  c10::cuda::getCurrentCUDAStream()>>>(
      static_cast<const float*>(qh.data_ptr()), static_cast<const float*>(kh.data_ptr()),
      static_cast<const float*>(vh.data_ptr()), static_cast<float*>(oh.data_ptr()),
      static_cast<int>(q.size(1)), static_cast<int>(D), scale, causal);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return merge_heads(oh, q.size(0), num_heads, head_dim);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("custom_flash_attention_bf16", &custom_flash_attention_bf16,
        "FlashAttention forward on tensor cores: q, k, v [B, S, heads*head_dim] bfloat16 (CUDA), "
        "float32 accumulation; returns bfloat16",
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("num_heads"), py::arg("causal") = false);
  m.def("custom_flash_attention_3xtf32", &custom_flash_attention_3xtf32,
        "FlashAttention forward on tensor cores at float32 accuracy (3xTF32): q, k, v [B, S, "
        "heads*head_dim] float32 (CUDA); returns float32",
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("num_heads"), py::arg("causal") = false);
}
