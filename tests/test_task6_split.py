"""Task 6 as the grader runs it, on the CPU: the reference model in the judge, the student's in
the worker, the same weights drawn by name from one seed, and the decode steps timed side by side.

The student's file here is a stand-in whose ``forward`` is the provided plain-PyTorch path, so
the two models must agree; the GPU test (task6/test.py) runs the same calls on the real kernels.
"""
from __future__ import annotations

import textwrap

import torch

from harness import remote
from harness.inputs import seed_for
from harness.tasks import REPO_ROOT
from harness.timing import bind_tail, compare_steps
from task6.transformer import ReferenceAttention, model_step, run_model, seeded_model

STAND_IN = '''
from task6.transformer import AttentionBase, customModel  # noqa: F401

class customAttention(AttentionBase):
    def forward(self, x, kv_cache=None, decode=False, current_pos=0):
        return self.torch_forward(x, kv_cache, current_pos)
'''
HIDDEN, HEADS, LAYERS, VOCAB, PROMPT, STEPS = 64, 4, 2, 100, 7, 4


def test_task6_reference_in_the_judge_model_in_the_worker(tmp_path, monkeypatch):
    impl = tmp_path / "worker" / "submission"
    (impl / "task6").mkdir(parents=True)
    (impl / "task6" / "model.py").write_text(textwrap.dedent(STAND_IN))
    client = remote.Client(tmp_path / "worker", impl, REPO_ROOT)
    monkeypatch.setattr(remote, "_client", client)
    monkeypatch.setenv(remote.ROLE_ENV, remote.JUDGE)
    try:
        seed, length = seed_for("tests/task6-split"), PROMPT + STEPS
        yours = remote.on_worker(seeded_model)(HIDDEN, HEADS, LAYERS, VOCAB, length, seed, "cpu")
        assert remote.is_remote(yours)
        ref = seeded_model(HIDDEN, HEADS, LAYERS, VOCAB, length, seed, "cpu", attention_cls=ReferenceAttention)
        prompt = torch.randint(0, VOCAB, (2, PROMPT), generator=torch.Generator().manual_seed(1))
        want = run_model(ref, "torch", prompt, STEPS)
        got = remote.on_worker(run_model)(yours, "custom", prompt, STEPS, forced=want["tokens"])
        for part in ("prefill", "steps"):
            assert torch.allclose(got[part], want[part], rtol=1e-5, atol=1e-5), part
        assert torch.equal(got["tokens"], want["tokens"])

        caches = [remote.kept(yours.new_kv_cache, 2, length) for _ in range(2)]
        for cache, backend in zip(caches, ("custom", "torch")):
            remote.kept(remote.on_worker(model_step), prompt, cache, 0, yours, backend)
        own_cache = ref.new_kv_cache(2, length)
        model_step(prompt, own_cache, 0, ref, "torch")
        tokens = [want["tokens"][:, t : t + 1] for t in range(STEPS)]
        cmp = compare_steps(
            remote.bound(model_step, yours, "custom"), remote.bound(model_step, yours, "torch"),
            [(tok, caches[0], PROMPT + t) for t, tok in enumerate(tokens)],
            baseline_steps=[(tok, caches[1], PROMPT + t) for t, tok in enumerate(tokens)],
            judge_baseline=(bind_tail(model_step, ref, "torch"), [(tok, own_cache, PROMPT + t) for t, tok in enumerate(tokens)]),
        )
        assert cmp.candidate.reps == STEPS and cmp.distrust == [], cmp.distrust
    finally:
        client.close()


COPYING_STAND_IN = '''
from task6.transformer import AttentionBase, customModel  # noqa: F401

class customAttention(AttentionBase):
    def forward(self, x, kv_cache=None, decode=False, current_pos=0):
        q, k, v = self.project(x, current_pos)
        kv_cache[0][:, current_pos:current_pos + x.shape[1]] = k
        kv_cache[1][:, current_pos:current_pos + x.shape[1]] = v
        if decode:  # what task 6 asks not to do: a contiguous copy of the cache's valid rows
            kv_cache[0][:, :current_pos + 1].contiguous()
        return self.out(q.contiguous())
'''
NO_ATTENTION_STAND_IN = '''
from task6.transformer import AttentionBase, customModel  # noqa: F401

class customAttention(AttentionBase):
    def forward(self, x, kv_cache=None, decode=False, current_pos=0):
        q, k, v = self.project(x, current_pos)
        kv_cache[0][:, current_pos:current_pos + x.shape[1]] = k  # the new rows only: no copy of the cache
        kv_cache[1][:, current_pos:current_pos + x.shape[1]] = v
        return self.out(q.contiguous())
'''


def test_the_decode_step_s_copies_are_recorded_where_the_model_runs(tmp_path, monkeypatch):
    """task6/test.py's in-place check, on the CPU through a worker (its GPU test runs the same
    helper on the real kernels): a layer that makes cache[:, :L] contiguous at a decode step shows a
    copy of the cache's size; one that touches only the new rows shows none that large."""
    from task6.workload import decode_step_copies

    monkeypatch.setenv(remote.ROLE_ENV, remote.JUDGE)
    batch, prompt_len, rows = 2, 300, None
    spare = 8  # rows past the ones the step reads: a slice of the valid rows is then a strided view
    sizes = {}
    for name, source in (("copying", COPYING_STAND_IN), ("no attention", NO_ATTENTION_STAND_IN)):
        impl = tmp_path / name / "worker" / "submission"
        (impl / "task6").mkdir(parents=True)
        (impl / "task6" / "model.py").write_text(textwrap.dedent(source))
        client = remote.Client(tmp_path / name / "worker", impl, REPO_ROOT)
        monkeypatch.setattr(remote, "_client", client)
        try:
            model = remote.on_worker(seeded_model)(HIDDEN, HEADS, LAYERS, VOCAB, prompt_len + spare,
                                                   seed_for("t6-copy"), "cpu")
            cache = remote.kept(model.new_kv_cache, batch, prompt_len + spare)
            prompt = torch.randint(0, VOCAB, (batch, prompt_len), generator=torch.Generator().manual_seed(2))
            remote.kept(remote.on_worker(model_step), prompt, cache, 0, model, "custom")
            copies = remote.on_worker(decode_step_copies)(prompt[:, -1:], cache, prompt_len, model)
        finally:
            client.close()
        rows = batch * (prompt_len + 1) * HIDDEN
        sizes[name] = max((int(n) for _, n in copies), default=0)
    assert sizes["copying"] >= rows, sizes  # the contiguous copy of one layer's k rows
    assert sizes["no attention"] < rows / 8, sizes
