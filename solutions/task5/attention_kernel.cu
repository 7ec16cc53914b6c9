// Task 5 reference solution: the KV-cache update kernel and a split-K
// "flash-decoding" attention kernel for the decode phase.
//
// Layout (the same as everywhere in the kit): activations are [B, S, H] float32
// with H = num_heads * head_dim, head h owning the columns [h*D, (h+1)*D). The
// KV cache is two preallocated tensors k_cache, v_cache of shape
// [B, max_seq_len, H]; positions [0, seq_len) hold valid keys and values.
//
// Why decode needs its own kernel
// -------------------------------
// In decode each sequence has ONE new query. Attention for it reads the whole
// cached K and V of its sequence once and does ~2 floating-point operations per
// float loaded: it is limited by memory bandwidth, not arithmetic. The job of
// the kernel is therefore to stream K and V through the GPU as fast as the
// memory allows:
//   * 16-byte loads (float4), consecutive lanes reading consecutive addresses;
//   * many loads in flight per warp before the first one is used;
//   * enough blocks to keep all multiprocessors busy, even when B * num_heads
//     is small (B = 1 gives only 32 (sequence, head) pairs for 132 SMs).
// The last point is what "flash-decoding" adds: the keys of one (sequence,
// head) pair are cut into `num_splits` chunks, each chunk handled by its own
// block, which produces a partial output normalised over its chunk plus the
// log-sum-exp of its scores. A second, tiny kernel merges the partials.
//
// Merging partial softmaxes. For a chunk c with scores s_j, define
//     m_c = max_j s_j,  l_c = sum_j exp(s_j - m_c),  o_c = sum_j exp(s_j - m_c) v_j / l_c,
//     lse_c = m_c + log(l_c)            (the log of the chunk's softmax denominator).
// The full answer is  o = sum_c exp(lse_c - M) o_c / sum_c exp(lse_c - M)  for any M;
// taking M = max_c lse_c keeps every exponent <= 0, so nothing overflows.
// Inside a block the same identity merges the running state of each warp (the
// "online softmax" of FlashAttention).
//
// We work in base 2: scores are pre-multiplied by log2(e), so exp(x) becomes
// exp2f(x), one hardware instruction (ex2). The log-sum-exps are base 2 too.

#include <torch/extension.h>

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include "kit_checks.cuh"  // KIT_CHECK and the input checks (harness/csrc; provided)

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

namespace {

constexpr float kLog2e = 1.4426950408889634f;

// --------------------------------------------------------------------------
// Step 1: the KV-cache update.
// --------------------------------------------------------------------------
// Copies the new keys/values k, v [B, S_new, H] (row strides given, unit stride
// in the last dimension) into rows [pos, pos + S_new) of the contiguous caches
// [B, max_len, H]. One thread moves one float4 of K and one of V; a grid-stride
// loop covers any size. VEC = false is the scalar fallback for shapes or
// pointers that are not 16-byte aligned.
template <bool VEC>
__global__ void update_cache_kernel(float* __restrict__ k_cache, float* __restrict__ v_cache,
                                    const float* __restrict__ k, const float* __restrict__ v,
                                    int64_t k_sb, int64_t k_ss, int64_t v_sb, int64_t v_ss,
                                    int S_new, int H, int64_t max_len, int64_t pos,
                                    int64_t total /* B * S_new * H / width */) {
  constexpr int W = VEC ? 4 : 1;  // floats per thread
  const int per_row = H / W;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int c = (int)(i % per_row) * W;  // column
    const int64_t row = i / per_row;       // b * S_new + s
    const int64_t b = row / S_new, s = row % S_new;
    const int64_t dst = (b * max_len + pos + s) * H + c;
    if constexpr (VEC) {
      *reinterpret_cast<float4*>(k_cache + dst) =
          *reinterpret_cast<const float4*>(k + b * k_sb + s * k_ss + c);
      *reinterpret_cast<float4*>(v_cache + dst) =
          *reinterpret_cast<const float4*>(v + b * v_sb + s * v_ss + c);
    } else {
      k_cache[dst] = k[b * k_sb + s * k_ss + c];
      v_cache[dst] = v[b * v_sb + s * v_ss + c];
    }
  }
}

