"""The candidate record: one finished generation of a question, as strategies, selection and
traces see it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Generation:
    """One finished candidate of a question, with everything the trace records."""

    text: str
    tokens: int
    logprobs: list[float] = field(repr=False, default_factory=list)
    margins: list[float] = field(repr=False, default_factory=list)
    answer: str | None = None
    round: int = 0
    r_verifier: float | None = None
    r_coherence: float | None = None
    reward: float | None = None
    confidence: float | None = None  # cot_decoding's answer confidence
    spans: list[tuple[int, int]] = field(repr=False, default_factory=list)  # token char offsets
