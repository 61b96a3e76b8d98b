"""What ``softreason-vllm`` and ``softreason-server`` share on lm-eval's side: a ``TemplateLM``
around an engine with a tokenizer, that answers ``generate_until`` only.

lm-eval's own ``VLLM`` and ``TemplateAPI`` classes decode token ids where the search needs
prompt embeddings, so these models implement lm-eval's tokenizer hooks themselves.
"""

from __future__ import annotations

from typing import Any

from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import has_bos_prefix

from lm_eval_softreason.harness.mixin import SoftReasonMixin


class EmbedsLM(SoftReasonMixin, TemplateLM):
    """Subclasses set ``engine``, ``tokenizer``, ``_max_length``, ``_max_gen_toks`` and
    ``add_bos_token`` before :meth:`_init_softreason`."""

    name: str  # the --model name, for messages
    _max_length: int
    _max_gen_toks: int
    add_bos_token: bool

    @property
    def eot_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def apply_chat_template(self, chat_history: list[dict[str, str]],
                            add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt,
        )

    def tok_encode(self, string: str, add_special_tokens: bool | None = None,
                   **kwargs: Any) -> list[int]:
        if add_special_tokens is None:
            add_special_tokens = self.add_bos_token and not has_bos_prefix(
                string, getattr(self.tokenizer, "bos_token", None))
        return self.tokenizer.encode(string, add_special_tokens=add_special_tokens)

    def tok_decode(self, tokens: list[int] | int, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    def encode_prompt(self, context: str) -> list[int]:
        return self.tok_encode(context)

    def _loglikelihood_tokens(self, requests: list, **kwargs: Any) -> list:
        raise NotImplementedError(
            f"{self.name} answers generate_until requests only; run loglikelihood and "
            "multiple-choice tasks with --model vllm, --model local-completions or "
            "--model softreason"
        )

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list:
        return self._loglikelihood_tokens(requests)


def as_bool(value: Any) -> bool:
    """lm-eval passes model_args from the command line as strings."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)
