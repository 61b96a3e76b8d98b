"""Which strategy class answers each ``mode`` (the names ``SoftReasonConfig`` accepts)."""

from __future__ import annotations

from lm_eval_softreason.strategies.base import Greedy, Strategy
from lm_eval_softreason.strategies.cot_decoding import CotDecoding
from lm_eval_softreason.strategies.fire import Fire
from lm_eval_softreason.strategies.self_consistency import SelfConsistency
from lm_eval_softreason.strategies.softreason.search import SoftReasonSearch

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (SoftReasonSearch, Greedy, SelfConsistency, Fire, CotDecoding)
}
