// kit_checks.cuh: the input checks that every CUDA kernel file of the kit shares.
//
// What it is: KIT_CHECK (TORCH_CHECK with a message that is safe to build) and
// the small tensor checks the host functions start with: device, dtype,
// contiguity, shapes, grid limits, and the opt-in to more than 48 KB of shared
// memory.
//
// Why it exists: one definition for every kernel file. task2, task4 and task5's
// attention_kernel.cu (and their reference solutions in solutions/) each carried
// a copy of these helpers, and the copies drifted apart. Each of them now says
// `#include "kit_checks.cuh"` instead, in the spirit of llm.c's dev/cuda/common.h.
//
// Provided: students don't edit this file (it is not part of a submission).
// harness/build.py builds every extension with the kit's own copy of it, taken
// from the kit's harness/csrc and never from a submission, and a change to it
// changes the build folders' key, so every extension is rebuilt with it. A check
// that only your kernel needs goes in your own .cu file: use KIT_CHECK there.

#pragma once

#include <torch/extension.h>

#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

// ---------------------------------------------------------------------------
// Error messages: KIT_CHECK(cond, parts...)
// ---------------------------------------------------------------------------
// KIT_CHECK is TORCH_CHECK with the message assembled from strings, integers,
// floating-point numbers, sizes, dtypes and devices by std::to_string and
// std::string alone, then handed to TORCH_CHECK as one C string. Do not stream
// numbers into TORCH_CHECK itself (TORCH_CHECK(cond, "n=", n)): on the H200
// image this kit was checked on, a failing TORCH_CHECK whose message streamed an
// integer crashed the Python process inside the C++ library's number formatting
// (its libstdc++ was older than the compiler's headers): a segmentation fault
// instead of a RuntimeError. This path never uses that stream. The message is
// built only when the check fails. A TORCH_CHECK with one string literal as its
// message streams no number and is fine.
namespace kit_msg {
inline std::string piece(const char* s) { return s ? s : "(null)"; }
inline std::string piece(const std::string& s) { return s; }
inline std::string piece(char c) { return std::string(1, c); }
template <typename T, typename = std::enable_if_t<std::is_integral_v<T>>>
inline std::string piece(T v) { return std::to_string(v); }
inline std::string piece(double v) { return std::to_string(v); }
inline std::string piece(c10::IntArrayRef a) {
  std::string s = "[";
  for (size_t i = 0; i < a.size(); ++i) s += (i ? ", " : "") + std::to_string(a[i]);
  return s + "]";
}
inline std::string piece(c10::ScalarType t) { return c10::toString(t); }
inline std::string piece(const c10::Device& d) { return d.str(); }
template <typename... Args>
std::string cat(const Args&... args) { return (std::string() + ... + piece(args)); }
// "fn: " when a function name is given (it starts the message), else nothing.
inline std::string who(const char* fn) { return fn ? std::string(fn) + ": " : std::string(); }
}  // namespace kit_msg

#define KIT_CHECK(cond, ...)                                        \
  do {                                                              \
    if (!(cond)) {                                                  \
      const std::string kit_message_ = kit_msg::cat(__VA_ARGS__);   \
      TORCH_CHECK(false, kit_message_.c_str());                     \
    }                                                               \
  } while (0)

// ---------------------------------------------------------------------------
// Tensor checks
// ---------------------------------------------------------------------------

// Grid limits of CUDA: gridDim.y and gridDim.z are at most 65535.
constexpr int64_t MAX_GRID_YZ = 65535;

// The name PyTorch's Python side gives a dtype ("float32", "bfloat16"), for messages.
inline std::string dtype_name(c10::ScalarType t) {
  switch (t) {
    case torch::kFloat32: return "float32";
    case torch::kBFloat16: return "bfloat16";
    case torch::kFloat16: return "float16";
    case torch::kFloat64: return "float64";
    default: return c10::toString(t);
  }
}

// t must be a tensor of `dtype` on a CUDA device. `name` names it in the message;
// `fn`, when given, is the function checking ("update_kv_cache: k must be ...").
static inline void check_cuda_dtype(const torch::Tensor& t, const char* name, c10::ScalarType dtype,
                                    const char* fn = nullptr) {
  KIT_CHECK(t.is_cuda(), kit_msg::who(fn), name, " must be a CUDA tensor, got one on ",
            t.device());
  KIT_CHECK(t.scalar_type() == dtype, kit_msg::who(fn), name, " must be ", dtype_name(dtype),
            ", got ", t.scalar_type());
}

