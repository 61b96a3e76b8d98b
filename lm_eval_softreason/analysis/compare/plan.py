"""What a compare run holds: the strategies, each cell's model_args and the order cells run in."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

from lm_eval_softreason.analysis.folders import cell_paths, read_cell
from lm_eval_softreason.strategies.config import PRESET_VALUES, SoftReasonConfig, result_args


BUDGET_STRATEGY = "sc"


BUDGET_REFERENCE = "softreason"  # what sc's budget is matched to by default (--sc-match) ...


BUDGET_UNIT = "greedy"  # ... in units of one greedy chain


HF_SC_TASK = "gsm8k_cot_self_consistency_offline"


HF_SC_STRATEGY = "hf_sc"


HF_SC_REPEATS = 64  # the task's own number of samples per question


HF_DEFAULT_BATCH = 16  # HFLM's batch_size=auto probes huge batches; too slow on a CPU


# Keys of a cell's spec holding model_args, compared without the run-only ones.
SPEC_ARGS_KEYS = ("model_args", "extra_model_args")


@dataclasses.dataclass(frozen=True)
class StrategySpec:
    """A named set of softreason model_args."""

    name: str
    model_args: dict[str, Any]
    help: str


STRATEGIES: dict[str, StrategySpec] = {
    s.name: s
    for s in (
        StrategySpec("greedy", {"mode": "greedy"}, "plain greedy chain of thought"),
        StrategySpec("sc", {"mode": "sample"},
                 "self-consistency: n_samples at --sc-temperature, majority vote; "
                 "n_samples budget-matched to softreason"),
        StrategySpec("softreason", {"mode": "softreason", "preset": "paper"},
                 "Soft Reasoning as in the paper (verifier + coherence, BO)"),
        StrategySpec("softreason_noverifier", {"mode": "softreason", "preset": "paper",
                                           "verifier": "none"},
                 "ablation: coherence only"),
        StrategySpec("softreason_nocoherence", {"mode": "softreason", "preset": "paper",
                                            "coherence": "none"},
                 "ablation: verifier only"),
        StrategySpec("softreason_random", {"mode": "softreason", "preset": "paper",
                                       "search": "random"},
                 "ablation: random search instead of Bayesian optimisation"),
        StrategySpec("softreason_reference", {"mode": "softreason", "preset": "reference"},
                 "the reference code's variant (A^T u injection, mean prob, vote)"),
        StrategySpec("softreason_tuned", {"mode": "softreason", "preset": "tuned"},
                 "the tuning study's choice (docs/tuning.md), its own budget included"),
        StrategySpec("fire", {"mode": "fire"}, "FIRE: first token at high temperature, then greedy"),
        StrategySpec("cot_decoding", {"mode": "cot_decoding"},
                 "CoT-decoding: top-k first tokens, pick by answer confidence"),
    )
}


# Table/plot order; hf_sc (lm-eval's gsm8k_cot_self_consistency, offline copy, with --model hf)
# is last.
ORDER = [*STRATEGIES, HF_SC_STRATEGY]


# A task's limit: None (all), N or a fraction (lm-eval's --limit), or "A:B" (documents A..B-1).
Limit = int | float | str | None


@dataclasses.dataclass
class RunSettings:
    """Settings shared by every cell of one invocation."""

    model: str
    limits: dict[str, Limit]
    seed: int
    apply_chat_template: bool
    batch_size: str
    dtype: str
    device: str
    extra_model_args: dict[str, Any]
    gen_kwargs: dict[str, Any]
    sc_temperature: float
    sc_n: int | None
    hf_sc_repeats: int | None
    engine: str = "hf"
    sc_match: str = BUDGET_REFERENCE
    base_url: str | None = None  # --engine server; where it runs does not change results

    def spec(self, task: str, strategy: str) -> dict[str, Any]:
        """What must agree for a stored cell to count as this run's cell.

        The model is compared by folder name so a results folder holds no machine paths;
        batch size and device only change speed, so they are left out.
        """
        spec = {
            "task": task, "strategy": strategy,
            "model": model_name(self.model),
            "limit": self.limits.get(task), "seed": self.seed,
            "apply_chat_template": self.apply_chat_template, "dtype": self.dtype,
            "gen_kwargs": self.gen_kwargs,
        }
        if self.engine != "hf" and strategy != HF_SC_STRATEGY:
            spec["engine"] = self.engine  # absent for hf: folders written before still match
        if strategy == HF_SC_STRATEGY:
            spec["repeats"] = self.hf_sc_repeats
            spec["extra_model_args"] = hf_args(self.extra_model_args)
        else:
            spec["model_args"] = strategy_model_args(strategy, self)
            values = preset_values(spec["model_args"])
            if values:
                spec["preset_values"] = values
        if strategy == BUDGET_STRATEGY:
            spec["sc_n"] = self.sc_n  # None: matched to the measured budget
            if self.sc_n is None and self.sc_match != BUDGET_REFERENCE:
                spec["sc_match"] = self.sc_match  # absent by default: older folders match
        return spec


def strategy_model_args(strategy: str, st: RunSettings) -> dict[str, Any]:
    """The softreason model_args of a strategy (without n_samples/trace_path, set per cell)."""
    args = {**st.extra_model_args, **STRATEGIES[strategy].model_args, "seed": st.seed}
    if strategy == BUDGET_STRATEGY:
        args["temperature"] = st.sc_temperature
    return args


def preset_values(model_args: dict[str, Any]) -> dict[str, Any]:
    """The values a softreason strategy's preset resolves to, after the model_args that
    override it ({} outside softreason mode). A preset can change its values under the same
    name (``tuned`` did when the tuning study finished), and a cell searched under the old
    values is not this run's cell, although its model_args read the same."""
    cfg, _ = SoftReasonConfig.from_kwargs(dict(model_args))
    if cfg.mode != "softreason":
        return {}
    resolved = cfg.public_dict()
    return {k: resolved[k] for k in sorted(PRESET_VALUES[cfg.preset])}


