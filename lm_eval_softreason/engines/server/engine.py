"""The server engine: Soft Reasoning's rows decoded by ``vllm serve`` endpoints from prompt
embeddings, over HTTP.

The client never loads the model: it reads the tokenizer, the config and the input embedding
table alone (``engines/checkpoint.py``), sends each request to ``/v1/completions`` as token ids
or, where a row feeds a vector at the first position, as ``prompt_embeds`` (base64 of a
``torch.save``d ``[seq, hidden]`` tensor in the model's dtype), and applies the same output
rules as the offline vLLM engine (``engines/embeds.py``). It is
thread-safe: questions may call it from their own threads (``strategies/free_runner.py``).
"""

from __future__ import annotations

import base64
import io
import math
import threading
from typing import Any, Sequence

import requests
import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase

from lm_eval_softreason.engines.checkpoint import default_eos_token_ids
from lm_eval_softreason.engines.embeds import Continuation, EmbedsEngine, Generated, margin
from lm_eval_softreason.engines.server.client import (
    ServerClient, ServerRequestError, parse_base_urls)
from lm_eval_softreason.errors import ConfigError

FULL = -1  # first_token_logprobs: the whole vocabulary
SERVE = "python -m vllm.entrypoints.openai.api_server"  # `vllm serve` where it works
CLAMP = -9999.0  # vLLM's JSON floor for a log-prob of -inf


