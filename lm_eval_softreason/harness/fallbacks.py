"""The fallback policy: a call whose every question fell back is refused, one above
``max_fallback_rate`` is warned about, again after lm-eval's results table."""

from __future__ import annotations

import atexit
import sys
from collections import Counter
from dataclasses import dataclass, field

from lm_eval_softreason.errors import RunRefused
from lm_eval_softreason.strategies.fallback import Fallback

_EXIT_WARNINGS: list[str] = []
_exit_hook_installed = False


@dataclass
class CallTally:
    """Outcomes of one ``generate_until`` call, for the fallback checks at its end."""

    searched: int = 0
    fallbacks: list[Fallback] = field(default_factory=list)


def install_exit_warnings() -> None:
    """Repeat fallback warnings at interpreter exit, after lm-eval's results table where a
    reader looks (once per process, when a model is built)."""
    global _exit_hook_installed
    if not _exit_hook_installed:
        atexit.register(_print_exit_warnings)
        _exit_hook_installed = True


def _print_exit_warnings() -> None:
    for text in _EXIT_WARNINGS:
        print(f"\n{'!' * 78}\n{text}\n{'!' * 78}", file=sys.stderr)


def check_fallbacks(call: CallTally, earlier_searched: int, mode: str,
                    max_fallback_rate: float) -> str | None:
    """Refuse a call whose every question fell back (its numbers would be greedy's under
    our name, unless an earlier run searched some); return the warning above
    ``max_fallback_rate``, queued to be repeated at exit."""
    if not call.fallbacks:
        return None
    total = call.searched + len(call.fallbacks)
    reasons = dict(Counter(r.stage for r in call.fallbacks).most_common())
    if not call.searched and not earlier_searched:
        raise RunRefused(
            f"all {total} questions fell back to plain greedy decoding, so these would be "
            f"greedy's results under mode={mode}; reasons: {reasons} (the "
            f"log has each error). Fix the cause and rerun."
        )
    rate = len(call.fallbacks) / total
    if rate <= max_fallback_rate:
        return None
    text = (f"softreason: {len(call.fallbacks)} of {total} questions "
            f"({rate:.0%}) fell back to plain greedy decoding, more than "
            f"max_fallback_rate={max_fallback_rate:g}; reasons: {reasons}. "
            f"These results are partly greedy's.")
    _EXIT_WARNINGS.append(text)
    return text
