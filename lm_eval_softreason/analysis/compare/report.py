"""compare's table: one row per cell, maj@k rows for self-consistency, fallback notes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lm_eval_softreason.analysis.compare.plan import HF_SC_STRATEGY, ORDER
from lm_eval_softreason.analysis.compare.plot import Curves, plot
from lm_eval_softreason.analysis.compare.run import write_digest
from lm_eval_softreason.analysis.folders import cell_paths, load_cells, write_atomic
from lm_eval_softreason.analysis.report import render_table


COLUMNS = ("task", "strategy", "accuracy strict", "accuracy flexible",
           "generated tokens/q", "prefill tokens/q", "wall s/q", "n")


def sort_cells(cells: list[dict[str, Any]], tasks: list[str] | None = None
               ) -> list[dict[str, Any]]:
    tasks = tasks or []

    def key(c: dict[str, Any]) -> tuple:
        t, s = c["task"], c["strategy"]
        return (tasks.index(t) if t in tasks else len(tasks), t,
                ORDER.index(s) if s in ORDER else len(ORDER), s)

    return sorted(cells, key=key)


def maj_curves(out: Path, cells: list[dict[str, Any]]) -> Curves:
    """Self-consistency's maj@k curve per task, for the sc cells with a digest or the trace
    and samples to build one (``curves.cell_curve``) and the hf_sc cell whose samples the
    folder holds (``curves.hf_sc_curve``)."""
    from lm_eval_softreason.analysis import digest
    from lm_eval_softreason.analysis.curves import cell_curve, hf_sc_curve
    from lm_eval_softreason.jsonl import read_jsonl

    found: Curves = {}
    for c in cells:
        task, strategy = c["task"], c["strategy"]
        paths = cell_paths(out, task, strategy)
        label = c.get("label", strategy)
        if strategy == "sc" and (digest.path_of(out, task, strategy).exists()
                                 or paths["trace"].exists() and paths["samples"].exists()):
            found[task] = (strategy, label, cell_curve(out, task, strategy))
        elif strategy == HF_SC_STRATEGY and paths["samples"].exists() and c.get("repeats"):
            per_response = c["tokens_generated_per_q"] / c["repeats"]
            found[task] = (strategy, label,
                           hf_sc_curve(task, read_jsonl(paths["samples"]), per_response))
    return found


def cells_table(cells: list[dict[str, Any]], curves: Curves | None = None) -> str:
    """The results table (``table.md``): one row per cell (an sc or hf_sc cell followed by its
    maj@k rows: accuracy ± stderr at the expected tokens of k samples), then a warning per
    cell with fallbacks."""
    def pct(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:.1f}"

    def num(v: float | None, digits: int) -> str:
        return "–" if v is None else f"{v:,.{digits}f}"

    rows = []
    for c in cells:
        n = "–" if c.get("n") is None else str(c["n"])
        rows.append([c["task"], c.get("label", c["strategy"]), pct(c.get("accuracy_strict")),
                     pct(c.get("accuracy_flexible")), num(c.get("tokens_generated_per_q"), 1),
                     num(c.get("tokens_prefilled_per_q"), 1), num(c.get("wall_time_per_q_s"), 2),
                     n])
        strategy, _, points = (curves or {}).get(c["task"], (None, None, []))
        if c["strategy"] == strategy:
            rows.extend([c["task"], f"{strategy} maj@{p.k}", "–",
                         f"{pct(p.accuracy)} ± {pct(p.stderr)}", num(p.tokens, 1), "–", "–", n]
                        for p in points)
    table = render_table(COLUMNS, rows, numeric=range(2, len(COLUMNS)), align=False)
    return "\n".join([table, *fallback_notes(cells)]) + "\n"


def fallback_notes(cells: list[dict[str, Any]]) -> list[str]:
    """Lines under the table for cells where questions fell back to greedy: their rows do not
    measure the strategy alone (e.g. the verifier ran out of GPU memory), so say so."""
    notes = []
    for c in cells:
        if c.get("fallbacks"):
            reasons = c.get("stats", {}).get("fallback_reasons") or {}
            why = ", ".join(f"{k}: {v}" for k, v in reasons.items()) or "reason not recorded"
            notes.append(f"\n**Warning**: {c['task']} / {c.get('label', c['strategy'])}: "
                         f"{c['fallbacks']} of {c.get('questions', c.get('n'))} questions fell "
                         f"back to greedy ({why}); that row is not the strategy's own result.")
    return notes


def report(out: Path, tasks: list[str] | None = None) -> str:
    """Write table.md and the plot from the folder's cells, after writing the digest of any
    cell finished before digests were kept whose samples are still there."""
    from lm_eval_softreason.analysis import digest

    cells = sort_cells(load_cells(out), tasks)
    for c in cells:
        task, strategy = c["task"], c["strategy"]
        if not digest.path_of(out, task, strategy).exists() \
                and cell_paths(out, task, strategy)["samples"].exists():
            write_digest(out, task, strategy)
    curves = maj_curves(out, cells)
    table = cells_table(cells, curves)
    write_atomic(out / "table.md", table)
    print(table, end="", flush=True)
    if cells:
        plot(cells, out / "accuracy_vs_tokens.png", curves)
    return table
