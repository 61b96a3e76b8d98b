"""Engines decode for the search; the search never knows which one (see ``base.py``)."""

from lm_eval_softreason.engines.base import DecodeResult, DecodeRow, Engine, PromptState

__all__ = ["DecodeResult", "DecodeRow", "Engine", "PromptState"]
