"""Task 7 tests: GPT-2 in transformers with your kernels, against transformers' own attention.

Run ``python -m task7.test`` (or ``python -m task7.inference`` for the same
verdict with the generated text). What is checked:

* GPU, graded (``test_verdict``, one case per prompt length and batch size):
  the kit's offline GPT-2 generates greedily through ``model.generate()`` with
  your kernels (task-4 prefill, task-5 cache update and decode) and with
  transformers' "sdpa" attention; the greedy tokens must agree and the logits
  must agree at every step within the kit's tolerance (teacher-forced on the
  same tokens; the float32 reference path's own distance from float64 sets the
  allowance, see task7/verdict.py). The test also checks that generate() really
  called your kernels (one prefill, then one decode and one cache update per
  layer and step).
* CPU: the shipped model and tokenizer load with no network; their loss on a
  held-out passage matches the recorded validation loss (trained weights); the
  reference path generates; the plumbing (attention registration, the cache,
  the layout changes) on a tiny random GPT-2 with a plain-PyTorch stand-in for
  the kernels; the verdict logic on planted mismatches; the error messages for
  a missing model.
"""
from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from harness.compare import CheckFailed
from harness.device import requires_cuda
from harness.remote import on_worker
from harness.tasks import REPO_ROOT
from task7 import check, cli, generation, loading, prompts, verdict
from task7.attention import STAND_IN_NAME, Kernels, register, torch_stand_in
from task7.kv_cache import KernelKVCache

_MODEL_PROBLEM = loading.default_model_problem()
requires_model = pytest.mark.skipif(_MODEL_PROBLEM is not None, reason=f"needs the trained model: {_MODEL_PROBLEM}")
#: How far above the recorded validation loss a held-out passage's loss may be.
HELDOUT_LOSS_MARGIN = 0.3
MAX_WEIGHT_BYTES = 10_000_000


def _pythonpath() -> str:
    """The kit first, then whatever the caller had (a subprocess sees the same packages)."""
    return os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)


def _metrics() -> dict:
    return json.loads(loading.METRICS_FILE.read_text())


# ------------------------------------------------------------------ CPU: the shipped model
@requires_model
def test_default_model_loads_offline(record, tmp_path):
    """AutoTokenizer / AutoModelForCausalLM load task7/model with the hub off and every proxy dead."""
    code = (
        "import json, torch\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"path = {str(loading.DEFAULT_MODEL_DIR)!r}\n"
        "tok = AutoTokenizer.from_pretrained(path)\n"
        "model = AutoModelForCausalLM.from_pretrained(path)\n"
        "from task7.loading import load\n"
        "load()\n"
        "c = model.config\n"
        "print(json.dumps(dict(cls=type(model).__name__, model_type=c.model_type, n_embd=c.n_embd, n_head=c.n_head,\n"
        "    n_layer=c.n_layer, n_positions=c.n_positions, vocab=c.vocab_size, tok_vocab=len(tok),\n"
        "    dtypes=sorted({str(p.dtype) for p in model.parameters()}),\n"
        "    roundtrip=tok.decode(tok('To be, or not to be')['input_ids']))))\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HTTP_PROXY="http://127.0.0.1:9",
               HTTPS_PROXY="http://127.0.0.1:9", ALL_PROXY="http://127.0.0.1:9", NO_PROXY="",
               HF_HOME=str(tmp_path / "empty-hf-home"), PYTHONPATH=_pythonpath())
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300)
    assert proc.returncode == 0, f"loading task7/model offline failed:\n{proc.stderr[-3000:]}"
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    size = (loading.DEFAULT_MODEL_DIR / loading.WEIGHTS_FILE).stat().st_size
    record("default_model", **info, safetensors_bytes=size)
    assert info["cls"] == "GPT2LMHeadModel" and info["model_type"] == "gpt2"
    assert info["n_embd"] // info["n_head"] == 64, "head_dim must be 64, like GPT-2"
    assert info["n_positions"] == 2048, "the default model has a context of 2048"
    assert info["tok_vocab"] <= info["vocab"]
    assert info["dtypes"] == ["torch.float32"]
    assert info["roundtrip"] == "To be, or not to be"
    assert size <= MAX_WEIGHT_BYTES, f"model.safetensors is {size / 1e6:.1f} MB, more than 10 MB"