// --------------------------------------------------------------------------
// Step 2: the decode kernel (one query per sequence, split-K over the keys).
// --------------------------------------------------------------------------
// Work assignment inside a block of NWARPS warps, for head_dim D:
//   LANES = lanes that share one key row: each lane owns VPL float4s of it
//           (D = 128: 32 lanes x 1 float4; D = 64: 16 lanes, so a warp works on
//           2 keys side by side; D = 256: 32 lanes x 2 float4).
//   GROUPS = 32 / LANES independent lane groups per warp, each with its own
//           online-softmax state (max m, sum l, output accumulator acc).
//   KPI   = keys each group loads per iteration before using any of them: the
//           loads of KPI keys and KPI values are all in flight together.
template <int D>
struct DecodeShape {
  static_assert(D % 4 == 0 && D >= 16 && D <= 256, "head_dim must be 16..256, a multiple of 4");
  static constexpr int LANES = (D / 4 < 32) ? D / 4 : 32;
  static constexpr int VPL = D / (4 * LANES);  // float4 per lane per row
  static constexpr int GROUPS = 32 / LANES;
  static constexpr int KPI = (VPL > 1) ? 2 : 4;
};

constexpr int kDecodeWarps = 4;  // 128 threads per block
constexpr int kMaxSplits = 4096;  // bounds the merge kernel's shared memory (16 KB)

__device__ __forceinline__ float dot4(const float4 a, const float4 b) {
  return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
}

// Merge online-softmax state (m2, l2, acc2) into (m, l, acc). m = -inf means
// "no key seen yet"; the guards keep (-inf) - (-inf) = NaN out of exp2f.
template <int N>
__device__ __forceinline__ void merge_state(float& m, float& l, float (&acc)[N], float m2, float l2,
                                            const float (&acc2)[N]) {
  const float mn = fmaxf(m, m2);
  const float a1 = (m == -INFINITY) ? 0.f : exp2f(m - mn);
  const float a2 = (m2 == -INFINITY) ? 0.f : exp2f(m2 - mn);
  l = l * a1 + l2 * a2;
#pragma unroll
  for (int i = 0; i < N; ++i) acc[i] = acc[i] * a1 + acc2[i] * a2;
  m = mn;
}

