"""``python -m task7.inference_ref``: GPT-2 generating text with transformers' own attention.

The reference for task 7: the same model, prompts and options as
``python -m task7.inference``, but attention is transformers' default ("sdpa")
with its default dynamic KV cache. It prints the generated text and the
prefill and decode tokens/s; it runs on a GPU, or (slowly) on the CPU.
The verdict comparing it with your kernels is ``python -m task7.inference``.
"""
from __future__ import annotations

import argparse
import os

import torch

from . import cli, generation, loading, prompts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m task7.inference_ref", description=__doc__.split("\n\n")[0])
    cli.add_arguments(parser)
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    args = parser.parse_args(argv)
    if args.model is None:
        os.environ["HF_HUB_OFFLINE"] = "1"  # the default model never needs the network (set before transformers loads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    loaded = cli.load_reference(args, device)
    if loaded is None:
        return 2
    model, tokenizer, what, cases = loaded
    print(f"model: {what}")
    print(f"attention: transformers' '{loading.REFERENCE_ATTENTION}' with its dynamic KV cache, on {device}")
    sample = cli.sample_options(args)
    print(f"generation: model.generate(), {args.new_tokens} new tokens, {cli.generation_mode(args)}\n")
    generation.generate(model, prompts.make_prompts(tokenizer, 8, 1, prompt=args.prompt).to(device), 2)  # warm-up
    rows = []
    for length, batch in cases:
        prompt = prompts.make_prompts(tokenizer, length, batch, prompt=args.prompt).to(device)
        gen = generation.generate(model, prompt, args.new_tokens, sample=sample, seed=args.seed)
        label = f"{prompts.describe_prompt_len(length)}, batch {batch}"
        rows.append((label, prompt.shape[1], gen))
        print(f"--- {label} (prompt {prompt.shape[1]} tokens; sequence 0 of {batch}):")
        print(cli.text_block(tokenizer, prompt[0], gen.tokens[0], full_prompt=length == "short"))
        print()
    print(f"{'case':<40} {'prefill tokens/s':>17} {'decode tokens/s':>16}")
    for label, _, gen in rows:
        print(f"{label:<40} {gen.prefill_tokens_per_s:>17,.0f} {gen.decode_tokens_per_s:>16,.0f}")
    print("\nCompare with your kernels: python -m task7.inference")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
