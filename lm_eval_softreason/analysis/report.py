"""The one table renderer of ``gate``, ``compare`` and ``diagnose``."""

from __future__ import annotations

from collections.abc import Collection, Sequence


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]],
                 numeric: Collection[int] = (), align: bool = True) -> str:
    """A Markdown table, right-aligned in the ``numeric`` columns (no final newline).

    ``align`` pads every column so the table also lines up in a terminal (CI logs, step
    summaries); without it cells are written as they are, the compact form of the committed
    results tables.
    """
    if not align:
        rule = "|" + "|".join("---:" if i in numeric else "---"
                              for i in range(len(header))) + "|"
        return "\n".join(["| " + " | ".join(header) + " |", rule,
                          *("| " + " | ".join(r) + " |" for r in rows)])
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        padded = [c.rjust(w) if i in numeric else c.ljust(w)
                  for i, (c, w) in enumerate(zip(cells, widths))]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in numeric else "-" * (w + 2)
                          for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])