// grid = (num_splits, num_heads, B); block = kDecodeWarps * 32 threads.
// Block (split, h, b) handles keys [split * chunk, min(seq_len, (split + 1) * chunk)).
// With num_splits == 1 it writes the final output; otherwise its partial output
// (normalised over its chunk) and base-2 log-sum-exp, for the merge kernel.
template <int D>
__global__ void __launch_bounds__(kDecodeWarps * 32)
decode_split_kernel(const float* __restrict__ q, int64_t q_sb,           // q[b*q_sb + h*D + d]
                    const float* __restrict__ k, int64_t k_sb, int64_t k_ss,  // k[b*k_sb + t*k_ss + h*D + d]
                    const float* __restrict__ v, int64_t v_sb, int64_t v_ss,
                    int seq_len, int chunk, float scale_log2,
                    float* __restrict__ out,           // [B, H] when num_splits == 1
                    float* __restrict__ part_out,      // [B, NH, num_splits, D]
                    float* __restrict__ part_lse) {    // [B, NH, num_splits]
  using S = DecodeShape<D>;
  constexpr int LANES = S::LANES, VPL = S::VPL, GROUPS = S::GROUPS, KPI = S::KPI;
  constexpr int NV = 4 * VPL;  // floats of the row each lane owns

  const int split = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int num_splits = gridDim.x, num_heads = gridDim.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int group = lane / LANES, li = lane % LANES;

  const int k_begin = split * chunk;
  const int k_end = min(seq_len, k_begin + chunk);

  // The query slice this lane owns, pre-scaled by softmax_scale * log2(e).
  const float* qp = q + b * q_sb + h * D;
  float4 qv[VPL];
#pragma unroll
  for (int c = 0; c < VPL; ++c) {
    float4 t = *reinterpret_cast<const float4*>(qp + (c * LANES + li) * 4);
    qv[c] = make_float4(t.x * scale_log2, t.y * scale_log2, t.z * scale_log2, t.w * scale_log2);
  }

  const float* kp = k + b * k_sb + h * D + li * 4;
  const float* vp = v + b * v_sb + h * D + li * 4;

  float m = -INFINITY, l = 0.f;
  float acc[NV];
#pragma unroll
  for (int i = 0; i < NV; ++i) acc[i] = 0.f;

  // Keys handled by the whole block per iteration; this group's first key.
  constexpr int STEP = kDecodeWarps * GROUPS * KPI;
  const int my_first = (warp * GROUPS + group) * KPI;

  for (int base = k_begin; base < k_end; base += STEP) {
    // 1. Issue every load of this iteration before using any (memory-level
    //    parallelism). Out-of-range keys re-load the last valid row (always a
    //    legal address) and are masked out below; __ldcs = "streaming" load:
    //    the cache is read once per step, so don't let it evict other data.
    float4 kr[KPI][VPL], vr[KPI][VPL];
#pragma unroll
    for (int j = 0; j < KPI; ++j) {
      const int t = min(base + my_first + j, k_end - 1);
#pragma unroll
      for (int c = 0; c < VPL; ++c)
        kr[j][c] = __ldcs(reinterpret_cast<const float4*>(kp + (int64_t)t * k_ss + c * LANES * 4));
    }
#pragma unroll
    for (int j = 0; j < KPI; ++j) {
      const int t = min(base + my_first + j, k_end - 1);
#pragma unroll
      for (int c = 0; c < VPL; ++c)
        vr[j][c] = __ldcs(reinterpret_cast<const float4*>(vp + (int64_t)t * v_ss + c * LANES * 4));
    }

    // 2. Scores: each lane's partial dot product, summed over the LANES lanes
    //    of its group with butterfly shuffles (xor offsets < LANES stay inside
    //    the group, so all groups reduce at once and every lane gets the sum).
    float s[KPI];
#pragma unroll
    for (int j = 0; j < KPI; ++j) {
      float p = 0.f;
#pragma unroll
      for (int c = 0; c < VPL; ++c) p += dot4(qv[c], kr[j][c]);
      s[j] = p;
    }
#pragma unroll
    for (int off = LANES / 2; off > 0; off /= 2) {
#pragma unroll
      for (int j = 0; j < KPI; ++j) s[j] += __shfl_xor_sync(0xffffffffu, s[j], off);
    }

    // 3. Online softmax over the KPI new scores, then accumulate p * v.
    float m_new = m;
#pragma unroll
    for (int j = 0; j < KPI; ++j) {
      if (base + my_first + j >= k_end) s[j] = -INFINITY;  // past this block's keys
      m_new = fmaxf(m_new, s[j]);
    }
    const float alpha = (m == -INFINITY) ? 0.f : exp2f(m - m_new);
    l *= alpha;
#pragma unroll
    for (int i = 0; i < NV; ++i) acc[i] *= alpha;
#pragma unroll
    for (int j = 0; j < KPI; ++j) {
      const float p = (s[j] == -INFINITY) ? 0.f : exp2f(s[j] - m_new);
      l += p;
#pragma unroll
      for (int c = 0; c < VPL; ++c) {
        acc[4 * c + 0] += p * vr[j][c].x;
        acc[4 * c + 1] += p * vr[j][c].y;
        acc[4 * c + 2] += p * vr[j][c].z;
        acc[4 * c + 3] += p * vr[j][c].w;
      }
    }
    m = m_new;
  }

  // 4. Merge the GROUPS groups of each warp (lanes li, li + LANES, ... hold the
  //    same columns for different keys).
#pragma unroll
  for (int off = LANES; off < 32; off *= 2) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, off);
    const float l2 = __shfl_xor_sync(0xffffffffu, l, off);
    float acc2[NV];
