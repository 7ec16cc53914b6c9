"""Task 7: load the GPT-2 that generates (provided).

The kit's offline GPT-2 trained on Shakespeare (``task7/model``, loaded with
``local_files_only``; the command-line entry points also set
``HF_HUB_OFFLINE=1`` before transformers is imported), or any GPT-2 checkpoint
given with ``--model``: in float32, in eval mode, with transformers' own
attention (:data:`REFERENCE_ATTENTION`) until a caller switches it.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "model"
METRICS_FILE = DEFAULT_MODEL_DIR / "train_metrics.json"
WEIGHTS_FILE = "model.safetensors"
#: transformers' attention the kernels are compared with (its default).
REFERENCE_ATTENTION = "sdpa"


class ModelNotFound(RuntimeError):
    """The model could not be loaded; the message says why and names the offline default."""


def default_model_problem() -> str | None:
    """Why the shipped default model cannot be used (None if it can)."""
    missing = [n for n in (WEIGHTS_FILE, "config.json", "tokenizer.json", "heldout.txt") if not (DEFAULT_MODEL_DIR / n).is_file()]
    if missing:
        return (
            f"the kit's offline default model in {DEFAULT_MODEL_DIR} is not there yet (missing: {', '.join(missing)}); "
            "course staff create it with `python -m task7.train_shakespeare` on a GPU"
        )
    return None


def load(name_or_path: str | None = None, *, attn_implementation: str = REFERENCE_ATTENTION,
         device: str | torch.device = "cpu"):
    """``(model, tokenizer, description)``: a GPT-2 in float32, in eval mode, on ``device``.

    ``None`` is the kit's offline default (``task7/model``), loaded without
    network (``local_files_only``). A folder path loads that checkpoint; another name goes to the
    Hugging Face hub (e.g. ``gpt2`` where the hub is reachable).
    """
    if name_or_path is None:
        problem = default_model_problem()
        if problem:
            raise ModelNotFound(problem)
        source, local = str(DEFAULT_MODEL_DIR), True
    else:
        path = Path(name_or_path).expanduser()
        local = path.exists()
        # Hub names are "name" or "owner/name"; anything else is meant as a folder.
        looks_like_path = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1 or (
            os.sep != "/" and os.sep in name_or_path
        )
        if not local and looks_like_path:
            raise ModelNotFound(
                f"--model {name_or_path}: no such folder. Leave out --model to use the kit's offline default "
                f"model ({DEFAULT_MODEL_DIR})."
            )
        if local and not (path / "config.json").is_file():
            raise ModelNotFound(
                f"--model {name_or_path}: {path} has no config.json, so it is not a transformers checkpoint. "
                f"Leave out --model to use the kit's offline default model ({DEFAULT_MODEL_DIR})."
            )
        source = str(path) if local else name_or_path
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
        model = AutoModelForCausalLM.from_pretrained(
            source, local_files_only=local, dtype=torch.float32, attn_implementation=REFERENCE_ATTENTION
        )
    except Exception as exc:  # hub unreachable, unknown repository, broken files
        if local:
            raise ModelNotFound(f"could not load the checkpoint in {source}: {type(exc).__name__}: {exc}") from exc
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelNotFound(
            f"could not load '{source}' from the Hugging Face hub ({type(exc).__name__}: {first}). Without network, "
            f"leave out --model to use the kit's offline default model ({DEFAULT_MODEL_DIR})."
        ) from exc
    if model.config.model_type != "gpt2":
        raise ModelNotFound(f"'{source}' is a {model.config.model_type} model; task 7 runs GPT-2 checkpoints")
    head_dim = model.config.n_embd // model.config.n_head
    if head_dim > 128:
        raise ModelNotFound(f"'{source}' has head_dim {head_dim}; the task-4 kernel supports up to 128")
    tokenizer.model_max_length = int(1e9)  # prompt lengths are checked against the context here, not there
    model.set_attn_implementation(attn_implementation)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.eos_token_id
    model = model.to(device).eval().requires_grad_(False)
    c = model.config
    what = (
        f"{'the offline default ' if name_or_path is None else ''}GPT-2 '{source}': {c.n_layer} layers, "
        f"{c.n_head} heads of {head_dim}, context {c.n_positions}, vocabulary {c.vocab_size}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters"
    )
    return model, tokenizer, what