class ServerEngine(EmbedsEngine):
    """:class:`Engine` on one or several ``vllm serve --enable-prompt-embeds`` endpoints.

    ``pretrained`` is the model folder the servers were started with (or one with the same
    tokenizer and embedding table); ``model`` is the served name (default: the one model every
    endpoint lists). ``dtype`` is the servers' ``--dtype`` (``auto``: the checkpoint's): prompt
    embeddings are sent in it. ``first_token_logprobs`` is how many first-token log-probs a
    prefill asks for (``-1``: all, needs ``--max-logprobs -1``); fewer keep responses small
    where the strategy reads only the top few. ``check_embeddings`` compares, once per
    endpoint, a short prompt sent as token ids and as embeddings (catches a ``pretrained``
    that is not the served model).
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        pretrained: str,
        *,
        model: str | None = None,
        dtype: str = "auto",
        revision: str | None = None,
        tokenizer: str | PreTrainedTokenizerBase | None = None,
        trust_remote_code: bool = False,
        num_concurrent: int = 64,
        max_retries: int = 3,
        timeout: float = 300.0,
        data_parallel_size: int = 1,
        eos_token_ids: Sequence[int] | None = None,
        embed_key: str | None = None,
        first_token_logprobs: int = FULL,
        check_embeddings: bool = True,
    ) -> None:
        self.client = ServerClient(parse_base_urls(base_url), num_concurrent=num_concurrent,
                                   max_retries=max_retries, timeout=timeout,
                                   data_parallel_size=data_parallel_size)
        self.model, self.max_model_len = self._served_model(model)
        config = AutoConfig.from_pretrained(pretrained, revision=revision,
                                            trust_remote_code=trust_remote_code)
        self.text_config = config.get_text_config()
        self.vocab_size = int(self.text_config.vocab_size)
        self.hidden_size = int(self.text_config.hidden_size)
        self.dtype = _resolve_dtype(dtype, self.text_config)
        self.model_path = pretrained
        self.revision = revision
        self.embed_key = embed_key
        if isinstance(tokenizer, PreTrainedTokenizerBase):
            self.tokenizer = tokenizer
        else:
            self.tokenizer = AutoTokenizer.from_pretrained(
                tokenizer or pretrained, revision=revision, trust_remote_code=trust_remote_code)
        if eos_token_ids is None:
            eos_token_ids = default_eos_token_ids(self.tokenizer, pretrained, revision)
        self.eos = sorted({int(t) for t in eos_token_ids})
        self._lock = threading.Lock()
        self.stats = {"prompt_tokens": 0, "cached_tokens": 0}
        self.first_token_logprobs = FULL
        self.check_server(first_token_logprobs, compare=check_embeddings)

    # -- start-up checks ------------------------------------------------------------------------

    def _served_model(self, model: str | None) -> tuple[str, int]:
        """The served name every endpoint lists, and the smallest context among them."""
        names, lengths = None, []
        for i, url in enumerate(self.client.urls):
            try:
                listed = self.client.get(i, "/models")["data"]
            except requests.RequestException as exc:
                raise ConfigError(
                    f"softreason-server: cannot reach {url} ({type(exc).__name__}: {exc}); start "
                    f"the server ({SERVE} --model DIR --enable-prompt-embeds, README 'Serving') "
                    "or fix model_arg base_url") from exc
            served = {m["id"]: m for m in listed}
            name = model or (next(iter(served)) if len(served) == 1 else None)
            if name not in served:
                raise ConfigError(f"model_arg model={model!r}: {url} serves {sorted(served)}; "
                                  "name one of them")
            names = names or name
            if name != names:
                raise ConfigError(f"the endpoints serve different models ({names!r}, {name!r}); "
                                  "pass model_arg model=NAME served by all of them")
            lengths.append(int(served[name].get("max_model_len") or 0))
        return names, min(lengths)  # type: ignore[return-value]

    def check_server(self, first_token_logprobs: int, compare: bool = True,
                     tol: float | None = None) -> None:
        """Ask every endpoint for what this run needs and set ``first_token_logprobs``: prompt
        embeddings (the flag ``--enable-prompt-embeds``), that many first-token log-probs
        (``--max-logprobs``), and, with ``compare``, the same top-20 next-token log-probs from
        a short prompt sent as token ids and as embeddings (within ``tol``: 1e-3 in float32,
        5e-2 in 16-bit types)."""
        if tol is None:
            tol = 1e-3 if self.dtype == torch.float32 else 5e-2
        ids = self.tokenizer.encode("The answer is 42. Next", add_special_tokens=True)[:8]
        ids = [t for t in ids if 0 <= t < self.vocab_size] or [0]
        want = self.vocab_size if first_token_logprobs == FULL else first_token_logprobs
        for replica, url in enumerate(self.client.urls):
            try:
                by_embeds = self._post_to(replica, self._first_body(self._embed(ids), want))
                if not compare:
                    continue
                by_ids = self._post_to(replica, self._first_body(ids, 20))
            except ServerRequestError as exc:
                raise ConfigError(_server_hint(str(exc), want)) from exc
            a = _top_logprobs(by_ids)
            b = _top_logprobs(by_embeds)
            diff = max((abs(a[t] - b[t]) for t in a.keys() & b.keys()), default=math.inf)
            if not diff <= tol:
                raise ConfigError(
                    f"{url} does not serve pretrained={self.model_path}: its next-token "
                    f"log-probs for the same prompt as token ids and as embeddings differ by "
                    f"{diff:.3g} (dtype {self.dtype}; pass the servers' --dtype as model_arg "
                    "dtype, and the served model's folder as pretrained)")
        self.first_token_logprobs = first_token_logprobs

    def _post_to(self, replica: int, body: dict[str, Any]) -> dict[str, Any]:
        return self.client.post_to(replica, "/completions", body)

    # -- the backend calls ----------------------------------------------------------------------

    def _first_body(self, prompt: torch.Tensor | Sequence[int], logprobs: int
                    ) -> dict[str, Any]:
        return {"model": self.model, **_prompt(prompt), "max_tokens": 1, "temperature": 0.0,
                "logprobs": logprobs, "return_tokens_as_token_ids": True}

    def _first_position(self, prompts: list[torch.Tensor],
                        keys: list[tuple[int, ...]]) -> list[torch.Tensor]:
        """Prompts go as token ids: the same input, a few bytes instead of a tensor."""
        want = self.vocab_size if self.first_token_logprobs == FULL else self.first_token_logprobs
        bodies = [self._first_body(ids, want) for ids in keys]
        outs = self._post(bodies, keys, [e.shape[0] for e in prompts])
        dense = []
        for out in outs:
            top = _top_logprobs(out)
            full = torch.full((self.vocab_size,), -math.inf, dtype=torch.float32)
            full[torch.tensor(list(top), dtype=torch.long)] = torch.tensor(
                list(top.values()), dtype=torch.float32)
            dense.append(full)
        return dense

    def _continue(self, jobs: list[Continuation]) -> list[Generated]:
        bodies = []
        for job in jobs:
            body: dict[str, Any] = {
                "model": self.model, **_prompt(job.embeds if job.token_ids is None
                                               else job.token_ids),
                "max_tokens": job.max_tokens, "temperature": job.temperature,
                "stop_token_ids": list(self.eos), "ignore_eos": True,  # exactly our EOS set
                "include_stop_str_in_output": True, "skip_special_tokens": False,
                "logprobs": 2, "return_tokens_as_token_ids": True,
            }
            if job.seed is not None:
                body["seed"] = job.seed
            if job.stop:
                body["stop"] = job.stop
            bodies.append(body)
        outs = self._post(bodies, [j.key for j in jobs], [j.embeds.shape[0] for j in jobs])
        return [_generated(out) for out in outs]

    def _post(self, bodies: list[dict[str, Any]], keys: list[tuple[int, ...]],
              lengths: list[int]) -> list[dict[str, Any]]:
        outs = self.client.post_many("/completions", bodies,
                                     [",".join(map(str, k)).encode() for k in keys])
        cached = sum(((o.get("usage") or {}).get("prompt_tokens_details") or {})
                     .get("cached_tokens") or 0 for o in outs)
        with self._lock:
            self.stats["prompt_tokens"] += sum(lengths)
            self.stats["cached_tokens"] += cached
        return outs

    def close(self) -> None:
        self.client.close()


def _prompt(prompt: torch.Tensor | Sequence[int]) -> dict[str, Any]:
    """A request's input: token ids where they say it all, else embeddings."""
    if isinstance(prompt, torch.Tensor):
        return {"prompt_embeds": encode_embeds(prompt)}
    return {"prompt": [int(t) for t in prompt]}


