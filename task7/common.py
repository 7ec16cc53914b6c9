"""Task 7, shared by ``task7.inference``, ``task7.inference_ref`` and the test (provided).

* the model: the kit's offline GPT-2 trained on Shakespeare (``task7/model``,
  loaded with ``local_files_only``; the command-line entry points also set
  ``HF_HUB_OFFLINE=1`` before transformers is imported), or any GPT-2
  checkpoint given with ``--model``;
* the prompts: windows of held-out Shakespeare (The Tempest, which the default
  model never saw) cut to an exact number of tokens, so every prompt of a batch
  has the same length and no padding is needed (the kernels take no mask);
* generation through ``model.generate()``, timed per phase: prefill tokens/s
  (batch x prompt length / time to the first logits) and decode tokens/s
  (batch x steps / time of the decode steps);
* the verdict (:func:`judge`).

The verdict
-----------
The kernels path and the reference path (transformers' own attention, "sdpa",
with its default cache) generate greedily from the same prompt; then both, and
the reference path in float64, are *teacher-forced* on the reference's tokens
(prefill of the prompt, then one decode step per token, each fed the same
token), so every step compares logits computed from the same inputs. TF32 is
off. The tolerance is the kit's rule (``harness/compare.py``): the kernels
path's logits may be at most 8 times as far from the float64 run as the
float32 reference path is (never asked to be closer than 64 float32 ulps of
the logits' magnitude), measured over the prompt's logits and over the decode
steps' logits separately. The greedy tokens of the two ``generate()`` runs must
agree; a difference where the float64 logits' two best tokens are closer than
twice the allowance is a tie the rounding may break either way: it is reported,
not failed, and that sequence is not compared after it. On a failure the
verdict names the first step (0 = the prompt, t = decode step t) and the
sequence and position where the paths diverge.
"""
from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from harness.compare import ErrorReport, allowance, compare, strict_float32

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "model"
HELDOUT_FILE = DEFAULT_MODEL_DIR / "heldout.txt"
METRICS_FILE = DEFAULT_MODEL_DIR / "train_metrics.json"
WEIGHTS_FILE = "model.safetensors"
#: The short default prompt (a speech heading and its first line, as the texts print them).
DEFAULT_PROMPT = "Ham.\nTo be, or not to be,--that is the question:--\n"
#: Prompt lengths in tokens; "short" is the default prompt, "max" fills the context.
PROMPT_LENGTHS = ("short", 128, 256, 1024, "max")
BATCH_SIZES = (1, 4)
NEW_TOKENS = 64
#: transformers' attention the kernels are compared with (its default).
REFERENCE_ATTENTION = "sdpa"
#: A greedy-token difference is a tie when the float64 top-2 margin is below this many allowances.
TIE_MARGIN_ALLOWANCES = 2.0


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


# ------------------------------------------------------------------ prompts
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


# ------------------------------------------------------------------ generation
@dataclass
class Generation:
    tokens: torch.Tensor  # [B, N] new tokens
    prefill_s: float
    decode_s: float
    batch: int
    prompt_len: int

    @property
    def new_tokens(self) -> int:
        return self.tokens.shape[1]

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.batch * self.prompt_len / self.prefill_s if self.prefill_s > 0 else math.inf

    @property
    def decode_tokens_per_s(self) -> float:
        steps = self.new_tokens - 1
        return self.batch * steps / self.decode_s if steps > 0 and self.decode_s > 0 else math.nan


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def generate(model, prompt: torch.Tensor, new_tokens: int, *, cache=None, sample: dict | None = None,
             seed: int = 0) -> Generation:
    """``model.generate()`` from ``prompt``: greedy, or sampled with ``sample`` (temperature, top_k) and ``seed``.

    A logits processor stamps the time after every forward pass (synchronising
    the GPU), so the first stamp ends the prefill and the others time the decode
    steps. ``eos_token_id=None``: always ``new_tokens`` tokens.
    """
    from transformers import LogitsProcessor, LogitsProcessorList

    stamps: list[float] = []
    device = prompt.device

    class _Clock(LogitsProcessor):
        def __call__(self, input_ids, scores):
            _sync(device)
            stamps.append(time.perf_counter())
            return scores

    kwargs = dict(do_sample=False)
    if sample:
        kwargs = dict(do_sample=True, temperature=sample["temperature"], top_k=sample["top_k"])
        torch.manual_seed(seed)
    with torch.no_grad(), strict_float32():
        _sync(device)
        t0 = time.perf_counter()
        out = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=new_tokens,
            eos_token_id=None,
            pad_token_id=model.generation_config.pad_token_id,
            **cache_argument(model, cache),
            logits_processor=LogitsProcessorList([_Clock()]),
            **kwargs,
        )
    b, s = prompt.shape
    return Generation(out[:, s:], stamps[0] - t0, stamps[-1] - stamps[0], b, s)


