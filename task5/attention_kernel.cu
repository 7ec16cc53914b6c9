// Task 5: the KV-cache update kernel and the decode attention kernel.
//
// This is the file you edit (README, Task 5). It builds into the extension
// `custom_flash_attention_decode` (python -m task5.compile), which
// task5/attention.py and task6/model.py call:
//
//   update_kv_cache(k_cache, v_cache, k, v, current_pos)
//       k_cache, v_cache: [B, max_seq_len, H] float32, contiguous, preallocated.
//       k, v:             [B, S_new, H] (or [B, H]) float32: the new tokens' keys/values.
//       Writes them into rows [current_pos, current_pos + S_new) of the caches, IN PLACE.
//
//   custom_flash_attention_decode(q, k, v, num_heads, causal=False, seq_len=-1, num_splits=0)
//       q:    [B, 1, H] float32: one new query per sequence.
//       k, v: [B, L, H] float32: usually the caches themselves. Read them where
//             they are (their row strides are passed to you): copying the cached
//             prefix every step would cost as much memory traffic as the
//             attention itself.
//       seq_len: the first seq_len rows of k, v are valid (-1 means all L).
//       num_splits: only for the optional flash-decoding part (0 = your choice);
//             ignore it if you don't split the keys.
//       Returns [B, 1, H].
//
// Layout: H = num_heads * head_dim, head h owns the columns [h*head_dim, (h+1)*head_dim).
// Element (b, t, column c) of k is at k_ptr[b * k_stride_b + t * k_stride_t + c].
//
// The single query of a decode step is the LAST position of its sequence, so
// it may attend to every valid key: `causal` changes nothing here.
//
// The host functions below already validate their inputs (shapes, dtypes,
// devices, cache bounds) with KIT_CHECK (from kit_checks.cuh, provided): keep
// those checks, and use KIT_CHECK for any check you add. Each TODO says what to
// add; delete the TORCH_CHECK_NOT_IMPLEMENTED line of a step once your code for
// it is in place.

#include <torch/extension.h>

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include "kit_checks.cuh"  // KIT_CHECK and the input checks (harness/csrc; provided)

#include <cmath>
#include <cstdint>
#include <string>

// ---------------------------------------------------------------------------
// Step 1: update_cache_kernel
// ---------------------------------------------------------------------------
// TODO (step 1): copy the new keys and values into the cache.
//   Row s of batch item b of `k` goes to row (current_pos + s) of batch item b
//   of `k_cache` (same for v). Every element is independent: give each thread
//   one element (or one float4) and cover B * S_new * H elements. Change the
//   parameter list as you like; the host function below passes what you need.
__global__ void update_cache_kernel(float* __restrict__ k_cache, float* __restrict__ v_cache,
                                    const float* __restrict__ k, const float* __restrict__ v,
                                    int64_t k_stride_b, int64_t k_stride_t, int64_t v_stride_b,
                                    int64_t v_stride_t, int64_t B, int64_t S_new, int64_t H,
                                    int64_t max_seq_len, int64_t current_pos) {
  // your code here
}

// ---------------------------------------------------------------------------
// Step 2: the decode kernel
// ---------------------------------------------------------------------------
// TODO (step 2): attention of ONE query per (sequence, head) over the first
//   seq_len cached keys and values. Start from your task-4 kernel: with a single
//   query row the loop over query tiles disappears. A simple design: one block
//   per (sequence b, head h); its threads walk the keys in tiles, keep the
//   running max, running sum and output accumulator of the online softmax, and
//   write out[b, 0, h*head_dim : (h+1)*head_dim] at the end.
//
//   Decode reads every cached key and value once and does little arithmetic
//   with each: its speed is set by memory bandwidth. What helps: 16-byte loads
//   (float4) with consecutive threads on consecutive addresses, several loads
//   in flight before their first use, and enough blocks to fill the GPU.
//
//   (Optional, README: "flash-decoding") With B = 1 there are only num_heads
//   blocks for 132 multiprocessors. Split each (sequence, head)'s keys into
//   chunks handled by separate blocks, each writing a partial output and its
//   softmax statistics, and combine them in a second small kernel.
__global__ void decode_kernel(const float* __restrict__ q, const float* __restrict__ k,
                              const float* __restrict__ v, float* __restrict__ out,
                              int64_t k_stride_b, int64_t k_stride_t, int64_t v_stride_b,
                              int64_t v_stride_t, int num_heads, int head_dim, int seq_len,
                              float scale) {
  // your code here
}

// ---------------------------------------------------------------------------
// Host side (provided, apart from the launches)
// ---------------------------------------------------------------------------

