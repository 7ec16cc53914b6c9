"""Reads the numbers a student reported in ``Results.md``.

The file is Markdown: a ``## Task N`` heading per task, each with a table whose
first column is a fixed row label (see the template at the repository root) and
a fenced text block for task 7. The grader compares these numbers with its own
measurements; it never trusts them.

Files written for the original assignment are read too: a heading of any level
(``# Task 4``, ``### Task 4: ...``), rows as ``label: numbers`` lines (bullets
allowed) as well as tables, and labels spelled another way (``B=4 S=128
causal=False`` is the row ``B=4, S=128, non-causal``): :func:`row_key` is what
two labels must share to be the same row.
"""
from __future__ import annotations

import re
from pathlib import Path

_HEADING = re.compile(r"^#{1,6}\s*Task\s*(\d+)\b", re.IGNORECASE)
#: ``label: 1.23x`` (a bullet in front allowed): a row written as a line, not a table.
_LINE_ROW = re.compile(r"^(?:[-*+]\s+)?(?P<label>[^:|]*[A-Za-z][^:|]*?)\s*[:=]\s*(?P<value>[-+.\d][^|]*)$")
_BATCH = re.compile(r"\bb(?:atch)?\s*[=:]?\s*(\d+)")
_SEQ = re.compile(r"\bs(?:eq(?:uence)?(?:_len|\s*len(?:gth)?)?)?\s*[=:]?\s*(\d+)")
_NON_CAUSAL = re.compile(r"non[-_ ]?causal|not causal|causal\s*[=:]?\s*(?:false|no|0|off)\b|\bfull\b")


def row_key(label: str) -> str:
    """What a row label means, however it is spelled: ``b4-s128-causal``, ``ttft``, ``tbt``,
    or else the label in lower case with runs of spaces and punctuation made one space."""
    text = label.lower().replace("`", "").replace("*", "")
    batch, seq = _BATCH.search(text), _SEQ.search(text)
    if batch and seq:
        return f"b{batch.group(1)}-s{seq.group(1)}-{'noncausal' if _NON_CAUSAL.search(text) else 'causal' if 'causal' in text else ''}"
    for metric in ("ttft", "tbt"):
        if re.search(rf"\b{metric}\b", text):
            return metric
    return " ".join(re.split(r"[\W_]+", text)).strip()
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
            continue
        written = _LINE_ROW.match(line)
        if written:  # the original assignment's "B=4, S=128, causal: 1.2x" style
            current["rows"][written.group("label").strip()] = [written.group("value").strip()]
    return sections


def reported_numbers(source: str | Path) -> dict[str, dict[str, list[float | None]]]:
    """Every row of every task as numbers, keyed by :func:`row_key`: ``{"task4": {"b4-s128-causal": [..]}}``.

    ``source`` is the file's text, or (for the kit's own Results.md) its path.
    """
    if isinstance(source, Path):
        if not source.exists():
            return {}
        source = source.read_text(errors="replace")
    return {
        task: {row_key(label): [parse_number(c) for c in cells] for label, cells in sec["rows"].items()}
        for task, sec in parse(source).items()
    }
