"""Canonical answers, so votes and verifier checks treat "18", "18.0" and "$18." as one answer."""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

# A plain or thousands-grouped number: "18", "-3.50", "1,000", "1,234.5", ".5".
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d*)(?:\.\d+)?")


def _as_number(s: str) -> Decimal | None:
    """Parse ``s`` as a number when it is one (commas only as thousands separators), else None."""
    if not s or not _NUMBER.fullmatch(s) or not any(c.isdigit() for c in s):
        return None
    try:
        return Decimal(s.replace(",", ""))
    except InvalidOperation:
        return None


def _clean(s: str) -> str:
    """Drop what never distinguishes answers: outer whitespace, ``$`` and sentence-final dots."""
    return s.replace("$", "").strip().rstrip(".").strip()


def normalize_answer(s: str | None) -> str | None:
    """Canonical form of an extracted answer; None for a missing or empty answer.

    ``$``, outer spaces and a trailing full stop go; numbers also lose thousands separators and
    trailing zeros ("$1,000." -> "1000", "-3.50" -> "-3.5", "18.00" -> "18"); anything else is
    lowercased.
    """
    if s is None:
        return None
    cleaned = _clean(s)
    number = _as_number(cleaned)
    if number is None:
        return cleaned.lower() or None
    if number == number.to_integral_value():
        return str(int(number))
    return format(number.normalize(), "f")


def answers_match(a: str | None, b: str | None, tol: float = 1e-6) -> bool:
    """True when two answers agree: numerically within ``tol`` when both are numbers, else as
    normalised strings. A missing answer (None) never matches anything, not even None."""
    na, nb = normalize_answer(a), normalize_answer(b)
    if na is None or nb is None:
        return False
    x, y = _as_number(na), _as_number(nb)
    if x is not None and y is not None:
        return math.isclose(float(x), float(y), rel_tol=0.0, abs_tol=tol)
    return na == nb