def cache_argument(model, cache) -> dict:
    """The KV cache as this transformers version's ``forward`` and ``generate`` take it: ``cache=``
    (``past_key_values`` is deprecated from 5.2x and removed in 5.40), or ``past_key_values=`` in
    the releases before the rename."""
    import inspect

    return {"cache": cache} if "cache" in inspect.signature(model.forward).parameters else {"past_key_values": cache}


def returned_cache(out):
    """The cache a forward pass returns, under either name (see :func:`cache_argument`)."""
    return out["cache"] if "cache" in out else out.past_key_values


def teacher_forced(model, prompt: torch.Tensor, forced: torch.Tensor, cache=None) -> dict:
    """Prefill ``prompt``, then one decode step per token of ``forced[:, :-1]``.

    Returns ``prefill`` ``[B, S, V]`` (the logits of every prompt position) and
    ``steps`` ``[B, N-1, V]`` (decode step t's logits, t = 1 .. N-1, for the
    position after ``forced[:, t-1]``), in the model's dtype.
    """
    with torch.no_grad(), strict_float32():
        out = model(input_ids=prompt, **cache_argument(model, cache), use_cache=True)
        prefill, cache = out.logits, returned_cache(out)
        steps = []
        for t in range(forced.shape[1] - 1):
            out = model(input_ids=forced[:, t : t + 1], **cache_argument(model, cache), use_cache=True)
            steps.append(out.logits[:, -1])
            cache = returned_cache(out)
    v = prefill.shape[-1]
    b = prompt.shape[0]
    return dict(prefill=prefill, steps=torch.stack(steps, 1) if steps else prefill.new_zeros(b, 0, v))


# ------------------------------------------------------------------ the verdict
@dataclass
class Verdict:
    passed: bool
    prefill: ErrorReport
    steps: ErrorReport
    tokens_agree: int
    tokens_total: int
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    first_divergence: dict | None = None

    def as_dict(self) -> dict:
        return dict(
            passed=self.passed, prefill_logits=self.prefill.as_dict(), decode_logits=self.steps.as_dict(),
            tokens_agree=self.tokens_agree, tokens_total=self.tokens_total, failures=self.failures,
            notes=self.notes, first_divergence=self.first_divergence,
        )


def _first_bad(got: torch.Tensor, ref64: torch.Tensor, allowed: float) -> tuple[int, int, float] | None:
    """For ``[B, T, V]`` logits: the first (t, b) with an element beyond ``allowed``, and its error."""
    err = (got.to(torch.float64) - ref64.to(torch.float64)).abs()
    err = torch.where(torch.isfinite(got.to(torch.float64)), err, torch.full_like(err, math.inf))
    per = err.amax(-1)  # [B, T]
    bad = per > allowed
    if not bool(bad.any()):
        return None
    t = int(bad.any(0).nonzero()[0])
    b = int(bad[:, t].nonzero()[0])
    return t, b, float(per[b, t])


