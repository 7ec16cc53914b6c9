"""Results.md: the template parses, and invented numbers are flagged, never trusted."""
from grader.results_check import check_results_md
from grader.scoring import Case
from harness.results_md import parse_number, reported_numbers
from harness.tasks import REPO_ROOT


def test_template_has_every_row_empty():
    rows = reported_numbers(REPO_ROOT / "Results.md")
    assert set(rows["task4"]) >= {"B=4, S=128, non-causal", "B=64, S=4096, causal"}
    assert rows["task5"]["TBT"] == [None]
    assert rows["task6"]["average decode step (TBT)"] == [None]


def test_parse_number():
    assert parse_number("3.2x") == 3.2 and parse_number(" 12.5 ms ") == 12.5 and parse_number("") is None


def _case(row, values, table="task4"):
    return Case("task4/test.py::test_speedup_vs_mha[x]", "test_speedup_vs_mha", "passed", "",
                {"results_md": [dict(table=table, row=row, values=values)]})


def test_invented_numbers_are_flagged(tmp_path):
    text = (REPO_ROOT / "Results.md").read_text().replace(
        "| B=4, S=128, non-causal | | | |", "| B=4, S=128, non-causal | 1.0 | 0.01 | 99x |").replace(
        "| B=4, S=128, causal | | | |", "| B=4, S=128, causal | 2.0 | 1.0 | 2.0 |")
    path = tmp_path / "Results.md"
    path.write_text(text)
    cases = {"task4": [_case("B=4, S=128, non-causal", [1.1, 0.5, 2.2]), _case("B=4, S=128, causal", [2.1, 1.0, 2.1])]}
    flags, table = check_results_md(path.read_text(), cases, factor=2.0)
    assert any("reports 99" in f and "measured 2.2" in f for f in flags)
    assert not any("'B=4, S=128, causal'" in f for f in flags)  # honest numbers pass
    assert len(table) == 6
