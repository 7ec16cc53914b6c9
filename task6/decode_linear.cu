// Task 6 (provided, you don't edit this): the model's linear layers for DECODE.
//
// Build: `python -m task6.compile` (it builds this and your task-4/5 kernels).
// Python side and the rules for when it is used: task6/decode_linear.py.
//
// Why a kernel of its own
// -----------------------
// A decode step multiplies a handful of rows (batch x 1 new token, M <= 8) by
// every weight matrix of the model. Each weight is used for M multiply-adds
// and then never again in this step, so the step is limited by how fast the
// weights stream out of GPU memory (the "weight-streaming floor" the task-6
// test prints), not by arithmetic. A general matrix-multiply library tuned for
// large products leaves bandwidth unused at M = 4, and each small elementwise
// op around it (RoPE, SiLU, the product of gate and up) is one more launch.
// This file does the whole linear layer in one pass over the weights:
//
//   y[m, n] = sum_k x[m, k] * w[n, k]         x: [M, K], w: [N, K] (nn.Linear layout)
//
// * one block computes R = 4 outputs n for all M rows, and its W = 4 warps split
//   K between them: thread t of the block reads the float4s t, t + 128, ... of
//   those 4 weight rows, so a warp's loads are 512 contiguous bytes (coalesced)
//   and each lane has U x R = 16 loads in flight before it uses the first.
//   Splitting K (rather than giving each warp its own outputs) gives a layer
//   with N = 4096 outputs 4096 warps instead of 1024: enough bytes in flight on
//   every multiprocessor to cover the memory latency;
// * weights are loaded with __ldcs ("streaming": read once, evict first) and
//   the small x with __ldg (read-only, stays in L1 for every warp of the SM);
// * the partial sums are added with warp shuffles, then across the block's
//   warps in shared memory, and an epilogue writes the result:
//     kStore    y (+ residual)                    out-projection, down-projection, LM head
//     kSwiGLU   silu(x Wg^T) * (x Wu^T)            w = [Wg; Wu] (gate rows, then up rows)
//     kQkvRope  q, k, v = split(x Wqkv^T), RoPE on q and k (adjacent outputs 2i, 2i+1 are a
//               rotation pair, and they sit in the same warp).
// Accumulation is float32 in a different order than cuBLAS: the results differ
// in the last bits, well inside the kit's tolerance.
//
// The decoder's LayerNorms run here too (layer_norm): PyTorch's kernel takes
// about 8 us for 4 rows of 4096 on an H100, one block per row with the row in
// registers about half that, and the model runs 49 of them per step.

