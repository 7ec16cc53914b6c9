"""Where tests run: CPU always, CUDA when there is a GPU, with a visible skip otherwise."""
from __future__ import annotations

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
NO_CUDA_REASON = (
    "needs a CUDA GPU, and none is visible here (torch.cuda.is_available() is False); "
    "run it on a GPU node"
)

#: Mark for tests that cannot run without a GPU.
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA_REASON)

#: Parameter list for tests that run on both: ``@pytest.mark.parametrize("device", DEVICES)``.
DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]


def device_name() -> str:
    if HAS_CUDA:
        return torch.cuda.get_device_name()
    return "CPU only (no CUDA GPU visible)"


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