@requires_model
def test_heldout_loss_matches_training(record):
    """The loss on passages of The Tempest (never trained on) is near the recorded validation loss."""
    model, tok, _ = loading.load(device="cpu")
    text = prompts.heldout_text()
    ctx = min(1024, model.config.n_positions)
    ids = torch.tensor(tok(text, add_special_tokens=False)["input_ids"])
    starts = [int(i * (len(ids) - ctx - 1) / 3) for i in range(4)]
    losses = []
    with torch.no_grad():
        for s in starts:
            x = ids[s : s + ctx + 1][None]
            logits = model(input_ids=x[:, :-1]).logits
            losses.append(float(torch.nn.functional.cross_entropy(logits[0], x[0, 1:])))
    loss = sum(losses) / len(losses)
    recorded = _metrics()["validation_loss"]
    uniform = math.log(model.config.vocab_size)
    record("heldout_loss", loss=loss, passages=losses, recorded_validation_loss=recorded, uniform=uniform,
           display=f"task7 held-out loss {loss:.3f} (recorded validation loss {recorded:.3f}; uniform {uniform:.2f})")
    assert loss < recorded + HELDOUT_LOSS_MARGIN, (
        f"held-out loss {loss:.3f} is more than {HELDOUT_LOSS_MARGIN} above the recorded validation loss {recorded:.3f}: "
        "the weights are not the trained ones"
    )
    assert loss < uniform - 2.0, f"held-out loss {loss:.3f} is near the uniform {uniform:.2f}: untrained weights"


@requires_model
def test_reference_generates(record):
    """transformers' own path generates, greedily and deterministically, from the default prompt."""
    model, tok, _ = loading.load(device="cpu")
    prompt = prompts.make_prompts(tok, "short", 2)
    first = generation.generate(model, prompt, 12)
    again = generation.generate(model, prompt, 12)
    assert first.tokens.shape == (2, 12)
    assert torch.equal(first.tokens, again.tokens), "greedy generation is not deterministic"
    text = cli.decode_text(tok, first.tokens[0])
    record("reference_text", text=text)
    assert text.strip(), "the reference path generated only whitespace"