def judge(custom: dict, ref32: dict, ref64: dict, custom_tokens: torch.Tensor, ref_tokens: torch.Tensor) -> Verdict:
    """Compare the kernels path with the reference path (see the module docstring).

    ``custom``, ``ref32``, ``ref64``: :func:`teacher_forced` outputs, all forced
    on ``ref_tokens``; ``custom_tokens``, ``ref_tokens``: ``[B, N]`` greedy tokens
    of the two ``generate()`` runs.
    """
    b, s, _ = ref64["prefill"].shape
    n = ref_tokens.shape[1]
    dims = ("batch", "position", "vocab")
    pre = compare(custom["prefill"], ref64["prefill"], ref32["prefill"], what="prompt logits (prefill)",
                  dims=dims, context=dict(B=b, prompt=s))
    stp = compare(custom["steps"], ref64["steps"], ref32["steps"], what="decode-step logits",
                  dims=("batch", "step", "vocab"), context=dict(B=b, prompt=s, steps=n - 1))
    failures, notes = [], []
    divergence = None

    if not pre.passed:
        where = _first_bad(custom["prefill"], ref64["prefill"], pre.allowed)
        if where is not None:
            p, row, e = where
            divergence = dict(kind="logits", step=0, sequence=row, position=p, error=e, allowed=pre.allowed)
            failures.append(
                f"logits diverge at step 0 (the prefill, task-4 kernel): sequence {row}, prompt position {p} of {s}: "
                f"|error| {e:.3e} > allowed {pre.allowed:.3e}"
            )
        failures.append(pre.message or f"prefill logits: shape or dtype mismatch")
    if not stp.passed:
        where = _first_bad(custom["steps"], ref64["steps"], stp.allowed)
        if where is not None:
            t, row, e = where
            if divergence is None:
                divergence = dict(kind="logits", step=t + 1, sequence=row, position=s + t, error=e, allowed=stp.allowed)
            failures.append(
                f"logits diverge at decode step {t + 1} (task-5 kernels, position {s + t}): sequence {row}: "
                f"|error| {e:.3e} > allowed {stp.allowed:.3e}"
            )
        failures.append(stp.message or f"decode-step logits: shape or dtype mismatch")

    # Greedy tokens of the two generate() runs.
    if custom_tokens.shape != ref_tokens.shape:
        failures.append(f"generated {tuple(custom_tokens.shape)} tokens, the reference {tuple(ref_tokens.shape)}")
        agree = 0
    else:
        ref_logits = torch.cat([ref64["prefill"][:, -1:], ref64["steps"]], 1).to(torch.float64)  # [B, N, V]
        top2 = ref_logits.topk(2, dim=-1).values
        margin = top2[..., 0] - top2[..., 1]
        differ = (custom_tokens.to(ref_tokens.device) != ref_tokens)
        agree = int((~differ).sum())
        token_fail = None
        for row in range(b):
            idx = differ[row].nonzero()
            if idx.numel() == 0:
                continue
            t = int(idx[0])
            allowed = pre.allowed if t == 0 else stp.allowed
            tie = float(margin[row, t]) < TIE_MARGIN_ALLOWANCES * allowed
            what = "the prefill" if t == 0 else f"decode step {t}"
            desc = (
                f"sequence {row}, token {t} ({what}, position {s + t - 1}): yours {int(custom_tokens[row, t])}, "
                f"reference {int(ref_tokens[row, t])}; float64 top-2 margin {float(margin[row, t]):.3e}"
            )
            if tie:
                notes.append(f"greedy tie broken differently at {desc} (< {TIE_MARGIN_ALLOWANCES:g} x allowed "
                             f"{allowed:.3e}): not a failure; this sequence is not compared after it")
            elif token_fail is None or t < token_fail[0]:
                token_fail = (t, row, desc)
        if token_fail is not None:
            t, row, desc = token_fail
            failures.insert(0, f"greedy tokens diverge at step {t}: {desc}")
            if divergence is None or t < divergence["step"]:
                divergence = dict(kind="tokens", step=t, sequence=row, position=s + t - 1)
    passed = not failures
    return Verdict(passed, pre, stp, agree, int(ref_tokens.numel()), failures, notes, divergence)


# ------------------------------------------------------------------ one case, both paths
@dataclass
class CaseResult:
    label: str
    batch: int
    prompt_len: int
    new_tokens: int
    verdict: Verdict
    ref: Generation
    custom: Generation
    kernel_calls: dict
    prompt: torch.Tensor
    display: dict  # path -> [B, N] tokens shown as text (greedy, or sampled with --sample)

    @property
    def passed(self) -> bool:
        return self.verdict.passed


def expected_kernel_calls(n_layers: int, new_tokens: int) -> dict:
    """What one generate() of ``new_tokens`` tokens must call: one prefill, then decode steps."""
    return {"prefill": n_layers, "decode": n_layers * (new_tokens - 1), "update_kv_cache": n_layers * new_tokens}


