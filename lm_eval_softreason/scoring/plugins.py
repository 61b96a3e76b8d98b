"""Loading a user's plug-in (``package.module:function``) with errors that name the setting."""

from __future__ import annotations

import importlib
import inspect
from typing import Callable

from lm_eval_softreason.errors import ConfigError


def import_callable(spec: str, option: str) -> Callable:
    """Resolve ``package.module:function`` with errors that say which part is wrong.

    ``option`` is how the message names the setting and its value (``model_arg
    coherence='m:f'``, ``--select 'm:f'``): the model and the CLIs share one wording.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"{option}: not a built-in name and not an import path of the form "
            f"'package.module:function'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{option}: cannot import {module_name!r} ({exc})") from None
    target = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"{option}: {module_name!r} has no {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"{option}: {attr!r} is not callable")
    return target


def check_takes_one_argument(fn: Callable, option: str, documented: str) -> None:
    """Refuse at load time a plug-in that could not be called the documented way; found
    only at call time, every question would fall back to greedy. ``option`` as in
    :func:`import_callable`."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: cannot tell, accept
        return
    try:
        signature.bind(object())
    except TypeError:
        params = ", ".join(signature.parameters)
        raise ConfigError(
            f"{option}: it takes ({params}), so it cannot be called as {documented}"
        ) from None


def display(fn: Callable) -> str:
    """``module:qualname`` of a callable, as messages name it."""
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', type(fn).__name__)}"
