// Task 4, reference solution: FlashAttention forward pass as ONE fused CUDA kernel.
//
//   O = softmax(Q K^T * scale  [+ causal mask]) V        (per batch item and head)
//
// The S x S score matrix never exists in global memory. Each thread block owns
// B_r query rows of one head, keeps them in shared memory, and streams the keys
// and values past them in tiles of B_c rows. For every tile it computes the
// B_r x B_c scores, updates a running ("online") softmax and accumulates
// P x V_tile into an output kept in registers. At the end it divides by the
// softmax denominator and writes B_r finished output rows.
//
// What makes it fast (in float32, on the ordinary FMA units, no tensor cores):
//   * register tiling: each thread computes a TM x TN patch of the score tile and
//     a TM x TN_O patch of the output tile, so every value it reads from shared
//     memory is used for several multiply-adds;
//   * 16-byte (float4) shared-memory reads, with rows padded by 4 floats so that
//     the threads of a warp hit different memory banks;
//   * cp.async copies global -> shared memory that run in the background (the
//     value tile is fetched while the scores are computed, the next key tile
//     during the whole step: two key buffers);
//   * exp2f with log2(e) * scale folded into one multiply-add per score;
//   * causal: key tiles entirely in the future are never visited, and blocks
//     with the most work are started first.
//
// Layout: the host code turns q, k, v [B, S, heads*head_dim] into contiguous
// [B*heads, S, D] tensors (D = head_dim rounded up to 16, 32, 64 or 128, padded
// with zeros, which change no dot product) and turns the result back.

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
// Small device helpers
// ============================================================================

// cp.async: copy 16 bytes global -> shared without passing through registers.
// With valid == false nothing is read and the 16 bytes are filled with zeros
// (used for rows past the end of the sequence).
__device__ __forceinline__ void cp_async_16(float* smem_dst, const float* gmem_src, bool valid) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem_src),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Wait until at most N of this thread's committed copy groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Start copying rows [row0, row0 + ROWS) of a [seq_len, D] matrix into shared
// memory (row stride D + 4 floats). Rows >= seq_len become zeros.
template <int ROWS, int D, int THREADS>
__device__ __forceinline__ void load_tile_async(float* smem, const float* gmem, int row0,
                                                int seq_len) {
  constexpr int CHUNKS_PER_ROW = D / 4;  // float4 pieces in one row
  constexpr int CHUNKS = ROWS * CHUNKS_PER_ROW;
#pragma unroll
  for (int it = 0; it < (CHUNKS + THREADS - 1) / THREADS; ++it) {
    const int i = it * THREADS + threadIdx.x;
    if (CHUNKS % THREADS != 0 && i >= CHUNKS) break;
    const int r = i / CHUNKS_PER_ROW;
    const int c = (i % CHUNKS_PER_ROW) * 4;
    const bool valid = row0 + r < seq_len;
    const float* src = gmem + static_cast<size_t>(valid ? row0 + r : 0) * D + c;
    cp_async_16(smem + r * (D + 4) + c, src, valid);
  }
}