#pragma unroll
    for (int i = 0; i < NV; ++i) acc2[i] = __shfl_xor_sync(0xffffffffu, acc[i], off);
    merge_state(m, l, acc, m2, l2, acc2);
  }

  // 5. Merge the warps through shared memory.
  __shared__ float sm_m[kDecodeWarps], sm_l[kDecodeWarps];
  __shared__ __align__(16) float sm_acc[kDecodeWarps][D];
  if (group == 0) {
#pragma unroll
    for (int c = 0; c < VPL; ++c)
      *reinterpret_cast<float4*>(&sm_acc[warp][(c * LANES + li) * 4]) =
          make_float4(acc[4 * c], acc[4 * c + 1], acc[4 * c + 2], acc[4 * c + 3]);
    if (li == 0) {
      sm_m[warp] = m;
      sm_l[warp] = l;
    }
  }
  __syncthreads();

  float M = -INFINITY;
#pragma unroll
  for (int w = 0; w < kDecodeWarps; ++w) M = fmaxf(M, sm_m[w]);
  float wgt[kDecodeWarps], L = 0.f;
#pragma unroll
  for (int w = 0; w < kDecodeWarps; ++w) {
    wgt[w] = (sm_m[w] == -INFINITY) ? 0.f : exp2f(sm_m[w] - M);
    L += sm_l[w] * wgt[w];
  }
  const float inv_L = (L > 0.f) ? 1.f / L : 0.f;
  const int64_t pair = (int64_t)b * num_heads + h;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float o = 0.f;
#pragma unroll
    for (int w = 0; w < kDecodeWarps; ++w) o += sm_acc[w][d] * wgt[w];
    o *= inv_L;
    if (num_splits == 1) {
      out[b * (int64_t)num_heads * D + h * D + d] = o;
    } else {
      part_out[(pair * num_splits + split) * D + d] = o;
    }
  }
  if (num_splits > 1 && threadIdx.x == 0)
    part_lse[pair * num_splits + split] = (L > 0.f) ? M + log2f(L) : -INFINITY;
}

// grid = (num_heads, B); block = max(32, min(D, 128)) threads; dynamic shared memory:
// num_splits floats. Combines the partial outputs of one (sequence, head).
__global__ void decode_merge_kernel(const float* __restrict__ part_out,
                                    const float* __restrict__ part_lse, float* __restrict__ out,
                                    int num_splits, int D) {
  extern __shared__ float weights[];  // [num_splits]
  __shared__ float sh_max, sh_sum;
  const int h = blockIdx.x, b = blockIdx.y, num_heads = gridDim.x;
  const int64_t pair = (int64_t)b * num_heads + h;
  const float* lse = part_lse + pair * num_splits;

  // Largest log-sum-exp (first warp, shuffles), then weights exp2(lse - max).
  if (threadIdx.x < 32) {
    float mx = -INFINITY;
    for (int i = threadIdx.x; i < num_splits; i += 32) mx = fmaxf(mx, lse[i]);
    for (int off = 16; off > 0; off /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    if (threadIdx.x == 0) sh_max = mx;
  }
  __syncthreads();
  const float mx = sh_max;
  for (int i = threadIdx.x; i < num_splits; i += blockDim.x)
    weights[i] = (lse[i] == -INFINITY) ? 0.f : exp2f(lse[i] - mx);
  __syncthreads();
  if (threadIdx.x < 32) {
    float sum = 0.f;
    for (int i = threadIdx.x; i < num_splits; i += 32) sum += weights[i];
    for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    if (threadIdx.x == 0) sh_sum = sum;
  }
  __syncthreads();
  const float inv = sh_sum > 0.f ? 1.f / sh_sum : 0.f;
  const float* po = part_out + pair * num_splits * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float o = 0.f;
    for (int i = 0; i < num_splits; ++i) o += weights[i] * po[(int64_t)i * D + d];
    out[b * (int64_t)num_heads * D + h * D + d] = o * inv;
  }
}

// ---------------------------------------------------------------------------
// Host side.
// ---------------------------------------------------------------------------

bool aligned16(const torch::Tensor& t) {
  return reinterpret_cast<std::uintptr_t>(t.data_ptr()) % 16 == 0;
}