def run_case(model, kernels, attn_name: str, prompt: torch.Tensor, new_tokens: int, *, label: str,
             model64=None, sample: dict | None = None, seed: int = 0, nan_fill: bool = False) -> CaseResult:
    """Both paths on one prompt batch: timed greedy generate(), teacher-forced logits, verdict."""
    from .kv_cache import KernelKVCache

    b, s = prompt.shape
    n_layers = model.config.n_layer
    fill = float("nan") if nan_fill else None
    new_cache = lambda: KernelKVCache(model.config, s + new_tokens, kernels, fill=fill)  # noqa: E731

    model.set_attn_implementation(REFERENCE_ATTENTION)
    ref = generate(model, prompt, new_tokens)
    ref_tf = teacher_forced(model, prompt, ref.tokens)
    model.set_attn_implementation(attn_name)
    kernels.reset_counts()
    custom = generate(model, prompt, new_tokens, cache=new_cache())
    calls = dict(kernels.calls)
    custom_tf = teacher_forced(model, prompt, ref.tokens, cache=new_cache())
    display = {"reference": ref.tokens, "kernels": custom.tokens}
    if sample:
        model.set_attn_implementation(REFERENCE_ATTENTION)
        display["reference"] = generate(model, prompt, new_tokens, sample=sample, seed=seed).tokens
        model.set_attn_implementation(attn_name)
        display["kernels"] = generate(model, prompt, new_tokens, cache=new_cache(), sample=sample, seed=seed).tokens
    model.set_attn_implementation(REFERENCE_ATTENTION)

    own64 = model64 is None
    if own64:
        model64 = copy.deepcopy(model).to(torch.float64)
    ref64_tf = teacher_forced(model64, prompt, ref.tokens)
    if own64:
        del model64

    verdict = judge(custom_tf, ref_tf, ref64_tf, custom.tokens, ref.tokens)
    expected = expected_kernel_calls(n_layers, new_tokens)
    if {k: calls.get(k, 0) for k in expected} != expected or calls.get("prefill_after_prefix", 0):
        verdict.failures.append(
            f"generate() did not run the kernels as expected: calls {calls}, expected {expected} "
            "(one task-4 prefill per layer, then one task-5 decode and one cache update per layer and step)"
        )
        verdict.passed = False
    return CaseResult(label, b, s, new_tokens, verdict, ref, custom, calls, prompt, display)


def describe_prompt_len(length) -> str:
    return "the short default prompt" if length == "short" else f"{length} tokens"


def format_case(case: CaseResult, path: str = "your kernels") -> list[str]:
    """The lines ``python -m task7.inference`` prints for a case; ``path`` names the path under test."""
    v = case.verdict
    lines = [
        f"case {case.label}: batch {case.batch}, prompt {case.prompt_len} tokens, {case.new_tokens} new tokens",
        f"  tokens/s   reference ({REFERENCE_ATTENTION}): prefill {case.ref.prefill_tokens_per_s:,.0f}, "
        f"decode {case.ref.decode_tokens_per_s:,.0f}",
        f"  tokens/s   {path + ':':<17} prefill {case.custom.prefill_tokens_per_s:,.0f}, "
        f"decode {case.custom.decode_tokens_per_s:,.0f}   (kernel calls: "
        + ", ".join(f"{k} {val}" for k, val in sorted(case.kernel_calls.items())) + ")",
        f"  logits vs float64: prefill max |error| {v.prefill.max_abs_error:.2e} (allowed {v.prefill.allowed:.2e}), "
        f"decode steps {v.steps.max_abs_error:.2e} (allowed {v.steps.allowed:.2e})",
        f"  greedy tokens: {v.tokens_agree}/{v.tokens_total} agree",
    ]
    lines += [f"  note: {n}" for n in v.notes]
    if v.passed:
        lines.append("  -> agree")
    else:
        lines.append("  -> DIFFER:")
        lines += ["     " + line for f in v.failures for line in f.splitlines()]
    return lines


def decode_text(tokenizer, ids) -> str:
    return tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)


# ------------------------------------------------------------------ command line (both entry points)
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


def sample_options(args) -> dict | None:
    return dict(temperature=args.temperature, top_k=args.top_k) if args.sample else None


#: Printed between the prompt and the generated text, so a reader sees where the model starts.
GENERATED_MARK = "｜"


def text_block(tokenizer, prompt_ids, new_ids, full_prompt: bool) -> str:
    """The prompt (whole, or its last lines when long), the mark, then the generated continuation."""
    prompt = decode_text(tokenizer, prompt_ids)
    if not full_prompt and len(prompt) > 240:
        prompt = "[...]" + prompt[-240:]
    return prompt + GENERATED_MARK + decode_text(tokenizer, new_ids)