#include <torch/extension.h>

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace {

constexpr int kWarps = 4;    // warps per block (128 threads), splitting K
constexpr int kRows = 4;     // R: weight rows (outputs) per warp
constexpr int kUnroll = 4;   // U: float4 steps along K loaded before use
constexpr int kMaxM = 8;     // most input rows handled by one launch

enum Epilogue { kStore = 0, kSwiGLU = 1, kQkvRope = 2 };

struct Params {
  const float* x;         // [M, K], row stride x_rs (floats)
  int64_t x_rs;
  const float* w;         // [n_rows, K], contiguous
  int n_rows;
  int k;
  int m;                  // rows of x actually present (<= the template's MAXM)
  const float* residual;  // kStore: optional [M, n_rows] added to y (row stride res_rs)
  int64_t res_rs;
  float* out[3];          // kStore/kSwiGLU: out[0]; kQkvRope: q, k, v
  int64_t out_rs;         // row stride of every output
  // kQkvRope only
  const float2* rope;     // [positions, head_dim / 2] of (cos, sin)
  int hidden;             // H: q, k, v are the three H-wide slices of the output
  int head_dim;
  int pos0;               // position of row 0 of each sequence
  int rows_per_seq;       // x row m is token (m % rows_per_seq) of its sequence
};

__device__ __forceinline__ float dot_product4(const float4 a, const float4 b) {
  return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
}

// The weight row that slot r of row group g reads. kSwiGLU pairs gate row c with
// up row c (= row c + n_rows / 2), so both halves of one output sit in one warp.
template <int EPI>
__device__ __forceinline__ int weight_row(const Params& p, int g, int r) {
  if constexpr (EPI == kSwiGLU) {
    constexpr int half = kRows / 2;
    const int col = g * half + (r % half);
    return (r < half) ? col : p.n_rows / 2 + col;
  } else {
    return g * kRows + r;
  }
}

template <int MAXM, int EPI>
__global__ void __launch_bounds__(kWarps * 32)
decode_linear_kernel(const Params p) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = blockIdx.x;  // this block's row group

  // Rows past the end (the last group of an odd size) re-read a valid row; their
  // results are never stored.
  const float4* wrow[kRows];
  bool valid[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int row = weight_row<EPI>(p, g, r);
    const int lim = (EPI == kSwiGLU) ? ((r < kRows / 2) ? p.n_rows / 2 : p.n_rows) : p.n_rows;
    valid[r] = row < lim;
    wrow[r] = reinterpret_cast<const float4*>(p.w + (int64_t)(valid[r] ? row : lim - 1) * p.k);
  }
  const float4* xrow[MAXM];
#pragma unroll
  for (int m = 0; m < MAXM; ++m)
    xrow[m] = reinterpret_cast<const float4*>(p.x + (m < p.m ? m : 0) * p.x_rs);

  float acc[MAXM][kRows];
#pragma unroll
  for (int m = 0; m < MAXM; ++m)
#pragma unroll
    for (int r = 0; r < kRows; ++r) acc[m][r] = 0.f;

  constexpr int kStride = kWarps * 32;  // float4s of a row the whole block covers per step
  const int k4 = p.k / 4;
  int i = threadIdx.x;
  // Main loop: U steps of the block's stride, all weight loads issued first.
  for (; i + (kUnroll - 1) * kStride < k4; i += kUnroll * kStride) {
    float4 wv[kUnroll][kRows];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
#pragma unroll
      for (int r = 0; r < kRows; ++r) wv[u][r] = __ldcs(wrow[r] + i + u * kStride);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
      for (int m = 0; m < MAXM; ++m) {
        const float4 xv = __ldg(xrow[m] + i + u * kStride);
#pragma unroll
        for (int r = 0; r < kRows; ++r) acc[m][r] += dot_product4(wv[u][r], xv);
      }
    }
  }
  // The rest of K (fewer than U steps).
  for (; i < k4; i += kStride) {
    float4 wv[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) wv[r] = __ldcs(wrow[r] + i);
#pragma unroll
    for (int m = 0; m < MAXM; ++m) {
      const float4 xv = __ldg(xrow[m] + i);
#pragma unroll
      for (int r = 0; r < kRows; ++r) acc[m][r] += dot_product4(wv[r], xv);
    }
  }

  // Sum the 32 lanes' partial dot products (butterfly: every lane gets every sum),
  // then the warps' sums through shared memory; warp 0 finishes.
#pragma unroll
  for (int off = 16; off > 0; off /= 2)
#pragma unroll
    for (int m = 0; m < MAXM; ++m)
#pragma unroll
      for (int r = 0; r < kRows; ++r) acc[m][r] += __shfl_xor_sync(0xffffffffu, acc[m][r], off);
  __shared__ float partial[kWarps - 1][MAXM][kRows];
  if (warp > 0 && lane == 0) {
#pragma unroll
    for (int m = 0; m < MAXM; ++m)
#pragma unroll
      for (int r = 0; r < kRows; ++r) partial[warp - 1][m][r] = acc[m][r];
  }
  __syncthreads();
  if (warp > 0) return;
#pragma unroll
  for (int w = 0; w < kWarps - 1; ++w)
#pragma unroll
    for (int m = 0; m < MAXM; ++m)
