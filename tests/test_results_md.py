"""Results.md: the template parses, and invented numbers are flagged, never trusted."""
from grader.results_check import check_results_md
from grader.scoring import Case
from harness.results_md import parse_number, reported_numbers, row_key
from harness.tasks import REPO_ROOT


def test_template_has_every_row_empty():
    rows = reported_numbers(REPO_ROOT / "Results.md")
    assert set(rows["task4"]) >= {"b4-s128-noncausal", "b64-s4096-causal"}
    assert rows["task5"]["tbt"] == [None]
    assert rows["task6"]["tbt"] == [None] and rows["task6"]["ttft"] == [None]


def test_row_labels_spelled_another_way_are_the_same_row():
    ours = row_key("B=4, S=128, non-causal")
    for other in ("B=4 S=128 causal=False", "b = 4, s = 128, Non-Causal", "batch 4, seq_len 128, causal: no",
                  "**B=4, S=128 (not causal)**"):
        assert row_key(other) == ours, other
    assert row_key("B=4, S=128, causal") == row_key("B=4, S=128, causal=True") != ours
    assert row_key("TBT speedup") == row_key("average decode step (TBT)") == "tbt"


#: A Results.md as a student of the original assignment writes it: other headings, and each
#: number on a line of its own instead of in our tables.
PUBLISHED_STYLE = """# Results

### Task 4
- B=4, S=128, causal=False: 2.2x
- B=4, S=128, causal=True: 9.0x

### Task 5
TTFT speedup: 1.1
TBT speedup: 150

# Task 7
```
Once upon a time
```
"""


def test_a_results_md_in_the_original_style_is_read():
    rows = reported_numbers(PUBLISHED_STYLE)
    assert rows["task4"]["b4-s128-noncausal"] == [2.2] and rows["task5"]["tbt"] == [150.0]
    cases = {"task4": [_case("B=4, S=128, non-causal", [1.1, 0.5, 2.2]), _case("B=4, S=128, causal", [2.1, 1.0, 2.1])],
             "task5": [_case("TBT", [151.2], table="task5")]}
    flags, _ = check_results_md(PUBLISHED_STYLE, cases, factor=2.0)
    # The one speedup asked for is compared with ours (the honest one passes, 9.0 vs 2.1 is
    # flagged); the times the original never asked for are not "empty".
    assert flags == ["Results.md: task4 row 'B=4, S=128, causal' column 3 reports 9 but the grader measured "
                     "2.1 (more than 2x apart); flagged, not trusted"], flags


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


def test_a_table_row_wins_over_a_line_that_reuses_its_label():
    text = ("## Task 5\n\n| metric | speedup |\n| --- | --- |\n| TTFT | 2.0 |\n| TBT | 3.0 |\n\n"
            "TTFT measured with prompt 1024: 1024 tokens\nTBT (ms): 0.52\n")
    rows = reported_numbers(text)["task5"]
    assert rows["ttft"] == [2.0] and rows["tbt"] == [3.0], rows


def test_a_huge_line_costs_linear_time():
    """Results.md comes from the student and is read in the grader's own process."""
    import time

    text = "## Task 4\n" + "a" * 2_000_000 + "\n| B=4, S=128, causal | 1 | 2 | " + "9" * 1_000_000 + " |\n"
    start = time.perf_counter()
    reported_numbers(text)
    assert time.perf_counter() - start < 2.0
