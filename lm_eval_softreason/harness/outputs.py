"""Where a run's results go: checked before any model work, verified after lm-eval saved them.

lm-eval 0.4 catches every error while writing ``--output_path``, logs "Could not save results
aggregated" at warning level and exits 0, so a finished run could vanish while CI reads an older
results file. Our console script checks the path before it hands over to lm-eval; our models do
the same at construction in any lm-eval CLI process (the stock one too), and both make a failed
save an error that says where the finished answers still are.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lm_eval_softreason.errors import UserError


class OutputPathError(UserError):
    """The results cannot be written where ``--output_path`` says, or were not."""


def check_output_path(output_path: str) -> None:
    """Refuse an ``--output_path`` lm-eval could not write to, naming it: the folder that
    will hold the results (the parent of a ``.json`` path) must be a folder, or be creatable
    under a writable folder."""
    path = Path(output_path).expanduser()
    folder = path.parent if path.suffix == ".json" else path
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPathError(
            f"--output_path {output_path}: {existing} is a file, not a folder, so the results "
            f"cannot be written there; choose another --output_path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputPathError(
            f"--output_path {output_path}: the folder {existing} is not writable, so the "
            f"results cannot be written there; choose another --output_path")


def not_saved_message(output_path: str, answers: list[str]) -> str:
    """The error for a run whose results were not written: why, if the path tells, and where
    its finished answers are."""
    try:
        check_output_path(output_path)
        why = "see lm-eval's log for the reason"
    except OutputPathError as exc:
        why = str(exc).split(": ", 1)[1]
    kept = ("; the finished answers are in " + " and ".join(answers) if answers else
            "; no trace or --use_cache held the answers, so the run must be repeated")
    return f"lm-eval could not write the results to --output_path {output_path} ({why}){kept}"


def answer_locations(trace_path: str | None, use_cache: str | None) -> list[str]:
    """Where a run's finished answers survive a failed save, for :func:`not_saved_message`."""
    places = [f"the trace {trace_path}"] if trace_path else []
    if use_cache:
        places.append(f"the --use_cache database {use_cache}_rank*.db (rerun with the same "
                      f"--use_cache and a writable --output_path: nothing is decoded again)")
    return places


def guard_cli_run(trace_path: str | None = None) -> None:
    """In an lm-eval CLI process: check ``--output_path`` now and make lm-eval's save fail
    loudly (non-zero exit, where the answers are) instead of logging a warning."""
    from lm_eval_softreason.autoload import flag_values
    from lm_eval_softreason.compat import raise_when_results_not_saved

    output_path = flag_values(sys.argv, "--output_path")[:1]
    if not output_path:
        return
    check_output_path(output_path[0])
    use_cache = flag_values(sys.argv, "--use_cache")[:1]
    answers = answer_locations(trace_path, use_cache[0] if use_cache else None)
    raise_when_results_not_saved(
        lambda: OutputPathError(not_saved_message(output_path[0], answers)))
