"""Task 4 tests: the fused FlashAttention kernel.

Run ``python -m task4.test`` (after ``python -m task4.compile``); ``--no-perf``
skips the timings while you work on correctness.

Correctness (every case draws fresh random inputs; your float32 result may be at
most a few times as far from a float64 reference as PyTorch's own float32
computation is, see harness/compare.py):

* ``custom_flash_attention`` over sequence lengths 1, 7, 64, 127, 128, 129,
  1000, 2049 and 4096 (lengths that are not multiples of your tiles are where
  the classic bugs live), head_dim 16, 32, 64, 128 and odd ones, causal and not,
  computed by your kernel only (no PyTorch matmul, softmax or attention inside);
* the same kernel on scores of about a hundred, where exp overflows float32 unless
  the running row maximum is subtracted first;
* the ``CustomFlashAttention`` module against float64 and ``nn.MultiheadAttention``.

Performance (``perf``; hidden 4096, 32 heads, so head_dim 128):

* ``test_speedup_vs_mha``: the assignment's four configurations (B=4, S=128 and
  B=64, S=4096, causal and not), the whole module against
  ``torch.nn.MultiheadAttention`` with the same weights. These are the four
  lines to copy into Results.md.
* ``test_core_speed``: the attention core alone, your kernel against PyTorch's
  ``scaled_dot_product_attention`` in float32 on the same q, k, v (the fair,
  like-for-like comparison, and the one the grader scores), with TFLOP/s.
* ``test_causal_skips_key_tiles``: with the causal mask the key tiles after each query tile
  must be skipped, so the causal call (B=4, S=4096) must be at least 1.4x faster than the
  non-causal one (skipping makes it about 2x; computing and masking, about 1x).

Bonus (``-k bonus``; task4/attention_kernel_tc.cu, optional: without it task 4 keeps its
score and only the bonus points are 0): the same interface on the tensor cores, in bf16
(checked against float64 within a few times PyTorch's bf16 SDPA error, timed against SDPA's
FlashAttention backend in bf16) and in float32 through 3xTF32 (within a few times float32
SDPA's error, timed against float32 SDPA), over the same kind of shape grid and the same
four timed configurations.

All tests need a CUDA GPU; without one they are skipped, with the reason shown.
"""
from __future__ import annotations

import pytest
import torch

from harness import bonus_checks
from harness.shared_checks import (
    LARGE_SCORES_STD, MODULE_DIMS, MODULE_SHAPES, TIMED_SAMPLES, attention_references, check_attention_core,
    check_timed_samples, core_id, mha_forward, module_test, nn_multihead_attention,
    run_input_checks, sdpa_core,
)
from harness.compare import CheckFailed, strict_float32
from harness.device import requires_cuda
from harness.impl import MissingSubmissionFile, load_module
from harness.inputs import mha_weights, randn
from harness.op_recorder import assert_own_kernel
from harness.remote import bound, is_judge, on_worker, worker_randn
from harness.timing import bind_tail, compare_speed
from harness.yardstick import side_by_side

pytestmark = [requires_cuda, pytest.mark.gpu]

DEVICE = "cuda"


def _attention_module():
    return load_module("task4.attention")


def _ext():
    return _attention_module().extension()


# ---------------------------------------------------------------- correctness
# (batch, seq_len, num_heads, head_dim)
CORE_CASES = [
    (b, s, 2, d)
    for s in (1, 7, 64, 127, 128, 129, 1000)
    for d in (16, 32, 64, 128)
    for b in ((2,) if s < 1000 else (1,))
] + [
    (1, 2049, 4, 128),  # one past a power of two
    (3, 200, 3, 80),  # head_dim that is not a power of two
    (2, 77, 5, 3),  # tiny, odd head_dim
    (2, 333, 12, 64),  # GPT-2's head size
    (1, 4096, 32, 128),  # the published head layout at full length
    (64, 7, 32, 16),  # 2048 (batch, head) pairs, every one checked (the timed B64 checks only samples)
]


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("case", CORE_CASES, ids=core_id)
def test_attention_core(case, causal, record):
    report = check_attention_core(_ext().custom_flash_attention, "custom_flash_attention", case, causal,
                                  tag=f"task4/core/{core_id(case)}", device=DEVICE)
    record("error", **report.as_dict())