// ============================================================================
// The kernel
// ============================================================================
//
// Template parameters:
//   D        head dimension as seen by the kernel (16, 32, 64 or 128)
//   BR, BC   tile sizes: query rows per block (B_r), key/value rows per step (B_c)
//   THREADS  threads per block
//   TM       query rows per thread
//   PREFETCH_K  two key buffers: the next key tile is fetched while this one is used
//
// Threads are arranged as a grid of ROW_GROUPS x COL_THREADS. Thread (rg, ct) owns
//   * query rows        rg + ROW_GROUPS * i,  i < TM         (strided: see below)
//   * score columns     ct + COL_THREADS * j, j < TN         of each B_r x B_c tile
//   * output columns    4*ct + 4*COL_THREADS * h + (0..3), h < TN_O/4  (float4 chunks)
// The COL_THREADS threads that share rows are neighbouring lanes of ONE warp, so
// row maxima and sums are combined with warp shuffles, no shared memory needed.
// Strided rows put the two row groups of a warp on different memory banks.
template <int D, int BR, int BC, int THREADS, int TM, bool PREFETCH_K>
struct FlashConfig {
  static constexpr int ROW_GROUPS = BR / TM;
  static constexpr int COL_THREADS = THREADS / ROW_GROUPS;
  static constexpr int TN = BC / COL_THREADS;   // score columns per thread
  static constexpr int TN_O = D / COL_THREADS;  // output columns per thread
  static constexpr int LDQ = D + 4;             // padded row strides in shared memory
  static constexpr int LDP = BC + 4;
  // Shared memory: Q tile | K tile, later reused for P (twice with PREFETCH_K) | V tile.
  static constexpr int Q_FLOATS = BR * LDQ;
  static constexpr int KP_FLOATS = (BC * LDQ > BR * LDP) ? BC * LDQ : BR * LDP;
  static constexpr int KP_BUFFERS = PREFETCH_K ? 2 : 1;
  static constexpr int V_FLOATS = BC * LDQ;
  static constexpr size_t SMEM_BYTES =
      sizeof(float) * (Q_FLOATS + KP_BUFFERS * KP_FLOATS + V_FLOATS);

  static_assert(BR % TM == 0 && THREADS % ROW_GROUPS == 0, "rows must split evenly");
  static_assert(COL_THREADS <= 32 && (COL_THREADS & (COL_THREADS - 1)) == 0,
                "threads sharing rows must be a power of two within one warp");
  static_assert(BC % COL_THREADS == 0 && TN >= 1, "score columns must split evenly");
  static_assert(D % (4 * COL_THREADS) == 0, "output columns must split into float4 chunks");
  static_assert(BC % 4 == 0 && D % 4 == 0, "tiles are read as float4");
};

