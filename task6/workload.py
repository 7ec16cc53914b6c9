"""Task 6: the workloads its tests and the benchmark run (provided).

The model and run sizes (:data:`CONFIGS`), and what is drawn for them from the
run's seed: the model's weights (:func:`build_model`), the prompt
(:func:`prompt_tokens`) and the inputs of one provided decode op
(:func:`decode_linear_run`); :func:`weight_bytes` is a configuration's weights
in bytes, for the weight-streaming floor. They live here, not in the test
module, so ``bench/decode_model.py`` runs what the tests run without importing
a test module.
"""
from __future__ import annotations

import torch

from harness.inputs import generator, seed_for

from .transformer import seeded_model

DEVICE = "cuda"

#: Model and run sizes. "published" is the original assignment's configuration.
CONFIGS = {
    "published": dict(batch=4, prompt=1024, hidden=4096, heads=32, layers=24, vocab=8192, steps=100),
    "medium": dict(batch=4, prompt=1024, hidden=2048, heads=16, layers=12, vocab=8192, steps=100),
    "small": dict(batch=4, prompt=256, hidden=1024, heads=8, layers=4, vocab=8192, steps=100),
}


def build_model(cfg: dict, tag: str, device=DEVICE, max_seq_len: int | None = None, attention_cls=None):
    """The model (your attention, or ``attention_cls``) with weights drawn from the run's seed and ``tag``."""
    return seeded_model(cfg["hidden"], cfg["heads"], cfg["layers"], cfg["vocab"],
                        max_seq_len or cfg["prompt"] + cfg["steps"], seed_for(tag), device, attention_cls)


def weight_bytes(cfg: dict) -> int:
    h, v, n = cfg["hidden"], cfg["vocab"], cfg["layers"]
    per_layer = 4 * h * h + 12 * h * h + 4 * h  # attention, SwiGLU (gate, up, down), 2 LayerNorms
    return 4 * (2 * v * h + n * per_layer + 2 * h)


def prompt_tokens(cfg: dict, tag: str, device=DEVICE) -> torch.Tensor:
    gen = generator(tag, device)
    return torch.randint(0, cfg["vocab"], (cfg["batch"], cfg["prompt"]), generator=gen, device=device)


def decode_linear_run(op: str, m: int, out: int, k: int, tag: str, device=DEVICE, sets: int = 1):
    """Random inputs for one provided decode op and a function of them.

    Returns ``(fn, input_sets, weight_bytes)``; ``fn(x, w, residual)`` computes the op
    with whatever dtype it is given (float64 inputs take the plain-PyTorch path).
    For ``layer_norm`` (``out == k``), ``w`` is the scale; the shift is fixed.
    """
    from task6 import decode_linear as dl
    from task6.rope import rope_table

    gen = generator(tag, device)
    if op == "layer_norm":
        w = 1 + 0.1 * torch.randn(k, generator=gen, device=device)
        shift = 0.1 * torch.randn(k, generator=gen, device=device)
    else:
        rows = {"linear": out, "swiglu": 2 * out, "qkv_rope": 3 * out}[op]
        w = torch.randn(rows, k, generator=gen, device=device) / k**0.5
    heads = max(1, out // 64)
    table = rope_table(out // heads, 4096, device=device) if op == "qkv_rope" else None
    pos = 4096 - m  # the table's last rows: large angles

    def fn(x, w, residual):
        if op == "linear":
            return dl.linear(x, w, residual)
        if op == "swiglu":
            return dl.swiglu(x, w)
        if op == "layer_norm":
            return dl.layer_norm(x, w, shift.to(w.dtype), 1e-5)
        return torch.cat(dl.qkv_rope(x[:, None], w, table, pos, heads), -1)[:, 0]  # each row its own sequence

    inputs = []
    for _ in range(sets):
        x = torch.randn(m, k, generator=gen, device=device)
        if op == "layer_norm":
            x = 3 + 2 * x  # an offset and a scale that the normalisation must remove
        residual = torch.randn(m, out, generator=gen, device=device) if op == "linear" and m % 2 else None
        inputs.append((x, w, residual))
    return fn, inputs, w.numel() * 4


def decode_step_copies(tokens, cache, current_pos: int, model, backend: str = "custom") -> list[tuple[str, int]]:
    """One decode step of ``model`` (``task6.transformer.model_step``), run where the model runs,
    and the copying operators it ran with the elements each wrote (harness.op_recorder.copies_made):
    a decode step reads the cache in place, so none should write anything near its size."""
    from harness.op_recorder import copies_made

    from .transformer import model_step

    _, copies = copies_made(model_step, tokens, cache, current_pos, model, backend)
    return copies