# Scores of about a hundred (q and k drawn with this standard deviation): exp of such a score
# overflows float32, so only a kernel that subtracts its running row maximum stays finite.
LARGE_SCORE_CASES = [(2, 129, 2, 64), (1, 1000, 2, 128)]


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("case", LARGE_SCORE_CASES, ids=core_id)
def test_attention_core_large_scores(case, causal, record):
    report = check_attention_core(
        _ext().custom_flash_attention, "custom_flash_attention with large scores", case, causal,
        tag=f"task4/core-large/{core_id(case)}", device=DEVICE, std=LARGE_SCORES_STD,
        hint="a NaN or inf here means exp ran on a score without the running maximum subtracted")
    record("error", **report.as_dict())


#: The shared module grid, and one long sequence with eight heads of 128.
MODULE_SHAPES = [*MODULE_SHAPES, (1, 1000, 1024, 8)]


def _module(*args):
    return _attention_module().CustomFlashAttention(*args)


# The whole module, against float64 and nn.MultiheadAttention (harness.shared_checks.module_test).
test_module = module_test(_module, task="task4", what="CustomFlashAttention", shapes=MODULE_SHAPES)


_BAD_INPUTS_SCRIPT = """
import torch
from harness.shared_checks import expect_attention_input_checks
from harness.impl import load_module

expect_attention_input_checks(load_module("task4.attention").extension().custom_flash_attention)
"""


def test_rejects_bad_inputs(record):
    """Wrong dtype, device, layout or head size must raise a clear error, never compute
    (and a valid input must still work). Runs in a child process: see harness.shared_checks."""
    run_input_checks(_BAD_INPUTS_SCRIPT, record)


# ---------------------------------------------------------------- performance
HIDDEN, HEADS = 4096, 32
#: The assignment's four configurations: (batch, seq_len, causal).
PERF_CONFIGS = [(4, 128, False), (4, 128, True), (64, 4096, False), (64, 4096, True)]


def _config_label(b: int, s: int, causal: bool) -> str:
    """The row label of Results.md."""
    return f"B={b}, S={s}, {'causal' if causal else 'non-causal'}"


def _config_id(cfg):
    b, s, causal = cfg
    return f"B{b}-S{s}-{'causal' if causal else 'full'}"


#: Repetitions of a large configuration (B64 S4096: 0.2-2 s a call, 4 GB a tensor), in all. Its
#: calls vary by well under 1 % (the GPU is saturated for the whole call), so a few give a steady
#: median; in the grader they are shared out over the rounds of harness.yardstick (2 a block).
LARGE_REPS = 4
#: test_speedup_vs_mha's, at a large configuration: it only feeds Results.md's cross-check (a factor
#: of rubric results_mismatch_factor), and each repetition there costs four seconds (module and
#: nn.MultiheadAttention, 2.2 s each at B64 S4096 on an H200): two give a median and a spread.
LARGE_MHA_REPS = 2


def _timing_options(b: int, s: int, large_reps: int = LARGE_REPS) -> dict:
    """Small problems: many repetitions on rotating inputs. Large ones (tenths of a second to
    seconds per call, 4 GB per tensor): a few repetitions, one input set (the L2 is flushed anyway)."""
    if b * s >= 64 * 1024:
        return dict(n_sets=1, warmup=1, min_reps=large_reps, max_reps=large_reps, budget_s=0.0)
    return dict(n_sets=4, warmup=3, min_reps=20, max_reps=200, budget_s=2.0)


@pytest.mark.perf
@pytest.mark.parametrize("cfg", PERF_CONFIGS, ids=_config_id)
def test_speedup_vs_mha(cfg, record):
    """The assignment's numbers: the module against torch.nn.MultiheadAttention."""
    b, s, causal = cfg
    torch.cuda.empty_cache()  # the large configuration needs ~45 GB at once
    opts = _timing_options(b, s, large_reps=LARGE_MHA_REPS)
    tag = f"task4/perf_mha/{_config_id(cfg)}"
    weights = mha_weights(HIDDEN, tag=tag, device=DEVICE)
    module = _module(*weights, HIDDEN, HEADS)
    mha = on_worker(nn_multihead_attention)(weights, HIDDEN, HEADS, DEVICE)  # both where the kernel runs
    xs = [(worker_randn(b, s, HIDDEN, tag=f"{tag}/x{i}", device=DEVICE),) for i in range(opts["n_sets"])]
    with torch.no_grad(), strict_float32():
        cmp = compare_speed(
            bound(module, causal=causal), bound(mha_forward, mha, causal),
            xs, warmup=opts["warmup"], min_reps=opts["min_reps"], max_reps=opts["max_reps"],
            budget_s=opts["budget_s"],
        )
    label = _config_label(b, s, causal)
    torch_ms, custom_ms = cmp.baseline.median_ms, cmp.candidate.median_ms
    record("speedup_vs_mha", **cmp.as_dict(), config=label)
    record(
        "results_md", table="task4", row=label, values=[torch_ms, custom_ms, cmp.speedup],
        display=f"Results.md, Task 4 | {label} | {torch_ms:.3f} | {custom_ms:.3f} | {cmp.speedup:.2f} |",
    )


