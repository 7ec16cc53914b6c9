"""Task 3 tests: FlashAttention-2 (Algorithm 1) in PyTorch.

Run ``python -m task3.test``. Three kinds of check:
* the worked example (N=4, head_dim=2, tiles of 2): one call of your
  ``online_softmax_step`` must give the running max, sum and output of the
  example, and a second call the exact attention;
* ``_flash_attention`` against a float64 reference, with tile sizes that do
  not divide the sequence length, with and without the causal mask;
* the whole module against float64 and ``torch.nn.MultiheadAttention``.
The sizes are small on purpose: the tile loops run in Python, so the whole file
takes seconds on a CPU.
"""
import pytest
import torch

from harness import formulas
from harness.shared_checks import CORE_DIMS, INPUT_SETS_PER_CHECK, LARGE_SCORES_STD, module_test
from harness.compare import CheckFailed, assert_close, strict_float32
from harness.device import DEVICES
from harness.impl import load_module
from harness.inputs import randn


def _task():
    return load_module("task3.attention")


# ---------------------------------------------------------------- worked example
# The worked example (N=4, head_dim=2, tiles of 2) follows the first query tile
# (rows 0-1) through the first key tile (keys 0-1). Its printed scores do not
# follow from its printed Q and K (q0.k0 is 3.5, not 1.77 * sqrt(2)), but every
# later step is computed correctly from those scores, so the test takes the
# scores as given and checks the online-softmax steps, which is what the
# example teaches.
EXAMPLE_V = [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6], [0.7, 0.8]]
EXAMPLE_SCORES_TILE1 = [[1.77, 3.89], [4.95, 10.61]]
EXAMPLE_MAX = [3.89, 10.61]
EXAMPLE_SUM = [1.12, 1.004]
EXAMPLE_OUT = [[0.28, 0.38], [0.30, 0.40]]  # running output divided by the running sum
EXAMPLE_ROUNDING = 0.006  # the example prints two or three decimals
# Scores of the same two queries against keys 2-3, to finish the row.
EXAMPLE_SCORES_TILE2 = [[5.2, 7.1], [12.0, 13.5]]


def test_worked_example_online_softmax(record):
    f64 = dict(dtype=torch.float64)
    v = torch.tensor(EXAMPLE_V, **f64)
    s1 = torch.tensor(EXAMPLE_SCORES_TILE1, **f64)
    m0 = torch.full((2,), float("-inf"), **f64)
    l0 = torch.zeros(2, **f64)
    o0 = torch.zeros(2, 2, **f64)
    m1, l1, o1 = _task().online_softmax_step(m0, l0, o0, s1, v[:2])
    for name, got, want in (
        ("running max m", m1, EXAMPLE_MAX),
        ("running sum l", l1, EXAMPLE_SUM),
        ("running output o / l", o1 / l1.unsqueeze(-1), EXAMPLE_OUT),
    ):
        want = torch.tensor(want, **f64)
        # NaN after the first tile is the paper's typo taken literally: dividing by
        # exp(m_prev - m_new), which is exp(-inf) = 0 on the first tile, gives 0 / 0.
        typo = (" NaN after the first tile usually means the old output was divided by exp(m_prev - m_new), "
                "which is 0 while m_prev is -inf: the inverse in line 10 is a known typo (flash-attention issue "
                "#991), multiply instead (or o was divided by l before l had any weight)."
                if torch.isnan(got).any() else "")
        assert torch.allclose(got, want, atol=EXAMPLE_ROUNDING), (
            f"after the first tile, {name} is {got.tolist()} but the worked example has "
            f"{want.tolist()} (README, Task 3). Check Algorithm 1, lines 9-10.{typo}"
        )
    # The second key tile completes the rows: o / l must now be the exact softmax of
    # all four scores applied to V.
    s2 = torch.tensor(EXAMPLE_SCORES_TILE2, **f64)
    m2, l2, o2 = _task().online_softmax_step(m1, l1, o1, s2, v[2:])
    exact = formulas.softmax(torch.cat([s1, s2], dim=1)) @ v
    got = o2 / l2.unsqueeze(-1)
    assert torch.allclose(got, exact, rtol=1e-12, atol=1e-12), (
        f"after both tiles o / l is {got.tolist()} but softmax(scores) V is {exact.tolist()}: "
        "the rescaling of the old output by exp(m_prev - m_new) is likely wrong (no inverse: "
        "flash-attention issue #991)."
    )
    record("worked_example", passed=True, max=m2.tolist(), sum=l2.tolist())


