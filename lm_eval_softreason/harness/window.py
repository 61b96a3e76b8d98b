"""How many questions are in flight at once (``max_active``)."""

from __future__ import annotations

import logging

from lm_eval_softreason.strategies.config import SoftReasonConfig
from lm_eval_softreason.strategies.modes import STRATEGIES

log = logging.getLogger(__name__)

# max_active=auto sizes the window for prompts of this many tokens (longer ones still run).
AUTO_WINDOW_PROMPT_TOKENS = 2048


def window_size(cfg: SoftReasonConfig, row_batch_size: int, state_bytes_per_token: int,
                max_length: int) -> int:
    """Questions in flight. ``auto``: enough to fill one decode batch of ``row_batch_size``
    rows, at most as many prompt states of ``AUTO_WINDOW_PROMPT_TOKENS`` tokens as fit in a
    quarter of free memory."""
    if cfg.max_active != "auto":
        return int(cfg.max_active)
    import psutil

    fill = max(1, row_batch_size // STRATEGIES[cfg.mode].rows_per_question(cfg))
    per_question = state_bytes_per_token * min(max_length, AUTO_WINDOW_PROMPT_TOKENS)
    fit = int(psutil.virtual_memory().available * 0.25 // max(1, per_question))
    size = max(1, min(fill, fit))
    log.info("max_active=auto: up to %d questions in flight", size)
    return size
