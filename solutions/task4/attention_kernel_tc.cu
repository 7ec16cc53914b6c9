// Task 4 bonus, reference solution: FlashAttention forward on the tensor cores.
//
//   O = softmax(Q K^T * scale  [+ causal mask]) V        (per batch item and head)
//
// Build and test (from the repository root, on a GPU node):
//   python -m task4.compile                      (builds this file as custom_flash_attention_tc)
//   ATTN_KIT_IMPL=solutions python -m pytest task4/test.py -k bonus -rs
//
// Two versions of one kernel design, one per function of the extension:
//
//   custom_flash_attention_bf16(q, k, v, num_heads, causal)
//       q, k, v bfloat16 [B, S, heads*head_dim] -> bfloat16 [B, S, heads*head_dim]
//       (the dtype PyTorch's bf16 attention returns). Q K^T and P V run on
//       mma.sync.m16n8k16 with bf16 inputs and float32 accumulators; the softmax
//       is float32, P is rounded to bf16 for the P V product (as FlashAttention-2 does).
//   custom_flash_attention_3xtf32(q, k, v, num_heads, causal)
//       q, k, v float32 -> float32, at float32 accuracy. Each operand x is split into
//       x_hi = tf32(x) (round to nearest) and x_lo = tf32(x - x_hi); a product a*b is
//       a_lo*b_hi + a_hi*b_lo + a_hi*b_hi on mma.sync.m16n8k8.tf32 (three products; the
//       dropped a_lo*b_lo is ~2^-22 of a*b). The three products of each k step go into a
//       fresh accumulator (the small terms first), which is then added to the scores or
//       the output with ordinary float32 adds: a tensor core may round its sums towards
//       zero, so a chain of hundreds of mma instructions into one accumulator (P V over
//       4096 keys: 1536) would drift beyond float32 accuracy; a chain of 3 does not.
//
// The FlashAttention-2 structure of both (README, Task 4 bonus):
//   * a block owns BR = 128 query rows of one head; its 8 warps own 16 rows each;
//   * keys and values stream through shared memory in tiles of BC = 64 rows, copied with
//     cp.async (V of this tile arrives while Q K^T runs, the next K tile while the softmax
//     and P V run);
//   * each warp computes its 16 x 64 score tile S = Q K^T in mma accumulator fragments,
//     does the online softmax on those fragments in registers (row max and row sum over the
//     4 threads that share a row, by warp shuffles), and multiplies P by V straight from
//     the registers: the S x S matrix is never stored, not even in shared memory;
//   * causal: key tiles after the block's last row are never loaded, a warp skips the
//     tiles entirely after its own rows, and the heaviest query tiles start first.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16 / m16n8k8"): in a warp,
// lane = 4 * gid + tig (gid = lane / 4 in 0..7, tig = lane % 4). An m16n8 float accumulator
// holds rows gid and gid + 8, columns 2 tig and 2 tig + 1 (c0 c1: row gid; c2 c3: row gid+8).
//   bf16 m16n8k16: A (16x16) regs {a0a1, a2a3, a4a5, a6a7} = rows {gid, gid+8, gid, gid+8},
//     columns {2tig,2tig+1} (+8 for the last two); B (16x8) regs {b0b1, b2b3} = rows
//     {2tig,2tig+1} (+8 for the second), column gid. So the accumulators of two neighbouring
//     n8 score tiles are, packed to bf16 pairs, exactly the A fragment of the next k16 step:
//     P never leaves the registers.
//   tf32 m16n8k8: A (16x8) a0..a3 = (gid, tig), (gid+8, tig), (gid, tig+4), (gid+8, tig+4);
//     B (8x8) b0, b1 = (tig, gid), (tig+4, gid). The accumulator's columns 2tig, 2tig+1 do not
//     match A's tig, tig+4, but a sum over keys may visit them in any order: slot tig stands
//     for key 2tig and slot tig+4 for key 2tig+1, in P's fragment and in V's alike.
//
// Layout: the host code turns q, k, v [B, S, heads*head_dim] into contiguous [B*heads, S, D]
// (D = head_dim rounded up to 16, 32, 64 or 128, padded with zeros, which change no dot
// product) and the result back.

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
#include <cstring>
#include <string>

