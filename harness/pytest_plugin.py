"""The kit's pytest plugin (loaded by the root ``conftest.py``).

* The header says which implementation is tested, the run's seed and the device.
* An unimplemented stub gives one line, ``not implemented yet: ...``, not a traceback;
  a failed harness check gives its explanation, not a traceback.
* The ``record`` fixture attaches measurements (errors, times, speedups) to the
  test: they go into pytest's ``user_properties`` and, when pytest-json-report
  is active, into each test's ``metadata["measurements"]`` of the JSON report,
  which is what the grader reads. A ``display`` line is also shown at the end of
  the run under "Measurements" (the lines students copy into Results.md).
"""
from __future__ import annotations

import json
import math

import pytest

from . import device as _device
from .shared_checks import NOT_IMPLEMENTED_PREFIX
from .compare import CheckFailed
from . import remote, rules
from .impl import IMPL_ENV, describe_impl_root, impl_root
from .tasks import TIMED_MARK, editable_files
from .inputs import SEED_ENV, run_seed

_DISPLAY_KEY = pytest.StashKey[list]()


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "as_dict"):
        return _jsonable(value.as_dict())
    return str(value)


def pytest_configure(config: pytest.Config) -> None:
    run_seed()  # fix the seed before any test draws inputs
    if not remote.is_judge():  # a student's run: the rules are checked in this process
        rules.install(str(impl_root() / rel) for rel in editable_files())
    config.addinivalue_line("markers", f"{TIMED_MARK}: a timed measurement (slow; the grader scores it)")
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU")
    config.addinivalue_line("markers", f"{PROOF_MARK}: a slow end-to-end proof ({PROOFS}); left out unless the -m "
                            f"expression names it: pytest -m {PROOF_MARK}")
    config.stash[_DISPLAY_KEY] = []
    if config.pluginmanager.hasplugin("json-report") or config.pluginmanager.hasplugin(
        "pytest_jsonreport"
    ):
        config.pluginmanager.register(_JsonReportBridge(), "attn-kit-json-bridge")


#: The marker of the slow end-to-end proofs, which a plain ``pytest`` leaves out (with a line
#: saying so) so the staff's check on a GPU node stays short; CI and the GPU script run them
#: with ``pytest -m proof``.
PROOF_MARK = "proof"
#: What the proofs are, for the line that says they were left out.
PROOFS = ("the release handout, the grader's gradings of submissions honest, broken and hostile, every GPU "
          "task graded")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if PROOF_MARK in (config.getoption("markexpr", "") or ""):
        return
    proofs = [i for i in items if i.get_closest_marker(PROOF_MARK)]
    if proofs:
        items[:] = [i for i in items if not i.get_closest_marker(PROOF_MARK)]
        config.hook.pytest_deselected(items=proofs)
        config.stash[_PROOFS_LEFT_OUT] = len(proofs)


_PROOFS_LEFT_OUT = pytest.StashKey[int]()


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        f"attention kit: implementations from {describe_impl_root()} (set {IMPL_ENV} to change)",
        f"attention kit: seed {run_seed()} (set {SEED_ENV}={run_seed()} to replay this run)",
        f"attention kit: device {_device.device_name()}",
    ]


def pytest_unconfigure(config: pytest.Config) -> None:
    remote.shutdown()  # the judge's worker, and every process it left, end with the run


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """A student's run: a check whose code called a forbidden function fails, naming it."""
    rules.take_violations()
    outcome = yield
    found = rules.take_violations()
    if found and outcome.excinfo is None:
        outcome.force_exception(CheckFailed(rules.violation_message(found)))


def _is_not_implemented(exc: BaseException) -> bool:
    if isinstance(exc, NotImplementedError):
        return True
    return isinstance(exc, RuntimeError) and NOT_IMPLEMENTED_PREFIX in str(exc).lower()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    if NOT_IMPLEMENTED_PREFIX not in line.lower():
        line = f"{NOT_IMPLEMENTED_PREFIX}: {line}"
    return line


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is None or report.passed or report.skipped:
        return
    exc = call.excinfo.value
    if _is_not_implemented(exc):
        report.longrepr = _first_line(exc)
        report.user_properties.append(("not_implemented", True))
    elif isinstance(exc, CheckFailed):
        report.longrepr = str(exc)


def _not_implemented(report) -> bool:
    return report.failed and ("not_implemented", True) in getattr(report, "user_properties", [])


def pytest_report_teststatus(report, config):
    """Count unimplemented checks on their own ("24 not implemented"), out of the FAILURES wall.

    They still fail: the exit status and the JSON report's outcome say "failed".
    """
    if _not_implemented(report):
        return "not implemented", "N", "NOT IMPLEMENTED"
    return None


@pytest.fixture
def record(request: pytest.FixtureRequest):
    """``record(name, display=None, **values)``: attach a measurement to this test."""

    def _record(name: str, display: str | None = None, **values) -> None:
        request.node.user_properties.append((name, _jsonable(values)))
        if display:
            request.config.stash[_DISPLAY_KEY].append(display)

    return _record


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    pending = terminalreporter.stats.get("not implemented", [])
    if pending:
        terminalreporter.section("Not implemented yet")
        counts: dict[str, int] = {}
        for rep in pending:
            counts[str(rep.longrepr)] = counts.get(str(rep.longrepr), 0) + 1
        for message, n in counts.items():
            terminalreporter.write_line(f"{n} check(s): {message}")
    lines = config.stash.get(_DISPLAY_KEY, [])
    if lines:
        terminalreporter.section("Measurements")
        for line in lines:
            terminalreporter.write_line(line)
    left_out = config.stash.get(_PROOFS_LEFT_OUT, 0)
    if left_out:
        terminalreporter.write_line(f"{left_out} slow end-to-end proof(s) left out ({PROOFS}): run them with "
                                    f"pytest -m {PROOF_MARK}")


class _JsonReportBridge:
    """Copies ``record`` measurements into pytest-json-report's per-test metadata."""

    @pytest.hookimpl(optionalhook=True)
    def pytest_json_modifyreport(self, json_report):
        """In the judge: how the worker said it was contained, for the grader's reports."""
        if remote.is_judge():
            json_report["attn_kit"] = {"worker": remote.worker_report()}

    @pytest.hookimpl(optionalhook=True)
    def pytest_json_runtest_metadata(self, item: pytest.Item, call: pytest.CallInfo):
        if call.when != "call":
            return {}
        measurements: dict = {}
        for name, value in item.user_properties:
            if name in measurements:  # a name recorded several times keeps every value, in order
                prev = measurements[name]
                measurements[name] = (prev if isinstance(prev, list) else [prev]) + [value]
            else:
                measurements[name] = value
        return {"measurements": json.loads(json.dumps(_jsonable(measurements)))}