// How many chunks to cut each (sequence, head) pair's keys into. Enough blocks
// for about two full waves over the GPU (fewer would leave SMs idle at B = 1),
// but every chunk at least one block-iteration of keys long.
template <int D>
int choose_num_splits(int pairs, int seq_len) {
  static int blocks_per_sm = -1;  // per head_dim; the occupancy never changes
  if (blocks_per_sm < 0) {
    C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &blocks_per_sm, decode_split_kernel<D>, kDecodeWarps * 32, 0));
    blocks_per_sm = std::max(blocks_per_sm, 1);
  }
  int device = 0, sms = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  using S = DecodeShape<D>;
  const int step = kDecodeWarps * S::GROUPS * S::KPI;
  const int max_splits = std::max(1, (seq_len + 2 * step - 1) / (2 * step));
  const int target_blocks = 2 * sms * blocks_per_sm;
  const int want = (target_blocks + pairs - 1) / pairs;
  return std::max(1, std::min(want, max_splits));
}

template <int D>
void launch_decode(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                   torch::Tensor& out, int num_heads, int seq_len, int num_splits) {
  const int B = q.size(0);
  using S = DecodeShape<D>;
  const int pairs = B * num_heads;
  if (num_splits <= 0) num_splits = choose_num_splits<D>(pairs, seq_len);
  num_splits = std::min({num_splits, seq_len, kMaxSplits});
  // Chunk length: a multiple of the block's keys per iteration, so only the
  // last chunk of a pair has a ragged end. Recompute the count from it.
  const int step = kDecodeWarps * S::GROUPS * S::KPI;
  int chunk = (seq_len + num_splits - 1) / num_splits;
  chunk = (chunk + step - 1) / step * step;
  num_splits = (seq_len + chunk - 1) / chunk;

  torch::Tensor part_out, part_lse;
  if (num_splits > 1) {
    part_out = torch::empty({pairs, num_splits, D}, q.options());
    part_lse = torch::empty({pairs, num_splits}, q.options());
  }
  const float scale_log2 = kLog2e / std::sqrt(static_cast<float>(D));
  auto stream = c10::cuda::getCurrentCUDAStream();
  dim3 grid(num_splits, num_heads, B);
  decode_split_kernel<D><<<grid, kDecodeWarps * 32, 0, stream>>>(
      q.data_ptr<float>(), q.stride(0), k.data_ptr<float>(), k.stride(0), k.stride(1),
      v.data_ptr<float>(), v.stride(0), v.stride(1), seq_len, chunk, scale_log2,
      out.data_ptr<float>(), num_splits > 1 ? part_out.data_ptr<float>() : nullptr,
      num_splits > 1 ? part_lse.data_ptr<float>() : nullptr);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (num_splits > 1) {
    // At least one full warp: the merge kernel reduces with full-warp shuffles.
    const int threads = std::max(32, std::min(D, 128));
    decode_merge_kernel<<<dim3(num_heads, B), threads, num_splits * sizeof(float), stream>>>(
        part_out.data_ptr<float>(), part_lse.data_ptr<float>(), out.data_ptr<float>(), num_splits,
        D);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

}  // namespace

// update_kv_cache(k_cache, v_cache, k, v, current_pos): write k, v [B, S_new, H]
// (or [B, H] for one token) into rows [current_pos, current_pos + S_new) of the
// caches [B, max_seq_len, H], in place.
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
  auto stream = c10::cuda::getCurrentCUDAStream();
  const bool vec = H % 4 == 0 && k.stride(0) % 4 == 0 && k.stride(1) % 4 == 0 &&
                   v.stride(0) % 4 == 0 && v.stride(1) % 4 == 0 && aligned16(k) &&
                   aligned16(v) && aligned16(k_cache) && aligned16(v_cache);
  const int64_t total = B * S_new * H / (vec ? 4 : 1);
  const int threads = 256;
  const int blocks = (int)std::min<int64_t>((total + threads - 1) / threads, 65535);
  if (vec) {
    update_cache_kernel<true><<<blocks, threads, 0, stream>>>(
        k_cache.data_ptr<float>(), v_cache.data_ptr<float>(), k.data_ptr<float>(),
        v.data_ptr<float>(), k.stride(0), k.stride(1), v.stride(0), v.stride(1), (int)S_new,
        (int)H, max_len, current_pos, total);
  } else {
    update_cache_kernel<false><<<blocks, threads, 0, stream>>>(
        k_cache.data_ptr<float>(), v_cache.data_ptr<float>(), k.data_ptr<float>(),
        v.data_ptr<float>(), k.stride(0), k.stride(1), v.stride(0), v.stride(1), (int)S_new,
        (int)H, max_len, current_pos, total);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// custom_flash_attention_decode(q, k, v, num_heads, causal=False, seq_len=-1, num_splits=0)
//   q:    [B, 1, H]  the new token's query (or [B, H])
//   k, v: [B, L, H]  keys/values; usually the caches themselves, read in place
//   seq_len: how many leading rows of k, v are valid (-1: all L)
//   num_splits: chunks per (sequence, head); 0 picks one for this GPU
// Returns [B, 1, H]. The single query is the LAST position, so it may look at
// every valid key: `causal` hides nothing and is accepted for symmetry.
torch::Tensor custom_flash_attention_decode(torch::Tensor q, torch::Tensor k, torch::Tensor v,
                                            int64_t num_heads, bool causal, int64_t seq_len,
                                            int64_t num_splits) {
  (void)causal;
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
  const int64_t D = H / num_heads;
  const int64_t L = k.size(1);
  if (seq_len < 0) seq_len = L;
  KIT_CHECK(seq_len >= 1 && seq_len <= L, fn, ": seq_len=", seq_len,
              " must be between 1 and the number of key rows ", L);
  KIT_CHECK(seq_len < (int64_t(1) << 31), fn, ": seq_len too large");
  KIT_CHECK(k.stride(2) == 1 && v.stride(2) == 1 && k.stride(1) % 4 == 0 &&
                  v.stride(1) % 4 == 0 && k.stride(0) % 4 == 0 && v.stride(0) % 4 == 0 &&
                  aligned16(k) && aligned16(v),
              fn,
              ": k and v are read in place with 16-byte loads: they need unit stride in the "
              "last dimension, row strides that are multiples of 4 floats and 16-byte-aligned "
              "data (a [B, max_seq_len, H] cache, or a [:, :L] slice of it, qualifies)");
  if (q.stride(2) != 1 || q.stride(0) % 4 != 0 || !aligned16(q)) q = q.contiguous();

  const c10::cuda::OptionalCUDAGuard guard(q.device());
  auto out = torch::empty({B, 1, H}, q.options());
  const int nh = (int)num_heads, sl = (int)seq_len, ns = (int)std::min<int64_t>(num_splits, 1 << 16);
  switch (D) {
    case 16: launch_decode<16>(q, k, v, out, nh, sl, ns); break;
    case 32: launch_decode<32>(q, k, v, out, nh, sl, ns); break;
    case 64: launch_decode<64>(q, k, v, out, nh, sl, ns); break;
    case 128: launch_decode<128>(q, k, v, out, nh, sl, ns); break;
    case 256: launch_decode<256>(q, k, v, out, nh, sl, ns); break;
    default:
      KIT_CHECK(false, fn, ": head_dim ", D,
                  " is not supported (this kernel is built for 16, 32, 64, 128 and 256)");
  }
  return q2d ? out.squeeze(1) : out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Task 5: KV-cache update and split-K flash-decoding attention (reference solution)";
  m.def("update_kv_cache", &update_kv_cache,
        "Write k, v [B, S_new, H] into rows [current_pos, current_pos + S_new) of the caches",
        py::arg("k_cache"), py::arg("v_cache"), py::arg("k"), py::arg("v"),
        py::arg("current_pos"));
  m.def("custom_flash_attention_decode", &custom_flash_attention_decode,
        "Attention of one new query per sequence over the first seq_len rows of k, v",
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("num_heads"),
        py::arg("causal") = false, py::arg("seq_len") = -1, py::arg("num_splits") = 0);
}
