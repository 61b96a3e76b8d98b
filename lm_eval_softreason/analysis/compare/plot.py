"""compare's plot: accuracy against generated tokens per question, maj@k curves as lines."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any


Curves = dict[str, tuple[str, str, list[Any]]]  # task -> (strategy, label, maj@k points)


def plot(cells: list[dict[str, Any]], path: Path, curves: Curves | None = None) -> bool:
    """Write :func:`figure` to ``path`` (atomically); False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed; no plot written (pip install matplotlib)",
              file=sys.stderr)
        return False
    fig = figure(cells, curves)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return True


def strategy_colors(cells: list[dict[str, Any]]) -> dict[str, str]:
    """One matplotlib colour per strategy, the same in every panel (first seen, first colour)."""
    strategies = dict.fromkeys(c["strategy"] for c in cells)
    return {s: f"C{i % 10}" for i, s in enumerate(strategies)}


def figure(cells: list[dict[str, Any]], curves: Curves | None = None) -> Any:
    """Accuracy (flexible; strict where a task has none) vs generated tokens/question.

    One panel per task; each strategy a point with ±1 stderr bars, in its own colour in every
    panel; self-consistency's maj@k curve with its stderr band (in its cell's colour) where
    ``curves`` has one. Names go in each panel's legend, so they never overlap.
    """
    import matplotlib.pyplot as plt

    from lm_eval_softreason.analysis.curves import draw_curve

    def accuracy(c: dict[str, Any]) -> tuple[float, float]:
        kind = "flexible" if c.get("accuracy_flexible") is not None else "strict"
        return 100 * c[f"accuracy_{kind}"], 100 * (c.get(f"stderr_{kind}") or 0.0)

    shown = [c for c in cells if c.get("tokens_generated_per_q") is not None
             and (c.get("accuracy_flexible") is not None
                  or c.get("accuracy_strict") is not None)]
    colors = strategy_colors(shown)
    tasks = list(dict.fromkeys(c["task"] for c in shown)) or ["(no cells)"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.5), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        xs: list[float] = []
        ys: list[float] = []
        for c in (c for c in shown if c["task"] == task):
            y, se = accuracy(c)
            ax.errorbar([c["tokens_generated_per_q"]], [y], yerr=[se], fmt="o", markersize=6,
                        capsize=3, color=colors[c["strategy"]],
                        label=c.get("label", c["strategy"]), zorder=4)
            xs.append(c["tokens_generated_per_q"])
            ys += [y - se, y + se]
        if task in (curves or {}):
            strategy, label, curve = curves[task]
            draw_curve(ax, curve, colors.get(strategy, "0.5"), f"{label} maj@k")
            xs += [p.tokens for p in curve]
            ys += [100 * (p.accuracy + d * p.stderr) for p in curve for d in (-1, 1)]
        positive = [x for x in xs if x > 0]
        if positive and max(positive) / min(positive) > 20:
            ax.set_xscale("log")
        if ys:
            ax.set_ylim(max(0.0, min(ys) - 3), min(100.0, max(ys) + 3))
            ax.margins(x=0.1)
            ax.legend(fontsize=7, loc="best")
        ax.set_title(task)
        ax.set_xlabel("generated tokens / question (verifier included)")
        ax.set_ylabel("accuracy, flexible-extract (%)")
        ax.grid(True, alpha=0.3, zorder=0)
    fig.tight_layout()
    return fig
