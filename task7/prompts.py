"""Task 7: the prompts, windows of held-out Shakespeare cut to an exact number of tokens (provided).

The held-out text is The Tempest, which the default model never saw. Every
prompt of a batch has the same length, so no padding is needed (the kernels
take no mask). :data:`PROMPT_LENGTHS` and :data:`BATCH_SIZES` are the cases the
verdict runs.
"""
from __future__ import annotations

import torch

from .loading import DEFAULT_MODEL_DIR, ModelNotFound, default_model_problem

HELDOUT_FILE = DEFAULT_MODEL_DIR / "heldout.txt"
#: The short default prompt (a speech heading and its first line, as the texts print them).
DEFAULT_PROMPT = "Ham.\nTo be, or not to be,--that is the question:--\n"
#: Prompt lengths in tokens; "short" is the default prompt, "max" fills the context.
PROMPT_LENGTHS = ("short", 128, 256, 1024, "max")
BATCH_SIZES = (1, 4)


def heldout_text() -> str:
    if not HELDOUT_FILE.is_file():
        raise ModelNotFound(f"{HELDOUT_FILE} is missing: the prompts come from it ({default_model_problem() or ''})")
    return HELDOUT_FILE.read_text()


def prompt_lengths(spec, context: int, new_tokens: int, short_len: int) -> list[int | str]:
    """Resolve ``("short", 128, ..., "max")``: lengths that leave room for ``new_tokens`` in the context."""
    room = context - new_tokens
    if room < 1:
        raise ValueError(f"{new_tokens} new tokens do not fit in the model's context of {context}")
    out: list[int | str] = []
    for item in spec:
        if item == "short":
            value: int | str = "short" if short_len <= room else room
        elif item == "max":
            value = room
        else:
            value = min(int(item), room)
        if value not in out:
            out.append(value)
    return out


def describe_prompt_len(length) -> str:
    return "the short default prompt" if length == "short" else f"{length} tokens"


def make_prompts(tokenizer, length: int | str, batch: int, text: str | None = None,
                 prompt: str = DEFAULT_PROMPT) -> torch.Tensor:
    """``[batch, L]`` token ids; every row is exactly ``L`` tokens (no padding).

    ``length="short"``: row 0 is ``prompt``; the other rows are held-out windows
    of the same number of tokens (different rows, so a batch-offset bug shows).
    A number: every row is a window of held-out text of that many tokens, the
    rows starting at speech boundaries spread over the play.
    """
    text = heldout_text() if text is None else text
    first = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    n = len(first) if length == "short" else int(length)
    start = max(text.find("\nACT"), 0)
    body = text[start:]
    rows = []
    for r in range(batch):
        if length == "short" and r == 0:
            rows.append(first)
            continue
        offset = int(r * len(body) / batch) if length != "short" else int((r - 1) * len(body) / max(batch - 1, 1))
        cut = body.find("\n\n", offset)
        cut = offset if cut < 0 else cut + 2
        chars = 6 * n + 64
        while True:
            piece = (body[cut:] + "\n\n" + body)[:chars]  # wraps around the end of the play if need be
            ids = tokenizer(piece, add_special_tokens=False)["input_ids"]
            if len(ids) >= n:
                break
            if chars > 2 * len(body):
                raise ValueError(f"the held-out text is too short for prompts of {n} tokens")
            chars *= 2
        rows.append(ids[:n])
    return torch.tensor(rows, dtype=torch.long)
