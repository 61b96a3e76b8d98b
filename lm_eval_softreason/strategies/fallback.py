"""Why a question was answered by plain greedy decoding instead of its strategy."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fallback:
    """A fallback reason: the stage that failed and, when an exception caused it, its type and
    message. ``str()`` is the text traces and stats record: ``"stage: Type: message"``."""

    stage: str
    error_type: str | None = None
    message: str = ""

    @classmethod
    def of(cls, stage: str, exc: BaseException) -> Fallback:
        """The fallback of an exception raised while ``stage`` ran."""
        return cls(stage, type(exc).__name__, str(exc))

    def __str__(self) -> str:
        if self.error_type is not None:
            return f"{self.stage}: {self.error_type}: {self.message}"
        return f"{self.stage}: {self.message}" if self.message else self.stage


# A question whose prompt could not be run at all: it gets no strategy, hence no trace record.
PROMPT_NOT_RUN = Fallback("prompt could not be run")


def recorded_stage(reason: str) -> str:
    """The stage of a fallback as a trace records it (``str(Fallback)``)."""
    return reason.split(":")[0]
