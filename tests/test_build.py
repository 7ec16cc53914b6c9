"""The build helper reports a compile error in full and exits non-zero."""
import shutil
import signal

import pytest
import torch

from harness import build

needs_cuda_toolkit = pytest.mark.skipif(
    torch.version.cuda is None or shutil.which("nvcc") is None,
    reason="needs nvcc and a CUDA build of PyTorch to compile extensions",
)

#: Seconds a failing build may take here before the test calls it a hang.
STALE_LOCK_LIMIT_S = 600

BROKEN_KERNEL = r"""
#include <torch/extension.h>
__global__ void broken(float* out) {
    out[threadIdx.x] = undeclared_variable;   // the error the test expects to see
}
torch::Tensor run(torch::Tensor x) { return x; }
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("run", &run); }
"""


@needs_cuda_toolkit
def test_compile_error_is_surfaced_and_fails_the_command(tmp_path, monkeypatch, capsys):
    (tmp_path / "task2").mkdir()
    (tmp_path / "task2" / "attention_kernel.cu").write_text(BROKEN_KERNEL)
    monkeypatch.setenv("ATTN_KIT_IMPL", str(tmp_path))
    monkeypatch.setenv("ATTN_KIT_BUILD_DIR", str(tmp_path / "build"))
    monkeypatch.setenv("ATTN_KIT_CUDA_ARCH", "9.0")  # one architecture keeps the test quick
    # A lock file left by a killed build must not make this build wait forever.
    src = tmp_path / "task2" / "attention_kernel.cu"
    stale = build._build_dir("custom_self_attention", [src], "9.0", "task2") / "lock"
    stale.write_text("")
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("the build hung on a stale lock file"))
    signal.alarm(STALE_LOCK_LIMIT_S)
    try:
        status = build.compile_main("task2", [])
    finally:
        signal.alarm(0)
    err = capsys.readouterr().err
    assert status != 0
    assert "undeclared_variable" in err and "FAILED" in err


def test_missing_source_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTN_KIT_IMPL", str(tmp_path))
    from harness.impl import MissingSubmissionFile, source_path

    with pytest.raises(MissingSubmissionFile, match="task4/attention_kernel.cu is missing"):
        source_path("task4/attention_kernel.cu")


def test_fallback_architectures_without_gpu(monkeypatch):
    monkeypatch.delenv("ATTN_KIT_CUDA_ARCH", raising=False)
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        assert build.target_archs() == f"{major}.{minor}"
    else:
        assert {"8.0", "9.0"} <= set(build.target_archs().split(";"))