# ---------------------------------------------------------------- the tiled core
# (seq_len, head_dim): 1 and odd lengths leave partial tiles.
CORE_SHAPES = [(1, 16), (7, 16), (64, 32), (100, 64), (129, 16)]
# (T_r, T_c): square, unequal, and sizes that divide nothing.
TILES = [(16, 16), (32, 16), (7, 5), (64, 64)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("tiles", TILES, ids=lambda t: f"Tr{t[0]}-Tc{t[1]}")
@pytest.mark.parametrize("shape", CORE_SHAPES, ids=lambda s: f"S{s[0]}-d{s[1]}")
def test_flash_attention_core(shape, tiles, causal, device, record):
    seq_len, head_dim = shape
    batch, heads = 2, 3
    tag = f"task3/core/{seq_len}/{head_dim}/{tiles}/{causal}"
    module = _task().CustomFlashAttention(*(torch.eye(heads * head_dim, device=device),) * 4, heads * head_dim, heads)
    for i in range(INPUT_SETS_PER_CHECK):
        q, k, v = (randn(batch, heads, seq_len, head_dim, tag=f"{tag}/{n}{i}", device=device) for n in "qkv")
        out = module._flash_attention(q, k, v, tiles[0], tiles[1], causal)
        ref = formulas.attention(q, k, v, causal)
        with strict_float32():
            torch32 = formulas.attention(q, k, v, causal, dtype=torch.float32)
        report = assert_close(
            out, ref, torch32, what="_flash_attention", dims=CORE_DIMS,
            context=dict(S=seq_len, d=head_dim, T_r=tiles[0], T_c=tiles[1], causal=causal, device=device,
                         input_set=i),
        )
        record("error", **report.as_dict())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("tiles", [(16, 16), (7, 5)], ids=lambda t: f"Tr{t[0]}-Tc{t[1]}")
def test_flash_attention_core_large_scores(tiles, causal, device, record):
    """Scores of a few hundred: the running maximum m is what keeps exp in range (Algorithm 1,
    line 9); an online softmax without it gives inf / inf = NaN."""
    seq_len, head_dim, batch, heads = 100, 16, 2, 3
    tag = f"task3/core-large/{tiles}/{causal}"
    module = _task().CustomFlashAttention(*(torch.eye(heads * head_dim, device=device),) * 4, heads * head_dim, heads)
    for i in range(INPUT_SETS_PER_CHECK):
        q, k = (randn(batch, heads, seq_len, head_dim, tag=f"{tag}/{n}{i}", device=device, std=LARGE_SCORES_STD)
                for n in "qk")
        v = randn(batch, heads, seq_len, head_dim, tag=f"{tag}/v{i}", device=device)
        out = module._flash_attention(q, k, v, tiles[0], tiles[1], causal)
        ref = formulas.attention(q, k, v, causal)
        with strict_float32():
            torch32 = formulas.attention(q, k, v, causal, dtype=torch.float32)
        report = assert_close(
            out, ref, torch32, what="_flash_attention with large scores (a NaN here means exp ran on a score "
            "without the running maximum subtracted)", dims=CORE_DIMS,
            context=dict(S=seq_len, d=head_dim, T_r=tiles[0], T_c=tiles[1], causal=causal, device=device,
                         input_set=i, std=LARGE_SCORES_STD),
        )
        record("error", **report.as_dict())


#: How far below zero every score of the negative-score check lies (after the 1/sqrt(d) scale):
#: far past float32's exp underflow (about -103), so a running maximum that starts at 0
#: instead of -inf turns every exp into 0, the running sum l into 0, and o / l into NaN.
NEGATIVE_SCORE = 200.0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_flash_attention_core_negative_scores(causal, device, record):
    """Every score far below zero: m must start at -inf (Algorithm 1, line 4), not at 0, or
    exp(s - m) underflows to 0 for every key of a row and o / l is 0 / 0."""
    seq_len, head_dim, batch, heads = 50, 16, 2, 3
    tag = f"task3/core-negative/{causal}"
    module = _task().CustomFlashAttention(*(torch.eye(heads * head_dim, device=device),) * 4, heads * head_dim, heads)
    for i in range(INPUT_SETS_PER_CHECK):
        # Keys point away from every query: q . k / sqrt(d) is about -NEGATIVE_SCORE (give or take a few).
        direction = torch.nn.functional.normalize(randn(head_dim, tag=f"{tag}/u{i}", device=device), dim=0)
        size = (NEGATIVE_SCORE * head_dim ** 0.5) ** 0.5
        q = size * direction + 0.1 * randn(batch, heads, seq_len, head_dim, tag=f"{tag}/q{i}", device=device)
        k = -size * direction + 0.1 * randn(batch, heads, seq_len, head_dim, tag=f"{tag}/k{i}", device=device)
        v = randn(batch, heads, seq_len, head_dim, tag=f"{tag}/v{i}", device=device)
        out = module._flash_attention(q, k, v, 16, 16, causal)
        with strict_float32():
            torch32 = formulas.attention(q, k, v, causal, dtype=torch.float32)
        report = assert_close(
            out, formulas.attention(q, k, v, causal), torch32,
            what="_flash_attention with every score far below zero (a NaN here means the running maximum m "
            "did not start at -inf, Algorithm 1 line 4: exp(s - 0) underflowed to 0 for every key)", dims=CORE_DIMS,
            context=dict(S=seq_len, d=head_dim, causal=causal, device=device, input_set=i, score=-NEGATIVE_SCORE),
        )
        record("error", **report.as_dict())


#: The operators that multiply matrices, as the dispatcher sees them (``@`` and einsum become these).
PRODUCT_OPS = {"mm", "bmm", "matmul", "baddbmm", "addmm", "addbmm", "einsum"}


def test_causal_skips_masked_tiles(record):
    """With the causal mask, a key tile that starts after the query tile's last row is all -inf:
    the tile loop must skip it, not compute it and mask it (README, Task 3; task 4's kernel does the
    same on the GPU). Counted by the matrix products _flash_attention runs: with 8 tiles of 8 rows
    and keys, 64 tile pairs without the mask, 36 with it when the masked ones are skipped."""
    from harness.op_recorder import ops_counted

    seq_len, tile = 64, 8
    module = _task().CustomFlashAttention(*(torch.eye(32),) * 4, 32, 2)
    q, k, v = (randn(1, 2, seq_len, 16, tag=f"task3/skip/{n}") for n in "qkv")
    counts = {}
    for causal in (False, True):
        _, ran = ops_counted(module._flash_attention, q, k, v, tile, tile, causal)
        counts[causal] = sum(n for op, n in ran.items() if op in PRODUCT_OPS) or sum(ran.values())  # or every op
    tiles = -(-seq_len // tile)
    pairs_full, pairs_causal = tiles * tiles, tiles * (tiles + 1) // 2
    skipping = pairs_causal / pairs_full
    if counts[False] <= 0:
        raise CheckFailed("no operator was recorded while _flash_attention ran, so its tile loop cannot be "
                          "checked: it must compute with PyTorch operations on the tensors it is given")
    # The work of skipping, with one tile pair of slack per query tile (an off-by-one bound still
    # passes; computing every Q K^T and skipping only P V, 100 of 128 products here, does not).
    allowed = counts[False] * (pairs_causal + tiles) / pairs_full
    if counts[True] > allowed:
        raise CheckFailed(
            f"with causal=True, _flash_attention ran {counts[True]} matrix products against {counts[False]} without "
            f"the mask (S={seq_len}, tiles of {tile}): skipping the key tiles that lie entirely after each query "
            f"tile's last row would leave about {skipping:.0%} of them ({pairs_causal} of {pairs_full} tile pairs). "
            "Stop the key-tile loop at the query tile's last row (README, Task 3).")
    record("causal_tile_skipping", full=counts[False], causal=counts[True], allowed=allowed)


def test_published_call(record):
    """The original assignment's call, ``_flash_attention(q, k, v)`` and ``causal=True`` by keyword,
    with its default 8 x 8 tiles."""
    module = _task().CustomFlashAttention(*(torch.eye(32),) * 4, 32, 2)
    q, k, v = (randn(2, 2, 19, 16, tag=f"task3/published/{n}") for n in "qkv")
    for kwargs in ({}, {"causal": True}):
        causal = kwargs.get("causal", False)
        with strict_float32():
            torch32 = formulas.attention(q, k, v, causal, dtype=torch.float32)
        assert_close(module._flash_attention(q, k, v, **kwargs), formulas.attention(q, k, v, causal), torch32,
                     what=f"_flash_attention(q, k, v{', causal=True' if causal else ''})", dims=CORE_DIMS)
    record("published_call", passed=True)


# ---------------------------------------------------------------- the module
SHAPES = [(1, 1, 32, 4), (2, 7, 64, 4), (2, 130, 128, 8), (1, 200, 96, 3)]


# The whole module, against float64 and nn.MultiheadAttention (harness.shared_checks.module_test).
test_module = module_test(lambda *args: _task().CustomFlashAttention(*args), task="task3",
                          what="CustomFlashAttention", shapes=SHAPES, devices=DEVICES)


if __name__ == "__main__":
    from harness.testmain import main

    raise SystemExit(main(__file__, "Task 3: FlashAttention-2 (Algorithm 1) in PyTorch."))