// ============================================================================
// Provided: layout helpers (the input checks and allow_dynamic_shared_memory()
// are in kit_checks.cuh)
// ============================================================================

// The largest head_dim these kernels support (the shared-memory tiles are sized for it).
constexpr int MAX_HEAD_DIM = 128;

// split_heads and merge_heads (the head layout the kernels run on) are in head_layout.cuh.

// ============================================================================
// Provided: the warp-level matrix instructions (inline PTX)
// ============================================================================

// d += a * b on one m16n8k16 tile: bf16 A (16x16, 4 regs of 2) and B (16x8, 2 regs of 2),
// float32 accumulators d (16x8, 4 per thread). Fragment layouts: see the header.
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
// The mask clears the 13 low bits, so the pattern is also that float exactly.
__device__ __forceinline__ uint32_t to_tf32(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r & 0xffffe000u;
}

// ============================================================================
// Small device helpers
// ============================================================================

__device__ __forceinline__ unsigned shared_address(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// x = hi + lo with both tf32: hi is x rounded to tf32, lo the (exact, float32) remainder
// rounded to tf32. |lo| <= 2^-11 |x|, and x - (hi + lo) is ~2^-22 |x|.
__device__ __forceinline__ void split_tf32(float x, uint32_t& hi, uint32_t& lo) {
  hi = to_tf32(x);
  lo = to_tf32(x - __uint_as_float(hi));
}

// acc += a * b in 3xTF32 on one m16n8k8 tile: a_lo*b_hi + a_hi*b_lo + a_hi*b_hi into a fresh
// accumulator (the small terms first), then added to acc with float32 adds, so no long chain of
// tensor-core sums (which may round towards zero) stands between acc and float32 rounding.
__device__ __forceinline__ void mma_3xtf32(float (&acc)[4], const uint32_t (&a_hi)[4], const uint32_t (&a_lo)[4],
                                           const uint32_t (&b_hi)[2], const uint32_t (&b_lo)[2]) {
  float t[4] = {0.f, 0.f, 0.f, 0.f};
  mma_tf32_m16n8k8(t, a_lo, b_hi);
  mma_tf32_m16n8k8(t, a_hi, b_lo);
  mma_tf32_m16n8k8(t, a_hi, b_hi);
#pragma unroll
  for (int e = 0; e < 4; ++e) acc[e] += t[e];
}

// Two floats rounded to bf16 and packed into one register (the first in the low half, the
// lower column index, as the mma fragments expect).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t r;
  memcpy(&r, &v, sizeof(r));
  return r;
}

// ldmatrix: the warp loads four 8x8 matrices of 16-bit values from shared memory; lane
// 8*m + r gives the address of row r of matrix m, and register m of lane 4*i + j receives
// row i, columns 2j and 2j+1 of matrix m (.trans: column i, rows 2j and 2j+1).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row_address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(row_address)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row_address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(row_address)));
}

