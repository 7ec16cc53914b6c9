"""Task 1 tests: multi-head attention in PyTorch.

Run ``python -m task1.test``. Each case builds fresh random inputs and weights,
runs your ``CustomSelfAttention`` and compares it
* with a float64 reference: your float32 result may be at most a few times as far
  from it as PyTorch's own float32 computation of the same formula;
* with ``torch.nn.MultiheadAttention`` holding the same weights.
The grid includes one-token sequences, odd lengths and several head counts,
with and without the causal mask, on the CPU and (when there is one) the GPU.
"""
import pytest

from harness.shared_checks import LARGE_SCORES_STD, check_attention_module
from harness.device import DEVICES
from harness.impl import load_module

# (batch, seq_len, hidden, num_heads): S=1 and odd S catch off-by-one masks;
# several head counts catch a wrong split of the hidden dimension.
SHAPES = [
    (1, 1, 32, 4),
    (2, 7, 64, 4),
    (3, 33, 48, 3),
    (2, 64, 128, 8),
    (1, 129, 256, 2),
    (2, 200, 96, 1),
]


def _module(*args):
    return load_module("task1.attention").CustomSelfAttention(*args)


def _id(shape):
    b, s, h, n = shape
    return f"B{b}-S{s}-H{h}-heads{n}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shape", SHAPES, ids=_id)
@pytest.mark.parametrize("against", ["float64", "nn.MultiheadAttention"])
def test_attention(shape, causal, device, against, record):
    b, s, h, n = shape
    report = check_attention_module(
        _module, batch=b, seq_len=s, hidden=h, num_heads=n, causal=causal, device=device,
        tag=f"task1/{_id(shape)}/{causal}", against=against, what="CustomSelfAttention",
    )
    record("error", **report.as_dict())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_large_scores(causal, device, record):
    """Scores of a few hundred: exp overflows float32 unless the softmax subtracts the row
    maximum first (torch.softmax does; a hand-written exp(s) / sum(exp(s)) gives NaN)."""
    report = check_attention_module(
        _module, batch=2, seq_len=33, hidden=64, num_heads=4, causal=causal, device=device,
        tag=f"task1/large/{causal}", what="CustomSelfAttention with large scores (a NaN here means the "
        "softmax did not subtract the row maximum before exp)", x_std=LARGE_SCORES_STD,
    )
    record("error", **report.as_dict())


def test_rejects_wrong_hidden_size(record):
    """A hidden size that does not match the weights must fail loudly, not silently."""
    import torch

    module = _module(*(torch.eye(8),) * 4, 8, 2)
    with pytest.raises(ValueError, match="hidden_dim"):
        module(torch.randn(1, 3, 6))
    record("input_check", passed=True)


if __name__ == "__main__":
    from harness.testmain import main

    raise SystemExit(main(__file__, "Task 1: multi-head attention in PyTorch."))
