"""A CPU model of the float32 output accumulation of the task-4 reference kernel (not the kernel).

    python bench/accumulation_model.py      # numpy only, no GPU; about a second

The sweep of 2026-12-02 (bench/results) found the kernel beyond the float64 allowance at three
long non-causal shapes. Each thread there adds p_j * v_j for all S keys into one float32
register: one chain of S adds. This models that order, and the fix of summing each key tile of
Bc keys apart and folding the tile into the running output (a chain of S/Bc + Bc adds), on one
head at S = 16384, against float64 and against the kit's yardstick (the float64 formulas in
float32: a BLAS product, which sums in blocks). Printed on this machine (numpy, seed 0):

    yardstick (float32 formulas)   max|err| 2.283e-08
    one chain over S               max|err| 2.708e-07   (12x the yardstick; the allowance is 8x)
    tile sums of 32                max|err| 3.544e-08   (1.6x)
"""
import numpy as np

#: One head at the sweep's longest failing shape (S = 16384, head_dim 64), a few query rows, and
#: the reference kernel's key tile.
SEQ, HEAD_DIM, ROWS, KEY_TILE = 16384, 64, 16, 32


def accumulate(p32: np.ndarray, v32: np.ndarray, block: int) -> np.ndarray:
    """o = sum_j p_j v_j / sum_j p_j in float32: each block of keys summed from zero, then added
    to the running sums (block = SEQ: one chain over every key, the kernel's order today)."""
    o = np.zeros((p32.shape[0], v32.shape[1]), np.float32)
    l = np.zeros((p32.shape[0], 1), np.float32)
    for c0 in range(0, p32.shape[1], block):
        t = np.zeros_like(o)
        tl = np.zeros_like(l)
        for j in range(c0, min(c0 + block, p32.shape[1])):
            t = t + p32[:, j:j + 1] * v32[j]
            tl = tl + p32[:, j:j + 1]
        o, l = o + t, l + tl
    return o / l


def main() -> None:
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((n, HEAD_DIM)) for n in (ROWS, SEQ, SEQ))
    s64 = q @ k.T / np.sqrt(HEAD_DIM)
    p64 = np.exp(s64 - s64.max(1, keepdims=True))
    o64 = (p64 @ v) / p64.sum(1, keepdims=True)
    s32 = (q.astype(np.float32) @ k.astype(np.float32).T) / np.float32(np.sqrt(HEAD_DIM))
    p32 = np.exp(s32 - s32.max(1, keepdims=True)).astype(np.float32)
    v32 = v.astype(np.float32)
    yardstick = (p32 / p32.sum(1, keepdims=True, dtype=np.float32)) @ v32
    for name, o in (("yardstick (float32 formulas)", yardstick), ("one chain over S", accumulate(p32, v32, SEQ)),
                    (f"tile sums of {KEY_TILE}", accumulate(p32, v32, KEY_TILE))):
        print(f"{name:30s} max|err| {np.abs(o - o64).max():.3e}")


if __name__ == "__main__":
    main()