#pragma unroll
      for (int r = 0; r < kRows; ++r) acc[m][r] += partial[w][m][r];

  // Epilogue: lane l stores one value (kStore) or one pair (kSwiGLU, kQkvRope).
  // The selects below pick acc[m][r] for a lane-dependent (m, r) without
  // indexing a register array dynamically (which would spill it to memory).
  if constexpr (EPI == kStore) {
    const int m = lane / kRows, r = lane % kRows;
    if (m >= p.m) return;
    float y = 0.f;
    bool ok = false;
#pragma unroll
    for (int mm = 0; mm < MAXM; ++mm)
#pragma unroll
      for (int rr = 0; rr < kRows; ++rr)
        if (mm == m && rr == r) { y = acc[mm][rr]; ok = valid[rr]; }
    if (!ok) return;
    const int col = g * kRows + r;
    if (p.residual != nullptr) y += p.residual[m * p.res_rs + col];
    p.out[0][m * p.out_rs + col] = y;
  } else {
    constexpr int half = kRows / 2;
    const int m = lane / half, j = lane % half;
    if (m >= p.m) return;
    float a = 0.f, b = 0.f;
    bool ok = false;
#pragma unroll
    for (int mm = 0; mm < MAXM; ++mm)
#pragma unroll
      for (int jj = 0; jj < half; ++jj)
        if (mm == m && jj == j) {
          if constexpr (EPI == kSwiGLU) {
            a = acc[mm][jj];           // gate
            b = acc[mm][half + jj];    // up
            ok = valid[jj];
          } else {
            a = acc[mm][2 * jj];       // the pair (2j, 2j + 1) of this group's 4 outputs
            b = acc[mm][2 * jj + 1];
            ok = valid[2 * jj];
          }
        }
    if (!ok) return;
    if constexpr (EPI == kSwiGLU) {
      const int col = g * half + j;
      const float silu = a / (1.f + expf(-a));  // SiLU(gate), as torch.nn.functional.silu
      p.out[0][m * p.out_rs + col] = silu * b;
    } else {
      const int col = g * kRows + 2 * j;      // even: the first of a rotation pair
      const int part = col / p.hidden;        // 0: q, 1: k, 2: v
      const int c = col - part * p.hidden;
      if (part < 2) {  // rotate (a, b) by the angle of this token's position
        const int pos = p.pos0 + m % p.rows_per_seq;
        const float2 cs = p.rope[(int64_t)pos * (p.head_dim / 2) + (c % p.head_dim) / 2];
        const float ra = a * cs.x - b * cs.y;
        const float rb = a * cs.y + b * cs.x;
        a = ra;
        b = rb;
      }
      // (a select, not p.out[part]: indexing the parameter array would copy it to local memory)
      float* dst = (part == 0) ? p.out[0] : (part == 1) ? p.out[1] : p.out[2];
      *reinterpret_cast<float2*>(dst + m * p.out_rs + c) = make_float2(a, b);
    }
  }
}

template <int EPI>
void launch(const Params& p, int n_groups) {
  const dim3 grid(n_groups), block(kWarps * 32);
  auto stream = c10::cuda::getCurrentCUDAStream();
  if (p.m <= 1) decode_linear_kernel<1, EPI><<<grid, block, 0, stream>>>(p);
  else if (p.m <= 2) decode_linear_kernel<2, EPI><<<grid, block, 0, stream>>>(p);
  else if (p.m <= 4) decode_linear_kernel<4, EPI><<<grid, block, 0, stream>>>(p);
  else decode_linear_kernel<8, EPI><<<grid, block, 0, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// --------------------------------------------------------------------------
// LayerNorm of a few rows: one block per row, the row held in registers, so
// the mean and then the variance (of the centred values, as accurate as
// PyTorch's Welford) take two block reductions and no second read.
// --------------------------------------------------------------------------
constexpr int kNormThreads = 256;
constexpr int kNormMaxVec = 8;  // float4 per thread: rows up to 256 * 8 * 4 = 8192 wide

__device__ __forceinline__ float block_sum(float v, float* scratch) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // scratch may still be read from the previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float total = 0.f;
#pragma unroll
  for (int w = 0; w < kNormThreads / 32; ++w) total += scratch[w];
  return total;
}

__global__ void __launch_bounds__(kNormThreads)
layer_norm_kernel(const float* __restrict__ x, int64_t x_rs, const float* __restrict__ gamma,
                  const float* __restrict__ beta, float* __restrict__ out, int k, float eps) {
  __shared__ float scratch[kNormThreads / 32];
  const float4* row = reinterpret_cast<const float4*>(x + blockIdx.x * x_rs);
  const int k4 = k / 4;
  float4 v[kNormMaxVec];
  float sum = 0.f;
#pragma unroll
  for (int j = 0; j < kNormMaxVec; ++j) {
    const int i = threadIdx.x + j * kNormThreads;
    v[j] = (i < k4) ? row[i] : make_float4(0.f, 0.f, 0.f, 0.f);
    sum += (v[j].x + v[j].y) + (v[j].z + v[j].w);
  }
  const float mean = block_sum(sum, scratch) / k;
  float sq = 0.f;
#pragma unroll
  for (int j = 0; j < kNormMaxVec; ++j) {
    if (threadIdx.x + j * kNormThreads < k4) {
      const float a = v[j].x - mean, b = v[j].y - mean, c = v[j].z - mean, d = v[j].w - mean;
      sq += (a * a + b * b) + (c * c + d * d);
    }
  }
  const float rstd = rsqrtf(block_sum(sq, scratch) / k + eps);
  float4* dst = reinterpret_cast<float4*>(out + (int64_t)blockIdx.x * k);
#pragma unroll
  for (int j = 0; j < kNormMaxVec; ++j) {
    const int i = threadIdx.x + j * kNormThreads;
    if (i < k4) {
      const float4 g = reinterpret_cast<const float4*>(gamma)[i];
      const float4 b = reinterpret_cast<const float4*>(beta)[i];
      dst[i] = make_float4((v[j].x - mean) * rstd * g.x + b.x, (v[j].y - mean) * rstd * g.y + b.y,
                           (v[j].z - mean) * rstd * g.z + b.z, (v[j].w - mean) * rstd * g.w + b.w);
    }
  }
}