void update_kv_cache(torch::Tensor k_cache, torch::Tensor v_cache, torch::Tensor k,
                     torch::Tensor v, int64_t current_pos) {
  const char* fn = "update_kv_cache";
  check_cuda_float32(k_cache, "k_cache", fn);
  check_cuda_float32(v_cache, "v_cache", fn);
  check_cuda_float32(k, "k", fn);
  check_cuda_float32(v, "v", fn);
  KIT_CHECK(k_cache.dim() == 3, fn, ": k_cache must be [B, max_seq_len, H], got ",
              k_cache.sizes());
  KIT_CHECK(v_cache.sizes() == k_cache.sizes(), fn, ": v_cache ", v_cache.sizes(),
              " must have the shape of k_cache ", k_cache.sizes());
  KIT_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous(), fn,
              ": the caches must be contiguous (they are written in place; pass the "
              "preallocated tensors themselves, not a transposed or sliced view)");
  KIT_CHECK(k.device() == k_cache.device() && v.device() == k_cache.device() &&
                  v_cache.device() == k_cache.device(),
              fn, ": all tensors must be on the same device");
  if (k.dim() == 2) k = k.unsqueeze(1);
  if (v.dim() == 2) v = v.unsqueeze(1);
  const int64_t B = k_cache.size(0), max_len = k_cache.size(1), H = k_cache.size(2);
  KIT_CHECK(k.dim() == 3 && k.size(0) == B && k.size(2) == H, fn, ": k must be [B=", B,
              ", S_new, H=", H, "] to match the cache, got ", k.sizes());
  KIT_CHECK(v.sizes() == k.sizes(), fn, ": v ", v.sizes(), " must have the shape of k ",
              k.sizes());
  const int64_t S_new = k.size(1);
  KIT_CHECK(S_new >= 1, fn, ": no new tokens to write (k.size(1) == 0)");
  KIT_CHECK(current_pos >= 0 && current_pos + S_new <= max_len, fn, ": writing ", S_new,
              " token(s) at current_pos=", current_pos, " needs rows [", current_pos, ", ",
              current_pos + S_new, ") but the cache has max_seq_len=", max_len,
              " rows; allocate a longer cache or stop generating");
  if (k.stride(2) != 1) k = k.contiguous();
  if (v.stride(2) != 1) v = v.contiguous();
  const c10::cuda::OptionalCUDAGuard guard(k_cache.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  (void)stream;

  // TODO (step 1): launch update_cache_kernel on `stream` with enough threads to
  // cover B * S_new * H elements, then check the launch with
  // C10_CUDA_KERNEL_LAUNCH_CHECK(). Delete the next line when you do.
  TORCH_CHECK_NOT_IMPLEMENTED(false, "not implemented yet: update_cache_kernel (README, Task 5, step 1)");
}

torch::Tensor custom_flash_attention_decode(torch::Tensor q, torch::Tensor k, torch::Tensor v,
                                            int64_t num_heads, bool causal, int64_t seq_len,
                                            int64_t num_splits) {
  (void)causal;      // one query at the last position: the mask hides nothing
  (void)num_splits;  // only for the optional split-K version
  const char* fn = "custom_flash_attention_decode";
  check_cuda_float32(q, "q", fn);
  check_cuda_float32(k, "k", fn);
  check_cuda_float32(v, "v", fn);
  KIT_CHECK(k.device() == q.device() && v.device() == q.device(), fn,
              ": q, k and v must be on the same device");
  const bool q2d = q.dim() == 2;
  if (q2d) q = q.unsqueeze(1);
  KIT_CHECK(q.dim() == 3, fn, ": q must be [B, 1, H], got ", q.sizes());
  KIT_CHECK(q.size(1) == 1, fn, ": decode takes exactly one new query per sequence (q is ",
              q.sizes(), "); use the task-4 prefill kernel for longer queries");
  const int64_t B = q.size(0), H = q.size(2);
  KIT_CHECK(k.dim() == 3 && k.size(0) == B && k.size(2) == H, fn, ": k must be [B=", B,
              ", L, H=", H, "], got ", k.sizes());
  KIT_CHECK(v.sizes() == k.sizes(), fn, ": v ", v.sizes(), " must have the shape of k ",
              k.sizes());
  KIT_CHECK(num_heads > 0 && H % num_heads == 0, fn, ": hidden size ", H,
              " is not divisible by num_heads=", num_heads);
  const int64_t head_dim = H / num_heads;
  const int64_t L = k.size(1);
  if (seq_len < 0) seq_len = L;
  KIT_CHECK(seq_len >= 1 && seq_len <= L, fn, ": seq_len=", seq_len,
              " must be between 1 and the number of key rows ", L);
  KIT_CHECK(k.stride(2) == 1 && v.stride(2) == 1, fn,
              ": k and v must have unit stride in the last dimension (a [B, max_seq_len, H] "
              "cache, or a [:, :L] slice of it, qualifies)");
  q = q.contiguous();
  const c10::cuda::OptionalCUDAGuard guard(q.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  (void)stream;
  (void)head_dim;
  auto out = torch::empty({B, 1, H}, q.options());

  // TODO (step 2): launch your decode kernel(s) on `stream`, passing
  // k.data_ptr<float>() with k.stride(0), k.stride(1) (and the same for v) so
  // the kernel reads the cache in place; softmax scale 1/sqrt(head_dim). Check
  // every launch with C10_CUDA_KERNEL_LAUNCH_CHECK(). Delete the next line when you do.
  TORCH_CHECK_NOT_IMPLEMENTED(false, "not implemented yet: the decode kernel (README, Task 5, step 2)");

  return q2d ? out.squeeze(1) : out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Task 5: KV-cache update and decode attention";
  m.def("update_kv_cache", &update_kv_cache,
        "Write k, v [B, S_new, H] into rows [current_pos, current_pos + S_new) of the caches",
        py::arg("k_cache"), py::arg("v_cache"), py::arg("k"), py::arg("v"),
        py::arg("current_pos"));
  m.def("custom_flash_attention_decode", &custom_flash_attention_decode,
        "Attention of one new query per sequence over the first seq_len rows of k, v",
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("num_heads"),
        py::arg("causal") = false, py::arg("seq_len") = -1, py::arg("num_splits") = 0);
}