@pytest.mark.perf
@pytest.mark.parametrize("cfg", PERF_CONFIGS, ids=_config_id)
def test_core_speed(cfg, record):
    """The attention core alone against SDPA (float32) on the same q, k, v: what the grader scores.

    In the grader the reference solution is timed beside it the same way, in its own worker
    (harness.yardstick), and the score rests on the ratio of the two speedups."""
    b, s, causal = cfg
    torch.cuda.empty_cache()
    opts = _timing_options(b, s)
    tag = f"task4/perf_core/{_config_id(cfg)}"
    # The judge's own copies of the sets: for its own baseline timing (the first) and the float64
    # re-check of timed outputs (batch item 0 of whichever sets the sampled repetitions used).
    own_sets = [tuple(randn(b, s, HIDDEN, tag=f"{tag}/{n}{i}", device=DEVICE) for n in "qkv")
                for i in range(opts["n_sets"])] if is_judge() else None
    drawn: list = []  # the submission's sets (in a student's run, the very tensors to re-check with)

    def setup():
        """The timed problem where the kernel runs (the submission's worker, or the reference's)."""
        # Drawn there (in the grader: the worker, 12 GB it need not receive).
        sets = [
            tuple(worker_randn(b, s, HIDDEN, tag=f"{tag}/{n}{i}", device=DEVICE) for n in "qkv")
            for i in range(opts["n_sets"])
        ]
        if not drawn:  # the first set-up is the submission's (a reference's sets are not kept)
            drawn.append(sets)
        ext = _ext()
        # The timed function must be the student's kernel: no PyTorch attention inside.
        assert_own_kernel(ext.custom_flash_attention, *sets[0], HEADS, causal, what="custom_flash_attention",
                          keep_result=True)
        kernel, sdpa = bound(ext.custom_flash_attention, HEADS, causal), bound(sdpa_core, HEADS, causal)
        judge_baseline = (bind_tail(sdpa_core, HEADS, causal), own_sets[:1]) if is_judge() else None

        def block(**timing):
            with torch.no_grad(), strict_float32():
                return compare_speed(kernel, sdpa, sets, judge_baseline=judge_baseline, **timing)

        return block

    timed = side_by_side(setup, warmup=opts["warmup"], min_reps=opts["min_reps"], max_reps=opts["max_reps"],
                         budget_s=opts["budget_s"], keep_outputs=TIMED_SAMPLES)
    cmp = timed.submission
    # Outputs of timed repetitions drawn at random are checked against float64 (batch item 0):
    # a fast kernel must be a right one while it is timed, not only before.
    sets_here = own_sets if is_judge() else drawn[0]
    recheck = check_timed_samples(
        cmp, lambda i: attention_references(*(t[:1] for t in sets_here[i]), HEADS, causal),
        "timed output", dims=MODULE_DIMS, context=dict(B=b, S=s, causal=causal))
    cmp.samples.clear()  # up to 64 MB each, on the GPU
    d = HIDDEN // HEADS
    flops = 4.0 * b * HEADS * s * s * d / (2 if causal else 1)
    tflops = flops / cmp.candidate.median_ms / 1e9
    sdpa_tflops = flops / cmp.baseline.median_ms / 1e9
    label = _config_label(b, s, causal)
    beside = f", {timed.vs_reference:.2f}x the reference timed beside it" if timed.vs_reference else ""
    record(
        "core_speedup", **cmp.as_dict(), **timed.record_fields(), config=label, custom_tflops=tflops,
        sdpa_tflops=sdpa_tflops, timed_output_error=recheck.max_abs_error, timed_output_allowed=recheck.allowed,
        display=(
            f"task4 core vs SDPA float32, {label}: {cmp.candidate.median_ms:.3f} ms "
            f"({tflops:.1f} TFLOP/s) vs {cmp.baseline.median_ms:.3f} ms ({sdpa_tflops:.1f} TFLOP/s), "
            f"ratio {cmp.speedup:.2f}x{beside}"
        ),
    )