template <int D, int BR, int BC, int THREADS, int TM, bool PREFETCH_K>
__global__ void __launch_bounds__(THREADS)
flash_attention_kernel(const float* __restrict__ Q, const float* __restrict__ K,
                       const float* __restrict__ V, float* __restrict__ O, int seq_len,
                       float scale_log2,  // scale * log2(e): exp(x*scale) = exp2(x*scale_log2)
                       bool causal) {
  using C = FlashConfig<D, BR, BC, THREADS, TM, PREFETCH_K>;
  constexpr int TN = C::TN, TN_O = C::TN_O, CT = C::COL_THREADS, RG = C::ROW_GROUPS;
  constexpr int LDQ = C::LDQ, LDP = C::LDP;

  extern __shared__ __align__(16) float smem[];
  float* Qs = smem;                  // [BR][LDQ]
  float* KP0 = Qs + C::Q_FLOATS;     // [BC][LDQ] keys, then [BR][LDP] probabilities
  float* Vs = KP0 + C::KP_BUFFERS * C::KP_FLOATS;  // [BC][LDQ]

  // ---- which (batch*head, query tile) this block computes --------------------
  const int n_qtiles = (seq_len + BR - 1) / BR;
  const int bh = blockIdx.x / n_qtiles;
  int qtile = blockIdx.x % n_qtiles;
  // Causal: the last query tiles see the most keys. Blocks start roughly in
  // blockIdx order, so give the low indices the heavy tiles (less idle tail).
  if (causal) qtile = n_qtiles - 1 - qtile;
  const int q0 = qtile * BR;

  const size_t head_offset = static_cast<size_t>(bh) * seq_len * D;
  const float* Qg = Q + head_offset;
  const float* Kg = K + head_offset;
  const float* Vg = V + head_offset;
  float* Og = O + head_offset;

  const int tid = threadIdx.x;
  const int rg = tid / CT;  // row group
  const int ct = tid % CT;  // position among the threads sharing those rows

  // ---- per-thread state, all in registers ------------------------------------
  float o_acc[TM][TN_O];  // unnormalised output rows
  float row_max[TM];      // running maximum of the raw scores of each row
  float row_sum[TM];      // this thread's part of the running softmax denominator
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    row_max[i] = -INFINITY;
    row_sum[i] = 0.f;
#pragma unroll
    for (int c = 0; c < TN_O; ++c) o_acc[i][c] = 0.f;
  }

  // Causal: keys after the block's last query row are never needed.
  const int kv_end = causal ? min(seq_len, q0 + BR) : seq_len;

  load_tile_async<BR, D, THREADS>(Qs, Qg, q0, seq_len);
  if (PREFETCH_K) load_tile_async<BC, D, THREADS>(KP0, Kg, 0, seq_len);
  cp_async_commit();

  for (int k0 = 0, tile = 0; k0 < kv_end; k0 += BC, ++tile) {
    // With PREFETCH_K, tiles alternate between the two key buffers.
    float* KPs = KP0 + (PREFETCH_K ? (tile & 1) * C::KP_FLOATS : 0);

    // ---- 1. fetch tiles in the background ------------------------------------
    // V arrives while the scores are computed; with PREFETCH_K the NEXT key tile
    // arrives during this whole step. Each commit closes one group of copies;
    // cp_async_wait<N> waits until at most the N newest groups are in flight.
    if (!PREFETCH_K) {
      load_tile_async<BC, D, THREADS>(KPs, Kg, k0, seq_len);
      cp_async_commit();
    }
    load_tile_async<BC, D, THREADS>(Vs, Vg, k0, seq_len);
    cp_async_commit();
    if (PREFETCH_K) {
      // The other buffer held the previous P, which everyone finished reading
      // before the barrier at the end of the last step.
      if (k0 + BC < kv_end) {
        float* next = KP0 + ((tile + 1) & 1) * C::KP_FLOATS;
        load_tile_async<BC, D, THREADS>(next, Kg, k0 + BC, seq_len);
      }
      cp_async_commit();   // (an empty group on the last step keeps the counting simple)
      cp_async_wait<2>();  // all but {V, next K}: Q and this K have landed
    } else {
      cp_async_wait<1>();  // all but {V}: Q and K have landed
    }
    __syncthreads();

    // ---- 2. scores: s = Q_tile K_tile^T (raw, unscaled) ----------------------
    float s[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) s[i][j] = 0.f;

#pragma unroll 4
    for (int kk = 0; kk < D; kk += 4) {
      float4 qv[TM], kv[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i)
        qv[i] = *reinterpret_cast<const float4*>(&Qs[(rg + RG * i) * LDQ + kk]);
#pragma unroll
      for (int j = 0; j < TN; ++j)
        kv[j] = *reinterpret_cast<const float4*>(&KPs[(ct + CT * j) * LDQ + kk]);
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) {
          s[i][j] = fmaf(qv[i].x, kv[j].x, s[i][j]);
          s[i][j] = fmaf(qv[i].y, kv[j].y, s[i][j]);
          s[i][j] = fmaf(qv[i].z, kv[j].z, s[i][j]);
          s[i][j] = fmaf(qv[i].w, kv[j].w, s[i][j]);
        }
    }

    // ---- 3. mask: keys past the end of the sequence, and future keys if causal
    // Only the last tile and tiles crossing the diagonal need it.
    if (k0 + BC > seq_len || (causal && k0 + BC - 1 > q0)) {
#pragma unroll
      for (int i = 0; i < TM; ++i) {
        const int row = q0 + rg + RG * i;
#pragma unroll
        for (int j = 0; j < TN; ++j) {
          const int col = k0 + ct + CT * j;
          if (col >= seq_len || (causal && col > row)) s[i][j] = -INFINITY;
        }
      }
    }

    // ---- 4. online softmax ----------------------------------------------------
    // new max m' = max(m, max_j s_ij); the old output and sum are worth
    // exp(scale*(m - m')) of what they were; p_ij = exp(scale*(s_ij - m')).
