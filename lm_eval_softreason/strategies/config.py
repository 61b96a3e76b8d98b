"""Our model_args: parsing, validation and the presets, kept apart from any torch code.

Everything is checked before the model is loaded, so a typo costs a second, not a model load.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

from lm_eval_softreason.errors import ConfigError
from lm_eval_softreason.scoring.selection import SELECTS
from lm_eval_softreason.settings import HARNESS_RUN_ONLY_ARGS, fingerprint

MODES = ("softreason", "greedy", "sample", "cot_decoding", "fire")
PRESETS = ("paper", "reference", "tuned")
SEARCHES = ("bo", "random")
SIGMA_SCALES = ("absolute", "embedding_std")


# What each preset changes; explicit model_args always win over a preset.
PRESET_VALUES: dict[str, dict[str, Any]] = {
    # Zhu et al. 2025: x = z + sigma*eps around the greedy first token, GP + EI, best objective.
    "paper": {"coherence": "geo_mean_prob", "select": "best", "inject": "perturb"},
    # alickzhu/Soft-Reasoning: A^T u replaces an appended token, mean-prob coherence, vote.
    "reference": {"coherence": "mean_prob", "select": "vote", "inject": "replace"},
    # The tuning study's choice for Qwen2.5-Coder-0.5B (docs/tuning.md, tuning problems only):
    # sigma relative to the embedding table and a coherence-weighted vote over 8 candidates
    # drawn at once. A BO round bought no accuracy at equal tokens, and the vote never reads
    # the verifier, so both are off. batch and verifier_max_tokens only keep the seeds of the
    # tuning cell this repeats (svamp-shape-init8-std2).
    "tuned": {"coherence": "geo_mean_prob", "inject": "perturb", "sigma": 2.0,
              "sigma_scale": "embedding_std", "select": "vote_coherence_weighted",
              "verifier": "none", "n_init": 8, "batch": 4, "max_rounds": 0,
              "verifier_max_tokens": 256},
}


# What a setting changes, as its field's ``affects`` metadata says:
#   "search":  which candidates are drawn, so the answers: in the fingerprint and the search seed;
#   "scoring": only how finished candidates are scored or chosen: in the fingerprint, not the
#              seed (runs differing only in them draw the same candidates, so they pair up);
#   "none":    only how a run goes (speed, memory, files): in neither, and never compared.
AFFECTS = ("search", "scoring", "none")


def _setting(default: Any, affects: str) -> Any:
    """A config field whose metadata says what it changes (one of :data:`AFFECTS`)."""
    return dataclasses.field(default=default, metadata={"affects": affects})


@dataclass(frozen=True)
class SoftReasonConfig:
    """Settings of the decoding strategy (one field per model_arg; see README for each)."""

    mode: str = _setting("softreason", "search")
    preset: str = _setting("paper", "scoring")  # its values seed the search, not its name
    # embedding perturbation
    sigma: float = _setting(1.0, "search")
    sigma_scale: str = _setting("absolute", "search")
    proj_dim: int = _setting(50, "search")
    inject: str = _setting("perturb", "search")
    # search
    search: str = _setting("bo", "search")
    n_init: int = _setting(5, "search")
    batch: int = _setting(5, "search")
    max_rounds: int = _setting(4, "search")
    epsilon: float = _setting(0.01, "search")
    ei_threshold: float = _setting(1e-3, "search")
    # objective and answer
    verifier: str | Callable[..., Any] = _setting("self", "scoring")
    coherence: str | Callable[..., Any] = _setting("geo_mean_prob", "scoring")
    w_verifier: float = _setting(1.0, "scoring")
    w_coherence: float = _setting(1.0, "scoring")
    select: str = _setting("best", "scoring")
    # seeds the search although the verifier reads it: finished tuning cells set it, and
    # their seeds must not move
    verifier_max_tokens: int = _setting(300, "search")
    # baselines
    n_samples: int = _setting(8, "search")
    temperature: float = _setting(0.7, "search")
    top_k: int = _setting(10, "search")
    fire_temperature: float = _setting(30.0, "search")
    # run
    seed: int = _setting(1234, "search")
    trace_path: str | None = _setting(None, "none")
    num_threads: int | None = _setting(None, "none")
    bo_workers: int = _setting(0, "none")
    max_active: int | str = _setting("auto", "none")
    max_fallback_rate: float = _setting(0.2, "none")

    def __post_init__(self) -> None:
        _check_choice("mode", self.mode, MODES)
        _check_choice("preset", self.preset, PRESETS)
        _check_choice("select", self.select, SELECTS)
        _check_choice("search", self.search, SEARCHES)
        _check_choice("sigma_scale", self.sigma_scale, SIGMA_SCALES)
        _check_choice("inject", self.inject, ("perturb", "replace"))
        _check_number("sigma", self.sigma, low=0.0, low_open=True)
        _check_number("epsilon", self.epsilon, low=0.0)
        _check_number("ei_threshold", self.ei_threshold, low=0.0)
        _check_number("w_verifier", self.w_verifier, low=0.0)
        _check_number("w_coherence", self.w_coherence, low=0.0)
        _check_number("temperature", self.temperature, low=0.0, low_open=True)
        _check_number("fire_temperature", self.fire_temperature, low=0.0, low_open=True)
        for name, low in (("proj_dim", 1), ("n_init", 1), ("batch", 1), ("max_rounds", 0),
                          ("n_samples", 1), ("top_k", 1), ("verifier_max_tokens", 1)):
            _check_int(name, getattr(self, name), low)
        _check_int("seed", self.seed, None)
        if self.num_threads is not None:
            _check_int("num_threads", self.num_threads, 1)
        _check_int("bo_workers", self.bo_workers, 0)
        if self.max_active != "auto":
            _check_int("max_active", self.max_active, 1)
        _check_number("max_fallback_rate", self.max_fallback_rate, low=0.0)
        if self.max_fallback_rate > 1:
            raise ConfigError(f"model_arg max_fallback_rate={self.max_fallback_rate!r} is out "
                              f"of range; allowed: 0 to 1")
        if self.trace_path is not None and not str(self.trace_path).strip():
            raise ConfigError(f"model_arg trace_path={self.trace_path!r} is empty; give a file "
                              f"path, or leave trace_path out for no trace")
        for name in ("verifier", "coherence"):
            value = getattr(self, name)
            if not (callable(value) or (isinstance(value, str) and value)):
                raise ConfigError(
                    f"model_arg {name}={value!r} is invalid: give a built-in name, an import "
                    f"path 'package.module:function', or (Python API) a callable"
                )

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> tuple["SoftReasonConfig", dict[str, Any]]:
        """Split lm-eval ``model_args`` into our config and the rest (for ``HFLM``).

        Keys that are neither ours nor ``passthrough`` are left for ``from_pretrained``, except
        near-misses of our names (``sigmma``), which are errors: they would be silently ignored.
        """
        ours = {f.name for f in dataclasses.fields(cls)}
        mine = {k: v for k, v in kwargs.items() if k in ours}
        rest = {k: v for k, v in kwargs.items() if k not in ours}
        for key in rest:
            close = difflib.get_close_matches(key, sorted(ours), n=1, cutoff=0.8)
            if close and key not in _HFLM_ARGS:
                raise ConfigError(
                    f"unknown model_arg {key!r}; did you mean {close[0]!r}? "
                    f"softreason model_args: {', '.join(sorted(ours))}"
                )
        preset = str(mine.get("preset", cls.preset))
        _check_choice("preset", preset, PRESETS)
        values = {**PRESET_VALUES[preset], **mine}
        values = {k: _coerce(k, v) for k, v in values.items()}
        return cls(**values), rest

    def public_dict(self) -> dict[str, Any]:
        """The settings that change results (:func:`settings_affecting` ``search`` and
        ``scoring``), JSON-safe (callables shown by import path): for results files, traces
        and the ``--use_cache`` guard."""
        values = {name: getattr(self, name) for name in settings_affecting("search", "scoring")}
        return {k: _callable_name(v) if callable(v) else v for k, v in values.items()}

    def fingerprint(self) -> str:
        """Short stable hash of everything that changes results (not paths or threads)."""
        return fingerprint(self.public_dict())

    def search_fingerprint(self) -> str:
        """:meth:`fingerprint` with the ``scoring`` settings at their defaults: what seeds the
        search. Runs that differ only in them draw the same first candidates, so an ablation
        of the verifier, the coherence term or the rule is paired question by question;
        ``rescore --select`` gives a ``select=`` run's answers back; ``preset=tuned`` repeats
        the tuning cell it came from; and runs at the defaults keep the seeds they always had."""
        return fingerprint({**self.public_dict(), **_SCORING_DEFAULTS})


def settings_affecting(*kinds: str) -> tuple[str, ...]:
    """The names of :class:`SoftReasonConfig`'s fields whose ``affects`` metadata is one of
    ``kinds`` (:data:`AFFECTS`), in declaration order: the one list the fingerprints, the
    cache guard, ``gate`` and ``compare`` read."""
    unknown = sorted(set(kinds) - set(AFFECTS))
    if unknown:
        raise ValueError(f"unknown kinds {unknown}; allowed: {', '.join(AFFECTS)}")
    return tuple(f.name for f in dataclasses.fields(SoftReasonConfig)
                 if f.metadata["affects"] in kinds)


_SCORING_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SoftReasonConfig)
                     if f.name in settings_affecting("scoring")}
# model_args, ours and lm-eval's, that change how a run executes, never its answers.
RUN_ONLY_ARGS = frozenset(settings_affecting("none")) | HARNESS_RUN_ONLY_ARGS


def result_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` without :data:`RUN_ONLY_ARGS`: what two runs must share to give the same
    answers (``gate`` compares model_args and settings so, ``compare`` its cells' specs)."""
    return {k: v for k, v in args.items() if k not in RUN_ONLY_ARGS}