// cp.async: copy 16 bytes global -> shared without passing through registers; with
// valid == false nothing is read and the 16 bytes become zeros (rows past the sequence).
__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* gmem_src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(smem_dst)),
               "l"(gmem_src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Wait until at most N of this thread's committed copy groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Start copying rows [row0, row0 + ROWS) of a contiguous [seq_len, D] matrix of T into
// shared memory with a row stride of LD elements. Rows >= seq_len become zeros.
template <typename T, int ROWS, int D, int LD, int THREADS>
__device__ __forceinline__ void copy_rows_async(T* smem, const T* gmem, int row0, int seq_len) {
  constexpr int PER_CHUNK = 16 / sizeof(T);  // elements per 16-byte copy
  constexpr int CHUNKS_PER_ROW = D / PER_CHUNK;
  constexpr int CHUNKS = ROWS * CHUNKS_PER_ROW;
  static_assert(D % PER_CHUNK == 0 && (LD * sizeof(T)) % 16 == 0, "rows must be 16-byte pieces");
#pragma unroll
  for (int it = 0; it < (CHUNKS + THREADS - 1) / THREADS; ++it) {
    const int i = it * THREADS + threadIdx.x;
    if (CHUNKS % THREADS != 0 && i >= CHUNKS) break;
    const int r = i / CHUNKS_PER_ROW;
    const int c = (i % CHUNKS_PER_ROW) * PER_CHUNK;
    const bool valid = row0 + r < seq_len;
    const T* src = gmem + static_cast<size_t>(valid ? row0 + r : 0) * D + c;
    cp_async_16(smem + r * LD + c, src, valid);
  }
}

// The online softmax of one warp's score tile, on its accumulator fragments (both kernels).
// s[nt][e] is the raw score of row wrow0 + gid + 8*(e/2) and key k0 + 8*nt + 2*tig + e%2;
// it becomes p = exp(scale * (s - m_new)), and m, l and the output o are updated:
//   m_new = max(m, max_j s_j);  l = exp(scale*(m - m_new)) l + sum_j p_j;  o *= exp(scale*(m - m_new)).
// l is this thread's part of the row sum (its 16 columns); the 4 threads of a row add theirs
// at the end. Keys past seq_len and (causal) keys after the row count as -inf.
template <int NT_S, int NT_O>
__device__ __forceinline__ void online_softmax(float (&s)[NT_S][4], float (&o)[NT_O][4],
                                               float (&m)[2], float (&l)[2], int k0, int wrow0,
                                               int gid, int tig, int seq_len, float scale_log2,
                                               bool causal) {
  constexpr int BC = 8 * NT_S;
  // Only the last tile and the tiles crossing this warp's diagonal have masked entries.
  if (k0 + BC > seq_len || (causal && k0 + BC - 1 > wrow0)) {
#pragma unroll
    for (int nt = 0; nt < NT_S; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = wrow0 + gid + 8 * (e >> 1);
        const int col = k0 + 8 * nt + 2 * tig + (e & 1);
        if (col >= seq_len || (causal && col > row)) s[nt][e] = -INFINITY;
      }
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {  // i = 0: row gid (e = 0, 1); i = 1: row gid + 8 (e = 2, 3)
    float tile_max = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < NT_S; ++nt)
      tile_max = fmaxf(tile_max, fmaxf(s[nt][2 * i], s[nt][2 * i + 1]));
    // The 4 threads of a quad (lanes 4 gid .. 4 gid + 3) hold the row's other columns.
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
    const float new_max = fmaxf(m[i], tile_max);
    // A row with nothing unmasked yet keeps max = -inf; 0 as the offset makes exp2 0, not NaN.
    const float offset = (new_max == -INFINITY) ? 0.f : new_max * scale_log2;
    const float correction = exp2f(m[i] * scale_log2 - offset);
    m[i] = new_max;
    l[i] *= correction;
#pragma unroll
    for (int nt = 0; nt < NT_O; ++nt) {
      o[nt][2 * i] *= correction;
      o[nt][2 * i + 1] *= correction;
    }
#pragma unroll
    for (int nt = 0; nt < NT_S; ++nt)
#pragma unroll
      for (int e = 2 * i; e < 2 * i + 2; ++e) {
        const float p = exp2f(fmaf(s[nt][e], scale_log2, -offset));
        l[i] += p;
        s[nt][e] = p;
      }
  }
}

// The block's place in the grid (both kernels): blockIdx.x = (batch*head) * n_qtiles + query tile.
// Causal: the last query tiles see the most keys, and blocks start roughly in blockIdx order,
// so the low indices get the heavy tiles (less idle tail).
__device__ __forceinline__ void block_position(int seq_len, int br, bool causal, int& bh, int& q0) {
  const int n_qtiles = (seq_len + br - 1) / br;
  bh = blockIdx.x / n_qtiles;
  int qtile = blockIdx.x % n_qtiles;
  if (causal) qtile = n_qtiles - 1 - qtile;
  q0 = qtile * br;
}

// ============================================================================
// (a) bf16 inputs, float32 accumulation: mma.m16n8k16
// ============================================================================

template <int D>
struct Bf16Tiles {
  static constexpr int BR = 128, BC = 64, WARPS = 8, THREADS = 32 * WARPS;
  static constexpr int LD = D + 8;       // bf16 per shared-memory row: 16 bytes of padding keep
                                         // ldmatrix's 8 row reads on 8 different bank groups
  static constexpr int KSTEPS = D / 16;  // k16 steps of Q K^T
  static constexpr int NT_S = BC / 8;    // n8 tiles of a score tile
  static constexpr int NT_O = D / 8;     // n8 tiles of an output tile
  static constexpr size_t SMEM_BYTES = sizeof(__nv_bfloat16) * (BR + 2 * BC) * LD;
  static_assert(BR == 16 * WARPS && D % 16 == 0 && BC % 16 == 0, "tile shapes");
};

template <int D>
__global__ void __launch_bounds__(Bf16Tiles<D>::THREADS)
flash_attention_bf16_kernel(const __nv_bfloat16* __restrict__ Q, const __nv_bfloat16* __restrict__ K,
                            const __nv_bfloat16* __restrict__ V, __nv_bfloat16* __restrict__ O,
                            int seq_len, float scale_log2, bool causal) {
  using C = Bf16Tiles<D>;
  constexpr int BR = C::BR, BC = C::BC, LD = C::LD, NT_S = C::NT_S, NT_O = C::NT_O;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* Qs = reinterpret_cast<__nv_bfloat16*>(smem_raw);  // [BR][LD]
  __nv_bfloat16* Ks = Qs + BR * LD;                                 // [BC][LD]
  __nv_bfloat16* Vs = Ks + BC * LD;                                 // [BC][LD]

  int bh, q0;
  block_position(seq_len, BR, causal, bh, q0);
  const size_t head_offset = static_cast<size_t>(bh) * seq_len * D;
  const __nv_bfloat16* Qg = Q + head_offset;
  const __nv_bfloat16* Kg = K + head_offset;
  const __nv_bfloat16* Vg = V + head_offset;
  __nv_bfloat16* Og = O + head_offset;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int gid = lane / 4, tig = lane % 4;
  const int mi = lane / 8, mr = lane % 8;  // the ldmatrix row this lane addresses: matrix mi, row mr
  const int wrow0 = q0 + 16 * warp;        // the warp's first query row
  const bool warp_has_rows = wrow0 < seq_len;

  float o[NT_O][4];  // output accumulators: rows gid, gid + 8 of the warp, unnormalised
#pragma unroll
  for (int nt = 0; nt < NT_O; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  uint32_t qf[C::KSTEPS][4];  // the warp's 16 query rows as A fragments, loaded once

  // Causal: keys after the block's last query row are never needed.
  const int kv_end = causal ? min(seq_len, q0 + BR) : seq_len;

  copy_rows_async<__nv_bfloat16, BR, D, LD, C::THREADS>(Qs, Qg, q0, seq_len);
  copy_rows_async<__nv_bfloat16, BC, D, LD, C::THREADS>(Ks, Kg, 0, seq_len);
  cp_async_commit();  // group: Q and the first K tile

  for (int k0 = 0; k0 < kv_end; k0 += BC) {
    // V of this tile arrives while the scores are computed (the buffer is free: the last
    // step ended with a barrier after its P V).
    copy_rows_async<__nv_bfloat16, BC, D, LD, C::THREADS>(Vs, Vg, k0, seq_len);
    cp_async_commit();
    cp_async_wait<1>();  // everything but this V: Q and this K tile have landed
    __syncthreads();

    if (k0 == 0) {  // (block-uniform) the query fragments, once
#pragma unroll
      for (int kk = 0; kk < C::KSTEPS; ++kk)  // matrix mi: rows +8*(mi%2), columns +8*(mi/2)
        ldmatrix_x4(qf[kk], &Qs[(16 * warp + 8 * (mi & 1) + mr) * LD + 16 * kk + 8 * (mi >> 1)]);
    }
    // Warp-uniform: a warp without rows, or (causal) whose rows all precede this tile, has
    // nothing to add (every p would be 0) and skips the work, not the barriers.
    const bool active = warp_has_rows && !(causal && k0 > wrow0 + 15);

    // ---- S = Q K^T on the tensor cores ----------------------------------------
    float s[NT_S][4];
#pragma unroll
    for (int nt = 0; nt < NT_S; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
    if (active) {
#pragma unroll
      for (int kk = 0; kk < C::KSTEPS; ++kk)
#pragma unroll
        for (int nt = 0; nt < NT_S; nt += 2) {
          // Matrix mi: keys 8*nt + 8*(mi/2) .., head dims 16*kk + 8*(mi%2) ..: registers 0, 1
          // are key tile nt's B fragment (dims 0-7, 8-15 of the step), registers 2, 3 tile nt+1's.
          uint32_t kb[4];
          ldmatrix_x4(kb, &Ks[(8 * nt + 8 * (mi >> 1) + mr) * LD + 16 * kk + 8 * (mi & 1)]);
          const uint32_t b0[2] = {kb[0], kb[1]}, b1[2] = {kb[2], kb[3]};
          mma_bf16_m16n8k16(s[nt], qf[kk], b0);
          mma_bf16_m16n8k16(s[nt + 1], qf[kk], b1);
        }
    }
    __syncthreads();  // every warp has read this K tile
    if (k0 + BC < kv_end) copy_rows_async<__nv_bfloat16, BC, D, LD, C::THREADS>(Ks, Kg, k0 + BC, seq_len);
    cp_async_commit();  // the next K tile arrives during the softmax and P V (an empty group at the end)

    // ---- online softmax on the fragments, then P V ----------------------------
    if (active) online_softmax<NT_S, NT_O>(s, o, m, l, k0, wrow0, gid, tig, seq_len, scale_log2, causal);
    cp_async_wait<1>();  // everything but the next K: this V has landed
    __syncthreads();
    if (active) {
#pragma unroll
      for (int kc = 0; kc < BC / 16; ++kc) {
        // Keys 16 kc .. 16 kc + 15 are score tiles 2kc and 2kc+1: their accumulators, as bf16
        // pairs, are the A fragment (rows gid / gid+8, keys 2tig.. / 8+2tig..).
        const uint32_t pa[4] = {pack_bf16(s[2 * kc][0], s[2 * kc][1]), pack_bf16(s[2 * kc][2], s[2 * kc][3]),
                                pack_bf16(s[2 * kc + 1][0], s[2 * kc + 1][1]),
                                pack_bf16(s[2 * kc + 1][2], s[2 * kc + 1][3])};
#pragma unroll
        for (int nt = 0; nt < NT_O; nt += 2) {
          // Matrix mi: keys 16 kc + 8*(mi%2) .., head dims 8 nt + 8*(mi/2) .., transposed: registers
          // 0, 1 are dims tile nt's B fragment (keys 0-7, 8-15 of the chunk), registers 2, 3 tile nt+1's.
          uint32_t vb[4];
          ldmatrix_x4_trans(vb, &Vs[(16 * kc + 8 * (mi & 1) + mr) * LD + 8 * nt + 8 * (mi >> 1)]);
          const uint32_t b0[2] = {vb[0], vb[1]}, b1[2] = {vb[2], vb[3]};
          mma_bf16_m16n8k16(o[nt], pa, b0);
          mma_bf16_m16n8k16(o[nt + 1], pa, b1);
        }
      }
    }
    __syncthreads();  // every warp has read this V tile before the next one overwrites it
  }

  // ---- normalise and write the finished rows ----------------------------------
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    float total = l[i];
    total += __shfl_xor_sync(0xffffffffu, total, 1);
    total += __shfl_xor_sync(0xffffffffu, total, 2);
    const int row = wrow0 + gid + 8 * i;
    if (row < seq_len) {
      const float inv = 1.f / total;
      uint32_t* dst = reinterpret_cast<uint32_t*>(Og + static_cast<size_t>(row) * D + 2 * tig);
#pragma unroll
      for (int nt = 0; nt < NT_O; ++nt)  // columns 8 nt + 2 tig, + 1: one 4-byte store
        dst[4 * nt] = pack_bf16(o[nt][2 * i] * inv, o[nt][2 * i + 1] * inv);
    }
  }
}

// ============================================================================
// (b) float32 inputs at float32 accuracy: 3xTF32 on mma.m16n8k8
// ============================================================================

template <int D>
struct Tf32Tiles {
  static constexpr int BR = 128, BC = 64, WARPS = 8, THREADS = 32 * WARPS;
  static constexpr int LD = D + 4;      // floats per shared-memory row: rows 4 banks apart, so the
                                        // fragment reads (8 rows x 4 columns) hit 32 different banks
  static constexpr int KSTEPS = D / 8;  // k8 steps of Q K^T
  static constexpr int NT_S = BC / 8;
  static constexpr int NT_O = D / 8;
  static constexpr size_t SMEM_BYTES = sizeof(float) * (BR + 2 * BC) * LD;
  static_assert(BR == 16 * WARPS && D % 8 == 0 && BC % 8 == 0, "tile shapes");
};

template <int D>
__global__ void __launch_bounds__(Tf32Tiles<D>::THREADS)
flash_attention_3xtf32_kernel(const float* __restrict__ Q, const float* __restrict__ K,
                              const float* __restrict__ V, float* __restrict__ O, int seq_len,
                              float scale_log2, bool causal) {
  using C = Tf32Tiles<D>;
  constexpr int BR = C::BR, BC = C::BC, LD = C::LD, NT_S = C::NT_S, NT_O = C::NT_O;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  float* Qs = reinterpret_cast<float*>(smem_raw);  // [BR][LD]
  float* Ks = Qs + BR * LD;                        // [BC][LD]
  float* Vs = Ks + BC * LD;                        // [BC][LD]

  int bh, q0;
  block_position(seq_len, BR, causal, bh, q0);
  const size_t head_offset = static_cast<size_t>(bh) * seq_len * D;
  const float* Qg = Q + head_offset;
  const float* Kg = K + head_offset;
  const float* Vg = V + head_offset;
  float* Og = O + head_offset;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int gid = lane / 4, tig = lane % 4;
  const int wrow0 = q0 + 16 * warp;
  const bool warp_has_rows = wrow0 < seq_len;

  float o[NT_O][4];
#pragma unroll
  for (int nt = 0; nt < NT_O; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

  const int kv_end = causal ? min(seq_len, q0 + BR) : seq_len;

  copy_rows_async<float, BR, D, LD, C::THREADS>(Qs, Qg, q0, seq_len);
  copy_rows_async<float, BC, D, LD, C::THREADS>(Ks, Kg, 0, seq_len);
  cp_async_commit();  // group: Q and the first K tile

  // This warp's query rows gid and gid + 8, from column tig on (A fragment reads).
  const float* q_frag = Qs + (16 * warp + gid) * LD + tig;

  for (int k0 = 0; k0 < kv_end; k0 += BC) {
    copy_rows_async<float, BC, D, LD, C::THREADS>(Vs, Vg, k0, seq_len);
    cp_async_commit();
    cp_async_wait<1>();  // Q and this K tile have landed
    __syncthreads();
    const bool active = warp_has_rows && !(causal && k0 > wrow0 + 15);

    // ---- S = Q K^T in 3xTF32: s += q_lo k_hi + q_hi k_lo + q_hi k_hi ----------
    float s[NT_S][4];
#pragma unroll
    for (int nt = 0; nt < NT_S; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
    if (active) {
#pragma unroll 4
      for (int kk = 0; kk < C::KSTEPS; ++kk) {
        // A: (gid, tig), (gid+8, tig), (gid, tig+4), (gid+8, tig+4) of the step's 16 x 8 block.
        const float* qp = q_frag + 8 * kk;
        uint32_t a_hi[4], a_lo[4];
        split_tf32(qp[0], a_hi[0], a_lo[0]);
        split_tf32(qp[8 * LD], a_hi[1], a_lo[1]);
        split_tf32(qp[4], a_hi[2], a_lo[2]);
        split_tf32(qp[8 * LD + 4], a_hi[3], a_lo[3]);
#pragma unroll
        for (int nt = 0; nt < NT_S; ++nt) {
          // B[k][n] = K[key n][dim k]: b0 = (tig, gid), b1 = (tig + 4, gid).
          const float* kp = Ks + (8 * nt + gid) * LD + 8 * kk + tig;
          uint32_t b_hi[2], b_lo[2];
          split_tf32(kp[0], b_hi[0], b_lo[0]);
          split_tf32(kp[4], b_hi[1], b_lo[1]);
          mma_3xtf32(s[nt], a_hi, a_lo, b_hi, b_lo);
        }
      }
    }
    __syncthreads();  // every warp has read this K tile
    if (k0 + BC < kv_end) copy_rows_async<float, BC, D, LD, C::THREADS>(Ks, Kg, k0 + BC, seq_len);
    cp_async_commit();

    if (active) online_softmax<NT_S, NT_O>(s, o, m, l, k0, wrow0, gid, tig, seq_len, scale_log2, causal);
    cp_async_wait<1>();  // this V tile has landed
    __syncthreads();
    if (active) {
      // ---- o += P V in 3xTF32 (o was already rescaled by the softmax step) ----------
#pragma unroll
      for (int kc = 0; kc < NT_S; ++kc) {
        // Keys 8 kc .. 8 kc + 7 = score tile kc. The A slot tig is key 2tig, slot tig + 4 key
        // 2tig + 1 (the thread's two accumulator columns): a = (gid, 2tig), (gid+8, 2tig),
        // (gid, 2tig+1), (gid+8, 2tig+1) = s[kc][0], s[kc][2], s[kc][1], s[kc][3].
        uint32_t p_hi[4], p_lo[4];
        split_tf32(s[kc][0], p_hi[0], p_lo[0]);
        split_tf32(s[kc][2], p_hi[1], p_lo[1]);
        split_tf32(s[kc][1], p_hi[2], p_lo[2]);
        split_tf32(s[kc][3], p_hi[3], p_lo[3]);
#pragma unroll
        for (int nt = 0; nt < NT_O; ++nt) {
          // B slot tig = V[key 2tig][dim gid], slot tig + 4 = V[key 2tig + 1][dim gid].
          const float* vp = Vs + (8 * kc + 2 * tig) * LD + 8 * nt + gid;
          uint32_t b_hi[2], b_lo[2];
          split_tf32(vp[0], b_hi[0], b_lo[0]);
          split_tf32(vp[LD], b_hi[1], b_lo[1]);
          mma_3xtf32(o[nt], p_hi, p_lo, b_hi, b_lo);
        }
      }
    }
    __syncthreads();  // every warp has read this V tile
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    float total = l[i];
    total += __shfl_xor_sync(0xffffffffu, total, 1);
    total += __shfl_xor_sync(0xffffffffu, total, 2);
    const int row = wrow0 + gid + 8 * i;
    if (row < seq_len) {
      const float inv = 1.f / total;
      float2* dst = reinterpret_cast<float2*>(Og + static_cast<size_t>(row) * D + 2 * tig);
#pragma unroll
      for (int nt = 0; nt < NT_O; ++nt) dst[4 * nt] = make_float2(o[nt][2 * i] * inv, o[nt][2 * i + 1] * inv);
    }
  }
}

// ============================================================================
// Host side
// ============================================================================

// The padded head dimension the kernels are instantiated for.
static int64_t kernel_head_dim(int64_t head_dim) {
  return head_dim <= 16 ? 16 : head_dim <= 32 ? 32 : head_dim <= 64 ? 64 : 128;
}

template <typename Tiles, typename T>
static void launch_tc(void (*kernel)(const T*, const T*, const T*, T*, int, float, bool),
                      const torch::Tensor& qh, const torch::Tensor& kh, const torch::Tensor& vh,
                      torch::Tensor& oh, float scale_log2, bool causal) {
  const int64_t bh = qh.size(0), seq_len = qh.size(1);
  const int64_t blocks = bh * ((seq_len + Tiles::BR - 1) / Tiles::BR);
  KIT_CHECK(blocks <= INT32_MAX && seq_len <= INT32_MAX, "problem too large for one launch: ", blocks,
            " blocks, seq_len ", seq_len);
  allow_dynamic_shared_memory(reinterpret_cast<const void*>(kernel), Tiles::SMEM_BYTES);
  kernel<<<static_cast<unsigned>(blocks), Tiles::THREADS, Tiles::SMEM_BYTES,
           c10::cuda::getCurrentCUDAStream()>>>(
      static_cast<const T*>(qh.data_ptr()), static_cast<const T*>(kh.data_ptr()),
      static_cast<const T*>(vh.data_ptr()), static_cast<T*>(oh.data_ptr()),
      static_cast<int>(seq_len), scale_log2, causal);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Softmax scale 1/sqrt(head_dim), pre-multiplied by log2(e) so the kernels can use exp2f.
static float scale_log2_of(int64_t head_dim) {
  return static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(head_dim)));
}

torch::Tensor custom_flash_attention_bf16(torch::Tensor q, torch::Tensor k, torch::Tensor v,
                                          int64_t num_heads, bool causal) {
  const int64_t head_dim = check_attention_inputs(q, k, v, num_heads, MAX_HEAD_DIM, torch::kBFloat16);
  const c10::cuda::CUDAGuard guard(q.device());
  if (q.numel() == 0) return torch::empty_like(q);
  const int64_t D = kernel_head_dim(head_dim);
  torch::Tensor qh = split_heads(q, num_heads, D), kh = split_heads(k, num_heads, D);
  torch::Tensor vh = split_heads(v, num_heads, D), oh = torch::empty_like(qh);
  const float scale_log2 = scale_log2_of(head_dim);
  using T = __nv_bfloat16;
  switch (D) {
    case 16: launch_tc<Bf16Tiles<16>, T>(flash_attention_bf16_kernel<16>, qh, kh, vh, oh, scale_log2, causal); break;
    case 32: launch_tc<Bf16Tiles<32>, T>(flash_attention_bf16_kernel<32>, qh, kh, vh, oh, scale_log2, causal); break;
    case 64: launch_tc<Bf16Tiles<64>, T>(flash_attention_bf16_kernel<64>, qh, kh, vh, oh, scale_log2, causal); break;
    default: launch_tc<Bf16Tiles<128>, T>(flash_attention_bf16_kernel<128>, qh, kh, vh, oh, scale_log2, causal);
  }
  return merge_heads(oh, q.size(0), num_heads, head_dim);
}

torch::Tensor custom_flash_attention_3xtf32(torch::Tensor q, torch::Tensor k, torch::Tensor v,
                                            int64_t num_heads, bool causal) {
  const int64_t head_dim = check_attention_inputs(q, k, v, num_heads, MAX_HEAD_DIM);
  const c10::cuda::CUDAGuard guard(q.device());
  if (q.numel() == 0) return torch::empty_like(q);
  const int64_t D = kernel_head_dim(head_dim);
  torch::Tensor qh = split_heads(q, num_heads, D), kh = split_heads(k, num_heads, D);
  torch::Tensor vh = split_heads(v, num_heads, D), oh = torch::empty_like(qh);
  const float scale_log2 = scale_log2_of(head_dim);
  switch (D) {
    case 16: launch_tc<Tf32Tiles<16>, float>(flash_attention_3xtf32_kernel<16>, qh, kh, vh, oh, scale_log2, causal); break;
    case 32: launch_tc<Tf32Tiles<32>, float>(flash_attention_3xtf32_kernel<32>, qh, kh, vh, oh, scale_log2, causal); break;
    case 64: launch_tc<Tf32Tiles<64>, float>(flash_attention_3xtf32_kernel<64>, qh, kh, vh, oh, scale_log2, causal); break;
    default: launch_tc<Tf32Tiles<128>, float>(flash_attention_3xtf32_kernel<128>, qh, kh, vh, oh, scale_log2, causal);
  }
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
