"""Compare a generation with the committed golden output for the same SVAMP problem."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent.parent / "golden_outputs.json"


@lru_cache(maxsize=1)
def golden() -> dict[str, str]:
    return json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    return {"matches_golden": float(golden().get(doc["ID"]) == results[0])}
