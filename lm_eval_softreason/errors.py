"""The one error type that means "your input or environment is wrong", not "a bug".

``lm-eval-softreason`` (:func:`lm_eval_softreason.cli.main`) prints a :class:`UserError` as one
line on stderr and exits non-zero, without a traceback (``--verbosity DEBUG`` or
``LM_EVAL_SOFTREASON_TRACEBACK=1`` shows it). Every such error names what to fix: the
argument and its value, or the path. It is a ``ValueError`` so that code catching bad values
keeps catching it.
"""

from __future__ import annotations


class UserError(ValueError):
    """A bad argument, file or folder; the message names it and what is expected."""


class RunRefused(UserError, RuntimeError):
    """A run stopped because its results would mislead (e.g. every question fell back to
    greedy); a ``RuntimeError`` too, as these were before they had a type of their own."""


class ConfigError(UserError):
    """A model_arg has a value we cannot use; the message names it and what is allowed."""
