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
