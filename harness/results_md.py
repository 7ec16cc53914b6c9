"""Reads the numbers a student reported in ``Results.md``.

The file is Markdown: a ``## Task N`` heading per task, each with a table whose
first column is a fixed row label (see the template at the repository root) and
a fenced text block for task 7. The grader compares these numbers with its own
measurements; it never trusts them.
"""
from __future__ import annotations

import re
from pathlib import Path

_HEADING = re.compile(r"^##\s+Task\s+(\d+)\b", re.IGNORECASE)
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def parse_number(cell: str) -> float | None:
    """``"3.2x"``, ``"12.5 ms"``, ``"1,234"`` -> a float; an empty or odd cell -> None."""
    match = _NUMBER.search(cell.replace(",", ""))
    return float(match.group()) if match else None


def parse(text: str) -> dict[str, dict]:
    """``{"task4": {"rows": {label: [cells...]}, "text": "..."}, ...}``."""
    sections: dict[str, dict] = {}
    current: dict | None = None
    in_fence = False
    fence_lines: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        heading = _HEADING.match(line)
        if heading and not in_fence:
            current = sections.setdefault(f"task{heading.group(1)}", {"rows": {}, "text": ""})
            continue
        if current is None:
            continue
        if line.startswith("```"):
            if in_fence:
                current["text"] = "\n".join(fence_lines).strip()
                fence_lines = []
            in_fence = not in_fence
            continue
        if in_fence:
            fence_lines.append(raw)
            continue
        if line.startswith("|") and line.endswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not cells or set(cells[0]) <= set("-: "):
                continue
            current["rows"][cells[0]] = cells[1:]
    return sections


def reported_numbers(source: str | Path) -> dict[str, dict[str, list[float | None]]]:
    """Every table row of every task as numbers: ``{"task4": {"B=4, S=128, causal": [..]}}``.

    ``source`` is the file's text, or (for the kit's own Results.md) its path.
    """
    if isinstance(source, Path):
        if not source.exists():
            return {}
        source = source.read_text(errors="replace")
    return {
        task: {label: [parse_number(c) for c in cells] for label, cells in sec["rows"].items()}
        for task, sec in parse(source).items()
    }