#: The causal-skip check's problem: long enough that the key tiles after each query tile are
#: most of the work (B=4, S=4096, 32 heads of 128; bench/results: 28 ms without the mask on an H200).
SKIP_CHECK_BATCH, SKIP_CHECK_SEQ = 4, 4096
#: Skipping those tiles halves the work: the reference's causal call ran in 0.53 of its non-causal
#: time at that shape (H200, bench/results/sweep-nvidia-h200.json, 2026-12-02). A kernel that
#: computes every tile and masks it takes about as long with the mask as without. The check asks
#: the causal call to be at least this much faster, between the two.
MIN_CAUSAL_SPEEDUP = 1.4


@pytest.mark.perf
def test_causal_skips_key_tiles(record):
    """With the causal mask, key tiles entirely after the query tile's last row must be skipped,
    not computed and masked (README, Task 4). A CUDA kernel's work cannot be counted from Python,
    so this times it: the causal call against the non-causal one, interleaved, on the same q, k, v."""
    b, s = SKIP_CHECK_BATCH, SKIP_CHECK_SEQ
    torch.cuda.empty_cache()
    sets = [tuple(worker_randn(b, s, HIDDEN, tag=f"task4/skip/{n}{i}", device=DEVICE) for n in "qkv")
            for i in range(2)]
    kernel = _ext().custom_flash_attention
    with torch.no_grad(), strict_float32():
        cmp = compare_speed(bound(kernel, HEADS, True), bound(kernel, HEADS, False), sets,
                            warmup=2, min_reps=10, max_reps=40, budget_s=1.0)
    record("causal_skip", **cmp.as_dict(), min_speedup=MIN_CAUSAL_SPEEDUP)
    if cmp.speedup < MIN_CAUSAL_SPEEDUP:
        raise CheckFailed(
            f"with causal=True, custom_flash_attention took {cmp.candidate.median_ms:.3f} ms against "
            f"{cmp.baseline.median_ms:.3f} ms without the mask (B={b}, S={s}): {cmp.speedup:.2f}x faster, "
            f"where skipping the key tiles that lie entirely after the query tile's last row makes it "
            f"about 2x (at least {MIN_CAUSAL_SPEEDUP:g}x asked). This usually means the key-tile loop "
            f"runs to the end of the sequence and masks, instead of stopping after the diagonal tile.")


# ---------------------------------------------------------------- bonus: tensor cores
# The second student file, task4/attention_kernel_tc.cu (extension custom_flash_attention_tc,
# README "Task 4 bonus"): custom_flash_attention_bf16 (bf16 in and out) and
# custom_flash_attention_3xtf32 (float32 in and out), each (q, k, v, num_heads, causal) like
# custom_flash_attention. Scored as bonus points outside the assignment's 20 (grader/rubric.toml).
BONUS_VARIANTS = list(bonus_checks.VARIANTS)
#: (batch, seq_len, num_heads, head_dim): one token, tile edges, every head_dim the kernels are
#: built for (16, 32, 64, 128), odd ones, and the published head layout at full length.
BONUS_CASES = [
    (b, s, 2, d)
    for s in (1, 7, 129, 1000)
    for d in (16, 32, 64, 128)
    for b in ((2,) if s < 1000 else (1,))
] + [
    (2, 64, 4, 64),  # exactly one tile
    (1, 2049, 4, 128),  # one past a power of two
    (3, 200, 3, 80),  # head_dim that is not a power of two
    (2, 77, 5, 3),  # tiny, odd head_dim
    (1, 4096, 32, 128),  # the published head layout at full length
]
BONUS_LARGE_SCORE_CASES = [(2, 129, 2, 64), (1, 1000, 2, 128)]
#: Build or import errors of the bonus extension, by whose files they came from: the first
#: bonus test says why, the others fail at once instead of running the compiler again.
_TC_ERRORS: dict[str, BaseException] = {}


