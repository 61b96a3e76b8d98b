"""What the vLLM engine reads from a checkpoint's files: the input embedding table and EOS ids.

The engine feeds prompts as embeddings, so it needs the table (times any scale vLLM applies to
token embeddings) read alone, without loading the model a second time.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from transformers import GenerationConfig, PreTrainedTokenizerBase

from lm_eval_softreason.engines.output import eos_token_ids

# Checkpoint keys of the input embedding table, by suffix, most common first.
EMBED_KEY_SUFFIXES = (
    "embed_tokens.weight",  # Llama, Mistral, Qwen, Gemma, Phi-3, OLMo, ...
    "wte.weight",  # GPT-2, GPT-J, Qwen-1, StarCoder
    "word_embeddings.weight",  # Bloom, Falcon, ChatGLM
    "embed_in.weight",  # GPT-NeoX, Pythia
    "tok_embeddings.weight",  # InternLM2, original Llama
    "embedding.word_embeddings.weight",
)


def default_eos_token_ids(tokenizer: PreTrainedTokenizerBase, model_path: str,
                          revision: str | None) -> list[int]:
    """The tokenizer's EOS plus the generation config's ``eos_token_id`` (int or list)."""
    try:
        ids = GenerationConfig.from_pretrained(model_path, revision=revision).eos_token_id
    except (OSError, ValueError):
        ids = None
    return eos_token_ids(tokenizer.eos_token_id, ids)


def embedding_scale(text_config: Any) -> float:
    """The factor vLLM's implementation applies to token embeddings before the first layer
    (its ``embed_input_ids``), which a ``prompt_embeds`` prompt must therefore already carry.
    ``VLLMEngine.check_embeddings`` catches a model missing from this list."""
    model_type = str(getattr(text_config, "model_type", "") or "")
    if model_type.startswith("gemma"):
        return float(text_config.hidden_size) ** 0.5
    if model_type.startswith("minicpm") and getattr(text_config, "scale_emb", None):
        return float(text_config.scale_emb)
    return 1.0


def load_embedding_table(model: str, revision: str | None, key: str | None, vocab_size: int,
                         hidden_size: int) -> torch.Tensor:
    """Read only the input embedding table from a checkpoint, without loading the model.

    ``model`` is a folder or a Hub id (files come from the Hugging Face cache, where vLLM put
    them). The shard is found through ``model.safetensors.index.json`` (or
    ``pytorch_model.bin.index.json``), else the single ``model.safetensors`` (or
    ``pytorch_model.bin``, memory-mapped). The tensor is ``key`` if given, else the one key
    ending in one of :data:`EMBED_KEY_SUFFIXES` whose shape is ``[vocab_size, hidden_size]``
    (``vocab_size`` as vLLM reports it, i.e. the config's); ties go to the shortest name,
    which skips the vision towers of multimodal checkpoints.
    """
    index = _checkpoint_file(model, revision, "model.safetensors.index.json")
    kind = "safetensors"
    if index is None:
        index = _checkpoint_file(model, revision, "pytorch_model.bin.index.json")
        kind = "bin"
    if index is not None:
        with open(index) as f:
            weight_map: dict[str, str] = json.load(f)["weight_map"]
    else:
        single = "model.safetensors"
        if _checkpoint_file(model, revision, single) is None:
            single, kind = "pytorch_model.bin", "bin"
            if _checkpoint_file(model, revision, single) is None:
                raise FileNotFoundError(
                    f"no safetensors or pytorch_model.bin checkpoint found for {model}: "
                    "VLLMEngine reads the input embedding table from it")
        weight_map = {k: single for k in _keys(_checkpoint_file(model, revision, single), kind)}

    if key is not None:
        candidates = [key] if key in weight_map else []
    else:
        candidates = sorted((k for k in weight_map if any(
            k == s or k.endswith("." + s) for s in EMBED_KEY_SUFFIXES)), key=len)
    if not candidates:
        raise KeyError(
            f"cannot find the input embedding table in the checkpoint of {model}: "
            + (f"no tensor named {key!r}" if key else
               f"no key ends with one of {', '.join(EMBED_KEY_SUFFIXES)}")
            + "; pass embed_key=<checkpoint tensor name> to VLLMEngine")
    shapes = []
    for name in candidates:
        path = _checkpoint_file(model, revision, weight_map[name])
        tensor = _read_tensor(path, name, kind)
        shapes.append((name, tuple(tensor.shape)))
        if tensor.ndim == 2 and tensor.shape[0] == vocab_size and tensor.shape[1] == hidden_size:
            return tensor
    raise ValueError(
        f"the embedding candidates of {model} have shapes {shapes}, none is "
        f"[{vocab_size}, {hidden_size}]; pass embed_key=<checkpoint tensor name> to VLLMEngine")


def _checkpoint_file(model: str, revision: str | None, filename: str) -> str | None:
    """Local path of one checkpoint file (a folder's file, or the Hub cache's copy)."""
    if os.path.isdir(model):
        path = os.path.join(model, filename)
        return path if os.path.isfile(path) else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return hf_hub_download(model, filename, revision=revision)
    except (EntryNotFoundError, LocalEntryNotFoundError):
        return None


def _keys(path: str, kind: str) -> list[str]:
    if kind == "safetensors":
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            return list(f.keys())
    return list(torch.load(path, map_location="cpu", mmap=True, weights_only=True).keys())


def _read_tensor(path: str, name: str, kind: str) -> torch.Tensor:
    if kind == "safetensors":
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            return f.get_tensor(name)
    state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    return state[name].clone()
