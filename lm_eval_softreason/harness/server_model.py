"""``--model softreason-server``: Soft Reasoning as a client of ``vllm serve`` endpoints.

The servers run the model (one or several replicas, each possibly data parallel); this process
holds only the tokenizer and the input embedding table, runs the search, and sends every
prompt as embeddings. Questions run free (:mod:`lm_eval_softreason.strategies.free_runner`):
each sends its next request as soon as its last one returns.
"""

from __future__ import annotations

from typing import Any

from lm_eval.api.registry import register_model

from lm_eval_softreason.engines.server.engine import FULL, ServerEngine
from lm_eval_softreason.errors import ConfigError
from lm_eval_softreason.harness.embeds_lm import EmbedsLM, as_bool
from lm_eval_softreason.harness.preflight import check_before_load
from lm_eval_softreason.harness.requests import refuse_unsharded_processes
from lm_eval_softreason.strategies.config import SoftReasonConfig
from lm_eval_softreason.strategies.modes import STRATEGIES


@register_model("softreason-server")
class SoftReasonServer(EmbedsLM):
    """Soft Reasoning (or a baseline, by ``mode``) against ``vllm serve --enable-prompt-embeds``.

    Args (besides every softreason model_arg, see README):
        base_url: the endpoint, ``http://HOST:PORT[/v1]``; several replicas separated by ``|``.
        pretrained: the served model's folder, for the tokenizer and the embedding table.
        model: the served model name (default: the one every endpoint lists).
        dtype: the servers' ``--dtype`` (``auto``: the checkpoint's).
        num_concurrent: requests in flight at once, over all replicas (default 64).
        max_retries, timeout: per request, as lm-eval's API models (3, 300 s).
        data_parallel_size: ranks each endpoint serves (``vllm serve --data-parallel-size``):
            a question's requests are pinned to one rank.
        free_running: questions run free (default); false runs rounds in lock-step.
        max_length: the context (default: the servers' ``max_model_len``).
        max_gen_toks, add_bos_token, revision, tokenizer, trust_remote_code, embed_key,
        check_embeddings: as for ``softreason-vllm``.
        batch_size, device, max_batch_size: accepted for lm-eval's evaluator, unused.
    """

    name = "softreason-server"

    def __init__(
        self,
        base_url: str | list[str],
        pretrained: str,
        model: str | None = None,
        dtype: str = "auto",
        revision: str | None = None,
        tokenizer: str | None = None,
        trust_remote_code: bool = False,
        num_concurrent: int = 64,
        max_retries: int = 3,
        timeout: float = 300.0,
        data_parallel_size: int = 1,
        free_running: bool = True,
        max_length: int | None = None,
        max_gen_toks: int = 256,
        add_bos_token: bool = False,
        embed_key: str | None = None,
        check_embeddings: bool = True,
        batch_size: int | str = 1,
        device: str | None = None,
        max_batch_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        del device, max_batch_size
        cfg, rest = SoftReasonConfig.from_kwargs(kwargs)
        if rest:
            raise ConfigError(f"unknown model_arg(s) {sorted(rest)} for softreason-server; "
                              "allowed: the softreason model_args and those in the README, "
                              "'Serving'")
        self._apply_config(cfg)
        check_before_load(pretrained)
        super().__init__()
        refuse_unsharded_processes(self.world_size)
        self.engine = ServerEngine(
            base_url, pretrained, model=model, dtype=dtype, revision=revision,
            tokenizer=tokenizer, trust_remote_code=as_bool(trust_remote_code),
            num_concurrent=int(num_concurrent), max_retries=int(max_retries),
            timeout=float(timeout), data_parallel_size=int(data_parallel_size),
            embed_key=embed_key, first_token_logprobs=first_token_logprobs(cfg),
            check_embeddings=as_bool(check_embeddings),
        )
        self.tokenizer = self.engine.tokenizer
        self.pretrained = pretrained
        self.revision = revision
        self.batch_size = batch_size
        self.free_running = as_bool(free_running)
        self._num_concurrent = int(num_concurrent)
        self._max_length = int(max_length or self.engine.max_model_len)
        self._max_gen_toks = int(max_gen_toks)
        self.add_bos_token = as_bool(add_bos_token)
        self._init_softreason(cfg)

    def row_batch_size(self) -> int:
        """Requests in flight: the window holds enough questions to keep them busy."""
        return self._num_concurrent

    def _apply_config(self, cfg: SoftReasonConfig) -> None:
        """A new mode may read more first-token log-probs: ask the servers again."""
        super()._apply_config(cfg)
        if hasattr(self, "engine"):
            self.engine.check_server(first_token_logprobs(cfg), compare=False)

    def get_model_info(self) -> dict:
        info = super().get_model_info()
        info["softreason_engine"] = {
            "engine": "server", "replicas": len(self.engine.client.urls),
            "free_running": self.free_running, **self.engine.client.stats, **self.engine.stats}
        info["softreason_device"] = "server"
        return info


def first_token_logprobs(cfg: SoftReasonConfig) -> int:
    """What the mode reads of a prompt's first-token distribution, and the verifier's greedy
    token and margin (2) when it has one; -1 is the whole vocabulary."""
    cls = STRATEGIES[cfg.mode]
    k = cls.first_token_logprobs(cfg)
    return FULL if k == FULL else max(k, 2)
