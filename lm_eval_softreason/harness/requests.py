"""A ``generate_until`` call's requests grouped into distinct questions, and their names."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs

from lm_eval_softreason.errors import RunRefused, UserError


@dataclass
class UniqueRequest:
    """One distinct (context, gen_kwargs) of a call, and the request indices it answers."""

    context: str
    gen_kwargs: dict
    task_name: str
    indices: list[int]
    until: tuple[str, ...] = ()
    max_gen_toks: int = 0


def group_requests(requests: list, eos: str, max_gen_toks: int,
                   max_length: int) -> list[UniqueRequest]:
    """Distinct (context, gen_kwargs) of a call, with their stop strings and budgets;
    a budget the context cannot hold is refused here, before any work."""
    seen: dict[str, UniqueRequest] = {}
    for i, req in enumerate(requests):
        context, gen_kwargs = req.args
        key = context + "\x00" + json.dumps(gen_kwargs, sort_keys=True, default=str)
        if key not in seen:
            kwargs = normalize_gen_kwargs(dict(gen_kwargs), max_gen_toks)
            until = tuple(handle_stop_sequences(kwargs.pop("until", None), eos=eos))
            max_gen = int(kwargs.pop("max_gen_toks"))
            if max_gen >= max_length:
                raise UserError(
                    f"max_gen_toks={max_gen} does not fit the model's context of "
                    f"max_length={max_length} tokens (no room is left for the prompt); "
                    f"lower max_gen_toks (--gen_kwargs or the task's generation_kwargs) "
                    f"or raise max_length (--model_args max_length=...)"
                )
            seen[key] = UniqueRequest(context, gen_kwargs, getattr(req, "task_name", "") or "",
                                      [], until, max_gen)
        seen[key].indices.append(i)
    return list(seen.values())


def question_key(u: UniqueRequest, settings: str) -> str:
    """Hash of (prompt, gen_kwargs, a fingerprint of the settings)."""
    blob = "\x00".join([u.context, json.dumps(u.gen_kwargs, sort_keys=True, default=str),
                        settings])
    return hashlib.sha256(blob.encode()).hexdigest()


def refuse_unsharded_processes(world_size: int) -> None:
    """``torchrun``/``accelerate launch`` with N processes, where lm-eval did not shard the
    requests (HFLM shards only across GPUs): every process would run every question."""
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if launched > 1 and world_size != launched:
        raise RunRefused(
            f"launched as {launched} processes (WORLD_SIZE={launched}), but lm-eval split the "
            f"requests over {world_size} (it shards only across GPUs, one per process), so "
            f"each process would run every question. Run a single process (batch_size and "
            f"max_active set the parallelism), or launch one process per GPU."
        )
