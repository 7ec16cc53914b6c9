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
#: A row written as a line, not a table: ``label: 1.23x`` (a bullet in front allowed), split at
#: the first ``:`` or ``=`` (no regex over the whole line: a long line must cost linear time).
_LINE_VALUE = re.compile(r"[-+.\d]")
#: Longer lines are prose, never a row (and are not searched).
MAX_ROW_LINE = 200
_BATCH = re.compile(r"\bb(?:atch)?\s*[=:]?\s*(\d+)")
_SEQ = re.compile(r"\bs(?:eq(?:uence)?(?:_len|\s*len(?:gth)?)?)?\s*[=:]?\s*(\d+)")
_NON_CAUSAL = re.compile(r"non[-_ ]?causal|not causal|causal\s*[=:]?\s*(?:false|no|0|off)\b|\bfull\b")


def row_key(label: str) -> str:
    """What a row label means, however it is spelled: ``b4-s128-causal``, ``ttft``, ``tbt``,
    or else the label in lower case with runs of spaces and punctuation made one space."""
    text = label[:MAX_ROW_LINE].lower().replace("`", "").replace("*", "")
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
    match = _NUMBER.search(cell[:MAX_ROW_LINE].replace(",", ""))
    return float(match.group()) if match else None


def parse(text: str) -> dict[str, dict]:
    """``{"task4": {"rows": {label: [cells...]}, "lines": {label: [cell]}, "text": "..."}, ...}``:
    table rows, rows written as ``label: value`` lines, and task 7's fenced text. The first row
    of a label is kept (a later line that happens to reuse it is prose)."""
    sections: dict[str, dict] = {}
    current: dict | None = None
    in_fence = False
    fence_lines: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        heading = _HEADING.match(line)
        if heading and not in_fence:
            current = sections.setdefault(f"task{heading.group(1)}", {"rows": {}, "lines": {}, "text": ""})
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
            current["rows"].setdefault(cells[0], cells[1:])
            continue
        written = _line_row(line)
        if written:  # the original assignment's "B=4, S=128, causal: 1.2x" style
            current["lines"].setdefault(*written)
    return sections


def reported_numbers(source: str | Path) -> dict[str, dict[str, list[float | None]]]:
    """Every row of every task as numbers, keyed by :func:`row_key`: ``{"task4": {"b4-s128-causal": [..]}}``.

    ``source`` is the file's text, or (for the kit's own Results.md) its path.
    """
    if isinstance(source, Path):
        if not source.exists():
            return {}
        source = source.read_text(errors="replace")
    out: dict[str, dict[str, list[float | None]]] = {}
    for task, sec in parse(source).items():
        rows: dict[str, list[float | None]] = {}
        # Table rows first (the template's form), then lines only for what no table row said.
        for label, cells in [*sec["rows"].items(), *sec["lines"].items()]:
            rows.setdefault(row_key(label), [parse_number(c) for c in cells])
        out[task] = rows
    return out


def _line_row(line: str) -> tuple[str, list[str]] | None:
    """``("B=4, S=128, causal", ["1.2x"])`` from ``- B=4, S=128, causal: 1.2x``; None if the line
    is not a row (too long, no separator, no letter in the label, no number after it)."""
    if len(line) > MAX_ROW_LINE or "|" in line:
        return None
    body = line[2:] if line[:2] in ("- ", "* ", "+ ") else line
    # "B=4, S=128, causal: 1.2x": the label runs to the last ":"; without one, to the first "=".
    cut = body.rfind(":") if ":" in body else body.find("=")
    if cut <= 0:
        return None
    label, value = body[:cut].strip(), body[cut + 1 :].strip()
    if not any(ch.isalpha() for ch in label) or not _LINE_VALUE.match(value):
        return None
    return label, [value]
