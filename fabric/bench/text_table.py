"""The benchmarks' plain-text tables: right-aligned columns, "-" for a missing or NaN value."""
from __future__ import annotations

import math


def text_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """columns: (title, row key, format spec) each."""
    def cell(row, key, fmt):
        value = row.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return format(value, fmt)

    header = [title for title, _, _ in columns]
    body = [[cell(row, key, fmt) for _, key, fmt in columns] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in body]
    return "\n".join(lines)