#pragma unroll
    for (int i = 0; i < TM; ++i) {
      float tile_max = s[i][0];
#pragma unroll
      for (int j = 1; j < TN; ++j) tile_max = fmaxf(tile_max, s[i][j]);
#pragma unroll
      for (int offset = CT / 2; offset > 0; offset /= 2)  // combine the CT threads of the row
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, offset));
      const float new_max = fmaxf(row_max[i], tile_max);
      // A row with nothing unmasked yet keeps max = -inf; use 0 as the offset so
      // that exp2(-inf - offset) = 0 instead of NaN.
      const float offset = (new_max == -INFINITY) ? 0.f : new_max * scale_log2;
      const float correction = exp2f(row_max[i] * scale_log2 - offset);
      row_max[i] = new_max;
      row_sum[i] *= correction;
#pragma unroll
      for (int c = 0; c < TN_O; ++c) o_acc[i][c] *= correction;
#pragma unroll
      for (int j = 0; j < TN; ++j) {
        const float p = exp2f(fmaf(s[i][j], scale_log2, -offset));
        row_sum[i] += p;
        s[i][j] = p;
      }
    }

    // ---- 5. probabilities to shared memory (over the K tile, no longer needed)
    __syncthreads();  // everyone has finished reading K
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) KPs[(rg + RG * i) * LDP + ct + CT * j] = s[i][j];
    if (PREFETCH_K) cp_async_wait<1>(); else cp_async_wait<0>();  // V has landed
    __syncthreads();

    // ---- 6. output: o += P_tile V_tile ---------------------------------------
#pragma unroll 2
    for (int jj = 0; jj < BC; jj += 4) {
      float4 pv[TM];
#pragma unroll
      for (int i = 0; i < TM; ++i)
        pv[i] = *reinterpret_cast<const float4*>(&KPs[(rg + RG * i) * LDP + jj]);
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        float4 vv[TN_O / 4];
#pragma unroll
        for (int h = 0; h < TN_O / 4; ++h)
          vv[h] = *reinterpret_cast<const float4*>(&Vs[(jj + u) * LDQ + 4 * ct + 4 * CT * h]);
#pragma unroll
        for (int i = 0; i < TM; ++i) {
          const float p = (u == 0) ? pv[i].x : (u == 1) ? pv[i].y : (u == 2) ? pv[i].z : pv[i].w;
#pragma unroll
          for (int h = 0; h < TN_O / 4; ++h) {
            o_acc[i][4 * h + 0] = fmaf(p, vv[h].x, o_acc[i][4 * h + 0]);
            o_acc[i][4 * h + 1] = fmaf(p, vv[h].y, o_acc[i][4 * h + 1]);
            o_acc[i][4 * h + 2] = fmaf(p, vv[h].z, o_acc[i][4 * h + 2]);
            o_acc[i][4 * h + 3] = fmaf(p, vv[h].w, o_acc[i][4 * h + 3]);
          }
        }
      }
    }
    __syncthreads();  // P and V are read by all before the next tile overwrites them
  }

  // ---- 7. normalise and write the finished rows ----------------------------
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    float total = row_sum[i];
#pragma unroll
    for (int offset = CT / 2; offset > 0; offset /= 2)
      total += __shfl_xor_sync(0xffffffffu, total, offset);
    const int row = q0 + rg + RG * i;
    if (row < seq_len) {
      const float inv = 1.f / total;
#pragma unroll
      for (int h = 0; h < TN_O / 4; ++h) {
        float4 out;
        out.x = o_acc[i][4 * h + 0] * inv;
        out.y = o_acc[i][4 * h + 1] * inv;
        out.z = o_acc[i][4 * h + 2] * inv;
        out.w = o_acc[i][4 * h + 3] * inv;
        *reinterpret_cast<float4*>(&Og[static_cast<size_t>(row) * D + 4 * ct + 4 * CT * h]) = out;
      }
    }
  }
}

// ============================================================================
// Host side
// ============================================================================

