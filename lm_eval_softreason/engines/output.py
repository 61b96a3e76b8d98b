"""The one stop rule both engines apply, so a row ends at the same token on either."""

from __future__ import annotations

from typing import Sequence

from transformers import PreTrainedTokenizerBase


class StopChecker:
    """Finds the earliest stop string in a row's text by decoding only a short tail."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, until: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.until = [s for s in until if s]
        longest = max((len(tokenizer.encode(s, add_special_tokens=False)) for s in self.until),
                      default=0)
        self.lookback = longest + 2

    def hit(self, tokens: list[int]) -> bool:
        if not self.until:
            return False
        tail = self.tokenizer.decode(tokens[-self.lookback:], skip_special_tokens=False)
        return any(s in tail for s in self.until)