def hf_args(extra: dict[str, Any]) -> dict[str, Any]:
    """The extra model_args that HFLM understands (softreason's own are dropped)."""
    _, rest = SoftReasonConfig.from_kwargs(extra)
    return rest


def softreason_args(args: dict[str, Any]) -> dict[str, Any]:
    """The model_args of ``args`` that are softreason's own (what ``configure`` takes)."""
    rest = hf_args(args)
    return {k: v for k, v in args.items() if k not in rest}


def model_name(path: str) -> str:
    """The model as cells record it: its folder name, so a results folder holds no machine
    paths."""
    return Path(os.path.normpath(path)).name


def hf_sc_config(task_manager: Any, repeats: int) -> dict[str, Any]:
    """gsm8k_cot_self_consistency_offline's full config with ``repeats`` samples per question.

    Its vote over all samples is renamed ``maj@64`` -> ``maj@<repeats>``; a ``maj@k`` vote over
    the first k samples is kept only for k < repeats (lm-eval asserts that k samples exist).
    """
    from lm_eval_softreason.compat import entry_config

    cfg = entry_config(task_manager.task_index[HF_SC_TASK])
    cfg["repeats"] = int(repeats)
    filters = []
    for f in cfg.get("filter_list", []):
        name = str(f.get("name", ""))
        if name == f"maj@{HF_SC_REPEATS}":
            f = {**f, "name": f"maj@{repeats}"}
        elif name.startswith("maj@") and name[4:].isdigit() and int(name[4:]) >= repeats:
            continue
        filters.append(f)
    cfg["filter_list"] = filters
    return cfg


def comparable_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A cell's ``spec`` as compared: JSON values, model_args without the run-only ones
    (``strategies.config.result_args``; cells written before a setting was known to be
    run-only still match)."""
    out = json.loads(json.dumps(dict(spec), default=str))
    for key in SPEC_ARGS_KEYS:
        if isinstance(out.get(key), dict):
            out[key] = result_args(out[key])
    return out


def check_spec(cell: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    """How a stored cell's settings differ from this run's, in the settings that change
    results (:func:`comparable_spec`)."""
    stored = comparable_spec(cell.get("spec", {}))
    norm = comparable_spec(spec)
    if "preset_values" in norm and "preset_values" not in stored:
        # written before specs held them: the finished cell's resolved settings have them
        ran = cell.get("lm_eval_config", {}).get("softreason")
        stored["preset_values"] = ran and {k: ran.get(k) for k in norm["preset_values"]}
    return [f"{k}: stored {stored.get(k)!r}, now {norm.get(k)!r}"
            for k in sorted(set(stored) | set(norm)) if stored.get(k) != norm.get(k)]


def budget_samples(out: Path, task: str, st: RunSettings) -> dict[str, Any]:
    """sc's n_samples: the ``--sc-match`` strategy's generated tokens/question (verifier
    tokens included) over greedy's, rounded half up, at least 1; both measured on this task in
    this folder."""
    if st.sc_n is not None:
        return {"n_samples": st.sc_n, "source": "--sc-n"}
    per_q = {}
    for name in (st.sc_match, BUDGET_UNIT):
        cell = read_cell(cell_paths(out, task, name)["cell"])
        if cell is None:
            raise RuntimeError(f"budget matching for {task}: the {name} cell is missing")
        per_q[name] = float(cell["tokens_generated_per_q"])
    ratio = per_q[st.sc_match] / per_q[BUDGET_UNIT] if per_q[BUDGET_UNIT] > 0 else 1.0
    return {
        "n_samples": max(1, math.floor(ratio + 0.5)), "source": "matched",
        f"{st.sc_match}_tokens_per_q": per_q[st.sc_match],
        f"{BUDGET_UNIT}_tokens_per_q": per_q[BUDGET_UNIT], "ratio": ratio,
    }


def plan_cells(tasks: list[str], strategies: list[str], baseline_hf_sc: bool,
               sc_match: str = BUDGET_REFERENCE) -> list[tuple[str, str]]:
    """(task, strategy) in run order: per task, greedy and the strategy sc is matched to
    first, sc last."""
    first = [s for s in (BUDGET_UNIT, sc_match) if s in strategies]
    middle = [s for s in strategies if s not in first and s != BUDGET_STRATEGY]
    last = [BUDGET_STRATEGY] if BUDGET_STRATEGY in strategies else []
    cells = [(t, s) for t in tasks for s in first + middle + last]
    if baseline_hf_sc:
        cells.append((HF_SC_TASK, HF_SC_STRATEGY))
    return cells
