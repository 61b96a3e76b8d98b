"""Write docs/faults.md: every test marked ``@pytest.mark.fault(fault, outcome)`` in tests/.

    python -m tests.fault_table

The markers are read from the source (``ast``), not by running pytest, so no model or data is
needed; ``tests/harness/test_faults.py`` fails when the committed table differs from what this writes.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
TABLE = ROOT / "docs" / "faults.md"
HEADER = """\
# Faults and what they do

Every fault below has a test that injects it; the table is generated from the tests'
`@pytest.mark.fault(fault, outcome)` markers by `python -m tests.fault_table` (rerun it after
adding or changing a marker: `tests/harness/test_faults.py` fails while this file is out of date).

A user error (a bad argument, file or folder) ends `lm-eval-softreason` with one line on stderr,
`lm-eval-softreason: error: ...`, and exit code 2; `--verbosity DEBUG` or
`LM_EVAL_SOFTREASON_TRACEBACK=1` shows the traceback instead (README, "Errors").

| fault | outcome | test |
|---|---|---|
"""


class FaultCase(NamedTuple):
    """One marked test: what is injected, what must happen, and the test's pytest id."""

    fault: str
    outcome: str
    test_id: str


def fault_cases(folder: Path = TESTS) -> list[FaultCase]:
    """The marked tests of every ``*.py`` under ``folder``, in file and line order."""
    cases = []
    for path in sorted(folder.rglob("*.py")):
        module = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        where = path.relative_to(folder.parent).as_posix()
        for node, name in _tests(module.body, ""):
            for decorator in node.decorator_list:
                marker = _fault_marker(decorator)
                if marker is not None:
                    cases.append(FaultCase(*marker, f"{where}::{name}"))
    return cases


def _tests(body: list[ast.stmt], prefix: str):  # type: ignore[no-untyped-def]
    """(function node, pytest name) of the test functions in ``body``, classes included."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                node.name.startswith("test"):
            yield node, prefix + node.name
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            yield from _tests(node.body, f"{prefix}{node.name}::")


def _fault_marker(decorator: ast.expr) -> tuple[str, str] | None:
    """``(fault, outcome)`` of a ``pytest.mark.fault(fault, outcome)`` (or ``mark.fault``)
    decorator, positional or by keyword; None for any other decorator."""
    if not (isinstance(decorator, ast.Call)
            and ast.unparse(decorator.func) in ("pytest.mark.fault", "mark.fault")):
        return None
    given = dict(zip(("fault", "outcome"), (ast.literal_eval(a) for a in decorator.args)))
    given.update({k.arg: ast.literal_eval(k.value) for k in decorator.keywords if k.arg})
    return given["fault"], given["outcome"]


def render(cases: list[FaultCase]) -> str:
    """The Markdown page for ``cases``."""
    def cell(text: str) -> str:
        return " ".join(text.split()).replace("|", "\\|")

    rows = [f"| {cell(c.fault)} | {cell(c.outcome)} | `{c.test_id}` |\n" for c in cases]
    return HEADER + "".join(rows)


def main() -> None:
    """Write docs/faults.md from the markers in tests/."""
    TABLE.write_text(render(fault_cases()), encoding="utf-8")
    print(f"wrote {TABLE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
