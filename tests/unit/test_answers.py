"""Answer normalisation: one canonical form per number, so votes and checks never split."""

from __future__ import annotations

import pytest

from lm_eval_softreason.scoring.answers import answers_match, normalize_answer


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("18", "18"),
        ("18.0", "18"),
        ("18.00", "18"),
        (" 18. ", "18"),
        ("$18", "18"),
        ("$ 18.", "18"),
        ("1,000", "1000"),
        ("$1,000.", "1000"),
        ("1,234,567.50", "1234567.5"),
        ("-3.50", "-3.5"),
        ("-0.0", "0"),
        ("+7", "7"),
        (".5", "0.5"),
        ("0.125", "0.125"),
        ("Yes.", "yes"),
        ("  Paris ", "paris"),
        ("1,00", "1,00"),  # not a thousands grouping, so not a number
        ("3 4", "3 4"),  # inner spaces are kept: this is not the number 34
    ],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


@pytest.mark.parametrize("raw", [None, "", "   ", "$", "."])
def test_normalize_answer_empty_is_none(raw: str | None) -> None:
    assert normalize_answer(raw) is None


@pytest.mark.parametrize(
    ("a", "b"),
    [("18", "18.0"), ("51", "51.00"), ("1,000", "1000"), ("$1,000.", "1000"), ("-3.50", "-3.5"),
     ("0.1", "0.1000001"), ("Yes", "yes.")],
)
def test_answers_match(a: str, b: str) -> None:
    assert answers_match(a, b)
    assert answers_match(b, a)


@pytest.mark.parametrize(
    ("a", "b"), [("51", "510"), ("18", "-18"), ("0.1", "0.100002"), ("1,00", "100"), ("no", "yes")]
)
def test_answers_differ(a: str, b: str) -> None:
    assert not answers_match(a, b)


def test_tolerance_is_configurable() -> None:
    assert answers_match("0.1", "0.15", tol=0.1)
    assert not answers_match("0.1", "0.15")


@pytest.mark.parametrize(("a", "b"), [(None, None), (None, "1"), ("1", None), ("", "")])
def test_missing_answer_never_matches(a: str | None, b: str | None) -> None:
    assert not answers_match(a, b)