# Arguments of HFLM.__init__ that must never be mistaken for typos of ours.
_HFLM_ARGS = {
    "pretrained", "backend", "revision", "subfolder", "tokenizer", "truncation", "logits_cache",
    "max_length", "device", "dtype", "softmax_dtype", "mixed_precision_dtype", "batch_size",
    "max_batch_size", "trust_remote_code", "use_fast_tokenizer", "add_bos_token",
    "prefix_token_id", "parallelize", "max_memory_per_gpu", "max_cpu_memory", "offload_folder",
    "peft", "delta", "autogptq", "gptqmodel", "gguf_file", "think_end_token", "enable_thinking",
    "chat_template_args",
}

_FLOATS = {"sigma", "epsilon", "ei_threshold", "w_verifier", "w_coherence", "temperature",
           "fire_temperature", "max_fallback_rate"}
_INTS = {"proj_dim", "n_init", "batch", "max_rounds", "n_samples", "top_k",
         "verifier_max_tokens", "seed", "num_threads", "bo_workers", "max_active"}


_INT_HINTS = {"max_active": "; allowed: 'auto' or an integer >= 1"}


def _coerce(name: str, value: Any) -> Any:
    """Turn CLI strings into numbers, with an error that names the argument."""
    if name in _FLOATS and not isinstance(value, bool):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"model_arg {name}={value!r} is not a number") from None
    if name in _INTS and value is not None and not isinstance(value, bool) and not (
            name == "max_active" and value == "auto"):
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"model_arg {name}={value!r} is not an integer"
                              + _INT_HINTS.get(name, "")) from None
        if not as_float.is_integer():
            raise ConfigError(f"model_arg {name}={value!r} is not an integer"
                              + _INT_HINTS.get(name, ""))
        return int(as_float)
    if name == "trace_path" and value is not None:
        return str(value)
    return value


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"model_arg {name}={value!r} is invalid; allowed: {', '.join(allowed)}")


def _check_number(name: str, value: Any, low: float, low_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"model_arg {name}={value!r} must be a finite number")
    if value < low or (low_open and value == low):
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        raise ConfigError(f"model_arg {name}={value!r} is out of range; allowed: {bound}")


def _check_int(name: str, value: Any, low: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"model_arg {name}={value!r} must be an integer")
    if low is not None and value < low:
        raise ConfigError(f"model_arg {name}={value!r} is out of range; allowed: >= {low}")


def _callable_name(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or type(fn).__module__
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}:{name}"