bool is_aligned16(const void* ptr) { return reinterpret_cast<std::uintptr_t>(ptr) % 16 == 0; }

// Checks shared by the three entry points. Python (task6/decode_linear.py)
// decides when this path applies; these checks turn a misuse into an
// exception instead of a wrong answer. Messages are plain strings.
Params common(const torch::Tensor& x, const torch::Tensor& w) {
  TORCH_CHECK(x.is_cuda() && w.is_cuda(), "decode_linear: x and w must be CUDA tensors");
  TORCH_CHECK(x.device() == w.device(), "decode_linear: x and w must be on the same device");
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 && w.scalar_type() == torch::kFloat32,
              "decode_linear: x and w must be float32");
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2 && x.size(1) == w.size(1),
              "decode_linear: x must be [M, K] and w [N, K]");
  TORCH_CHECK(x.size(0) >= 1 && x.size(0) <= kMaxM, "decode_linear: x must have 1 to 8 rows");
  TORCH_CHECK(w.is_contiguous() && x.stride(1) == 1, "decode_linear: w must be contiguous, x rows unit-stride");
  TORCH_CHECK(w.size(1) % 4 == 0 && x.stride(0) % 4 == 0 && is_aligned16(x.data_ptr()) &&
                  is_aligned16(w.data_ptr()),
              "decode_linear: K must be a multiple of 4 and x, w 16-byte aligned (float4 loads)");
  TORCH_CHECK(w.size(0) < (int64_t(1) << 31) && w.size(1) < (int64_t(1) << 31),
              "decode_linear: w is too large");
  Params p{};
  p.x = x.data_ptr<float>();
  p.x_rs = x.stride(0);
  p.w = w.data_ptr<float>();
  p.n_rows = (int)w.size(0);
  p.k = (int)w.size(1);
  p.m = (int)x.size(0);
  return p;
}

}  // namespace

// linear(x [M, K], w [N, K], residual [M, N] or None) -> x @ w.T (+ residual), [M, N]
torch::Tensor linear(torch::Tensor x, torch::Tensor w, std::optional<torch::Tensor> residual) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  Params p = common(x, w);
  auto out = torch::empty({x.size(0), w.size(0)}, x.options());
  if (residual.has_value()) {
    const auto& r = *residual;
    TORCH_CHECK(r.is_cuda() && r.device() == x.device() && r.scalar_type() == torch::kFloat32 &&
                    r.dim() == 2 && r.size(0) == x.size(0) && r.size(1) == w.size(0) && r.stride(1) == 1,
                "decode_linear: residual must be a float32 [M, N] tensor with unit-stride rows");
    p.residual = r.data_ptr<float>();
    p.res_rs = r.stride(0);
  }
  p.out[0] = out.data_ptr<float>();
  p.out_rs = out.stride(0);
  launch<kStore>(p, (p.n_rows + kRows - 1) / kRows);
  return out;
}

// swiglu(x [M, K], w_gate_up [2I, K]) -> silu(x @ Wg.T) * (x @ Wu.T), [M, I]
torch::Tensor swiglu(torch::Tensor x, torch::Tensor w_gate_up) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  Params p = common(x, w_gate_up);
  TORCH_CHECK(p.n_rows % 2 == 0, "decode_linear.swiglu: w_gate_up must have an even number of rows");
  const int inner = p.n_rows / 2;
  auto out = torch::empty({x.size(0), inner}, x.options());
  p.out[0] = out.data_ptr<float>();
  p.out_rs = out.stride(0);
  launch<kSwiGLU>(p, (inner + kRows / 2 - 1) / (kRows / 2));
  return out;
}

