"""The one stop rule both engines apply, so a row ends at the same token on either: the EOS set
and the stop strings."""

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


def eos_token_ids(tokenizer_eos: int | None, generation_eos: int | list[int] | None) -> list[int]:
    """The EOS set: the tokenizer's EOS plus the generation config's ``eos_token_id`` (an int
    or a list)."""
    eos = {tokenizer_eos} if tokenizer_eos is not None else set()
    if generation_eos is not None:
        eos.update(generation_eos if isinstance(generation_eos, list) else [generation_eos])
    return sorted(int(t) for t in eos)
