"""Text tables for the benchmarks' reports."""

from __future__ import annotations

from collections.abc import Sequence


def table(head: Sequence[str], rows: Sequence[Sequence[str]], *, markdown: bool = False) -> str:
    """Left-aligned columns as wide as their widest cell, a rule under the head.

    Plain: ``a | b`` over ``--+--``; markdown: ``| a | b |`` over ``|---|---|``.
    """
    cells = [list(head), *(list(r) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]

    def line(row: Sequence[str]) -> str:
        padded = [v.ljust(w) for v, w in zip(row, widths, strict=True)]
        return f"| {' | '.join(padded)} |" if markdown else " | ".join(padded).rstrip()

    if markdown:
        rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    else:
        rule = "-+-".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(c) for c in cells[1:])])
