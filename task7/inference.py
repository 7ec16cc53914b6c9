"""``python -m task7.inference``: GPT-2 generating text with your kernels, and the verdict.

Nothing new to write: this runs a real GPT-2 (by default the kit's offline
model trained on Shakespeare, ``task7/model``) through Hugging Face transformers,
with your kernels plugged in where the library allows it:

* attention: your kernels are registered as an attention implementation
  (``AttentionInterface.register``; ``task7/attention.py``) and the model is
  switched to it (``model.set_attn_implementation``): the prompt (prefill) runs
  your task-4 kernel, each generated token (decode) your task-5 decode kernel;
* the KV cache: a ``transformers.Cache`` whose layers preallocate
  ``[B, max_seq_len, H]`` buffers and write them with your ``update_kv_cache``
  kernel (``task7/kv_cache.py``), like the library's ``StaticCache`` but in the
  kernels' layout;
* ``model.generate()`` drives the loop, exactly as for any model.

Where the library's cache API and the kernels meet: ``Cache.update`` must
return the keys and values in transformers' ``[B, heads, L, head_dim]`` layout,
and the attention function receives only those tensors. So the cache returns
*views* of the valid rows of its buffers (no copy), and the attention function
merges them back to the ``[B, L, H]`` strided view the decode kernel reads in
place, with ``seq_len = L``: the kernel gets the cache and its valid length, as
an in-place view rather than (whole buffer, integer). Beam search and other
cache reorderings are not supported, and the cache is not ``torch.compile``-able.
A custom attention name gets no attention mask from transformers, so the
kernels' causal mask is the only mask: the prompts of a batch all have the same
length (no padding).

For every prompt length (the short default prompt, 128, 256, 1024 tokens and
the longest that leaves room for the new tokens in the context) and batch size
(1 and 4) it prints the generated text, tokens/s of prefill and decode for
both paths, and whether your path agrees with transformers' attention
(``python -m task7.inference_ref`` alone): same greedy tokens, and logits
within the kit's tolerance at every step, teacher-forced on the same tokens
(``task7/verdict.py`` explains the rule). The last line is the VERDICT.
Exit status: 0 agree, 1 differ, 2 cannot run (no GPU, no model, build failure).

``--stand-in`` runs the same plumbing with a plain-PyTorch stand-in for the
kernels (also on a CPU): a check of the harness, not of your kernels.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys

import torch

from harness.device import NO_CUDA_REASON

from . import check, cli, generation, loading, prompts
from .attention import ATTN_NAME, STAND_IN_NAME, cuda_kernels, register, torch_stand_in


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m task7.inference", description=__doc__.split("\n\n")[0])
    cli.add_arguments(parser)
    parser.add_argument("--stand-in", action="store_true",
                        help="use a plain-PyTorch stand-in for the kernels (runs on a CPU too; not a check of your kernels)")
    args = parser.parse_args(argv)
    if args.model is None:
        os.environ["HF_HUB_OFFLINE"] = "1"  # the default model never needs the network (set before transformers loads)
    from .kv_cache import KernelKVCache

    if args.stand_in:
        kernels, name = torch_stand_in(), STAND_IN_NAME
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        if not torch.cuda.is_available():
            print(f"task 7 {NO_CUDA_REASON}. (`--stand-in` runs the plumbing on the CPU with PyTorch "
                  "instead of your kernels; `python -m task7.inference_ref` runs the reference.)", file=sys.stderr)
            return 2
        device = torch.device("cuda")
        from harness.build import BuildError

        try:
            kernels, name = cuda_kernels(), ATTN_NAME
        except BuildError as err:
            print(err.log, file=sys.stderr)
            print(f"FAILED: the extension '{err.name}' did not build (the compiler's message is above); "
                  "run python -m task5.compile", file=sys.stderr)
            return 2
    register(kernels, name)
    loaded = cli.load_reference(args, device)
    if loaded is None:
        return 2
    model, tokenizer, what, cases = loaded
    sample = cli.sample_options(args)
    print(f"model: {what}")
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}")
    print(f"{'stand-in' if args.stand_in else 'your'} path: attn_implementation='{name}' ({kernels.label}) "
          "with KernelKVCache (update_kv_cache)")
    print(f"reference: attn_implementation='{loading.REFERENCE_ATTENTION}' (transformers) with its dynamic cache; "
          "float64 copy of it for the tolerance")
    print(f"generation: model.generate(), {args.new_tokens} new tokens; text shown: {cli.generation_mode(args)}; "
          "verdict: greedy\n")

    # Warm-up (builds nothing new, but loads cuBLAS, the kernels, the allocator) on both paths.
    warm = prompts.make_prompts(tokenizer, 8, 1, prompt=args.prompt).to(device)
    generation.generate(model, warm, 2)
    model.set_attn_implementation(name)
    generation.generate(model, warm, 2, cache=KernelKVCache(model.config, 10, kernels))
    model.set_attn_implementation(loading.REFERENCE_ATTENTION)
    model64 = copy.deepcopy(model).to(torch.float64)

    results = []
    for length, batch in cases:
        prompt = prompts.make_prompts(tokenizer, length, batch, prompt=args.prompt).to(device)
        label = f"{prompts.describe_prompt_len(length)}, batch {batch}"
        try:
            case = check.run_case(model, kernels, name, prompt, args.new_tokens, label=label, model64=model64,
                                   sample=sample, seed=args.seed)
        except (NotImplementedError, RuntimeError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            print(f"case {label}: your kernels raised {type(err).__name__}: {first}", file=sys.stderr)
            print("\nVERDICT: FAIL - the kernels did not run (finish tasks 4 and 5 first: python -m task4.test, "
                  "python -m task5.test)")
            return 1
        results.append((length, case))
        print("\n".join(check.format_case(case, "the stand-in" if args.stand_in else "your kernels")), flush=True)
        print()

    print("=" * 78)
    print("Generated text (sequence 0 of each case; your kernels' path)")
    print(f"{cli.GENERATED_MARK} marks where the prompt ends and the model's text begins")
    print("=" * 78)
    for length, case in results:
        ours, ref = case.display["kernels"][0], case.display["reference"][0]
        same = torch.equal(ours.cpu(), ref.cpu())
        print(f"--- {case.label} ({'identical on both paths' if same else 'DIFFERS from the reference path'}):")
        print(cli.text_block(tokenizer, case.prompt[0], ours, full_prompt=length == "short"))
        if not same:
            print(f"--- {case.label}, reference path:")
            print(cli.text_block(tokenizer, case.prompt[0], ref, full_prompt=length == "short"))
        print()
    first = next((c for length, c in results if length == "short" and c.batch == 1), results[0][1])
    if args.stand_in:  # Results.md asks for what the student's kernels generate, on a GPU
        print("(Results.md, Task 7 wants the text your kernels generate: run `python -m task7.inference` on a GPU, "
              "without --stand-in.)\n")
    else:
        print(f"Results.md, Task 7: paste this between the fences ({first.label}, {cli.generation_mode(args)}):")
        print("```text")
        print(cli.text_block(tokenizer, first.prompt[0], first.display["kernels"][0], full_prompt=True).rstrip("\n"))
        print("```\n")

    print(f"{'case':<40} {'prefill tok/s ref':>18} {'yours':>10} {'decode tok/s ref':>17} {'yours':>10}  verdict")
    for _, c in results:
        print(f"{c.label:<40} {c.ref.prefill_tokens_per_s:>18,.0f} {c.custom.prefill_tokens_per_s:>10,.0f} "
              f"{c.ref.decode_tokens_per_s:>17,.0f} {c.custom.decode_tokens_per_s:>10,.0f}  "
              f"{'agree' if c.passed else 'DIFFER'}")
    failed = [c for _, c in results if not c.passed]
    # (subject, verb that agrees, verb that differs): "your kernels agree", "the stand-in agrees"
    who, agree, differ = ("your kernels", "agree", "differ") if not args.stand_in else (
        "the PyTorch stand-in", "agrees", "differs")
    if failed:
        c = failed[0]
        d = c.verdict.first_divergence
        where = (f"step {d['step']} ({'the prefill' if d['step'] == 0 else 'decode step ' + str(d['step'])}), "
                 f"sequence {d['sequence']}, position {d['position']}" if d else c.verdict.failures[0].splitlines()[0])
        print(f"\nVERDICT: FAIL - {who} {differ} from transformers' attention in {len(failed)} of {len(results)} "
              f"case(s); first: {c.label}, diverging at {where}")
        return 1
    print(f"\nVERDICT: PASS - {who} {agree} with transformers' attention in all {len(results)} cases "
          f"(same greedy tokens, logits within tolerance at every step)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
