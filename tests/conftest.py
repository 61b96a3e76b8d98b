"""Shared fixtures: a tiny random Llama with a real byte-level BPE tokenizer, built in seconds."""

from __future__ import annotations

import os

import pytest

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The tiny model's matrices are far too small for threads to pay; one thread also keeps the
# suite fast when something else is using the CPU.
os.environ.setdefault("OMP_NUM_THREADS", "1")

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "Q: There are 15 trees in the grove. How many trees did the workers plant today?",
    "A: There are 15 trees originally. Then there were 21 trees. So 21 - 15 = 6. The answer is 6.",
    "Question: Leah had 32 chocolates and her sister had 42. If they ate 35, how many are left?",
    "Answer: Let's think step by step. 32 + 42 = 74. 74 - 35 = 39. #### 39",
    "Analysis: the solutions agree. Solution 1 is correct. Answer: 39",
    "0123456789 + - * / = $ , . ? ! ( ) : ; yes no true false",
]


def build_tiny_model(path: str, seed: int = 0) -> str:
    """Write a tiny random LlamaForCausalLM and its tokenizer to ``path``; return the path."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        additional_special_tokens=specials[1:],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)

    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=None, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    # The weights are drawn here, not by transformers' initialisers, so that a transformers
    # upgrade cannot move the CI gate's golden outputs: Llama's own scheme (norms 1, every
    # matrix N(0, 0.02)) from one seeded generator, parameters in name order.
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
        # Larger output weights give peaked, varied next-token distributions, like a trained model.
        model.lm_head.weight.mul_(8.0)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_tiny_model(str(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    """A SoftReasonLM on the tiny model with small search settings (one per test module)."""
    from lm_eval_softreason.harness.hf_model import SoftReasonLM
    from tests.helpers import FAST

    return SoftReasonLM(pretrained=tiny_model_dir, device="cpu", batch_size=16, **FAST)


@pytest.fixture
def configure(lm):
    """Reconfigure the module's ``lm`` for one test; restores the small defaults after."""
    from tests.helpers import FAST

    def _configure(**kwargs):
        lm.configure(**{**FAST, **kwargs})
        return lm

    yield _configure
    lm.configure(**FAST)
