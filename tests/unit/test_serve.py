"""``lm-eval-softreason serve``: the server command line our flags and the caller's make."""

from __future__ import annotations

import sys

import pytest

from lm_eval_softreason.errors import UserError
from lm_eval_softreason.harness.serve import main, serve_argv

SERVER = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", "/m"]


def test_gpu_gets_what_the_client_needs_and_loopback():
    assert serve_argv("/m", ["--port", "8000"], cpu=False) == [
        *SERVER, "--enable-prompt-embeds", "--max-logprobs", "-1", "--host", "127.0.0.1",
        "--port", "8000"]


def test_cpu_adds_the_offline_engines_scheduler_and_blocks():
    assert serve_argv("/m", [], cpu=True) == [
        *SERVER, "--enable-prompt-embeds", "--max-logprobs", "-1",
        "--no-enable-chunked-prefill", "--max-model-len", "4096",
        "--max-num-batched-tokens", "4096", "--block-size", "32", "--host", "127.0.0.1"]


def test_the_callers_flags_win_and_a_longer_context_widens_the_step():
    argv = serve_argv("/m", ["--max-model-len=8192", "--host", "0.0.0.0", "--block-size", "16"],
                      cpu=True)
    assert argv == [
        *SERVER, "--enable-prompt-embeds", "--max-logprobs", "-1",
        "--no-enable-chunked-prefill", "--max-num-batched-tokens", "8192",
        "--max-model-len=8192", "--host", "0.0.0.0", "--block-size", "16"]


@pytest.mark.parametrize("argv", [[], ["--port", "8000"]])
def test_a_missing_model_is_one_usage_line(argv):
    with pytest.raises(UserError, match="usage: lm-eval-softreason serve MODEL"):
        main(argv)