def _tc_ext():
    """The bonus extension (task4/attention_kernel_tc.cu), in the worker in the grader."""
    from harness import remote
    from harness.compare import CheckFailed
    from harness.impl import impl_root

    whose = str(remote.client().impl) if is_judge() else str(impl_root())
    if whose in _TC_ERRORS:
        raise CheckFailed(_tc_failure(_TC_ERRORS[whose]))
    try:
        return _attention_module().tensor_core_extension()
    except remote.WorkerFailed:
        raise
    except Exception as exc:  # noqa: BLE001 - a missing or broken bonus file fails the bonus tests only
        _TC_ERRORS[whose] = exc
        # As a CheckFailed, the reason is this message (any other exception's is its traceback);
        # the first test gives the compiler's whole message, the later ones its first line.
        raise CheckFailed(_tc_failure(exc, whole=True)) from exc


#: How much of a build error the first bonus test shows (the compiler's first errors).
BUILD_ERROR_CHARS = 4000


def _tc_failure(exc: BaseException, whole: bool = False) -> str:
    """Why the bonus tests cannot run: no bonus file, or what the build said."""
    if "attention_kernel_tc.cu" in _first_line(exc) and (
            isinstance(exc, MissingSubmissionFile) or "MissingSubmissionFile" in _first_line(exc)):
        return ("no bonus file: task4/attention_kernel_tc.cu is not in this submission (the bonus is optional; "
                "task 4's own points do not depend on it)")
    said = str(exc).strip()[:BUILD_ERROR_CHARS] if whole else _first_line(exc)
    return f"the bonus extension custom_flash_attention_tc did not build or load: {said or type(exc).__name__}"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _tc_kernel(variant: str):
    return getattr(_tc_ext(), bonus_checks.VARIANTS[variant]["function"])


def _bonus_core(variant, case, causal, record, **large):
    report = bonus_checks.check_core(_tc_kernel(variant), variant, case, causal, device=DEVICE,
                                     tag=f"task4/bonus-{variant}{'-large' if large else ''}/{core_id(case)}", **large)
    record("error", **report.as_dict())


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("case", BONUS_CASES, ids=core_id)
def test_bonus_bf16_core(case, causal, record):
    """bf16 q, k, v: within a few times PyTorch's bf16 SDPA error of float64."""
    _bonus_core("bf16", case, causal, record)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("case", BONUS_CASES, ids=core_id)
def test_bonus_3xtf32_core(case, causal, record):
    """float32 q, k, v through 3xTF32: within a few times float32 SDPA's error of float64."""
    _bonus_core("3xtf32", case, causal, record)


_LARGE = dict(std=LARGE_SCORES_STD, hint="a NaN or inf here means exp ran on a score without the running maximum "
                                         "subtracted")


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("case", BONUS_LARGE_SCORE_CASES, ids=core_id)
def test_bonus_bf16_large_scores(case, causal, record):
    _bonus_core("bf16", case, causal, record, **_LARGE)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("case", BONUS_LARGE_SCORE_CASES, ids=core_id)
def test_bonus_3xtf32_large_scores(case, causal, record):
    _bonus_core("3xtf32", case, causal, record, **_LARGE)


_BONUS_BAD_INPUTS_SCRIPT = """
from harness.bonus_checks import VARIANTS, expect_input_checks
from harness.impl import load_module

variant = {variant!r}
expect_input_checks(getattr(load_module("task4.attention").tensor_core_extension(), VARIANTS[variant]["function"]),
                    variant)
"""


def _bonus_bad_inputs(variant, record):
    _tc_ext()  # a bonus file that does not build fails here, once, instead of in the child's compiler
    run_input_checks(_BONUS_BAD_INPUTS_SCRIPT.format(variant=variant), record)


def test_bonus_bf16_rejects_bad_inputs(record):
    """Wrong dtype (float32 too), device, layout or head size must raise a clear error."""
    _bonus_bad_inputs("bf16", record)


def test_bonus_3xtf32_rejects_bad_inputs(record):
    """Wrong dtype (bf16 too), device, layout or head size must raise a clear error."""
    _bonus_bad_inputs("3xtf32", record)


