"""Seeded random inputs: fresh every run, reproducible on demand, never zeros.

Each run draws one base seed (``ATTN_KIT_SEED`` if set, so a grader can pick its
own; otherwise a fresh one, printed in the test header so a failure can be
replayed). Every tensor is drawn from a generator seeded by the base seed and a
*tag* naming what it is for, so one test's inputs do not depend on which other
tests ran before it.
"""
from __future__ import annotations

import hashlib
import math
import os
import secrets

import torch

SEED_ENV = "ATTN_KIT_SEED"
_run_seed: int | None = None


def run_seed() -> int:
    """The base seed of this run (from ``ATTN_KIT_SEED`` or drawn once per process)."""
    global _run_seed
    if _run_seed is None:
        value = os.environ.get(SEED_ENV)
        _run_seed = int(value) if value else secrets.randbelow(2**63)
        os.environ[SEED_ENV] = str(_run_seed)  # child processes reuse it
    return _run_seed


def seed_for(tag: str) -> int:
    digest = hashlib.sha256(f"{run_seed()}:{tag}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(tag: str, device: str | torch.device = "cpu") -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed_for(tag))
    return gen


def randn(*shape: int, tag: str, device="cpu", std: float = 1.0, dtype=torch.float32) -> torch.Tensor:
    """Normal random values (mean 0, ``std``), drawn on ``device`` from the tagged stream."""
    return randn_seeded(*shape, seed=seed_for(tag), device=device, std=std, dtype=dtype)


def randn_seeded(*shape: int, seed: int, device="cpu", std: float = 1.0, dtype=torch.float32) -> torch.Tensor:
    """:func:`randn` from an explicit stream seed: the judge hands the worker the seed of one
    tensor (never the run's), and both draw the same values bit for bit."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return torch.randn(*shape, generator=gen, device=device, dtype=dtype) * std


def uniform(*shape: int, tag: str, low: float, high: float, device="cpu") -> torch.Tensor:
    gen = generator(tag, device)
    return torch.rand(*shape, generator=gen, device=device) * (high - low) + low


def linear_weight(out_features: int, in_features: int, *, tag: str, device="cpu") -> torch.Tensor:
    """A weight in ``nn.Linear`` layout with the variance ``nn.Linear`` would give it.

    Values of order ``1/sqrt(in_features)`` keep the attention scores of order 1,
    as in a trained model, so the softmax is neither uniform nor one-hot.
    """
    return randn(out_features, in_features, tag=tag, device=device, std=1.0 / math.sqrt(in_features))


def mha_weights(hidden: int, *, tag: str, device="cpu") -> tuple[torch.Tensor, ...]:
    """``w_q, w_k, w_v, w_o`` for a hidden size, in ``nn.Linear`` layout."""
    return tuple(linear_weight(hidden, hidden, tag=f"{tag}/{n}", device=device) for n in "qkvo")