// Tile configuration for head_dim up to 128, tuned on an H100/H200 (see
// bench/NOTES.md). The macros exist so that bench/flash_attention.py can build
// variants; students tune by editing the numbers.
#ifndef FA_BR
#define FA_BR 128
#endif
#ifndef FA_BC
#define FA_BC 64
#endif
#ifndef FA_THREADS
#define FA_THREADS 256
#endif
#ifndef FA_TM
#define FA_TM 8
#endif
#ifndef FA_PREFETCH_K
#define FA_PREFETCH_K 1
#endif

template <int D, int BR, int BC, int THREADS, int TM, bool PREFETCH_K>
static void launch_flash(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                         torch::Tensor& o, float scale_log2, bool causal) {
  using C = FlashConfig<D, BR, BC, THREADS, TM, PREFETCH_K>;
  const int64_t bh = q.size(0), seq_len = q.size(1);
  const int64_t n_qtiles = (seq_len + BR - 1) / BR;
  const int64_t blocks = bh * n_qtiles;
  TORCH_CHECK(blocks <= INT32_MAX && seq_len <= INT32_MAX, "problem too large for one launch");
  auto kernel = flash_attention_kernel<D, BR, BC, THREADS, TM, PREFETCH_K>;
  allow_dynamic_shared_memory(reinterpret_cast<const void*>(kernel), C::SMEM_BYTES);
  kernel<<<static_cast<unsigned>(blocks), THREADS, C::SMEM_BYTES,
           c10::cuda::getCurrentCUDAStream()>>>(q.data_ptr<float>(), k.data_ptr<float>(),
                                               v.data_ptr<float>(), o.data_ptr<float>(),
                                               static_cast<int>(seq_len), scale_log2, causal);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

torch::Tensor custom_flash_attention(torch::Tensor q, torch::Tensor k, torch::Tensor v,
                                     int64_t num_heads, bool causal) {
  const int64_t head_dim = check_attention_inputs(q, k, v, num_heads, MAX_HEAD_DIM);
  const c10::cuda::CUDAGuard guard(q.device());
  const int64_t B = q.size(0);
  if (q.numel() == 0) return torch::empty_like(q);

  // Softmax scale 1/sqrt(head_dim), pre-multiplied by log2(e) so the kernel can use exp2f.
  const float scale_log2 = static_cast<float>(1.4426950408889634 / std::sqrt(double(head_dim)));
  // The kernel works on a padded head dimension: 16, 32, 64 or 128.
  const int64_t D = head_dim <= 16 ? 16 : head_dim <= 32 ? 32 : head_dim <= 64 ? 64 : 128;
  torch::Tensor qh = split_heads(q, num_heads, D);
  torch::Tensor kh = split_heads(k, num_heads, D);
  torch::Tensor vh = split_heads(v, num_heads, D);
  torch::Tensor oh = torch::empty_like(qh);

  switch (D) {
#ifndef FA_ONLY_HEAD_DIM_128  // (bench/flash_attention.py builds tuning variants without these)
    case 16: launch_flash<16, 64, 64, 64, 4, false>(qh, kh, vh, oh, scale_log2, causal); break;
    case 32: launch_flash<32, 64, 64, 64, 8, false>(qh, kh, vh, oh, scale_log2, causal); break;
    case 64: launch_flash<64, 128, 64, 256, 8, true>(qh, kh, vh, oh, scale_log2, causal); break;
#endif
    case 128:
      launch_flash<128, FA_BR, FA_BC, FA_THREADS, FA_TM, FA_PREFETCH_K>(qh, kh, vh, oh,
                                                                         scale_log2, causal);
      break;
    default: TORCH_CHECK(false, "this build only has the head_dim 128 kernel");
  }
  return merge_heads(oh, B, num_heads, head_dim);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("custom_flash_attention", &custom_flash_attention,
        "Fused FlashAttention forward: q, k, v [B, S, heads*head_dim] float32 (CUDA)",
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("num_heads"), py::arg("causal") = false);
}