def encode_embeds(embeds: torch.Tensor) -> str:
    """What ``prompt_embeds`` carries: base64 of a ``torch.save``d dense CPU tensor (a copy,
    so a view never drags its whole storage along)."""
    buf = io.BytesIO()
    torch.save(embeds.detach().to("cpu").contiguous().clone(), buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _token(text: str) -> int:
    """A token id from vLLM's ``token_id:N`` (``return_tokens_as_token_ids``)."""
    return int(text.rpartition(":")[2])


def _value(lp: float | None) -> float:
    return -math.inf if lp is None or lp <= CLAMP else float(lp)


def _top_logprobs(response: dict[str, Any]) -> dict[int, float]:
    """The first choice's first position: token id -> log-prob."""
    choice = _one_choice(response)
    return {_token(t): _value(v) for t, v in choice["logprobs"]["top_logprobs"][0].items()}


def _one_choice(response: dict[str, Any]) -> dict[str, Any]:
    choices = response.get("choices") or []
    if len(choices) != 1 or not choices[0].get("logprobs"):
        raise RuntimeError(f"the server answered {len(choices)} choices without log-probs; "
                           "expected one with log-probs")
    return choices[0]


def _generated(response: dict[str, Any]) -> Generated:
    """Tokens, log-probs, margins and stop reason of one completion."""
    choice = _one_choice(response)
    lp = choice["logprobs"]
    g = Generated(tokens=[_token(t) for t in lp["tokens"]],
                  logprobs=[_value(v) for v in lp["token_logprobs"]])
    for top in lp["top_logprobs"]:
        best = sorted((_value(v) for v in top.values()), reverse=True)
        g.margins.append(margin(best[0], best[1]) if len(best) > 1 else math.exp(best[0]))
    reason, stop = choice.get("finish_reason"), choice.get("stop_reason")
    if reason == "length":
        g.reason = "max_tokens"
    elif reason == "stop":
        g.reason = "stop_string" if isinstance(stop, str) else "eos"
    else:
        raise RuntimeError(f"the server ended a request with finish_reason={reason!r}")
    return g


def _resolve_dtype(dtype: str | torch.dtype, text_config: Any) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        dtype = str(getattr(text_config, "torch_dtype", None) or getattr(
            text_config, "dtype", None) or "float32").removeprefix("torch.")
    resolved = getattr(torch, {"half": "float16"}.get(dtype, dtype), None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ConfigError(f"model_arg dtype={dtype!r}; allowed: auto, float32, bfloat16, "
                          "float16 (the servers' --dtype)")
    return resolved


def _server_hint(message: str, logprobs: int) -> str:
    """The server's refusal, with the ``vllm serve`` flag that fixes it when we know it."""
    if "enable-prompt-embeds" in message:
        return (f"{message} -- the server must be started with --enable-prompt-embeds "
                "(softreason-server sends every prompt as embeddings)")
    if "logprobs" in message:
        return (f"{message} -- this mode reads {logprobs} first-token log-probs: start the "
                "server with --max-logprobs -1")
    return message
