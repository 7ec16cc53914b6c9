"""Task 7: what both command lines share, their options and how they show text (provided).

``python -m task7.inference`` and ``python -m task7.inference_ref`` take the
same options (:func:`add_arguments`), run the same cases (:func:`parse_cases`)
and print generated text the same way (:func:`text_block`).
"""
from __future__ import annotations

from .generation import NEW_TOKENS
from .loading import DEFAULT_MODEL_DIR
from .prompts import BATCH_SIZES, DEFAULT_PROMPT, PROMPT_LENGTHS, prompt_lengths


def add_arguments(parser) -> None:
    parser.add_argument("--model", default=None, metavar="NAME_OR_PATH",
                        help=f"a GPT-2 checkpoint folder or hub name (e.g. gpt2, where the hub is reachable); "
                             f"default: the kit's offline model {DEFAULT_MODEL_DIR.relative_to(DEFAULT_MODEL_DIR.parent.parent)}")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="the short prompt (default: %(default)r)")
    parser.add_argument("--lengths", default=",".join(map(str, PROMPT_LENGTHS)),
                        help="prompt lengths in tokens, comma-separated; 'short' is --prompt, 'max' fills the "
                             "context with room for the new tokens (default: %(default)s)")
    parser.add_argument("--batch", default=",".join(map(str, BATCH_SIZES)),
                        help="batch sizes, comma-separated (default: %(default)s); the prompts of a batch have "
                             "equal lengths, so there is no padding")
    parser.add_argument("--new-tokens", type=int, default=NEW_TOKENS, help="tokens to generate (default: %(default)s)")
    parser.add_argument("--sample", action="store_true",
                        help="show sampled text (temperature, top-k, seed) instead of greedy; the verdict is always greedy")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")


def parse_cases(args, model, tokenizer) -> list[tuple[int | str, int]]:
    lengths = [x.strip() for x in args.lengths.split(",") if x.strip()]
    lengths = [x if x in ("short", "max") else int(x) for x in lengths]
    short_len = len(tokenizer(args.prompt, add_special_tokens=False)["input_ids"])
    resolved = prompt_lengths(lengths, model.config.n_positions, args.new_tokens, short_len)
    batches = [int(x) for x in args.batch.split(",") if x.strip()]
    return [(length, b) for length in resolved for b in batches]


def load_reference(args, device):
    """The model with transformers' own attention, its tokenizer, what it is, and the cases to run:
    both command lines start from it. None (the error printed) when the model is not there."""
    import sys

    from . import loading

    try:
        model, tokenizer, what = loading.load(args.model, attn_implementation=loading.REFERENCE_ATTENTION, device=device)
        return model, tokenizer, what, parse_cases(args, model, tokenizer)
    except loading.ModelNotFound as err:
        print(f"error: {err}", file=sys.stderr)
        return None


def sample_options(args) -> dict | None:
    return dict(temperature=args.temperature, top_k=args.top_k) if args.sample else None


def generation_mode(args) -> str:
    """How the shown text is generated, for the header both command lines print."""
    if not args.sample:
        return "greedy"
    return f"sampled (temperature {args.temperature}, top-k {args.top_k}, seed {args.seed})"


#: Printed between the prompt and the generated text, so a reader sees where the model starts.
GENERATED_MARK = "｜"


def decode_text(tokenizer, ids) -> str:
    return tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)


def text_block(tokenizer, prompt_ids, new_ids, full_prompt: bool) -> str:
    """The prompt (whole, or its last lines when long), the mark, then the generated continuation."""
    prompt = decode_text(tokenizer, prompt_ids)
    if not full_prompt and len(prompt) > 240:
        prompt = "[...]" + prompt[-240:]
    return prompt + GENERATED_MARK + decode_text(tokenizer, new_ids)
