"""``--model softreason``: lm-eval's ``HFLM`` with Soft Reasoning in ``generate_until``.

Loading, tokenisation, chat templates, ``loglikelihood*`` and batch-size handling are all
inherited from ``HFLM``; the search comes from :class:`~lm_eval_softreason.harness.mixin.SoftReasonMixin`
and decodes on :class:`~lm_eval_softreason.engines.hf.HFEngine`.
"""

from __future__ import annotations

from lm_eval_softreason.harness.runtime_env import apply_cpu_defaults

apply_cpu_defaults()  # our model's start-up: before this module's imports load torch

import logging  # noqa: E402
from typing import Any  # noqa: E402

from lm_eval.api.registry import register_model  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402

from lm_eval_softreason.strategies.config import SoftReasonConfig  # noqa: E402
from lm_eval_softreason.engines.hf import HFEngine, kv_bytes_per_token  # noqa: E402
from lm_eval_softreason.compat import hflm_model  # noqa: E402
from lm_eval_softreason.engines.output import eos_token_ids  # noqa: E402
from lm_eval_softreason.harness.mixin import SoftReasonMixin  # noqa: E402
from lm_eval_softreason.harness.requests import refuse_unsharded_processes  # noqa: E402
from lm_eval_softreason.harness.preflight import check_before_load  # noqa: E402

log = logging.getLogger(__name__)

AUTO_BATCH_CAP = 64


@register_model("softreason")
class SoftReasonLM(SoftReasonMixin, HFLM):
    """HFLM with Soft Reasoning (or a baseline, by ``mode``) in ``generate_until``.

    Our model_args (see README for each) are split off before ``HFLM.__init__`` so they never
    reach ``from_pretrained``; all of them, the data folder and a local model folder are
    validated before the model is loaded.
    """

    def __init__(self, **kwargs: Any) -> None:
        cfg, rest = SoftReasonConfig.from_kwargs(kwargs)
        self._apply_config(cfg)
        check_before_load(rest.get("pretrained"))
        super().__init__(**rest)
        refuse_unsharded_processes(self.world_size)
        model = hflm_model(self)
        model.eval()
        eos = eos_token_ids(self.eot_token_id,
                            getattr(model.generation_config, "eos_token_id", None))
        self.engine = HFEngine(model, self.tokenizer, eos,
                               max_batch=self.row_batch_size())
        self._init_softreason(cfg)

    def get_model_info(self) -> dict:
        """lm-eval writes its ``--device`` flag as ``config.device`` (``cuda:0`` by default,
        even for CPU runs) after this; ``softreason_device`` is where the model really ran."""
        info = super().get_model_info()
        info["softreason_device"] = str(hflm_model(self).device)
        return info

    def encode_prompt(self, context: str) -> list[int]:
        ids, _ = self.tok_batch_encode([context], left_truncate_len=None,
                                       truncation=self.truncation)
        return ids[0].tolist()

    def row_batch_size(self) -> int:
        """Rows decoded together: ``batch_size``, but never fewer than one question's rows of
        a round (lm-eval's ``batch_size`` counts requests, and it passes 1 when the flag is
        left out; a question is one request). ``batch_size=auto``: as many rows as fit a KV
        budget of a quarter of free memory for 1,024-token rows, capped at 64 (OOM still
        halves it)."""
        if self.batch_size != "auto":
            return max(int(self.batch_size), self.rows_per_question())
        import psutil

        per_row = kv_bytes_per_token(hflm_model(self)) * 1024
        fit = int(psutil.virtual_memory().available * 0.25 // per_row)
        size = max(1, min(AUTO_BATCH_CAP, fit))
        log.info("batch_size=auto: decoding up to %d rows at once", size)
        return size

    def _apply_config(self, cfg: SoftReasonConfig) -> None:
        """A new configuration may have more rows per question: the decoder follows."""
        super()._apply_config(cfg)
        if hasattr(self, "engine"):
            self.engine.decoder.max_batch = self.row_batch_size()