# ------------------------------------------------------------------ CPU: prompts
class _CharTokenizer:
    """One token per character: enough to test the prompt cutting without a model."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) % 251 for c in text]}


def test_prompts_equal_lengths():
    text = "THE PLAY\n\nACT 1\n\n" + "".join(f"SPEAKER {i}.\nLine number {i} of the play.\n\n" for i in range(300))
    tok = _CharTokenizer()
    for length, batch in (("short", 1), ("short", 4), (128, 1), (128, 4), (2000, 3)):
        p = prompts.make_prompts(tok, length, batch, text=text, prompt="Ham.\nTo be\n")
        n = len("Ham.\nTo be\n") if length == "short" else length
        assert p.shape == (batch, n)
        if batch > 1:
            assert len({tuple(r.tolist()) for r in p}) == batch, "rows of a batch must differ"
    assert prompts.prompt_lengths(("short", 128, 256, 1024, "max"), 2048, 64, 17) == ["short", 128, 256, 1024, 1984]
    assert prompts.prompt_lengths(("short", 128, 256, 1024, "max"), 1024, 64, 17) == ["short", 128, 256, 960]


# ------------------------------------------------------------------ CPU: the plumbing, tiny GPT-2, stand-in kernels
def _tiny_gpt2(seed: int, **overrides):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = dict(vocab_size=97, n_positions=64, n_embd=128, n_head=2, n_layer=2, bos_token_id=0, eos_token_id=0,
               pad_token_id=0)
    cfg.update(overrides)
    model = GPT2LMHeadModel(GPT2Config(**cfg)).eval().requires_grad_(False)
    model.set_attn_implementation(loading.REFERENCE_ATTENTION)
    return model


class _Spy:
    """Wraps stand-in kernels to see what the plumbing hands them."""

    def __init__(self):
        base = torch_stand_in()
        self.seen: dict[str, list] = {"update": [], "decode": [], "flash": []}

        def update(k_cache, v_cache, k, v, pos):
            self.seen["update"].append(dict(k_shape=tuple(k.shape), k_stride=k.stride(), contiguous=k.is_contiguous(),
                                            cache_ptr=k_cache.data_ptr(), pos=pos))
            return base.update_kv_cache(k_cache, v_cache, k, v, pos)

        def decode(q, k, v, num_heads, causal=False, seq_len=-1, num_splits=0):
            self.seen["decode"].append(dict(k_ptr=k.data_ptr(), k_shape=tuple(k.shape), k_stride=k.stride(),
                                            seq_len=seq_len, causal=causal))
            return base.decode(q, k, v, num_heads, causal, seq_len=seq_len)

        def flash(q, k, v, num_heads, causal=False):
            self.seen["flash"].append(dict(shape=tuple(q.shape), causal=causal))
            return base.flash(q, k, v, num_heads, causal)

        self.kernels = Kernels(flash=flash, update_kv_cache=update, decode=decode, label="spy")


@pytest.mark.parametrize("prompt_len", [1, 7, 33])
@pytest.mark.parametrize("batch", [1, 3])
def test_plumbing_with_stand_in(prompt_len, batch, record):
    """Tiny random GPT-2 on the CPU: the whole run_case pipeline with the stand-in, NaN beyond the valid rows."""
    model = _tiny_gpt2(prompt_len * 10 + batch, scale_attn_by_inverse_layer_idx=(batch == 3))
    spy = _Spy()
    name = register(spy.kernels, STAND_IN_NAME)
    gen = torch.Generator().manual_seed(prompt_len)
    prompt = torch.randint(1, 97, (batch, prompt_len), generator=gen)
    case = check.run_case(model, spy.kernels, name, prompt, 6, label="tiny", nan_fill=True)
    record("plumbing", **case.verdict.as_dict(), calls=case.kernel_calls)
    assert case.passed, "\n".join(case.verdict.failures)
    assert case.verdict.tokens_agree == batch * 6
    # The cache is written from strided views of GPT-2's c_attn output, and read in place.
    h = model.config.n_embd
    first = spy.seen["update"][0]
    assert first["k_shape"] == (batch, prompt_len, h) and (prompt_len == 1 or first["k_stride"][1] == 3 * h), first
    cache_ptrs = {u["cache_ptr"] for u in spy.seen["update"]}
    for d in spy.seen["decode"]:
        assert d["k_ptr"] in cache_ptrs, "the decode kernel got a copy of the cache, not the cache itself"
        assert d["k_stride"][1] == h and d["seq_len"] == d["k_shape"][1]
    assert all(f["causal"] for f in spy.seen["flash"])


def test_kernel_cache_matches_dynamic_cache():
    """KernelKVCache (stand-in update) under transformers' eager attention == the library's DynamicCache."""
    model = _tiny_gpt2(5)
    model.set_attn_implementation("eager")
    prompt = torch.randint(1, 97, (2, 9), generator=torch.Generator().manual_seed(5))
    forced = torch.randint(1, 97, (2, 5), generator=torch.Generator().manual_seed(6))
    ref = generation.teacher_forced(model, prompt, forced)
    ours = generation.teacher_forced(model, prompt, forced, cache=KernelKVCache(model.config, 14, torch_stand_in(), fill=float("nan")))
    torch.testing.assert_close(ours["prefill"], ref["prefill"], rtol=0, atol=1e-6)
    torch.testing.assert_close(ours["steps"], ref["steps"], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="positions"):
        generation.teacher_forced(model, prompt, forced, cache=KernelKVCache(model.config, 12, torch_stand_in()))
    with pytest.raises(ValueError, match="context"):
        KernelKVCache(model.config, 65, torch_stand_in())


def test_broken_kernels_are_caught():
    """A decode kernel that ignores the last cached row must fail the verdict, at decode step 1."""
    model = _tiny_gpt2(11)
    base = torch_stand_in()

    def bad_decode(q, k, v, num_heads, causal=False, seq_len=-1, num_splits=0):
        return base.decode(q, k, v, num_heads, causal, seq_len=seq_len - 1)

    kernels = Kernels(flash=base.flash, update_kv_cache=base.update_kv_cache, decode=bad_decode, label="broken")
    name = register(kernels, STAND_IN_NAME + "_broken")
    prompt = torch.randint(1, 97, (2, 10), generator=torch.Generator().manual_seed(3))
    case = check.run_case(model, kernels, name, prompt, 5, label="broken")
    assert not case.passed
    d = case.verdict.first_divergence
    assert d is not None and d["step"] == 1 and d["position"] == 10, d


# ------------------------------------------------------------------ CPU: the verdict logic, planted mismatches
def _planted(b=2, s=5, n=4, v=11, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ref64 = dict(prefill=torch.randn(b, s, v, generator=gen, dtype=torch.float64) * 3,
                 steps=torch.randn(b, n - 1, v, generator=gen, dtype=torch.float64) * 3)
    ref32 = {k: (x + 1e-6 * torch.randn(x.shape, generator=gen, dtype=torch.float64)).float() for k, x in ref64.items()}
    custom = {k: x.clone() for k, x in ref32.items()}
    tokens = torch.cat([ref64["prefill"][:, -1:], ref64["steps"]], 1).argmax(-1)
    return custom, ref32, ref64, tokens


def test_verdict_clean():
    custom, ref32, ref64, tokens = _planted()
    v = verdict.judge(custom, ref32, ref64, tokens.clone(), tokens)
    assert v.passed and v.first_divergence is None and v.tokens_agree == v.tokens_total == 8


def test_verdict_planted_decode_error():
    custom, ref32, ref64, tokens = _planted()
    custom["steps"][1, 1, 3] += 0.5  # decode step 2, sequence 1
    custom["steps"][0, 2, 0] += 0.5  # a later one
    v = verdict.judge(custom, ref32, ref64, tokens.clone(), tokens)
    assert not v.passed
    assert v.first_divergence == dict(kind="logits", step=2, sequence=1, position=5 + 1, error=pytest.approx(0.5, rel=1e-3),
                                      allowed=v.steps.allowed)
    assert "decode step 2" in v.failures[0] and "sequence 1" in v.failures[0]


def test_verdict_planted_prefill_error():
    custom, ref32, ref64, tokens = _planted()
    custom["prefill"][0, 3, 7] -= 0.1
    v = verdict.judge(custom, ref32, ref64, tokens.clone(), tokens)
    assert not v.passed and v.first_divergence["step"] == 0 and v.first_divergence["position"] == 3
    assert v.first_divergence["sequence"] == 0 and v.steps.passed


def test_verdict_planted_nan():
    custom, ref32, ref64, tokens = _planted()
    custom["steps"][1, 0, 0] = float("nan")
    v = verdict.judge(custom, ref32, ref64, tokens.clone(), tokens)
    assert not v.passed and v.first_divergence["step"] == 1 and v.first_divergence["sequence"] == 1


def test_verdict_planted_token_mismatch():
    custom, ref32, ref64, tokens = _planted()
    ours = tokens.clone()
    ours[0, 2] = (ours[0, 2] + 1) % 11
    v = verdict.judge(custom, ref32, ref64, ours, tokens)
    assert not v.passed and v.first_divergence == dict(kind="tokens", step=2, sequence=0, position=5 + 1)
    assert v.tokens_agree == 7


def test_verdict_tie_is_not_a_failure():
    custom, ref32, ref64, tokens = _planted()
    row, t = 1, 2  # decode step 2 of sequence 1: make its two best tokens tie within rounding
    logits = ref64["steps"][row, t - 1]
    best, second = logits.topk(2).indices.tolist()
    logits[second] = logits[best] - 1e-9
    ref32["steps"][row, t - 1, second] = float(logits[second])
    custom["steps"][row, t - 1, second] = float(logits[second])
    ours = tokens.clone()
    ours[row, t] = second
    ours[row, t + 1 :] = (ours[row, t + 1 :] + 3) % 11  # after the tie the sequences go their own ways
    v = verdict.judge(custom, ref32, ref64, ours, tokens)
    assert v.passed, v.failures
    assert v.notes and "tie" in v.notes[0] and f"sequence {row}" in v.notes[0]


# ------------------------------------------------------------------ CPU: messages
def test_missing_model_messages():
    with pytest.raises(loading.ModelNotFound, match="offline default"):
        loading.load("/nonexistent/folder/for/task7")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=_pythonpath())
    proc = subprocess.run([sys.executable, "-m", "task7.inference_ref", "--model", "nobody-here/not-a-gpt2"],
                          capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "offline default" in proc.stderr and "task7/model" in proc.stderr, proc.stderr


# ------------------------------------------------------------------ GPU: the verdict (graded)
# The reference path, its float64 copy and the verdict run here; the kernels path runs where the
# student's kernels run (in the grader: the worker, through on_worker), and comes back as data.
_reference: dict = {}


def _reference_model() -> dict:
    if not _reference:
        model, tok, what = loading.load(device="cuda")
        model.set_attn_implementation(loading.REFERENCE_ATTENTION)
        _reference.update(model=model, tok=tok, what=what, model64=copy.deepcopy(model).to(torch.float64))
    return _reference


def _kernels_case(prompt: torch.Tensor, forced: torch.Tensor) -> dict:
    """check.kernels_case where the kernels run, its answer checked for shape before it is judged."""
    from harness.build import BuildError
    from harness.remote import RemoteError

    try:
        got = on_worker(check.kernels_case)(prompt, generation.NEW_TOKENS, forced)
    except BuildError as err:  # a student's run: the build failed in this process
        raise CheckFailed(f"the extension '{err.name}' did not build:\n{err.log[-4000:]}") from err
    except RemoteError as err:  # the grader: the worker's BuildError comes back as its message
        if not str(err).startswith("BuildError"):
            raise
        raise CheckFailed(f"the kernels did not build in the worker:\n{str(err)[-4000:]}") from err
    b, s = prompt.shape
    n = generation.NEW_TOKENS
    shapes = dict(tokens=(b, n), prefill=(b, s, None), steps=(b, n - 1, None))
    found = {k: got.get(k) if k == "tokens" else got.get("tf", {}).get(k) for k in shapes}
    for k, want in shapes.items():
        t = found[k]
        if not isinstance(t, torch.Tensor) or t.dim() != len(want) or any(w is not None and w != g for w, g in
                                                                         zip(want, t.shape)):
            raise CheckFailed(f"the kernels path returned {k} of shape {getattr(t, 'shape', type(t).__name__)}, "
                              f"expected {tuple('V' if w is None else w for w in want)}")
    return got


@requires_cuda
@requires_model
@pytest.mark.gpu
@pytest.mark.parametrize("batch", prompts.BATCH_SIZES, ids=lambda b: f"B{b}")
@pytest.mark.parametrize("length", prompts.PROMPT_LENGTHS, ids=lambda x: f"prompt-{x}")
def test_verdict(length, batch, record):
    r = _reference_model()
    model, tok = r["model"], r["tok"]
    short_len = len(tok(prompts.DEFAULT_PROMPT, add_special_tokens=False)["input_ids"])
    (resolved,) = prompts.prompt_lengths([length], model.config.n_positions, generation.NEW_TOKENS, short_len)
    prompt = prompts.make_prompts(tok, resolved, batch).cuda()
    label = f"{prompts.describe_prompt_len(resolved)}, batch {batch}"
    ref, ref_tf, ref64_tf = check.reference_run(model, prompt, generation.NEW_TOKENS, r["model64"])
    got = _kernels_case(prompt, ref.tokens)
    prompt_len = prompt.shape[1]  # resolved may be a name ("short")
    custom = generation.Generation(got["tokens"], got["prefill_s"], got["decode_s"], batch, prompt_len)
    v = check.verdict_of(got["tf"], ref_tf, ref64_tf, custom.tokens, ref.tokens, got["calls"],
                         model.config.n_layer, generation.NEW_TOKENS)
    record("verdict", **v.as_dict(), case=label, batch=batch, prompt_len=prompt_len,
           new_tokens=generation.NEW_TOKENS, kernel_calls=got["calls"],
           display=f"task7 {label}: {'agree' if v.passed else 'DIFFER'}; greedy tokens {v.tokens_agree}/{v.tokens_total}; "
           f"logits error/allowed prefill {v.prefill.max_abs_error / v.prefill.allowed:.3f}, "
           f"decode {v.steps.max_abs_error / v.steps.allowed:.3f}")
    record("tokens_per_s", case=label, prefill_reference=ref.prefill_tokens_per_s,
           prefill_yours=custom.prefill_tokens_per_s, decode_reference=ref.decode_tokens_per_s,
           decode_yours=custom.decode_tokens_per_s,
           display=f"task7 {label}: tokens/s prefill {custom.prefill_tokens_per_s:,.0f} "
           f"(reference {ref.prefill_tokens_per_s:,.0f}), decode {custom.decode_tokens_per_s:,.0f} "
           f"(reference {ref.decode_tokens_per_s:,.0f})")
    if not v.passed:
        raise CheckFailed(f"GPT-2 with your kernels differs from transformers' attention ({label}):\n"
                          + "\n".join(v.failures))


if __name__ == "__main__":
    from harness.testmain import main

    raise SystemExit(main(__file__, "Task 7: GPT-2 with your kernels against transformers' own attention."))