def _bonus_speed(variant: str, cfg, record):
    """As test_core_speed, for a bonus kernel against its baseline (bonus_checks.baseline_of):
    SDPA's FlashAttention backend in bf16, or float32 SDPA."""
    b, s, causal = cfg
    torch.cuda.empty_cache()
    opts = _timing_options(b, s)
    dtype, function = bonus_checks.dtype_of(variant), bonus_checks.VARIANTS[variant]["function"]
    baseline = bonus_checks.baseline_of(variant)
    tag = f"task4/perf_bonus_{variant}/{_config_id(cfg)}"
    own_sets = [tuple(randn(b, s, HIDDEN, tag=f"{tag}/{n}{i}", device=DEVICE, dtype=dtype) for n in "qkv")
                for i in range(opts["n_sets"])] if is_judge() else None
    drawn: list = []

    def setup():
        """The timed problem where the kernel runs (the submission's worker, or the reference's)."""
        sets = [tuple(bonus_checks.worker_randn_as(dtype, b, s, HIDDEN, tag=f"{tag}/{n}{i}", device=DEVICE)
                      for n in "qkv") for i in range(opts["n_sets"])]
        if not drawn:  # the first set-up is the submission's (a reference's sets are not kept)
            drawn.append(sets)
        kernel_fn = getattr(_tc_ext(), function)
        assert_own_kernel(kernel_fn, *sets[0], HEADS, causal, what=function, keep_result=True)
        kernel, base = bound(kernel_fn, HEADS, causal), bound(baseline, HEADS, causal)
        judge_baseline = (bind_tail(baseline, HEADS, causal), own_sets[:1]) if is_judge() else None

        def block(**timing):
            with torch.no_grad(), strict_float32():
                return compare_speed(kernel, base, sets, judge_baseline=judge_baseline, **timing)

        return block

    timed = side_by_side(setup, warmup=opts["warmup"], min_reps=opts["min_reps"], max_reps=opts["max_reps"],
                         budget_s=opts["budget_s"], keep_outputs=TIMED_SAMPLES)
    cmp = timed.submission
    # Timed outputs drawn at random, against float64 under the variant's tolerance (batch item 0).
    cmp.samples[:] = [o.float() if isinstance(o, torch.Tensor) else o for o in cmp.samples]
    sets_here = own_sets if is_judge() else drawn[0]
    recheck = check_timed_samples(
        cmp, lambda i: bonus_checks.references(*(t[:1] for t in sets_here[i]), HEADS, causal, variant),
        f"{function} timed output", dims=MODULE_DIMS, context=dict(B=b, S=s, causal=causal),
        baseline_name=bonus_checks.VARIANTS[variant]["baseline"])
    cmp.samples.clear()
    d = HIDDEN // HEADS
    flops = 4.0 * b * HEADS * s * s * d / (2 if causal else 1)
    tflops, base_tflops = flops / cmp.candidate.median_ms / 1e9, flops / cmp.baseline.median_ms / 1e9
    label = _config_label(b, s, causal)
    against = "SDPA FlashAttention backend, bf16" if variant == "bf16" else "SDPA float32"
    beside = f", {timed.vs_reference:.2f}x the reference timed beside it" if timed.vs_reference else ""
    return dict(
        **cmp.as_dict(), **timed.record_fields(), config=label, against=against, custom_tflops=tflops,
        baseline_tflops=base_tflops, timed_output_error=recheck.max_abs_error, timed_output_allowed=recheck.allowed,
        display=(f"task4 bonus {variant} vs {against}, {label}: {cmp.candidate.median_ms:.3f} ms ({tflops:.1f} "
                 f"TFLOP/s) vs {cmp.baseline.median_ms:.3f} ms ({base_tflops:.1f} TFLOP/s), ratio "
                 f"{cmp.speedup:.2f}x{beside}"),
    )


@pytest.mark.perf
@pytest.mark.parametrize("cfg", PERF_CONFIGS, ids=_config_id)
def test_bonus_bf16_speed(cfg, record):
    """The bf16 kernel against SDPA's FlashAttention backend in bf16, on the same q, k, v."""
    record("bonus_bf16_speedup", **_bonus_speed("bf16", cfg, record))


@pytest.mark.perf
@pytest.mark.parametrize("cfg", PERF_CONFIGS, ids=_config_id)
def test_bonus_3xtf32_speed(cfg, record):
    """The 3xTF32 kernel against float32 SDPA (TF32 off), on the same q, k, v."""
    record("bonus_3xtf32_speedup", **_bonus_speed("3xtf32", cfg, record))

if __name__ == "__main__":
    from harness.testmain import main

    raise SystemExit(main(__file__, "Task 4: one fused FlashAttention CUDA kernel."))