// qkv_rope(x [M, K], w_qkv [3H, K], rope [P, head_dim / 2, 2], pos0, rows_per_seq)
//   -> (q, k, v), each [M, H]; q and k rotated for positions pos0 + (m % rows_per_seq).
std::vector<torch::Tensor> qkv_rope(torch::Tensor x, torch::Tensor w_qkv, torch::Tensor rope,
                                    int64_t head_dim, int64_t pos0, int64_t rows_per_seq) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  Params p = common(x, w_qkv);
  TORCH_CHECK(p.n_rows % 3 == 0, "decode_linear.qkv_rope: w_qkv must have 3 * H rows");
  const int hidden = p.n_rows / 3;
  TORCH_CHECK(head_dim > 0 && head_dim % 2 == 0 && hidden % head_dim == 0 && hidden % kRows == 0,
              "decode_linear.qkv_rope: H must be a multiple of 4 and of an even head_dim");
  TORCH_CHECK(rope.is_cuda() && rope.device() == x.device() && rope.scalar_type() == torch::kFloat32 &&
                  rope.is_contiguous() && rope.dim() == 3 && rope.size(1) == head_dim / 2 &&
                  rope.size(2) == 2,
              "decode_linear.qkv_rope: rope must be a contiguous float32 [positions, head_dim / 2, 2] table");
  TORCH_CHECK(rows_per_seq >= 1 && x.size(0) % rows_per_seq == 0 && pos0 >= 0 &&
                  pos0 + rows_per_seq <= rope.size(0),
              "decode_linear.qkv_rope: the positions must lie inside the RoPE table");
  auto q = torch::empty({x.size(0), hidden}, x.options());
  auto k = torch::empty_like(q);
  auto v = torch::empty_like(q);
  p.out[0] = q.data_ptr<float>();
  p.out[1] = k.data_ptr<float>();
  p.out[2] = v.data_ptr<float>();
  p.out_rs = q.stride(0);
  p.rope = reinterpret_cast<const float2*>(rope.data_ptr<float>());
  p.hidden = hidden;
  p.head_dim = (int)head_dim;
  p.pos0 = (int)pos0;
  p.rows_per_seq = (int)rows_per_seq;
  launch<kQkvRope>(p, p.n_rows / kRows);
  return {q, k, v};
}

// layer_norm(x [M, K], weight [K], bias [K], eps) -> LayerNorm over the last dimension, [M, K]
torch::Tensor layer_norm(torch::Tensor x, torch::Tensor weight, torch::Tensor bias, double eps) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  TORCH_CHECK(x.is_cuda() && weight.device() == x.device() && bias.device() == x.device(),
              "decode_linear.layer_norm: x, weight and bias must be on the same CUDA device");
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 && weight.scalar_type() == torch::kFloat32 &&
                  bias.scalar_type() == torch::kFloat32,
              "decode_linear.layer_norm: x, weight and bias must be float32");
  TORCH_CHECK(x.dim() == 2 && x.size(0) >= 1 && x.size(0) <= kMaxM && x.stride(1) == 1 &&
                  x.stride(0) % 4 == 0 && is_aligned16(x.data_ptr()),
              "decode_linear.layer_norm: x must be [M <= 8, K] with 16-byte-aligned unit-stride rows");
  const int64_t k = x.size(1);
  TORCH_CHECK(k % 4 == 0 && k <= 4 * kNormThreads * kNormMaxVec && weight.is_contiguous() &&
                  bias.is_contiguous() && weight.numel() == k && bias.numel() == k &&
                  is_aligned16(weight.data_ptr()) && is_aligned16(bias.data_ptr()),
              "decode_linear.layer_norm: K must be a multiple of 4 up to 8192, weight and bias contiguous [K]");
  auto out = torch::empty({x.size(0), k}, x.options());
  layer_norm_kernel<<<x.size(0), kNormThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      x.data_ptr<float>(), x.stride(0), weight.data_ptr<float>(), bias.data_ptr<float>(),
      out.data_ptr<float>(), (int)k, (float)eps);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Task 6 (provided): weight-streaming linear layers for decode (M <= 8 rows)";
  m.def("linear", &linear, "x @ w.T (+ residual) for x with at most 8 rows", py::arg("x"),
        py::arg("w"), py::arg("residual") = py::none());
  m.def("swiglu", &swiglu, "silu(x @ Wg.T) * (x @ Wu.T) for w_gate_up = [Wg; Wu]", py::arg("x"),
        py::arg("w_gate_up"));
  m.def("qkv_rope", &qkv_rope, "q, k, v = split(x @ w_qkv.T), RoPE on q and k", py::arg("x"),
        py::arg("w_qkv"), py::arg("rope"), py::arg("head_dim"), py::arg("pos0"),
        py::arg("rows_per_seq"));
  m.def("layer_norm", &layer_norm, "LayerNorm over the last dimension of x with at most 8 rows",
        py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("eps"));
}