// t must be a float32 tensor on a CUDA device.
static inline void check_cuda_float32(const torch::Tensor& t, const char* name,
                                      const char* fn = nullptr) {
  check_cuda_dtype(t, name, torch::kFloat32, fn);
}

// As check_cuda_dtype, and t must be contiguous (the kernels index it as one
// dense row-major array). `dtype` is float32 unless given (task 4's bonus: bfloat16).
static inline void check_float_cuda(const torch::Tensor& t, const char* name,
                                    const char* fn = nullptr,
                                    c10::ScalarType dtype = torch::kFloat32) {
  check_cuda_dtype(t, name, dtype, fn);
  KIT_CHECK(t.is_contiguous(), kit_msg::who(fn), name,
            " must be contiguous (call .contiguous() on it first)");
}

// Checks the operands of a batched GEMM (task 2); `b_transposed` says whether b
// is [batch, N, K] (a @ b^T) rather than [batch, K, N] (a @ b).
static inline void check_gemm_inputs(const torch::Tensor& a, const torch::Tensor& b,
                                     bool b_transposed) {
  check_float_cuda(a, "a");
  check_float_cuda(b, "b");
  KIT_CHECK(a.dim() == 3 && b.dim() == 3, "a and b must be 3-D [batch, rows, cols], got ",
            a.sizes(), " and ", b.sizes());
  KIT_CHECK(a.device() == b.device(), "a is on ", a.device(), " but b is on ", b.device());
  KIT_CHECK(a.size(0) == b.size(0), "a and b must have the same batch size, got ", a.size(0),
            " and ", b.size(0));
  const int64_t k_of_b = b_transposed ? b.size(2) : b.size(1);
  KIT_CHECK(a.size(2) == k_of_b, "inner dimensions differ: a is ", a.sizes(), ", b is ",
            b.sizes(), b_transposed ? " (computing a @ b^T)" : " (computing a @ b)");
  KIT_CHECK(a.size(0) <= MAX_GRID_YZ, "batch size ", a.size(0),
            " is larger than 65535 (the batch is the grid's z dimension)");
}

// Checks q, k, v [B, S, heads*head_dim] (float32 unless `dtype` says otherwise, CUDA,
// contiguous, one shape, one device) and returns head_dim, which must be at most
// `max_head_dim`. A wrong input gets a clear Python exception here instead of a wrong
// answer or a crash inside the kernel.
static inline int64_t check_attention_inputs(const torch::Tensor& q, const torch::Tensor& k,
                                             const torch::Tensor& v, int64_t num_heads,
                                             int64_t max_head_dim,
                                             c10::ScalarType dtype = torch::kFloat32) {
  const torch::Tensor* named[3] = {&q, &k, &v};
  const char* names[3] = {"q", "k", "v"};
  for (int i = 0; i < 3; ++i) {
    const torch::Tensor& t = *named[i];
    check_float_cuda(t, names[i], nullptr, dtype);
    KIT_CHECK(t.dim() == 3, names[i], " must have shape [batch, seq_len, hidden_dim], got ",
              t.sizes());
    KIT_CHECK(t.sizes() == q.sizes(), names[i], " has shape ", t.sizes(), " but q has ",
              q.sizes(), ": q, k and v must have the same shape");
    KIT_CHECK(t.device() == q.device(), names[i], " is on ", t.device(), " but q is on ",
              q.device());
  }
  const int64_t hidden = q.size(2);
  KIT_CHECK(num_heads > 0 && hidden % num_heads == 0, "hidden_dim=", hidden,
            " must be a positive multiple of num_heads=", num_heads);
  const int64_t head_dim = hidden / num_heads;
  KIT_CHECK(head_dim <= max_head_dim, "head_dim=", head_dim, " (hidden_dim ", hidden, " / ",
            num_heads, " heads) is larger than the supported maximum ", max_head_dim);
  return head_dim;
}

// ---------------------------------------------------------------------------
// Launch set-up
// ---------------------------------------------------------------------------

// A kernel may use more than 48 KB of dynamic shared memory only after this call.
// Bigger tiles (B_r, B_c) need more: this gives a clear error when they no longer fit.
static inline void allow_dynamic_shared_memory(const void* kernel, size_t bytes) {
  int device = 0, limit = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  KIT_CHECK(bytes <= static_cast<size_t>(limit), "the tiles need ", bytes,
            " bytes of shared memory per block, but this GPU allows at most ", limit,
            ": choose smaller tile sizes (B_r, B_c)");
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(bytes)));
}
