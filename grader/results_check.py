"""Compares the numbers a student wrote in Results.md with the ones the grader measured.

Tests record what belongs in Results.md as measurements named ``results_md``
(``table``: the task, ``row``: the row label, ``values``: the row's numbers in
column order). A reported number is never trusted: one missing, or off by more
than the rubric's factor, is flagged.
"""
from __future__ import annotations

from harness.results_md import reported_numbers, row_key

from .scoring import Case


def measured_rows(cases: list[Case]) -> dict[tuple[str, str], list[float]]:
    rows = {}
    for case in cases:
        recorded = case.measurements.get("results_md")
        for m in recorded if isinstance(recorded, list) else [recorded]:
            if isinstance(m, dict) and "row" in m and "values" in m:
                rows[(m.get("table", ""), m["row"])] = m["values"]
    return rows


def check_results_md(text: str, cases_by_task: dict[str, list[Case]], factor: float) -> tuple[list[str], list[dict]]:
    """Flags, and a comparison table (task, row, column, reported, measured)."""
    reported = reported_numbers(text)
    flags, table = [], []
    for task, cases in cases_by_task.items():
        for (table_name, row), values in measured_rows(cases).items():
            got = reported.get(table_name or task, {}).get(row_key(row))
            asked = range(len(values))
            if got and len(got) == 1 and len(values) > 1:
                # One number where our row has several: the original assignment asked only
                # for the speedup, which is our last column; the others are not asked for.
                got, asked = [None] * (len(values) - 1) + got, range(len(values) - 1, len(values))
            for col, measured in enumerate(values):
                rep = got[col] if got and col < len(got) else None
                table.append(dict(task=task, row=row, column=col, reported=rep, measured=measured))
                if col not in asked or not isinstance(measured, (int, float)) or measured <= 0:
                    continue
                if rep is None:
                    flags.append(f"Results.md: {task} row '{row}' column {col + 1} is empty (measured {measured:.4g})")
                elif rep <= 0 or max(rep / measured, measured / rep) > factor:
                    flags.append(
                        f"Results.md: {task} row '{row}' column {col + 1} reports {rep:.4g} but the grader "
                        f"measured {measured:.4g} (more than {factor:g}x apart); flagged, not trusted"
                    )
    return flags, table
